//! End to end under faults outside the two daemons: a real Mosquitto broker stopped and restarted,
//! a full disk under the gateway's store, and the gateway's data clock jumping.
//!
//! The oracle is conservation (`hj212_tests::oracle`), as in `e2e.rs`. Every wait is bounded.
//! Set `HJ212_E2E_KEEP` to keep the stores and packet logs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hj212_gateway::Clock;
use hj212_tests::chain::{self, Chain, Fault, Harness, JumpClock, Mosquitto, ORIGIN, Setup, Tmpfs, WAIT, until};
use hj212_tests::oracle::{self, Received};

// ---------------------------------------------------------------------------------------------
// 1. The broker stopped mid-stream and restarted.

/// Ingest publishes to a real Mosquitto; the broker is stopped (SIGTERM) while data flows and
/// restarted on the same port a moment later.
///
/// The subscriber keeps one persistent session (clean session off, the same client id) and
/// Mosquitto runs with persistence, so the session and its subscription survive the restart and
/// the broker queues for the subscriber from the moment it is back, even before the subscriber
/// has reconnected. A subscriber started only after the restart would not be enough on its own:
/// ingest reconnects and replays its spool/ledger as soon as the broker is up, and whatever it
/// publishes before a fresh subscription exists would reach nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_restarted_loses_nothing_and_keeps_order() {
    let dir = chain::temp_dir("faults", "broker");
    let Some(broker) = Mosquitto::start(&dir).await else { return };
    let mut chain = Chain::start(&dir, Setup { broker: Some(broker.addr()), ..Setup::default() }).await;
    let clock = chain.clock.clone();
    let mut sub = chain.subscriber("broker").await;
    let mut got = Received::default();
    got.wait_fresh(&mut sub, clock.as_ref(), "the first upload", WAIT).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut harness = Harness { mosquitto: Some(broker), ..Harness::default() };
    chain.inject(Fault::BrokerRestart, Duration::from_millis(1500), &mut harness, &mut sub, &mut got).await;
    got.wait_fresh(&mut sub, clock.as_ref(), "fresh data after the broker restart", WAIT).await;

    let (sent, _) = chain.conservation(&mut sub, &mut got, 10, Duration::from_millis(800)).await;
    // Per-MN order: first deliveries on MQTT in the order the gateway first sent them.
    let mut seen = HashSet::new();
    let firsts: Vec<&str> = got
        .arrivals
        .iter()
        .filter(|a| a.payload["mn"] == chain.site.mn)
        .filter_map(|a| a.payload["qn"].as_str())
        .filter(|q| seen.insert(q.to_string()))
        .collect();
    let sent_order: Vec<&str> = sent.order.iter().map(String::as_str).filter(|q| seen.contains(*q)).collect();
    assert_eq!(firsts, sent_order, "per-MN order on MQTT differs from the order sent");
    chain.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A full disk under the gateway's store.

/// The gateway's store lives on a 4 MiB tmpfs. With the uplink cut, the disk is filled: the
/// daemon keeps polling and counts the failed writes in `store_errors` and logs them (its
/// documented policy, `Site::publish`: a record that cannot be stored is logged, counted and not
/// sent; nothing already stored is dropped). Then space is freed and the uplink comes back; with
/// `restart`, the gateway is restarted on the same store first.
async fn full_disk(name: &str, restart: bool) {
    let dir = chain::temp_dir("faults", name);
    let fs = match Tmpfs::mount(&dir.join("mnt"), "4m") {
        Ok(fs) => fs,
        Err(reason) => {
            chain::skip(&format!("cannot make a small filesystem for the full-disk test: {reason}"));
            return;
        }
    };
    let mut chain = Chain::start(&dir, Setup { store_dir: Some(fs.path().to_path_buf()), ..Setup::default() }).await;
    let clock = chain.clock.clone();
    let mut sub = chain.subscriber(name).await;
    let mut got = Received::default();
    got.wait_fresh(&mut sub, clock.as_ref(), "the first upload", WAIT).await;

    // Cut the uplink (a backlog builds), then fill the disk.
    chain.cut_uplink();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued_before = chain.gateway().store().queue_len(chain::PLATFORM);
    let filler = fs.fill();
    let cycles = chain.metric(|m| &m.poll_cycles);
    until("store errors on the full disk", WAIT, || chain.metric(|m| &m.store_errors) >= 3).await;
    until("polling to go on", WAIT, || chain.metric(|m| &m.poll_cycles) > cycles + 4).await;
    let queued_full = chain.gateway().store().queue_len(chain::PLATFORM);
    eprintln!(
        "full disk: {}; store errors {}; queued {queued_before} before",
        chain.gateway().status(),
        chain.metric(|m| &m.store_errors)
    );
    assert!(queued_full >= queued_before, "queued records dropped on the full disk: {queued_before} → {queued_full}");

    // Space freed, uplink back: fresh data is stored and delivered again.
    std::fs::remove_file(&filler).unwrap();
    if restart {
        chain.stop_gateway().await;
        chain.start_gateway().await;
    }
    chain.restore_uplink();
    let stored = chain.metric(|m| &m.messages_stored);
    until("records stored again after space was freed", WAIT, || chain.metric(|m| &m.messages_stored) > stored).await;
    got.wait_fresh(&mut sub, clock.as_ref(), "fresh data after the disk was freed", WAIT).await;

    chain.conservation(&mut sub, &mut got, 5, Duration::from_millis(800)).await;
    assert!(chain.store_errors >= 3, "store errors not counted");
    // Unmount first (the gateway is stopped), so the directory can be removed.
    drop(fs);
    chain.finish().await;
}

/// A full disk: errors counted and logged, polling goes on, and after space is freed a restart
/// of the daemon on the same store delivers fresh data again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_counted_and_a_restart_after_freeing_space_delivers_again() {
    full_disk("disk-restart", true).await;
}

/// The same without a restart: the running daemon stores again once space is free (the store
/// reopens its database after the IO error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_recovers_without_a_restart_once_space_is_freed() {
    full_disk("disk-live", false).await;
}

// ---------------------------------------------------------------------------------------------
// 3. The data clock jumps.

/// The gateway's data clock jumps forward two hours, then back ten minutes, while it runs. No
/// crash, QNs unique (a QN never names two frames: checked while reading the packet log), no
/// statistics record dated after the data clock, delivery goes on. With `all_periods`, no
/// statistics period (CN, `DataTime`) may be delivered twice even once the clock passes again
/// the minutes it reported before jumping back; otherwise only up to the backward jump.
async fn clock_jumps(name: &str, all_periods: bool) {
    let dir = chain::temp_dir("faults", name);
    // Twice the usual speed, so the clock passes the ten minutes again within seconds.
    let jump = Arc::new(JumpClock::new(ORIGIN, 120));
    let clock: Arc<dyn Clock> = jump.clone();
    let mut chain = Chain::start(&dir, Setup { clock: clock.clone(), ..Setup::default() }).await;
    let mut sub = chain.subscriber(name).await;
    let mut got = Received::with_jumping_clock(jump.clone());
    got.wait_fresh(&mut sub, clock.as_ref(), "the first upload", WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut harness = Harness { clock: Some(jump.clone()), ..Harness::default() };
    chain.inject(Fault::ClockJump, Duration::from_secs(1), &mut harness, &mut sub, &mut got).await;
    let back_at = Instant::now();
    eprintln!("data clock jumped back to {}", clock.now());
    got.wait_fresh(&mut sub, clock.as_ref(), "fresh data after the backward jump", WAIT).await;
    // Until the data clock has passed its high-water mark again: the minutes already reported
    // come round a second time.
    let high = jump.high_water().to_string();
    until("the data clock to pass its high-water mark again", WAIT, || clock.now().to_string() > high).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    got.wait_fresh(&mut sub, clock.as_ref(), "fresh data at the end", WAIT).await;
    assert!(chain.metric(|m| &m.poll_cycles) > 0);

    chain.conservation(&mut sub, &mut got, 10, Duration::from_millis(800)).await;
    let stats = oracle::statistics_once(&got, |a| all_periods || a.at < back_at);
    eprintln!("{stats} statistics records, none ahead of the data clock");
    assert!(stats >= 10, "too few statistics records to judge: {stats}");
    chain.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_clock_jumps_keep_qns_unique_and_delivery_going() {
    clock_jumps("clock", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_clock_jumping_back_does_not_report_a_period_twice() {
    clock_jumps("clock-back", true).await;
}
