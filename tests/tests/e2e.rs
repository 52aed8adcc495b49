//! End to end: simulated analyzers on a pty → gateway → (a proxy the test controls) → ingest →
//! MQTT broker → subscriber, in one process on loopback, with faults from a seeded schedule.
//!
//! The oracle is conservation: a record leaves the gateway's store only on a 9014, and ingest
//! sends a 9014 only after the broker's PUBACK, so every record the gateway stored and saw
//! acknowledged must reach the subscriber; nothing may reach the subscriber that the gateway did
//! not send, and what arrives must be the very frame the gateway sent (byte for byte, password
//! masked) carrying the very values the simulator served. Duplicates are allowed (at least once)
//! and counted.
//!
//! Every wait is bounded. Set `HJ212_E2E_SEED` to replay a schedule, `HJ212_E2E_KEEP` to keep the
//! stores and packet logs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use firmware::sim::Fault;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::log::Direction;
use hj212_codec::time::DateTime;
use hj212_gateway::config::Config as GatewayConfig;
use hj212_gateway::{Clock as _, Gateway, ScaledClock, SledStore, Store as _};
use hj212_tests::mqtt::{self, Subscriber};
use hj212_tests::packets::{self, parse_frame};
use hj212_tests::proxy::Proxy;
use hj212_tests::pty::{self, Line};
use hj212_tests::sites::{self, Site, Timing};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

const ORIGIN: DateTime = DateTime { year: 2026, month: 3, day: 1, hour: 8, minute: 0, second: 0, millis: 0 };
const WAIT: Duration = Duration::from_secs(15);
const PLATFORM: &str = "platform";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hj212-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// splitmix64: a small, seedable generator for the fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
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
}

/// The chain and what the test needs to restart parts of it.
struct Chain {
    dir: PathBuf,
    site: Site,
    _line: Line,
    broker: (String, u16),
    proxy: Proxy,
    clock: Arc<ScaledClock>,
    gw_config: GatewayConfig,
    gateway: Option<(Gateway, CancellationToken)>,
    ingest: Option<(hj212_ingest::Handle, CancellationToken)>,
    /// Records stored, summed over the gateway's lives.
    stored: u64,
}

impl Chain {
    async fn start(dir: &Path, timing: Timing) -> Self {
        std::fs::create_dir_all(dir.join("gateway")).unwrap();
        std::fs::create_dir_all(dir.join("ingest")).unwrap();
        let broker_addr = hj212_ingest::broker::start(0).await.expect("broker");
        let site = sites::water(false);
        let line = Line::open(site.sims()).expect("pty");
        let (handle, token) = start_ingest(dir, broker_addr).await;
        let proxy = Proxy::start(handle.listen_addrs()[0]).await.unwrap();
        let gw_config = sites::gateway_config(&site, &dir.join("gateway"), line.path(), proxy.addr(), timing);
        let clock = Arc::new(ScaledClock::new(ORIGIN, 60));
        let mut chain = Self {
            dir: dir.to_path_buf(),
            site,
            _line: line,
            broker: (broker_addr.ip().to_string(), broker_addr.port()),
            proxy,
            clock,
            gw_config,
            gateway: None,
            ingest: Some((handle, token)),
            stored: 0,
        };
        chain.start_gateway().await;
        chain
    }

    async fn start_gateway(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let token = CancellationToken::new();
            let options = hj212_gateway::Options { clock: Some(self.clock.clone()) };
            match hj212_gateway::start_with(self.gw_config.clone(), token.clone(), options).await {
                Ok(gw) => {
                    self.gateway = Some((gw, token));
                    return;
                }
                // The store's lock may outlive the last task by a moment.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("gateway restart: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("gateway did not restart: {e:#}"),
            }
        }
    }

    async fn stop_gateway(&mut self) {
        let (gw, token) = self.gateway.take().expect("gateway running");
        token.cancel();
        tokio::time::timeout(WAIT, gw.wait()).await.expect("gateway did not stop");
        self.stored += gw.metrics().messages_stored.load(Ordering::Relaxed);
    }

    async fn stop_ingest(&mut self) {
        let (handle, token) = self.ingest.take().expect("ingest running");
        token.cancel();
        let r = tokio::time::timeout(WAIT, handle.wait()).await.expect("ingest did not stop");
        // A shutdown that timed out while the link was down is acceptable here: it is a kill.
        if let Err(e) = r {
            eprintln!("ingest stopped with: {e:#}");
        }
    }

    async fn restart_ingest(&mut self) {
        let broker: SocketAddr = format!("{}:{}", self.broker.0, self.broker.1).parse().unwrap();
        let (handle, token) = start_ingest(&self.dir, broker).await;
        self.proxy.set_upstream(handle.listen_addrs()[0]);
        self.ingest = Some((handle, token));
    }

    fn cod(&self) -> &pty::SharedSim {
        &self.site.analyzer("cod").sim
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

/// Everything the subscriber received, by QN, with the time it arrived.
#[derive(Default)]
struct Received {
    by_qn: BTreeMap<String, Vec<Json>>,
    /// Arrival (test clock) and payload of every real-time upload, for the "fresh data" check.
    realtime: Vec<(Instant, Json)>,
}

impl Received {
    fn take(&mut self, sub: &mut Subscriber) {
        for m in sub.drain() {
            if mqtt::data_topic("hj212", &m.topic).is_none() {
                continue;
            }
            let qn = m.payload["qn"].as_str().unwrap_or_default().to_string();
            if m.payload["cn"] == "2011" {
                self.realtime.push((Instant::now(), m.payload.clone()));
            }
            self.by_qn.entry(qn).or_default().push(m.payload);
        }
    }

    /// Waits (bounded) for a message that satisfies `pred`, received after `since`.
    async fn wait_for(
        &mut self,
        sub: &mut Subscriber,
        what: &str,
        since: Instant,
        limit: Duration,
        pred: impl Fn(&Json) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            self.take(sub);
            if self.realtime.iter().any(|(t, v)| *t >= since && pred(v)) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn item<'a>(payload: &'a Json, code: &str) -> Option<&'a Json> {
    payload["items"].as_array()?.iter().find(|i| i["code"] == code)
}

fn flag_of(payload: &Json, code: &str) -> Option<String> {
    item(payload, code).and_then(|i| i["flag"].as_str()).map(str::to_string)
}

/// The frame as the subscriber sees it in `raw`: CR LF removed.
fn raw_text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).trim_end_matches(['\r', '\n']).to_string()
}

/// Compares one MQTT payload with the frame the gateway sent: every numeric `code-Suffix` pair
/// and every flag of the frame is in the payload with the same value.
fn check_values(payload: &Json, sent: &OwnedPacket) -> Result<(), String> {
    for pair in sent.cp.iter().flatten() {
        let Some(value) = pair.value.as_deref() else { continue };
        let Some((code, suffix)) = pair.key.split_once('-') else { continue };
        if !matches!(suffix, "Rtd" | "Min" | "Avg" | "Max" | "Cou" | "Flag") {
            continue;
        }
        let it = item(payload, code).ok_or_else(|| format!("{code} missing from the payload"))?;
        if suffix == "Flag" {
            if it["flag"] != value {
                return Err(format!("{code} flag {} on MQTT, {value} sent", it["flag"]));
            }
        } else {
            let want: f64 = value.parse().map_err(|_| format!("{code}-{suffix}={value} is not a number"))?;
            if it[suffix].as_f64() != Some(want) {
                return Err(format!("{code}-{suffix}: {} on MQTT, {value} sent", it[suffix]));
            }
        }
    }
    Ok(())
}

/// Values of flag N must be what the simulator served (constant in this test).
fn check_served(payload: &Json, site: &Site) -> Result<(), String> {
    let keys: &[&str] = match payload["cn"].as_str() {
        Some("2011") => &["Rtd"],
        Some("2051" | "2061") => &["Min", "Avg", "Max"],
        _ => return Ok(()),
    };
    for a in &site.analyzers {
        let (code, served) = a.main;
        let Some(it) = item(payload, code) else { continue };
        if it["flag"] != "N" {
            continue;
        }
        for k in keys {
            if it[*k].as_f64() != Some(served) {
                return Err(format!("{} {code}-{k} = {} but the simulator served {served}", payload["cn"], it[*k]));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_record_reaches_mqtt_through_faults() {
    let seed = std::env::var("HJ212_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x212_2017_u64);
    eprintln!("fault schedule seed: {seed} (set HJ212_E2E_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = temp_dir("faults");
    let timing =
        Timing { poll_interval_ms: 250, rtd_interval_secs: 1, min_interval_mins: 1, over_time_secs: 1, re_count: 1 };
    let mut chain = Chain::start(&dir, timing).await;
    let mut sub = Subscriber::connect(
        (&chain.broker.0, chain.broker.1),
        &format!("e2e-{}", std::process::id()),
        "hj212/#",
        CancellationToken::new(),
    )
    .await
    .expect("subscriber");
    let mut got = Received::default();
    let all_normal = |v: &Json| ["w01018", "w00000"].iter().all(|c| flag_of(v, c).as_deref() == Some("N"));

    // Data flows before any fault.
    got.wait_for(&mut sub, "the first real-time upload", Instant::now(), WAIT, all_normal).await;

    // The faults, in a seeded order with seeded durations.
    let mut faults = vec![
        FaultKind::KillGateway,
        FaultKind::KillIngest,
        FaultKind::ResetUplink,
        FaultKind::BlackholeUplink,
        FaultKind::AnalyzerSilent,
    ];
    for i in (1..faults.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap();
        faults.swap(i, j);
    }
    for fault in faults {
        let hold = Duration::from_millis(800 + rng.below(1200));
        eprintln!("fault {fault:?} for {hold:?}");
        match fault {
            FaultKind::KillGateway => {
                chain.stop_gateway().await;
                tokio::time::sleep(hold).await;
                chain.start_gateway().await;
            }
            FaultKind::KillIngest => {
                chain.stop_ingest().await;
                tokio::time::sleep(hold).await;
                chain.restart_ingest().await;
            }
            FaultKind::ResetUplink => {
                let live = chain.ingest.as_ref().unwrap().0.listen_addrs()[0];
                let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
                chain.proxy.set_upstream(nobody);
                chain.proxy.cut();
                tokio::time::sleep(hold).await;
                chain.proxy.set_upstream(live);
            }
            FaultKind::BlackholeUplink => {
                chain.proxy.set_blackhole(true);
                // Long enough for OverTime × (ReCount + 1) to expire, so the gateway gives the
                // link up and reconnects.
                tokio::time::sleep(hold + Duration::from_secs(2)).await;
                chain.proxy.set_blackhole(false);
            }
            FaultKind::AnalyzerSilent => {
                // Two failed cycles (two attempts each): flag B, but short of the three failed
                // cycles after which the gateway backs a device off for a minute.
                pty::with(chain.cod(), |s| (0..4).for_each(|_| s.inject(Fault::NoAnswer)));
                let since = Instant::now();
                got.wait_for(&mut sub, "flag B on COD", since, WAIT, |v| flag_of(v, "w01018").as_deref() == Some("B"))
                    .await;
                // The flow meter kept answering: its value stays N.
                let b = got.realtime.iter().rev().find(|(_, v)| flag_of(v, "w01018").as_deref() == Some("B")).unwrap();
                assert_eq!(flag_of(&b.1, "w00000").as_deref(), Some("N"), "{}", b.1);
                assert!(item(&b.1, "w01018").unwrap().get("Rtd").is_none_or(Json::is_null), "a B value: {}", b.1);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // After the faults: fresh, normal data again, end to end.
    let after = Instant::now();
    let data_now = chain.clock.now().to_string();
    got.wait_for(&mut sub, "fresh normal data after the faults", after, WAIT, |v| {
        all_normal(v) && v["data_time"].as_str().is_some_and(|t| t > data_now.as_str())
    })
    .await;
    // A calibration changes the slope: the 3020 reaches MQTT too.
    pty::with(chain.cod(), |s| s.set(&Target::Info(Code::new("i13008")), Value::Number(1.25)));
    let deadline = Instant::now() + WAIT;
    loop {
        got.take(&mut sub);
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

    // Let the link drain for a moment, then stop the gateway and account for every record.
    tokio::time::sleep(Duration::from_secs(1)).await;
    chain.stop_gateway().await;
    let store = SledStore::open(&chain.gw_config.store.path, &[PLATFORM.to_string()], 200_000).expect("reopen store");
    let queued: BTreeSet<String> = store
        .queue_range(PLATFORM, 0, 100_000)
        .unwrap()
        .iter()
        .filter_map(|(_, r)| parse_frame(&r.frame).and_then(|p| p.field("QN").map(str::to_string)))
        .collect();
    drop(store);

    // What the gateway sent, from its packet log: QN → the frame (password masked) and the count.
    let mut sent: BTreeMap<String, (Vec<u8>, OwnedPacket, u32)> = BTreeMap::new();
    for r in packets::read_log(&chain.gw_config.packet_log.path) {
        if r.direction != Direction::Out {
            continue;
        }
        let Some(p) = parse_frame(&r.frame) else { panic!("the gateway logged an unreadable frame") };
        if packets::is_answer(packets::cn(&p)) {
            continue;
        }
        let qn = p.field("QN").expect("uploads carry a QN").to_string();
        sent.entry(qn).or_insert_with(|| (r.frame.clone(), p, 0)).2 += 1;
    }

    // Acknowledged records are exactly those sent and no longer queued: each must be on MQTT.
    // The subscriber may get the last ones a moment after ingest saw their PUBACK.
    let acked: Vec<&String> = sent.keys().filter(|qn| !queued.contains(*qn)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let missing = loop {
        got.take(&mut sub);
        let missing: Vec<&&String> = acked.iter().filter(|qn| !got.by_qn.contains_key(**qn)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.into_iter().map(|s| (*s).clone()).collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(missing.is_empty(), "acknowledged by 9014 but never on MQTT: {missing:?}");

    // Nothing invented; each delivery is the frame sent, with the values served.
    let mut duplicates = 0usize;
    for (qn, copies) in &got.by_qn {
        let (frame, packet, _) = sent.get(qn).unwrap_or_else(|| panic!("on MQTT but never sent: {qn} {copies:?}"));
        duplicates += copies.len() - 1;
        for v in copies {
            assert_eq!(v["raw"].as_str(), Some(raw_text(frame).as_str()), "payload differs from the frame sent");
            assert_eq!(v["mn"], chain.site.mn);
            check_values(v, packet).unwrap_or_else(|e| panic!("QN {qn}: {e}"));
            check_served(v, &chain.site).unwrap_or_else(|e| panic!("QN {qn}: {e}"));
        }
    }
    let resent: u32 = sent.values().map(|(_, _, n)| n - 1).sum();
    let unsent_queued = queued.iter().filter(|qn| !sent.contains_key(*qn)).count();
    eprintln!(
        "conservation: {} records sent ({} resends), {} acknowledged and all on MQTT, {} still queued ({} never sent), \
         {} duplicates on MQTT; {} stored over the gateway's lives",
        sent.len(),
        resent,
        acked.len(),
        queued.len(),
        unsent_queued,
        duplicates,
        chain.stored
    );
    // Everything the gateway stored was sent or is still queued (none dropped on the way).
    assert!(chain.stored as usize <= sent.len() + unsent_queued, "records stored but neither sent nor queued");
    assert!(acked.len() >= 20, "too little traffic to judge: {}", acked.len());
    assert!(chain.proxy.connections() >= 3, "the uplink never reconnected");

    chain.stop_ingest().await;
    if std::env::var_os("HJ212_E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("files kept in {}", dir.display());
    }
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
