//! Every thread's stack when a wait times out, for chasing a stall in a long run.
//!
//! With `HJ212_E2E_STACKS=FILE` set, [`dump`] attaches `gdb` to this process (the whole chain but
//! Mosquitto runs in it) and appends the backtrace of every thread to `FILE`, headed by what was
//! awaited. Without the variable it does nothing: a failed wait in CI fails as before.

use std::io::Write as _;
use std::process::Command;

/// Appends every thread's backtrace to `$HJ212_E2E_STACKS`, if set, with `what` as the heading.
pub fn dump(what: &str) {
    let Some(path) = std::env::var_os("HJ212_E2E_STACKS") else { return };
    let pid = std::process::id().to_string();
    // gdb writes straight into the file: through a pipe it would fill the pipe and wait for
    // this process, which it has stopped, to read it.
    let written = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| {
        writeln!(f, "===== timed out waiting for {what}")?;
        let status = Command::new("gdb")
            .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt"])
            .stdout(f.try_clone()?)
            .stderr(f.try_clone()?)
            .status()?;
        writeln!(f, "===== gdb: {status}")
    });
    match written {
        Ok(()) => eprintln!("stacks of every thread written to {}", path.to_string_lossy()),
        Err(e) => eprintln!("stacks not written to {}: {e}", path.to_string_lossy()),
    }
}
