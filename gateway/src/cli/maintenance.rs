//! `hj212 maintenance start|stop`: the on-site electronic O&M record.
//!
//! The commands write the maintenance file ([`crate::maintenance`]: JSON, atomically; by
//! default `maintenance.json` next to the store directory, `store.maintenance_file` with
//! `--config`). They never open the store, so they work while the daemon runs: the daemon reads
//! the file within a poll cycle, flags data `M`, uploads the `i21001` logs and `i22002`, and
//! keeps the history in its store's `meta` tree (`maintenance/open`, `maintenance/log/<start
//! ms>`). A maintenance done while the daemon is stopped is recorded and its log uploaded at its
//! next start.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::maintenance::{self as m, Record};
pub use crate::maintenance::{LOG_PREFIX, OPEN_KEY, log_text};

use super::outbox::StoreArgs;

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

/// The maintenance file for `--store` or `--config`.
fn file(store: &StoreArgs) -> Result<PathBuf> {
    match (&store.store, &store.config) {
        (Some(p), _) => Ok(m::file_for(p, std::path::Path::new(""))),
        (None, Some(c)) => Ok(crate::Config::load(Some(c))?.maintenance_file()),
        (None, None) => bail!("give --store PATH or --config gateway.toml"),
    }
}

/// Runs a maintenance subcommand.
///
/// # Errors
/// The file cannot be read or written, a maintenance is already open (start), or none is (stop).
pub fn run(cmd: &MaintenanceCmd) -> Result<u8> {
    let store = match cmd {
        MaintenanceCmd::Start { store, .. } | MaintenanceCmd::Stop { store, .. } => store,
    };
    let path = file(store)?;
    let current = m::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let open = current.filter(Record::is_open);
    let mut out = io::stdout().lock();
    match cmd {
        MaintenanceCmd::Start { operator, reason, .. } => {
            if let Some(o) = open {
                bail!("a maintenance is already open (by {}: {}); stop it first", o.operator, o.reason);
            }
            if operator.trim().is_empty() || reason.trim().is_empty() {
                bail!("--operator and --reason must not be empty");
            }
            let record = Record {
                operator: operator.clone(),
                reason: reason.clone(),
                start_ms: utc_ms(),
                stop_ms: None,
                summary: None,
            };
            m::write(&path, &record).with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "maintenance started: {}", log_text(&format!("{operator}: {reason}")))?;
        }
        MaintenanceCmd::Stop { summary, .. } => {
            let Some(mut record) = open else { bail!("no maintenance is open") };
            record.stop_ms = Some(utc_ms().max(record.start_ms));
            record.summary = Some(summary.clone());
            m::write(&path, &record).with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "maintenance stopped: {}", log_text(&format!("{}: {summary}", record.operator)))?;
        }
    }
    Ok(0)
}
