//! `hj212 decode` and `hj212 check`: read raw streams, cut frames, judge them, print.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use hj212_codec::tables;
use hj212_codec::{Command, DataFlag, Decoded, Deframer, Event, Packet, SkipReason, SplitConfig, Splitter};
use serde_json::json;

use super::{ColorChoice, ReadOpts, json as j};

/// ANSI styling, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Resolves the colour choice against the terminal and the environment.
    #[must_use]
    pub fn new(choice: ColorChoice) -> Self {
        Self { on: super::want_color(choice) }
    }

    pub(super) fn paint(self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    pub(super) fn red(self, t: &str) -> String {
        self.paint("31", t)
    }
    pub(super) fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    pub(super) fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    pub(super) fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
    pub(super) fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// What to print.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    /// One readable block per frame.
    Text(Style),
    /// JSON Lines.
    Json,
    /// Only the summary.
    Summary {
        /// As JSON.
        json: bool,
        /// Styling for the text form.
        style: Style,
    },
}

/// Counts gathered over a run.
#[derive(Debug, Default, Clone)]
pub struct DecodeStats {
    /// Frames cut.
    pub frames: u64,
    /// Frames accepted.
    pub valid: u64,
    /// Frames refused.
    pub invalid: u64,
    /// Runs of skipped bytes.
    pub skipped_runs: u64,
    /// Skipped bytes.
    pub skipped_bytes: u64,
    /// Skipped runs that began with `##` (broken frames), by reason.
    pub broken: BTreeMap<&'static str, u64>,
    /// Refusals by error kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Deviations seen (accepted or not), by name.
    pub deviations: BTreeMap<&'static str, u64>,
    /// Bytes read.
    pub bytes: u64,
    /// CP pairs read in valid frames.
    pub pairs: u64,
}

impl DecodeStats {
    fn summary_json(&self) -> serde_json::Value {
        json!({
            "type": "summary",
            "bytes": self.bytes,
            "frames": self.frames,
            "valid": self.valid,
            "invalid": self.invalid,
            "skipped_runs": self.skipped_runs,
            "skipped_bytes": self.skipped_bytes,
            "broken": self.broken,
            "errors": self.errors,
            "deviations": self.deviations,
            "pairs": self.pairs,
        })
    }

    fn summary_text(&self, style: Style) -> String {
        let mut s = format!(
            "{} frames: {} valid, {} invalid; {} bytes skipped in {} runs; {} bytes read",
            self.frames,
            style.green(&self.valid.to_string()),
            if self.invalid > 0 { style.red(&self.invalid.to_string()) } else { "0".into() },
            self.skipped_bytes,
            self.skipped_runs,
            self.bytes,
        );
        for (title, map) in [("errors", &self.errors), ("broken", &self.broken), ("deviations", &self.deviations)] {
            if !map.is_empty() {
                let items: Vec<_> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(s, "\n  {title}: {}", items.join(" "));
            }
        }
        s
    }

    /// 1 when anything was refused (invalid frames or broken `##` runs), else 0.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        u8::from(self.invalid > 0 || !self.broken.is_empty())
    }
}

/// Runs decode or check over the inputs.
///
/// # Errors
/// IO errors, including a closed standard output.
pub fn run(opts: &ReadOpts, output: Output) -> Result<u8> {
    let options = opts.decode_options();
    let splitter =
        Splitter::new(SplitConfig { max_data_len: opts.max_len.min(hj212_codec::frame::MAX_DATA_LEN_FIELD) });
    let mut stats = DecodeStats::default();
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let inputs: Vec<&Path> =
        if opts.inputs.is_empty() { vec![Path::new("-")] } else { opts.inputs.iter().map(AsRef::as_ref).collect() };
    for path in inputs {
        let mut reader: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        };
        let mut deframer = Deframer::new(splitter);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            if n == 0 {
                deframer.finish();
            } else {
                stats.bytes += n as u64;
                deframer.feed(&buf[..n]);
            }
            while let Some(event) = deframer.next_event() {
                handle(event, options, &mut stats, output, &mut out)?;
            }
            if n == 0 {
                break;
            }
        }
    }
    match output {
        Output::Json | Output::Summary { json: true, .. } => writeln!(out, "{}", stats.summary_json())?,
        Output::Text(style) | Output::Summary { json: false, style } => writeln!(out, "{}", stats.summary_text(style))?,
    }
    out.flush()?;
    Ok(stats.exit_code())
}

fn handle(
    event: Event<'_>,
    options: hj212_codec::DecodeOptions,
    stats: &mut DecodeStats,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    match event {
        Event::Skipped { offset, len, reason } => {
            stats.skipped_runs += 1;
            stats.skipped_bytes += len as u64;
            if let SkipReason::Broken(kind) = reason {
                *stats.broken.entry(kind.name()).or_default() += 1;
            }
            match output {
                Output::Json => writeln!(out, "{}", j::skipped_json(offset, len, reason))?,
                Output::Text(style) => {
                    let what = match reason {
                        SkipReason::Garbage => style.yellow("skipped"),
                        SkipReason::Broken(_) => style.red("broken"),
                    };
                    writeln!(out, "{} {what} {len} bytes ({})\n", style.dim(&format!("@{offset}")), reason.name())?;
                }
                Output::Summary { .. } => {}
            }
        }
        Event::Frame { offset, frame } => {
            stats.frames += 1;
            let decoded = Decoded::new(frame, options);
            for name in decoded.deviations().names() {
                *stats.deviations.entry(name).or_default() += 1;
            }
            match decoded.verdict() {
                Ok(p) => {
                    stats.valid += 1;
                    stats.pairs += p.cp().pairs().count() as u64;
                }
                Err(e) => {
                    stats.invalid += 1;
                    *stats.errors.entry(e.kind().name()).or_default() += 1;
                }
            }
            match output {
                Output::Json => writeln!(out, "{}", j::frame_json(offset, &decoded))?,
                Output::Text(style) => writeln!(out, "{}", frame_text(offset, &decoded, style))?,
                Output::Summary { .. } => {}
            }
        }
    }
    Ok(())
}

/// The readable block for one frame: a headline, then one line per `CP` group.
#[must_use]
pub fn frame_text(offset: u64, d: &Decoded<'_>, style: Style) -> String {
    let mut s = String::new();
    let verdict = d.verdict();
    let mark = if verdict.is_ok() { style.green("ok ") } else { style.red("BAD") };
    let _ = write!(s, "{} {mark}", style.dim(&format!("@{offset}")));
    match &d.packet {
        Ok(p) => {
            let _ = write!(s, " {}", headline(p, style));
        }
        Err(_) => {
            let _ = write!(s, " (unreadable data segment)");
        }
    }
    match d.crc {
        Ok(v) => {
            let _ = write!(s, "  {}", style.dim(&format!("crc {} {v}", String::from_utf8_lossy(d.frame.crc_text()))));
        }
        Err(e) => {
            let _ = write!(s, "  {}", style.red(&e.to_string()));
            // Name the variant that would have matched, so the engineer knows what to ask for.
            if let Ok(v) = hj212_codec::CrcPolicy::Auto.check(d.frame.data(), d.frame.crc_received()) {
                let _ =
                    write!(s, " {}", style.yellow(&format!("(matches the {v} variant: try --lenient or --crc {v})")));
            }
        }
    }
    let devs: Vec<_> = d.deviations().names().collect();
    if !devs.is_empty() {
        let _ = write!(s, "  {}", style.yellow(&format!("deviations: {}", devs.join(","))));
    }
    if let Err(e) = verdict {
        if !e.is_crc() || d.crc.is_ok() {
            let _ = write!(s, "\n    {}", style.red(&e.to_string()));
        }
    }
    if let Ok(p) = &d.packet {
        for g in p.cp().groups() {
            let items: Vec<String> = g.pairs().map(|pair| pair_text(pair, style)).collect();
            let _ = write!(s, "\n    {}", items.join("  "));
        }
    }
    s.push('\n');
    s
}

fn headline(p: &Packet<'_>, style: Style) -> String {
    let cn = p.cn();
    let label = Command::from_value(cn).label_for(p.version()).unwrap_or("unknown command");
    let mut s = format!("{} {}", style.bold(p.cn_str()), label);
    if let Some(qn) = p.qn() {
        let _ = write!(s, "  QN={qn}");
    }
    let st = p.st();
    match tables::system(st) {
        Some(info) => {
            let _ = write!(s, "  ST={st} ({})", info.name_en);
        }
        None => {
            let _ = write!(s, "  ST={st}");
        }
    }
    if let Some(mn) = p.mn() {
        let _ = write!(s, "  MN={mn}");
    }
    if let Some(flag) = p.flag() {
        let version = flag.version().year().map_or_else(|| "?".to_string(), |y| y.to_string());
        let _ = write!(
            s,
            "  Flag={} ({version}{}{})",
            flag.0,
            if flag.wants_ack() { ", ack" } else { "" },
            if flag.is_split() { ", split" } else { "" }
        );
    } else {
        let _ = write!(s, "  (no Flag: 2005 style)");
    }
    if let (Some(n), Some(o)) = (p.pnum(), p.pno()) {
        let _ = write!(s, "  packet {o}/{n}");
    }
    s
}

fn pair_text(pair: hj212_codec::Pair<'_>, style: Style) -> String {
    let key = pair.key();
    let Some(value) = pair.value() else { return style.red(key) };
    if let Some((_, "Flag")) = pair.code_and_suffix() {
        let flag = DataFlag::parse(value);
        let text = format!("{key}={value}");
        return if flag.is_normal() { text } else { style.yellow(&text) };
    }
    format!("{key}={value}")
}
