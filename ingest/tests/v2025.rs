//! HJ 212-2025 end to end: a real daemon in-process with its embedded broker, and test DAUs over
//! TCP that build (and encrypt) their frames with the codec. Every wait is bounded.

mod common;

use common::{Daemon, Dau, MN, PW, Subscriber, WAIT, entry, until};
use hj212_codec::crc::CrcVariant;
use hj212_codec::crypt::{self, CipherForm, Key};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::frame::Event as FrameEvent;
use hj212_codec::packet::{Flag, Version};
use hj212_codec::{Packet, Split, Splitter};
use hj212_ingest::config::{Encryption, RegistrationMode};
use hj212_ingest::v2025::{self, KeyUse};
use tokio::io::AsyncReadExt;

const KEY: &str = "K3y-for-tests-01";
const WRONG: &str = "not-the-key-0000";
const MN17: &str = "010000A8900016F000169DC1";

fn key(text: &str) -> Key {
    Key::from_text(text).unwrap()
}

async fn start() -> Daemon {
    Daemon::start(|c| {
        c.registry[0].encryption = Encryption::Sm4;
        c.registry[0].key = KEY.into();
        c.registry.push(entry(MN17, PW));
    })
    .await
}

/// A 2025 data upload (Flag=9 asks for 9014), as a plaintext data segment.
fn upload_2025(mn: &str, qn: &str, cn: u16, data_time: &str) -> OwnedPacket {
    let mut p = OwnedPacket::new(Some(qn), "32", cn, PW, mn, Some(Flag::new(Version::V2025, false, true)));
    p.push_group([("DataTime", data_time)]);
    p.push_group([("w01018-Avg", "12.5"), ("w01018-Flag", "N")]);
    p.push_group([("w00000-Avg", "3.25"), ("w00000-Cou", "100"), ("w00000-Flag", "Td")]);
    p
}

fn sealed(p: &OwnedPacket, with: &str, form: CipherForm) -> Vec<u8> {
    v2025::seal(p.data_segment().as_bytes(), &key(with), form, CrcVariant::Hj212).unwrap()
}

/// The next raw frame the platform writes (it may be encrypted), bounded by `WAIT`.
async fn raw_frame(dau: &mut Dau) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(ev) = dau.deframer.next_event() {
            if let FrameEvent::Frame { frame, .. } = ev {
                return frame.bytes().to_vec();
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, dau.stream.read(&mut buf))
            .await
            .expect("no frame from the platform")
            .unwrap();
        assert!(n > 0, "the platform closed the connection");
        dau.deframer.feed(&buf[..n]);
    }
}

/// Decrypts a frame the platform sent with `with`, returning its plaintext data segment.
fn open_sent(wire: &[u8], with: &str) -> OwnedPacket {
    let Split::Frame(f) = Splitter::default().split(wire, true) else { panic!("not a frame") };
    let (plain, _) = v2025::open(&f, &[(key(with), KeyUse::Current)]).expect("does not decrypt");
    let Split::Frame(p) = Splitter::default().split(&plain, true) else { panic!() };
    OwnedPacket::from_packet(&Packet::parse(p.data()).unwrap())
}

fn site_reply(qn: &str, cn: u16, k: &str, v: &str) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "91", cn, PW, MN, Some(Flag::new(Version::V2025, false, false)));
    p.push_group([(k, v)]);
    p.to_frame(CrcVariant::Hj212).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_upload_with_the_right_key_is_published_in_clear_and_answered_with_flag_8() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let p = upload_2025(MN, "20260101000000001", 2051, "20260101000000");
    let wire = sealed(&p, KEY, CipherForm::Binary);
    assert_eq!(wire.len(), p.data_segment().len() + 12, "binary ciphertext keeps the length");
    dau.send(&wire).await;
    let (topic, v) = sub.next_on("hj212/").await;
    assert_eq!(topic, format!("hj212/{MN}/2051"));
    assert_eq!(v["version"], 2025);
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["items"][0]["Avg"], 12.5);
    assert_eq!(v["items"][1]["flag"], "Td", "the 2025 data flag Td passes through");
    assert!(v["raw"].as_str().unwrap().contains("w01018-Avg=12.5"), "{v}");
    assert!(!v.to_string().contains(KEY));
    let ack = dau.frame().await;
    assert_eq!(ack.field("CN"), Some("9014"));
    assert_eq!(ack.field("Flag"), Some("8"));
    assert_eq!(ack.field("QN"), Some("20260101000000001"));
    assert_eq!(d.counter("frames_decrypted"), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_means_no_publish_no_ack_and_a_counted_failure() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let p = upload_2025(MN, "20260101000000002", 2051, "20260101000000");
    dau.send(&sealed(&p, WRONG, CipherForm::Binary)).await;
    until("decrypt_failures", WAIT, || d.counter("decrypt_failures") == 1).await;
    // Plain text where the site must encrypt is refused the same way.
    dau.send(&p.to_frame(CrcVariant::Hj212).unwrap()).await;
    until("decrypt_failures", WAIT, || d.counter("decrypt_failures") == 2).await;
    dau.nothing().await;
    sub.nothing().await;
    assert!(d.handle().metrics().render_prometheus().contains("hj212_ingest_decrypt_failures_total 2"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_text_ciphertext_decodes_with_either_length_field() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    // The codec's hex-text form: length and CRC of the wire text (rule 1 cuts it).
    let p = upload_2025(MN, "20260101000000003", 2051, "20260101000000");
    dau.send(&sealed(&p, KEY, CipherForm::HexText)).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/")).await;
    assert_eq!(v["qn"], "20260101000000003");
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    // Hex text behind the plaintext's length and CRC: the splitter cuts it at its line feed.
    let p = upload_2025(MN, "20260101000000004", 2051, "20260101001000");
    let data = p.data_segment();
    let mut wire = hj212_codec::encode::frame(data.as_bytes(), CrcVariant::Hj212, false);
    wire.splice(6..6 + data.len(), crypt::encrypt_data(&key(KEY), data.as_bytes(), CipherForm::HexText).unwrap());
    dau.send(&wire).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/")).await;
    assert_eq!(v["qn"], "20260101000000004");
    assert_eq!(v["items"][0]["Avg"], 12.5);
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2017_and_a_2025_site_at_once_keep_their_versions() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut old = Dau::connect(d.addr()).await;
    let mut new = Dau::connect(d.addr()).await;
    old.send(&common::upload_from(MN17, "20260101000000005", 2011, true, PW)).await;
    new.send(&sealed(&upload_2025(MN, "20260101000000006", 2011, "20260101000000"), KEY, CipherForm::Binary)).await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let (topic, v) = sub.next_on("hj212/").await;
        seen.insert(topic, v["version"].clone());
    }
    assert_eq!(seen[&format!("hj212/{MN17}/2011")], 2017);
    assert_eq!(seen[&format!("hj212/{MN}/2011")], 2025);
    assert_eq!(old.frame().await.field("Flag"), Some("4"));
    assert_eq!(new.frame().await.field("Flag"), Some("8"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_is_answered_with_9013_and_not_published() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let hb = OwnedPacket::new(Some("20260101000000007"), "32", 9015, PW, MN, Some(Flag(9)));
    dau.send(&hb.to_frame(CrcVariant::Hj212).unwrap()).await;
    let ans = dau.frame().await;
    assert_eq!(ans.field("CN"), Some("9013"));
    assert_eq!(ans.field("Flag"), Some("8"));
    assert_eq!(ans.field("QN"), Some("20260101000000007"));
    sub.nothing().await;
    assert_eq!(d.counter("heartbeats"), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_exchange_installs_the_new_key_and_keeps_the_old_one_for_the_grace_period() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut ask = OwnedPacket::new(Some("20260101000000008"), "32", 1014, PW, MN, Some(Flag(9)));
    ask.push_group([("SKCreateTime", "20260101000000000")]);
    dau.send(&sealed(&ask, KEY, CipherForm::Binary)).await;
    assert_eq!(dau.frame().await.field("CN"), Some("9013"));
    let wire = raw_frame(&mut dau).await;
    let text = String::from_utf8_lossy(&wire).to_string();
    let request = open_sent(&wire, KEY);
    assert_eq!(request.field("CN"), Some("1014"));
    assert_eq!(request.field("Flag"), Some("9"));
    let new_key = request.cp_get("NewSK").expect("NewSK").to_string();
    assert_eq!(new_key.len(), 16);
    assert!(!text.contains(&new_key), "NewSK must not travel in clear");
    assert!(request.cp_get("SKCreateTime").is_some());
    let qn = request.field("QN").unwrap().to_string();
    dau.send(&site_reply(&qn, 9011, "QnRtn", "1")).await;
    dau.send(&site_reply(&qn, 9012, "ExeRtn", "1")).await;
    until("key_rotations", WAIT, || d.counter("key_rotations") == 1).await;

    let p = upload_2025(MN, "20260101000000009", 2051, "20260101002000");
    dau.send(&sealed(&p, &new_key, CipherForm::Binary)).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/2051")).await;
    assert_eq!(v["qn"], "20260101000000009");
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    let p = upload_2025(MN, "20260101000000010", 2051, "20260101003000");
    dau.send(&sealed(&p, KEY, CipherForm::Binary)).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/2051")).await;
    assert_eq!(v["qn"], "20260101000000010", "the old key still works during the grace period");
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_only_the_new_key_decrypts_and_it_survives_a_restart() {
    let dir = common::temp_dir();
    let d = Daemon::start_in(dir.clone(), |c| {
        c.registry[0].encryption = Encryption::Sm4;
        c.registry[0].key = KEY.into();
        c.keys.grace_secs = 0;
    })
    .await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut ask = OwnedPacket::new(Some("20260101000000011"), "32", 1014, PW, MN, Some(Flag(9)));
    ask.push_group([("SKCreateTime", "20260101000000000")]);
    dau.send(&sealed(&ask, KEY, CipherForm::Binary)).await;
    assert_eq!(dau.frame().await.field("CN"), Some("9013"));
    let request = open_sent(&raw_frame(&mut dau).await, KEY);
    let new_key = request.cp_get("NewSK").unwrap().to_string();
    dau.send(&site_reply(request.field("QN").unwrap(), 9012, "ExeRtn", "1")).await;
    until("key_rotations", WAIT, || d.counter("key_rotations") == 1).await;
    drop(dau);
    d.stop_keeping_files().await;

    let d = Daemon::start_in(dir.clone(), |c| {
        c.registry[0].encryption = Encryption::Sm4;
        c.registry[0].key = KEY.into();
        c.keys.grace_secs = 0;
    })
    .await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&sealed(&upload_2025(MN, "20260101000000012", 2051, "20260101004000"), KEY, CipherForm::Binary)).await;
    until("decrypt_failures", WAIT, || d.counter("decrypt_failures") == 1).await;
    dau.send(&sealed(&upload_2025(MN, "20260101000000013", 2051, "20260101005000"), &new_key, CipherForm::Binary))
        .await;
    assert_eq!(dau.frame().await.field("QN"), Some("20260101000000013"));
    let keys = std::fs::read_to_string(dir.join("keys.json")).unwrap_or_default();
    assert!(keys.contains(MN));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_assigns_an_mn_with_1002_and_refuses_unknown_daus() {
    let d = Daemon::start(|c| {
        c.registration.mode = RegistrationMode::Table;
        c.registration.table.insert("6970000000001ABCDEFG1234".into(), MN.into());
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let ids = |dau_id: &str, qn: &str| {
        let mut p = OwnedPacket::new(Some(qn), "32", 1001, PW, "", Some(Flag(9)));
        p.push_group([
            ("i23005-Info", dau_id),
            ("i23006-Info", "A800200A8C6D"),
            ("i23007-Info", "E86A643C7BBC"),
            ("i23008-Info", "A763742C1AE1"),
        ]);
        p.to_frame(CrcVariant::Hj212).unwrap()
    };
    dau.send(&ids("6970000000001ABCDEFG1234", "20260101000000014")).await;
    let ans = dau.frame().await;
    assert_eq!((ans.field("CN"), ans.field("Flag"), ans.field("MN")), (Some("9013"), Some("8"), Some("")));
    let assign = dau.frame().await;
    assert_eq!(assign.field("CN"), Some("1002"));
    assert_eq!(assign.field("MN"), Some(MN));
    assert_eq!(assign.cp_get("i23005-Info"), Some("6970000000001ABCDEFG1234"));
    let (topic, v) = sub.next_on("hj212/register/").await;
    assert_eq!(topic, format!("hj212/register/{MN}"));
    assert_eq!((v["event"].as_str(), v["cpu_id"].as_str()), (Some("assigned"), Some("A800200A8C6D")));
    let qn = assign.field("QN").unwrap().to_string();
    dau.send(&site_reply(&qn, 9012, "ExeRtn", "1")).await;
    let (_, v) = sub.next_on("hj212/register/").await;
    assert_eq!(v["event"], "confirmed");

    dau.send(&ids("UNKNOWN-DAU", "20260101000000015")).await;
    until("registrations_refused", WAIT, || d.counter("registrations_refused") == 1).await;
    dau.nothing().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_registration_counts_from_the_prefix() {
    let d = Daemon::start(|c| {
        c.registration.mode = RegistrationMode::Auto;
        c.registration.prefix = "0100".into();
    })
    .await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut p = OwnedPacket::new(Some("20260101000000016"), "32", 1001, PW, "", Some(Flag(9)));
    p.push_group([("i23005-Info", "DAU-A")]);
    dau.send(&p.to_frame(CrcVariant::Hj212).unwrap()).await;
    assert_eq!(dau.frame().await.field("CN"), Some("9013"));
    assert_eq!(dau.frame().await.field("MN"), Some("010000000000000000000000"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_filled_packets_are_marked_in_the_payload() {
    let d = start().await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut p = upload_2025(MN, "20260101000000017", 2061, "20260101000000");
    p.set_backfill();
    let wire = sealed(&p, KEY, CipherForm::Binary);
    assert!(String::from_utf8_lossy(&wire).contains(";RF=1;"));
    dau.send(&wire).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/2061")).await;
    assert_eq!(v["backfill"], true);
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    dau.send(&sealed(&upload_2025(MN, "20260101000000018", 2061, "20260101010000"), KEY, CipherForm::Binary)).await;
    let (_, v) = sub.next_on(&format!("hj212/{MN}/2061")).await;
    assert_eq!(v["backfill"], false);
    d.stop().await;
}
