//! `hj212-demo`: the whole chain on loopback, shown live.
//!
//! What runs, all in this process:
//!
//! 1. two simulated sites ([`crate::sites`]): a waste-water outfall (COD, NH3-N, TP, TN, flow on
//!    one RS-485 line) and a flue-gas stack (a CEMS on another), each line a pseudo-terminal;
//! 2. two gateways, one per site, polling the pty slave paths with a data clock running
//!    [`Options::speed`] times faster than real time, so minute and hour records come quickly;
//! 3. the ingest daemon with its embedded MQTT broker;
//! 4. an MQTT subscriber to `hj212/#`, which is also the "platform operator" that sends a
//!    command down on `hj212/cmd/{mn}`.
//!
//! What is shown: every frame the gateways send up (read from their packet logs, as
//! `hj212 tail` would), the 9014 acknowledgements and commands that come back down, and a summary
//! of each MQTT message. On a timer the demo stages a calibration on the COD analyzer (flag C,
//! then a new slope, which the gateway reports with a CN 3020 upload) and a history request for
//! hourly data (CN 2061) sent through ingest's command topic, whose replies appear on
//! `hj212/reply/{mn}`.
//!
//! Ctrl-C (or `--duration`) cancels one token; every part stops within a bounded wait.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use firmware::profile::{Code, Target, Value};
use hj212_codec::log::{Direction, Record};
use hj212_codec::time::DateTime;
use hj212_codec::{Command, DataFlag, Packet, Split, Splitter};
use hj212_gateway::{Clock as _, ScaledClock};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::mqtt::{self, Subscriber};
use crate::packets::LogTail;
use crate::pty::{self, Line};
use crate::sites::{self, Timing};
use crate::style::Style;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// How much faster than real time the data clock runs.
    pub speed: u32,
    /// Where the stores and packet logs go; a fresh temporary directory (removed at the end)
    /// when `None`.
    pub dir: Option<PathBuf>,
    /// Colours.
    pub style: Style,
}

/// Counts shown at the end (and checked by the demo's test).
#[derive(Debug, Default)]
struct Counts {
    uploads: AtomicU64,
    acks: AtomicU64,
    mqtt: AtomicU64,
    replies: AtomicU64,
}

/// The printer's side of the screen: lines are stamped with the time of the event they show
/// (the packet log's time for frames, the arrival time for MQTT messages), held for a moment and
/// printed in time order, so a frame's upload, its MQTT message and its 9014 appear in the order
/// they happened although they are read from different places.
#[derive(Debug, Clone)]
struct Out {
    start_ms: i64,
    style: Style,
    tx: tokio::sync::mpsc::UnboundedSender<(i64, String)>,
}

/// How long a line is held for lines with an earlier time to arrive.
const REORDER_MS: i64 = 300;

fn utc_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

impl Out {
    /// A printer and the task that writes its lines to standard output until every sender is
    /// dropped.
    fn new(style: Style) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, String)>();
        let task = tokio::spawn(async move {
            let mut held: BinaryHeap<Reverse<(i64, u64, String)>> = BinaryHeap::new();
            let mut seq = 0u64;
            let mut open = true;
            while open || !held.is_empty() {
                match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                    Ok(Some((t, line))) => {
                        seq += 1;
                        held.push(Reverse((t, seq, line)));
                    }
                    Ok(None) => open = false,
                    Err(_) => {}
                }
                let due = if open { utc_ms() - REORDER_MS } else { i64::MAX };
                let mut stdout = std::io::stdout().lock();
                while held.peek().is_some_and(|Reverse((t, _, _))| *t <= due) {
                    if let Some(Reverse((_, _, line))) = held.pop() {
                        // A closed pipe is ignored: the demo stops on its timer or signal.
                        let _ = stdout.write_all(line.as_bytes());
                    }
                }
                let _ = stdout.flush();
            }
        });
        (Self { start_ms: utc_ms(), style, tx }, task)
    }

    /// Shows `text` from `source` at `time_ms` (UTC milliseconds).
    fn at(&self, time_ms: i64, source: &str, text: &str) {
        #[allow(clippy::cast_precision_loss)] // Seconds since the start: far below 2^52 ms.
        let t = (time_ms - self.start_ms) as f64 / 1000.0;
        let line = format!("{} {:<6} {text}\n", self.style.dim(&format!("{t:6.1}s")), source);
        let _ = self.tx.send((time_ms, line));
    }

    /// Shows `text` from `source` now.
    fn say(&self, source: &str, text: &str) {
        self.at(utc_ms(), source, text);
    }

    fn banner(&self, text: &str) {
        self.say("demo", &self.style.magenta(&format!("*** {text}")));
    }
}

/// Runs the demo until Ctrl-C or the duration.
///
/// # Errors
/// Something could not start (a pty, a listener, the broker); a part that fails later is shown
/// and the rest keeps running.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let (out, printer) = Out::new(options.style);
    let st = options.style;
    let (dir, temporary) = match &options.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("hj212-demo-{}", std::process::id())), true),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stop = CancellationToken::new();

    // The platform: ingest and its embedded broker.
    std::fs::create_dir_all(dir.join("ingest"))?;
    let ingest_token = stop.child_token();
    let ingest = hj212_ingest::start(sites::ingest_config(&dir.join("ingest"), None)?, ingest_token.clone())
        .await
        .context("cannot start ingest")?;
    let platform_addr = ingest.listen_addrs()[0];
    let (host, port) = ingest.mqtt_addr();
    let broker = (host.to_string(), port);
    out.say("demo", &format!("ingest listening on {platform_addr}, MQTT broker on {}:{}", broker.0, broker.1));

    // The viewer and operator on MQTT.
    let mut viewer = Subscriber::connect((&broker.0, broker.1), "hj212-demo-viewer", "hj212/#", stop.child_token())
        .await
        .context("cannot subscribe to the broker")?;

    // The sites, their lines and their gateways.
    let water = sites::water(true);
    let gas = sites::gas();
    let origin = local_now();
    let clock = Arc::new(ScaledClock::new(origin, options.speed.max(1)));
    let timing =
        Timing { poll_interval_ms: 2000, rtd_interval_secs: 5, min_interval_mins: 1, over_time_secs: 5, re_count: 3 };
    let mut lines = Vec::new();
    let mut gateways = Vec::new();
    for site in [&water, &gas] {
        let line = Line::open(site.sims()).context("cannot open a pseudo-terminal")?;
        let gdir = dir.join(site.name);
        std::fs::create_dir_all(&gdir)?;
        let config = sites::gateway_config(site, &gdir, line.path(), platform_addr, timing);
        let options = hj212_gateway::Options { clock: Some(clock.clone()) };
        let gw = hj212_gateway::start_with(config, stop.child_token(), options)
            .await
            .with_context(|| format!("cannot start the {} gateway", site.name))?;
        out.say(
            site.name,
            &format!(
                "MN={} ST={}: {} on {}; packet log {}",
                site.mn,
                site.st,
                site.analyzers.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
                line.path().display(),
                gdir.join("packets.log").display()
            ),
        );
        lines.push(line);
        gateways.push(gw);
    }
    out.say(
        "demo",
        &format!(
            "data clock starts at {origin} and runs {}x; RtdInterval 5 s, MinInterval 1 min. Ctrl-C stops.",
            options.speed
        ),
    );

    let counts = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();

    // The packet logs, shown as they grow.
    for site in [&water, &gas] {
        let mut tail = LogTail::new(dir.join(site.name).join("packets.log"));
        let (out, counts, stop, name) = (out.clone(), counts.clone(), stop.clone(), site.name);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                for r in tail.poll() {
                    show_record(&out, name, &r, &counts);
                }
            }
            // What was written before the stop.
            for r in tail.poll() {
                show_record(&out, name, &r, &counts);
            }
        });
    }

    // The staged events: a calibration, then a history request, repeated.
    {
        let (stage_out, stage_stop, clock) = (out.clone(), stop.clone(), clock.clone());
        let cod = water.analyzer("cod").sim.clone();
        let water_mn = water.mn;
        let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Json)>();
        tasks.spawn(async move {
            let (out, stop) = (stage_out, stage_stop);
            let mut round = 0u32;
            loop {
                round += 1;
                let slope = if round % 2 == 1 { 1.05 } else { 1.0 };
                let steps: [(u64, u8); 3] = [(6, 0), (10, 1), (14, 2)];
                let round_start = tokio::time::Instant::now();
                for (at, what) in steps {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(round_start + Duration::from_secs(at)) => {}
                    }
                    match what {
                        0 => {
                            pty::with(&cod, |s| s.set(&Target::Status, Value::Code(9)));
                            out.banner("COD analyzer: standard calibration started (status 9): its values are flagged C");
                        }
                        1 => {
                            pty::with(&cod, |s| {
                                s.set(&Target::Info(Code::new("i13008")), Value::Number(slope));
                                s.set(&Target::Status, Value::Code(1));
                            });
                            out.banner(&format!(
                                "COD analyzer: calibration done, slope i13008 = {slope}: watch for the CN 3020 upload"
                            ));
                        }
                        _ => {
                            let end = clock.now();
                            let begin = DateTime::from_millis(end.to_millis() - 2 * 3_600_000).unwrap_or(end);
                            let id = format!("demo-history-{round}");
                            let body = json!({"id": id, "cn": 2061, "BeginTime": begin.to_string(), "EndTime": end.to_string()});
                            out.banner(&format!(
                                "operator: history request for hourly data {begin}..{end}, published on hj212/cmd/{water_mn}"
                            ));
                            let _ = cmd_tx.send((format!("hj212/cmd/{water_mn}"), body));
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(round_start + Duration::from_secs(60)) => {}
                }
            }
        });

        // The viewer: summarises MQTT messages, and publishes the operator's commands.
        let (out, counts, stop) = (out.clone(), counts.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    Some((topic, body)) = cmd_rx.recv() => {
                        if let Err(e) = viewer.publish(&topic, &body).await {
                            out.say("mqtt", &st.red(&format!("cannot publish the command: {e}")));
                        }
                    }
                    m = viewer.next() => match m {
                        Some(m) => show_mqtt(&out, &m, &counts),
                        None => break,
                    },
                }
            }
            for m in viewer.drain() {
                show_mqtt(&out, &m, &counts);
            }
        });
    }

    // Values that move a little, as real ones do.
    {
        let stop = stop.clone();
        let analyzers: Vec<_> = water.analyzers.iter().chain(&gas.analyzers).cloned().collect();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000));
            let mut n = 0u32;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                n += 1;
                for (i, a) in analyzers.iter().enumerate() {
                    let (code, base) = a.main;
                    let phase = f64::from(n) * 0.3 + i as f64;
                    let v = (base * (1.0 + 0.04 * phase.sin()) * 100.0).round() / 100.0;
                    pty::with(&a.sim, |s| s.set(&Target::Pollutant(Code::new(code)), Value::Number(v)));
                }
            }
        });
    }

    // Run until Ctrl-C or the duration.
    let limit = options.duration.unwrap_or(Duration::from_secs(u64::MAX / 4));
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() {
                out.banner("Ctrl-C: stopping");
            }
        }
        () = tokio::time::sleep(limit) => out.banner("duration reached: stopping"),
    }
    // A second Ctrl-C during the stop leaves at once.
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    stop.cancel();
    let bound = Duration::from_secs(5);
    for (gw, name) in gateways.iter().zip(["water", "gas"]) {
        if tokio::time::timeout(bound, gw.wait()).await.is_err() {
            out.say(name, &st.red("gateway did not stop within 5 s"));
        }
    }
    match tokio::time::timeout(bound, ingest.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.say("ingest", &st.red(&format!("stopped with an error: {e:#}"))),
        Err(_) => out.say("ingest", &st.red("did not stop within 5 s")),
    }
    if tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
    drop(lines);
    out.say(
        "demo",
        &format!(
            "summary: {} uploads, {} acks, {} MQTT messages, {} command replies",
            counts.uploads.load(Ordering::Relaxed),
            counts.acks.load(Ordering::Relaxed),
            counts.mqtt.load(Ordering::Relaxed),
            counts.replies.load(Ordering::Relaxed),
        ),
    );
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        out.say("demo", &format!("files kept in {}", dir.display()));
    }
    drop(out);
    let _ = tokio::time::timeout(bound, printer).await;
    Ok(())
}

/// The data clock's start: this hour of the local civil time in China Standard Time (the sites'
/// default zone, UTC+8), at minute 58.
fn local_now() -> DateTime {
    let utc = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let t = DateTime::civil_from_utc(utc, 480);
    // Two minutes before the hour: the first hourly record comes a few seconds after the start.
    DateTime { minute: 58, second: 0, millis: 0, ..t }
}

/// One packet-log record of a gateway: `->` up to the platform, `<-` down from it.
fn show_record(out: &Out, site: &str, r: &Record, counts: &Counts) {
    let st = out.style;
    let Split::Frame(frame) = Splitter::default().split(&r.frame, true) else {
        out.say(site, &st.red("unreadable record in the packet log"));
        return;
    };
    let Ok(p) = Packet::parse(frame.data()) else {
        out.say(site, &st.red("a frame that does not parse"));
        return;
    };
    let cn = p.cn();
    let label = Command::from_value(cn).label_for(p.version()).unwrap_or("unknown command");
    let (arrow, what) = match r.direction {
        Direction::Out => {
            if cn < 9000 {
                counts.uploads.fetch_add(1, Ordering::Relaxed);
            }
            (st.cyan("->"), st.bold(p.cn_str()))
        }
        Direction::In => {
            if cn == 9014 {
                counts.acks.fetch_add(1, Ordering::Relaxed);
            }
            (st.green("<-"), st.green(p.cn_str()))
        }
    };
    let mut s = format!("{arrow} {what} {label}");
    if let Some(qn) = p.reference_qn() {
        let _ = write!(s, " QN={qn}");
    }
    let mut shown = 0;
    for pair in p.cp().pairs() {
        let (key, value) = (pair.key(), pair.value().unwrap_or(""));
        if key.is_empty() {
            continue;
        }
        if shown == 10 {
            s.push_str(" …");
            break;
        }
        shown += 1;
        let text = format!("{key}={value}");
        let flagged =
            pair.code_and_suffix().is_some_and(|(_, suf)| suf == "Flag") && !DataFlag::parse(value).is_normal();
        s.push(' ');
        s.push_str(&if flagged { st.yellow(&text) } else { text });
    }
    out.at(r.time_ms, site, &s);
}

/// One MQTT message, summarised: data topics show their items, the reply topic the command's
/// progress.
fn show_mqtt(out: &Out, m: &mqtt::Message, counts: &Counts) {
    let st = out.style;
    if m.topic.starts_with("hj212/status/") {
        out.say("mqtt", &st.dim(&format!("{} {}", m.topic, m.payload)));
        return;
    }
    if m.topic.starts_with("hj212/cmd/") {
        out.say("mqtt", &format!("{} {}", st.magenta(&m.topic), m.payload));
        return;
    }
    if m.topic.starts_with("hj212/reply/") {
        counts.replies.fetch_add(1, Ordering::Relaxed);
        let v = &m.payload;
        let event = v["event"].as_str().unwrap_or("?");
        let mut s = format!("{} id={} event={}", st.magenta(&m.topic), v["id"], st.bold(event));
        for k in ["qn_rtn", "exe_rtn", "error"] {
            if !v[k].is_null() {
                let _ = write!(s, " {k}={}", v[k]);
            }
        }
        if event == "data" {
            let d = &v["data"];
            let _ = write!(s, " cn={} data_time={} {}", d["cn"], d["data_time"], items_summary(d, st));
        }
        out.say("mqtt", &s);
        return;
    }
    counts.mqtt.fetch_add(1, Ordering::Relaxed);
    let v = &m.payload;
    let summary = items_summary(v, st);
    let topic = mqtt::data_topic("hj212", &m.topic).map_or_else(
        || m.topic.clone(),
        |(mn, cn)| {
            let site = match mn {
                sites::WATER_MN => "water",
                sites::GAS_MN => "gas",
                other => other,
            };
            format!("{site}/{cn}")
        },
    );
    out.say(
        "mqtt",
        &format!("{} {} data_time={} {summary}", st.green("•"), topic, v["data_time"].as_str().unwrap_or("-")),
    );
}

/// `COD 42.5 mg/L N, …` for items, `i13008 slope=1.05` for info items.
fn items_summary(v: &Json, st: Style) -> String {
    let mut parts = Vec::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let name = item["name"].as_str().or_else(|| item["code"].as_str()).unwrap_or("?");
        let value = ["Rtd", "Avg", "Cou"].iter().find_map(|k| item.get(*k).filter(|x| !x.is_null()));
        let unit = item["unit"].as_str().unwrap_or("");
        let flag = item["flag"].as_str().unwrap_or("");
        let flag = if flag == "N" || flag.is_empty() { flag.to_string() } else { st.yellow(flag) };
        let value = value.map_or_else(|| "-".to_string(), ToString::to_string);
        parts.push(format!("{name} {value}{}{unit} {flag}", if unit.is_empty() { "" } else { " " }));
    }
    for item in v["info"].as_array().into_iter().flatten() {
        let code = item["code"].as_str().unwrap_or("?");
        let name = item["name"].as_str().unwrap_or("");
        parts.push(format!("{} {code} {name}={}", item["pol_id"].as_str().unwrap_or(""), item["value"]));
    }
    if parts.len() > 4 {
        let n = parts.len() - 4;
        parts.truncate(4);
        parts.push(format!("+{n} more"));
    }
    parts.join(", ")
}

/// Where the demo keeps its files when asked to: `dir` made absolute.
#[must_use]
pub fn absolute(dir: &Path) -> PathBuf {
    std::env::current_dir().map_or_else(|_| dir.to_path_buf(), |c| c.join(dir))
}
