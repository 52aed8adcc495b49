//! Tests of the spool, commands down, the metrics and health endpoint, and registry reloads,
//! in-process with the embedded broker (or a proxy in front of it to simulate an outage).

mod common;

use std::time::Duration;

use common::*;
use hj212_ingest::config::AckAfter;
use hj212_ingest::metrics::Verdict;
use serde_json::json;

/// A broker behind a closed proxy: the daemon cannot reach it until the gate opens, while a
/// subscriber is already connected directly.
async fn outage() -> (std::net::SocketAddr, Proxy) {
    let broker = hj212_ingest::broker::start(0).await.unwrap();
    let proxy = Proxy::start(broker).await;
    proxy.set_gate(false);
    (broker, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_without_a_are_spooled_during_an_outage_and_replayed_in_order() {
    let (broker, proxy) = outage().await;
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = proxy.addr.port();
        c.mqtt.embedded = Some(false);
    })
    .await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port())).await;
    let mut dau = Dau::connect(d.addr()).await;
    let qns: Vec<String> = (0..20).map(|i| format!("2024010203040{i:04}")).collect();
    for qn in &qns {
        dau.send(&upload(qn, 2011, false, PW)).await;
    }
    until("20 spooled frames", WAIT, || d.counter("spool_written") == 20).await;
    assert!(sub.next_within(QUIET).await.is_none());
    let (status, _) = http_get(d.handle().metrics_addr().unwrap(), "/healthz").await;
    assert_eq!(status, 200, "the spool is available, so the daemon is healthy without a broker");

    proxy.set_gate(true);
    for qn in &qns {
        let (topic, v) = timeout_next(&mut sub).await;
        assert_eq!(topic, format!("hj212/{MN}/2011"));
        assert_eq!(v["qn"], qn.as_str());
    }
    until("an empty spool", WAIT, || d.counter("spool_depth") == 0).await;
    assert_eq!(d.counter("spool_forwarded"), 20);
    d.stop().await;
}

async fn timeout_next(sub: &mut Subscriber) -> (String, serde_json::Value) {
    tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("no message after the outage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_spool_answers_once_the_frame_is_flushed_even_without_a_broker() {
    let (broker, proxy) = outage().await;
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = proxy.addr.port();
        c.mqtt.embedded = Some(false);
        c.spool.ack_after = AckAfter::Spool;
    })
    .await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port())).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405300", 2011, true, PW)).await;
    let answer = dau.frame().await;
    assert_eq!(answer.field("CN"), Some("9014"));
    assert_eq!(answer.field("QN"), Some("20240102030405300"));
    assert_eq!(d.counter("mqtt_acked"), 0);
    proxy.set_gate(true);
    assert_eq!(timeout_next(&mut sub).await.1["qn"], "20240102030405300");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_and_leaves_frames_unanswered() {
    let (_broker, proxy) = outage().await;
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = proxy.addr.port();
        c.mqtt.embedded = Some(false);
        c.spool.ack_after = AckAfter::Spool;
        c.spool.max_bytes = 65536;
    })
    .await;
    let mut dau = Dau::connect(d.addr()).await;
    // Each payload is about 1 KiB: well over 64 frames cannot fit.
    for i in 0..100 {
        dau.send(&upload(&format!("2024010203{i:07}"), 2011, true, PW)).await;
    }
    until("a refusal", WAIT, || d.counter("spool_refused") > 0).await;
    let mut answered = 0;
    while dau.frame_within(QUIET).await.is_some() {
        answered += 1;
    }
    assert!(answered > 0 && answered < 100, "answered {answered}");
    assert_eq!(d.counter("spool_available"), 0);
    let (status, _) = http_get(d.handle().metrics_addr().unwrap(), "/healthz").await;
    assert_eq!(status, 503, "no broker and a full spool");
    assert!(d.handle().metrics().frames(Some(2011), Verdict::NotAccepted) > 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_goes_to_the_site_and_its_answers_come_back_with_its_id() {
    let d = Daemon::start(|_| {}).await;
    let broker = d.handle().mqtt_addr();
    let mut sub = Subscriber::connect(broker).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405400", 2011, false, PW)).await;
    sub.next_on("hj212/").await;

    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"c1","cn":1062,"RtdInterval":30}"#).await;
    let request = dau.frame().await;
    assert_eq!(request.field("CN"), Some("1062"));
    assert_eq!(request.field("Flag"), Some("5"));
    assert_eq!(request.field("PW"), Some(PW));
    assert_eq!(request.field("ST"), Some("32"));
    assert_eq!(request.cp_get("RtdInterval"), Some("30"));
    let qn = request.field("QN").unwrap().to_string();
    let (topic, sent) = sub.next_on("hj212/reply/").await;
    assert_eq!(topic, format!("hj212/reply/{MN}"));
    assert_eq!(sent["id"], "c1");
    assert_eq!(sent["event"], "sent");
    assert_eq!(sent["qn"], qn.as_str());

    dau.send(&site_answer(&qn, 9011, "QnRtn", "1")).await;
    let (_, a) = sub.next_on("hj212/reply/").await;
    assert_eq!(
        (a["id"].clone(), a["event"].clone(), a["qn_rtn"].clone()),
        (json!("c1"), json!("request_answer"), json!(1))
    );
    dau.send(&site_answer(&qn, 9012, "ExeRtn", "1")).await;
    let (_, r) = sub.next_on("hj212/reply/").await;
    assert_eq!((r["id"].clone(), r["event"].clone(), r["exe_rtn"].clone()), (json!("c1"), json!("result"), json!(1)));

    // A data request: the data reply carries the request's QN and is forwarded with the id.
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"c2","cn":"2011","cp":[[["PolId","w01018"]]]}"#).await;
    let request = dau.frame().await;
    assert_eq!(request.cp_get("PolId"), Some("w01018"));
    let qn = request.field("QN").unwrap().to_string();
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "sent");
    dau.send(&site_answer(&qn, 9011, "QnRtn", "1")).await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "request_answer");
    dau.send(&upload(&qn, 2011, false, PW)).await;
    let (_, data) = sub.next_on("hj212/reply/").await;
    assert_eq!(data["id"], "c2");
    assert_eq!(data["event"], "data");
    assert_eq!(data["data"]["items"][0]["code"], "w01018");
    dau.send(&site_answer(&qn, 9012, "ExeRtn", "1")).await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "result");

    // A command for a site that is not connected, and a malformed one.
    mqtt_publish(broker, "hj212/cmd/NOT-HERE", br#"{"id":"c3","cn":1062,"RtdInterval":30}"#).await;
    let (topic, e) = sub.next_on("hj212/reply/").await;
    assert_eq!(topic, "hj212/reply/NOT-HERE");
    assert_eq!(
        (e["id"].clone(), e["event"].clone(), e["error"].clone()),
        (json!("c3"), json!("error"), json!("site not connected"))
    );
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"c4","cn":1062,"RtdInterval":"1;PW=0"}"#).await;
    let (_, e) = sub.next_on("hj212/reply/").await;
    assert_eq!((e["id"].clone(), e["event"].clone()), (json!("c4"), json!("error")));
    dau.nothing().await;
    assert_eq!(d.counter("commands_sent"), 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_times_out_or_fails_with_its_connection() {
    let d = Daemon::start(|c| c.commands.timeout_secs = 1).await;
    let broker = d.handle().mqtt_addr();
    let mut sub = Subscriber::connect(broker).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405500", 2011, false, PW)).await;
    sub.next_on("hj212/").await;
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"t1","cn":1062,"RtdInterval":30}"#).await;
    dau.frame().await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "sent");
    let (_, e) = sub.next_on("hj212/reply/").await;
    assert_eq!((e["id"].clone(), e["error"].clone()), (json!("t1"), json!("timeout")));

    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"t2","cn":1062,"RtdInterval":30}"#).await;
    dau.frame().await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "sent");
    drop(dau);
    let (_, e) = sub.next_on("hj212/reply/").await;
    assert_eq!((e["id"].clone(), e["error"].clone()), (json!("t2"), json!("connection closed")));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_in_the_prometheus_format() {
    let d = Daemon::start(|_| {}).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405600", 2011, true, PW)).await;
    assert_eq!(dau.frame().await.field("CN"), Some("9014"));
    dau.send(&upload("20240102030405601", 2011, true, "000000")).await;
    dau.nothing().await;
    let addr = d.handle().metrics_addr().unwrap();
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "hj212_ingest_frames_total{cn=\"2011\",verdict=\"accepted\"} 1",
        "hj212_ingest_frames_total{cn=\"2011\",verdict=\"auth_refused\"} 1",
        "hj212_ingest_auth_failures_total{reason=\"wrong_password\"} 1",
        "hj212_ingest_ack_latency_seconds_count 1",
        "hj212_ingest_ack_latency_seconds_bucket{le=\"+Inf\"} 1",
        "hj212_ingest_connections_open 1",
        "hj212_ingest_mqtt_connected 1",
        "hj212_ingest_spool_depth 0",
        "hj212_ingest_spool_enabled 1",
        "# TYPE hj212_ingest_ack_latency_seconds histogram",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_without_a_broker_and_without_a_spool() {
    let d = Daemon::start(|c| {
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = free_port();
        c.mqtt.embedded = Some(false);
        c.spool.path = std::path::PathBuf::new();
    })
    .await;
    assert_eq!(http_get(d.handle().metrics_addr().unwrap(), "/healthz").await.0, 503);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_reload_takes_effect_and_an_invalid_one_is_refused() {
    let d = Daemon::start(|_| {}).await;
    let other = "OTHER-MN-0001";
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload_from(other, "20240102030405700", 2011, true, PW)).await;
    dau.nothing().await;
    let mut config = test_config(std::path::Path::new("/nonexistent"));
    config.registry.push(entry(other, PW));
    assert_eq!(d.handle().reload_registry(&config), Ok(2));
    dau.send(&upload_from(other, "20240102030405701", 2011, true, PW)).await;
    assert_eq!(dau.frame().await.field("QN"), Some("20240102030405701"));
    config.registry.push(entry("BAD", ""));
    assert!(d.handle().reload_registry(&config).is_err());
    dau.send(&upload_from(other, "20240102030405702", 2011, true, PW)).await;
    assert_eq!(dau.frame().await.field("QN"), Some("20240102030405702"));
    assert_eq!((d.counter("registry_reloads"), d.counter("registry_reload_errors")), (1, 1));
    d.stop().await;
}

/// The binary reloads the registry from its file on SIGHUP, and keeps the old one when the
/// file is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_registry_of_the_binary() {
    let dir = temp_dir();
    let (listen, metrics) = (free_port(), free_port());
    let file = dir.join("ingest.toml");
    let write = |extra: &str| {
        let text = format!(
            "[[listeners]]\naddr = \"127.0.0.1:{listen}\"\n[mqtt]\nembedded_port = 0\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [spool]\npath = \"{}\"\n[packet_log]\npath = \"\"\n[[registry]]\nmn = \"{MN}\"\npassword = \"{PW}\"\n{extra}",
            dir.join("spool").display()
        );
        std::fs::write(&file, text).unwrap();
    };
    write("");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hj212-ingest"))
        .arg("--config")
        .arg(&file)
        .arg("-q")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(maddr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the binary did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let other = "OTHER-MN-0002";
    let mut dau = Dau::connect(addr).await;
    dau.send(&upload_from(other, "20240102030405800", 2011, true, PW)).await;
    dau.nothing().await;

    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP failed");
    };
    let pid = child.id().unwrap();
    write(&format!("[[registry]]\nmn = \"{other}\"\npassword = \"{PW}\"\n"));
    hup(pid);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !http_get(maddr, "/metrics").await.1.contains("hj212_ingest_registry_reloads_total 1") {
        assert!(tokio::time::Instant::now() < deadline, "no reload seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dau.send(&upload_from(other, "20240102030405801", 2011, true, PW)).await;
    assert_eq!(dau.frame().await.field("QN"), Some("20240102030405801"));

    write("[[registry]]\nmn = \"X\"\npassword = \"\"\n");
    hup(pid);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !http_get(maddr, "/metrics").await.1.contains("hj212_ingest_registry_reload_errors_total 1") {
        assert!(tokio::time::Instant::now() < deadline, "no refused reload seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dau.send(&upload_from(other, "20240102030405802", 2011, true, PW)).await;
    assert_eq!(dau.frame().await.field("QN"), Some("20240102030405802"));

    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("the binary did not stop").unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One sub-packet of a 2061 hourly message from the test site, `CP` as given (Flag=7: A=1, D=1).
fn part(qn: &str, pnum: u16, pno: u16, cp: &str) -> Vec<u8> {
    let data = format!("QN={qn};ST=32;CN=2061;PW={PW};MN={MN};Flag=7;PNUM={pnum};PNO={pno};CP=&&{cp}&&");
    hj212_codec::encode::frame(data.as_bytes(), hj212_codec::CrcVariant::Hj212, false)
}

/// Sends a part and checks that it alone gets its 9014, with its own QN (HJ 212-2017 C.50).
async fn send_part(dau: &mut Dau, frame: &[u8], qn: &str) {
    dau.send(frame).await;
    let answer = dau.frame().await;
    assert_eq!((answer.field("CN"), answer.field("QN")), (Some("9014"), Some(qn)));
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap().to_string()).collect()
}

/// C.50: a two-part message split at item boundaries, each part repeating `DataTime`. Each part
/// is answered on its own and published as it is; once both are in, the whole message is
/// published once on `…/2061/whole` with every item and the parts' QNs. Copies of a part (the
/// same QN again, or the same part number under a new QN) make no second whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_packets_are_answered_alone_and_the_whole_is_published_once() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let one = part(
        "20160801085857534",
        2,
        1,
        "DataTime=20160801080000;w00000-Cou=63.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;\
         w01018-Avg=40.1,w01018-Flag=N",
    );
    let two = part("20160801085857535", 2, 2, "DataTime=20160801080000;w21003-Avg=1.2,w21003-Flag=N;w21011-Avg=0.31");

    send_part(&mut dau, &one, "20160801085857534").await;
    let (topic, p1) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2061"));
    assert_eq!((p1["pnum"].clone(), p1["pno"].clone()), (json!(2), json!(1)));
    assert_eq!(codes(&p1), ["w00000", "w01018"]);
    assert_eq!(d.counter("subpacket_groups_open"), 1);

    send_part(&mut dau, &two, "20160801085857535").await;
    let (topic, p2) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2061"), "the part first, on the normal topic");
    assert_eq!(p2["pno"], 2);
    let (topic, whole) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2061/whole"));
    assert_eq!(whole["parts"], json!(["20160801085857534", "20160801085857535"]));
    assert_eq!(codes(&whole), ["w00000", "w01018", "w21003", "w21011"]);
    assert_eq!(
        (whole["qn"].clone(), whole["pnum"].clone(), whole["pno"].clone()),
        (json!("20160801085857534"), json!(null), json!(null))
    );
    assert_eq!((whole["flag"].clone(), whole["data_time"].clone()), (json!(5), json!("20160801080000")));
    assert_eq!(whole["items"][0]["Cou"], json!(63.0));
    assert_eq!(whole["crc_variant"], "hj212");
    let raw = whole["raw"].as_str().unwrap();
    assert!(raw.starts_with("QN=20160801085857534;") && raw.contains("PW=******") && !raw.contains(PW), "{raw}");

    // The last part again (lost 9014): answered again, published no more, no second whole.
    send_part(&mut dau, &two, "20160801085857535").await;
    // The same part number under a new QN: a new frame, published as a part, but no new whole.
    let renamed =
        part("20160801085857599", 2, 2, "DataTime=20160801080000;w21003-Avg=1.2,w21003-Flag=N;w21011-Avg=0.31");
    send_part(&mut dau, &renamed, "20160801085857599").await;
    let (topic, again) = sub.next().await;
    assert_eq!((topic, again["qn"].clone()), (format!("hj212/{MN}/2061"), json!("20160801085857599")));
    sub.nothing().await;
    assert_eq!(d.counter("subpacket_groups_completed"), 1);
    assert_eq!(d.counter("duplicates"), 1);
    d.stop().await;
}

/// A sender that cuts `CP` in the middle of an item: the parts are published as they are, and
/// the whole, joined as text by the codec, has every item complete. A repeated part number under
/// a new QN is ignored by the reassembly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_packets_cut_mid_item_are_joined_into_whole_items() {
    let d = Daemon::start(|_| {}).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let one = part("20160801095857001", 2, 1, "DataTime=20160801090000;w01018-Avg=40.1,w010");
    let one_again = part("20160801095857002", 2, 1, "DataTime=20160801090000;w01018-Avg=40.1,w010");
    let two = part("20160801095857003", 2, 2, "18-Flag=N;w00000-Avg=3.25,w00000-Flag=N");
    send_part(&mut dau, &one, "20160801095857001").await;
    send_part(&mut dau, &one_again, "20160801095857002").await;
    send_part(&mut dau, &two, "20160801095857003").await;
    let mut wholes = Vec::new();
    let mut parts = 0;
    while let Some((topic, v)) = sub.next_within(QUIET).await {
        if topic.ends_with("/whole") {
            wholes.push(v);
        } else {
            assert_eq!(topic, format!("hj212/{MN}/2061"));
            parts += 1;
        }
    }
    assert_eq!(parts, 3, "every part is published");
    assert_eq!(wholes.len(), 1, "one whole: {wholes:?}");
    let whole = &wholes[0];
    assert_eq!(whole["parts"], json!(["20160801095857001", "20160801095857003"]));
    assert_eq!(codes(whole), ["w01018", "w00000"]);
    assert_eq!((whole["items"][0]["Avg"].clone(), whole["items"][0]["flag"].clone()), (json!(40.1), json!("N")));
    assert_eq!((whole["items"][1]["Avg"].clone(), whole["items"][1]["flag"].clone()), (json!(3.25), json!("N")));
    assert_eq!(d.counter("subpacket_parts_duplicate"), 1);
    assert_eq!(d.counter("subpacket_groups_completed"), 1);
    d.stop().await;
}

/// A message whose other parts never come: its first part is published and answered, the
/// reassembly gives up after `subpackets.expire_secs` and counts it; late parts make no whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_sub_packet_message_expires_and_is_counted() {
    let d = Daemon::start(|c| c.subpackets.expire_secs = 1).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    send_part(&mut dau, &part("20160801105857001", 3, 1, "DataTime=20160801100000;w01018-Avg=1"), "20160801105857001")
        .await;
    assert_eq!(sub.next().await.0, format!("hj212/{MN}/2061"));
    assert_eq!(d.counter("subpacket_groups_open"), 1);
    until("the expiry", WAIT, || d.counter("subpacket_groups_expired") == 1).await;
    assert_eq!((d.counter("subpacket_groups_open"), d.counter("subpacket_bytes")), (0, 0));
    for (qn, pno) in [("20160801105857002", 2), ("20160801105857003", 3)] {
        send_part(&mut dau, &part(qn, 3, pno, "DataTime=20160801100000;w01018-Avg=1"), qn).await;
        assert_eq!(sub.next().await.0, format!("hj212/{MN}/2061"));
    }
    sub.nothing().await;
    assert_eq!(d.counter("subpacket_groups_completed"), 0);
    d.stop().await;
}

/// Publishes probe commands (for an MN no instance has) until every daemon has received one: its
/// subscription to the command topic is in place.
async fn until_subscribed(daemons: &[&Daemon], broker: (&str, u16)) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let before: Vec<u64> = daemons.iter().map(|d| d.counter("commands_received")).collect();
    loop {
        mqtt_publish(broker, "hj212/cmd/PROBE", br#"{"id":"probe","cn":1062,"RtdInterval":30}"#).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if daemons.iter().zip(&before).all(|(d, b)| d.counter("commands_received") > *b) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the daemons did not subscribe to the command topic");
    }
}

/// The next reply for the command `id`, skipping the others (probes).
async fn reply_for(sub: &mut Subscriber, id: &str) -> serde_json::Value {
    loop {
        let (_, r) = sub.next_on("hj212/reply/").await;
        if r["id"] == id {
            return r;
        }
    }
}

/// Several instances on one broker all receive every command. With `commands.absent = "silent"`
/// only the instance the site is connected to answers; with the default `"error"`, every other
/// instance adds `site not connected` next to the real reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_only_the_instance_with_the_site_answers_a_command() {
    let broker = hj212_ingest::broker::start(0).await.unwrap();
    let on_broker = |c: &mut hj212_ingest::Config, instance: &str, absent| {
        c.instance = instance.into();
        c.mqtt.host = Some("127.0.0.1".into());
        c.mqtt.port = broker.port();
        c.mqtt.embedded = Some(false);
        c.commands.absent = absent;
    };
    use hj212_ingest::config::AbsentSite;
    let a = Daemon::start(|c| on_broker(c, "a", AbsentSite::Silent)).await;
    let b = Daemon::start(|c| on_broker(c, "b", AbsentSite::Silent)).await;
    let broker = ("127.0.0.1", broker.port());
    let mut sub = Subscriber::connect(broker).await;
    until_subscribed(&[&a, &b], broker).await;
    let mut dau = Dau::connect(a.addr()).await;
    dau.send(&upload("20240102030406000", 2011, false, PW)).await;
    sub.next_on("hj212/").await;

    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"k1","cn":1062,"RtdInterval":30}"#).await;
    assert_eq!(dau.frame().await.field("CN"), Some("1062"));
    let sent = reply_for(&mut sub, "k1").await;
    assert_eq!(sent["event"], "sent");
    let received = a.counter("commands_received");
    until("b to see the command", WAIT, || b.counter("commands_received") == received).await;
    sub.nothing().await;
    // Every probe and k1 for b; the probes only for a.
    assert_eq!((a.counter("commands_absent"), b.counter("commands_absent")), (received - 1, received));
    assert_eq!((a.counter("commands_failed"), b.counter("commands_failed")), (0, 0));

    // The default: an instance without the site reports it, next to the real reply.
    let c = Daemon::start(|c| on_broker(c, "c", AbsentSite::Error)).await;
    until_subscribed(&[&c], broker).await;
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"k2","cn":1062,"RtdInterval":30}"#).await;
    assert_eq!(dau.frame().await.field("CN"), Some("1062"));
    let mut events: Vec<String> = Vec::new();
    for _ in 0..2 {
        let r = reply_for(&mut sub, "k2").await;
        events.push(format!("{} {}", r["event"], r["error"]));
    }
    events.sort();
    assert_eq!(events, ["\"error\" \"site not connected\"", "\"sent\" null"]);
    c.stop().await;
    b.stop().await;
    a.stop().await;
}
