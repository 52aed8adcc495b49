//! The data-quality engine wired into the daemon: a real daemon in-process with the embedded
//! broker, a DAU over real TCP, alerts read from MQTT, gap recovery through the commands path,
//! and the `report`/`compare` subcommands of the binary over the persisted state file.
//! Thresholds and grace periods are shortened; every wait is bounded.

mod common;

use std::time::Duration;

use common::*;
use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::packet::{Flag, Version};
use hj212_codec::time::DateTime;
use hj212_ingest::Config;
use hj212_ingest::quality::{PollutantSpec, StreamSpec};
use serde_json::Value;

/// A registered site that never connects.
const NEVER: &str = "010000A8900016F000169DC9";
const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

/// Now on the sites' civil scale (the test configuration keeps `utc_offset_minutes = 480`).
fn local_ms() -> i64 {
    let utc = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    utc + 480 * MINUTE
}

fn t(ms: i64) -> DateTime {
    DateTime::from_millis(ms).unwrap()
}

/// A frame from the test site.
fn frame(cn: u16, qn: &str, st: &str, groups: &[Vec<(&str, String)>]) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), st, cn, PW, MN, Some(Flag::new(Version::V2017, false, false)));
    for g in groups {
        p.push_group(g.iter().map(|(k, v)| (*k, v.as_str())));
    }
    p.to_frame(CrcVariant::Hj212).unwrap()
}

/// A data upload (Flag A=0): `DataTime`, then one group per `(code, field, value, flag)`.
fn data(cn: u16, qn: &str, at: i64, items: &[(&str, &str, f64, &str)]) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "32", cn, PW, MN, Some(Flag::new(Version::V2017, false, false)));
    p.push_group([("DataTime", t(at).to_string())]);
    for (code, field, v, flag) in items {
        p.push_group([(format!("{code}-{field}"), v.to_string()), (format!("{code}-Flag"), (*flag).to_string())]);
    }
    p.to_frame(CrcVariant::Hj212).unwrap()
}

fn quick(c: &mut Config) {
    c.quality.tick_secs = 1;
    c.quality.persist_secs = 1;
    c.quality.engine.recovery.enabled = false;
}

/// The next alert of `rule` on `hj212/alert/{MN}`, other messages skipped; bounded.
async fn alert(sub: &mut Subscriber, rule: &str) -> Value {
    let topic = format!("hj212/alert/{MN}");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (t, v) = sub.next_on("hj212/alert/").await;
            if t == topic && v["rule"] == rule {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {rule} alert"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_analyzer_raises_a_flat_line_alert() {
    let d = Daemon::start(|c| {
        quick(c);
        c.quality.engine.flat_line.min_hours = 0.05;
        c.quality.engine.flat_line.min_points = 4;
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let start = local_ms() - 10 * MINUTE;
    for i in 0..6 {
        dau.send(&data(2011, &format!("2024010203040{i:04}"), start + i * MINUTE, &[("w01018", "Rtd", 12.3, "N")]))
            .await;
    }
    let v = alert(&mut sub, "flat_line").await;
    assert_eq!(v["mn"], MN);
    assert_eq!(v["subject"], "w01018");
    assert_eq!(v["severity"], "warning");
    assert!(v["evidence"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    until("the alert counted by rule", WAIT, || d.handle().metrics().quality_alerts("flat_line") >= 1).await;
    let (_, text) = http_get(d.handle().metrics_addr().unwrap(), "/metrics").await;
    assert!(text.contains("hj212_ingest_quality_alerts_by_rule_total{rule=\"flat_line\"} 1"), "{text}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slope_change_without_calibration_raises_an_alert() {
    let d = Daemon::start(|c| {
        quick(c);
        c.quality.engine.dynamic_control.calibration_window_minutes = 0.02;
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let now = local_ms();
    for (i, (at, slope)) in [(now - 10 * MINUTE, "1.000"), (now - 5 * MINUTE, "1.150")].into_iter().enumerate() {
        let f = frame(
            3020,
            &format!("2024010203040{i:04}"),
            "32",
            &[vec![("DataTime", t(at).to_string()), ("PolId", "w01018".into())], vec![("i13008-Info", slope.into())]],
        );
        dau.send(&f).await;
    }
    let v = alert(&mut sub, "uncalibrated_parameter_change").await;
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["subject"], "w01018");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dau_quiet_on_an_open_connection_raises_a_silent_dau_alert() {
    let d = Daemon::start(|c| {
        quick(c);
        c.quality.engine.link.silence_factor = 0.0;
        c.quality.engine.link.silence_floor_minutes = 0.04;
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    // One record (its analyzer reported offline, flag B), then nothing while the TCP connection
    // stays up: past the silence allowance the DAU is silent. (An analyzer that stops answering
    // while the DAU keeps transmitting is `analyzer_comm_failure`, not this rule.)
    dau.send(&data(2011, "20240102030400001", local_ms() - MINUTE, &[("w01018", "Rtd", 0.0, "B")])).await;
    let v = alert(&mut sub, "silent_dau").await;
    assert_eq!(v["mn"], MN);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hour_is_requested_recovered_reported_and_compared() {
    let now = local_ms();
    let hour = now.div_euclid(HOUR) * HOUR;
    let (h3, h2, h1) = (hour - 3 * HOUR, hour - 2 * HOUR, hour - HOUR);
    let d = Daemon::start(|c| {
        quick(c);
        let r = &mut c.quality.engine.recovery;
        r.enabled = true;
        r.grace_minutes = 0.01;
        r.per_mn_spacing_minutes = 0.0;
        r.hourly_lookback_hours = 6.0;
        r.reply_timeout_minutes = 1.0;
        c.quality.engine.accounting.grace_minutes = 0.01;
        c.registry[0].active_from = Some(t(h3).to_string());
        c.registry[0].streams = vec![StreamSpec { cn: 2061, interval_s: Some(3600) }];
        c.registry[0].pollutants =
            vec![PollutantSpec { code: "w01018".into(), limit: Some(100.0), ..Default::default() }];
        // A second registered site that never connects: the report lists it as never connected.
        let mut never = entry(NEVER, PW);
        never.active_from = Some(t(h3).to_string());
        never.streams = vec![StreamSpec { cn: 2061, interval_s: Some(3600) }];
        c.registry.push(never);
    })
    .await;
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(d.addr()).await;
    let hourly = |qn: &str, at: i64, cod: f64| data(2061, qn, at, &[("w01018", "Avg", cod, "N")]);
    // Hours h3 and h1 arrive; h2 is lost.
    let mut both = hourly("20240102030400001", h3, 21.0);
    both.extend(hourly("20240102030400002", h1, 20.0));
    dau.send(&both).await;

    // The daemon asks for the lost hour (a platform request, Flag A=1, with its own QN).
    let request = dau.frame().await;
    assert_eq!(request.field("CN"), Some("2061"));
    assert_eq!(request.field("ST"), Some("32"));
    assert_eq!(request.field("MN"), Some(MN));
    let flag: u8 = request.field("Flag").unwrap().parse().unwrap();
    assert_eq!(flag & 1, 1, "the request asks for an answer");
    let begin = request.cp_get("BeginTime").unwrap().to_string();
    let end = request.cp_get("EndTime").unwrap().to_string();
    assert_eq!(begin, t(h2).to_string());
    // A tick could fall between the two uploads above (then h1 was missing too for a moment).
    assert!(end == t(h2).to_string() || end == t(h1).to_string(), "EndTime {end}");
    let qn = request.field("QN").unwrap().to_string();

    // The DAU answers 9011, the hourly data, 9012: all with the request's QN.
    let mut reply = frame(9011, &qn, "91", &[vec![("QnRtn", "1".into())]]);
    let mut at = DateTime::parse(&begin).unwrap().to_millis();
    while at <= DateTime::parse(&end).unwrap().to_millis() {
        reply.extend(hourly(&qn, at, if at == h2 { 19.0 } else { 20.0 }));
        at += HOUR;
    }
    reply.extend(frame(9012, &qn, "91", &[vec![("ExeRtn", "1".into())]]));
    dau.send(&reply).await;

    let (topic, rec) = tokio::time::timeout(Duration::from_secs(20), sub.next_on("hj212/recovery/"))
        .await
        .expect("no recovery record");
    assert_eq!(topic, format!("hj212/recovery/{MN}"));
    assert_eq!(rec["outcome"], "closed", "{rec}");
    assert_eq!(rec["cn"], 2061);
    assert_eq!(rec["begin"], begin);
    until("the recovery counted", WAIT, || d.counter("quality_recoveries") == 1).await;
    assert_eq!(d.counter("quality_requests_sent"), 1);
    dau.nothing().await;

    let dir = d.stop_keeping_files().await;
    let state = dir.join("quality.json");
    let bin = env!("CARGO_BIN_EXE_hj212-ingest");

    // report --json: the transmission rate of the lost hour's day, the hour no longer missing.
    let date = {
        let d = t(h2);
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    };
    let out = std::process::Command::new(bin)
        .args(["report", "--date", &date, "--mn", MN, "--json", "--state"])
        .arg(&state)
        .args(["--svg"])
        .arg(dir.join("calendar.svg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let r = records.iter().find(|r| r["cn"] == 2061).expect("a 2061 record for the day");
    assert_eq!(r["date"], date.as_str());
    let rate = r["transmission_rate"].as_f64().expect("a transmission rate");
    assert!(rate > 0.0 && rate <= 1.0, "{r}");
    let lost = format!("{:02}:00", t(h2).hour);
    assert!(!r["missing_periods"].as_array().unwrap().iter().any(|m| m == lost.as_str()), "{r}");
    assert!(r["received"].as_u64().unwrap() >= 1);
    let svg = std::fs::read_to_string(dir.join("calendar.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
    // The networking status rides along in every record: the site that sent data is online.
    assert_eq!(r["network"]["mn"], MN, "{r}");
    assert_eq!(r["network"]["state"], "online", "{r}");
    assert!(r["network"]["as_of"].as_str().is_some_and(|s| s.len() == 14), "{r}");
    let out = std::process::Command::new(bin)
        .args(["report", "--date", &date, "--mn", NEVER, "--json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let r = records.iter().find(|r| r["cn"] == 2061).expect("a 2061 record for the silent site");
    assert_eq!((r["mn"].as_str(), r["received"].as_u64()), (Some(NEVER), Some(0)), "{r}");
    assert_eq!(r["network"]["state"], "never_connected", "{r}");
    assert_eq!(r["network"]["since"], t(h3).to_string(), "{r}");
    assert_eq!(r["network"]["registered"], true, "{r}");

    // The table: accounting, then the networking section with both sites and since when.
    let table = |mn: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["report", "--date", &date]);
        if let Some(mn) = mn {
            cmd.args(["--mn", mn]);
        }
        let out = cmd.arg("--state").arg(&state).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = table(None);
    let (accounting, network) = text.split_once("Networking status as of ").unwrap_or_else(|| panic!("{text}"));
    assert!(accounting.contains(MN) && accounting.contains(NEVER), "{text}");
    let row = |mn: &str| network.lines().find(|l| l.starts_with(mn)).unwrap_or_else(|| panic!("no {mn}: {text}"));
    assert!(row(NEVER).contains("never connected") && row(NEVER).contains(&t(h3).to_string()), "{text}");
    assert!(row(MN).contains("online"), "{text}");
    assert!(network.contains("1 online, 0 silent, 0 offline, 1 never connected"), "{text}");
    // --mn keeps to that MN in both sections.
    let text = table(Some(MN));
    let (_, network) = text.split_once("Networking status as of ").unwrap_or_else(|| panic!("{text}"));
    assert!(network.contains(MN) && !text.contains(NEVER), "{text}");

    // compare: the laboratory agrees (pass, exit 0), then it does not (fail, exit 2).
    let sampled = t(h1 + 30 * MINUTE).to_string();
    let compare = |lab: f64| {
        let csv = dir.join(format!("lab-{lab}.csv"));
        std::fs::write(&csv, format!("mn,pollutant,sampling_time,value\n{MN},w01018,{sampled},{lab}\n")).unwrap();
        std::process::Command::new(bin)
            .args(["compare", "--mn", MN, "--json", "--lab"])
            .arg(&csv)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap()
    };
    let pass = compare(21.0);
    assert_eq!(pass.status.code(), Some(0), "{}", String::from_utf8_lossy(&pass.stdout));
    let v: Value = serde_json::from_slice(&pass.stdout).unwrap();
    assert_eq!(v["verdicts"][0]["pass"], true, "{v}");
    let fail = compare(40.0);
    assert_eq!(fail.status.code(), Some(2), "{}", String::from_utf8_lossy(&fail.stdout));
    let _ = std::fs::remove_dir_all(dir);
}
