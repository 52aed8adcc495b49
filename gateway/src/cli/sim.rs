//! `hj212 sim analyzer` and `hj212 sim platform`: bench-test stand-ins.
//!
//! - `sim analyzer` serves the firmware's [`Simulator`] (a Modbus RTU slave model of a built-in
//!   profile) on a serial device until it is interrupted. Requests are cut by length (from the
//!   function code) and a partial request followed by a silence is dropped, as a slave does.
//!   Writes to the profile's control registers (CN 3011–3015 through a DAU) start the action, as
//!   the firmware's simulator documents; its clock is the system clock at `--utc-offset-minutes`.
//! - `sim platform` listens on TCP and plays the platform role of the codec's session for each
//!   connection: it answers uploads that ask for it with `9014`, notifications with `9013`, and
//!   prints each frame it receives on one line, in the manner of `hj212 tail`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use firmware::profile::{Code, OwnedProfile, Target, Value, builtin};
use firmware::sim::Simulator;
use hj212_codec::session::{Config as SessionConfig, Event, Now, Role, Session};
use hj212_codec::time::DateTime;
use hj212_codec::{Command, DecodeOptions, Decoded, Split, Splitter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::modbus::LineOpts;

/// Options of `sim analyzer`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzerOpts {
    /// The built-in profile to serve (`surface-water-cod`, `flow-meter`, …).
    #[arg(long)]
    pub profile: String,
    /// The serial line (a pty, or a real RS-485 adapter).
    #[command(flatten)]
    pub line: LineOpts,
    /// Serve on this unit address instead of the profile's (single-unit profiles only).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: Option<u8>,
    /// Set a value before serving: `w01018=42.5` (a pollutant or parameter code), `status=1`.
    #[arg(long = "set", value_name = "CODE=VALUE")]
    pub set: Vec<String>,
    /// The analyzer's clock, minutes east of UTC: the time stamped on calibrations and
    /// measurements that control writes start.
    #[arg(long, default_value_t = 480, allow_hyphen_values = true)]
    pub utc_offset_minutes: i32,
}

/// Options of `sim platform`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformOpts {
    /// `host:port` to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
}

/// The simulator subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCmd {
    /// Serve a simulated analyzer on a serial device until Ctrl-C.
    Analyzer(AnalyzerOpts),
    /// Run a minimal platform that acknowledges uploads and prints what it receives.
    Platform(PlatformOpts),
}

/// Runs a simulator subcommand.
///
/// # Errors
/// Unknown profile, bad `--set`, a port or address that cannot be opened.
pub fn run(cmd: &SimCmd) -> Result<u8> {
    match cmd {
        SimCmd::Analyzer(o) => analyzer(o),
        SimCmd::Platform(o) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the runtime")?
            .block_on(platform(o)),
    }
}

/// The profile named `name`, with `unit` applied.
fn profile(name: &str, unit: Option<u8>) -> Result<OwnedProfile> {
    let Some(p) = builtin::ALL.iter().find(|p| p.name == name) else {
        let names: Vec<&str> = builtin::ALL.iter().map(|p| p.name).collect();
        bail!("unknown built-in profile {name:?} (known: {})", names.join(", "));
    };
    let mut owned = OwnedProfile::from_profile(p);
    if let Some(unit) = unit {
        if !owned.is_single_unit() {
            bail!("the profile {name} spans several units; leave --unit out");
        }
        owned.set_unit(unit);
    }
    Ok(owned)
}

fn apply_set(sim: &mut Simulator, item: &str) -> Result<()> {
    let Some((key, value)) = item.split_once('=') else { bail!("--set {item:?}: expected CODE=VALUE") };
    let number: f64 = value.trim().parse().with_context(|| format!("--set {item:?}: not a number"))?;
    let key = key.trim();
    let done = match key {
        "status" => sim.set(&Target::Status, Value::Code(number as u32)),
        "alarm" => sim.set(&Target::Alarm, Value::Code(number as u32)),
        "fault" => sim.set(&Target::Fault, Value::Code(number as u32)),
        _ => {
            let Some(code) = Code::try_new(key) else { bail!("--set {item:?}: {key:?} is not a code") };
            sim.set(&Target::Pollutant(code), Value::Number(number))
                || sim.set(&Target::Info(code), Value::Number(number))
                || sim.set(&Target::Total(code), Value::Number(number))
        }
    };
    if !done {
        bail!("--set {item:?}: the profile has no point {key}");
    }
    Ok(())
}

fn analyzer(o: &AnalyzerOpts) -> Result<u8> {
    let owned = profile(&o.profile, o.unit)?;
    let mut sim = Simulator::new(&owned.as_profile());
    for item in &o.set {
        apply_set(&mut sim, item)?;
    }
    let mut port = o
        .line
        .builder()
        .timeout(Duration::from_millis(10))
        .open()
        .with_context(|| format!("cannot open {}", o.line.port.display()))?;
    let mut units: Vec<u8> = owned.points.iter().map(|p| p.unit).chain(owned.controls.iter().map(|c| c.unit)).collect();
    units.dedup();
    units.sort_unstable();
    units.dedup();
    eprintln!(
        "serving {} (units {:?}) on {} at {} baud; Ctrl-C stops",
        owned.name,
        units,
        o.line.port.display(),
        o.line.baud
    );
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = match port.read(&mut chunk) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", o.line.port.display())),
        };
        if n == 0 {
            // A silence: whatever partial request there was will not be completed.
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(t) = analyzer_time(o.utc_offset_minutes) {
            sim.set_time(t);
        }
        while let Some(len) = firmware::sim::request_len(&buf).filter(|l| buf.len() >= *l) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let Some(reply) = sim.handle(&frame) else { continue };
            std::thread::sleep(Duration::from_micros(u64::from(reply.delay_us)));
            match reply.gap {
                Some((at, gap_us)) if at < reply.bytes.len() => {
                    port.write_all(&reply.bytes[..at])?;
                    port.flush()?;
                    std::thread::sleep(Duration::from_micros(u64::from(gap_us)));
                    port.write_all(&reply.bytes[at..])?;
                }
                _ => port.write_all(&reply.bytes)?,
            }
            port.flush()?;
        }
    }
}

/// The system clock at `utc_offset_minutes`, as the analyzer's time.
fn analyzer_time(utc_offset_minutes: i32) -> Option<firmware::profile::DateTime> {
    let utc = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    let ms = i64::try_from(utc.as_millis()).ok()? + i64::from(utc_offset_minutes) * 60_000;
    let t = DateTime::from_millis(ms)?;
    firmware::profile::DateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second)
}

async fn platform(o: &PlatformOpts) -> Result<u8> {
    let listener =
        tokio::net::TcpListener::bind(o.listen).await.with_context(|| format!("cannot listen on {}", o.listen))?;
    let local = listener.local_addr()?;
    eprintln!("platform listening on {local}; Ctrl-C stops");
    loop {
        let (sock, peer) = listener.accept().await.context("accept")?;
        tokio::spawn(async move {
            if let Err(e) = connection(sock, peer).await {
                eprintln!("{peer}: {e:#}");
            }
        });
    }
}

fn now(start: Instant) -> Now {
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    Now::new(ms, DateTime::from_millis_or_epoch(wall))
}

/// The one-line view of a received frame.
fn line(peer: SocketAddr, frame: &[u8]) -> String {
    let stamp = now(Instant::now()).wall.to_string();
    let Split::Frame(f) = Splitter::default().split(frame, true) else {
        return format!("{stamp} <- {peer} not a frame");
    };
    let decoded = Decoded::new(f, DecodeOptions::LENIENT);
    let mut s = format!("{stamp} <- {peer}");
    match &decoded.packet {
        Ok(p) => {
            let label = Command::from_value(p.cn()).label_for(p.version()).unwrap_or("unknown command");
            s.push_str(&format!(" {} {label}", p.cn_str()));
            if let Some(mn) = p.mn() {
                s.push_str(&format!(" MN={mn}"));
            }
            if let Some(qn) = p.reference_qn() {
                s.push_str(&format!(" QN={qn}"));
            }
            for pair in p.cp().pairs() {
                let (key, value) = (pair.key(), pair.value().unwrap_or(""));
                if key.is_empty() {
                    continue;
                }
                s.push_str(&format!(" {key}={value}"));
            }
        }
        Err(e) => s.push_str(&format!(" {e}")),
    }
    if decoded.crc.is_err() {
        s.push_str(" CRC BAD");
    }
    s
}

async fn connection(mut sock: tokio::net::TcpStream, peer: SocketAddr) -> Result<()> {
    println!("connected {peer}");
    let start = Instant::now();
    let mut session = Session::new(SessionConfig::new(Role::Platform, "", "", "32"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(frame) = session.poll_transmit() {
            let text = String::from_utf8_lossy(&frame);
            println!("-> {peer} {}", text.trim_end());
            sock.write_all(&frame).await?;
        }
        let mut progressed = false;
        while let Some(ev) = session.poll_event() {
            progressed = true;
            if let Event::Upload { token, needs_ack: true, .. } = ev {
                let _ = session.ack(now(start), token);
            }
        }
        let _ = io::stdout().flush();
        if progressed {
            continue;
        }
        let wake = session.poll_timeout().map(|ms| start + Duration::from_millis(ms));
        tokio::select! {
            r = sock.read(&mut chunk) => {
                let n = r?;
                if n == 0 {
                    println!("closed {peer}");
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let (len, frame) = match Splitter::default().split(&buf, false) {
                        Split::Frame(f) => (f.len(), Some(f.bytes().to_vec())),
                        Split::Skip { len, .. } => (len, None),
                        Split::Incomplete => break,
                    };
                    buf.drain(..len);
                    let Some(frame) = frame else { continue };
                    println!("{}", line(peer, &frame));
                    let Split::Frame(f) = Splitter::default().split(&frame, true) else { continue };
                    if let Ok(p) = Decoded::new(f, DecodeOptions::LENIENT).verdict() {
                        session.handle_packet(now(start), &p);
                    }
                }
            }
            () = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w.into()).await,
                    None => std::future::pending().await,
                }
            } => session.handle_timeout(now(start)),
        }
    }
}
