//! On-site maintenance (the electronic O&M record): the file `hj212 maintenance start|stop`
//! writes, and the daemon's side of it.
//!
//! # The channel
//!
//! The daemon holds sled's exclusive lock, so the CLI cannot write into the store while it runs.
//! Instead the CLI writes a small JSON file (atomically: temporary file, then rename), by default
//! `maintenance.json` next to the store directory (`<store dir>/../maintenance.json`;
//! `store.maintenance_file` overrides it):
//!
//! ```json
//! {"operator":"…","reason":"…","start_ms":1767225600000,"stop_ms":null,"summary":null}
//! ```
//!
//! A record without `stop_ms` is an open maintenance. Times are UTC milliseconds.
//!
//! # What the daemon does
//!
//! [`Watcher::poll`] runs once per poll cycle and re-reads the file when its modification time
//! or size changed. While a maintenance is open:
//!
//! - data flags `N` become `M` (worse flags such as `B`, `D`, `F`, `C`, `T` are kept);
//! - at the start, a 3020 without `PolId` carries `i21001` (the DAU log: who, when, reason) and
//!   `i22002=2` (DAU user state: maintainer);
//! - at the stop, a 3020 carries `i21001` (who, when, reason, summary) and `i22002=0`.
//!
//! The store keeps the history in its `meta` tree: `maintenance/open` (JSON of the open record,
//! empty once closed) and `maintenance/log/<start_ms, 20 digits>` (JSON of each closed record).
//! A maintenance opened and closed while the daemon was stopped is found at the next start: it
//! is recorded in the history and its stop log is uploaded then.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hj212_codec::message::{InfoItem, Message};
use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// The `meta` key of the open maintenance record.
pub const OPEN_KEY: &str = "maintenance/open";
/// The `meta` prefix of closed maintenance records.
pub const LOG_PREFIX: &str = "maintenance/log/";

/// One maintenance, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// Opened at, UTC ms.
    pub start_ms: i64,
    /// Closed at, UTC ms; `None` while open.
    #[serde(default)]
    pub stop_ms: Option<i64>,
    /// What was done; set at the stop.
    #[serde(default)]
    pub summary: Option<String>,
}

impl Record {
    /// True while the maintenance is open.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        self.stop_ms.is_none()
    }

    /// The `i21001` text for the start: `//maintenance start <time> operator: reason//`.
    #[must_use]
    pub fn start_log(&self, utc_offset_minutes: i32) -> String {
        log_text(&format!(
            "maintenance start {} {}: {}",
            civil(self.start_ms, utc_offset_minutes),
            self.operator,
            self.reason
        ))
    }

    /// The `i21001` text for the stop: `//maintenance stop <start>–<stop> operator: reason / summary//`.
    #[must_use]
    pub fn stop_log(&self, utc_offset_minutes: i32) -> String {
        log_text(&format!(
            "maintenance stop {}-{} {}: {} / {}",
            civil(self.start_ms, utc_offset_minutes),
            civil(self.stop_ms.unwrap_or(self.start_ms), utc_offset_minutes),
            self.operator,
            self.reason,
            self.summary.as_deref().unwrap_or("")
        ))
    }
}

fn civil(utc_ms: i64, offset_minutes: i32) -> String {
    DateTime::from_millis(utc_ms + i64::from(offset_minutes) * 60_000).map_or_else(
        || utc_ms.to_string(),
        |t| format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second),
    )
}

/// The `i21001` log text: `//…//`, separators (`; , & =`) replaced by spaces, trimmed on a
/// character boundary to stay under 890 bytes of UTF-8.
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

/// The maintenance file: `configured`, or `maintenance.json` next to the `store` directory.
#[must_use]
pub fn file_for(store: &Path, configured: &Path) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    store.with_file_name("maintenance.json")
}

/// Reads the file; `Ok(None)` when there is none.
///
/// # Errors
/// It cannot be read or is not a record.
pub fn read(path: &Path) -> std::io::Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the file atomically (a temporary file beside it, synced, then renamed).
///
/// # Errors
/// The directory is not writable.
pub fn write(path: &Path, record: &Record) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string(record).map_err(std::io::Error::other)?.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Watches the maintenance file for the daemon.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    open: Option<Record>,
    utc_offset_minutes: i32,
}

impl Watcher {
    /// A watcher of `path`; nothing is read until [`Watcher::poll`].
    #[must_use]
    pub const fn new(path: PathBuf, utc_offset_minutes: i32) -> Self {
        Self { path, stamp: None, open: None, utc_offset_minutes }
    }

    /// True while a maintenance is open.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Re-reads the file when it changed; returns the 3020 messages to upload (start or stop
    /// logs) and records the history in `store`.
    pub fn poll(&mut self, store: &dyn Store, now: DateTime) -> Vec<Message> {
        let stamp =
            std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == self.stamp {
            return Vec::new();
        }
        self.stamp = stamp;
        let record = match read(&self.path) {
            Ok(r) => r,
            Err(error) => {
                // Possibly a partial write by hand; the next change is read again.
                tracing::warn!(path = %self.path.display(), %error, "Maintenance file unreadable; ignored.");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        match record {
            Some(r) if r.is_open() => {
                if self.open.as_ref().is_some_and(|o| o.start_ms == r.start_ms) {
                    return out;
                }
                let known = store
                    .meta(OPEN_KEY)
                    .and_then(|v| serde_json::from_str::<Record>(&v).ok())
                    .is_some_and(|o| o.start_ms == r.start_ms);
                if let Err(error) = store.set_meta(OPEN_KEY, &serde_json::to_string(&r).unwrap_or_default()) {
                    tracing::error!(%error, "Cannot record the maintenance in the store.");
                }
                tracing::info!(operator = %r.operator, reason = %r.reason, "Maintenance started: data flagged M.");
                let mut items = Vec::new();
                if !known {
                    items.push(InfoItem { code: "i21001".into(), value: r.start_log(self.utc_offset_minutes) });
                }
                items.push(InfoItem { code: "i22002".into(), value: "2".into() });
                out.push(Message::SiteInfo { data_time: now, pol_id: None, items });
                self.open = Some(r);
            }
            Some(r) => {
                let key = format!("{LOG_PREFIX}{:020}", r.start_ms);
                let was_open = self.open.take().is_some();
                if store.meta(&key).is_none() {
                    let json = serde_json::to_string(&r).unwrap_or_default();
                    if let Err(error) = store.set_meta(&key, &json).and_then(|()| store.set_meta(OPEN_KEY, "")) {
                        tracing::error!(%error, "Cannot record the maintenance in the store.");
                    }
                    tracing::info!(operator = %r.operator, summary = ?r.summary, "Maintenance stopped.");
                    out.push(Message::SiteInfo {
                        data_time: now,
                        pol_id: None,
                        items: vec![
                            InfoItem { code: "i21001".into(), value: r.stop_log(self.utc_offset_minutes) },
                            InfoItem { code: "i22002".into(), value: "0".into() },
                        ],
                    });
                } else if was_open {
                    out.push(Message::SiteInfo {
                        data_time: now,
                        pol_id: None,
                        items: vec![InfoItem { code: "i22002".into(), value: "0".into() }],
                    });
                }
            }
            None => {
                if self.open.take().is_some() {
                    tracing::warn!(path = %self.path.display(), "Maintenance file removed; maintenance ended without a record.");
                    out.push(Message::SiteInfo {
                        data_time: now,
                        pol_id: None,
                        items: vec![InfoItem { code: "i22002".into(), value: "0".into() }],
                    });
                }
            }
        }
        out
    }
}

/// Flags `N` become `M` in data messages (other flags are kept).
pub fn flag_maintenance(messages: &mut [Message]) {
    for m in messages {
        if let Message::Data { items, .. } = m {
            for item in items {
                for (suffix, value) in &mut item.fields {
                    if suffix == "Flag" && value == "N" {
                        *value = "M".into();
                    }
                }
            }
        }
    }
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

    #[test]
    fn the_file_defaults_to_next_to_the_store() {
        assert_eq!(
            file_for(Path::new("/var/lib/g/store"), Path::new("")),
            PathBuf::from("/var/lib/g/maintenance.json")
        );
        assert_eq!(file_for(Path::new("/s"), Path::new("/x/m.json")), PathBuf::from("/x/m.json"));
    }
}
