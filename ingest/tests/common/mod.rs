//! Helpers shared by the integration tests: an in-process daemon, a DAU over real TCP, an MQTT
//! subscriber, a TCP proxy that can lose broker replies, and frame builders. Every wait is bounded.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::frame::{Deframer, Event as FrameEvent};
use hj212_codec::packet::{Flag, Version};
use hj212_codec::{DecodeOptions, Decoded};
use hj212_ingest::config::{Listener, RegistryEntry};
use hj212_ingest::{Config, Handle};
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub const MN: &str = "010000A8900016F000169DC0";
pub const PW: &str = "123456";
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(800);

pub static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hj212-ingest-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn entry(mn: &str, pw: &str) -> RegistryEntry {
    RegistryEntry {
        mn: mn.into(),
        password: pw.into(),
        allowed_st: vec!["32".into()],
        code_table: Default::default(),
        crc: "auto".into(),
        ..RegistryEntry::default()
    }
}

/// A free loopback port (bound, read, released: a small race, acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listeners: vec![Listener { addr: "127.0.0.1:0".parse().unwrap(), tcp_nodelay: false }],
        ..Config::default()
    };
    c.mqtt.embedded_port = 0;
    c.packet_log.path = dir.join("packets.log");
    c.spool.path = dir.join("spool");
    c.metrics.listen = "127.0.0.1:0".into();
    c.quality.state_path = dir.join("quality.json");
    c.keys.state_path = dir.join("keys.json");
    c.registration.state_path = dir.join("registration.json");
    c.limits.ack_timeout_secs = 20;
    c.shutdown_timeout_secs = 5;
    c.registry = vec![RegistryEntry {
        mn: MN.into(),
        password: PW.into(),
        allowed_st: vec!["32".into()],
        code_table: Default::default(),
        crc: "auto".into(),
        ..RegistryEntry::default()
    }];
    c
}

pub struct Daemon {
    handle: Option<Handle>,
    token: CancellationToken,
    dir: PathBuf,
}

impl Daemon {
    pub async fn start(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = temp_dir();
        let mut config = test_config(&dir);
        edit(&mut config);
        let token = CancellationToken::new();
        let handle = timeout(WAIT, hj212_ingest::start(config, token.clone()))
            .await
            .expect("start timed out")
            .expect("start failed");
        Self { handle: Some(handle), token, dir }
    }

    pub async fn start_in(dir: PathBuf, edit: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(&dir);
        edit(&mut config);
        let token = CancellationToken::new();
        let handle = timeout(WAIT, hj212_ingest::start(config, token.clone()))
            .await
            .expect("start timed out")
            .expect("start failed");
        Self { handle: Some(handle), token, dir }
    }

    pub fn handle(&self) -> &Handle {
        self.handle.as_ref().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle().listen_addrs()[0]
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.handle().metrics().get(name)
    }

    pub async fn stop(self) {
        let dir = self.stop_keeping_files().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Stops the daemon and returns its directory (packet log and all), which the caller removes.
    pub async fn stop_keeping_files(mut self) -> PathBuf {
        self.token.cancel();
        let handle = self.handle.take().unwrap();
        timeout(WAIT, handle.wait()).await.expect("shutdown hung").expect("shutdown failed");
        self.dir.clone()
    }
}

/// A subscriber to `hj212/#` that forwards data messages (status messages are left out).
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Subscriber {
    pub async fn connect(broker: (&str, u16)) -> Self {
        let id = format!("test-sub-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, broker.0, broker.1);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client.subscribe("hj212/#", QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _client = client;
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Incoming::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                        if p.topic.starts_with("hj212/status/") {
                            continue;
                        }
                        let v: Value = serde_json::from_slice(&p.payload).unwrap();
                        if tx.send((p.topic.clone(), v)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        timeout(WAIT, subscribed_rx).await.expect("no SUBACK").unwrap();
        Self { rx }
    }

    /// The next message whose topic starts with `prefix`; others are skipped.
    pub async fn next_on(&mut self, prefix: &str) -> (String, Value) {
        loop {
            let m = self.next().await;
            if m.0.starts_with(prefix) {
                return m;
            }
        }
    }

    /// The next message, or `None` within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<(String, Value)> {
        timeout(limit, self.rx.recv()).await.ok().flatten()
    }

    pub async fn next(&mut self) -> (String, Value) {
        timeout(WAIT, self.rx.recv()).await.expect("no MQTT message").unwrap()
    }

    pub async fn nothing(&mut self) {
        if let Ok(Some(m)) = timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected MQTT message {m:?}");
        }
    }
}

/// The data acquisition unit's side of a connection.
pub struct Dau {
    pub stream: TcpStream,
    pub deframer: Deframer,
}

impl Dau {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), deframer: Deframer::default() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame from the platform, or `None` if none comes within `limit`.
    pub async fn frame_within(&mut self, limit: Duration) -> Option<OwnedPacket> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut eof = false;
        loop {
            while let Some(ev) = self.deframer.next_event() {
                if let FrameEvent::Frame { frame, .. } = ev {
                    let d = Decoded::new(frame, DecodeOptions::STRICT);
                    let p = d.verdict().expect("the platform sent an invalid frame");
                    return Some(OwnedPacket::from_packet(&p));
                }
            }
            if eof {
                return None;
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) => {
                    self.deframer.finish();
                    eof = true;
                }
                Ok(Ok(n)) => self.deframer.feed(&buf[..n]),
                Ok(Err(_)) => return None,
            }
        }
    }

    pub async fn frame(&mut self) -> OwnedPacket {
        self.frame_within(WAIT).await.expect("no frame from the platform")
    }

    pub async fn nothing(&mut self) {
        if let Some(p) = self.frame_within(QUIET).await {
            panic!("unexpected frame {}", p.data_segment());
        }
    }
}

pub fn upload(qn: &str, cn: u16, ack: bool, pw: &str) -> Vec<u8> {
    upload_from(MN, qn, cn, ack, pw)
}

pub fn upload_from(mn: &str, qn: &str, cn: u16, ack: bool, pw: &str) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "32", cn, pw, mn, Some(Flag::new(Version::V2017, false, ack)));
    p.push_group([("DataTime", "20240102030400")]);
    p.push_group([("w01018-Rtd", "12.5"), ("w01018-Flag", "N")]);
    p.push_group([("w00000-Rtd", "3.25"), ("w00000-Cou", "100"), ("w00000-Flag", "N")]);
    p.push_group([("SB1-RS", "1")]);
    p.to_frame(CrcVariant::Hj212).unwrap()
}

/// A TCP proxy between the daemon and the broker that can swallow the broker's replies and cut
/// every connection, to lose PUBACKs on purpose.
pub struct Proxy {
    pub addr: SocketAddr,
    gate: std::sync::Arc<std::sync::atomic::AtomicBool>,
    blackhole: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blackhole = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let g = gate.clone();
        let cut = std::sync::Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (bh, ct) = (blackhole.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !g.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let token = ct.lock().unwrap().clone();
                let (mut crd, mut cwr) = client.into_split();
                let (mut srd, mut swr) = server.into_split();
                let t = token.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = tokio::select! { () = t.cancelled() => return, r = crd.read(&mut buf) => r };
                        let Ok(n @ 1..) = n else { return };
                        if swr.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let bh = bh.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = tokio::select! { () = token.cancelled() => return, r = srd.read(&mut buf) => r };
                        let Ok(n @ 1..) = n else { return };
                        if bh.load(Ordering::SeqCst) {
                            continue;
                        }
                        if cwr.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, gate, blackhole, cut }
    }

    /// While closed, new connections are dropped at once.
    pub fn set_gate(&self, open: bool) {
        self.gate.store(open, Ordering::SeqCst);
    }

    pub fn swallow_replies(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    pub fn cut_all(&self) {
        let old = std::mem::replace(&mut *self.cut.lock().unwrap(), CancellationToken::new());
        old.cancel();
    }
}

/// Publishes one message at QoS 1 and waits for its PUBACK.
pub async fn mqtt_publish(broker: (&str, u16), topic: &str, payload: &[u8]) {
    let id = format!("test-pub-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, broker.0, broker.1), 16);
    client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).await.unwrap();
    timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Incoming::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("publish failed: {e}"),
            }
        }
    })
    .await
    .expect("no PUBACK for the test publish");
    let _ = client.disconnect().await;
    let _ = timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// A bounded HTTP GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    })
    .await
    .expect("HTTP request timed out")
}

/// Waits (bounded) until `f` is true.
pub async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A site's answer (9011 or 9012) to a platform request.
pub fn site_answer(qn: &str, cn: u16, key: &str, value: &str) -> Vec<u8> {
    let mut p = OwnedPacket::new(Some(qn), "91", cn, PW, MN, Some(Flag::new(Version::V2017, false, false)));
    p.push_group([(key, value)]);
    p.to_frame(CrcVariant::Hj212).unwrap()
}
