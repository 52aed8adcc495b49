//! Integration tests against a real Mosquitto broker, started by each test on a free loopback
//! port with a generated configuration (anonymous, no persistence).
//!
//! When `mosquitto` is not on `PATH`, the tests print a skip notice and pass, unless `CI=true`,
//! where they fail: CI must run them.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hj212_ingest::Event;
use tokio::time::timeout;

struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("mosquitto")).find(|p| p.is_file())
}

impl Mosquitto {
    /// Starts Mosquitto, or returns `None` (after a notice) when it is not installed outside CI.
    async fn start(port: u16, dir: &Path) -> Option<Self> {
        let Some(bin) = mosquitto_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "mosquitto is not on PATH, and CI=true requires the Mosquitto integration tests to run: install the `mosquitto` package"
                );
            }
            eprintln!("SKIPPED: mosquitto is not on PATH (install it to run the Mosquitto integration tests)");
            return None;
        };
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"),
        )
        .unwrap();
        let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "mosquitto did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(Self { child, port, dir: dir.to_path_buf() })
    }

    /// Kills the broker (SIGKILL) and waits for it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        let mut again = Self::start(self.port, &self.dir).await.unwrap();
        // `again` now holds the dead child; dropping it kills nothing that runs.
        std::mem::swap(&mut self.child, &mut again.child);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn external(c: &mut hj212_ingest::Config, port: u16) {
    c.mqtt.host = Some("127.0.0.1".into());
    c.mqtt.port = port;
    c.mqtt.embedded = Some(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_frames_in_payloads_out_and_9014_only_after_puback() {
    let dir = temp_dir();
    let Some(broker) = Mosquitto::start(free_port(), &dir).await else { return };
    let d = Daemon::start(|c| external(c, broker.port)).await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let mut events = d.handle().events();
    let mut dau = Dau::connect(d.addr()).await;
    let qns: Vec<String> = (0..10).map(|i| format!("2024010203050{i:04}")).collect();
    for qn in &qns {
        dau.send(&upload(qn, 2011, true, PW)).await;
    }
    let mut answers = HashSet::new();
    for qn in &qns {
        let (topic, v) = sub.next().await;
        assert_eq!(topic, format!("hj212/{MN}/2011"));
        assert_eq!(v["qn"], qn.as_str(), "published in order");
        answers.insert(dau.frame().await.field("QN").unwrap().to_string());
    }
    assert_eq!(answers, qns.iter().cloned().collect::<HashSet<_>>());
    let mut acked = HashSet::new();
    let mut answered = 0;
    while answered < qns.len() {
        match timeout(WAIT, events.recv()).await.expect("event stream stalled").unwrap() {
            Event::Acked { qn: Some(q), .. } => {
                acked.insert(q);
            }
            Event::AnswerSent { cn: 9014, qn: Some(q), .. } => {
                assert!(acked.contains(&q), "9014 for {q} before its PUBACK");
                answered += 1;
            }
            _ => {}
        }
    }
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// First occurrences of QNs, per MN, in arrival order.
fn firsts(seen: &[(String, String)], mn: &str) -> Vec<String> {
    let mut set = HashSet::new();
    seen.iter().filter(|(m, _)| m == mn).filter(|(_, q)| set.insert(q.clone())).map(|(_, q)| q.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_mid_stream_and_restarted_loses_nothing_and_keeps_order() {
    const MN2: &str = "010000A8900016F000169DC2";
    let dir = temp_dir();
    let Some(mut broker) = Mosquitto::start(free_port(), &dir).await else { return };
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", broker.port).parse().unwrap();
    // The proxy keeps the daemon away from the restarted broker until the new subscriber is in.
    let proxy = Proxy::start(upstream).await;
    let d = Daemon::start(|c| {
        external(c, proxy.addr.port());
        c.registry.push(entry(MN2, PW));
    })
    .await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    // MN asks for 9014s (held in the ledger); MN2 does not (held in the spool).
    let mut acked_dau = Dau::connect(d.addr()).await;
    let mut spooled_dau = Dau::connect(d.addr()).await;
    let qn = |i: usize| format!("2024010203060{i:04}");
    let mut seen: Vec<(String, String)> = Vec::new();
    let send = async |range: std::ops::Range<usize>, acked: &mut Dau, spooled: &mut Dau| {
        for i in range {
            acked.send(&upload(&qn(i), 2011, true, PW)).await;
            spooled.send(&upload_from(MN2, &qn(i), 2011, false, PW)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    send(0..10, &mut acked_dau, &mut spooled_dau).await;
    while seen.len() < 20 {
        let (_, v) = sub.next().await;
        seen.push((v["mn"].as_str().unwrap().into(), v["qn"].as_str().unwrap().into()));
    }

    proxy.set_gate(false);
    broker.kill();
    proxy.cut_all();
    send(10..20, &mut acked_dau, &mut spooled_dau).await;
    until("the spool to hold the outage's frames", WAIT, || d.counter("spool_written") >= 20).await;
    broker.restart().await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    proxy.set_gate(true);
    send(20..30, &mut acked_dau, &mut spooled_dau).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while firsts(&seen, MN).len() < 30 || firsts(&seen, MN2).len() < 30 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((_, v)) = sub.next_within(left).await else {
            panic!("lost messages: MN {:?}, MN2 {:?}", firsts(&seen, MN).len(), firsts(&seen, MN2).len());
        };
        seen.push((v["mn"].as_str().unwrap().into(), v["qn"].as_str().unwrap().into()));
    }
    let expected: Vec<String> = (0..30).map(qn).collect();
    assert_eq!(firsts(&seen, MN), expected, "order of the site that asks for 9014s");
    assert_eq!(firsts(&seen, MN2), expected, "order of the spooled site");
    let mut answered = HashSet::new();
    while answered.len() < 30 {
        let a = timeout(Duration::from_secs(20), acked_dau.frame()).await.expect("missing 9014s");
        answered.insert(a.field("QN").unwrap().to_string());
    }
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// The daemon (a child process) is killed with SIGKILL while a site streams frames; a new daemon
/// on the same spool then delivers every frame that had been acknowledged to the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_and_restarted_delivers_every_acknowledged_frame() {
    let dir = temp_dir();
    let Some(broker) = Mosquitto::start(free_port(), &dir).await else { return };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let listen = free_port();
    let file = dir.join("ingest.toml");
    std::fs::write(
        &file,
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:{listen}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[metrics]\nlisten = \"\"\n\
             [spool]\npath = \"{}\"\nack_after = \"spool\"\n[packet_log]\npath = \"\"\n[limits]\nmax_frames_per_minute_per_mn = 0\n\
             [[registry]]\nmn = \"{MN}\"\npassword = \"{PW}\"\n",
            broker.port,
            dir.join("spool").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hj212-ingest"))
        .arg("--config")
        .arg(&file)
        .arg("-q")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut dau = loop {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            break Dau { stream: s, deframer: Default::default() };
        }
        assert!(tokio::time::Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut acked: Vec<String> = Vec::new();
    let mut i = 0;
    // Stream frames, read 9014s as they come, and kill the daemon mid-stream.
    while acked.len() < 100 {
        for _ in 0..5 {
            dau.send(&upload(&format!("2024010203070{i:04}"), 2011, true, PW)).await;
            i += 1;
        }
        while let Some(a) = dau.frame_within(Duration::from_millis(30)).await {
            acked.push(a.field("QN").unwrap().to_string());
        }
        assert!(i < 2000, "the daemon does not answer");
    }
    for _ in 0..20 {
        dau.send(&upload(&format!("2024010203070{i:04}"), 2011, true, PW)).await;
        i += 1;
    }
    child.start_kill().unwrap();
    let _ = timeout(WAIT, child.wait()).await.expect("the killed daemon did not exit");
    while let Some(a) = dau.frame_within(Duration::from_millis(100)).await {
        acked.push(a.field("QN").unwrap().to_string());
    }
    eprintln!("sent {i} frames, {} acknowledged before the kill", acked.len());

    // The same spool, a new daemon (in-process this time).
    let d = Daemon::start_in(dir.clone(), |c| external(c, broker.port)).await;
    assert_eq!(d.handle().metrics().snapshot()["spool_enabled"], 1);
    let mut missing: HashSet<String> = acked.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((_, v)) = sub.next_within(left).await else {
            panic!("{} acknowledged frames never reached the broker", missing.len());
        };
        missing.remove(v["qn"].as_str().unwrap_or(""));
    }
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
