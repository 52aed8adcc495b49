//! Simulated analyzers on a pseudo-terminal: one RS-485 line.
//!
//! [`Line::open`] opens a pty pair, puts the slave in raw mode and serves every simulator on the
//! master side from a thread. The gateway opens the slave *path* through tokio-serial, exactly as
//! it would open `/dev/ttyUSB0`. Several simulators share a line as devices share a bus: each one
//! answers only its own unit addresses, so a request is offered to each in turn.
//!
//! The thread stops when the [`Line`] is dropped (the slave closes, reads fail, the stop flag is
//! seen).

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware::sim::Simulator;

/// A simulator shared between the line's thread and whoever changes its values or faults.
pub type SharedSim = Arc<Mutex<Simulator>>;

/// Wraps a simulator for sharing.
#[must_use]
pub fn shared(sim: Simulator) -> SharedSim {
    Arc::new(Mutex::new(sim))
}

/// Runs `f` on a shared simulator (a poisoned lock is taken over: the simulator stays usable).
pub fn with<T>(sim: &SharedSim, f: impl FnOnce(&mut Simulator) -> T) -> T {
    f(&mut sim.lock().unwrap_or_else(PoisonError::into_inner))
}

/// One simulated RS-485 line on a pty.
#[derive(Debug)]
pub struct Line {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    _slave: OwnedFd,
}

impl Line {
    /// Opens a pty and serves `devices` on it.
    ///
    /// # Errors
    /// The pty cannot be opened or configured.
    pub fn open(devices: Vec<SharedSim>) -> anyhow::Result<Self> {
        let pty = nix::pty::openpty(None, None)?;
        let mut t = nix::sys::termios::tcgetattr(&pty.slave)?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        let mut master = std::fs::File::from(pty.master);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new().name("pty-line".into()).spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 256];
            while !stopped.load(Ordering::Relaxed) {
                let n = match master.read(&mut chunk) {
                    Ok(0) | Err(_) => {
                        // Nobody has the slave open (the gateway is between two opens).
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 512 {
                    buf.clear(); // Line noise that never formed a request.
                }
                while let Some(len) = firmware::sim::request_len(&buf).filter(|l| buf.len() >= *l) {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    let reply = devices.iter().find_map(|d| with(d, |s| s.handle(&frame)));
                    if let Some(reply) = reply {
                        let _ = master.write_all(&reply.bytes);
                    }
                }
            }
        })?;
        Ok(Self { path, stop, _slave: pty.slave })
    }

    /// The slave's path, such as `/dev/pts/7`: the gateway's `serial.device`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
