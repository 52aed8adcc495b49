//! `hj212-loadgen`: a bounded, loopback-only load generator for `hj212-ingest`.
//!
//! * `hj212-loadgen dau`: N simulated data acquisition units over real TCP, each sending 2011
//!   uploads with Flag A=1 at a fixed rate, measuring frame → 9014 latency; reports p50, p99 and
//!   the acknowledged throughput. `--spawn` runs an ingest in-process (embedded broker, or
//!   `--broker` for an external one) that accepts any MN.
//! * `hj212-loadgen mqtt-baseline`: plain QoS 1 publishers (rumqttc) against a broker, measuring
//!   publish → PUBACK; the baseline that ingest's throughput is compared with.
//!
//! Both refuse non-loopback addresses and cap the count of clients and the duration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::frame::{Deframer, Event as FrameEvent};
use hj212_codec::packet::{Flag, Packet, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_CLIENTS: usize = 12_000;
/// Connection attempts in flight at once while the DAUs connect (the listen backlog is finite).
const CONNECTS_IN_FLIGHT: usize = 200;
/// The longest the connect phase may take before sending starts anyway.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(120);
const MAX_DURATION_SECS: u64 = 300;
const PW: &str = "123456";

#[derive(Debug, Parser)]
#[command(name = "hj212-loadgen", version, about = "Bounded loopback load generator for hj212-ingest")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated DAUs sending 2011 uploads with A=1 and timing the 9014s.
    Dau(DauArgs),
    /// QoS 1 publishers straight to a broker, timing the PUBACKs.
    MqttBaseline(BaselineArgs),
}

#[derive(Debug, Args)]
struct DauArgs {
    /// The ingest listener (loopback); not needed with --spawn.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Run an ingest in-process on a free loopback port (any MN accepted).
    #[arg(long)]
    spawn: bool,
    /// With --spawn: an external broker (loopback) instead of the embedded one.
    #[arg(long)]
    broker: Option<SocketAddr>,
    /// With --spawn: a spool directory (off when left out).
    #[arg(long)]
    spool: Option<std::path::PathBuf>,
    /// With --spawn and --spool: answer after the spool flush instead of the PUBACK.
    #[arg(long)]
    ack_after_spool: bool,
    /// With --spawn: turn the data-quality engine off (it runs by default, without state file).
    #[arg(long)]
    no_quality: bool,
    /// Simulated DAUs (at most 12 000; above about 1000 raise the fd limit, see
    /// `ingest/bench/conn10k.sh`).
    #[arg(long, default_value_t = 50)]
    daus: usize,
    /// Uploads per second per DAU (0.1 = one every 10 s).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of sending (at most 300).
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// The broker (loopback); with neither this nor --spawn, an embedded rumqttd is started.
    #[arg(long)]
    broker: Option<SocketAddr>,
    /// Publishers (at most 12 000).
    #[arg(long, default_value_t = 50)]
    publishers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of publishing (at most 300).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Payload size in bytes (an ingest 2011 payload is about 1 KiB).
    #[arg(long, default_value_t = 1000)]
    payload_bytes: usize,
}

fn check_bounds(clients: usize, rate: f64, duration: u64) -> anyhow::Result<()> {
    if clients == 0 || clients > MAX_CLIENTS {
        bail!("the client count must be between 1 and {MAX_CLIENTS}");
    }
    if !(0.01..=1000.0).contains(&rate) {
        bail!("the rate must be between 0.01 and 1000 per second per client");
    }
    if duration == 0 || duration > MAX_DURATION_SECS {
        bail!("the duration must be between 1 and {MAX_DURATION_SECS} seconds");
    }
    Ok(())
}

fn loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: hj212-loadgen only targets this machine");
    }
    Ok(addr)
}

/// Latency summary: (count, p50, p99, max) in milliseconds.
fn summary(mut v: Vec<Duration>) -> (usize, f64, f64, f64) {
    v.sort_unstable();
    let at =
        |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    (v.len(), at(0.5), at(0.99), v.last().map_or(0.0, |d| d.as_secs_f64() * 1e3))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=error,rumqttc=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dau(a) => dau(a).await,
            Command::MqttBaseline(a) => baseline(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn dau(args: DauArgs) -> anyhow::Result<()> {
    check_bounds(args.daus, args.rate, args.duration)?;
    let token = tokio_util::sync::CancellationToken::new();
    let mut handle = None;
    let target = if args.spawn {
        let mut c = hj212_ingest::Config {
            listeners: vec![hj212_ingest::config::Listener { addr: "127.0.0.1:0".parse()?, tcp_nodelay: false }],
            ..hj212_ingest::Config::default()
        };
        c.auth.unknown_mn = hj212_ingest::config::UnknownMnPolicy::Accept;
        c.limits.max_frames_per_minute_per_mn = 0;
        c.limits.max_connections = MAX_CLIENTS + 16;
        c.packet_log.path = std::path::PathBuf::new();
        c.metrics.listen = String::new();
        c.spool.path = args.spool.clone().unwrap_or_default();
        c.quality.enabled = !args.no_quality;
        c.quality.state_path = std::path::PathBuf::new();
        if args.ack_after_spool {
            c.spool.ack_after = hj212_ingest::config::AckAfter::Spool;
        }
        c.mqtt.embedded_port = 0;
        if let Some(b) = args.broker {
            let b = loopback(b)?;
            c.mqtt.host = Some(b.ip().to_string());
            c.mqtt.port = b.port();
            c.mqtt.embedded = Some(false);
        }
        let h = hj212_ingest::start(c, token.clone()).await?;
        let addr = h.listen_addrs()[0];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.mqtt_connected() {
            if Instant::now() > deadline {
                bail!("the spawned ingest did not connect to its broker");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle = Some(h);
        addr
    } else {
        loopback(args.target.context("--target or --spawn is required")?)?
    };

    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let sent_total = Arc::new(AtomicU64::new(0));
    // Open connections now, and connection attempts that failed.
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let connect_gate = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    // Sending starts for every DAU at once, once all are connected: the value is the end of
    // sending.
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    // A DAU's reader gives up after this long without any byte (two periods, at least 5 s).
    let read_limit = (period * 2).max(Duration::from_secs(5));
    let connect_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.daus {
        let (latencies, sent_total) = (latencies.clone(), sent_total.clone());
        let (open, failed, connect_gate, mut go_rx) =
            (open.clone(), failed.clone(), connect_gate.clone(), go_rx.clone());
        let spread = period.mul_f64(i as f64 / args.daus as f64);
        tasks.push(tokio::spawn(async move {
            let mn = format!("LOADGEN{i:017}");
            let stream = {
                let Ok(_permit) = connect_gate.acquire().await else { return };
                match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let Ok(Some(send_until)) = go_rx.wait_for(Option::is_some).await.map(|v| *v) else {
                open.fetch_sub(1, Ordering::Relaxed);
                return;
            };
            let (mut rd, mut wr) = stream.into_split();
            let outstanding: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
            let reader_out = outstanding.clone();
            let reader_lat = latencies.clone();
            let reader = tokio::spawn(async move {
                let mut deframer = Deframer::default();
                let mut buf = vec![0u8; 1024];
                let mut mine = Vec::new();
                loop {
                    match tokio::time::timeout(read_limit, rd.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => deframer.feed(&buf[..n]),
                        _ => break,
                    }
                    while let Some(ev) = deframer.next_event() {
                        let FrameEvent::Frame { frame, .. } = ev else { continue };
                        let Ok(p) = Packet::parse(frame.data()) else { continue };
                        if p.cn() != 9014 {
                            continue;
                        }
                        let sent = p.qn().and_then(|q| reader_out.lock().ok()?.remove(q));
                        if let Some(t) = sent {
                            mine.push(t.elapsed());
                        }
                    }
                    if Instant::now() > send_until && reader_out.lock().map_or(true, |m| m.is_empty()) {
                        break;
                    }
                }
                if let Ok(mut l) = reader_lat.lock() {
                    l.extend(mine);
                }
            });
            // Spread the DAUs over one period so they do not send in lockstep.
            tokio::time::sleep(spread).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            let data_start_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            while Instant::now() < send_until {
                tick.tick().await;
                // The reader stops once nothing is outstanding after the deadline: send nothing
                // after it.
                if Instant::now() >= send_until {
                    break;
                }
                let qn = format!("2024{:013}", n);
                // Like a real DAU: each upload one second of data time later than the last,
                // with values that move, so that the data-quality engine does its real work.
                let data_time = hj212_codec::time::DateTime::from_millis_or_epoch(data_start_ms + 1000 * n as i64);
                let data_time = String::from_utf8_lossy(&data_time.n14()).into_owned();
                let cod = format!("{:.2}", 12.0 + 3.0 * ((n % 97) as f64 / 97.0));
                let flow = format!("{:.3}", 3.0 + 0.5 * ((n % 61) as f64 / 61.0));
                n += 1;
                let mut p =
                    OwnedPacket::new(Some(&qn), "32", 2011, PW, &mn, Some(Flag::new(Version::V2017, false, true)));
                p.push_group([("DataTime", data_time.as_str())]);
                p.push_group([("w01018-Rtd", cod.as_str()), ("w01018-Flag", "N")]);
                p.push_group([("w00000-Rtd", flow.as_str()), ("w00000-Flag", "N")]);
                let Ok(frame) = p.to_frame(CrcVariant::Hj212) else { break };
                if let Ok(mut o) = outstanding.lock() {
                    o.insert(qn, Instant::now());
                }
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
                sent_total.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tokio::time::timeout(read_limit + Duration::from_secs(1), reader).await;
            open.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    drop(go_rx);
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.daus
        && connect_start.elapsed() < CONNECT_PHASE_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let connected = open.load(Ordering::Relaxed);
    let start = Instant::now();
    let send_until = start + Duration::from_secs(args.duration);
    let _ = go_tx.send(Some(send_until));
    eprintln!("connected {connected} of {} DAUs in {connect_secs:.1} s; sending for {} s", args.daus, args.duration);
    // Connections still open just before the end of sending (none drop while held).
    tokio::time::sleep_until((send_until - Duration::from_millis(500)).into()).await;
    let held = open.load(Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(args.duration) + read_limit * 2, t).await;
    }
    let elapsed = start.elapsed();
    let sent = sent_total.load(Ordering::Relaxed);
    let lat = std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let (answered, p50, p99, max) = summary(lat);
    println!(
        "dau: daus={} connected={connected} failed={} held_at_end={held} connect_phase={connect_secs:.1}s \
         rate={}/s/dau duration={}s sent={sent} answered={answered} unanswered={} \
         throughput={:.0} acks/s frame->9014 p50={p50:.2}ms p99={p99:.2}ms max={max:.2}ms",
        args.daus,
        failed.load(Ordering::Relaxed),
        args.rate,
        args.duration,
        sent.saturating_sub(answered as u64),
        answered as f64 / elapsed.as_secs_f64().min(args.duration as f64 + 0.5),
    );
    token.cancel();
    if let Some(h) = handle {
        let m = h.metrics();
        println!(
            "quality: {} (inputs {}, dropped {}, alerts {})",
            if args.no_quality { "off" } else { "on" },
            m.get("quality_inputs"),
            m.get("quality_inputs_dropped"),
            m.get("quality_alerts")
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), h.wait()).await;
    }
    Ok(())
}

async fn baseline(args: BaselineArgs) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
    check_bounds(args.publishers, args.rate, args.duration)?;
    let broker = match args.broker {
        Some(b) => loopback(b)?,
        None => hj212_ingest::broker::start(0).await?,
    };
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let sent_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let send_until = start + Duration::from_secs(args.duration);
    let payload = vec![b'x'; args.payload_bytes.min(256 * 1024)];
    let mut tasks = Vec::new();
    for i in 0..args.publishers {
        let (latencies, sent_total, payload) = (latencies.clone(), sent_total.clone(), payload.clone());
        let period = Duration::from_secs_f64(1.0 / args.rate);
        tasks.push(tokio::spawn(async move {
            let mut o = MqttOptions::new(format!("loadgen-baseline-{i}"), broker.ip().to_string(), broker.port());
            o.set_max_packet_size(1024 * 1024, 1024 * 1024);
            let (client, mut eventloop) = AsyncClient::new(o, 1024);
            let topic = format!("loadgen/{i}");
            let publisher = tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < send_until {
                    tick.tick().await;
                    if client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone()).await.is_err() {
                        break;
                    }
                }
                client
            });
            let mut sent_at: HashMap<u16, Instant> = HashMap::new();
            let mut mine = Vec::new();
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(3), eventloop.poll()).await;
                match ev {
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        sent_at.insert(pkid, Instant::now());
                        sent_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Ok(Event::Incoming(Incoming::PubAck(a)))) => {
                        if let Some(t) = sent_at.remove(&a.pkid) {
                            mine.push(t.elapsed());
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
                if Instant::now() > send_until && sent_at.is_empty() && publisher.is_finished() {
                    break;
                }
            }
            if let Ok(mut l) = latencies.lock() {
                l.extend(mine);
            }
        }));
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(args.duration + 15), t).await;
    }
    let elapsed = start.elapsed();
    let sent = sent_total.load(std::sync::atomic::Ordering::Relaxed);
    let lat = std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let (acked, p50, p99, max) = summary(lat);
    println!(
        "mqtt-baseline: broker={broker} publishers={} rate={}/s/publisher duration={}s payload={}B sent={sent} \
         acked={acked} throughput={:.0} acks/s publish->PUBACK p50={p50:.2}ms p99={p99:.2}ms max={max:.2}ms",
        args.publishers,
        args.rate,
        args.duration,
        payload.len(),
        acked as f64 / elapsed.as_secs_f64().min(args.duration as f64 + 0.5),
    );
    Ok(())
}
