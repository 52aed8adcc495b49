//! What the data-quality engine holds per site after days of traffic: N sites sending minute
//! (2051, every 10 min), hourly (2061) and, with `--rtd`, real-time data (2011, every 30 s),
//! fed for D days of data time with the engine ticking every simulated minute, then the
//! process's resident memory. Run with `cargo run --release -p hj212-ingest --example
//! quality_memory -- SITES DAYS [--rtd]` (see docs/performance.md).

use hj212_codec::Packet;
use hj212_codec::time::DateTime;
use hj212_ingest::quality::{Engine, QualityConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sites: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let days: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rtd = args.iter().any(|a| a == "--rtd");
    let mns: Vec<String> = (0..sites).map(|i| format!("88888880{i:06}")).collect();
    let start = DateTime::parse("20261101000000").map_or(0, |t| t.to_millis());
    let mut engine = Engine::new(QualityConfig::default());
    let before = rss_kib();
    let started = std::time::Instant::now();
    let step = 30_000;
    let mut frames = 0u64;
    let mut t = start;
    while t < start + days * 86_400_000 {
        let at = DateTime::from_millis_or_epoch(t + 5_000);
        let n = (t - start) / step;
        for mn in &mns {
            let mut feed = |cn: u16, data_time: i64, value: f64, field: &str| {
                let dt = DateTime::from_millis_or_epoch(data_time);
                let seg = format!(
                    "QN=1;ST=32;CN={cn};PW=1;MN={mn};Flag=5;CP=&&DataTime={dt};w01018-{field}={value:.2},w01018-Flag=N;\
                     w00000-{field}={:.2},w00000-Flag=N&&",
                    value / 4.0
                );
                if let Ok(packet) = Packet::parse(seg.as_bytes()) {
                    engine.feed_packet(at, &packet);
                    frames += 1;
                }
            };
            let wobble = (n % 13) as f64;
            if rtd {
                feed(2011, t, 20.0 + wobble, "Rtd");
            }
            if n % 20 == 0 {
                feed(2051, t - 600_000, 21.0 + wobble, "Avg");
            }
            if n % 120 == 0 {
                feed(2061, t - 3_600_000, 22.0 + wobble, "Avg");
            }
        }
        if n % 2 == 0 {
            engine.tick(at);
        }
        t += step;
    }
    let elapsed = started.elapsed();
    let after = rss_kib();
    println!(
        "sites={sites} days={days} rtd={rtd} frames={frames} rss_before={before}KiB rss_after={after}KiB per_site={:.1}KiB \
         per_frame={:.2}us (building, parsing and feeding each frame, and the ticks)",
        (after.saturating_sub(before)) as f64 / sites as f64,
        elapsed.as_secs_f64() * 1e6 / frames.max(1) as f64
    );
}
