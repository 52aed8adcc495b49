//! `hj212 maintenance start|stop`: the on-site electronic O&M record, kept in the gateway store's
//! `meta` tree.
//!
//! | key | value |
//! |---|---|
//! | `maintenance/open` | JSON `{"operator","reason","start_ms"}` while a maintenance is open; empty once closed |
//! | `maintenance/log/<start_ms, 20 digits>` | JSON `{"operator","reason","start_ms","stop_ms","summary"}` of each closed one |
//!
//! Times are UTC milliseconds. sled's lock means these commands only work while the daemon is
//! stopped; a held lock is reported and exits 2. The daemon does not yet act on the record (flag
//! `M`, `i22002`, the `i21001` log upload): see docs/cli.md.

use std::io::{self, Write};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::outbox::{StoreArgs, open_db};

/// The key of the open maintenance record.
pub const OPEN_KEY: &str = "maintenance/open";
/// The prefix of closed maintenance records.
pub const LOG_PREFIX: &str = "maintenance/log/";

/// The maintenance subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum MaintenanceCmd {
    /// Open a maintenance record: who and why.
    Start {
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
        /// The maintainer's name.
        #[arg(long)]
        operator: String,
        /// What is being done.
        #[arg(long)]
        reason: String,
    },
    /// Close the open maintenance record with a summary.
    Stop {
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
        /// What was done.
        #[arg(long)]
        summary: String,
    },
}

fn utc_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `i21001` log text for a record: `//…//`, trimmed to stay under 890 bytes of UTF-8.
#[must_use]
pub fn log_text(body: &str) -> String {
    let clean: String = body.chars().map(|c| if matches!(c, ';' | ',' | '&' | '=') { ' ' } else { c }).collect();
    let mut cut = clean.as_str();
    while cut.len() > 885 {
        let mut end = cut.len() - 1;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut = &cut[..end];
    }
    format!("//{cut}//")
}

/// Runs a maintenance subcommand.
///
/// # Errors
/// The store cannot be opened (or is locked), or nothing is open to stop.
pub fn run(cmd: &MaintenanceCmd) -> Result<u8> {
    let store = match cmd {
        MaintenanceCmd::Start { store, .. } | MaintenanceCmd::Stop { store, .. } => store,
    };
    let (path, _) = store.resolve()?;
    let db = open_db(&path)?;
    let meta = db.open_tree("meta").context("cannot open the meta tree")?;
    let open: Option<serde_json::Value> =
        meta.get(OPEN_KEY)?.filter(|v| !v.is_empty()).and_then(|v| serde_json::from_slice(&v).ok());
    let mut out = io::stdout().lock();
    match cmd {
        MaintenanceCmd::Start { operator, reason, .. } => {
            if let Some(o) = open {
                bail!("a maintenance is already open: {o}; stop it first");
            }
            if operator.trim().is_empty() || reason.trim().is_empty() {
                bail!("--operator and --reason must not be empty");
            }
            let record = json!({"operator": operator, "reason": reason, "start_ms": utc_ms()});
            meta.insert(OPEN_KEY, record.to_string().as_bytes())?;
            db.flush()?;
            writeln!(out, "maintenance started: {}", log_text(&format!("{operator}: {reason}")))?;
        }
        MaintenanceCmd::Stop { summary, .. } => {
            let Some(mut record) = open else { bail!("no maintenance is open") };
            record["stop_ms"] = json!(utc_ms());
            record["summary"] = json!(summary);
            let start = record["start_ms"].as_i64().unwrap_or(0);
            meta.insert(format!("{LOG_PREFIX}{start:020}"), record.to_string().as_bytes())?;
            meta.insert(OPEN_KEY, b"".as_slice())?;
            db.flush()?;
            let who = record["operator"].as_str().unwrap_or("");
            writeln!(out, "maintenance stopped: {}", log_text(&format!("{who}: {summary}")))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_is_bounded_and_has_no_separators() {
        let t = log_text(&"维护;".repeat(400));
        assert!(t.len() < 890 && t.starts_with("//") && t.ends_with("//"));
        assert!(!t.contains(';'));
    }
}
