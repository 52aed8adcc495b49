//! HJ 212-2025 on the gateway, in-process: a simulated analyzer on a pty (as in `daemon.rs`), an
//! HJ 212-2025 platform double on loopback that decrypts what it receives with the key it
//! believes in and checks the plaintext CRC, and an HJ 212-2017 platform fed by the same gateway
//! at the same time. The doubles speak raw frames (no codec session), so the assertions are on
//! the bytes that crossed the socket. Every wait is bounded.

use std::collections::HashSet;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::crypt::{self, Key};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::time::DateTime;
use hj212_codec::{CrcVariant, Flag, Packet, Split, Splitter, Version};
use hj212_gateway::config::{Config, Encryption, Hardware, Platform};
use hj212_gateway::{Clock as _, Options, ScaledClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod common;
use common::{analyzer_on_pty, temp_dir};

const SITE_MN: &str = "010000A8900016F000169DC0";
const ASSIGNED_MN: &str = "0A0B0C0D0E0F101112131415";
const PW: &str = "123456";
const DAU_ID: &str = "6970000000001ABCDEFG1234";
const KEY1: &str = "Kx7!pQ2#vL9@mZ4$";
const KEY2: &str = "Ry3%tW8^bN1&cV6*";
const WRONG: &str = "Wr0ngWr0ngWr0ng!";
const ORIGIN: DateTime = DateTime { year: 2026, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };

// ----- The simulated analyzer on a pty (as in daemon.rs) -----

// ----- The platform doubles -----

/// One frame as a platform double saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// The bytes on the wire.
    wire: Vec<u8>,
    /// The frame with `CP` decrypted (the wire bytes when nothing was encrypted).
    plain: Vec<u8>,
    /// `CP` was ciphertext and a key of the double opened it, with the CRC verified over the
    /// plaintext.
    decrypted: bool,
    /// The CRC on the wire matches the plaintext data segment.
    crc_ok: bool,
    cn: u16,
    qn: String,
    mn: String,
    flag: u8,
    rf: bool,
    packet: Option<OwnedPacket>,
}

impl Seen {
    fn cp(&self, key: &str) -> Option<String> {
        self.packet.as_ref()?.cp_get(key).map(ToString::to_string)
    }
}

struct Double {
    seen: mpsc::UnboundedReceiver<Seen>,
    send: mpsc::UnboundedSender<Vec<u8>>,
    /// The keys the double decrypts with, first tried first (empty: no encryption).
    keys: Arc<Mutex<Vec<Key>>>,
    stop: CancellationToken,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Double {
    async fn next(&mut self, limit: Duration, mut pred: impl FnMut(&Seen) -> bool) -> Seen {
        tokio::time::timeout(limit, async {
            loop {
                match self.seen.recv().await {
                    Some(s) if pred(&s) => return s,
                    Some(_) => {}
                    None => panic!("platform double stopped"),
                }
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decrypts a received frame with the first key whose plaintext has the received CRC.
fn open(keys: &[Key], wire: &[u8]) -> (Vec<u8>, bool, bool) {
    let Split::Frame(f) = Splitter::default().split(wire, true) else { panic!("not a frame: {}", text(wire)) };
    let data = f.data();
    let crc = f.crc_received();
    let clear_ok = CrcVariant::Hj212.compute(data) == crc;
    let cn_must = hj212_gateway::v2025::header_cn(data).is_some_and(crypt::must_encrypt);
    if cn_must {
        for key in keys {
            let plain = crypt::decrypt_data(key, data).unwrap();
            if plain.len() == data.len() && CrcVariant::Hj212.compute(&plain) == crc && plain != data {
                let mut out = wire.to_vec();
                out[6..6 + plain.len()].copy_from_slice(&plain);
                return (out, true, true);
            }
        }
    }
    (wire.to_vec(), false, clear_ok)
}

fn answer(version: Version, cn: u16, qn: &str, mn: &str) -> Vec<u8> {
    OwnedPacket::new(Some(qn), "91", cn, PW, mn, Some(Flag::new(version, false, false)))
        .to_frame(CrcVariant::Hj212)
        .unwrap()
}

/// A platform double on `listener` for one connection: answers 1001, 1014 and 9015 with 9013 and
/// data with 9014 when asked, reports every frame, and sends what the test queues.
fn double(listener: TcpListener, version: Version, keys: Vec<Key>, connections: Arc<AtomicUsize>) -> Double {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (send, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
    let keys = Arc::new(Mutex::new(keys));
    let stop = CancellationToken::new();
    let (token, keyring) = (stop.clone(), keys.clone());
    tokio::spawn(async move {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut sock, _)) = accepted else { return };
        drop(listener);
        connections.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                Some(frame) = to_send.recv() => {
                    if sock.write_all(&frame).await.is_err() { return; }
                }
                r = sock.read(&mut chunk) => {
                    let Ok(n) = r else { return };
                    if n == 0 { return; }
                    buf.extend_from_slice(&chunk[..n]);
                    for wire in common::take_frames(&mut buf) {
                        let ks = keyring.lock().unwrap().clone();
                        let (plain, decrypted, crc_ok) = open(&ks, &wire);
                        let Split::Frame(f) = Splitter::default().split(&plain, true) else { continue };
                        let parsed = Packet::parse(f.data()).ok();
                        let seen = Seen {
                            cn: parsed.as_ref().map_or(0, Packet::cn),
                            qn: parsed.as_ref().and_then(|p| p.qn()).unwrap_or_default().to_string(),
                            mn: parsed.as_ref().and_then(|p| p.mn()).unwrap_or_default().to_string(),
                            flag: parsed.as_ref().and_then(|p| p.flag()).map_or(0, |f| f.0),
                            rf: parsed.as_ref().is_some_and(Packet::is_backfill),
                            packet: parsed.as_ref().map(OwnedPacket::from_packet),
                            wire: wire.clone(),
                            plain: plain.clone(),
                            decrypted,
                            crc_ok,
                        };
                        let reply = match (&parsed, seen.cn) {
                            (Some(p), 1001 | 1014 | 9015) if p.wants_ack() => Some(answer(version, 9013, &seen.qn, &seen.mn)),
                            (Some(p), 2000..=3999) if p.wants_ack() && crc_ok => Some(answer(version, 9014, &seen.qn, &seen.mn)),
                            _ => None,
                        };
                        let _ = seen_tx.send(seen);
                        if let Some(reply) = reply {
                            if sock.write_all(&reply).await.is_err() { return; }
                        }
                    }
                }
            }
        }
    });
    Double { seen, send, keys, stop }
}

/// A platform request (Flag 9), with its `CP` encrypted by `key` when given (binary form; the
/// length field and CRC of the plaintext kept).
fn request(cn: u16, qn: &str, mn: &str, cp: &[(&str, &str)], key: Option<&Key>) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "32", cn, PW, mn, Some(Flag::new(Version::V2025, false, true)));
    p.push_group(cp.iter().copied());
    let mut frame = p.to_frame(CrcVariant::Hj212).unwrap();
    if let Some(key) = key {
        let data = p.data_segment();
        let sealed = crypt::encrypt_data(key, data.as_bytes(), crypt::CipherForm::Binary).unwrap();
        frame[6..6 + sealed.len()].copy_from_slice(&sealed);
    }
    frame
}

fn key(k: &str) -> Key {
    Key::from_text(k).unwrap()
}

// ----- Helpers -----

fn config(dir: &Path, device: &Path) -> Config {
    // Platforms are added by each test.
    let mut c = common::config(dir, device, SocketAddr::from(([127, 0, 0, 1], 9)));
    c.site.mn = SITE_MN.into();
    c.hardware = Hardware {
        dau_id: DAU_ID.into(),
        cpu_id: "A800200A8C6D".into(),
        macs: vec!["E8:6A:64:3C:7B:BC".into(), "A7:63:74:2C:1A:E1".into()],
    };
    c.platform = Vec::new();
    c
}

fn platform(name: &str, addr: SocketAddr, version: u16) -> Platform {
    Platform {
        name: name.into(),
        address: addr.to_string(),
        version,
        reconnect_min_ms: 100,
        reconnect_max_ms: 400,
        replay_per_sec: 50,
        ..Platform::default()
    }
}

fn header(s: &Seen) -> String {
    let t = text(&s.wire);
    t.split("CP=&&").next().unwrap_or_default().to_string()
}

/// Asserts that `s` went over the wire encrypted: same length and CRC as the plaintext, a
/// different data segment, and the CRC verifies over the plaintext only.
fn assert_encrypted(s: &Seen) {
    assert!(s.decrypted, "not opened with the expected key: {}", text(&s.wire));
    assert!(s.crc_ok);
    assert_eq!(s.wire.len(), s.plain.len());
    assert_ne!(s.wire, s.plain);
    assert_eq!(s.wire[..6], s.plain[..6], "length field");
    assert_eq!(s.wire[s.wire.len() - 6..], s.plain[s.plain.len() - 6..], "CRC and terminator");
    let Split::Frame(f) = Splitter::default().split(&s.wire, true) else { panic!() };
    assert_ne!(CrcVariant::Hj212.compute(f.data()), f.crc_received(), "CRC must be of the plaintext");
}

// ----- Tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_keys_encryption_and_heartbeat_next_to_a_2017_platform() {
    let dir = temp_dir("register");
    let sim = common::cod_simulator();
    let pty = analyzer_on_pty(sim.clone());
    let l25 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l17 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let conns25 = Arc::new(AtomicUsize::new(0));
    let mut cfg = config(&dir, &pty.path);
    cfg.acquisition.rtd_interval_secs = 3600; // one real-time record at start, then quiet links
    let mut p25 = platform("p25", l25.local_addr().unwrap(), 2025);
    p25.encryption = Encryption::Sm4;
    p25.key = Some(KEY1.into());
    p25.register = true;
    p25.heartbeat_secs = 1;
    p25.over_time_secs = 3;
    cfg.platform = vec![p25, platform("p17", l17.local_addr().unwrap(), 2017)];
    let mut d25 = double(l25, Version::V2025, vec![key(KEY1)], conns25.clone());
    let mut d17 = double(l17, Version::V2017, Vec::new(), Arc::new(AtomicUsize::new(0)));
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let long = Duration::from_secs(15);

    // (a) Registration: 1001 with an empty MN and the hardware identifiers, in clear, before any data.
    let reg = d25.next(long, |_| true).await;
    assert_eq!(reg.cn, 1001, "first frame must be the registration: {}", text(&reg.wire));
    assert!(header(&reg).contains(";CN=1001;PW=123456;MN=;Flag=9;"), "{}", text(&reg.wire));
    assert!(reg.crc_ok && reg.wire == reg.plain);
    assert_eq!(reg.cp("i23005-Info").as_deref(), Some(DAU_ID));
    assert_eq!(reg.cp("i23006-Info").as_deref(), Some("A800200A8C6D"));
    assert_eq!(reg.cp("i23007-Info").as_deref(), Some("E86A643C7BBC"));
    assert_eq!(reg.cp("i23008-Info").as_deref(), Some("A763742C1AE1"));
    // Nothing else is sent while the MN is unknown (the 9013 was answered by the double).
    tokio::time::sleep(Duration::from_millis(800)).await;
    while let Ok(s) = d25.seen.try_recv() {
        assert!(s.cn == 9015 || s.cn == 1001, "sent before registration: {}", text(&s.wire));
    }

    // The platform assigns the MN (1002): 9011 then 9012, both to the new MN.
    d25.send.send(request(1002, "20260101000001000", ASSIGNED_MN, &[("i23005-Info", DAU_ID)], None)).unwrap();
    let r = d25.next(long, |s| s.cn == 9011).await;
    assert_eq!((r.qn.as_str(), r.mn.as_str(), r.cp("QnRtn").as_deref()), ("20260101000001000", ASSIGNED_MN, Some("1")));
    let r = d25.next(long, |s| s.cn == 9012).await;
    assert_eq!(r.cp("ExeRtn").as_deref(), Some("1"));

    // (b) The gateway asks for a key at registration: 1014 encrypted with the initial key.
    let ask = d25.next(long, |s| s.cn == 1014).await;
    assert_encrypted(&ask);
    assert_eq!(ask.mn, ASSIGNED_MN);
    assert_eq!(ask.flag, 9);
    let created = ask.cp("SKCreateTime").unwrap();
    assert!(created.len() == 17 && created.bytes().all(|b| b.is_ascii_digit()), "{created}");
    assert!(ask.cp("NewSK").is_none());
    // The platform sends the new key, encrypted with the old one: 9011, installed, 9012.
    let newsk = [("SKCreateTime", "20260101000002000"), ("NewSK", KEY2)];
    d25.send.send(request(1014, "20260101000002000", ASSIGNED_MN, &newsk, Some(&key(KEY1)))).unwrap();
    let r = d25.next(long, |s| s.cn == 9011 && s.qn == "20260101000002000").await;
    assert_eq!(r.cp("QnRtn").as_deref(), Some("1"));
    let r = d25.next(long, |s| s.cn == 9012 && s.qn == "20260101000002000").await;
    assert_eq!(r.cp("ExeRtn").as_deref(), Some("1"));
    *d25.keys.lock().unwrap() = vec![key(KEY2)];
    assert_eq!(gw.metrics().keys_installed.load(Ordering::Relaxed), 1);

    // (c) Data now goes out under the new key, with the assigned MN and Flag version 2.
    sim.lock().unwrap().set(&Target::Info(Code::new("i13008")), Value::Number(1.25));
    let info = d25.next(long, |s| s.cn == 3020 && s.cp("i13008-Info").as_deref() == Some("1.25")).await;
    assert_encrypted(&info);
    assert_eq!(info.mn, ASSIGNED_MN);
    assert_eq!(Flag(info.flag).version(), Version::V2025);
    assert!(!info.rf);
    // The old key does not open it.
    let (_, opened, _) = open(&[key(KEY1)], &info.wire);
    assert!(!opened);
    assert_eq!(gw.store().meta("mn/p25").as_deref(), Some(ASSIGNED_MN));

    // (d) Heartbeats on the quiet link: 9015 in clear with D=1, answered with 9013, link kept.
    for _ in 0..2 {
        let hb = d25.next(long, |s| s.cn == 9015).await;
        assert!(
            header(&hb).contains(&format!("ST=32;CN=9015;PW=123456;MN={ASSIGNED_MN};Flag=9;")),
            "{}",
            text(&hb.wire)
        );
        assert!(text(&hb.wire).contains("CP=&&&&"));
    }
    assert_eq!(conns25.load(Ordering::SeqCst), 1, "the link was dropped");

    // A frame under a wrong key is dropped: no answer, counted.
    let wrong = [("SKCreateTime", "20260101000003000"), ("NewSK", "AAAAAAAAAAAAAAAA")];
    d25.send.send(request(1014, "20260101000003000", ASSIGNED_MN, &wrong, Some(&key(WRONG)))).unwrap();
    let quiet =
        tokio::time::timeout(Duration::from_millis(1500), d25.next(long, |s| s.qn == "20260101000003000")).await;
    assert!(quiet.is_err(), "a frame under a wrong key was answered");
    assert!(gw.metrics().decrypt_failures.load(Ordering::Relaxed) >= 1);
    assert_eq!(gw.metrics().keys_installed.load(Ordering::Relaxed), 1);
    // Keys that agree are never taken for a mismatch.
    assert_eq!(gw.metrics().suspected_key_mismatch.load(Ordering::Relaxed), 0);

    // The 2017 platform, fed at the same time, got plaintext 2017 frames with the site's MN.
    let rt = d17.next(long, |s| s.cn == 2011).await;
    let info17 = d17.next(long, |s| s.cn == 3020 && s.cp("i13008-Info").as_deref() == Some("1.25")).await;
    for s in [&rt, &info17] {
        assert!(s.crc_ok && !s.decrypted && s.wire == s.plain, "{}", text(&s.wire));
        assert_eq!(s.flag, 5, "{}", text(&s.wire));
        assert_eq!(Flag(s.flag).version(), Version::V2017);
        assert_eq!(s.mn, SITE_MN);
        assert!(!s.rf && !header(s).contains("RF="));
    }
    assert!(text(&rt.wire).contains("w01018-Rtd=42.5"));

    // The packet log holds ciphertext for encrypted frames, never a key in clear.
    let log = std::fs::read_to_string(dir.join("packets.log")).unwrap();
    assert!(!log.contains(KEY1) && !log.contains(KEY2));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

fn qn_of(frame: &[u8]) -> String {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { panic!("stored frame") };
    Packet::parse(f.data()).unwrap().qn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_outage_live_data_goes_first_and_the_backlog_carries_rf_1() {
    let dir = temp_dir("backfill");
    let pty = analyzer_on_pty(common::cod_simulator());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(&dir, &pty.path);
    cfg.acquisition.poll_interval_ms = 200;
    let mut p = platform("p25", addr, 2025);
    p.encryption = Encryption::Sm4;
    p.key = Some(KEY1.into());
    p.replay_per_sec = 2; // slow replay, so live records have to overtake it
    p.live_window_secs = 0; // every record of the outage is backlog, replayed at that pace
    cfg.platform = vec![p];
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let store = gw.store();
    let long = Duration::from_secs(15);

    let mut d1 = double(listener, Version::V2025, vec![key(KEY1)], Arc::new(AtomicUsize::new(0)));
    let first = d1.next(long, |s| s.cn == 2011).await;
    assert_encrypted(&first);
    assert!(!first.rf && !header(&first).contains("RF="), "live data marked as back-fill");
    assert_eq!(first.mn, SITE_MN);
    drop(d1);

    // Records pile up while the platform is away.
    tokio::time::timeout(long, async {
        while store.queue_len("p25") < 6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("records did not queue up");
    let queued: Vec<String> =
        store.queue_range("p25", 0, 10_000).unwrap().iter().map(|(_, r)| qn_of(&r.frame)).collect();

    // The platform comes back on the same address.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut d2 = double(listener, Version::V2025, vec![key(KEY1)], Arc::new(AtomicUsize::new(0)));
    let mut wanted: HashSet<&String> = queued.iter().collect();
    let mut arrivals: Vec<(String, bool)> = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !wanted.is_empty() {
            let s = d2.next(long, |s| (2000..3000).contains(&s.cn) || s.cn == 3020).await;
            assert_encrypted(&s);
            let backlog = queued.contains(&s.qn);
            assert_eq!(s.rf, backlog, "RF=1 exactly on replayed records: {}", header(&s));
            if backlog {
                assert!(header(&s).ends_with(";RF=1;"), "RF placed before CP: {}", header(&s));
            }
            wanted.remove(&s.qn);
            arrivals.push((s.qn.clone(), backlog));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("missing after reconnect: {wanted:?}"));
    let replayed: Vec<&String> = arrivals.iter().filter(|(_, b)| *b).map(|(q, _)| q).collect();
    let queued_refs: Vec<&String> = queued.iter().collect();
    assert_eq!(replayed, queued_refs, "backlog replayed out of order");
    let last_backfill = arrivals.iter().rposition(|(_, b)| *b).unwrap();
    let first_live = arrivals.iter().position(|(_, b)| !*b);
    assert!(first_live.is_some_and(|i| i < last_backfill), "live data waited behind the back-fill: {arrivals:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The records HJ 212-2025 added (2013 raw data of each new batch measurement, 2111 five-minute
/// furnace temperature, electricity use under ST 44) are produced because one platform speaks 2025, and reach that platform
/// only: the 2017 platform next to it gets everything else and never a CN it does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_new_in_2025_reach_2025_platforms_only() {
    let dir = temp_dir("only-2025");
    let cod = common::cod_simulator();
    let cod_pty = analyzer_on_pty(cod.clone());
    let furnace = {
        let mut sim = Simulator::new(&firmware::profile::builtin::INCINERATOR_FURNACE);
        sim.set(&Target::Pollutant(Code::new("a01901")), Value::Number(912.5));
        Arc::new(Mutex::new(sim))
    };
    let furnace_pty = analyzer_on_pty(furnace);
    let meter = {
        use firmware::profile::FacilityQuantity;
        let mut sim = Simulator::new(&firmware::profile::builtin::ENERGY_METER);
        sim.set(&Target::Facility(FacilityQuantity::Current(1)), Value::Number(3.25));
        sim.set(&Target::Facility(FacilityQuantity::Power), Value::Number(1.5));
        Arc::new(Mutex::new(sim))
    };
    let meter_pty = analyzer_on_pty(meter);
    let (l17, l25) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut cfg = config(&dir, &cod_pty.path);
    let mut port = cfg.serial[0].clone();
    port.device = furnace_pty.path.clone();
    port.analyzer[0].name = "furnace".into();
    port.analyzer[0].profile = Some("incinerator-furnace".into());
    port.analyzer[0].unit = Some(10);
    cfg.serial.push(port.clone());
    port.device = meter_pty.path.clone();
    port.analyzer[0].name = "meter".into();
    port.analyzer[0].profile = Some("energy-meter".into());
    port.analyzer[0].unit = None;
    port.analyzer[0].electricity = Some(hj212_gateway::config::Electricity {
        codes: [("current_1", "d30106"), ("power", "d30406")].map(|(q, c)| (q.to_string(), c.to_string())).into(),
    });
    cfg.serial.push(port);
    cfg.platform =
        vec![platform("p17", l17.local_addr().unwrap(), 2017), platform("p25", l25.local_addr().unwrap(), 2025)];
    let shutdown = CancellationToken::new();
    // Sixty times real time: a five-minute window closes every five seconds.
    let clock = Arc::new(ScaledClock::new(ORIGIN, 60));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock.clone()) }).await.unwrap();
    let mut d17 = double(l17, Version::V2017, Vec::new(), Arc::new(AtomicUsize::new(0)));
    let mut d25 = double(l25, Version::V2025, Vec::new(), Arc::new(AtomicUsize::new(0)));
    let long = Duration::from_secs(20);
    d25.next(long, |s| s.cn == 2011).await;

    // A new batch measurement on the COD analyzer: one 2013 for the 2025 platform.
    let t = clock.now();
    let sampled = firmware::profile::DateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second).unwrap();
    cod.lock().unwrap().set(&Target::SampleTime, Value::Time(sampled));
    let raw = d25.next(long, |s| s.cn == 2013).await;
    assert_eq!(Flag(raw.flag).version(), Version::V2025);
    assert_eq!(raw.cp("w01018-Avg").as_deref(), Some("42.5"), "{}", text(&raw.wire));
    assert_eq!(raw.cp("w01018-SampleTime"), Some(t.to_string()), "{}", text(&raw.wire));
    let furnace = d25.next(long, |s| s.cn == 2111).await;
    assert_eq!(furnace.cp("a01901-Avg").as_deref(), Some("912.5"), "{}", text(&furnace.wire));
    // Electricity use: its own 2011 under ST 44, with the configured codes.
    let power = d25.next(long, |s| s.cn == 2011 && header(s).contains(";ST=44;")).await;
    assert_eq!(power.cp("d30106-Rtd").as_deref(), Some("3.25"), "{}", text(&power.wire));
    assert_eq!(power.cp("d30406-Rtd").as_deref(), Some("1.5"), "{}", text(&power.wire));
    assert_eq!(power.cp("d30106-Flag").as_deref(), Some("N"));
    assert!(power.cp("w01018-Rtd").is_none(), "electricity mixed with the site's data: {}", text(&power.wire));
    let site_rtd = d25.next(long, |s| s.cn == 2011 && header(s).contains(";ST=32;")).await;
    assert!(site_rtd.cp("d30106-Rtd").is_none(), "meter codes in the site's 2011: {}", text(&site_rtd.wire));

    // The 2017 platform: live data flowing, none of the 2025 records, and none left queued for it.
    let store = gw.store();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen17 = Vec::new();
    let mut st44 = 0;
    while let Ok(s) = tokio::time::timeout_at(until, d17.next(long, |_| true)).await {
        seen17.push(s.cn);
        st44 += usize::from(!header(&s).contains(";ST=32;"));
    }
    assert_eq!(st44, 0, "records of another system sent to the 2017 platform");
    assert!(seen17.iter().filter(|cn| **cn == 2011).count() >= 3, "the 2017 platform got no live data: {seen17:?}");
    assert!(seen17.contains(&2051), "the 2017 platform got no minute data: {seen17:?}");
    assert!(!seen17.iter().any(|cn| matches!(cn, 2013 | 2062 | 2111)), "2025 records sent to 2017: {seen17:?}");
    let left: Vec<u16> = store.queue_range("p17", 0, 10_000).unwrap().iter().map(|(_, r)| r.cn).collect();
    assert!(!left.iter().any(|cn| matches!(cn, 2013 | 2111)), "2025 records held for the 2017 platform: {left:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `heartbeat_secs` on both platforms of a quiet gateway: the HJ 212-2025 platform gets 9015 (and
/// answers 9013), the HJ 212-2017 platform, where CN 9015 is reserved, gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_go_to_2025_platforms_only() {
    let dir = temp_dir("heartbeat-versions");
    let pty = analyzer_on_pty(common::cod_simulator());
    let (l17, l25) = (TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut cfg = config(&dir, &pty.path);
    cfg.acquisition.rtd_interval_secs = 3600; // one real-time record at start, then quiet links
    let mut p17 = platform("p17", l17.local_addr().unwrap(), 2017);
    let mut p25 = platform("p25", l25.local_addr().unwrap(), 2025);
    p17.heartbeat_secs = 1;
    p25.heartbeat_secs = 1;
    cfg.platform = vec![p17, p25];
    let mut d17 = double(l17, Version::V2017, Vec::new(), Arc::new(AtomicUsize::new(0)));
    let mut d25 = double(l25, Version::V2025, Vec::new(), Arc::new(AtomicUsize::new(0)));
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let long = Duration::from_secs(15);

    for _ in 0..2 {
        let hb = d25.next(long, |s| s.cn == 9015).await;
        assert_eq!(Flag(hb.flag).version(), Version::V2025);
    }
    // The 2017 platform gets data, and in the same time no heartbeat.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen17 = Vec::new();
    while let Ok(s) = tokio::time::timeout_at(until, d17.next(long, |_| true)).await {
        seen17.push(s.cn);
    }
    assert!(seen17.contains(&2011), "the 2017 platform got no data: {seen17:?}");
    assert!(!seen17.contains(&9015), "CN 9015 sent to an HJ 212-2017 platform: {seen17:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A platform that holds another SM4 key cannot open the uploads and, as it should, stays silent.
/// The gateway probes the link with a 9015 in clear, which is answered, and then names the
/// probable cause when the upload fails (`hj212_gateway_suspected_key_mismatch_total`). The same
/// platform with the right key raises nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_platform_with_another_key_is_reported_as_a_probable_key_mismatch() {
    let dir = temp_dir("key-mismatch");
    let pty = analyzer_on_pty(common::cod_simulator());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(&dir, &pty.path);
    let mut p = platform("p25", addr, 2025);
    p.encryption = Encryption::Sm4;
    p.key = Some(KEY1.into());
    p.over_time_secs = 1;
    p.re_count = 1;
    cfg.platform = vec![p];
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let metrics = gw.metrics();
    let long = Duration::from_secs(15);

    // The platform holds WRONG: encrypted uploads stay unanswered; the probe in clear is answered.
    let conns = Arc::new(AtomicUsize::new(0));
    let mut d1 = double(listener, Version::V2025, vec![key(WRONG)], conns.clone());
    // Its CP does not open, so only the clear header says what it is.
    let up = d1.next(long, |s| header(s).contains(";CN=2011;")).await;
    assert!(!up.decrypted && !up.crc_ok, "the wrong key opened the upload");
    let probe = d1.next(long, |s| s.cn == 9015).await;
    assert!(probe.crc_ok && probe.wire == probe.plain, "the probe must go in clear: {}", text(&probe.wire));
    assert_eq!(Flag(probe.flag).version(), Version::V2025);
    tokio::time::timeout(long, async {
        while metrics.suspected_key_mismatch.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no key mismatch reported");
    assert_eq!(metrics.decrypt_failures.load(Ordering::Relaxed), 0);
    let text_metrics = metrics.render(gw.store().as_ref(), &["p25".into()]);
    assert!(text_metrics.contains("hj212_gateway_suspected_key_mismatch_total 1"), "{text_metrics}");
    drop(d1);

    // The same platform with the key the gateway uses: acknowledged, and no new suspicion.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut d2 = double(listener, Version::V2025, vec![key(KEY1)], Arc::new(AtomicUsize::new(0)));
    let up = d2.next(long, |s| s.cn == 2011).await;
    assert_encrypted(&up);
    let acked_before = metrics.uploads_acked.load(Ordering::Relaxed);
    tokio::time::timeout(long, async {
        while metrics.uploads_acked.load(Ordering::Relaxed) < acked_before + 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("uploads not acknowledged with the right key");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metrics.suspected_key_mismatch.load(Ordering::Relaxed), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}
