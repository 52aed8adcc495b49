//! End-to-end tests: the daemon runs in-process with the embedded rumqttd broker on loopback
//! ports; a real TCP client plays the data acquisition unit and a rumqttc client subscribes to
//! `hj212/#`. Every wait is bounded, so a failing test fails instead of hanging.

mod common;

use std::time::Duration;

use common::*;
use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::packet::{Flag, Version};
use hj212_ingest::{Config, Event};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_a_is_published_and_answered_only_after_the_puback() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut events = d.handle().events();
    let mut dau = Dau::connect(d.addr()).await;
    let qn = "20240102030405123";
    dau.send(&upload(qn, 2011, true, PW)).await;

    let (topic, v) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2011"));
    assert_eq!(v["mn"], MN);
    assert_eq!(v["st"], "32");
    assert_eq!(v["cn"], "2011");
    assert_eq!(v["qn"], qn);
    assert_eq!(v["flag"], 5);
    assert_eq!(v["version"], 2017);
    assert_eq!(v["data_time"], "20240102030400");
    assert_eq!(v["crc_variant"], "hj212");
    assert_eq!(v["deviations"], serde_json::json!([]));
    assert!(v["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["code"], "w01018");
    assert_eq!(items[0]["Rtd"], 12.5);
    assert_eq!(items[0]["flag"], "N");
    assert_eq!(items[0]["unit"], "mg/L");
    assert_eq!(items[1]["Cou"], 100.0);
    assert_eq!(v["facilities"][0]["code"], "SB1");
    assert_eq!(v["facilities"][0]["RS"], 1.0);
    let raw = v["raw"].as_str().unwrap();
    assert!(raw.contains("PW=******") && !raw.contains(PW), "{raw}");

    let answer = dau.frame().await;
    assert_eq!(answer.field("CN"), Some("9014"));
    assert_eq!(answer.field("QN"), Some(qn));
    assert_eq!(answer.field("ST"), Some("91"));
    assert_eq!(answer.field("MN"), Some(MN));
    assert_eq!(answer.field("Flag"), Some("4"));

    // The ledger saw the broker's PUBACK before the 9014 was written.
    let mut acked_at = None;
    let mut answered_at = None;
    for i in 0.. {
        match timeout(WAIT, events.recv()).await.expect("event stream stalled").unwrap() {
            Event::Acked { qn: Some(q), .. } if q == qn => acked_at = Some(i),
            Event::AnswerSent { cn: 9014, qn: Some(q), .. } if q == qn => {
                answered_at = Some(i);
                break;
            }
            _ => {}
        }
    }
    assert!(acked_at.is_some() && acked_at < answered_at, "PUBACK at {acked_at:?}, 9014 at {answered_at:?}");
    assert_eq!(d.counter("mqtt_acked"), d.counter("mqtt_published"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_without_the_a_bit() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405001", 2051, false, PW)).await;
    let (topic, v) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2051"));
    assert_eq!(v["flag"], 4);
    dau.nothing().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_without_publish_or_answer() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405002", 2011, true, "999999")).await;
    dau.nothing().await;
    sub.nothing().await;
    assert_eq!(d.counter("auth_refused"), 1);
    // The same connection still works with the right password.
    dau.send(&upload("20240102030405003", 2011, true, PW)).await;
    assert_eq!(sub.next().await.1["qn"], "20240102030405003");
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_publishes_refused_frames_to_their_own_topic() {
    let d = Daemon::start(|c| c.auth.policy = hj212_ingest::config::RefusalPolicy::Quarantine).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405004", 2011, true, "999999")).await;
    let (topic, v) = sub.next().await;
    assert_eq!(topic, format!("hj212/quarantine/{MN}"));
    assert_eq!(v["refused"], "wrong_password");
    assert!(!v.to_string().contains("999999"));
    dau.nothing().await;
    d.stop().await;
}

/// Info items carry the dynamic-control category of the MN's code table, on the data topic and
/// on the quarantine topic alike (a known MN's refused frame is read with that MN's table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_items_are_read_with_the_mns_code_table_even_in_quarantine() {
    let d = Daemon::start(|c| {
        c.auth.policy = hj212_ingest::config::RefusalPolicy::Quarantine;
        c.registry[0].code_table = hj212_ingest::config::CodeTable::Hebei;
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let status = |qn: &str, pw: &str| {
        let mut p = OwnedPacket::new(Some(qn), "32", 3020, pw, MN, Some(Flag::new(Version::V2017, false, false)));
        p.push_group([("DataTime", "20240102030400")]);
        p.push_group([("PolId", "w01018"), ("i13128-Info", "20240102000000"), ("i13129-Info", "3.5")]);
        p.push_group([("i12101-Info", "6"), ("i13008-Info", "1.01")]);
        p.to_frame(CrcVariant::Hj212).unwrap()
    };
    let expected = [
        ("i13128", "standard_check", "Standard check time"),
        ("i13129", "standard_check", "Standard check deviation"),
        ("i12101", "working", "Water analyzer working state"),
        ("i13008", "calibration", "Slope"),
    ];
    for (qn, pw, topic) in [
        ("20240102030405041", PW, format!("hj212/{MN}/3020")),
        ("20240102030405042", "999999", format!("hj212/quarantine/{MN}")),
    ] {
        dau.send(&status(qn, pw)).await;
        let (t, v) = sub.next().await;
        assert_eq!(t, topic);
        let info: Vec<(String, String, String)> = v["info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let s = |k: &str| i[k].as_str().unwrap_or("null").to_string();
                (s("code"), s("dynamic_control"), s("name"))
            })
            .collect();
        let expected: Vec<(String, String, String)> =
            expected.iter().map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into())).collect();
        assert_eq!(info, expected, "{topic}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_between_frames_does_not_lose_good_frames() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut wire = b"AT+CSQ\r\n\x00\xff".to_vec();
    wire.extend_from_slice(&upload("20240102030405010", 2011, true, PW));
    wire.extend_from_slice(b"##00zz garbage \r\n");
    wire.extend_from_slice(&upload("20240102030405011", 2011, true, PW));
    dau.send(&wire).await;
    let mut qns = vec![sub.next().await.1["qn"].clone(), sub.next().await.1["qn"].clone()];
    qns.sort_by_key(ToString::to_string);
    assert_eq!(qns, ["20240102030405010", "20240102030405011"]);
    let mut answered =
        vec![dau.frame().await.field("QN").unwrap().to_string(), dau.frame().await.field("QN").unwrap().to_string()];
    answered.sort();
    assert_eq!(answered, ["20240102030405010", "20240102030405011"]);
    assert!(d.counter("bytes_skipped") > 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_only_garbage_is_disconnected() {
    let d = Daemon::start(|c| c.limits.max_garbage_bytes = 100).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&[b'x'; 300]).await;
    assert!(dau.frame_within(WAIT).await.is_none());
    assert_eq!(d.counter("connections_garbage_closed"), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_calibration_request_gets_9013_then_1012() {
    let d = Daemon::start(|_| {}).await;
    let mut dau = Dau::connect(d.addr()).await;
    let mut p =
        OwnedPacket::new(Some("20240102030405020"), "32", 1013, PW, MN, Some(Flag::new(Version::V2017, false, true)));
    p.push_group([("PolId", "w01018")]);
    dau.send(&p.to_frame(CrcVariant::Hj212).unwrap()).await;
    let first = dau.frame().await;
    assert_eq!(first.field("CN"), Some("9013"));
    assert_eq!(first.field("QN"), Some("20240102030405020"));
    let second = dau.frame().await;
    assert_eq!(second.field("CN"), Some("1012"));
    assert_eq!(second.field("MN"), Some(MN));
    assert_eq!(second.field("Flag"), Some("5"));
    assert_eq!(second.cp_get("PolId"), Some("w01018"));
    let time = second.cp_get("SystemTime").unwrap();
    assert!(hj212_codec::time::DateTime::parse(time).is_some(), "{time}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_site_are_never_answered() {
    let d = Daemon::start(|_| {}).await;
    let mut dau = Dau::connect(d.addr()).await;
    for cn in [9011, 9012, 9013, 9014] {
        let mut p =
            OwnedPacket::new(Some("20240102030405030"), "91", cn, PW, MN, Some(Flag::new(Version::V2017, false, true)));
        if cn == 9011 {
            p.push_group([("QnRtn", "1")]);
        }
        dau.send(&p.to_frame(CrcVariant::Hj212).unwrap()).await;
    }
    dau.nothing().await;
    assert_eq!(d.counter("answers_sent"), 0);
    assert_eq!(d.counter("frames_in"), 4);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_published_once_and_answered_each_time() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let frame = upload("20240102030405040", 2011, true, PW);
    dau.send(&frame).await;
    sub.next().await;
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    dau.send(&frame).await;
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    sub.nothing().await;
    assert_eq!(d.counter("duplicates"), 1);
    d.stop().await;
}

/// The broker is down at first: the upload is held, not answered; once a broker appears the ledger
/// connects, publishes, gets the PUBACK, and only then the 9014 goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_9014_while_the_broker_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = port;
        c.mqtt.embedded = Some(false);
    })
    .await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405050", 2011, true, PW)).await;
    assert!(dau.frame_within(Duration::from_millis(1500)).await.is_none(), "answered before any broker existed");
    assert_eq!(d.counter("mqtt_acked"), 0);
    assert!(!d.handle().mqtt_connected());

    hj212_ingest::broker::start(port).await.unwrap();
    let answer = timeout(Duration::from_secs(20), dau.frame()).await.expect("no 9014 after the broker came up");
    assert_eq!(answer.field("QN"), Some("20240102030405050"));
    assert!(d.counter("mqtt_acked") >= 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_probes_are_normal() {
    let d = Daemon::start(|c| c.limits.max_connections = 1).await;
    // A load-balancer probe: connect and close.
    drop(TcpStream::connect(d.addr()).await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.counter("connections_probe") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "probe not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _first = Dau::connect(d.addr()).await;
    while d.counter("connections_accepted") < 2 {
        assert!(tokio::time::Instant::now() < deadline, "first connection not accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = Dau::connect(d.addr()).await;
    assert!(second.frame_within(WAIT).await.is_none());
    assert_eq!(d.counter("connections_refused"), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_in_and_out_reaches_the_packet_log_with_passwords_masked() {
    let d = Daemon::start(|_| {}).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405060", 2011, true, PW)).await;
    dau.frame().await;
    let dir = d.stop_keeping_files().await;
    let text = std::fs::read_to_string(dir.join("packets.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let records: Vec<_> = text.lines().map(|l| hj212_codec::log::Record::parse_line(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0].direction, hj212_codec::log::Direction::In);
    assert_eq!(records[1].direction, hj212_codec::log::Direction::Out);
    assert!(records.iter().all(|r| r.masked));
    assert!(!text.contains(PW));
}

#[test]
fn the_binary_prints_a_default_config_that_parses_and_checks_configs() {
    let exe = env!("CARGO_BIN_EXE_hj212-ingest");
    let out = std::process::Command::new(exe).arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let config = Config::from_toml(&text).unwrap();
    config.validate().unwrap();

    let dir = temp_dir();
    let good = dir.join("good.toml");
    std::fs::write(&good, &text).unwrap();
    let out = std::process::Command::new(exe)
        .args(["check-config", "--config"])
        .arg(&good)
        .env_remove("HJ212_INGEST_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_connections = 0\n").unwrap();
    let out = std::process::Command::new(exe).args(["check-config", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_connections"));

    let out =
        std::process::Command::new(exe).arg("check-config").env("HJ212_INGEST_MAX_FRAME_LEN", "lots").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An embedded broker, a proxy in front of it that can lose its replies, and a daemon publishing
/// through the proxy, once its first message (the status) is acknowledged.
async fn behind_a_proxy(edit: impl FnOnce(&mut Config)) -> (std::net::SocketAddr, Proxy, Daemon) {
    let broker = hj212_ingest::broker::start(0).await.unwrap();
    let proxy = Proxy::start(broker).await;
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = proxy.addr.port();
        c.mqtt.embedded = Some(false);
        edit(c);
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !d.handle().mqtt_connected() || d.counter("mqtt_acked") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "ledger never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (broker, proxy, d)
}

/// The broker gets the message but its PUBACK is lost with the connection: no 9014 until the
/// ledger has reconnected, republished, and received a PUBACK for the republished copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_puback_means_republish_after_reconnect_and_only_then_9014() {
    let (broker, proxy, d) = behind_a_proxy(|_| {}).await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port())).await;

    proxy.swallow_replies(true);
    let mut dau = Dau::connect(d.addr()).await;
    let qn = "20240102030405070";
    dau.send(&upload(qn, 2011, true, PW)).await;
    // The broker has the message (the subscriber sees it), but the PUBACK never arrives.
    assert_eq!(sub.next().await.1["qn"], qn);
    assert!(dau.frame_within(Duration::from_millis(800)).await.is_none(), "9014 without a PUBACK");

    proxy.swallow_replies(false);
    proxy.cut_all();
    let answer = timeout(Duration::from_secs(20), dau.frame()).await.expect("no 9014 after the reconnect");
    assert_eq!(answer.field("QN"), Some(qn));
    assert!(d.counter("mqtt_republished") >= 1);
    assert!(d.counter("mqtt_errors") >= 1);
    // At least once: the republished copy reaches the subscriber too.
    assert_eq!(sub.next().await.1["qn"], qn);
    d.stop().await;
}

/// A 9014 waits at most `limits.ack_timeout_secs` for its PUBACK: later, it is not sent, and is
/// counted. The uploads after it on the same connection are answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_9014_whose_puback_comes_too_late_is_not_sent_and_the_next_ones_are() {
    let (_broker, proxy, d) = behind_a_proxy(|c| c.limits.ack_timeout_secs = 1).await;

    proxy.swallow_replies(true);
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405080", 2011, true, PW)).await;
    dau.send(&upload("20240102030405081", 2011, true, PW)).await;
    // Counted when the time is up, not only when a PUBACK finally comes.
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.counter("answers_timed_out") < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the late 9014s were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.swallow_replies(false);
    proxy.cut_all();
    // The republished copies are acknowledged now, too late: their 9014s never come. The next
    // upload is answered, and is the first answer on the connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.counter("mqtt_republished") < 2 || d.counter("mqtt_unacked") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the held uploads were not republished and acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dau.send(&upload("20240102030405082", 2011, true, PW)).await;
    let answer = timeout(WAIT, dau.frame()).await.expect("no 9014 for the upload after the late ones");
    assert_eq!(answer.field("QN"), Some("20240102030405082"));
    assert!(dau.frame_within(QUIET).await.is_none(), "a late 9014 was sent");
    assert_eq!(d.counter("answers_timed_out"), 2);
    assert_eq!(d.counter("answers_sent"), 1);
    d.stop().await;
}

/// `limits.idle_timeout_secs` counts from a connection's last read: one that keeps sending stays
/// open past it, one that falls silent is closed about that long after its last frame, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_talking_one_is_not() {
    let d = Daemon::start(|c| c.limits.idle_timeout_secs = 1).await;
    let mut talking = Dau::connect(d.addr()).await;
    let mut silent = Dau::connect(d.addr()).await;
    let started = tokio::time::Instant::now();
    silent.send(&upload("20240102030405090", 2011, true, PW)).await;
    assert_eq!(silent.frame().await.field("QN"), Some("20240102030405090"));
    let last_frame = tokio::time::Instant::now();
    for i in 0..6u32 {
        talking.send(&upload(&format!("2024010203040510{i}"), 2011, false, PW)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // 2.4 s after the start the talking connection is still served.
    talking.send(&upload("20240102030405110", 2011, true, PW)).await;
    assert_eq!(talking.frame().await.field("QN"), Some("20240102030405110"));
    assert!(started.elapsed() > Duration::from_secs(2));

    // The silent one was closed: end of stream, not a timeout of our read.
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let read = timeout(WAIT, silent.stream.read(&mut buf)).await.expect("the silent connection is still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(last_frame.elapsed() >= Duration::from_secs(1));
    assert_eq!(d.counter("connections_idle_closed"), 1);
    d.stop().await;
}

/// Connections served by the same thread share its read buffer: frames that arrive in pieces,
/// interleaved across connections, are each put together from their own connection's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_pieces_interleaved_across_connections_are_each_answered() {
    let d = Daemon::start(|_| {}).await;
    let mut daus = Vec::new();
    for _ in 0..4 {
        daus.push(Dau::connect(d.addr()).await);
    }
    let frames: Vec<Vec<u8>> = (0..4).map(|i| upload(&format!("2024010203040520{i}"), 2011, true, PW)).collect();
    // Each frame in 3 pieces; every connection's first piece, then every second piece, …
    for piece in 0..3 {
        for (dau, frame) in daus.iter_mut().zip(&frames) {
            let cut = |k: usize| frame.len() * k / 3;
            dau.send(&frame[cut(piece)..cut(piece + 1)]).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (i, dau) in daus.iter_mut().enumerate() {
        let answer = dau.frame().await;
        assert_eq!(answer.field("QN"), Some(format!("2024010203040520{i}").as_str()));
        assert_eq!(answer.field("CN"), Some("9014"));
    }
    assert_eq!(d.counter("frames_invalid"), 0);
    assert_eq!(d.counter("bytes_skipped"), 0);
    d.stop().await;
}
