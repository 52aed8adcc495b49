//! Integration tests against a real Mosquitto broker, started by each test on free loopback
//! ports with a generated configuration (no persistence): plain and anonymous, with a password
//! file, and with TLS listeners whose certificates the tests generate (rcgen).
//!
//! When `mosquitto` (or `mosquitto_passwd`, for the password-file tests) is not on `PATH`, the
//! tests print a skip notice and pass, unless `CI=true`, where they fail: CI must run them.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hj212_ingest::Event;
use hj212_ingest::config::MqttTls;
use tokio::io::AsyncBufReadExt as _;
use tokio::time::timeout;

struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
    listeners: String,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The program `name` from `PATH`, or `None` (after a notice) when it is not installed outside CI.
fn required(name: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{name} is not on PATH, and CI=true requires the Mosquitto integration tests to run: install the `mosquitto` package"
            );
        }
        eprintln!("SKIPPED: {name} is not on PATH (install mosquitto to run the Mosquitto integration tests)");
    }
    found
}

impl Mosquitto {
    /// Starts an anonymous Mosquitto on `port`, or returns `None` (after a notice) when it is not
    /// installed outside CI.
    async fn start(port: u16, dir: &Path) -> Option<Self> {
        Self::start_with(&[port], dir, &format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).await
    }

    /// Starts Mosquitto with `listeners` (configuration lines, `per_listener_settings` on) and
    /// waits until every one of `ports` accepts TCP connections; `port` is the first.
    /// A plain anonymous listener (for the test's subscriber, `port`) and a second one on a
    /// free port configured by `secured` (the lines after its `listener`); returns the broker and
    /// the second port.
    async fn start_secured(dir: &Path, secured: &str) -> Option<(Self, u16)> {
        let (plain, port) = (free_port(), free_port());
        let listeners =
            format!("listener {plain} 127.0.0.1\nallow_anonymous true\nlistener {port} 127.0.0.1\n{secured}");
        Some((Self::start_with(&[plain, port], dir, &listeners).await?, port))
    }

    async fn start_with(ports: &[u16], dir: &Path, listeners: &str) -> Option<Self> {
        let bin = required("mosquitto")?;
        let port = ports[0];
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("per_listener_settings true\npersistence false\nmax_queued_messages 100000\n{listeners}"),
        )
        .unwrap();
        let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        for &p in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", p)).await.is_err() {
                assert!(tokio::time::Instant::now() < deadline, "mosquitto did not start on port {p}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Some(Self { child, port, dir: dir.to_path_buf(), listeners: listeners.to_string() })
    }

    /// Kills the broker (SIGKILL) and waits for it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        let mut again = Self::start_with(&[self.port], &self.dir, &self.listeners).await.unwrap();
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

/// A Mosquitto, a proxy in front of it and a daemon that reaches the broker through the proxy
/// (configured further by `edit`); the proxy keeps the daemon away from a restarted broker until
/// the test's new subscriber is in.
async fn behind_proxy(dir: &Path, edit: impl FnOnce(&mut hj212_ingest::Config)) -> Option<(Mosquitto, Proxy, Daemon)> {
    let broker = Mosquitto::start(free_port(), dir).await?;
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", broker.port).parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let d = Daemon::start(|c| {
        external(c, proxy.addr.port());
        edit(c);
    })
    .await;
    Some((broker, proxy, d))
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
    let Some((mut broker, proxy, d)) = behind_proxy(&dir, |c| c.registry.push(entry(MN2, PW))).await else { return };
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

/// Sixteen sites over a pool of four broker connections, through a broker restart: every frame
/// arrives, each site's frames in the order sent, and every connection comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_connections_keeps_each_sites_order_through_a_broker_restart() {
    const SITES: usize = 16;
    const CONNECTIONS: u64 = 4;
    let mns: Vec<String> = (0..SITES).map(|i| format!("010000A8900016F0001{i:05}")).collect();
    let dir = temp_dir();
    let Some((mut broker, proxy, d)) = behind_proxy(&dir, |c| {
        c.mqtt.connections = CONNECTIONS as usize;
        c.registry.extend(mns.iter().map(|mn| entry(mn, PW)));
    })
    .await
    else {
        return;
    };
    until("every connection up", WAIT, || d.counter("mqtt_connections_up") == CONNECTIONS).await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let mut daus = Vec::new();
    for _ in &mns {
        daus.push(Dau::connect(d.addr()).await);
    }
    let qn = |i: usize| format!("2024010203070{i:04}");
    let send = async |range: std::ops::Range<usize>, daus: &mut Vec<Dau>| {
        for i in range {
            for (dau, mn) in daus.iter_mut().zip(&mns) {
                dau.send(&upload_from(mn, &qn(i), 2011, true, PW)).await;
            }
        }
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    send(0..5, &mut daus).await;
    while seen.len() < 5 * SITES {
        let (_, v) = sub.next().await;
        seen.push((v["mn"].as_str().unwrap().into(), v["qn"].as_str().unwrap().into()));
    }

    proxy.set_gate(false);
    broker.kill();
    proxy.cut_all();
    send(5..10, &mut daus).await;
    until("every connection to notice the outage", WAIT, || d.counter("mqtt_connections_up") == 0).await;
    broker.restart().await;
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    proxy.set_gate(true);
    send(10..15, &mut daus).await;

    let expected: Vec<String> = (0..15).map(qn).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while mns.iter().any(|mn| firsts(&seen, mn).len() < expected.len()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((_, v)) = sub.next_within(left).await else {
            let counts: Vec<usize> = mns.iter().map(|mn| firsts(&seen, mn).len()).collect();
            panic!("lost messages, per site: {counts:?}");
        };
        seen.push((v["mn"].as_str().unwrap().into(), v["qn"].as_str().unwrap().into()));
    }
    for mn in &mns {
        assert_eq!(firsts(&seen, mn), expected, "order of site {mn}");
    }
    for (dau, mn) in daus.iter_mut().zip(&mns) {
        let mut answered = HashSet::new();
        while answered.len() < expected.len() {
            let a = timeout(Duration::from_secs(20), dau.frame()).await.unwrap_or_else(|_| panic!("9014s for {mn}"));
            answered.insert(a.field("QN").unwrap().to_string());
        }
    }
    until("every connection back", WAIT, || d.counter("mqtt_connections_up") == CONNECTIONS).await;
    assert_eq!(d.counter("mqtt_connected"), 1);
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// The daemon (a child process) is killed with SIGKILL while a site streams frames; a new daemon
/// on the same spool then delivers every frame that had been acknowledged to the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_and_restarted_delivers_every_acknowledged_frame() {
    // Only a 9014 acknowledges an upload. The platform also sends requests of its own (the
    // data-quality engine asks for missing hours with 2061 under its own QN); counting those
    // as acknowledgements made this test report a lost frame that was never sent.
    fn note_ack(acked: &mut Vec<String>, frame: &hj212_codec::encode::OwnedPacket) {
        if frame.field("CN") == Some("9014") {
            acked.push(frame.field("QN").expect("a 9014 without QN").to_string());
        }
    }
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
            note_ack(&mut acked, &a);
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
        note_ack(&mut acked, &a);
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

// Authentication and TLS. Each broker has a plain anonymous listener for the test's subscriber
// and one or more secured listeners for the daemon; messages cross listeners inside Mosquitto.

const USER: &str = "ingest";
const PASS: &str = "s3cret-pass";

/// `{dir}/passwd` with one user, written by `mosquitto_passwd` (hashed as Mosquitto expects).
fn password_file(dir: &Path, user: &str, pass: &str) -> Option<PathBuf> {
    let tool = required("mosquitto_passwd")?;
    let file = dir.join("passwd");
    let status = Command::new(tool).arg("-b").arg("-c").arg(&file).arg(user).arg(pass).status().unwrap();
    assert!(status.success(), "mosquitto_passwd failed: {status}");
    // Mosquitto started as root reads it after dropping to its own user; newer mosquitto_passwd
    // versions create the file 0600.
    let readable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
    std::fs::set_permissions(&file, readable).unwrap();
    Some(file)
}

/// A test certificate authority (rcgen), with its certificate as PEM.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { pem, issuer: Issuer::new(params, key) }
    }

    /// Writes the CA certificate to `{dir}/{name}.pem`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Issues a certificate for `names` (DNS names or IP addresses) and writes it and its key to
    /// `{dir}/{file}.pem` and `{dir}/{file}.key`.
    fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut params = CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// The lines of a TLS listener with the test CA and the server's certificate, then `extra`.
fn tls_listener(ca_file: &Path, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n{extra}",
        ca_file.display(),
        cert.display(),
        key.display()
    )
}

fn tls_to(ca_file: &Path) -> MqttTls {
    MqttTls { enabled: true, ca_file: ca_file.to_path_buf(), ..MqttTls::default() }
}

/// One upload with A=1 goes in over TCP; its JSON comes out on the broker and its 9014 comes back.
async fn round_trip(d: &Daemon, sub: &mut Subscriber, qn: &str) {
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload(qn, 2011, true, PW)).await;
    let (topic, v) = sub.next().await;
    assert_eq!(topic, format!("hj212/{MN}/2011"));
    assert_eq!(v["qn"], qn);
    assert_eq!(v["items"][0]["code"], "w01018");
    let answer = dau.frame().await;
    assert_eq!(answer.field("CN"), Some("9014"));
    assert_eq!(answer.field("QN"), Some(qn));
    assert!(d.handle().mqtt_connected());
}

/// The daemon as a child process (`hj212-ingest run`, JSON logs on stderr, collected), for the
/// tests that read its logs and its HTTP endpoint.
struct IngestProcess {
    child: tokio::process::Child,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    listen: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
}

impl IngestProcess {
    /// Runs the daemon with `mqtt` (TOML: `[mqtt]` and its sub-tables) and no spool, so that
    /// `/healthz` follows the broker connection.
    async fn spawn(dir: &Path, mqtt: &str) -> Self {
        let (listen, metrics) = (free_port(), free_port());
        let file = dir.join("ingest.toml");
        std::fs::write(
            &file,
            format!(
                "shutdown_timeout_secs = 2\n[[listeners]]\naddr = \"127.0.0.1:{listen}\"\n\
                 [limits]\nack_timeout_secs = 2\nmax_frames_per_minute_per_mn = 0\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[spool]\npath = \"\"\n[packet_log]\npath = \"\"\n\
                 [quality]\nstate_path = \"\"\n[keys]\nstate_path = \"\"\n[registration]\nstate_path = \"\"\n\
                 {mqtt}\n[[registry]]\nmn = \"{MN}\"\npassword = \"{PW}\"\nallowed_st = [\"32\"]\n"
            ),
        )
        .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hj212-ingest"))
            .arg("--config")
            .arg(&file)
            .arg("--log-format")
            .arg("json")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                sink.lock().unwrap().push(v);
            }
        });
        let listen: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the daemon did not start: {:?}", logs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, logs, listen, metrics: format!("127.0.0.1:{metrics}").parse().unwrap() }
    }

    /// Log records at `level` with this message.
    fn logged(&self, level: &str, message: &str) -> Vec<serde_json::Value> {
        let logs = self.logs.lock().unwrap();
        logs.iter().filter(|v| v["level"] == level && v["fields"]["message"] == message).cloned().collect()
    }

    fn all_logs(&self) -> String {
        self.logs.lock().unwrap().iter().map(|v| format!("{v}\n")).collect()
    }

    /// The broker cannot be reached: the daemon says why once, stays up, reports the broker down,
    /// publishes nothing and answers nothing; returns the error record.
    async fn assert_broker_refused(mut self, sub: &mut Subscriber, secret: &str) -> serde_json::Value {
        const CANNOT: &str = "Cannot connect to the MQTT broker.";
        until("the connection error in the log", WAIT, || !self.logged("ERROR", CANNOT).is_empty()).await;
        let mut dau =
            Dau { stream: tokio::net::TcpStream::connect(self.listen).await.unwrap(), deframer: Default::default() };
        dau.send(&upload("20240102030800001", 2011, true, PW)).await;
        // Longer than limits.ack_timeout_secs, and several reconnection attempts.
        assert!(dau.frame_within(Duration::from_secs(4)).await.is_none(), "a 9014 without a broker");
        sub.nothing().await;

        let (_, metrics) = http_get(self.metrics, "/metrics").await;
        assert!(metrics.lines().any(|l| l == "hj212_ingest_mqtt_connected 0"), "{metrics}");
        let errors = metrics.lines().find_map(|l| l.strip_prefix("hj212_ingest_mqtt_errors_total "));
        assert!(errors.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 2), "{metrics}");
        assert_eq!(http_get(self.metrics, "/healthz").await.0, 503);
        assert!(self.child.try_wait().unwrap().is_none(), "the daemon exited:\n{}", self.all_logs());

        let errors = self.logged("ERROR", CANNOT);
        assert_eq!(errors.len(), 1, "the same failure is logged once, not on every retry:\n{}", self.all_logs());
        assert!(!self.all_logs().contains(secret), "a secret in the log:\n{}", self.all_logs());
        let _ = self.child.start_kill();
        let _ = timeout(WAIT, self.child.wait()).await;
        eprintln!("the daemon logged: {}", errors[0]);
        errors[0].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_password_file_right_credentials_publish_and_ack() {
    let dir = temp_dir();
    let Some(passwd) = password_file(&dir, USER, PASS) else { return };
    let Some((broker, secured)) =
        Mosquitto::start_secured(&dir, &format!("allow_anonymous false\npassword_file {}\n", passwd.display())).await
    else {
        return;
    };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let d = Daemon::start(|c| {
        external(c, secured);
        c.mqtt.username = Some(USER.into());
        c.mqtt.password = Some(PASS.into());
    })
    .await;
    round_trip(&d, &mut sub, "20240102030800000").await;
    assert_eq!(d.counter("mqtt_errors"), 0);
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_password_file_wrong_credentials_publish_nothing_and_report_the_broker_down() {
    let dir = temp_dir();
    let Some(passwd) = password_file(&dir, USER, PASS) else { return };
    let Some((broker, secured)) =
        Mosquitto::start_secured(&dir, &format!("allow_anonymous false\npassword_file {}\n", passwd.display())).await
    else {
        return;
    };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let ingest = IngestProcess::spawn(
        &dir,
        &format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {secured}\nusername = \"{USER}\"\npassword = \"wrong-pass\"\n"),
    )
    .await;
    let error = ingest.assert_broker_refused(&mut sub, "wrong-pass").await;
    let text = error["fields"]["error"].as_str().unwrap_or_default();
    assert!(text.contains("refused"), "{error}");
    assert!(error["fields"]["hint"].as_str().is_some_and(|h| h.contains("mqtt.password")), "{error}");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tls_with_the_test_ca_publishes_and_acks() {
    use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let dir = temp_dir();
    let ca = TestCa::new("hj212 test CA");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = ca.issue(&dir, "server", &["localhost", "127.0.0.1"], ServerAuth);
    let Some((broker, tls)) = Mosquitto::start_secured(&dir, &tls_listener(&ca_file, &cert, &key, "")).await else {
        return;
    };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    // Checked against the IP address the daemon dials, then against `localhost` by name.
    for (i, host) in ["127.0.0.1", "localhost"].into_iter().enumerate() {
        let d = Daemon::start(|c| {
            external(c, tls);
            c.mqtt.host = Some(host.into());
            c.mqtt.tls = tls_to(&ca_file);
        })
        .await;
        round_trip(&d, &mut sub, &format!("2024010203090000{i}")).await;
        d.stop().await;
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tls_with_a_foreign_ca_publishes_nothing_and_says_why() {
    use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let dir = temp_dir();
    let ca = TestCa::new("hj212 test CA");
    let ca_file = ca.write(&dir, "ca");
    let foreign = TestCa::new("someone else's CA").write(&dir, "foreign-ca");
    let (cert, key) = ca.issue(&dir, "server", &["127.0.0.1"], ServerAuth);
    let Some((broker, tls)) = Mosquitto::start_secured(&dir, &tls_listener(&ca_file, &cert, &key, "")).await else {
        return;
    };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let ingest = IngestProcess::spawn(
        &dir,
        &format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {tls}\n[mqtt.tls]\nenabled = true\nca_file = \"{}\"\n",
            foreign.display()
        ),
    )
    .await;
    let error = ingest.assert_broker_refused(&mut sub, "-----BEGIN").await;
    let text = error["fields"]["error"].as_str().unwrap_or_default();
    assert!(text.contains("invalid peer certificate") && text.contains("UnknownIssuer"), "{error}");
    assert!(error["fields"]["hint"].as_str().is_some_and(|h| h.contains("mqtt.tls")), "{error}");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// Mutual TLS, to a broker whose certificate names only `broker.test` (reached by IP, so
/// `server_name` says which name to check): with the client certificate the daemon delivers;
/// without it the broker refuses the handshake and nothing is published or answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_mutual_tls_needs_the_client_certificate() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let dir = temp_dir();
    let ca = TestCa::new("hj212 test CA");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = ca.issue(&dir, "server", &["broker.test"], ServerAuth);
    let (client_cert, client_key) = ca.issue(&dir, "client", &["hj212-ingest"], ClientAuth);
    let Some((broker, mtls)) =
        Mosquitto::start_secured(&dir, &tls_listener(&ca_file, &cert, &key, "require_certificate true\n")).await
    else {
        return;
    };
    let mut sub = Subscriber::connect(("127.0.0.1", broker.port)).await;
    let mutual =
        MqttTls { cert_file: client_cert, key_file: client_key, server_name: "broker.test".into(), ..tls_to(&ca_file) };

    let d = Daemon::start(|c| {
        external(c, mtls);
        c.mqtt.tls = mutual.clone();
    })
    .await;
    round_trip(&d, &mut sub, "20240102031000001").await;
    d.stop().await;

    let d = Daemon::start(|c| {
        external(c, mtls);
        c.mqtt.tls = MqttTls { cert_file: PathBuf::new(), key_file: PathBuf::new(), ..mutual.clone() };
    })
    .await;
    until("a refused handshake", WAIT, || d.counter("mqtt_errors") >= 1).await;
    // A=0, so the frame waits in the spool and the daemon can still stop in time.
    let mut dau = Dau::connect(d.addr()).await;
    dau.send(&upload("20240102031000002", 2011, false, PW)).await;
    until("the frame in the spool", WAIT, || d.counter("spool_written") >= 1).await;
    sub.nothing().await;
    assert!(!d.handle().mqtt_connected());
    assert_eq!(d.counter("mqtt_acked"), 0);
    d.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
