//! The data-quality state across daemon restarts: the engine's state goes into the state file and
//! comes back; an older state file loads; an unusable one is moved aside and the daemon starts
//! anyway; an interval command the DAU executed sets what the engine expects. Real daemon, real
//! TCP, every wait bounded.

mod common;

use std::time::Duration;

use common::*;
use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::packet::{Flag, Version};
use hj212_codec::time::DateTime;
use hj212_ingest::Config;
use hj212_ingest::quality::DailyRecord;
use serde_json::Value;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// Now on the sites' civil scale (the test configuration keeps `utc_offset_minutes = 480`).
fn local_ms() -> i64 {
    let utc = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    utc + 480 * MINUTE
}

fn t(ms: i64) -> DateTime {
    DateTime::from_millis(ms).unwrap()
}

/// A real-time upload of one COD value.
fn rtd(qn: &str, at: i64, cod: f64) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "32", 2011, PW, MN, Some(Flag::new(Version::V2017, false, false)));
    p.push_group([("DataTime", t(at).to_string())]);
    p.push_group([("w01018-Rtd", cod.to_string()), ("w01018-Flag", "N".to_string())]);
    p.to_frame(CrcVariant::Hj212).unwrap()
}

fn quick(c: &mut Config) {
    c.quality.tick_secs = 1;
    c.quality.persist_secs = 1;
    c.quality.engine.recovery.enabled = false;
}

fn flat_quick(c: &mut Config) {
    quick(c);
    c.quality.engine.flat_line.min_hours = 0.05; // 3 minutes
    c.quality.engine.flat_line.min_points = 4;
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_line_that_began_before_a_restart_alerts_after_it() {
    let start = local_ms() - 10 * MINUTE;
    // First run: three identical values, not enough for an alert (4 values over 3 minutes).
    let d = Daemon::start(flat_quick).await;
    let mut dau = Dau::connect(d.addr()).await;
    for i in 0..3 {
        dau.send(&rtd(&format!("2024010203040{i:04}"), start + i * MINUTE, 12.3)).await;
    }
    until("the connection and the values queued", WAIT, || d.counter("quality_inputs") >= 4).await;
    drop(dau);
    let first_alerts = d.handle().metrics().quality_alerts("flat_line");
    let dir = d.stop_keeping_files().await;
    assert_eq!(first_alerts, 0);
    let saved = read_json(&dir.join("quality.json"));
    assert_eq!(saved["version"], 2, "{saved}");
    assert!(saved["engine"]["mns"][MN].is_object(), "{saved}");

    // Second run, same state file: three more values finish the run that began before.
    let d = Daemon::start_in(dir, flat_quick).await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    for i in 3..6 {
        dau.send(&rtd(&format!("2024010203050{i:04}"), start + i * MINUTE, 12.3)).await;
    }
    let alert = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (_, v) = sub.next_on("hj212/alert/").await;
            if v["rule"] == "flat_line" {
                return v;
            }
        }
    })
    .await
    .expect("no flat_line alert after the restart");
    let run_start = alert["evidence"].as_array().unwrap().iter().find(|e| e["label"] == "run start").unwrap();
    assert_eq!(run_start["time"], t(start).to_string(), "the run counts from before the restart");
    assert_eq!(d.counter("quality_state_errors"), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_file_is_moved_aside_and_the_daemon_starts_empty() {
    let dir = temp_dir();
    let state = dir.join("quality.json");
    std::fs::write(&state, b"{\"written_at\": \"2024").unwrap();
    let d = Daemon::start_in(dir.clone(), quick).await;
    until("the unusable state file counted", WAIT, || d.counter("quality_state_errors") >= 1).await;
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("quality.json.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside, not overwritten");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{\"written_at\": \"2024");
    // The daemon works: a frame is accepted and published.
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&rtd("20240102030400001", local_ms() - MINUTE, 12.3)).await;
    sub.next_on("hj212/").await;
    let dir = d.stop_keeping_files().await;
    assert_eq!(read_json(&dir.join("quality.json"))["version"], 2, "a fresh state file is written");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_before_the_engine_state_loads() {
    let dir = temp_dir();
    let yesterday = t(local_ms() - DAY);
    let date = format!("{:04}-{:02}-{:02}", yesterday.year, yesterday.month, yesterday.day);
    let record = DailyRecord {
        mn: MN.into(),
        date: date.clone(),
        cn: 2061,
        interval_s: 3600,
        expected: 24,
        excused: 0,
        received: 23,
        valid: 23,
        late: 0,
        transmission_rate: Some(23.0 / 24.0),
        effective_rate: Some(1.0),
        transmission_effective_rate: Some(23.0 / 24.0),
        complete: true,
        missing_periods: vec!["05:00".into()],
        pollutants: Vec::new(),
    };
    // The first format: no `version`, no `engine`.
    let old = serde_json::json!({
        "written_at": "20240102030405",
        "utc_offset_minutes": 480,
        "daily": [record],
        "online": [],
        "recoveries": [],
        "network": [],
    });
    std::fs::write(dir.join("quality.json"), old.to_string()).unwrap();
    let d = Daemon::start_in(dir, quick).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.counter("quality_state_errors"), 0);
    let dir = d.stop_keeping_files().await;
    let new = read_json(&dir.join("quality.json"));
    assert_eq!(new["version"], 2);
    let kept = new["daily"].as_array().unwrap().iter().find(|r| r["date"] == date.as_str() && r["cn"] == 2061);
    assert_eq!(kept.expect("the settled day kept")["received"], 23);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_interval_the_dau_executed_is_what_the_engine_expects() {
    let d = Daemon::start(quick).await;
    let broker = d.handle().mqtt_addr();
    let mut sub = Subscriber::connect(broker).await;
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102030405400", 2011, false, PW)).await;
    sub.next_on("hj212/").await;

    // Refused: nothing changes.
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"m1","cn":1064,"MinInterval":2}"#).await;
    let qn = dau.frame().await.field("QN").unwrap().to_string();
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "sent");
    dau.send(&site_answer(&qn, 9011, "QnRtn", "2")).await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "request_answer");

    // Executed: the engine expects minute records every 5 minutes.
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"m2","cn":1064,"MinInterval":5}"#).await;
    let request = dau.frame().await;
    assert_eq!(request.cp_get("MinInterval"), Some("5"));
    let qn = request.field("QN").unwrap().to_string();
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "sent");
    dau.send(&site_answer(&qn, 9011, "QnRtn", "1")).await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "request_answer");
    let before = d.counter("quality_inputs");
    dau.send(&site_answer(&qn, 9012, "ExeRtn", "1")).await;
    assert_eq!(sub.next_on("hj212/reply/").await.1["event"], "result");
    until("the result queued for the engine", WAIT, || d.counter("quality_inputs") > before).await;

    let dir = d.stop_keeping_files().await;
    let state = read_json(&dir.join("quality.json"));
    let streams = &state["engine"]["mns"][MN]["expect"]["streams"];
    assert_eq!(streams["2051"]["announced"], 300, "{streams}");
    let _ = std::fs::remove_dir_all(dir);
}
