//! A platform outage of a simulated day: the daemon in-process with a simulated analyzer on a
//! pty and the recording platform (tests/common/recorder.rs) on loopback. The platform goes down,
//! the daemon keeps acquiring at the standard's intervals (`RtdInterval` 30 s, `MinInterval`
//! 10 min) on a data clock running 8640× real time (a day in 10 s), then the platform comes back
//! on the same port. Checked: every record queued during the outage is delivered; the records
//! written in the live window before the reconnection (`live_window_secs`, here 2 s of the 10 s
//! outage) go first and in store order, the older backlog follows oldest first (store order),
//! and new live records are delivered while the backlog replays, in their order too. Every wait
//! is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::time::DateTime;
use hj212_codec::{Packet, Split, Splitter};
use hj212_gateway::config::Config;
use hj212_gateway::{Clock, Options, ScaledClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
use common::{MN, PW, analyzer_on_pty, temp_dir};
#[path = "common/recorder.rs"]
mod recorder;
use recorder::Seen;

const ORIGIN: DateTime = DateTime { year: 2026, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };
/// Data-clock speed: a simulated day passes in 10 s.
const FACTOR: u32 = 8640;
const DAY_MS: i64 = 86_400_000;
/// The live window: the last 2 s of the outage (about five simulated hours).
const WINDOW_SECS: u32 = 2;

fn config(dir: &Path, device: &Path, addr: SocketAddr) -> Config {
    let mut c = common::config(dir, device, addr);
    // The standard's intervals; the poll cycle (10 ms real = 86 s of data) bounds the real-time
    // cadence, so one 2011 goes out per cycle.
    c.acquisition.rtd_interval_secs = 30;
    c.acquisition.min_interval_mins = 10;
    c.acquisition.poll_interval_ms = 10;
    c.serial[0].inter_request_delay_ms = 1;
    let p = &mut c.platform[0];
    p.reconnect_max_ms = 300;
    p.replay_per_sec = 2000;
    p.max_in_flight = 16;
    p.live_window_secs = WINDOW_SECS;
    c
}

fn qn_of(frame: &[u8]) -> String {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { panic!("stored frame") };
    Packet::parse(f.data()).unwrap().qn().unwrap().to_string()
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_long_outage_is_delivered_in_order_with_live_data_during_the_replay() {
    let t_test = Instant::now();
    let dir = temp_dir("outage-day");
    let mut sim = Simulator::new(&firmware::profile::builtin::SURFACE_WATER_COD);
    sim.set(&Target::Pollutant(Code::new("w01018")), Value::Number(42.5));
    sim.set(&Target::Status, Value::Code(1));
    let pty = analyzer_on_pty(Arc::new(Mutex::new(sim)));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let up1 = CancellationToken::new();
    recorder::serve(listener, seen.clone(), MN, PW, Duration::ZERO, 1, up1.clone());

    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, FACTOR));
    let cfg = config(&dir, &pty.path, addr);
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock.clone()) }).await.unwrap();
    let store = gw.store();

    // The link works: a real-time record arrives.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.lock().unwrap().receipts.iter().any(|r| r.cn == 2011) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no real-time record before the outage");

    // The platform goes down for a simulated day.
    up1.cancel();
    let down_at = clock.now().to_millis();
    tokio::time::timeout(Duration::from_secs(20), async {
        while clock.now().to_millis() < down_at + DAY_MS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the data clock did not pass a day");
    let queued: Vec<(u64, String, u16, i64)> = store
        .queue_range("p", 0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|(seq, r)| (seq, qn_of(&r.frame), r.cn, r.written_ms))
        .collect();
    let count = |cn: u16| queued.iter().filter(|q| q.2 == cn).count();
    // A day at these intervals: a 2011 per poll cycle, 144 ten-minute, 24 hourly records, a daily one.
    assert!(count(2011) >= 200, "real-time records queued: {}", count(2011));
    assert!(count(2051) >= 130, "minute records queued: {}", count(2051));
    assert!(count(2061) >= 22, "hourly records queued: {}", count(2061));
    assert!(count(2031) >= 1, "daily records queued: {}", count(2031));
    assert!(queued.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "store order is QN order");

    // The platform comes back on the same port.
    let before = seen.lock().unwrap().conns.len();
    let reconnect_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let up2 = CancellationToken::new();
    recorder::serve(bind_again(addr).await, seen.clone(), MN, PW, Duration::ZERO, 2, up2.clone());
    let position: HashMap<&str, usize> = queued.iter().enumerate().map(|(i, q)| (q.1.as_str(), i)).collect();
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            {
                let s = seen.lock().unwrap();
                let after: Vec<_> = s.receipts.iter().filter(|r| r.conn >= before).cloned().collect();
                let got = after.iter().filter(|r| position.contains_key(r.qn.as_str())).count();
                if got >= queued.len() {
                    return after;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let s = seen.lock().unwrap();
        let got: std::collections::HashSet<&str> = s.receipts.iter().map(|r| r.qn.as_str()).collect();
        let missing = queued.iter().filter(|q| !got.contains(q.1.as_str())).count();
        panic!("{missing} of {} queued records not delivered after the platform came back", queued.len())
    });

    // Every queued record arrived once on the new link (one connection: no drop, no resend).
    let backlog: Vec<&recorder::Receipt> = delivered.iter().filter(|r| position.contains_key(r.qn.as_str())).collect();
    assert_eq!(backlog.len(), queued.len(), "a queued record arrived twice");
    // The live window first: the first queued record to arrive is the oldest one written within
    // the window before the reconnection, not the oldest of the outage.
    let order: Vec<usize> = backlog.iter().map(|r| position[r.qn.as_str()]).collect();
    let window_start = order[0];
    assert!(window_start > 0, "the oldest record went first: the live window was not used");
    let window_ms = i64::from(WINDOW_SECS) * 1000;
    let written = queued[window_start].3;
    assert!(written >= reconnect_ms - window_ms - 1000, "the first record was written before the window");
    assert!(queued[window_start - 1].3 < reconnect_ms + 1000 - window_ms, "the window started late");
    // Both runs in store order: the window's records, and the older backlog oldest first.
    let recent: Vec<usize> = order.iter().copied().filter(|&p| p >= window_start).collect();
    let older: Vec<usize> = order.iter().copied().filter(|&p| p < window_start).collect();
    assert!(recent.windows(2).all(|w| w[0] < w[1]), "the live window's records out of store order");
    assert!(older.windows(2).all(|w| w[0] < w[1]), "backlog replayed out of store order");
    assert_eq!(older.len(), window_start, "backlog records missing");
    // Live data flowed during the replay: records newer than the queue at reconnect went out
    // before the backlog was finished (the backlog is oldest first, so any record not in it that
    // arrives before its last one can only be live), and in their own order.
    let last_backlog = delivered.iter().rposition(|r| position.contains_key(r.qn.as_str())).unwrap();
    let live: Vec<&recorder::Receipt> =
        delivered[..last_backlog].iter().filter(|r| !position.contains_key(r.qn.as_str())).collect();
    assert!(!live.is_empty(), "no live record arrived while the backlog was replayed");
    assert!(live.iter().any(|r| r.cn == 2011), "no live real-time record during the replay");
    assert!(live.windows(2).all(|w| w[0].qn < w[1].qn), "live records out of order");
    let newest_backlog = &queued.last().unwrap().1;
    assert!(live.iter().all(|r| &r.qn > newest_backlog), "a live record older than the backlog");

    // Acknowledged records leave the queue.
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.queue_len("p") > 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("queue did not drain");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    up2.cancel();
    assert!(t_test.elapsed() < Duration::from_secs(30), "test took {:?}", t_test.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
