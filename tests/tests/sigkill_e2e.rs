//! SIGKILL of the real daemons, judged by the conservation oracle.
//!
//! ```text
//! simulated analyzers ─pty─▶ hj212-gateway ─TCP─▶ proxy ─TCP─▶ hj212-ingest ─MQTT─▶ Mosquitto ─▶ subscriber
//!                            (child; sled store  (records     (child; spool,
//!                             and packet log      frames)      fixed port)
//!                             on disk)
//! ```
//!
//! `chain.rs` runs the daemons in-process, where `Fault::KillGateway` and `Fault::KillIngest` can
//! only cancel them (for ingest a graceful drain). Here the `hj212-gateway` and `hj212-ingest`
//! binaries run as child processes on configuration files the test writes, and each round kills
//! the gateway, ingest or both with SIGKILL at a seeded random moment (0.3–2.5 s into the round),
//! keeps it down for a seeded while and starts it again on the same store, spool and port.
//! Ingest's lives alternate `ack_after = "puback"` and `"spool"`, so kills land under both. The
//! COD analyzer's slope changes every round, so 3020 records come and go too. After the last
//! round, fresh data must reach the subscriber; then the gateway is stopped gracefully (SIGTERM)
//! and the test judges:
//!
//! - **What the gateway stored** is read offline, exactly: every upload it sent is in its packet
//!   log (each frame is written to the file, and flushed to the kernel, before the socket write,
//!   so a SIGKILL cannot put a frame on the wire that the log lacks); every record still queued, and every
//!   aggregate (2031/2041/2051/2061, kept as history), is in its sled store. A real-time record
//!   leaves the store only on its 9014, after it was sent, so these three cover every record
//!   whose append returned; an append cut short by the kill either left nothing or left a record
//!   that is queued and judged like the others. The store's aggregates must all have been sent
//!   or still be queued.
//! - **The conservation oracle** (`hj212_tests::oracle::check`): every record sent and no longer
//!   queued (acknowledged) is on MQTT, nothing on MQTT was never sent, each payload is the frame
//!   sent and its values of flag `N` are what the simulator served; duplicates are counted.
//! - **Duplicates only in flight**: two sends of one record by the gateway are separated by an
//!   outage of a daemon (from its SIGKILL until it ran again), or by `OverTime` (a retry on the
//!   same link); two deliveries of one record on MQTT are separated by a SIGKILL that came after
//!   the record was first sent and at most 3 s after the earlier delivery (both daemons make a
//!   removal durable within sled's 500 ms flush, so a record delivered longer before a kill must
//!   not come again).
//! - **Interop**: every frame the gateway sent, as captured at the proxy, passes
//!   `tests/py/hj212_check.py` (length field and CRC, an implementation independent of the codec;
//!   skipped with a notice without `python3`, a failure under `CI=true`).
//!
//! The daemons must be built first (`cargo build -p hj212-gateway -p hj212-ingest --bins`;
//! `cargo test --workspace` does it); Mosquitto must be on `PATH`. Without them the test prints a
//! skip notice and passes; under `CI=true` it fails.
//!
//! Rounds: at least `HJ212_SIGKILL_ROUNDS` (default 6), and on until the clock has passed a
//! minute boundary, so that a minute record (2051) is made and delivered around the kills too:
//! 15 to 60 s in all. Seed: `HJ212_SIGKILL_SEED` (printed; the schedule's moments and durations,
//! not the daemons' timing). A longer run, about seven minutes:
//! `HJ212_SIGKILL_ROUNDS=200 cargo test -p hj212-tests --test sigkill_e2e -- --nocapture`.
//! `HJ212_E2E_KEEP` keeps the stores, packet logs and daemon logs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firmware::profile::{Code, Target, Value};
use hj212_codec::log::Direction;
use hj212_gateway::{Clock, SledStore, Store as _, SystemClock};
use hj212_tests::chain::{self, Mosquitto, Rng, TIMING, WAIT};
use hj212_tests::daemons::{self, Binaries, Daemon};
use hj212_tests::mqtt::Subscriber;
use hj212_tests::oracle::{self, Received};
use hj212_tests::packets::{self, parse_frame};
use hj212_tests::proxy::Proxy;
use hj212_tests::pty::{self, Line};
use hj212_tests::sites::{self, Timing};
use tokio_util::sync::CancellationToken;

/// Rounds in CI.
const DEFAULT_ROUNDS: u32 = 6;
/// The default fault schedule.
const DEFAULT_SEED: u64 = 0x0051_6212;
/// `OverTime` of the gateway's platform: long, so that a resend on a live link is rare and
/// recognisable.
const OVER_TIME_SECS: u64 = 5;
/// How far timestamps taken by the test and by the daemons may disagree (the subscriber is read
/// every 50 ms; process start and stop take a moment).
const SLACK_MS: i64 = 500;
/// How long after a delivery a kill may still bring it back: the acknowledgement may not have
/// reached the gateway yet, and both daemons make a removal durable within sled's 500 ms flush.
const DURABLE_MS: i64 = 3000;

/// The ingest settings the test adds: its own quality state file, and no history requests of
/// the data-quality engine (a history reply sends a stored record again under its QN, which
/// would read here as a resend that no fault caused; recovery has its own tests).
fn ingest_extra(state: &Path) -> String {
    format!("[quality]\nstate_path = {:?}\n\n[quality.recovery]\nenabled = false\n", state.display().to_string())
}

/// Milliseconds since 1970 (UTC), the packet logs' time base.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Maps the test's `Instant`s onto the packet logs' time base.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    at: Instant,
    ms: i64,
}

impl Timeline {
    fn new() -> Self {
        Self { at: Instant::now(), ms: now_ms() }
    }

    fn ms(self, at: Instant) -> i64 {
        let d = i64::try_from(at.saturating_duration_since(self.at).as_millis()).unwrap_or(i64::MAX);
        self.ms + d
    }
}

/// What a round kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Gateway,
    Ingest,
    Both,
}

impl Victim {
    fn random(rng: &mut Rng) -> Self {
        [Self::Gateway, Self::Ingest, Self::Both][usize::try_from(rng.below(3)).unwrap_or(0)]
    }
}

/// A daemon down: from its SIGKILL until it ran again (the gateway started, ingest listening).
#[derive(Debug, Clone, Copy)]
struct Outage {
    gateway: bool,
    from_ms: i64,
    to_ms: i64,
}

/// The first `rounds` kills: the gateway alone, ingest alone twice (its lives alternate
/// `ack_after` modes, so both are hit), both at once, and the rest at random, in a seeded order.
fn schedule(rounds: u32, rng: &mut Rng) -> Vec<Victim> {
    let rounds = usize::try_from(rounds).unwrap_or(usize::MAX);
    let mut victims = vec![Victim::Gateway, Victim::Ingest, Victim::Ingest, Victim::Both];
    victims.truncate(rounds);
    while victims.len() < rounds {
        victims.push(Victim::random(rng));
    }
    rng.shuffle(&mut victims);
    victims
}

/// The data clock's minute (minutes since 1970 in the site's zone).
fn minute(clock: &dyn Clock) -> i64 {
    clock.now().to_millis().div_euclid(60_000)
}

/// Takes what the subscriber receives every 50 ms for `d`, so arrival times are close.
async fn watch(got: &mut Received, sub: &mut Subscriber, clock: &dyn Clock, d: Duration) {
    let end = Instant::now() + d;
    loop {
        got.take(sub, clock);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
}

/// Starts ingest; its lives alternate `ack_after = "puback"` and `"spool"`. Returns when it
/// listens.
async fn start_ingest(
    ingest: &mut Daemon,
    addr: SocketAddr,
    got: &mut Received,
    sub: &mut Subscriber,
    clock: &dyn Clock,
) {
    let mode = if ingest.starts() % 2 == 0 { "puback" } else { "spool" };
    ingest.set_env("HJ212_INGEST_ACK_AFTER", mode);
    ingest.spawn();
    let deadline = Instant::now() + WAIT;
    while !daemons::wait_listening(addr, Duration::from_millis(50)).await {
        got.take(sub, clock);
        assert!(Instant::now() < deadline, "ingest does not listen on {addr}\n{}", ingest.log_tail());
        ingest.assert_running();
    }
}

/// The gateway's store, read offline: the QNs still queued, and every aggregate kept as history.
fn read_store(path: &Path) -> (BTreeSet<String>, BTreeMap<String, u16>) {
    let store = SledStore::open(path, &[chain::PLATFORM.to_string()], u64::MAX).expect("reopen the gateway's store");
    let qn = |frame: &[u8]| parse_frame(frame).and_then(|p| p.field("QN").map(str::to_string));
    let queued = store
        .queue_range(chain::PLATFORM, 0, usize::MAX)
        .expect("read the queue")
        .iter()
        .filter_map(|(_, r)| qn(&r.frame))
        .collect();
    let mut history = BTreeMap::new();
    for cn in [2031u16, 2041, 2051, 2061] {
        for r in store.history(cn, i64::MIN, i64::MAX, usize::MAX).expect("read the history") {
            if let Some(q) = qn(&r.frame) {
                history.insert(q, cn);
            }
        }
    }
    (queued, history)
}

/// When the gateway sent each upload (answers left out), from its packet log.
fn send_times(log: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut sends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in packets::read_log(log) {
        if r.direction != Direction::Out {
            continue;
        }
        let Some(p) = parse_frame(&r.frame) else { continue };
        if packets::is_answer(packets::cn(&p)) {
            continue;
        }
        if let Some(qn) = p.field("QN") {
            sends.entry(qn.to_string()).or_default().push(r.time_ms);
        }
    }
    sends
}

/// Resends by the gateway that no outage and no `OverTime` explains.
fn unexplained_resends(sends: &BTreeMap<String, Vec<i64>>, outages: &[Outage]) -> Vec<String> {
    let over_time_ms = i64::try_from(OVER_TIME_SECS * 1000).unwrap_or(i64::MAX);
    let mut bad = Vec::new();
    for (qn, times) in sends {
        for w in times.windows(2) {
            let (a, b) = (w[0], w[1]);
            let outage = outages.iter().any(|o| o.from_ms <= b + SLACK_MS && o.to_ms >= a - SLACK_MS);
            if !outage && b - a < over_time_ms - SLACK_MS {
                bad.push(format!("{qn} sent at {a} and again at {b}, with no outage in between"));
            }
        }
    }
    bad
}

/// Deliveries on MQTT beyond the first that no kill of a record in flight explains.
fn unexplained_duplicates(
    got: &Received,
    timeline: Timeline,
    sends: &BTreeMap<String, Vec<i64>>,
    outages: &[Outage],
) -> Vec<String> {
    let mut deliveries: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for a in &got.arrivals {
        if let Some(qn) = a.payload["qn"].as_str() {
            deliveries.entry(qn).or_default().push(timeline.ms(a.at));
        }
    }
    let mut bad = Vec::new();
    for (qn, times) in deliveries {
        let first_sent = sends.get(qn).and_then(|s| s.first()).copied().unwrap_or(i64::MAX);
        for w in times.windows(2) {
            let (d, next) = (w[0], w[1]);
            let in_flight = outages.iter().any(|o| {
                o.from_ms >= first_sent - SLACK_MS && o.from_ms <= d + DURABLE_MS && o.from_ms <= next + SLACK_MS
            });
            if !in_flight {
                bad.push(format!("{qn} delivered at {d} and again at {next}, with no kill while it was in flight"));
            }
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_gateway_and_ingest_loses_nothing_the_gateway_stored() {
    let rounds: u32 = std::env::var("HJ212_SIGKILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 = std::env::var("HJ212_SIGKILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SEED);
    eprintln!("sigkill e2e: {rounds} rounds, HJ212_SIGKILL_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let timeline = Timeline::new();
    let Some(bins) = Binaries::find() else { return };
    let dir = chain::temp_dir("sigkill", "e2e");
    let Some(broker) = Mosquitto::start(&dir).await else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    for sub in ["gateway", "ingest"] {
        std::fs::create_dir_all(dir.join(sub)).expect("test directory");
    }

    // The analyzers, ingest on a port of its own (the same for every life), the proxy.
    let site = sites::water(false);
    let line = Line::open(site.sims()).expect("pty");
    let ingest_addr = SocketAddr::from(([127, 0, 0, 1], daemons::free_port()));
    let extra = ingest_extra(&dir.join("ingest/quality.json"));
    let ingest_file = dir.join("ingest/ingest.toml");
    std::fs::write(&ingest_file, sites::ingest_toml(&dir.join("ingest"), ingest_addr, Some(broker.addr()), &extra))
        .expect("ingest.toml");
    let mut ingest = Daemon::new("hj212-ingest", &bins.ingest, &ingest_file, &dir.join("ingest/stderr.log"));
    let proxy = Proxy::start(ingest_addr).await.expect("proxy");
    let frames = daemons::capture(&proxy);

    // The gateway: the chain's configuration, with a long OverTime.
    let timing = Timing { over_time_secs: OVER_TIME_SECS, ..TIMING };
    let gw_config = sites::gateway_config(&site, &dir.join("gateway"), line.path(), proxy.addr(), timing);
    let gateway_file = dir.join("gateway/gateway.toml");
    std::fs::write(&gateway_file, daemons::gateway_toml(&gw_config)).expect("gateway.toml");
    let mut gateway = Daemon::new("hj212-gateway", &bins.gateway, &gateway_file, &dir.join("gateway/stderr.log"));
    let clock = SystemClock::new(gw_config.site.utc_offset_minutes);

    // A persistent subscriber first, so that nothing is published before it listens.
    let mut sub = Subscriber::connect(
        (&broker.addr().ip().to_string(), broker.addr().port()),
        &format!("sigkill-{}", std::process::id()),
        "hj212/#",
        CancellationToken::new(),
    )
    .await
    .expect("subscriber");
    let mut got = Received::default();
    start_ingest(&mut ingest, ingest_addr, &mut got, &mut sub, &clock).await;
    gateway.spawn();
    got.wait_fresh(&mut sub, &clock, "the first upload", WAIT).await;

    // The kills: at least `rounds`, and on until the clock has passed a minute boundary, so that
    // a minute record (2051) is made, sent and acknowledged around them too.
    let first_minute = minute(&clock);
    let mut victims = schedule(rounds, &mut rng).into_iter();
    let mut outages = Vec::new();
    let mut round = 0u32;
    while round < rounds || minute(&clock) == first_minute {
        let victim = victims.next().unwrap_or_else(|| Victim::random(&mut rng));
        let run = Duration::from_millis(300 + rng.below(2200));
        watch(&mut got, &mut sub, &clock, run).await;
        let slope = 1.0 + f64::from(round % 5) / 10.0;
        pty::with(&site.analyzer("cod").sim, |s| s.set(&Target::Info(Code::new("i13008")), Value::Number(slope)));
        let killed_ms = now_ms();
        if victim != Victim::Ingest {
            gateway.kill();
        }
        if victim != Victim::Gateway {
            ingest.kill();
        }
        let down = Duration::from_millis(100 + rng.below(900));
        eprintln!("round {round}: SIGKILL {victim:?} after {run:?}, down for {down:?}");
        watch(&mut got, &mut sub, &clock, down).await;
        if victim != Victim::Gateway {
            start_ingest(&mut ingest, ingest_addr, &mut got, &mut sub, &clock).await;
            outages.push(Outage { gateway: false, from_ms: killed_ms, to_ms: now_ms() });
        }
        if victim != Victim::Ingest {
            gateway.spawn();
            outages.push(Outage { gateway: true, from_ms: killed_ms, to_ms: now_ms() });
        }
        round += 1;
    }

    // After the faults: fresh data, end to end; then let the link drain and stop the gateway.
    got.wait_fresh(&mut sub, &clock, "fresh data after the kills", WAIT).await;
    watch(&mut got, &mut sub, &clock, Duration::from_secs(2)).await;
    let status = gateway.terminate(WAIT).await;
    assert!(status.success(), "the gateway's graceful stop: {status}\n{}", gateway.log_tail());

    // What the gateway stored: its packet log, its queue and its history.
    let (queued, history) = read_store(&gw_config.store.path);
    let sent = oracle::read_sent(&gw_config.packet_log.path);
    let sends = send_times(&gw_config.packet_log.path);
    let lost: Vec<_> =
        history.iter().filter(|(qn, _)| !sent.by_qn.contains_key(*qn) && !queued.contains(*qn)).collect();
    assert!(lost.is_empty(), "stored as history but neither sent nor queued: {lost:?}");
    let stored: BTreeSet<&String> = sent.by_qn.keys().chain(&queued).chain(history.keys()).collect();
    let tally = oracle::check(&mut sub, &clock, &mut got, &sent, &queued, &site, stored.len() as u64).await;
    eprintln!("conservation: {tally}; {} aggregates in the store's history", history.len());
    let min_acked = usize::try_from(round).unwrap_or(usize::MAX).max(10);
    assert!(tally.acked >= min_acked, "too little traffic to judge: {} acknowledged", tally.acked);

    // Resends and duplicates: only records in flight at a kill.
    let resends = unexplained_resends(&sends, &outages);
    assert!(resends.is_empty(), "resent although not in flight (seed {seed}):\n{}", resends.join("\n"));
    let duplicates = unexplained_duplicates(&got, timeline, &sends, &outages);
    assert!(duplicates.is_empty(), "delivered twice although not in flight (seed {seed}):\n{}", duplicates.join("\n"));
    let gateway_kills = outages.iter().filter(|o| o.gateway).count();
    eprintln!(
        "sigkill e2e: {round} rounds, {gateway_kills} gateway kills, {} ingest kills ({} ingest lives) in {:?}; {} resends, \
         {} duplicates on MQTT, all in flight",
        outages.len() - gateway_kills,
        ingest.starts(),
        started.elapsed(),
        tally.resends,
        tally.duplicates
    );

    // The frames on the wire, judged by an independent implementation.
    let wire = daemons::captured(&frames);
    if let Some(report) = daemons::hj212_check(&[], &wire.concat()) {
        eprintln!("hj212_check.py on {} frames captured at the proxy: {}", wire.len(), report.summary);
        assert!(report.status.success(), "frames the gateway sent fail the Python check: {}", report.summary);
        assert_eq!(report.count("frames"), wire.len() as u64, "{}", report.summary);
        assert_eq!(report.count("long"), 0, "a data segment over 1024 bytes: {}", report.summary);
        assert!(report.cn("2011") > 0, "{}", report.summary);
    }

    let status = ingest.terminate(WAIT).await;
    assert!(status.success(), "ingest's graceful stop: {status}\n{}", ingest.log_tail());
    drop(line);
    if std::env::var_os("HJ212_E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("files kept in {}", dir.display());
    }
}
