//! Memory and CPU footprint of the release daemon (a measurement, not a test).
//!
//! Pre-fills a store with a 30-day backlog for a platform that cannot be reached (real-time data
//! every 30 s, minute statistics every 10 min, hourly and daily records), serves four simulated
//! analyzers on pseudo-terminals (one per serial port, polled every second), starts the release
//! `hj212-gateway` next to this example, lets it settle, then samples `/proc/<pid>/status`
//! (`VmRSS`, `VmHWM`) and `/proc/<pid>/stat` (user + system ticks) once a second.
//!
//! ```sh
//! cargo build --release -p hj212-gateway --bins --examples
//! target/release/examples/footprint [--secs 60] [--settle 10] [--days 30] [--cache-mib N]
//! ```
//!
//! Results and the targets (RSS < 16 MiB, idle CPU < 1 % of a core) are in
//! `docs/performance.md`, "Gateway footprint".

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::CrcVariant;
use hj212_gateway::{Record, SledStore, Store};

const MN: &str = "010000A8900016F000169DC0";
const PW: &str = "123456";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
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

fn main() {
    let secs = arg("--secs", 60);
    let settle = arg("--settle", 10);
    let days = arg("--days", 30);
    let cache_mib = arg("--cache-mib", 0);
    let exe = std::env::current_exe().unwrap();
    let daemon = exe.parent().and_then(Path::parent).map(|d| d.join("hj212-gateway")).unwrap();
    assert!(daemon.exists(), "{} missing: cargo build --release -p hj212-gateway --bins", daemon.display());
    let dir = std::env::temp_dir().join(format!("hj212-gw-footprint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let t0 = Instant::now();
    let records = prefill(&dir.join("store"), days);
    println!("store pre-filled: {records} records ({days} days) in {:.1?}", t0.elapsed());

    use firmware::profile::builtin::{SURFACE_WATER_COD, SURFACE_WATER_NH3N, SURFACE_WATER_TN, SURFACE_WATER_TP};
    let ports = [
        ("surface-water-cod", analyzer_on_pty(simulator(&SURFACE_WATER_COD, "w01018", 42.5))),
        ("surface-water-nh3n", analyzer_on_pty(simulator(&SURFACE_WATER_NH3N, "w21003", 1.5))),
        ("surface-water-tp", analyzer_on_pty(simulator(&SURFACE_WATER_TP, "w21011", 0.12))),
        ("surface-water-tn", analyzer_on_pty(simulator(&SURFACE_WATER_TN, "w21001", 3.2))),
    ];
    let mut cfg = format!(
        "[site]\nmn = \"{MN}\"\npw = \"{PW}\"\n[acquisition]\npoll_interval_ms = 1000\n[store]\npath = \"{}\"\n{}\
         [packet_log]\npath = \"{}\"\n[[platform]]\nname = \"down\"\naddress = \"127.0.0.1:9\"\n",
        dir.join("store").display(),
        if cache_mib > 0 { format!("cache_capacity_mib = {cache_mib}\n") } else { String::new() },
        dir.join("packets.log").display(),
    );
    for (i, (profile, path)) in ports.iter().enumerate() {
        cfg.push_str(&format!(
            "[[serial]]\ndevice = \"{}\"\n[[serial.analyzer]]\nname = \"a{i}\"\nprofile = \"{profile}\"\nunit = 1\n",
            path.display()
        ));
    }
    let config = dir.join("gateway.toml");
    std::fs::write(&config, cfg).unwrap();

    let mut child = Command::new(&daemon)
        .arg("--config")
        .arg(&config)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(settle));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    let tck = clk_tck();
    let (ticks0, t_start) = (cpu_ticks(pid), Instant::now());
    let (mut rss_max, mut rss_sum, mut n) = (0u64, 0u64, 0u64);
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let rss = status_kib(pid, "VmRSS:");
        rss_max = rss_max.max(rss);
        rss_sum += rss;
        n += 1;
    }
    let cpu = (cpu_ticks(pid) - ticks0) as f64 / tck / t_start.elapsed().as_secs_f64() * 100.0;
    let hwm = status_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let store_kib: u64 = walk_size(&dir.join("store")) / 1024;
    println!(
        "footprint over {secs} s (after {settle} s settling): RSS mean {:.1} MiB, max {:.1} MiB, peak (VmHWM) {:.1} MiB; \
         CPU {cpu:.2} % of a core; store on disk {:.1} MiB",
        rss_sum as f64 / n.max(1) as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        hwm as f64 / 1024.0,
        store_kib as f64 / 1024.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return std::fs::metadata(p).map_or(0, |m| m.len()) };
    rd.filter_map(Result::ok).map(|e| walk_size(&e.path())).sum()
}
