//! Memory and CPU footprint of the release daemon (a measurement, not a test).
//!
//! Pre-fills a store with a 30-day backlog for one platform (real-time data every 30 s, minute
//! statistics every 10 min, hourly and daily records), serves four simulated analyzers on
//! pseudo-terminals (one per serial port, polled every second), starts the release
//! `hj212-gateway` next to this example on a copy of that store, lets it settle, then samples
//! `/proc/<pid>/status` (`VmRSS`, `VmHWM`) and `/proc/<pid>/stat` (user + system ticks) once a
//! second, and prints the median and the maximum of the samples.
//!
//! ```sh
//! cargo build --release -p hj212-gateway --bins --examples
//! target/release/examples/footprint [--secs 60] [--settle 10] [--days 30] [--cache-mib N]
//!     [--platform down|ack] [--replay-per-sec N] [--daemon PATH]... [--rounds N]
//! target/release/examples/footprint --probe [--days 30] [--cache-mib 4]
//! ```
//!
//! - `--platform down` (the default): the platform refuses connections, so the backlog stays.
//!   `--platform ack`: a platform on loopback acks every upload at once, so the daemon replays
//!   its backlog (at `--replay-per-sec`, the gateway's `replay_per_sec`, default 5) meanwhile.
//! - `--daemon PATH`, repeatable: measure these daemon binaries instead, side by side on copies
//!   of the same pre-filled store, `--rounds` times each in turn, and print each one's median.
//!   Environment variables (such as `MALLOC_ARENA_MAX`) pass on to the daemons.
//! - `--probe`: no daemon; where the store's memory goes. Each step runs in a fresh process on
//!   the pre-filled store, with sled's cache at `--cache-mib` (default 4, the gateway's), and
//!   prints that process's RSS (anonymous and file-backed) before and after: opening the sled
//!   database; opening it and reading the queue with one iterator; the same with one lookup per
//!   record; and `SledStore::open`, as the daemon opens the store.
//!
//! Results and the targets (RSS < 16 MiB, idle CPU < 1 % of a core) are in
//! `docs/performance.md`, "Gateway footprint".

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::session::{Config as SessionConfig, Event, Now, Role, Session};
use hj212_codec::{CrcVariant, DecodeOptions, Decoded, Split, Splitter};
use hj212_gateway::{Record, SledStore, Store};

const MN: &str = "010000A8900016F000169DC0";
const PW: &str = "123456";

/// Every value given to the option `name`.
fn args(name: &str) -> Vec<String> {
    let all: Vec<String> = std::env::args().collect();
    all.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect()
}

fn arg(name: &str, default: u64) -> u64 {
    args(name).last().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A simulated analyzer on a new raw pty, served from a thread; returns the slave's path (the
/// slave fd is leaked so the path stays valid).
fn analyzer_on_pty(mut sim: Simulator) -> PathBuf {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut t = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).expect("tcsetattr");
    let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    std::mem::forget(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = match master.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    pending.clear();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Ok(n) => n,
            };
            for reply in sim.serve_bytes(&mut pending, &chunk[..n]) {
                let _ = master.write_all(&reply.bytes);
            }
        }
    });
    path
}

/// A platform on loopback that acks every upload at once (`9014`), one connection at a time;
/// returns its address.
fn acking_platform() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the platform");
    let addr = listener.local_addr().expect("platform address");
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            serve_platform(sock);
        }
    });
    addr
}

fn serve_platform(mut sock: TcpStream) {
    let start = Instant::now();
    let wall = hj212_codec::time::DateTime::from_millis(1_767_225_600_000).expect("time");
    let now = || Now::new(u64::try_from(start.elapsed().as_millis()).unwrap_or(0), wall);
    let mut session = Session::new(SessionConfig::new(Role::Platform, MN, PW, "32"));
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        while let Some(event) = session.poll_event() {
            if let Event::Upload { token, needs_ack: true, .. } = event {
                let _ = session.ack(now(), token);
            }
        }
        while let Some(frame) = session.poll_transmit() {
            if sock.write_all(&frame).is_err() {
                return;
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(now());
                continue;
            }
            Err(_) => return,
        }
        loop {
            let len = match Splitter::default().split(&buf, false) {
                Split::Frame(f) => {
                    if let Ok(p) = Decoded::new(f, DecodeOptions::LENIENT).verdict() {
                        session.handle_packet(now(), &p);
                    }
                    f.len()
                }
                Split::Skip { len, .. } => len,
                Split::Incomplete => break,
            };
            buf.drain(..len);
        }
    }
}

fn civil(ms: i64) -> String {
    let t = hj212_codec::time::DateTime::from_millis(ms).expect("time");
    format!("{:04}{:02}{:02}{:02}{:02}{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// A record as the site would write it: a data upload of four pollutants.
fn record(cn: u16, data_time_ms: i64, qn_ms: i64) -> Record {
    let dt = civil(data_time_ms);
    let cp = if cn == 2011 {
        "w01018-Rtd=42.5,w01018-Flag=N;w21003-Rtd=1.50,w21003-Flag=N;w21011-Rtd=0.120,w21011-Flag=N;\
         w21001-Rtd=3.20,w21001-Flag=N"
            .to_string()
    } else {
        ["w01018", "w21003", "w21011", "w21001"]
            .iter()
            .map(|c| format!("{c}-Min=1.0,{c}-Avg=2.0,{c}-Max=3.0,{c}-Flag=N"))
            .collect::<Vec<_>>()
            .join(";")
    };
    let seg = format!("QN={}000;ST=32;CN={cn};PW={PW};MN={MN};Flag=5;CP=&&DataTime={dt};{cp}&&", civil(qn_ms));
    let frame = hj212_codec::encode::frame(seg.as_bytes(), CrcVariant::Hj212, false);
    Record { cn, data_time_ms, written_ms: qn_ms, frame }
}

fn prefill(path: &Path, days: u64) -> u64 {
    let store = SledStore::open(path, &["down".to_string()], 200_000).expect("store");
    let now = hj212_codec::time::DateTime::from_millis(1_767_225_600_000).unwrap().to_millis();
    let start = now - i64::try_from(days).unwrap() * 86_400_000;
    let mut n = 0u64;
    let mut t = start;
    while t < now {
        store.append(&record(2011, t, t)).expect("append");
        n += 1;
        if t % 600_000 == 0 {
            store.append(&record(2051, t - 600_000, t)).expect("append");
            n += 1;
        }
        if t % 3_600_000 == 0 {
            store.append(&record(2061, t - 3_600_000, t)).expect("append");
            n += 1;
        }
        if t % 86_400_000 == 0 {
            store.append(&record(2031, t - 86_400_000, t)).expect("append");
            n += 1;
        }
        t += 30_000;
    }
    n
}

fn simulator(profile: &'static firmware::profile::Profile<'static>, code: &str, v: f64) -> Simulator {
    let mut sim = Simulator::new(profile);
    sim.set(&Target::Pollutant(Code::new(code)), Value::Number(v));
    sim.set(&Target::Status, Value::Code(1));
    sim
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is field 14, stime 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// What one run of a daemon measured.
struct Footprint {
    /// `VmRSS` samples, KiB.
    rss: Vec<u64>,
    /// `VmHWM` at the end, KiB.
    hwm: u64,
    /// Percent of one core.
    cpu: f64,
    /// The store directory's size at the end, KiB.
    store_kib: u64,
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `daemon` with `config`, lets it settle for `settle` s, then samples it for `secs` s.
fn measure(daemon: &Path, config: &Path, settle: u64, secs: u64) -> Footprint {
    let mut child = Command::new(daemon)
        .arg("--config")
        .arg(config)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(settle));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    let (ticks0, t_start) = (cpu_ticks(pid), Instant::now());
    let mut rss = Vec::new();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(status_kib(pid, "VmRSS:"));
    }
    let cpu = (cpu_ticks(pid) - ticks0) as f64 / clk_tck() / t_start.elapsed().as_secs_f64() * 100.0;
    let hwm = status_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let store = config.with_file_name("store");
    Footprint { rss, hwm, cpu, store_kib: walk_size(&store) / 1024 }
}

/// `VmRSS` and its anonymous and file-backed parts, KiB.
fn rss_parts() -> (u64, u64, u64) {
    let me = std::process::id();
    (status_kib(me, "VmRSS:"), status_kib(me, "RssAnon:"), status_kib(me, "RssFile:"))
}

/// One `--probe` step, in this (fresh) process: see the module docs.
fn probe_step(step: &str, store: &Path, cache_mib: u64) {
    let before = rss_parts();
    let t0 = Instant::now();
    let cache = cache_mib << 20;
    let mut detail = String::new();
    // Kept until the second reading.
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    match step {
        "store" => {
            held.push(Box::new(
                SledStore::open_with_cache(store, &["down".to_string()], 200_000, Some(cache)).unwrap(),
            ));
        }
        _ => {
            let db = sled::Config::new().path(store).cache_capacity(cache).open().expect("open the store");
            let queue = db.open_tree("queue/down").unwrap();
            match step {
                "open" => {}
                "iterate" => detail = format!(", {} records", queue.iter().count()),
                "lookups" => {
                    let (mut n, mut item) = (0, queue.first().unwrap());
                    while let Some((k, _)) = item {
                        n += 1;
                        item = queue
                            .range::<&[u8], _>((std::ops::Bound::Excluded(k.as_ref()), std::ops::Bound::Unbounded))
                            .next()
                            .transpose()
                            .unwrap();
                    }
                    detail = format!(", {n} records");
                }
                other => panic!("probe step {other}"),
            }
            held.push(Box::new(queue));
            held.push(Box::new(db));
        }
    }
    let after = rss_parts();
    println!(
        "{step:>8}: RSS {:.1} → {:.1} MiB (anonymous {:.1} → {:.1}, file {:.1} → {:.1}) in {:.0?}{detail}",
        mib(before.0),
        mib(after.0),
        mib(before.1),
        mib(after.1),
        mib(before.2),
        mib(after.2),
        t0.elapsed()
    );
    drop(held);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().filter_map(Result::ok) {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn main() {
    if let (Some(step), Some(store)) = (args("--probe-step").pop(), args("--store").pop()) {
        probe_step(&step, Path::new(&store), arg("--cache-mib", 4));
        return;
    }
    let secs = arg("--secs", 60);
    let settle = arg("--settle", 10);
    let days = arg("--days", 30);
    let cache_mib = arg("--cache-mib", 0);
    let rounds = arg("--rounds", 1);
    let replay_per_sec = arg("--replay-per-sec", 0);
    let platform = args("--platform").pop().unwrap_or_else(|| "down".into());
    let mut daemons: Vec<PathBuf> = args("--daemon").iter().map(PathBuf::from).collect();
    if daemons.is_empty() {
        let exe = std::env::current_exe().unwrap();
        daemons.push(exe.parent().and_then(Path::parent).map(|d| d.join("hj212-gateway")).unwrap());
    }
    for d in &daemons {
        assert!(d.exists(), "{} missing: cargo build --release -p hj212-gateway --bins", d.display());
    }
    let dir = std::env::temp_dir().join(format!("hj212-gw-footprint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let t0 = Instant::now();
    let seed_store = dir.join("seed-store");
    let records = prefill(&seed_store, days);
    println!("store pre-filled: {records} records ({days} days) in {:.1?}", t0.elapsed());
    if std::env::args().any(|a| a == "--probe") {
        let cache_mib = if cache_mib == 0 { 4 } else { cache_mib };
        for step in ["open", "iterate", "lookups", "store"] {
            let status = Command::new(std::env::current_exe().unwrap())
                .args(["--probe-step", step, "--cache-mib", &cache_mib.to_string(), "--store"])
                .arg(&seed_store)
                .status()
                .expect("run a probe step");
            assert!(status.success(), "probe step {step}: {status}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    use firmware::profile::builtin::{SURFACE_WATER_COD, SURFACE_WATER_NH3N, SURFACE_WATER_TN, SURFACE_WATER_TP};
    let ports = [
        ("surface-water-cod", analyzer_on_pty(simulator(&SURFACE_WATER_COD, "w01018", 42.5))),
        ("surface-water-nh3n", analyzer_on_pty(simulator(&SURFACE_WATER_NH3N, "w21003", 1.5))),
        ("surface-water-tp", analyzer_on_pty(simulator(&SURFACE_WATER_TP, "w21011", 0.12))),
        ("surface-water-tn", analyzer_on_pty(simulator(&SURFACE_WATER_TN, "w21001", 3.2))),
    ];
    let address = match platform.as_str() {
        "down" => "127.0.0.1:9".to_string(),
        "ack" => acking_platform().to_string(),
        other => panic!("--platform {other}: down or ack"),
    };

    let mut medians: Vec<Vec<u64>> = vec![Vec::new(); daemons.len()];
    for round in 0..rounds {
        for (i, daemon) in daemons.iter().enumerate() {
            let run = dir.join(format!("run-{round}-{i}"));
            copy_dir(&seed_store, &run.join("store"));
            let mut cfg = format!(
                "[site]\nmn = \"{MN}\"\npw = \"{PW}\"\n[acquisition]\npoll_interval_ms = 1000\n[store]\npath = \"{}\"\n{}\
                 [packet_log]\npath = \"{}\"\n[[platform]]\nname = \"down\"\naddress = \"{address}\"\n{}",
                run.join("store").display(),
                if cache_mib > 0 { format!("cache_capacity_mib = {cache_mib}\n") } else { String::new() },
                run.join("packets.log").display(),
                if replay_per_sec > 0 { format!("replay_per_sec = {replay_per_sec}\n") } else { String::new() },
            );
            for (a, (profile, path)) in ports.iter().enumerate() {
                cfg.push_str(&format!(
                    "[[serial]]\ndevice = \"{}\"\n[[serial.analyzer]]\nname = \"a{a}\"\nprofile = \"{profile}\"\nunit = 1\n",
                    path.display()
                ));
            }
            let config = run.join("gateway.toml");
            std::fs::write(&config, cfg).unwrap();
            let f = measure(daemon, &config, settle, secs);
            medians[i].push(median(&f.rss));
            println!(
                "{}: footprint over {secs} s (after {settle} s settling): RSS median {:.1} MiB, max {:.1} MiB, \
                 peak (VmHWM) {:.1} MiB; CPU {:.2} % of a core; store on disk {:.1} MiB",
                daemon.display(),
                mib(median(&f.rss)),
                mib(f.rss.iter().copied().max().unwrap_or(0)),
                mib(f.hwm),
                f.cpu,
                mib(f.store_kib),
            );
            let _ = std::fs::remove_dir_all(&run);
        }
    }
    if rounds > 1 || daemons.len() > 1 {
        for (daemon, m) in daemons.iter().zip(&medians) {
            let each: Vec<String> = m.iter().map(|k| format!("{:.1}", mib(*k))).collect();
            println!(
                "{}: RSS median of {rounds} runs {:.1} MiB (runs: {} MiB)",
                daemon.display(),
                mib(median(m)),
                each.join(", ")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return std::fs::metadata(p).map_or(0, |m| m.len()) };
    rd.filter_map(Result::ok).map(|e| walk_size(&e.path())).sum()
}
