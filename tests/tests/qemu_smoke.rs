//! The aarch64 gateway under qemu-user: `packaging/qemu-smoke.sh` runs the cross-built
//! `hj212-gateway` against a simulated analyzer on a socat pty pair and a simulated platform,
//! and passes once 2011 frames carrying the analyzer's value reached the platform and 9014s came
//! back, and the gateway stopped cleanly on SIGTERM.
//!
//! The ARM binaries are not built by `cargo test`: `.ci/run` builds them first (debug, the one
//! profile CI uses):
//!
//! ```sh
//! cargo build --target aarch64-unknown-linux-gnu -p hj212-gateway --bin hj212-gateway --bin hj212
//! ```
//!
//! Without them, qemu-user, socat or the cross gcc the test prints a skip notice and passes;
//! under `CI=true` it fails. `PROFILE=release` here too takes the release build instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use hj212_tests::chain;

const TARGET: &str = "aarch64-unknown-linux-gnu";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn the_aarch64_gateway_delivers_frames_under_qemu() {
    let root = workspace();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "debug".into());
    let arm = target_dir.join(TARGET).join(&profile);
    let needed = [
        arm.join("hj212-gateway"),
        arm.join("hj212"),
        // The host CLI plays the analyzer and the platform; `cargo test --workspace` builds it.
        target_dir.join("debug").join("hj212"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.is_file()) {
        chain::skip(&format!(
            "{} is not built (cargo build --target {TARGET} -p hj212-gateway --bin hj212-gateway --bin hj212, \
             and cargo build -p hj212-gateway --bin hj212)",
            missing.display()
        ));
        return;
    }
    if let Some(tool) = ["qemu-aarch64", "socat", "aarch64-linux-gnu-gcc"].into_iter().find(|t| !on_path(t)) {
        chain::skip(&format!(
            "{tool} is not on PATH (apt-get install qemu-user socat gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
        ));
        return;
    }
    let out = Command::new("bash")
        .arg(root.join("packaging/qemu-smoke.sh"))
        .args(["--target", TARGET, "--no-build", "--timeout", "90"])
        .env("PROFILE", &profile)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .output()
        .expect("run packaging/qemu-smoke.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the qemu smoke test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(&format!("PASS: {TARGET} gateway under qemu delivered frames")), "{stdout}");
}
