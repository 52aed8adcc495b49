//! The daemon in-process: simulated analyzers on pseudo-terminals (the daemon opens the pty's
//! slave path through tokio-serial, as it would `/dev/ttyUSB0`) and a minimal platform on
//! loopback TCP driven by the codec's platform-role session. Every wait is bounded.

use std::collections::HashSet;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::codes::{ExeRtn, QnRtn};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::Message;
use hj212_codec::session::{Config as SessionConfig, Event, Now, Role, Session};
use hj212_codec::time::DateTime;
use hj212_codec::{DecodeOptions, Decoded, Packet, Split, Splitter};
use hj212_gateway::{Options, ScaledClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod common;
use common::{MN, PW, analyzer_on_pty, config, temp_dir};

// ----- The simulated analyzer on a pty -----

// ----- The platform -----

#[derive(Debug, Clone)]
struct Upload {
    cn: u16,
    qn: Option<String>,
    packet: OwnedPacket,
    /// The QN of our request this replies to.
    request: Option<String>,
}

#[derive(Debug)]
enum Seen {
    Upload(Upload),
    Completed { qn: String, exe_rtn: ExeRtn },
    Refused { qn: String, qn_rtn: QnRtn },
}

struct PlatformHandle {
    seen: mpsc::UnboundedReceiver<Seen>,
    requests: mpsc::UnboundedSender<(Message, oneshot::Sender<String>)>,
    stop: CancellationToken,
}

impl Drop for PlatformHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PlatformHandle {
    /// The next upload that satisfies `pred`, within `limit`.
    async fn upload(&mut self, limit: Duration, mut pred: impl FnMut(&Upload) -> bool) -> Upload {
        tokio::time::timeout(limit, async {
            loop {
                match self.seen.recv().await {
                    Some(Seen::Upload(u)) if pred(&u) => return u,
                    Some(_) => {}
                    None => panic!("platform stopped"),
                }
            }
        })
        .await
        .expect("timed out waiting for an upload")
    }

    async fn request(&self, m: Message) -> String {
        let (tx, rx) = oneshot::channel();
        self.requests.send((m, tx)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx).await.expect("request not sent").unwrap()
    }
}

fn now(start: tokio::time::Instant) -> Now {
    let wall = DateTime::from_millis(1_767_225_600_000).unwrap();
    Now::new(u64::try_from(start.elapsed().as_millis()).unwrap(), wall)
}

/// A platform on `listener`: acks every upload that asks for it, reports what it sees.
fn platform(listener: TcpListener) -> PlatformHandle {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (requests, mut req_rx) = mpsc::unbounded_channel::<(Message, oneshot::Sender<String>)>();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut sock, _)) = accepted else { return };
        drop(listener);
        let start = tokio::time::Instant::now();
        let mut session = Session::new(SessionConfig::new(Role::Platform, MN, PW, "32"));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(frame) = session.poll_transmit() {
                if sock.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let mut progressed = false;
            while let Some(ev) = session.poll_event() {
                progressed = true;
                match ev {
                    Event::Upload { token: t, qn, packet, needs_ack, request } => {
                        let cn = packet.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0);
                        let _ = seen_tx.send(Seen::Upload(Upload { cn, qn, packet, request }));
                        if needs_ack {
                            session.ack(now(start), t).unwrap();
                        }
                    }
                    Event::Completed { qn, exe_rtn } => {
                        let _ = seen_tx.send(Seen::Completed { qn, exe_rtn });
                    }
                    Event::Refused { qn, qn_rtn } => {
                        let _ = seen_tx.send(Seen::Refused { qn, qn_rtn });
                    }
                    _ => {}
                }
            }
            if progressed {
                continue;
            }
            let wake = session.poll_timeout().map(|ms| start + Duration::from_millis(ms));
            tokio::select! {
                () = token.cancelled() => return,
                r = sock.read(&mut chunk) => {
                    let Ok(n) = r else { return };
                    if n == 0 { return; }
                    buf.extend_from_slice(&chunk[..n]);
                    for frame in common::take_frames(&mut buf) {
                        let Split::Frame(f) = Splitter::default().split(&frame, true) else { continue };
                        if let Ok(p) = Decoded::new(f, DecodeOptions::LENIENT).verdict() {
                            session.handle_packet(now(start), &p);
                        }
                    }
                }
                Some((m, reply)) = req_rx.recv() => {
                    let qn = session.submit(now(start), m, true).unwrap();
                    let _ = reply.send(qn);
                }
                () = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                    session.handle_timeout(now(start));
                }
            }
        }
    });
    PlatformHandle { seen, requests, stop }
}

// ----- Helpers -----

fn data(u: &Upload) -> Option<(DateTime, Vec<hj212_codec::message::DataItem>)> {
    let text = u.packet.data_segment();
    let p = Packet::parse(text.as_bytes()).ok()?;
    match Message::from_packet(&p).ok()? {
        Message::Data { data_time, items, .. } => Some((data_time, items)),
        _ => None,
    }
}

const ORIGIN: DateTime = DateTime { year: 2026, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };

// ----- Tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_flags_statistics_history_and_dynamic_control() {
    let dir = temp_dir("values");
    let sim = common::cod_simulator();
    let pty = analyzer_on_pty(sim.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut platform = platform(listener);
    let cfg = config(&dir, &pty.path, addr);
    let shutdown = CancellationToken::new();
    // 1800× real time: a poll cycle of 100 ms covers three minutes of data, an hour takes 2 s.
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1800));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let long = Duration::from_secs(15);

    // Real-time data: the value with flag N.
    let rt = platform.upload(long, |u| u.cn == 2011).await;
    let (_, items) = data(&rt).unwrap();
    let cod = items.iter().find(|i| i.code == "w01018").expect("w01018 in 2011");
    assert_eq!(cod.number("Rtd"), Some(42.5), "{items:?}");
    assert_eq!(cod.get("Flag"), Some("N"));

    // Minute statistics: Min/Avg/Max of a constant value, flag N.
    let m = platform.upload(long, |u| u.cn == 2051).await;
    let (_, items) = data(&m).unwrap();
    let cod = items.iter().find(|i| i.code == "w01018").unwrap();
    for k in ["Min", "Avg", "Max"] {
        assert_eq!(cod.number(k), Some(42.5), "{k} in {items:?}");
    }
    assert_eq!(cod.get("Flag"), Some("N"));

    // Maintenance on the analyzer: flag M on the next real-time data.
    sim.lock().unwrap().set(&Target::Status, Value::Code(10));
    let rt =
        platform.upload(long, |u| u.cn == 2011 && data(u).is_some_and(|(_, i)| i[0].get("Flag") == Some("M"))).await;
    assert!(data(&rt).is_some());
    sim.lock().unwrap().set(&Target::Status, Value::Code(1));

    // A slope change becomes a 3020 within one poll cycle (plus delivery).
    let t0 = tokio::time::Instant::now();
    sim.lock().unwrap().set(&Target::Info(Code::new("i13008")), Value::Number(1.25));
    let info = platform.upload(long, |u| u.cn == 3020 && u.packet.cp_get("i13008-Info") == Some("1.25")).await;
    assert!(t0.elapsed() < Duration::from_millis(100 * 2 + 500), "3020 took {:?}", t0.elapsed());
    assert_eq!(info.packet.cp_get("PolId"), Some("w01018"));

    // Two hourly records, then ask for them again.
    let mut hours = Vec::new();
    while hours.len() < 2 {
        let h = platform.upload(long, |u| u.cn == 2061 && u.request.is_none()).await;
        hours.push(data(&h).unwrap().0);
    }
    let req = platform
        .request(Message::HistoryRequest { cn: hj212_codec::Command::HourlyData, begin: hours[0], end: hours[1] })
        .await;
    let mut replied = Vec::new();
    let completed = tokio::time::timeout(long, async {
        loop {
            match platform.seen.recv().await.unwrap() {
                Seen::Upload(u) if u.request.as_deref() == Some(req.as_str()) => {
                    assert_eq!(u.cn, 2061);
                    replied.push(data(&u).unwrap().0);
                }
                Seen::Completed { qn, exe_rtn } if qn == req => return exe_rtn,
                _ => {}
            }
        }
    })
    .await
    .expect("history request not completed");
    assert_eq!(completed, ExeRtn::Success);
    assert_eq!(replied, hours);

    // Intervals are answered; commands without support are refused with QnRtn=8.
    let req = platform.request(Message::GetRtdInterval).await;
    let reply = platform.upload(long, |u| u.request.as_deref() == Some(req.as_str())).await;
    assert_eq!(reply.packet.cp_get("RtdInterval"), Some("1"));
    let req = platform.request(Message::GetSamplingPeriod { pol_id: "w01018".into() }).await;
    let refused = tokio::time::timeout(long, async {
        loop {
            if let Seen::Refused { qn, qn_rtn } = platform.seen.recv().await.unwrap() {
                if qn == req {
                    return qn_rtn;
                }
            }
        }
    })
    .await
    .expect("no refusal");
    assert_eq!(refused, QnRtn::BadCn);

    // The packet log has frames both ways, passwords masked.
    let log = std::fs::read_to_string(dir.join("packets.log")).unwrap();
    assert!(log.contains(" out ") && log.contains(" in "));
    assert!(!log.contains(&format!("PW={PW}")));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

fn qn_of(frame: &[u8]) -> String {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { panic!("stored frame") };
    Packet::parse(f.data()).unwrap().qn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_platform_that_comes_back_gets_every_queued_record_in_order() {
    let dir = temp_dir("outage");
    let sim = common::cod_simulator();
    let pty = analyzer_on_pty(sim);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut platform1 = platform(listener);
    let mut cfg = config(&dir, &pty.path, addr);
    cfg.acquisition.poll_interval_ms = 200;
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let store = gw.store();
    let long = Duration::from_secs(15);

    platform1.upload(long, |u| u.cn == 2011).await;
    drop(platform1);

    // Records pile up while the platform is away.
    tokio::time::timeout(long, async {
        while store.queue_len("p") < 6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("records did not queue up");
    let queued: Vec<String> = store.queue_range("p", 0, 10_000).unwrap().iter().map(|(_, r)| qn_of(&r.frame)).collect();
    assert!(queued.len() >= 6);

    // The platform comes back on the same address.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut platform2 = platform(listener);
    let mut wanted: HashSet<&String> = queued.iter().collect();
    let mut order = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !wanted.is_empty() {
            let u = platform2.upload(long, |_| true).await;
            if let Some(qn) = u.qn {
                if wanted.remove(&qn) {
                    order.push(qn);
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("missing after reconnect: {wanted:?}"));
    assert_eq!(order, queued, "backlog replayed out of order");

    // Acknowledged records leave the queue.
    tokio::time::timeout(long, async {
        while store.queue_len("p") > 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("queue did not drain");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

fn nh3n_simulator() -> Arc<Mutex<Simulator>> {
    let mut sim = Simulator::new(&firmware::profile::builtin::SURFACE_WATER_NH3N);
    sim.set(&Target::Pollutant(Code::new("w21003")), Value::Number(1.5));
    sim.set(&Target::Status, Value::Code(1));
    Arc::new(Mutex::new(sim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_port_is_retried_while_the_other_port_keeps_working() {
    let dir = temp_dir("ports");
    let cod = analyzer_on_pty(common::cod_simulator());
    let nh3n = analyzer_on_pty(nh3n_simulator());
    // Port A is a link that does not exist yet, as an unplugged USB adapter.
    let link = dir.join("ttyA");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut platform = platform(listener);
    let mut cfg = config(&dir, &link, addr);
    let mut port_b = cfg.serial[0].clone();
    port_b.device = nh3n.path.clone();
    port_b.analyzer[0].profile = Some("surface-water-nh3n".into());
    port_b.analyzer[0].unit = Some(2);
    cfg.serial.push(port_b);
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let long = Duration::from_secs(15);
    let has = |u: &Upload, code: &str| data(u).is_some_and(|(_, items)| items.iter().any(|i| i.code == code));

    // Port B works while port A is missing.
    let u = platform.upload(long, |u| u.cn == 2011 && has(u, "w21003")).await;
    assert!(!has(&u, "w01018"));

    // Port A appears: it is opened on a later retry and its analyzer's values follow.
    std::os::unix::fs::symlink(&cod.path, &link).unwrap();
    platform.upload(long, |u| u.cn == 2011 && has(u, "w01018") && has(u, "w21003")).await;
    assert!(gw.metrics().port_failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

fn hj212_cli(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hj212"))
        .args(args)
        .env("HJ212_COLOR", "never")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "hj212 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn cod_flag(u: &Upload) -> Option<String> {
    data(u).and_then(|(_, items)| {
        items.iter().find(|i| i.code == "w01018").and_then(|i| i.get("Flag").map(str::to_string))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_from_the_cli_flags_data_m_and_uploads_the_logs() {
    let dir = temp_dir("maintenance");
    let pty = analyzer_on_pty(common::cod_simulator());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut platform = platform(listener);
    let cfg = config(&dir, &pty.path, addr);
    let store_path = cfg.store.path.clone();
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let long = Duration::from_secs(15);
    let store = store_path.to_str().unwrap();

    let rt = platform.upload(long, |u| u.cn == 2011).await;
    assert_eq!(cod_flag(&rt).as_deref(), Some("N"));

    // Start, while the daemon holds the store: within a poll cycle (100 ms) plus delivery, a 3020
    // without PolId carries the log and the maintainer user state.
    hj212_cli(&["maintenance", "start", "--store", store, "--operator", "Op A", "--reason", "更换试剂"]);
    let t0 = tokio::time::Instant::now();
    let info = platform.upload(long, |u| u.cn == 3020 && u.packet.cp_get("i21001-Info").is_some()).await;
    assert!(t0.elapsed() < Duration::from_millis(100 * 2 + 800), "3020 took {:?}", t0.elapsed());
    let log = info.packet.cp_get("i21001-Info").unwrap().to_string();
    assert!(log.starts_with("//maintenance start ") && log.ends_with("//"), "{log}");
    assert!(log.contains("Op A: 更换试剂") && log.len() < 890, "{log}");
    assert_eq!(info.packet.cp_get("i22002-Info"), Some("2"));
    assert_eq!(info.packet.cp_get("PolId"), None);
    let rt = platform.upload(long, |u| u.cn == 2011).await;
    assert_eq!(cod_flag(&rt).as_deref(), Some("M"));

    // Stop: the log with the summary, the user state back to ordinary, flags back to N.
    hj212_cli(&["maintenance", "stop", "--store", store, "--summary", "reagent replaced"]);
    let info = platform.upload(long, |u| u.cn == 3020 && u.packet.cp_get("i21001-Info").is_some()).await;
    let log = info.packet.cp_get("i21001-Info").unwrap().to_string();
    assert!(log.starts_with("//maintenance stop ") && log.contains("reagent replaced"), "{log}");
    assert_eq!(info.packet.cp_get("i22002-Info"), Some("0"));
    let rt = platform.upload(long, |u| u.cn == 2011).await;
    assert_eq!(cod_flag(&rt).as_deref(), Some("N"));

    // The store keeps the history.
    let s = gw.store();
    assert_eq!(s.meta("maintenance/open").as_deref(), Some(""));
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("maintenance.json")).unwrap()).unwrap();
    let start = file["start_ms"].as_i64().unwrap();
    let kept: serde_json::Value =
        serde_json::from_str(&s.meta(&format!("maintenance/log/{start:020}")).unwrap()).unwrap();
    assert_eq!(kept["summary"], "reagent replaced");
    assert_eq!(kept["operator"], "Op A");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}
