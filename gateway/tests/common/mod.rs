//! Shared harness for the gateway's integration tests: pseudo-terminals and simulated analyzers
//! served on them, so the daemon and the CLI open a real serial device path.
#![allow(dead_code)] // Each test file uses part of it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware::sim::Simulator;
use hj212_gateway::config::{Analyzer, Config, Platform, SerialPort};

/// Takes every complete frame off the front of `buf` (bytes read from a socket), dropping
/// garbage between them; an incomplete frame stays for the next read.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    use hj212_codec::{Split, Splitter};
    let mut frames = Vec::new();
    loop {
        let (len, frame) = match Splitter::default().split(buf, false) {
            Split::Frame(f) => (f.len(), Some(f.bytes().to_vec())),
            Split::Skip { len, .. } => (len, None),
            Split::Incomplete => break,
        };
        buf.drain(..len);
        frames.extend(frame);
    }
    frames
}

/// The site identity the tests use.
pub const MN: &str = "010000A8900016F000169DC0";
/// The site password the tests use.
pub const PW: &str = "123456";

/// A fresh temporary directory for one test.
/// The surface-water COD analyzer, measuring 42.5 mg/L (status 1, range 1000, slope 1.0).
pub fn cod_simulator() -> Arc<Mutex<Simulator>> {
    use firmware::profile::{Code, Target, Value};
    let mut sim = Simulator::new(&firmware::profile::builtin::SURFACE_WATER_COD);
    sim.set(&Target::Pollutant(Code::new("w01018")), Value::Number(42.5));
    sim.set(&Target::Status, Value::Code(1));
    sim.set(&Target::Info(Code::new("i13001")), Value::Number(1000.0));
    sim.set(&Target::Info(Code::new("i13008")), Value::Number(1.0));
    Arc::new(Mutex::new(sim))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hj212-gw-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with one COD analyzer (unit 1) on `device`, fast test intervals and statistics
/// that need one sample per period, and one platform `p` at `platform_addr`. Tests adjust it.
pub fn config(dir: &Path, device: &Path, platform_addr: SocketAddr) -> Config {
    let mut c = Config::default();
    c.site.mn = MN.into();
    c.site.pw = PW.into();
    c.store.path = dir.join("store");
    c.packet_log.path = dir.join("packets.log");
    c.acquisition.rtd_interval_secs = 1;
    c.acquisition.min_interval_mins = 1;
    c.acquisition.poll_interval_ms = 100;
    c.acquisition.samples_per_minute = 1;
    c.acquisition.minutes_per_hour = 1;
    c.acquisition.hours_per_day = 1;
    c.acquisition.snapshot_interval_secs = 0;
    c.serial = vec![SerialPort {
        device: device.to_path_buf(),
        baud: 9600,
        parity: hj212_gateway::config::Parity::None,
        stop_bits: 1,
        response_timeout_ms: 300,
        retries: 1,
        inter_request_delay_ms: 2,
        rs485: None,
        de_gpio: None,
        analyzer: vec![Analyzer {
            name: "cod".into(),
            profile: Some("surface-water-cod".into()),
            profile_file: None,
            unit: Some(1),
            pol_id: None,
            electricity: None,
        }],
    }];
    c.platform = vec![Platform {
        name: "p".into(),
        address: platform_addr.to_string(),
        reconnect_min_ms: 100,
        reconnect_max_ms: 400,
        replay_per_sec: 50,
        ..Platform::default()
    }];
    c
}

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

/// Writes `gateway.toml` in `dir` for the real daemon: one COD analyzer on `device`, one platform
/// `p` at `platform`, fast timing, store and packet log in `dir`; `extra` is appended (TOML).
pub fn write_daemon_config(dir: &Path, device: &Path, platform: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"shutdown_timeout_secs = 10
[site]
mn = "{MN}"
pw = "{PW}"
[acquisition]
rtd_interval_secs = 1
min_interval_mins = 1
poll_interval_ms = 100
samples_per_minute = 1
minutes_per_hour = 1
hours_per_day = 1
snapshot_interval_secs = 1
[store]
path = "{store}"
[packet_log]
path = "{log}"
[[serial]]
device = "{device}"
baud = 9600
response_timeout_ms = 300
retries = 1
inter_request_delay_ms = 2
[[serial.analyzer]]
name = "cod"
profile = "surface-water-cod"
unit = 1
[[platform]]
name = "p"
address = "{platform}"
reconnect_min_ms = 50
reconnect_max_ms = 200
replay_per_sec = 50
max_in_flight = 4
{extra}"#,
        store = dir.join("store").display(),
        log = dir.join("packets.log").display(),
        device = device.display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the real daemon on `config`, its stderr appended to `dir/daemon.stderr`.
pub fn spawn_daemon(config: &Path, dir: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("daemon.stderr")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hj212-gateway"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,sled=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start hj212-gateway")
}
