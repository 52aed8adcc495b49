//! Crash test: the real `hj212-gateway` binary polls a simulated analyzer on a pty and uploads to
//! a recording platform on loopback, and is killed with SIGKILL at random moments, then restarted
//! on the same store; a final run drains the queue and stops cleanly. Afterwards:
//!
//! - **No record lost**: every record the daemon wrote — every aggregate in the store's history,
//!   every record still queued, every upload in its packet log — reached the platform or is
//!   still queued.
//! - **Order kept**: on each connection, the records arrive as two increasing runs of store
//!   order: the backlog replayed oldest first, and live records (written since the connection
//!   came up, which go first) in the order written. The site writes records from one producer,
//!   encoding each (which assigns its QN from the data clock) right before appending it, so QN
//!   order is store-sequence order; the test checks that on the records still in the store.
//! - **Duplicates only in flight**: a record that arrived more than once had, each time but the
//!   last, not been acked, or been acked so shortly before its connection died that the daemon
//!   could not have made the removal durable (sled flushes every 500 ms; the bound is 2 s).
//!
//! Rounds: `HJ212_CRASH_ROUNDS` (default 24); seed: `HJ212_CRASH_SEED` (default: the time, and
//! printed). Soak: `HJ212_CRASH_ROUNDS=500 cargo test -p hj212-gateway --release --test crash -- --nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use hj212_gateway::{SledStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
#[path = "common/recorder.rs"]
mod recorder;
use recorder::{Rng, Seen, qn_cn};

const MN: &str = "010000A8900016F000169DC0";
const PW: &str = "123456";
/// An ack sent this long before the connection died may not have been made durable.
const DURABILITY_WINDOW: Duration = Duration::from_secs(2);

/// Every upload `(QN, CN)` the daemon logged as sent, over the rotated files too.
fn packet_log_uploads(dir: &Path) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for name in ["packets.log.5", "packets.log.4", "packets.log.3", "packets.log.2", "packets.log.1", "packets.log"] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else { continue };
        for line in text.lines() {
            // A line cut short by SIGKILL does not parse and is skipped.
            let Ok(rec) = hj212_codec::log::Record::parse_line(line) else { continue };
            if rec.direction == hj212_codec::log::Direction::Out {
                if let Some(qc) = qn_cn(&rec.frame) {
                    out.push(qc);
                }
            }
        }
    }
    out
}

/// True when `qns` is two increasing runs: those `<= split` and those `> split`, for some split.
fn two_increasing_runs(qns: &[&str]) -> bool {
    let mut candidates: Vec<&str> = qns.to_vec();
    candidates.sort_unstable();
    candidates.dedup();
    candidates.insert(0, "");
    candidates.iter().any(|split| {
        let low: Vec<&str> = qns.iter().copied().filter(|q| q <= split).collect();
        let high: Vec<&str> = qns.iter().copied().filter(|q| q > split).collect();
        low.windows(2).all(|w| w[0] < w[1]) && high.windows(2).all(|w| w[0] < w[1])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_keeps_order() {
    let rounds: u32 = std::env::var("HJ212_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let seed: u64 = std::env::var("HJ212_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % (1 << 63),
        )
        .unwrap()
    });
    println!("crash test: {rounds} rounds, HJ212_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let dir = std::env::temp_dir().join(format!("hj212-gw-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sim = common::cod_simulator();
    let pty = common::analyzer_on_pty(sim.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    // Acks come 0–300 ms late, so kills often land with uploads in flight.
    recorder::serve(listener, seen.clone(), MN, PW, Duration::from_millis(300), rng.next_u64(), stop.clone());
    let config = common::write_daemon_config(&dir, &pty.path, &addr.to_string(), "");

    let started = Instant::now();
    for round in 0..rounds {
        let mut child = common::spawn_daemon(&config, &dir);
        let run = Duration::from_millis(rng.range(300, 2500));
        tokio::time::sleep(run).await;
        // Vary the data, so 3020 (dynamic control) records come and go too.
        sim.lock().unwrap().set(&Target::Info(Code::new("i13008")), Value::Number(1.0 + f64::from(round % 5) / 10.0));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("round {round}: the daemon exited on its own ({status}); see {}/daemon.stderr", dir.display());
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    // A final run drains the queue, then a clean stop.
    let mut child = common::spawn_daemon(&config, &dir);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no clean stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean stop exit status {status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let elapsed = started.elapsed();

    // What the daemon wrote: its store after the clean stop, and its packet log.
    let store = SledStore::open(&dir.join("store"), &["p".to_string()], u64::MAX).expect("reopen the store");
    let queued = store.queue_range("p", 0, usize::MAX).unwrap();
    let queued_qns: HashSet<String> = queued.iter().filter_map(|(_, r)| qn_cn(&r.frame)).map(|(q, _)| q).collect();
    let queued_by_seq: Vec<String> = queued.iter().filter_map(|(_, r)| qn_cn(&r.frame)).map(|(q, _)| q).collect();
    assert!(queued_by_seq.windows(2).all(|w| w[0] < w[1]), "QN order differs from store order: {queued_by_seq:?}");
    let mut written: BTreeMap<String, (u16, &str)> = BTreeMap::new();
    for cn in [2031u16, 2041, 2051, 2061] {
        let hist = store.history(cn, i64::MIN, i64::MAX, usize::MAX).unwrap();
        let qns: Vec<String> = hist.iter().filter_map(|r| qn_cn(&r.frame)).map(|(q, _)| q).collect();
        assert!(qns.windows(2).all(|w| w[0] < w[1]), "history {cn}: QN order differs from DataTime order");
        for q in qns {
            written.insert(q, (cn, "history"));
        }
    }
    for (q, cn) in packet_log_uploads(&dir) {
        written.entry(q).or_insert((cn, "packet log"));
    }
    for (_, r) in &queued {
        if let Some((q, cn)) = qn_cn(&r.frame) {
            written.entry(q).or_insert((cn, "queue"));
        }
    }

    let seen = seen.lock().unwrap();
    let received: HashSet<&str> = seen.receipts.iter().map(|r| r.qn.as_str()).collect();
    let lost: Vec<_> =
        written.iter().filter(|(q, _)| !received.contains(q.as_str()) && !queued_qns.contains(*q)).collect();
    assert!(lost.is_empty(), "records lost (seed {seed}): {lost:?}");

    // Order, per connection.
    let mut per_conn: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for r in &seen.receipts {
        per_conn.entry(r.conn).or_default().push(&r.qn);
    }
    for (conn, qns) in &per_conn {
        assert!(two_increasing_runs(qns), "connection {conn} out of order (seed {seed}): {qns:?}");
    }

    // Duplicates: only records in flight when a connection died.
    let mut by_qn: HashMap<&str, Vec<&recorder::Receipt>> = HashMap::new();
    for r in &seen.receipts {
        by_qn.entry(&r.qn).or_default().push(r);
    }
    let mut duplicated = 0;
    for (qn, rs) in &by_qn {
        if rs.len() < 2 {
            continue;
        }
        duplicated += 1;
        for r in &rs[..rs.len() - 1] {
            let closed = seen.conns[r.conn].closed.expect("an earlier connection ended");
            let in_flight = r.acked.is_none_or(|a| closed.saturating_duration_since(a) < DURABILITY_WINDOW);
            assert!(
                in_flight,
                "{qn} resent although acked {:?} before its connection ended (seed {seed})",
                closed.saturating_duration_since(r.acked.unwrap())
            );
            assert!(rs.iter().filter(|x| x.conn == r.conn).count() == 1, "{qn} twice on one connection");
        }
    }
    println!(
        "crash test: {rounds} kills in {elapsed:?}; {} records written, {} received ({} uploads, {duplicated} \
         resent after a kill), {} still queued, {} connections",
        written.len(),
        received.len(),
        seen.receipts.len(),
        queued.len(),
        seen.conns.len(),
    );
    assert!(received.len() as u64 >= u64::from(rounds), "too little data to mean anything");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
