//! `hj212 tail`: follow a packet log (the gateway's or the ingest daemon's) and show each frame
//! on one line: time, direction, peer, command, values with their flags.
//!
//! The log format is `hj212_codec::log` (one record per line). A record whose password was
//! masked cannot have its CRC checked again, so its verdict is the one recorded when it was
//! written (`crc-bad`). With `-f`, the file is polled and re-opened when it is rotated or
//! truncated.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hj212_codec::log::{Direction, Record};
use hj212_codec::{Command, CrcPolicy, DataFlag, DecodeOptions, Decoded, Split, Splitter};
use serde_json::json;

use super::Style;

/// Filters and options for `tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailOpts {
    /// The packet log; default `/var/log/hj212/packets.log`.
    #[arg(default_value = "/var/log/hj212/packets.log", env = "HJ212_PACKET_LOG")]
    pub log: PathBuf,
    /// Keep reading as the log grows (and across rotation).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only frames from or to this MN.
    #[arg(long)]
    pub mn: Option<String>,
    /// Only frames with this command code (repeatable).
    #[arg(long)]
    pub cn: Vec<u16>,
    /// Only frames in this direction.
    #[arg(long, value_parser = ["in", "out"])]
    pub dir: Option<String>,
    /// Print JSON Lines (`{"type":"record",…}`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Start with the last N records (0 = from the start of the file).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub lines: usize,
}

/// Runs `tail`; returns the exit code (1 when any record was unreadable or a frame invalid).
///
/// # Errors
/// The log cannot be opened, or standard output is closed.
pub fn run(opts: &TailOpts, style: Style) -> Result<u8> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut bad = false;
    let mut file = open(&opts.log)?;
    let mut reader = BufReader::new(file.try_clone()?);
    if opts.lines > 0 {
        skip_to_last(&mut reader, opts.lines)?;
    }
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).with_context(|| format!("cannot read {}", opts.log.display()))?;
        if n > 0 && line.ends_with('\n') {
            line_no += 1;
            bad |= show(&line, line_no, opts, style, &mut out)?;
            continue;
        }
        if !opts.follow {
            if n > 0 {
                // A last line without LF: the writer was cut off; show what there is.
                line_no += 1;
                bad |= show(&line, line_no, opts, style, &mut out)?;
            }
            break;
        }
        // Put back a partial line and wait for the rest.
        if n > 0 {
            reader.seek_relative(-(n as i64))?;
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        if rotated(&file, &opts.log, reader.stream_position()?) {
            file = open(&opts.log)?;
            reader = BufReader::new(file.try_clone()?);
            line_no = 0;
        }
    }
    out.flush()?;
    Ok(u8::from(bad))
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open the packet log {}", path.display()))
}

/// True when the file at `path` is no longer the one open, or was truncated below `pos`.
fn rotated(open: &File, path: &Path, pos: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (open.metadata(), std::fs::metadata(path)) else { return false };
    a.ino() != b.ino() || b.len() < pos
}

fn skip_to_last(reader: &mut BufReader<File>, n: usize) -> Result<()> {
    let mut ends = std::collections::VecDeque::with_capacity(n + 1);
    let mut pos = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let k = reader.read_line(&mut line)?;
        if k == 0 {
            break;
        }
        ends.push_back(pos);
        if ends.len() > n {
            ends.pop_front();
        }
        pos += k as u64;
    }
    reader.seek(SeekFrom::Start(ends.front().copied().unwrap_or(pos)))?;
    Ok(())
}

/// Prints one record if it passes the filters; returns true when it was bad.
fn show(line: &str, line_no: u64, opts: &TailOpts, style: Style, out: &mut impl Write) -> Result<bool> {
    let record = match Record::parse_line(line) {
        Ok(r) => r,
        Err((field, at)) => {
            if opts.json {
                writeln!(out, "{}", json!({"type": "error", "line": line_no, "field": field, "offset": at}))?;
            } else {
                writeln!(out, "{}", style.red(&format!("line {line_no}: unreadable {field} at byte {at}")))?;
            }
            return Ok(true);
        }
    };
    if let Some(dir) = &opts.dir {
        if dir != record.direction.as_str() {
            return Ok(false);
        }
    }
    let Split::Frame(frame) = Splitter::default().split(&record.frame, true) else {
        // A record that holds no frame has no MN or CN to match a filter.
        if opts.mn.is_some() || !opts.cn.is_empty() {
            return Ok(true);
        }
        if opts.json {
            writeln!(
                out,
                "{}",
                json!({"type": "record", "time_ms": record.time_ms, "direction": record.direction.as_str(), "peer": record.peer, "frame": null, "raw": super::json::raw_json(&record.frame)})
            )?;
        } else {
            writeln!(out, "{} {}", stamp(&record, style), style.red("not a frame"))?;
        }
        return Ok(true);
    };
    // A masked frame cannot be re-checked; trust the verdict recorded with it.
    let policy = if record.masked { CrcPolicy::Off } else { CrcPolicy::Auto };
    let decoded = Decoded::new(frame, DecodeOptions { strict: false, crc: policy });
    let packet = decoded.packet.ok();
    if let Some(mn) = &opts.mn {
        if packet.as_ref().and_then(|p| p.mn()) != Some(mn.as_str()) {
            return Ok(false);
        }
    }
    if !opts.cn.is_empty() && !packet.as_ref().is_some_and(|p| opts.cn.contains(&p.cn())) {
        return Ok(false);
    }
    let crc_bad = record.crc_bad || decoded.crc.is_err();
    let bad = crc_bad || decoded.packet.is_err();
    if opts.json {
        let mut frame_json = super::json::frame_json(0, &decoded);
        if record.masked {
            frame_json["valid"] = json!(!bad);
        }
        frame_json.as_object_mut().map(|o| o.remove("offset"));
        writeln!(
            out,
            "{}",
            json!({"type": "record", "time_ms": record.time_ms, "time": &line[..24], "direction": record.direction.as_str(), "peer": record.peer, "masked": record.masked, "crc_bad": crc_bad, "frame": frame_json})
        )?;
        return Ok(bad);
    }
    let mut s = stamp(&record, style);
    match &decoded.packet {
        Ok(p) => {
            let label = Command::from_value(p.cn()).label_for(p.version()).unwrap_or("unknown command");
            s.push_str(&format!(" {} {label}", style.bold(p.cn_str())));
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
                let text = format!("{key}={value}");
                let flagged =
                    pair.code_and_suffix().is_some_and(|(_, suf)| suf == "Flag") && !DataFlag::parse(value).is_normal();
                s.push(' ');
                s.push_str(&if flagged { style.yellow(&text) } else { text });
            }
        }
        Err(e) => s.push_str(&format!(" {}", style.red(&e.to_string()))),
    }
    if crc_bad {
        s.push_str(&format!(" {}", style.red("CRC BAD")));
    }
    writeln!(out, "{s}")?;
    Ok(bad)
}

fn stamp(record: &Record, style: Style) -> String {
    let line = record.to_line();
    let arrow = match record.direction {
        Direction::In => style.green("<-"),
        Direction::Out => style.paint("36", "->"),
    };
    format!("{} {arrow} {}", style.dim(&line[..23].replace('T', " ")), record.peer)
}
