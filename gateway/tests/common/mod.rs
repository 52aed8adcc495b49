//! Shared harness for the gateway's integration tests: pseudo-terminals and simulated analyzers
//! served on them, so the daemon and the CLI open a real serial device path.
#![allow(dead_code)] // Each test file uses part of it.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware::sim::Simulator;

/// A raw pseudo-terminal pair: the slave's path (what a program opens as its serial port), the
/// master side (the "wire" the test drives), and the slave kept open so the path stays valid.
pub struct PtyPair {
    /// The slave's path, such as `/dev/pts/7`.
    pub path: PathBuf,
    /// The master side.
    pub master: std::fs::File,
    /// The slave, kept open.
    pub slave: OwnedFd,
}

/// Opens a pty pair in raw mode.
pub fn open_pty() -> PtyPair {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut t = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).expect("tcsetattr");
    let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    PtyPair { path, master: std::fs::File::from(pty.master), slave: pty.slave }
}

/// A simulated analyzer served on a pty; the path is the device to open.
pub struct Pty {
    /// The slave's path.
    pub path: PathBuf,
    _slave: OwnedFd,
}

/// Serves `sim` on a new pty's master side from a thread (`Simulator::serve_bytes`).
pub fn analyzer_on_pty(sim: Arc<Mutex<Simulator>>) -> Pty {
    let PtyPair { path, mut master, slave } = open_pty();
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = match master.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    // No reader on the slave side yet (EIO): wait, and forget partial requests.
                    pending.clear();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Ok(n) => n,
            };
            let replies = sim.lock().unwrap().serve_bytes(&mut pending, &chunk[..n]);
            for reply in replies {
                let _ = master.write_all(&reply.bytes);
            }
        }
    });
    Pty { path, _slave: slave }
}
