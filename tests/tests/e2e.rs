//! End to end: simulated analyzers on a pty → gateway → (a proxy the test controls) → ingest →
//! MQTT broker → subscriber, in one process on loopback, with faults from a seeded schedule.
//!
//! The oracle is conservation (`hj212_tests::oracle`): every record the gateway stored and saw
//! acknowledged reaches the subscriber, nothing is invented, and what arrives is the very frame
//! the gateway sent carrying the very values the simulator served. Duplicates are allowed (at
//! least once) and counted.
//!
//! Every wait is bounded. Set `HJ212_E2E_SEED` to replay a schedule, `HJ212_E2E_KEEP` to keep the
//! stores and packet logs. `soak_e2e.rs` runs every fault, those outside the daemons included.

use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use hj212_tests::chain::{self, Chain, Fault, Harness, Rng, Setup, WAIT};
use hj212_tests::oracle::{Received, all_normal};
use hj212_tests::pty;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_record_reaches_mqtt_through_faults() {
    let seed = std::env::var("HJ212_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x212_2017_u64);
    eprintln!("fault schedule seed: {seed} (set HJ212_E2E_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = chain::temp_dir("e2e", "faults");
    let mut chain = Chain::start(&dir, Setup::default()).await;
    let mut sub = chain.subscriber("e2e").await;
    let mut got = Received::default();
    let clock = chain.clock.clone();

    // Data flows before any fault.
    got.wait_for(&mut sub, clock.as_ref(), "the first real-time upload", Instant::now(), WAIT, all_normal).await;

    // The faults of the daemons and the link, in a seeded order with seeded durations.
    let mut faults =
        [Fault::KillGateway, Fault::KillIngest, Fault::ResetUplink, Fault::BlackholeUplink, Fault::AnalyzerSilent];
    rng.shuffle(&mut faults);
    let mut harness = Harness::default();
    for fault in faults {
        let hold = Duration::from_millis(800 + rng.below(1200));
        eprintln!("fault {fault:?} for {hold:?}");
        chain.inject(fault, hold, &mut harness, &mut sub, &mut got).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // After the faults: fresh, normal data again, end to end.
    got.wait_fresh(&mut sub, clock.as_ref(), "fresh normal data after the faults", WAIT).await;
    // A calibration changes the slope: the 3020 reaches MQTT too.
    pty::with(chain.cod(), |s| s.set(&Target::Info(Code::new("i13008")), Value::Number(1.25)));
    let deadline = Instant::now() + WAIT;
    loop {
        got.take(&mut sub, clock.as_ref());
        let seen = got.by_qn.values().flatten().any(|v| {
            v["cn"] == "3020"
                && v["info"].as_array().is_some_and(|a| a.iter().any(|i| i["code"] == "i13008" && i["value"] == 1.25))
        });
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "no 3020 with the new slope");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Let the link drain, stop the gateway and account for every record.
    chain.conservation(&mut sub, &mut got, 20, Duration::from_secs(1)).await;
    assert!(chain.proxy.connections() >= 3, "the uplink never reconnected");
    chain.finish().await;
}

#[test]
fn the_demo_shows_uploads_acks_and_mqtt_and_exits_0() {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hj212-demo"))
        .args(["--duration", "20", "--color", "never"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run hj212-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(started.elapsed() < Duration::from_secs(40), "the demo took {:?} to stop", started.elapsed());
    assert!(!stdout.contains('\x1b'), "colour despite NO_COLOR");
    let count = |needle: &str| stdout.lines().filter(|l| l.contains(needle)).count();
    assert!(count("-> 2011 real-time data") >= 4, "{stdout}");
    assert!(count("-> 2051 minute data") >= 2, "{stdout}");
    assert!(count("<- 9014 data answer") >= 4, "{stdout}");
    assert!(count("mqtt   • water/2011") >= 2 && count("mqtt   • gas/2011") >= 2, "{stdout}");
    assert!(stdout.contains("i13008-Info=1.05"), "no 3020 with the new slope:\n{stdout}");
    assert!(stdout.contains("<- 2061 hourly data"), "no history request came down:\n{stdout}");
    assert!(stdout.contains("event=data cn=\"2061\""), "no history reply on MQTT:\n{stdout}");
    assert!(stdout.contains("event=result exe_rtn=1"), "history request not completed:\n{stdout}");
    let summary = stdout.lines().find(|l| l.contains("summary:")).expect("a summary line");
    assert!(
        !summary.contains(" 0 uploads") && !summary.contains(" 0 acks") && !summary.contains(" 0 MQTT"),
        "{summary}"
    );
}
