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
