//! Store-and-forward: every outgoing message is written here, durably, before it is sent.
//!
//! The daemon talks to the [`Store`] trait; [`SledStore`] implements it on sled (see
//! `docs/ARCHITECTURE.md` for why sled, and why the trait keeps a change cheap).
//!
//! # Layout
//!
//! One sled database with these trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `queue/<platform>` | sequence number, `u64` big-endian | a record |
//! | `history` | CN `u16` BE, `DataTime` (see below) `u64` BE, sequence `u64` BE | a record |
//! | `corrupt` | tree name, `0x00`, the original key | the bytes found |
//! | `meta` | UTF-8 name | UTF-8 value (such as `pw/<platform>`, a password set by CN 1072) |
//!
//! Sequence numbers come from sled's `generate_id`, which is monotonic across restarts, so keys
//! sort in the order records were written and a queue is read oldest first by a plain range scan.
//! The `DataTime` in history keys is the civil time in milliseconds since 1970 (zone-less, as
//! HJ 212 writes it) with the sign bit flipped, so that it sorts as an unsigned number.
//!
//! # Record format (version 1)
//!
//! ```text
//! offset size field
//!      0    1 format version (1)
//!      1    1 flags: bit 0 = aggregate record (2031/2041/2051/2061), kept as history
//!      2    2 CN, u16 BE
//!      4    8 DataTime, i64 BE, civil milliseconds since 1970 (0 when the message has none)
//!     12    8 written at, i64 BE, UTC milliseconds since 1970
//!     20    4 frame length n, u32 BE
//!     24    4 CRC-32/ISO-HDLC of bytes 0..24 followed by the frame
//!     28    n the frame: `##` + length + data segment + CRC + CR LF, as for the site's own PW
//! ```
//!
//! The frame is the whole message. A data segment over 1024 bytes is stored whole and split into
//! sub-packets by the uplink's session when it is sent; each platform's uplink replaces `PW`,
//! the `Flag` version and the CRC variant with its own before sending.
//!
//! # Invariants
//!
//! - [`Store::append`] returns only after the record is in every platform's queue and flushed to
//!   disk; the caller sends nothing before that.
//! - A record leaves a platform's queue only through [`Store::remove`] (called on the platform's
//!   `9014`, or after the socket write for uploads sent without an ack request) or the size cap.
//! - The size cap drops real-time records (2011, 2021) oldest first and never an
//!   aggregate; each drop is counted and logged.
//! - A record whose version, length or checksum is wrong is moved to `corrupt`, counted and
//!   logged, and skipped; it is never a reason to refuse to start.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crc::{CRC_32_ISO_HDLC, Crc};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
/// The record format version written.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 28;
const FLAG_AGGREGATE: u8 = 1;
/// Records scanned at most for real-time records to drop when a queue is full.
const DROP_SCAN_LIMIT: usize = 10_000;

/// A store error (IO or database).
#[derive(Debug)]
pub struct StoreError(String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The command code.
    pub cn: u16,
    /// `DataTime` in civil milliseconds since 1970, 0 when the message has none.
    pub data_time_ms: i64,
    /// When it was written, UTC milliseconds since 1970.
    pub written_ms: i64,
    /// The frame.
    pub frame: Vec<u8>,
}

impl Record {
    /// True for 2031/2041/2051/2061, which are also kept as history.
    #[must_use]
    pub const fn is_aggregate(&self) -> bool {
        matches!(self.cn, 2031 | 2041 | 2051 | 2061)
    }

    /// True for records the size cap may drop: real-time data and facility states.
    #[must_use]
    pub const fn is_droppable(&self) -> bool {
        matches!(self.cn, 2011 | 2021)
    }

    /// Encodes the record in the version-1 format of the module docs.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.frame.len());
        v.push(FORMAT_VERSION);
        v.push(if self.is_aggregate() { FLAG_AGGREGATE } else { 0 });
        v.extend_from_slice(&self.cn.to_be_bytes());
        v.extend_from_slice(&self.data_time_ms.to_be_bytes());
        v.extend_from_slice(&self.written_ms.to_be_bytes());
        v.extend_from_slice(&u32::try_from(self.frame.len()).unwrap_or(u32::MAX).to_be_bytes());
        let mut digest = CRC32.digest();
        digest.update(&v);
        digest.update(&self.frame);
        v.extend_from_slice(&digest.finalize().to_be_bytes());
        v.extend_from_slice(&self.frame);
        v
    }

    /// Decodes a stored value; `None` when it is corrupt or of an unknown version.
    #[must_use]
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() < HEADER_LEN || v[0] != FORMAT_VERSION {
            return None;
        }
        let be8 = |at: usize| <[u8; 8]>::try_from(&v[at..at + 8]).ok();
        let len = u32::from_be_bytes(v[20..24].try_into().ok()?) as usize;
        if v.len() != HEADER_LEN + len {
            return None;
        }
        let stored = u32::from_be_bytes(v[24..28].try_into().ok()?);
        let mut digest = CRC32.digest();
        digest.update(&v[..24]);
        digest.update(&v[HEADER_LEN..]);
        if digest.finalize() != stored {
            return None;
        }
        Some(Self {
            cn: u16::from_be_bytes([v[2], v[3]]),
            data_time_ms: i64::from_be_bytes(be8(4)?),
            written_ms: i64::from_be_bytes(be8(12)?),
            frame: v[HEADER_LEN..].to_vec(),
        })
    }
}

/// Counters of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records written.
    pub appended: u64,
    /// Records removed after delivery.
    pub delivered: u64,
    /// Real-time records dropped by the size cap.
    pub dropped: u64,
    /// Corrupt records found and skipped.
    pub corrupt: u64,
}

/// What the daemon needs from its store. Every method blocks on disk IO; async callers use
/// `spawn_blocking` for [`Store::append`], which flushes.
pub trait Store: Send + Sync + fmt::Debug {
    /// Writes `record` to every platform's queue (and to history when it is an aggregate), then
    /// flushes. Returns the record's sequence number.
    ///
    /// # Errors
    /// The database failed; nothing may be sent then.
    fn append(&self, record: &Record) -> Result<u64, StoreError>;

    /// Up to `limit` records of `platform`'s queue with sequence numbers `>= from`, oldest first.
    /// Corrupt records are skipped (and moved aside).
    ///
    /// # Errors
    /// The database failed.
    fn queue_range(&self, platform: &str, from: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError>;

    /// Removes a record from `platform`'s queue (delivered, or deliberately skipped).
    ///
    /// # Errors
    /// The database failed.
    fn remove(&self, platform: &str, seq: u64) -> Result<(), StoreError>;

    /// Records in `platform`'s queue.
    fn queue_len(&self, platform: &str) -> u64;

    /// The newest sequence number in `platform`'s queue.
    fn last_seq(&self, platform: &str) -> Option<u64>;

    /// Aggregate records of `cn` whose `DataTime` is in `begin_ms..=end_ms`, oldest first, at
    /// most `limit`.
    ///
    /// # Errors
    /// The database failed.
    fn history(&self, cn: u16, begin_ms: i64, end_ms: i64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// Deletes history with `DataTime` before `before_ms`; returns how many records went.
    ///
    /// # Errors
    /// The database failed.
    fn purge_history(&self, before_ms: i64) -> Result<usize, StoreError>;

    /// A stored setting.
    fn meta(&self, key: &str) -> Option<String>;

    /// Stores a setting durably.
    ///
    /// # Errors
    /// The database failed.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// The counters.
    fn stats(&self) -> StoreStats;
}

/// The sled implementation of [`Store`].
pub struct SledStore {
    db: sled::Db,
    queues: Vec<(String, sled::Tree)>,
    history: sled::Tree,
    corrupt: sled::Tree,
    meta: sled::Tree,
    lens: Mutex<HashMap<String, u64>>,
    max_queue_records: u64,
    appended: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    corrupt_count: AtomicU64,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore").field("queues", &self.queues.len()).field("stats", &self.stats()).finish()
    }
}

fn history_key(cn: u16, data_time_ms: i64, seq: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(&cn.to_be_bytes());
    k[2..10].copy_from_slice(&((data_time_ms as u64) ^ (1 << 63)).to_be_bytes());
    k[10..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Opens the sled database, waiting up to two seconds for a previous owner in this process to
/// finish closing: sled releases its file lock from a background thread after the last handle
/// is dropped, so an immediate reopen (a restart inside one process, as the tests and `hj212`
/// subcommands do) can briefly see the lock still held. Another process holding it is reported
/// after the wait.
fn open_db(path: &Path, cache_bytes: Option<u64>) -> Result<sled::Db, StoreError> {
    let mut waited = 0;
    loop {
        let mut config = sled::Config::new().path(path);
        if let Some(bytes) = cache_bytes {
            config = config.cache_capacity(bytes);
        }
        match config.open() {
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                if waited >= 2000 {
                    return Err(sled::Error::Io(e).into());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                waited += 20;
            }
            other => return Ok(other?),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` with one queue per name in `platforms`, and scans
    /// the queues: their lengths are counted and corrupt records moved aside.
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open(path: &Path, platforms: &[String], max_queue_records: u64) -> Result<Self, StoreError> {
        Self::open_with_cache(path, platforms, max_queue_records, None)
    }

    /// As [`SledStore::open`], with sled's page cache limited to `cache_bytes` (sled's default,
    /// 1 GiB, when `None`).
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open_with_cache(
        path: &Path,
        platforms: &[String],
        max_queue_records: u64,
        cache_bytes: Option<u64>,
    ) -> Result<Self, StoreError> {
        let db = open_db(path, cache_bytes)?;
        let mut queues = Vec::new();
        for name in platforms {
            queues.push((name.clone(), db.open_tree(format!("queue/{name}"))?));
        }
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some(p) = name.strip_prefix("queue/") {
                if !platforms.iter().any(|n| n == p) {
                    tracing::warn!(platform = p, "Queue of a platform no longer configured kept as it is.");
                }
            }
        }
        let store = Self {
            history: db.open_tree("history")?,
            corrupt: db.open_tree("corrupt")?,
            meta: db.open_tree("meta")?,
            db,
            queues,
            lens: Mutex::new(HashMap::new()),
            max_queue_records,
            appended: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            corrupt_count: AtomicU64::new(0),
        };
        for (name, tree) in &store.queues {
            let mut len = 0u64;
            for item in tree.iter() {
                let (k, v) = item?;
                if Record::decode(&v).is_some() {
                    len += 1;
                } else {
                    store.set_aside(&format!("queue/{name}"), tree, &k, &v)?;
                }
            }
            store.lens_mut().insert(name.clone(), len);
            if len > 0 {
                tracing::info!(platform = %name, queued = len, "Queue recovered.");
            }
        }
        Ok(store)
    }

    fn lens_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A poisoned lock only means another thread panicked while counting; the map is still usable.
        self.lens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tree(&self, platform: &str) -> Option<&sled::Tree> {
        self.queues.iter().find(|(n, _)| n == platform).map(|(_, t)| t)
    }

    fn set_aside(&self, tree_name: &str, tree: &sled::Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut k = tree_name.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(key);
        self.corrupt.insert(k, value)?;
        tree.remove(key)?;
        self.corrupt_count.fetch_add(1, Ordering::Relaxed);
        tracing::error!(tree = tree_name, key = ?key, len = value.len(), "Corrupt store record skipped and set aside.");
        Ok(())
    }

    /// Drops real-time records oldest first until `platform`'s queue is within the cap.
    fn enforce_cap(&self, platform: &str, tree: &sled::Tree) -> Result<(), StoreError> {
        let len = self.queue_len(platform);
        if len <= self.max_queue_records {
            return Ok(());
        }
        let mut excess = len - self.max_queue_records;
        let mut victims = Vec::new();
        for item in tree.iter().take(DROP_SCAN_LIMIT) {
            let (k, v) = item?;
            if Record::decode(&v).is_none_or(|r| r.is_droppable()) {
                victims.push(k);
                excess -= 1;
                if excess == 0 {
                    break;
                }
            }
        }
        for k in &victims {
            if tree.remove(k)?.is_some() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = self.lens_mut().get_mut(platform) {
                    *l = l.saturating_sub(1);
                }
            }
        }
        if !victims.is_empty() {
            tracing::warn!(
                platform,
                dropped = victims.len(),
                cap = self.max_queue_records,
                "Queue full: oldest real-time records dropped."
            );
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn append(&self, record: &Record) -> Result<u64, StoreError> {
        let seq = self.db.generate_id()?;
        let key = seq.to_be_bytes();
        let value = record.encode();
        for (name, tree) in &self.queues {
            tree.insert(key, value.as_slice())?;
            *self.lens_mut().entry(name.clone()).or_insert(0) += 1;
        }
        if record.is_aggregate() {
            self.history.insert(history_key(record.cn, record.data_time_ms, seq), value.as_slice())?;
        }
        for (name, tree) in &self.queues {
            self.enforce_cap(name, tree)?;
        }
        self.db.flush()?;
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    fn queue_range(&self, platform: &str, from: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let Some(tree) = self.tree(platform) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for item in tree.range(from.to_be_bytes()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                bad.push((k, v));
                continue;
            };
            match Record::decode(&v) {
                Some(r) => out.push((u64::from_be_bytes(key), r)),
                None => bad.push((k, v)),
            }
        }
        for (k, v) in bad {
            self.set_aside(&format!("queue/{platform}"), tree, &k, &v)?;
            if let Some(l) = self.lens_mut().get_mut(platform) {
                *l = l.saturating_sub(1);
            }
        }
        Ok(out)
    }

    fn remove(&self, platform: &str, seq: u64) -> Result<(), StoreError> {
        let Some(tree) = self.tree(platform) else { return Ok(()) };
        if tree.remove(seq.to_be_bytes())?.is_some() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = self.lens_mut().get_mut(platform) {
                *l = l.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn queue_len(&self, platform: &str) -> u64 {
        self.lens_mut().get(platform).copied().unwrap_or(0)
    }

    fn last_seq(&self, platform: &str) -> Option<u64> {
        let (k, _) = self.tree(platform)?.last().ok()??;
        <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes)
    }

    fn history(&self, cn: u16, begin_ms: i64, end_ms: i64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let lo = history_key(cn, begin_ms, 0);
        let hi = history_key(cn, end_ms, u64::MAX);
        let mut out = Vec::new();
        for item in self.history.range(lo..=hi) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            match Record::decode(&v) {
                Some(r) => out.push(r),
                None => self.set_aside("history", &self.history, &k, &v)?,
            }
        }
        Ok(out)
    }

    fn purge_history(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for cn in [2031u16, 2041, 2051, 2061] {
            let lo = history_key(cn, i64::MIN, 0);
            let hi = history_key(cn, before_ms, 0);
            let keys: Vec<sled::IVec> = self.history.range(lo..hi).keys().collect::<Result<_, _>>()?;
            for k in keys {
                self.history.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn meta(&self, key: &str) -> Option<String> {
        let v = self.meta.get(key).ok()??;
        String::from_utf8(v.to_vec()).ok()
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key, value.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            appended: self.appended.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            corrupt: self.corrupt_count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cn: u16, t: i64) -> Record {
        Record { cn, data_time_ms: t, written_ms: 1, frame: format!("##0010CN={cn}\r\n").into_bytes() }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hj212-gw-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = rec(2061, 1_700_000_000_000);
        let v = r.encode();
        assert_eq!(Record::decode(&v), Some(r));
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            assert_eq!(Record::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Record::decode(&v[..v.len() - 1]), None);
    }

    #[test]
    fn queues_are_independent_and_history_is_kept() {
        let dir = temp("queues");
        let names = vec!["a".to_string(), "b".to_string()];
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        let s1 = s.append(&rec(2011, 1)).unwrap();
        let s2 = s.append(&rec(2061, 3_600_000)).unwrap();
        assert!(s2 > s1);
        s.remove("a", s1).unwrap();
        assert_eq!(s.queue_len("a"), 1);
        assert_eq!(s.queue_len("b"), 2);
        assert_eq!(s.queue_range("b", 0, 10).unwrap().len(), 2);
        assert_eq!(s.history(2061, 0, 3_600_000, 10).unwrap().len(), 1);
        assert_eq!(s.history(2061, 0, 3_599_999, 10).unwrap().len(), 0);
        assert_eq!(s.purge_history(3_600_001).unwrap(), 1);
        drop(s);
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b")), (1, 2));
        assert_eq!(s.last_seq("b"), Some(s2));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_drops_real_time_records_only() {
        let dir = temp("cap");
        let names = vec!["a".to_string()];
        let s = SledStore::open(&dir, &names, 100).unwrap();
        for i in 0..60 {
            s.append(&rec(2051, i)).unwrap();
            s.append(&rec(2011, i)).unwrap();
        }
        assert_eq!(s.queue_len("a"), 100);
        assert_eq!(s.stats().dropped, 20);
        let left = s.queue_range("a", 0, 1000).unwrap();
        assert_eq!(left.iter().filter(|(_, r)| r.cn == 2051).count(), 60);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_records_are_skipped_and_counted_and_the_store_still_opens() {
        let dir = temp("corrupt");
        let names = vec!["a".to_string()];
        {
            let s = SledStore::open(&dir, &names, 1000).unwrap();
            s.append(&rec(2011, 1)).unwrap();
            s.append(&rec(2011, 2)).unwrap();
            let tree = s.tree("a").unwrap();
            let (k, v) = tree.first().unwrap().unwrap();
            let mut bad = v.to_vec();
            bad[30] ^= 1;
            tree.insert(k, bad).unwrap();
            s.db.flush().unwrap();
        }
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        assert_eq!(s.stats().corrupt, 1);
        assert_eq!(s.queue_len("a"), 1);
        assert_eq!(s.queue_range("a", 0, 10).unwrap()[0].1.data_time_ms, 2);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
