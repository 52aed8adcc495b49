//! The `hj212` field CLI: decode, check, crc and encode HJ 212 frames.
//!
//! Exit codes (ripgrep's convention, sysexits for configuration): 0 when everything read was
//! valid, 1 when the run completed but found invalid frames, 2 on usage or IO errors, 78 on a
//! configuration error. A closed pipe (`hj212 decode big.log | head`) exits 0.

mod decode;
pub mod json;
pub mod maintenance;
pub mod modbus;
pub mod outbox;
pub mod poll;
pub mod sim;
mod tail;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use hj212_codec::crc::{CrcPolicy, CrcVariant};

pub use decode::{DecodeStats, Style};

/// Inspect, check and build HJ 212 frames.
#[derive(Debug, Parser)]
#[command(name = "hj212", version, about = "Inspect, check and build HJ 212 (2017/2005/2025) frames")]
pub struct Cli {
    /// When to use colour: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "HJ212_COLOR")]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Colour policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set or TERM is dumb.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Which CRC variants to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrcArg {
    /// Any known variant (HJ 212 first); a Modbus variant is reported as a deviation.
    Auto,
    /// The HJ 212-2017 Appendix A algorithm only.
    Hj212,
    /// CRC-16/MODBUS printed high byte first.
    Modbus,
    /// CRC-16/MODBUS printed low byte first.
    ModbusLe,
}

impl CrcArg {
    fn policy(self) -> CrcPolicy {
        match self {
            Self::Auto => CrcPolicy::Auto,
            Self::Hj212 => CrcPolicy::Only(CrcVariant::Hj212),
            Self::Modbus => CrcPolicy::Only(CrcVariant::ModbusHighFirst),
            Self::ModbusLe => CrcPolicy::Only(CrcVariant::ModbusLowFirst),
        }
    }
}

/// Options shared by `decode` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadOpts {
    /// Files holding raw byte streams; `-` or nothing reads standard input.
    pub inputs: Vec<PathBuf>,
    /// Accept readable deviations (length counted in characters, over 1024 bytes, bare LF,
    /// Modbus CRCs, a missing closing &&) and report them.
    #[arg(long)]
    pub lenient: bool,
    /// Which CRC variants to accept [default: hj212, or auto with --lenient].
    #[arg(long, value_enum)]
    pub crc: Option<CrcArg>,
    /// Largest data-segment length to accept (the field allows up to 9999).
    #[arg(long, default_value_t = 9999)]
    pub max_len: usize,
}

impl ReadOpts {
    fn decode_options(&self) -> hj212_codec::DecodeOptions {
        let default = if self.lenient { CrcArg::Auto } else { CrcArg::Hj212 };
        hj212_codec::DecodeOptions { strict: !self.lenient, crc: self.crc.unwrap_or(default).policy() }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode frames from raw byte streams and print each one.
    Decode {
        /// Shared input options.
        #[command(flatten)]
        read: ReadOpts,
        /// Print JSON Lines (see docs/cli.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate frames and print only the summary.
    Check {
        /// Shared input options.
        #[command(flatten)]
        read: ReadOpts,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the CRC of a data segment, or verify a whole frame given as `##…`.
    Crc {
        /// The data segment (or a whole frame; a trailing \r\n may be written literally).
        segment: String,
        /// Also print the Modbus variants.
        #[arg(long)]
        all: bool,
    },
    /// Follow a packet log (gateway or ingest) and show each frame on one line.
    Tail(tail::TailOpts),
    /// Build frames from JSON Lines in the shape `decode --json` prints.
    Encode {
        /// A JSON Lines file; `-` or nothing reads standard input.
        input: Option<PathBuf>,
    },
    /// Modbus RTU wiring checks: read registers from a unit, or scan a line for units.
    Modbus {
        /// What to do.
        #[command(subcommand)]
        cmd: modbus::ModbusCmd,
    },
    /// Bench-test stand-ins: a simulated analyzer on a serial device, or a minimal platform.
    Sim {
        /// What to run.
        #[command(subcommand)]
        cmd: sim::SimCmd,
    },
    /// Poll every configured analyzer once and print what the gateway would upload (not sent).
    Poll(poll::PollOpts),
    /// Show each platform's queue in the gateway store: depth, oldest and newest record.
    Outbox {
        /// Where the store is.
        #[command(flatten)]
        store: outbox::StoreArgs,
        /// Print JSON Lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The on-site electronic O&M record: open or close a maintenance in the gateway store.
    Maintenance {
        /// What to do.
        #[command(subcommand)]
        cmd: maintenance::MaintenanceCmd,
    },
}

impl Cli {
    /// Runs the command and maps the outcome to an exit code.
    #[must_use]
    pub fn run(self) -> ExitCode {
        let style = Style::new(self.color);
        let result = match self.command {
            Command::Decode { read, json } => {
                decode::run(&read, if json { decode::Output::Json } else { decode::Output::Text(style) })
            }
            Command::Check { read, json } => decode::run(&read, decode::Output::Summary { json, style }),
            Command::Crc { segment, all } => crc_command(&segment, all),
            Command::Encode { input } => encode_command(input.as_deref()),
            Command::Tail(opts) => tail::run(&opts, style),
            Command::Modbus { cmd } => modbus::run(&cmd),
            Command::Sim { cmd } => sim::run(&cmd),
            Command::Poll(opts) => poll::run(&opts, style),
            Command::Outbox { store, json } => outbox::run(&store, json),
            Command::Maintenance { cmd } => maintenance::run(&cmd),
        };
        match result {
            Ok(code) => ExitCode::from(code),
            Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
            Err(e) if e.downcast_ref::<crate::ConfigError>().is_some() => {
                let _ = writeln!(io::stderr(), "error: {e:#}");
                ExitCode::from(78)
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

fn crc_command(segment: &str, all: bool) -> Result<u8> {
    let text = segment.strip_suffix("\\r\\n").unwrap_or(segment);
    let text = text.strip_suffix("\r\n").unwrap_or(text);
    let mut out = io::stdout().lock();
    if let Some(rest) = text.strip_prefix("##").filter(|r| r.len() >= 8) {
        // A whole frame: verify the CRC it carries over the bytes between length and CRC.
        let (body, crc_text) = rest.split_at(rest.len() - 4);
        let data = body.get(4..).unwrap_or_default();
        let received = hj212_codec::crc::from_hex(crc_text.as_bytes());
        let verdict = received.map(|r| CrcPolicy::Auto.check(data.as_bytes(), r));
        let computed = hj212_codec::crc::hj212(data.as_bytes());
        match verdict {
            Some(Ok(v)) => writeln!(out, "{computed:04X} (frame says {crc_text}: matches the {v} variant)")?,
            Some(Err(_)) => {
                writeln!(out, "{computed:04X} (frame says {crc_text}: mismatch)")?;
                return Ok(1);
            }
            None => {
                writeln!(out, "{computed:04X} (frame says {crc_text:?}: not four hex digits)")?;
                return Ok(1);
            }
        }
        return Ok(0);
    }
    if all {
        for v in CrcVariant::ALL {
            writeln!(out, "{:04X} {v}", v.compute(text.as_bytes()))?;
        }
    } else {
        writeln!(out, "{:04X}", hj212_codec::crc::hj212(text.as_bytes()))?;
    }
    Ok(0)
}

fn encode_command(input: Option<&std::path::Path>) -> Result<u8> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = match input {
        None => Box::new(io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(io::stdin().lock()),
        Some(p) => Box::new(io::BufReader::new(
            std::fs::File::open(p).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", p.display()))?,
        )),
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut failed = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                failed += 1;
                writeln!(io::stderr(), "line {}: not JSON: {e}", i + 1)?;
                continue;
            }
        };
        match value.get("type").and_then(|t| t.as_str()) {
            Some("frame") | None => {}
            Some(_) => continue,
        }
        match json::encode_frame_json(&value) {
            Ok(bytes) => out.write_all(&bytes)?,
            Err(e) => {
                failed += 1;
                writeln!(io::stderr(), "line {}: {e:#}", i + 1)?;
            }
        }
    }
    out.flush()?;
    Ok(u8::from(failed > 0))
}

/// True when colour should be used on standard output.
#[must_use]
pub fn want_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    }
}
