//! The whole chain in one process, with the faults the end-to-end tests and the soak inject.
//!
//! ```text
//! simulated analyzers ─pty─▶ gateway ─TCP─▶ proxy ─TCP─▶ ingest ─MQTT─▶ broker ─▶ subscriber
//!   (pty::Line)          (store: dir or tmpfs) (cut, black hole)       (embedded or Mosquitto)
//! ```
//!
//! The gateway and ingest run in-process and are stopped by cancelling them without draining
//! (the gateway's SIGKILL under a real process is `gateway/tests/crash.rs`). Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firmware::sim::Fault as SimFault;
use hj212_codec::time::DateTime;
use hj212_gateway::config::Config as GatewayConfig;
use hj212_gateway::metrics::Metrics;
use hj212_gateway::{Clock, Gateway, ScaledClock};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::mqtt::Subscriber;
use crate::oracle::{self, Received, Sent, Tally, flag_of, item};
use crate::proxy::Proxy;
use crate::pty::{self, Line};
use crate::sites::{self, Site, Timing};

/// The longest any single step may take.
pub const WAIT: Duration = Duration::from_secs(15);
/// The name of the gateway's one platform.
pub const PLATFORM: &str = "platform";
/// Where the data clock starts.
pub const ORIGIN: DateTime = DateTime { year: 2026, month: 3, day: 1, hour: 8, minute: 0, second: 0, millis: 0 };
/// Fast timing: a poll every 250 ms, a data clock 60 times real time, one-minute statistics.
pub const TIMING: Timing =
    Timing { poll_interval_ms: 250, rtd_interval_secs: 1, min_interval_mins: 1, over_time_secs: 1, re_count: 1 };

/// True under `CI=true`.
#[must_use]
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (a notice, the test passes) or, under `CI=true`, fails with `reason`. The notice is
/// written to the process's stderr directly, past the test harness's capture (which would hide
/// the `eprintln!` of a passing test), so a skip is seen in a plain `cargo test` run.
///
/// # Panics
/// Under `CI=true`.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    assert!(!ci(), "CI=true requires this test to run, but {reason}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// A binary of another workspace package. Cargo hands a test only its own package's binaries
/// (`CARGO_BIN_EXE_*`); the others are where `cargo build` or `cargo test --workspace` (which
/// builds every package's binaries before running any test) put them: the profile directory this
/// test runs from (`target/<profile>/deps/..`), else `$CARGO_TARGET_DIR` (default
/// `<workspace>/target`) under `$PROFILE` (default `debug`), as `tests/tests/qemu_smoke.rs` finds
/// the host CLI. `None` when it is in neither; callers then [`skip`].
#[must_use]
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let beside_test = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join(name)));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).or_else(|| root.map(|r| r.join("target")));
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "debug".into());
    beside_test.into_iter().chain(target.map(|t| t.join(profile).join(name))).find(|p| p.is_file())
}

/// The daemons' logs on stderr when `RUST_LOG` is set.
pub fn init_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).try_init();
    }
}

/// A fresh directory `hj212-{kind}-{name}-{pid}` under the temporary directory.
///
/// # Panics
/// It cannot be made.
#[must_use]
pub fn temp_dir(kind: &str, name: &str) -> PathBuf {
    init_log();
    let dir = std::env::temp_dir().join(format!("hj212-{kind}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits (bounded) until `done`.
///
/// # Panics
/// Not done within `limit`.
pub async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            crate::stacks::dump(what);
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// splitmix64: a small, seedable generator for fault schedules.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub const fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub const fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.below(i as u64 + 1)).unwrap_or(0);
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A real Mosquitto with persistence, so that a graceful stop keeps the subscriber's session.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join("mosquitto")).find(|p| p.is_file())
    }

    /// Starts Mosquitto on a free port, or returns `None` after a skip notice (a failure under CI).
    ///
    /// # Panics
    /// It does not start.
    pub async fn start(dir: &Path) -> Option<Self> {
        if Self::binary().is_none() {
            skip("mosquitto is not on PATH (install the `mosquitto` package)");
            return None;
        }
        let port = free_port();
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).expect("mosquitto directory");
        // Started as root, Mosquitto drops to the `mosquitto` user: without write access to its
        // directory it would keep neither its persistence file (the subscriber's session is then
        // lost on a restart) nor its log, and say so nowhere.
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("mosquitto directory permissions");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 1000000\nmax_inflight_messages 0\n\
                 log_dest file {}\nlog_type all\nconnection_messages true\nlog_timestamp_format %H:%M:%S\n",
                data.display(),
                data.join("mosquitto.log").display()
            ),
        )
        .expect("mosquitto.conf");
        let mut m = Self { child: None, port, conf };
        m.spawn().await;
        Some(m)
    }

    /// Starts the broker (again) on its port.
    ///
    /// # Panics
    /// It does not start.
    pub async fn spawn(&mut self) {
        let binary = Self::binary().expect("mosquitto on PATH");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A graceful stop (SIGTERM): Mosquitto writes its persistence file, sessions included.
    ///
    /// # Panics
    /// It does not stop.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + WAIT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not stop on SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tmpfs the test mounts (root only) and unmounts when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `dir`.
    ///
    /// # Errors
    /// Why it cannot (not root, no `mount`).
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`mount -t tmpfs` is not permitted here ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills the filesystem with `filler`, down to the last byte.
    ///
    /// # Panics
    /// The filler cannot be created.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.dir.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        for size in [block.len(), 512, 1] {
            while f.write_all(&block[..size]).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a panic left the store open): detach it now, freed once closed.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A data clock that a test can jump (forward and back); its millisecond count never goes back.
#[derive(Debug)]
pub struct JumpClock {
    base: ScaledClock,
    offset_ms: AtomicI64,
    /// The latest civil time it ever returned.
    high_ms: AtomicI64,
}

impl JumpClock {
    /// Starts at `origin`, running `factor` times real time.
    #[must_use]
    pub fn new(origin: DateTime, factor: u32) -> Self {
        Self { base: ScaledClock::new(origin, factor), offset_ms: AtomicI64::new(0), high_ms: AtomicI64::new(i64::MIN) }
    }

    /// Moves the civil time by `ms` (negative: back).
    pub fn jump(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The latest civil time the clock ever showed.
    pub fn high_water(&self) -> DateTime {
        let _ = self.now();
        DateTime::from_millis_or_epoch(self.high_ms.load(Ordering::SeqCst))
    }
}

impl Clock for JumpClock {
    fn now(&self) -> DateTime {
        let ms = self.base.now().to_millis() + self.offset_ms.load(Ordering::SeqCst);
        self.high_ms.fetch_max(ms, Ordering::SeqCst);
        DateTime::from_millis_or_epoch(ms)
    }

    fn ms(&self) -> u64 {
        self.base.ms()
    }
}

// ---------------------------------------------------------------------------------------------

/// How to build a chain.
#[derive(Debug, Clone)]
pub struct Setup {
    /// An external broker (Mosquitto), or `None` for ingest's embedded one.
    pub broker: Option<SocketAddr>,
    /// A directory (a small filesystem) for the gateway's store instead of the test directory.
    pub store_dir: Option<PathBuf>,
    /// The gateway's data clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for Setup {
    fn default() -> Self {
        Self { broker: None, store_dir: None, clock: Arc::new(ScaledClock::new(ORIGIN, 60)) }
    }
}

/// The running chain and what a test needs to restart parts of it.
#[derive(Debug)]
pub struct Chain {
    /// The test directory.
    pub dir: PathBuf,
    /// The simulated water site.
    pub site: Site,
    _line: Line,
    /// The broker ingest publishes to and the subscriber reads.
    pub broker: SocketAddr,
    /// Between the gateway and ingest.
    pub proxy: Proxy,
    /// The gateway's data clock.
    pub clock: Arc<dyn Clock>,
    /// The gateway's configuration.
    pub gw_config: GatewayConfig,
    gateway: Option<(Gateway, CancellationToken)>,
    ingest: Option<(hj212_ingest::Handle, CancellationToken)>,
    /// Records stored, summed over the gateway's lives.
    pub stored: u64,
    /// Failed store writes, summed over the gateway's lives.
    pub store_errors: u64,
}

impl Chain {
    /// Starts ingest, the proxy, the analyzers and the gateway.
    pub async fn start(dir: &Path, setup: Setup) -> Self {
        std::fs::create_dir_all(dir.join("gateway")).expect("gateway directory");
        std::fs::create_dir_all(dir.join("ingest")).expect("ingest directory");
        let broker = match setup.broker {
            Some(b) => b,
            None => hj212_ingest::broker::start(0).await.expect("broker"),
        };
        let site = sites::water(false);
        let line = Line::open(site.sims()).expect("pty");
        let (handle, token) = start_ingest(dir, broker).await;
        let proxy = Proxy::start(handle.listen_addrs()[0]).await.expect("proxy");
        let mut gw_config = sites::gateway_config(&site, &dir.join("gateway"), line.path(), proxy.addr(), TIMING);
        if let Some(s) = &setup.store_dir {
            gw_config.store.path = s.join("store");
            gw_config.store.cache_capacity_mib = 1;
        }
        let mut chain = Self {
            dir: dir.to_path_buf(),
            site,
            _line: line,
            broker,
            proxy,
            clock: setup.clock,
            gw_config,
            gateway: None,
            ingest: Some((handle, token)),
            stored: 0,
            store_errors: 0,
        };
        chain.start_gateway().await;
        chain
    }

    /// Starts the gateway on its store (retrying while the store's lock is still held).
    pub async fn start_gateway(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let token = CancellationToken::new();
            let options = hj212_gateway::Options { clock: Some(self.clock.clone()) };
            match hj212_gateway::start_with(self.gw_config.clone(), token.clone(), options).await {
                Ok(gw) => {
                    self.gateway = Some((gw, token));
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("gateway start: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("gateway did not start: {e:#}"),
            }
        }
    }

    /// The running gateway.
    #[must_use]
    pub fn gateway(&self) -> &Gateway {
        &self.gateway.as_ref().expect("gateway running").0
    }

    /// One of the running gateway's metrics.
    pub fn metric(&self, f: impl Fn(&Metrics) -> &AtomicU64) -> u64 {
        f(&self.gateway().metrics()).load(Ordering::Relaxed)
    }

    /// Cancels the gateway without waiting for its queue, and adds up its counters.
    pub async fn stop_gateway(&mut self) {
        let (gw, token) = self.gateway.take().expect("gateway running");
        token.cancel();
        tokio::time::timeout(WAIT, gw.wait()).await.expect("gateway did not stop");
        self.stored += gw.metrics().messages_stored.load(Ordering::Relaxed);
        self.store_errors += gw.metrics().store_errors.load(Ordering::Relaxed);
    }

    /// Cancels ingest.
    pub async fn stop_ingest(&mut self) {
        let (handle, token) = self.ingest.take().expect("ingest running");
        token.cancel();
        // A shutdown that timed out while the broker was away is acceptable here: it is a kill.
        if let Err(e) = tokio::time::timeout(WAIT, handle.wait()).await.expect("ingest did not stop") {
            eprintln!("ingest stopped with: {e:#}");
        }
    }

    /// Starts ingest again (same spool, new port) and points the proxy at it.
    pub async fn restart_ingest(&mut self) {
        let (handle, token) = start_ingest(&self.dir, self.broker).await;
        self.proxy.set_upstream(handle.listen_addrs()[0]);
        self.ingest = Some((handle, token));
    }

    /// Where ingest listens now.
    #[must_use]
    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest.as_ref().expect("ingest running").0.listen_addrs()[0]
    }

    /// Cuts the uplink: open connections are closed and new ones find nobody, until
    /// [`Chain::restore_uplink`].
    pub fn cut_uplink(&self) {
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        self.proxy.set_upstream(nobody);
        self.proxy.cut();
    }

    /// Points the proxy at ingest again.
    pub fn restore_uplink(&self) {
        self.proxy.set_upstream(self.ingest_addr());
    }

    /// The COD analyzer's simulator.
    #[must_use]
    pub fn cod(&self) -> &pty::SharedSim {
        &self.site.analyzer("cod").sim
    }

    /// A subscriber to `hj212/#` with a persistent session.
    pub async fn subscriber(&self, id: &str) -> Subscriber {
        Subscriber::connect(
            (&self.broker.ip().to_string(), self.broker.port()),
            &format!("chain-{id}-{}", std::process::id()),
            "hj212/#",
            CancellationToken::new(),
        )
        .await
        .expect("subscriber")
    }

    /// Lets the link drain for `settle`, stops the gateway and checks conservation
    /// ([`oracle::check`]) with at least `min_acked` acknowledged records. Returns what was sent.
    ///
    /// # Panics
    /// Any rule of the oracle broken.
    pub async fn conservation(
        &mut self,
        sub: &mut Subscriber,
        got: &mut Received,
        min_acked: usize,
        settle: Duration,
    ) -> (Sent, Tally) {
        tokio::time::sleep(settle).await;
        self.stop_gateway().await;
        let queued = oracle::queued_qns(&self.gw_config.store.path, PLATFORM);
        let sent = oracle::read_sent(&self.gw_config.packet_log.path);
        let tally = oracle::check(sub, self.clock.as_ref(), got, &sent, &queued, &self.site, self.stored).await;
        eprintln!("conservation: {tally}; {} store errors", self.store_errors);
        assert!(tally.acked >= min_acked, "too little traffic to judge: {} acknowledged", tally.acked);
        (sent, tally)
    }

    /// Stops ingest and removes the test directory (kept with `HJ212_E2E_KEEP`).
    pub async fn finish(mut self) {
        if self.ingest.is_some() {
            self.stop_ingest().await;
        }
        if std::env::var_os("HJ212_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("files kept in {}", self.dir.display());
        }
    }
}

async fn start_ingest(dir: &Path, broker: SocketAddr) -> (hj212_ingest::Handle, CancellationToken) {
    let deadline = Instant::now() + WAIT;
    loop {
        let config = sites::ingest_config(&dir.join("ingest"), Some(broker)).expect("ingest config");
        let token = CancellationToken::new();
        match hj212_ingest::start(config, token.clone()).await {
            Ok(h) => return (h, token),
            Err(e) if Instant::now() < deadline => {
                eprintln!("ingest start: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("ingest did not start: {e:#}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A fault the chain can suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Cancel the gateway without waiting for its queue, restart it on the same store.
    KillGateway,
    /// Cancel ingest, restart it (same spool, new port) and point the proxy at it.
    KillIngest,
    /// Close the uplink's connections; new ones find nobody for a while.
    ResetUplink,
    /// Keep the connection open but forward nothing.
    BlackholeUplink,
    /// The COD analyzer stops answering: its values come with flag B.
    AnalyzerSilent,
    /// Stop the broker (Mosquitto, SIGTERM) while data flows; start it again.
    BrokerRestart,
    /// Fill the store's filesystem while the uplink is cut, until a store write fails (or
    /// [`Harness::disk_full_limit`]); free it again (no restart).
    DiskFull,
    /// Jump the data clock two hours forward, then ten minutes back.
    ClockJump,
}

/// What the chain has to suffer the faults that need more than the chain itself.
#[derive(Debug, Default)]
pub struct Harness {
    /// For [`Fault::BrokerRestart`].
    pub mosquitto: Option<Mosquitto>,
    /// For [`Fault::DiskFull`].
    pub tmpfs: Option<Tmpfs>,
    /// For [`Fault::ClockJump`].
    pub clock: Option<Arc<JumpClock>>,
    /// How long a full disk is kept full waiting for the first failed store write (default
    /// [`WAIT`]). sled writes into segments it has already allocated (512 KiB each), so a full
    /// disk is felt only once the current segment is used up.
    pub disk_full_limit: Option<Duration>,
    /// Full disks that made store writes fail, and full disks the store did not feel.
    pub disk_full_felt: (u32, u32),
}

impl Chain {
    /// Injects `fault` for about `hold`, waits for its effect where one is expected, and ends it.
    ///
    /// # Panics
    /// The fault needs what `harness` lacks, or its effect does not show.
    pub async fn inject(
        &mut self,
        fault: Fault,
        hold: Duration,
        harness: &mut Harness,
        sub: &mut Subscriber,
        got: &mut Received,
    ) {
        match fault {
            Fault::KillGateway => {
                self.stop_gateway().await;
                tokio::time::sleep(hold).await;
                self.start_gateway().await;
            }
            Fault::KillIngest => {
                self.stop_ingest().await;
                tokio::time::sleep(hold).await;
                self.restart_ingest().await;
            }
            Fault::ResetUplink => {
                self.cut_uplink();
                tokio::time::sleep(hold).await;
                self.restore_uplink();
            }
            Fault::BlackholeUplink => {
                self.proxy.set_blackhole(true);
                // Long enough for OverTime × (ReCount + 1) to expire, so the gateway gives the
                // link up and reconnects.
                tokio::time::sleep(hold + Duration::from_secs(2)).await;
                self.proxy.set_blackhole(false);
            }
            Fault::AnalyzerSilent => {
                // Two failed cycles (two attempts each): flag B, but short of the three failed
                // cycles after which the gateway backs a device off for a minute.
                pty::with(self.cod(), |s| (0..4).for_each(|_| s.inject(SimFault::NoAnswer)));
                let since = Instant::now();
                let is_b = |v: &Json| flag_of(v, "w01018").as_deref() == Some("B");
                got.wait_for(sub, self.clock.as_ref(), "flag B on COD", since, WAIT, is_b).await;
                // The flow meter kept answering: its value stays N, and a B value has no number.
                let b = got.arrivals.iter().rev().map(|a| &a.payload).find(|v| v["cn"] == "2011" && is_b(v));
                let b = b.expect("the B record just seen");
                assert_eq!(flag_of(b, "w00000").as_deref(), Some("N"), "{b}");
                assert!(item(b, "w01018").and_then(|i| i.get("Rtd")).is_none_or(Json::is_null), "a B value: {b}");
            }
            Fault::BrokerRestart => {
                let broker = harness.mosquitto.as_mut().expect("a broker restart needs Mosquitto");
                broker.stop().await;
                let sent_before = self.metric(|m| &m.frames_sent);
                // The gateway keeps sending while the broker is away (ingest holds the 9014s).
                until("uploads during the broker outage", WAIT, || self.metric(|m| &m.frames_sent) >= sent_before + 2)
                    .await;
                tokio::time::sleep(hold).await;
                broker.spawn().await;
            }
            Fault::DiskFull => {
                let fs = harness.tmpfs.as_ref().expect("a full disk needs a tmpfs");
                self.cut_uplink();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let queued_before = self.gateway().store().queue_len(PLATFORM);
                let errors = self.metric(|m| &m.store_errors);
                let filler = fs.fill();
                let deadline = Instant::now() + harness.disk_full_limit.unwrap_or(WAIT);
                while self.metric(|m| &m.store_errors) < errors + 2 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if self.metric(|m| &m.store_errors) > errors {
                    harness.disk_full_felt.0 += 1;
                } else {
                    harness.disk_full_felt.1 += 1;
                    eprintln!("the full disk was not felt: the store's current segment still had room");
                }
                let queued_full = self.gateway().store().queue_len(PLATFORM);
                assert!(queued_full >= queued_before, "queued records dropped: {queued_before} → {queued_full}");
                tokio::time::sleep(hold).await;
                std::fs::remove_file(&filler).expect("remove the filler");
                let stored = self.metric(|m| &m.messages_stored);
                until("records stored again once space is free", WAIT, || self.metric(|m| &m.messages_stored) > stored)
                    .await;
                self.restore_uplink();
            }
            Fault::ClockJump => {
                let clock = harness.clock.as_ref().expect("a clock jump needs a JumpClock").clone();
                clock.jump(2 * 3_600_000);
                got.wait_fresh(sub, self.clock.as_ref(), "fresh data after the forward jump", WAIT).await;
                tokio::time::sleep(hold).await;
                clock.jump(-10 * 60_000);
            }
        }
    }
}
