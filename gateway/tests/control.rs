//! Control requests (CN 3011–3015) end to end, in-process: simulated analyzers on pseudo-terminals
//! (the daemon opens the pty's slave path through tokio-serial, as in `daemon.rs`), and a platform
//! on loopback TCP driven by the codec's platform-role session, which sends the requests and
//! reports the 9011/9012 answers and the uploads. The assertions look at both ends: what the
//! platform got, and what the simulated analyzer was written and did. Every wait is bounded.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware::modbus::ExceptionCode;
use firmware::profile::{Code, ControlAction, DateTime as PDateTime, Target, Value};
use firmware::sim::{Fault, Simulator};
use hj212_codec::codes::{CalibrationType, Command, ExeRtn, QnRtn};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::Message;
use hj212_codec::session::{Config as SessionConfig, Event, Now, Role, Session};
use hj212_codec::time::DateTime;
use hj212_codec::{DecodeOptions, Decoded, Split, Splitter, Version};
use hj212_gateway::config::{Analyzer, Config};
use hj212_gateway::{Options, ScaledClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod common;
use common::{MN, PW, analyzer_on_pty, temp_dir};

const ORIGIN: DateTime = DateTime { year: 2026, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };
const LONG: Duration = Duration::from_secs(15);

// ----- The platform -----

#[derive(Debug, Clone)]
struct Upload {
    cn: u16,
    packet: OwnedPacket,
    /// The QN of our request this replies to.
    request: Option<String>,
}

#[derive(Debug)]
enum Seen {
    Upload(Upload),
    Accepted { qn: String },
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

/// How a control request ended, as the platform saw it.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `9011 QnRtn=1`, then `9012` with this `ExeRtn`; the replies in between.
    Done { exe_rtn: ExeRtn, replies: Vec<Upload> },
    /// `9011` with this `QnRtn`.
    Refused(QnRtn),
}

impl PartialEq for Upload {
    fn eq(&self, other: &Self) -> bool {
        self.cn == other.cn && self.packet.data_segment() == other.packet.data_segment()
    }
}
impl Eq for Upload {}

impl PlatformHandle {
    /// The next upload (not a reply) that satisfies `pred`, within [`LONG`]; other things seen on
    /// the way are dropped.
    async fn upload(&mut self, mut pred: impl FnMut(&Upload) -> bool) -> Upload {
        tokio::time::timeout(LONG, async {
            loop {
                match self.seen.recv().await {
                    Some(Seen::Upload(u)) if u.request.is_none() && pred(&u) => return u,
                    Some(_) => {}
                    None => panic!("platform stopped"),
                }
            }
        })
        .await
        .expect("timed out waiting for an upload")
    }

    /// Waits until each `(cn, key, value)` of `wanted` was in some upload (`already`, or new ones
    /// within [`LONG`]), in any order.
    async fn expect_all(&mut self, already: &[Upload], wanted: &[(u16, &str, &str)]) {
        fn check(missing: &mut Vec<(u16, &str, &str)>, u: &Upload) {
            missing.retain(|(cn, k, v)| !(u.cn == *cn && u.packet.cp_get(k) == Some(*v)));
        }
        let mut missing: Vec<(u16, &str, &str)> = wanted.to_vec();
        for u in already {
            check(&mut missing, u);
        }
        let waited = tokio::time::timeout(LONG, async {
            while !missing.is_empty() {
                match self.seen.recv().await {
                    Some(Seen::Upload(u)) => check(&mut missing, &u),
                    Some(_) => {}
                    None => panic!("platform stopped"),
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "never uploaded: {missing:?}");
    }

    async fn request(&self, m: Message) -> String {
        let (tx, rx) = oneshot::channel();
        self.requests.send((m, tx)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx).await.expect("request not sent").unwrap()
    }

    /// Sends `m` and waits for the end of its exchange; uploads that are not replies to it are
    /// kept in `others`.
    async fn exchange(&mut self, m: Message, others: &mut Vec<Upload>) -> Outcome {
        let qn = self.request(m).await;
        let mut accepted = false;
        let mut replies = Vec::new();
        tokio::time::timeout(LONG, async {
            loop {
                match self.seen.recv().await.expect("platform stopped") {
                    Seen::Accepted { qn: q } if q == qn => accepted = true,
                    Seen::Refused { qn: q, qn_rtn } if q == qn => {
                        assert!(replies.is_empty());
                        return Outcome::Refused(qn_rtn);
                    }
                    Seen::Completed { qn: q, exe_rtn } if q == qn => {
                        assert!(accepted, "9012 without 9011 QnRtn=1 before it");
                        return Outcome::Done { exe_rtn, replies: std::mem::take(&mut replies) };
                    }
                    Seen::Upload(u) if u.request.as_deref() == Some(qn.as_str()) => {
                        assert!(accepted, "reply before 9011");
                        replies.push(u);
                    }
                    Seen::Upload(u) => others.push(u),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("request {qn} did not end"))
    }
}

fn now(start: tokio::time::Instant) -> Now {
    let wall = DateTime::from_millis(1_767_225_600_000).unwrap();
    Now::new(u64::try_from(start.elapsed().as_millis()).unwrap(), wall)
}

/// A platform of `version` on `listener`: acks every upload that asks for it, reports what it
/// sees, and sends the requests the test gives it.
fn platform(listener: TcpListener, version: Version) -> PlatformHandle {
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
        let mut cfg = SessionConfig::new(Role::Platform, MN, PW, "32");
        cfg.version = version;
        let mut session = Session::new(cfg);
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
                let seen = match ev {
                    Event::Upload { token: t, packet, needs_ack, request, .. } => {
                        if needs_ack {
                            session.ack(now(start), t).unwrap();
                        }
                        let cn = packet.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0);
                        Seen::Upload(Upload { cn, packet, request })
                    }
                    Event::Accepted { qn } => Seen::Accepted { qn },
                    Event::Completed { qn, exe_rtn } => Seen::Completed { qn, exe_rtn },
                    Event::Refused { qn, qn_rtn } => Seen::Refused { qn, qn_rtn },
                    _ => continue,
                };
                let _ = seen_tx.send(seen);
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

fn control(cn: Command, pol_id: &str, calibration_type: Option<CalibrationType>) -> Message {
    Message::AnalyzerControl { cn, pol_id: pol_id.into(), calibration_type }
}

fn done(exe_rtn: ExeRtn) -> Outcome {
    Outcome::Done { exe_rtn, replies: Vec::new() }
}

fn number(sim: &Arc<Mutex<Simulator>>, code: &str) -> f64 {
    sim.lock().unwrap().get(&Target::Info(Code::new(code))).and_then(|v| v.as_f64()).unwrap()
}

fn status(sim: &Arc<Mutex<Simulator>>) -> u32 {
    match sim.lock().unwrap().get(&Target::Status) {
        Some(Value::Code(c)) => c,
        other => panic!("status {other:?}"),
    }
}

fn actions(sim: &Arc<Mutex<Simulator>>) -> Vec<ControlAction> {
    sim.lock().unwrap().accepted().iter().map(|(_, a)| *a).collect()
}

/// Waits until `pred` holds of the simulator (polled every 10 ms, within [`LONG`]).
async fn until(sim: &Arc<Mutex<Simulator>>, what: &str, pred: impl Fn(&Simulator) -> bool) {
    tokio::time::timeout(LONG, async {
        while !pred(&sim.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the simulator never got to: {what}"));
}

/// The flow meter on unit 6: a profile without controls.
fn flow_simulator() -> Arc<Mutex<Simulator>> {
    let mut sim = Simulator::new(&firmware::profile::builtin::FLOW_METER);
    sim.set(&Target::Pollutant(Code::new("w00000")), Value::Number(12.5));
    Arc::new(Mutex::new(sim))
}

// ----- Tests -----

/// The built-in surface-water COD (control register 0x1200) and a flow meter without controls,
/// on two ports, and an HJ 212-2017 platform: 3011 (no `CalibrationType`), 3013 and 3012 are
/// written and carried out, with their status and parameter changes uploaded; 3014, 3011 to the
/// flow meter and 3011 to an unknown `PolId` are refused without a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calibration_sampling_and_cleaning_through_the_control_register_and_refusals() {
    let dir = temp_dir("control-2017");
    let cod = common::cod_simulator();
    let calibrated_at = PDateTime::new(2026, 1, 1, 8, 30, 0).unwrap();
    {
        let mut sim = cod.lock().unwrap();
        // Long enough (a poll every 100 ms) for the calibration to show in a real-time upload.
        sim.control_cycles = 15;
        sim.set_time(calibrated_at);
    }
    let flow = flow_simulator();
    let (cod_pty, flow_pty) = (analyzer_on_pty(cod.clone()), analyzer_on_pty(flow.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = common::config(&dir, &cod_pty.path, listener.local_addr().unwrap());
    let mut port = cfg.serial[0].clone();
    port.device = flow_pty.path.clone();
    port.analyzer[0] = Analyzer {
        name: "flow".into(),
        profile: Some("flow-meter".into()),
        profile_file: None,
        unit: None,
        pol_id: None,
        electricity: None,
    };
    cfg.serial.push(port);
    let mut platform = platform(listener, Version::V2017);
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let metrics = gw.metrics();

    // The first snapshot: measuring (i12001 = 7), slope 1, intercept 0.
    let first = platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i12001-Info").is_some()).await;
    assert_eq!(first.packet.cp_get("i12001-Info"), Some("7"));
    assert_eq!(first.packet.cp_get("i13008-Info"), Some("1"));

    // 3011 without CalibrationType (HJ 212-2017 C.30): the analyzer's zero-and-span calibration,
    // code 19 at 0x1200.
    let mut others = Vec::new();
    let outcome = platform.exchange(control(Command::Calibrate, "w01018", None), &mut others).await;
    assert_eq!(outcome, done(ExeRtn::Success));
    assert_eq!(actions(&cod), [ControlAction::Calibration]);
    // It calibrates: status 8 (the block's first calibration status), i12001 = 3, data flag C.
    // When it is done: measuring again (i12001 = 7), and the new slope, intercept and calibration
    // time come up as CN 3020, the dynamic-control report of a calibration.
    platform
        .expect_all(
            &others,
            &[
                (3020, "i12001-Info", "3"),
                (2011, "w01018-Flag", "C"),
                (3020, "i13008-Info", "1.01"),
                (3020, "i13007-Info", "0.01"),
                (3020, "i13006-Info", "20260101083000"),
                (3020, "i12001-Info", "7"),
            ],
        )
        .await;
    assert!(others.iter().all(|u| u.cn != 3020 || u.packet.cp_get("PolId") == Some("w01018")));
    assert_eq!(status(&cod), 1);
    assert!((number(&cod, "i13008") - 1.01).abs() < 1e-6);

    // 3013 cleaning: code 10, which the block reports as status 10 (initialisation): i12001 = 1
    // and data flag M while it lasts.
    let mut others = Vec::new();
    let outcome = platform.exchange(control(Command::Clean, "w01018", None), &mut others).await;
    assert_eq!(outcome, done(ExeRtn::Success));
    until(&cod, "cleaning", |s| s.running(1).is_some()).await;
    assert_eq!(status(&cod), 10);
    platform.expect_all(&others, &[(3020, "i12001-Info", "1"), (2011, "w01018-Flag", "M")]).await;
    until(&cod, "cleaning done", |s| s.running(1).is_none()).await;

    // 3012 immediate sampling, from idle: measuring (code 1), then idle again with a new
    // measurement, stamped with the analyzer's clock.
    cod.lock().unwrap().set(&Target::Status, Value::Code(0));
    platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i12001-Info") == Some("9")).await;
    let mut others = Vec::new();
    let outcome = platform.exchange(control(Command::SampleNow, "w01018", None), &mut others).await;
    assert_eq!(outcome, done(ExeRtn::Success));
    platform.expect_all(&others, &[(3020, "i12001-Info", "7")]).await;
    platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i12001-Info") == Some("9")).await;
    assert_eq!(cod.lock().unwrap().get(&Target::SampleTime), Some(Value::Time(calibrated_at)));
    // The new result goes up in real time with its SampleTime, whichever poll cycle first read it.
    platform.upload(|u| u.cn == 2011 && u.packet.cp_get("w01018-SampleTime") == Some("20260101083000")).await;
    assert_eq!(actions(&cod), [ControlAction::Calibration, ControlAction::Cleaning, ControlAction::SampleNow]);
    let cod_writes = cod.lock().unwrap().writes();
    assert_eq!(cod_writes, 3);

    // Refusals, with no write to any analyzer: 3011 to the flow meter (no controls), to a PolId
    // no analyzer has, and 3014 to the COD (the block has no comparison sampling).
    let refused = QnRtn::Refused;
    let outcome = platform.exchange(control(Command::Calibrate, "w00000", None), &mut Vec::new()).await;
    assert_eq!(outcome, Outcome::Refused(refused));
    let outcome = platform.exchange(control(Command::Calibrate, "w99999", None), &mut Vec::new()).await;
    assert_eq!(outcome, Outcome::Refused(refused));
    let outcome = platform.exchange(control(Command::ComparisonSampling, "w01018", None), &mut Vec::new()).await;
    assert_eq!(outcome, Outcome::Refused(refused));
    // 3015 names no analyzer and none here can retain a sample.
    let outcome = platform.exchange(Message::OverLimitSampling, &mut Vec::new()).await;
    assert_eq!(outcome, Outcome::Refused(refused));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(flow.lock().unwrap().writes(), 0, "a write reached the flow meter");
    assert_eq!(cod.lock().unwrap().writes(), cod_writes, "a refused request reached the COD");
    assert_eq!(metrics.control_refused_no_control.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.control_refused_unknown_analyzer.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.control_ok.load(Ordering::Relaxed), 3);
    let text = metrics.render(gw.store().as_ref(), &["p".into()]);
    assert!(text.contains("hj212_gateway_control_refused_total{reason=\"no_control\"} 3"), "{text}");
    assert!(text.contains("hj212_gateway_control_refused_total{reason=\"unknown_analyzer\"} 1"), "{text}");
    assert!(text.contains("hj212_gateway_controls_total{result=\"success\"} 3"), "{text}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TP analyzer with a sampler (`i43006` and a retention coil), from a profile file.
const TP_SAMPLER: &str = r#"
name = "tp-with-sampler"
status_map = [
    { raw = 0, mode = "idle" },
    { raw = 1, mode = "measuring" },
    { raw = 8, mode = "calibration" },
    { raw = 9, mode = "calibration" },
]
points = [
    { unit = 3, function = "read_holding_registers", address = 0x1005, value = "time_bcd6", target = "sample_time" },
    { unit = 3, function = "read_holding_registers", address = 0x1008, value = "f32", order = "CDAB", target = { pollutant = "w21011" } },
    { unit = 3, function = "read_holding_registers", address = 0x1083, value = "u16", target = "status" },
    { unit = 3, function = "read_holding_registers", address = 0x10A7, value = "f32", order = "CDAB", target = { info = "i13008" } },
    { unit = 3, function = "read_holding_registers", address = 0x10A9, value = "f32", order = "CDAB", target = { info = "i13007" } },
    { unit = 3, function = "read_holding_registers", address = 0x10E0, value = "u16", target = { info = "i43006" } },
]
controls = [
    { action = "zero_calibration", unit = 3, function = "write_single_register", address = 0x1200, value = 8 },
    { action = "span_calibration", unit = 3, function = "write_multiple_registers", address = 0x1200, value = 9 },
    { action = "sample_now", unit = 3, function = "write_single_register", address = 0x1200, value = 1 },
    { action = "retain_sample", unit = 3, function = "write_single_coil", address = 0x0020, value = 1 },
]
"#;

/// An HJ 212-2025 platform (in clear) and a profile file with a sampler: 3015 gets its
/// `DataTime`/`VaseNo` upload; 3011 with `CalibrationType` 0 and 1 picks zero or span
/// calibration; a 3011 without it is refused (no combined calibration in this profile); a busy
/// analyzer, an exception and a silent analyzer end in `ExeRtn` 5, 2 and 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_zero_and_span_calibration_and_failures_on_a_2025_platform() {
    let dir = temp_dir("control-2025");
    let file = dir.join("tp-sampler.toml");
    std::fs::write(&file, TP_SAMPLER).unwrap();
    let analyzer = Analyzer {
        name: "tp".into(),
        profile: None,
        profile_file: Some(file),
        unit: None,
        pol_id: None,
        electricity: None,
    };
    let profile = analyzer.load_profile().unwrap();
    let sim = {
        let mut sim = Simulator::new(&profile.as_profile());
        sim.set(&Target::Pollutant(Code::new("w21011")), Value::Number(0.2));
        sim.set(&Target::Status, Value::Code(1));
        sim.set(&Target::Info(Code::new("i13008")), Value::Number(2.0));
        sim.set(&Target::Info(Code::new("i13007")), Value::Number(0.5));
        sim.control_cycles = 2;
        Arc::new(Mutex::new(sim))
    };
    let pty = analyzer_on_pty(sim.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg: Config = common::config(&dir, &pty.path, listener.local_addr().unwrap());
    cfg.serial[0].analyzer[0] = analyzer;
    cfg.platform[0].version = 2025;
    let mut platform = platform(listener, Version::V2025);
    let shutdown = CancellationToken::new();
    let clock = Arc::new(ScaledClock::new(ORIGIN, 1));
    let gw = hj212_gateway::start_with(cfg, shutdown.clone(), Options { clock: Some(clock) }).await.unwrap();
    let metrics = gw.metrics();
    platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i13008-Info") == Some("2")).await;

    // 3015 (no PolId): the coil is set, bottle 1 is reported in a 3015 upload, then 9012.
    let replies = match platform.exchange(Message::OverLimitSampling, &mut Vec::new()).await {
        Outcome::Done { exe_rtn: ExeRtn::Success, replies } => replies,
        other => panic!("{other:?}"),
    };
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply = &replies[0];
    assert_eq!(reply.cn, 3015);
    assert_eq!(reply.packet.cp_get("VaseNo"), Some("1"), "{}", reply.packet.data_segment());
    let data_time = reply.packet.cp_get("DataTime").unwrap();
    assert!(data_time.len() == 14 && data_time.starts_with("2026"), "{data_time}");
    assert_eq!(actions(&sim), [ControlAction::RetainSample]);
    assert_eq!(sim.lock().unwrap().get(&firmware::profile::VASE_NO), Some(Value::Number(1.0)));

    // 3011 CalibrationType=0: zero calibration (8 at 0x1200), the intercept moves.
    let zero = control(Command::Calibrate, "w21011", Some(CalibrationType::Zero));
    assert_eq!(platform.exchange(zero, &mut Vec::new()).await, done(ExeRtn::Success));
    let info = platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i13007-Info").is_some()).await;
    assert_eq!(info.packet.cp_get("i13007-Info"), Some("0.51"), "{}", info.packet.data_segment());
    // 3011 CalibrationType=1: span calibration (9 at 0x1200, written with FC 16), the slope moves.
    let span = control(Command::Calibrate, "w21011", Some(CalibrationType::Span));
    assert_eq!(platform.exchange(span.clone(), &mut Vec::new()).await, done(ExeRtn::Success));
    let info = platform.upload(|u| u.cn == 3020 && u.packet.cp_get("i13008-Info").is_some()).await;
    assert_eq!(info.packet.cp_get("i13008-Info"), Some("2.02"), "{}", info.packet.data_segment());
    assert_eq!(
        actions(&sim),
        [ControlAction::RetainSample, ControlAction::ZeroCalibration, ControlAction::SpanCalibration]
    );
    // A 3011 without CalibrationType asks for both at once, which this profile cannot do.
    let both = control(Command::Calibrate, "w21011", None);
    assert_eq!(platform.exchange(both, &mut Vec::new()).await, Outcome::Refused(QnRtn::Refused));
    until(&sim, "idle after the span calibration", |s| s.running(3).is_none()).await;
    let writes = sim.lock().unwrap().writes();

    // Busy: a measurement that lasts, then a calibration while it runs: exception 6, ExeRtn=5.
    sim.lock().unwrap().control_cycles = 1000;
    let sample = control(Command::SampleNow, "w21011", None);
    assert_eq!(platform.exchange(sample.clone(), &mut Vec::new()).await, done(ExeRtn::Success));
    assert_eq!(platform.exchange(span.clone(), &mut Vec::new()).await, done(ExeRtn::Busy));
    // An exception from the analyzer (illegal data value): ExeRtn=2.
    sim.lock().unwrap().set_fault(Some(Fault::Exception(ExceptionCode::IllegalDataValue)));
    assert_eq!(platform.exchange(sample.clone(), &mut Vec::new()).await, done(ExeRtn::Failed));
    // No answer at all: ExeRtn=4 (communication timeout).
    sim.lock().unwrap().set_fault(Some(Fault::NoAnswer));
    assert_eq!(platform.exchange(sample, &mut Vec::new()).await, done(ExeRtn::Timeout));
    sim.lock().unwrap().set_fault(None);
    // Every accepted request was one write, plus the master's retry of the unanswered one.
    assert_eq!(sim.lock().unwrap().writes(), writes + 5);
    assert_eq!(metrics.control_ok.load(Ordering::Relaxed), 4);
    assert_eq!(metrics.control_exception.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.control_timeout.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.control_refused_no_control.load(Ordering::Relaxed), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.expect("shutdown timed out");
    let _ = std::fs::remove_dir_all(&dir);
}
