//! `hj212 outbox`: what the gateway still has to deliver, per platform: queue depth, oldest and
//! newest record (CN, `DataTime`, age).
//!
//! sled has no read-only mode: the database is opened normally but nothing is written to it
//! (records are read, never moved or removed). sled takes an exclusive lock, so while the daemon
//! runs the store cannot be opened; that is reported as such, with exit code 2.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::store::Record;

/// Where the store is.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store directory (the gateway's `store.path`).
    #[arg(long, conflicts_with = "config")]
    pub store: Option<PathBuf>,
    /// The gateway's configuration file; its `store.path` is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl StoreArgs {
    /// The store path and the configured platform names (empty without a configuration).
    ///
    /// # Errors
    /// Neither option given, or the configuration cannot be loaded.
    pub fn resolve(&self) -> Result<(PathBuf, Vec<String>)> {
        match (&self.store, &self.config) {
            (Some(p), _) => Ok((p.clone(), Vec::new())),
            (None, Some(c)) => {
                let config = crate::Config::load(Some(c))?;
                Ok((config.store.path.clone(), config.platform.iter().map(|p| p.name.clone()).collect()))
            }
            (None, None) => bail!("give --store PATH or --config gateway.toml"),
        }
    }
}

/// Opens an existing sled database; a lock held by the daemon is said clearly.
///
/// # Errors
/// The directory holds no store, or it is locked or unreadable.
pub fn open_db(path: &Path) -> Result<sled::Db> {
    if !path.join("conf").exists() && !path.join("db").exists() {
        bail!("{} holds no gateway store", path.display());
    }
    sled::Config::new().path(path).open().map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily unavailable") {
            anyhow::anyhow!(
                "the store at {} is locked, most likely by the running gateway daemon (stop it, or read its metrics endpoint instead): {text}",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot open the store at {}: {text}", path.display())
        }
    })
}

fn utc_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn age_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

fn data_time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    hj212_codec::time::DateTime::from_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}

fn record_json(seq: u64, r: &Record, now: i64) -> serde_json::Value {
    json!({"seq": seq, "cn": r.cn, "data_time": data_time(r.data_time_ms), "written_ms": r.written_ms, "age_s": (now - r.written_ms).max(0) / 1000})
}

fn record_text(seq: u64, r: &Record, now: i64) -> String {
    format!("#{seq} CN={} DataTime={} written {} ago", r.cn, data_time(r.data_time_ms), age_text(now - r.written_ms))
}

fn entry(tree: &sled::Tree, last: bool) -> Result<Option<(u64, Option<Record>)>> {
    let item = if last { tree.last()? } else { tree.first()? };
    Ok(item.map(|(k, v)| {
        let seq = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes).unwrap_or(0);
        (seq, Record::decode(&v))
    }))
}

/// Runs `outbox`.
///
/// # Errors
/// The store cannot be opened (exit 2).
pub fn run(args: &StoreArgs, json_out: bool) -> Result<u8> {
    let (path, configured) = args.resolve()?;
    let db = open_db(&path)?;
    let mut names: Vec<String> = db
        .tree_names()
        .iter()
        .filter_map(|n| String::from_utf8_lossy(n).strip_prefix("queue/").map(str::to_string))
        .collect();
    for c in &configured {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    let now = utc_ms();
    let mut out = io::stdout().lock();
    if names.is_empty() && !json_out {
        writeln!(out, "no platform queues in {}", path.display())?;
    }
    for name in &names {
        let tree = db.open_tree(format!("queue/{name}")).context("cannot open a queue")?;
        let depth = tree.len();
        let oldest = entry(&tree, false)?;
        let newest = entry(&tree, true)?;
        let note = if !configured.is_empty() && !configured.contains(name) { " (not configured)" } else { "" };
        if json_out {
            let one = |e: &Option<(u64, Option<Record>)>| match e {
                Some((seq, Some(r))) => record_json(*seq, r, now),
                Some((seq, None)) => json!({"seq": seq, "corrupt": true}),
                None => serde_json::Value::Null,
            };
            writeln!(
                out,
                "{}",
                json!({"type": "platform", "platform": name, "configured": note.is_empty(), "depth": depth, "oldest": one(&oldest), "newest": one(&newest)})
            )?;
        } else {
            writeln!(out, "{name}{note}: {depth} queued")?;
            for (label, e) in [("oldest", &oldest), ("newest", &newest)] {
                match e {
                    Some((seq, Some(r))) => writeln!(out, "  {label}: {}", record_text(*seq, r, now))?,
                    Some((seq, None)) => writeln!(out, "  {label}: #{seq} (corrupt record)")?,
                    None => {}
                }
            }
        }
    }
    Ok(0)
}
