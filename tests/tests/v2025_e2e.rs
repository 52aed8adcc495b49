//! HJ 212-2025 end to end: a 2025 gateway (SM4, heartbeats, registration through 1001/1002, a key
//! rotated through 1014) and a 2017 gateway (plaintext) feed the same ingest at once, each
//! polling simulated analyzers on a pty; both reach the MQTT subscriber on `hj212/#`.
//!
//! The 2025 gateway talks to ingest through a proxy the test controls: its uplink is cut for a
//! while so that a backlog builds, then restored. The replayed records must arrive marked
//! `backfill: true` while live records keep arriving (a live record is not queued behind the
//! whole backlog), and every record the gateway saw acknowledged must be on MQTT.
//!
//! On the wire (the gateways' packet logs keep the bytes sent): the 2025 data uploads are
//! ciphertext (their `CP` is not readable text) that opens with the key the two sides agreed on,
//! and every 9015 heartbeat was answered with a 9013.
//!
//! Every wait is bounded. Set `HJ212_E2E_KEEP` to keep the stores and packet logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hj212_codec::Packet;
use hj212_codec::crypt::{self, Key};
use hj212_codec::log::{Direction, Record};
use hj212_codec::time::DateTime;
use hj212_codec::{Split, Splitter};
use hj212_gateway::config::{CipherForm, Encryption, Hardware};
use hj212_gateway::{Gateway, ScaledClock, SledStore, Store as _};
use hj212_tests::mqtt::{self, Subscriber};
use hj212_tests::oracle;
use hj212_tests::packets;
use hj212_tests::proxy::Proxy;
use hj212_tests::pty::Line;
use hj212_tests::sites::{self, PW, Site, Timing};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

const ORIGIN: DateTime = DateTime { year: 2026, month: 3, day: 1, hour: 8, minute: 0, second: 0, millis: 0 };
const WAIT: Duration = Duration::from_secs(15);
const PLATFORM: &str = "platform";

/// The MN ingest assigns to the 2025 gateway's DAU (registration table), registered with SM4.
const MN25: &str = "010000A8900016F000169DC2";
/// The MN in the 2025 gateway's own configuration: not in ingest's registry, so anything sent
/// under it would be refused. Data only flows under the MN the registration assigned.
const UNREGISTERED_MN: &str = "010000A8900016F0000000FF";
const DAU_ID: &str = "6970000000001ABCDEFG1234";
/// The initial SM4 key, known to both sides.
const KEY: &str = "K3y-2025-e2e-abc";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hj212-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The ingest sections for the 2025 site: its registry entry with SM4 and the initial key,
/// registration by table (DAU id → MN), the rotated keys kept under `dir`.
fn ingest_2025(dir: &Path) -> String {
    format!(
        r#"
[quality]
enabled = false

[keys]
state_path = {keys:?}
grace_secs = 3600
rotation_days = 0

[registration]
mode = "table"
state_path = ""

[registration.table]
"{DAU_ID}" = "{MN25}"

[[registry]]
mn = "{MN25}"
password = "{PW}"
allowed_st = ["32"]
encryption = "sm4"
key = "{KEY}"
"#,
        keys = dir.join("ingest-keys.json").display().to_string(),
    )
}

/// The header fields of a frame (everything before `CP=&&`, readable even when `CP` is
/// ciphertext).
fn header(frame: &[u8]) -> BTreeMap<String, String> {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { return BTreeMap::new() };
    let data = f.data();
    let end = data.windows(5).position(|w| w == b"CP=&&").unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end])
        .split(';')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

fn header_cn(frame: &[u8]) -> u16 {
    header(frame).get("CN").and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn header_qn(frame: &[u8]) -> String {
    header(frame).get("QN").cloned().unwrap_or_default()
}

/// A data upload (what the gateway queues and ingest publishes).
const fn is_upload(cn: u16) -> bool {
    matches!(cn, 2000..=3999)
}

/// The data segment of a logged frame.
fn data_of(frame: &[u8]) -> Vec<u8> {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { panic!("unreadable frame in the log") };
    f.data().to_vec()
}

/// The `CP` bytes of a logged frame.
fn cp_bytes(frame: &[u8]) -> Vec<u8> {
    let data = data_of(frame);
    let at = data.windows(5).position(|w| w == b"CP=&&").expect("a CP");
    data[at..].to_vec()
}

/// The plaintext data segment of an encrypted logged frame under `key`, when it reads as a
/// packet (the CRC is not checked: the log masks the password in the clear header).
fn decrypt_logged(frame: &[u8], key: &Key) -> Option<String> {
    let plain = crypt::decrypt_data(key, &data_of(frame)).ok()?;
    let text = String::from_utf8(plain).ok()?;
    Packet::parse(text.as_bytes()).ok()?;
    Some(text)
}

/// One MQTT message, when it arrived.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    topic: String,
    payload: Json,
}

#[derive(Default)]
struct Received {
    all: Vec<Arrival>,
}

impl Received {
    fn take(&mut self, sub: &mut Subscriber) {
        for m in sub.drain() {
            self.all.push(Arrival { at: m.received, topic: m.topic, payload: m.payload });
        }
    }

    /// Data messages of `mn`.
    fn data_of<'a>(&'a self, mn: &'a str) -> impl Iterator<Item = &'a Arrival> + 'a {
        self.all.iter().filter(move |a| mqtt::data_topic("hj212", &a.topic).is_some_and(|(m, _)| m == mn))
    }

    /// Waits (bounded) until `pred` holds over what was received.
    async fn wait(&mut self, sub: &mut Subscriber, what: &str, limit: Duration, pred: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            self.take(sub);
            if pred(self) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Values of flag N must be what the simulator served (constant in this test), and every
/// real-time and minute record must carry at least one.
fn check_served(payload: &Json, site: &Site) -> Result<(), String> {
    if !matches!(payload["cn"].as_str(), Some("2011" | "2051")) {
        return Ok(());
    }
    match oracle::check_served(payload, site)? {
        0 => Err(format!("no normal value of the site's analyzers in {payload}")),
        _ => Ok(()),
    }
}

async fn wait_until(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_gateway(gw: Gateway, token: &CancellationToken) {
    token.cancel();
    tokio::time::timeout(WAIT, gw.wait()).await.expect("gateway did not stop");
    drop(gw);
}

/// QNs still queued for the platform in a stopped gateway's store.
fn queued_qns(store: &Path) -> BTreeSet<String> {
    let deadline = Instant::now() + WAIT;
    let store = loop {
        // The store's lock may outlive the last task by a moment.
        match SledStore::open(store, &[PLATFORM.to_string()], 200_000) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reopen the store: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    store.queue_range(PLATFORM, 0, 100_000).unwrap().iter().map(|(_, r)| header_qn(&r.frame)).collect()
}

/// Data uploads in a packet log: QN → how many times sent.
fn uploads_sent(log: &[Record]) -> BTreeMap<String, u32> {
    let mut sent = BTreeMap::new();
    for r in log.iter().filter(|r| r.direction == Direction::Out && is_upload(header_cn(&r.frame))) {
        *sent.entry(header_qn(&r.frame)).or_insert(0) += 1;
    }
    sent
}

/// The conservation oracle: every upload sent and no longer queued (so acknowledged by a 9014)
/// is on MQTT; nothing is on MQTT that was not sent.
fn check_conservation(name: &str, mn: &str, log: &[Record], queued: &BTreeSet<String>, got: &Received) -> usize {
    let sent = uploads_sent(log);
    let on_mqtt: BTreeSet<String> =
        got.data_of(mn).filter_map(|a| a.payload["qn"].as_str().map(str::to_string)).collect();
    let acked: Vec<&String> = sent.keys().filter(|qn| !queued.contains(*qn)).collect();
    let missing: Vec<&&String> = acked.iter().filter(|qn| !on_mqtt.contains(**qn)).collect();
    assert!(missing.is_empty(), "{name}: acknowledged but never on MQTT: {missing:?}");
    let invented: Vec<&String> = on_mqtt.iter().filter(|qn| !sent.contains_key(*qn)).collect();
    assert!(invented.is_empty(), "{name}: on MQTT but never sent: {invented:?}");
    eprintln!(
        "{name}: {} uploads sent, {} acknowledged and all on MQTT, {} still queued",
        sent.len(),
        acked.len(),
        queued.len()
    );
    acked.len()
}

/// How the 2025 ciphertext is written on the wire, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Raw bytes; length field and CRC of the plaintext (the standard's reading, the default).
    Binary,
    /// `{0x..,..}` text; length field and CRC of that text.
    HexText,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_2025_and_a_2017_gateway_feed_one_ingest_through_registration_rotation_and_an_outage() {
    scenario(Form::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_with_hex_text_ciphertext() {
    scenario(Form::HexText).await;
}

#[allow(clippy::too_many_lines)] // One scenario, told in order.
async fn scenario(form: Form) {
    let started = Instant::now();
    let dir = temp_dir(&format!("v2025-{form:?}"));
    for d in ["ingest", "water25", "gas17"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }

    // The platform: ingest with its embedded broker, and the subscriber.
    let mut extra = ingest_2025(&dir.join("ingest"));
    if form == Form::HexText {
        extra.push_str("cipher_form = \"hex_text\"\n");
    }
    let config = sites::ingest_config_with(&dir.join("ingest"), None, &extra).expect("ingest config");
    let ingest_token = CancellationToken::new();
    let ingest = hj212_ingest::start(config, ingest_token.clone()).await.expect("ingest starts");
    let live_addr = ingest.listen_addrs()[0];
    let (host, port) = ingest.mqtt_addr();
    let mut sub = Subscriber::connect(
        (host, port),
        &format!("v2025-e2e-{form:?}-{}", std::process::id()),
        "hj212/#",
        CancellationToken::new(),
    )
    .await
    .expect("subscriber");
    let mut got = Received::default();
    let proxy = Proxy::start(live_addr).await.unwrap();

    // The 2017 site: the flue-gas stack, straight to ingest, plaintext.
    let gas = sites::gas();
    let gas_line = Line::open(gas.sims()).expect("pty");
    let t17 =
        Timing { poll_interval_ms: 250, rtd_interval_secs: 30, min_interval_mins: 1, over_time_secs: 2, re_count: 2 };
    let gw17_config = sites::gateway_config(&gas, &dir.join("gas17"), gas_line.path(), live_addr, t17);
    let gw17_token = CancellationToken::new();
    let clock17 = Arc::new(ScaledClock::new(ORIGIN, 60));
    let gw17 = hj212_gateway::start_with(
        gw17_config.clone(),
        gw17_token.clone(),
        hj212_gateway::Options { clock: Some(clock17) },
    )
    .await
    .expect("2017 gateway");

    // The 2025 site: the waste-water outfall (COD and flow), through the proxy. One record of
    // each kind every 2 s (real time), so the link is quiet in between and heartbeats go out.
    let water = Site { name: "water25", mn: MN25, ..sites::water(false) };
    let water_line = Line::open(water.sims()).expect("pty");
    let t25 =
        Timing { poll_interval_ms: 250, rtd_interval_secs: 60, min_interval_mins: 1, over_time_secs: 3, re_count: 2 };
    let mut gw25_config = sites::gateway_config(&water, &dir.join("water25"), water_line.path(), proxy.addr(), t25);
    gw25_config.site.mn = UNREGISTERED_MN.into();
    gw25_config.hardware = Hardware {
        dau_id: DAU_ID.into(),
        cpu_id: "A800200A8C6D".into(),
        macs: vec!["E8:6A:64:3C:7B:BC".into(), "A7:63:74:2C:1A:E1".into()],
    };
    {
        let p = &mut gw25_config.platform[0];
        p.version = 2025;
        p.encryption = Encryption::Sm4;
        p.key = Some(KEY.into());
        if form == Form::HexText {
            p.cipher_form = CipherForm::HexText;
        }
        p.register = true;
        p.heartbeat_secs = 1;
        // The key is fresh: the request for a new one comes from the registration (§6.4.3).
        p.key_rotation_days = 90;
        // A slow replay, so that live records have to overtake the backlog.
        p.replay_per_sec = 2;
        // Every record of the outage is backlog, replayed at that pace, so that live data overtakes it.
        p.live_window_secs = 0;
    }
    let gw25_token = CancellationToken::new();
    let clock25 = Arc::new(ScaledClock::new(ORIGIN, 30));
    let gw25 = hj212_gateway::start_with(
        gw25_config.clone(),
        gw25_token.clone(),
        hj212_gateway::Options { clock: Some(clock25) },
    )
    .await
    .expect("2025 gateway");
    let gw25_store = gw25.store();

    // Registration: ingest assigns MN25 to the DAU (1001 → 9013, 1002 → 9011/9012).
    got.wait(&mut sub, "the registration to be confirmed on MQTT", WAIT, |g| {
        g.all.iter().any(|a| a.topic == format!("hj212/register/{MN25}") && a.payload["event"] == "confirmed")
    })
    .await;
    let assigned = got.all.iter().find(|a| a.topic == format!("hj212/register/{MN25}")).unwrap();
    assert_eq!(assigned.payload["event"], "assigned", "{}", assigned.payload);
    assert_eq!(gw25_store.meta(&format!("mn/{PLATFORM}")).as_deref(), Some(MN25));

    // Key rotation through 1014: the gateway asks, ingest sends NewSK, the gateway installs it.
    let m = ingest.metrics().clone();
    let gm = gw25.metrics();
    wait_until("the new key on both sides", WAIT, || {
        m.get("key_rotations") >= 1 && gm.keys_installed.load(Ordering::Relaxed) >= 1
    })
    .await;
    let new_key_text = gw25_store
        .meta(&format!("sk/{PLATFORM}"))
        .and_then(|v| v.split_once(':').map(|(_, k)| k.to_string()))
        .expect("the gateway's key in the store");
    assert_ne!(new_key_text, KEY, "the gateway still uses the initial key");
    let ingest_keys: Json =
        serde_json::from_slice(&std::fs::read(dir.join("ingest").join("ingest-keys.json")).expect("ingest keys file"))
            .unwrap();
    assert_eq!(
        ingest_keys["sites"][MN25]["current"].as_str(),
        Some(new_key_text.as_str()),
        "gateway and ingest disagree on the key"
    );
    let rotated_at = Instant::now();

    // Both sites on MQTT; the 2025 site's data decrypted by ingest under the new key.
    got.wait(&mut sub, "2011 and 2051 from both sites, the 2025 ones under the new key", WAIT, |g| {
        let has = |mn: &str, cn: &str, after: Option<Instant>| {
            g.data_of(mn).any(|a| a.payload["cn"] == cn && after.is_none_or(|t| a.at > t))
        };
        has(MN25, "2011", Some(rotated_at))
            && has(MN25, "2051", Some(rotated_at))
            && has(sites::GAS_MN, "2011", None)
            && has(sites::GAS_MN, "2051", None)
    })
    .await;
    for a in got.data_of(MN25) {
        let v = &a.payload;
        assert_eq!(v["version"], 2025, "{v}");
        assert_eq!(v["encrypted"], true, "{v}");
        assert_eq!(v["mn"], MN25, "{v}");
        check_served(v, &water).unwrap_or_else(|e| panic!("2025 site: {e}"));
        assert!(v["raw"].as_str().is_some_and(|r| r.contains("CP=&&DataTime=")), "raw is not the plaintext: {v}");
    }
    for a in got.data_of(sites::GAS_MN) {
        let v = &a.payload;
        assert_eq!(v["version"], 2017, "{v}");
        assert_ne!(v["encrypted"], true, "{v}");
        check_served(v, &gas).unwrap_or_else(|e| panic!("2017 site: {e}"));
    }

    // Heartbeats on the 2025 link between the uploads, answered.
    wait_until("two heartbeats at ingest", WAIT, || m.get("heartbeats") >= 2).await;

    // The outage: the uplink is cut and new connections find nobody, so a backlog builds.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    proxy.set_upstream(nobody);
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let backlog: Vec<String> =
        gw25_store.queue_range(PLATFORM, 0, 100_000).unwrap().iter().map(|(_, r)| header_qn(&r.frame)).collect();
    assert!(backlog.len() >= 4, "too small a backlog to judge: {backlog:?}");
    proxy.set_upstream(live_addr);
    let restored_at = Instant::now();

    // The backlog arrives, and live records with it.
    got.wait(&mut sub, "the whole backlog on MQTT", Duration::from_secs(20), |g| {
        let on: BTreeSet<&str> = g.data_of(MN25).filter_map(|a| a.payload["qn"].as_str()).collect();
        backlog.iter().all(|qn| on.contains(qn.as_str()))
    })
    .await;
    let after: Vec<&Arrival> = got.data_of(MN25).filter(|a| a.at >= restored_at).collect();
    let before_cut: BTreeSet<&str> =
        got.data_of(MN25).filter(|a| a.at < cut_at).filter_map(|a| a.payload["qn"].as_str()).collect();
    let before_restore: BTreeSet<&str> =
        got.data_of(MN25).filter(|a| a.at < restored_at).filter_map(|a| a.payload["qn"].as_str()).collect();
    for qn in &backlog {
        // A record sent live just before the cut and published then (its 9014 lost) is not
        // published twice: ingest's duplicate window holds the replay back.
        if before_cut.contains(qn.as_str()) {
            continue;
        }
        let copies: Vec<&&Arrival> = after.iter().filter(|a| a.payload["qn"] == qn.as_str()).collect();
        assert!(!copies.is_empty(), "backlog record {qn} not on MQTT after the outage");
        for c in copies {
            assert_eq!(c.payload["backfill"], true, "replayed without backfill: {}", c.payload);
            assert_eq!(c.payload["encrypted"], true, "{}", c.payload);
        }
    }
    let last_backfill = after.iter().rposition(|a| a.payload["backfill"] == true).expect("back-filled records");
    let first_live = after.iter().position(|a| {
        // Live: a record the gateway stored after the link came back, not a replay.
        let qn = a.payload["qn"].as_str().unwrap_or_default();
        a.payload["backfill"] == false && !backlog.iter().any(|q| q == qn) && !before_restore.contains(qn)
    });
    let order: Vec<String> =
        after.iter().map(|a| format!("{}:{}:{}", a.payload["cn"], a.payload["qn"], a.payload["backfill"])).collect();
    assert!(first_live.is_some_and(|i| i < last_backfill), "live data waited behind the back-fill: {order:?}");
    eprintln!("backlog of {} records; arrivals after the outage (qn:backfill): {order:?}", backlog.len());
    for a in &after {
        check_served(&a.payload, &water).unwrap_or_else(|e| panic!("2025 site after the outage: {e}"));
        assert_eq!(a.payload["version"], 2025);
    }

    // Stop both gateways and account for every record.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(gw25_store);
    stop_gateway(gw25, &gw25_token).await;
    stop_gateway(gw17, &gw17_token).await;
    let queued25 = queued_qns(&gw25_config.store.path);
    let queued17 = queued_qns(&gw17_config.store.path);
    let log25 = packets::read_log(&gw25_config.packet_log.path);
    let log17 = packets::read_log(&gw17_config.packet_log.path);
    // The subscriber may get the last ones a moment after ingest saw their PUBACK.
    tokio::time::sleep(Duration::from_millis(500)).await;
    got.take(&mut sub);
    let acked25 = check_conservation("2025 gateway", MN25, &log25, &queued25, &got);
    let acked17 = check_conservation("2017 gateway", sites::GAS_MN, &log17, &queued17, &got);
    assert!(acked25 >= 8 && acked17 >= 8, "too little traffic to judge: {acked25}, {acked17}");

    // The 2025 wire: registration in clear under an empty MN, data only under the assigned MN,
    // every data upload ciphertext (CP unreadable) that opens with one of the two keys, and the
    // last ones with the rotated key only.
    let initial = Key::from_text(KEY).unwrap();
    let rotated = Key::from_text(&new_key_text).unwrap();
    let out25: Vec<&Record> = log25.iter().filter(|r| r.direction == Direction::Out).collect();
    let reg = out25.iter().find(|r| header_cn(&r.frame) == 1001).expect("a 1001 sent");
    assert_eq!(header(&reg.frame).get("MN").map(String::as_str), Some(""), "1001 with an MN");
    assert!(String::from_utf8_lossy(&reg.frame).contains(&format!("i23005-Info={DAU_ID}")));
    let mut under_rotated = 0usize;
    let mut last_key = None;
    for r in out25.iter().filter(|r| is_upload(header_cn(&r.frame))) {
        let h = header(&r.frame);
        assert_eq!(h.get("MN").map(String::as_str), Some(MN25), "upload under another MN");
        let cp = cp_bytes(&r.frame);
        let hex_on_wire = cp.starts_with(b"CP=&&{0x");
        assert_eq!(hex_on_wire, form == Form::HexText, "not the {form:?} form: {}", String::from_utf8_lossy(&r.frame));
        assert!(
            !cp.windows(6).any(|w| w == b"w01018" || w == b"w00000" || w == b"DataTi"),
            "readable CP on the wire: {}",
            String::from_utf8_lossy(&r.frame)
        );
        assert!(
            form == Form::HexText || Packet::parse(&data_of(&r.frame)).is_err(),
            "a plaintext upload: {}",
            String::from_utf8_lossy(&r.frame)
        );
        let plain = if let Some(p) = decrypt_logged(&r.frame, &rotated) {
            under_rotated += 1;
            last_key = Some("rotated");
            p
        } else if let Some(p) = decrypt_logged(&r.frame, &initial) {
            last_key = Some("initial");
            p
        } else {
            panic!("an upload no agreed key opens: {}", String::from_utf8_lossy(&r.frame))
        };
        assert!(plain.contains("CP=&&DataTime="), "{plain}");
    }
    // `backfill` on MQTT is exactly the RF=1 the gateway put on the wire.
    let with_rf: BTreeSet<String> = out25
        .iter()
        .filter(|r| is_upload(header_cn(&r.frame)) && header(&r.frame).get("RF").is_some_and(|v| v == "1"))
        .map(|r| header_qn(&r.frame))
        .collect();
    let without_rf: BTreeSet<String> = out25
        .iter()
        .filter(|r| is_upload(header_cn(&r.frame)) && !header(&r.frame).contains_key("RF"))
        .map(|r| header_qn(&r.frame))
        .collect();
    for a in got.data_of(MN25) {
        let qn = a.payload["qn"].as_str().unwrap_or_default();
        let sent = if a.payload["backfill"] == true { &with_rf } else { &without_rf };
        assert!(sent.contains(qn), "backfill {} on MQTT but not so on the wire: {qn}", a.payload["backfill"]);
    }
    assert!(with_rf.len() >= backlog.len(), "fewer RF=1 uploads than the backlog: {with_rf:?}");
    assert!(under_rotated >= 4, "few uploads under the rotated key: {under_rotated}");
    assert_eq!(last_key, Some("rotated"), "the last upload was not under the rotated key");
    let key_req = out25.iter().find(|r| header_cn(&r.frame) == 1014).expect("the gateway asked for a key");
    assert!(decrypt_logged(&key_req.frame, &initial).is_some_and(|p| p.contains("SKCreateTime=")), "1014 request");
    let log_text = std::fs::read_to_string(&gw25_config.packet_log.path).unwrap();
    assert!(!log_text.contains(&new_key_text) && !log_text.contains(KEY), "a key in clear in the packet log");

    // Every heartbeat sent while the link was up was answered with 9013 (same QN).
    let answered: BTreeSet<String> = log25
        .iter()
        .filter(|r| r.direction == Direction::In && header_cn(&r.frame) == 9013)
        .map(|r| header_qn(&r.frame))
        .collect();
    let beats: Vec<(i64, String)> =
        out25.iter().filter(|r| header_cn(&r.frame) == 9015).map(|r| (r.time_ms, header_qn(&r.frame))).collect();
    let beats_answered = beats.iter().filter(|(_, qn)| answered.contains(qn)).count();
    assert!(beats_answered >= 2, "heartbeats answered: {beats_answered} of {}", beats.len());
    assert!(
        log25.iter().filter(|r| header_cn(&r.frame) == 9015).all(|r| header(&r.frame)
            .get("Flag")
            .is_some_and(|f| f.parse::<u8>().is_ok_and(|f| f & 1 == 1 && f >> 2 == 2))),
        "9015 without Flag version 2025 and A=1"
    );

    // The 2017 wire: plaintext, the site's MN, no RF.
    for r in log17.iter().filter(|r| r.direction == Direction::Out && is_upload(header_cn(&r.frame))) {
        let p = packets::parse_frame(&r.frame).expect("2017 uploads are plaintext");
        assert_eq!(p.field("MN"), Some(sites::GAS_MN));
        assert_eq!(p.field("RF"), None, "RF on a 2017 link");
    }

    ingest_token.cancel();
    let _ = tokio::time::timeout(WAIT, ingest.wait()).await.expect("ingest did not stop");
    eprintln!("v2025 e2e took {:?}", started.elapsed());
    if std::env::var_os("HJ212_E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("files kept in {}", dir.display());
    }
}
