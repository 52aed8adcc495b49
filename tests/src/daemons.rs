//! The real daemon binaries as child processes, and the independent Python frame check.
//!
//! [`chain`](mod@crate::chain) runs the daemons in-process, where a "kill" can only cancel them. The
//! tests that need a real SIGKILL (`tests/tests/sigkill_e2e.rs`), or want what a real gateway
//! process sends (`tests/tests/interop_py.rs`), run `hj212-gateway` and `hj212-ingest` through
//! [`Daemon`] instead, with configuration files written here: [`gateway_toml`] renders the
//! configuration [`sites::gateway_config`](crate::sites::gateway_config) builds, so a child runs
//! exactly what the in-process chain runs.
//!
//! [`hj212_check`] runs `tests/py/hj212_check.py`, a second implementation of HJ 212 framing (length
//! field and CRC, written from the standard's Appendix A and sharing no code with the codec), over
//! a byte stream; [`capture`] records the frames a gateway sends on their way through a
//! [`Proxy`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hj212_gateway::config::Config as GatewayConfig;
use serde_json::Value as Json;

use crate::chain::{self, workspace_binary};
use crate::proxy::Proxy;

/// The two daemon binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `hj212-gateway`.
    pub gateway: PathBuf,
    /// `hj212-ingest`.
    pub ingest: PathBuf,
}

impl Binaries {
    /// Both binaries, or `None` after a skip notice (a failure under `CI=true`).
    #[must_use]
    pub fn find() -> Option<Self> {
        Some(Self { gateway: binary("hj212-gateway")?, ingest: binary("hj212-ingest")? })
    }
}

/// The workspace binary `name`, or `None` after a skip notice (a failure under `CI=true`).
#[must_use]
pub fn binary(name: &str) -> Option<PathBuf> {
    let found = workspace_binary(name);
    if found.is_none() {
        chain::skip(&format!(
            "{name} is not built (cargo build -p hj212-gateway -p hj212-ingest --bins, or cargo test --workspace)"
        ));
    }
    found
}

/// A free TCP port on 127.0.0.1 (free when asked; a daemon binds it a moment later).
///
/// # Panics
/// No port can be had.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits (bounded) until something accepts connections at `addr`. True when it does.
pub async fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A daemon binary run as a child process on one configuration file: started, killed with
/// SIGKILL, started again. Its stderr is appended to a log file across its lives. Dropping it
/// kills a running child.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// A daemon `name` (for messages) running `program --config config`, its stderr in `log`.
    #[must_use]
    pub fn new(name: &'static str, program: &Path, config: &Path, log: &Path) -> Self {
        Self {
            name,
            program: program.to_path_buf(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Sets an environment variable for the next starts (the daemons' `HJ212_*` overrides).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// How many times it was started.
    #[must_use]
    pub const fn starts(&self) -> u32 {
        self.starts
    }

    /// Starts it. The test's own `HJ212_GATEWAY_*` and `HJ212_INGEST_*` variables are not passed
    /// on (they would override the file); `RUST_LOG` is, defaulting to `info,sled=warn`.
    ///
    /// # Panics
    /// It is running already, or cannot be started.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("daemon log file");
        let mut command = Command::new(&self.program);
        command.arg("--config").arg(&self.config);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("HJ212_GATEWAY_") || key.starts_with("HJ212_INGEST_") {
                command.env_remove(&*key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,sled=warn");
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    /// Kills it with SIGKILL and reaps it.
    ///
    /// # Panics
    /// It is not running (it exited on its own: see [`Daemon::assert_running`]).
    pub fn kill(&mut self) {
        self.assert_running();
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits at most `limit` for its exit status.
    ///
    /// # Panics
    /// It is not running, or does not exit in time (it is then killed).
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.assert_running();
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within {limit:?} of SIGTERM\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Checks that it is still running.
    ///
    /// # Panics
    /// It was never started, or exited on its own (its log's tail is shown).
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} is not running", self.name));
        if let Some(status) = child.try_wait().expect("wait for the daemon") {
            self.child = None;
            panic!("{} exited on its own ({status})\n{}", self.name, self.log_tail());
        }
    }

    /// The last lines of its log, for a failure message.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- last lines of {} ---\n{}", self.log.display(), lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The gateway configuration `c` as the TOML file `hj212-gateway` reads. It writes the settings
/// [`sites::gateway_config`](crate::sites::gateway_config) and the tests change; every other
/// setting is left to its default.
///
/// # Panics
/// The text does not read back as `c` (a setting the tests changed that is not written here).
#[must_use]
pub fn gateway_toml(c: &GatewayConfig) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "shutdown_timeout_secs = {}", c.shutdown_timeout_secs);
    let _ = writeln!(t, "\n[site]\nmn = {:?}\npw = {:?}\nst = {:?}", c.site.mn, c.site.pw, c.site.st);
    let _ = writeln!(t, "utc_offset_minutes = {}", c.site.utc_offset_minutes);
    let a = &c.acquisition;
    let _ = writeln!(
        t,
        "\n[acquisition]\nrtd_interval_secs = {}\nmin_interval_mins = {}\npoll_interval_ms = {}\n\
         samples_per_minute = {}\nminutes_per_hour = {}\nhours_per_day = {}\nsnapshot_interval_secs = {}",
        a.rtd_interval_secs,
        a.min_interval_mins,
        a.poll_interval_ms,
        a.samples_per_minute,
        a.minutes_per_hour,
        a.hours_per_day,
        a.snapshot_interval_secs
    );
    let s = &c.store;
    let _ = writeln!(
        t,
        "\n[store]\npath = {:?}\nretention_days = {}\nmax_queue_records = {}\ncache_capacity_mib = {}",
        s.path.display().to_string(),
        s.retention_days,
        s.max_queue_records,
        s.cache_capacity_mib
    );
    let l = &c.packet_log;
    let _ = writeln!(
        t,
        "\n[packet_log]\npath = {:?}\nmax_bytes = {}\nkeep = {}",
        l.path.display().to_string(),
        l.max_bytes,
        l.keep
    );
    let _ = writeln!(t, "\n[metrics]\naddress = {:?}", c.metrics.address);
    for port in &c.serial {
        let _ = writeln!(
            t,
            "\n[[serial]]\ndevice = {:?}\nbaud = {}\nstop_bits = {}\nresponse_timeout_ms = {}\nretries = {}\n\
             inter_request_delay_ms = {}",
            port.device.display().to_string(),
            port.baud,
            port.stop_bits,
            port.response_timeout_ms,
            port.retries,
            port.inter_request_delay_ms
        );
        for analyzer in &port.analyzer {
            let _ = writeln!(t, "\n[[serial.analyzer]]\nname = {:?}", analyzer.name);
            if let Some(profile) = &analyzer.profile {
                let _ = writeln!(t, "profile = {profile:?}");
            }
            if let Some(unit) = analyzer.unit {
                let _ = writeln!(t, "unit = {unit}");
            }
        }
    }
    for p in &c.platform {
        let _ = writeln!(
            t,
            "\n[[platform]]\nname = {:?}\naddress = {:?}\nversion = {}\nack = {}\nover_time_secs = {}\nre_count = {}\n\
             replay_per_sec = {}\nlive_window_secs = {}\nmax_in_flight = {}\nreconnect_min_ms = {}\nreconnect_max_ms = {}",
            p.name,
            p.address,
            p.version,
            p.ack,
            p.over_time_secs,
            p.re_count,
            p.replay_per_sec,
            p.live_window_secs,
            p.max_in_flight,
            p.reconnect_min_ms,
            p.reconnect_max_ms
        );
    }
    let back = GatewayConfig::parse(&t).unwrap_or_else(|e| panic!("the gateway file does not parse: {e}\n{t}"));
    assert!(back == *c, "the gateway file does not say what the configuration says:\n{t}");
    t
}

/// Frames recorded on their way up (gateway → ingest) through a [`Proxy`], whole and as sent.
pub type Captured = Arc<Mutex<Vec<Vec<u8>>>>;

/// Records every frame the gateway sends through `proxy` on connections opened from now on
/// (the proxy's frame filter, which here drops nothing).
#[must_use]
pub fn capture(proxy: &Proxy) -> Captured {
    let frames: Captured = Arc::default();
    let sink = frames.clone();
    proxy.set_frame_filter(Some(Arc::new(move |frame: &[u8]| {
        sink.lock().unwrap_or_else(PoisonError::into_inner).push(frame.to_vec());
        false
    })));
    frames
}

/// The frames recorded so far.
#[must_use]
pub fn captured(frames: &Captured) -> Vec<Vec<u8>> {
    frames.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// `tests/py/hj212_check.py`.
#[must_use]
pub fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join("hj212_check.py")
}

/// `python3` on `PATH`, or `None` after a skip notice (a failure under `CI=true`).
#[must_use]
pub fn python3() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("python3")).find(|p| p.is_file()));
    if found.is_none() {
        chain::skip("python3 is not on PATH (install the `python3` package): the independent frame check cannot run");
    }
    found
}

/// What `hj212_check.py` said about a byte stream: its exit status and its JSON summary.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// 0 every frame passed, 1 a frame failed, 2 a usage or read error.
    pub status: ExitStatus,
    /// `{"frames", "ok", "bad", "long", "garbage_bytes", "incomplete_bytes", "by_cn", "errors"}`.
    pub summary: Json,
}

impl CheckReport {
    /// A number of the summary (0 when missing).
    #[must_use]
    pub fn count(&self, key: &str) -> u64 {
        self.summary[key].as_u64().unwrap_or(0)
    }

    /// Frames of command code `cn` that passed.
    #[must_use]
    pub fn cn(&self, cn: &str) -> u64 {
        self.summary["by_cn"][cn].as_u64().unwrap_or(0)
    }
}

/// Runs `hj212_check.py` with `args`, `stdin` on its standard input, or returns `None` after a
/// skip notice when there is no `python3` (a failure under `CI=true`).
///
/// # Panics
/// The script cannot be run or prints no JSON.
#[must_use]
pub fn hj212_check(args: &[&std::ffi::OsStr], stdin: &[u8]) -> Option<CheckReport> {
    use std::io::Write as _;
    let python = python3()?;
    let mut child = Command::new(python)
        .arg(check_script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 tests/py/hj212_check.py");
    let mut input = child.stdin.take().expect("stdin");
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("hj212_check.py output");
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "hj212_check.py printed no JSON ({e}; {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some(CheckReport { status: out.status, summary })
}
