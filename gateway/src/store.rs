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
//! | `counts` | the queue's tree name, `queue/<platform>` | records in that queue, `u64` BE; the newest sequence number counted, `u64` BE |
//! | `history` | CN `u16` BE, `DataTime` (see below) `u64` BE, sequence `u64` BE | a record |
//! | `corrupt` | tree name, `0x00`, the original key | the bytes found |
//! | `meta` | UTF-8 name | UTF-8 value (such as `pw/<platform>`, a password set by CN 1072) |
//!
//! Sequence numbers come from sled's `generate_id`, which is monotonic across restarts, so keys
//! sort in the order records were written and a queue is read oldest first by a plain range scan.
//! The `DataTime` in history keys is the civil time in milliseconds since 1970 (zone-less, as
//! HJ 212 writes it) with the sign bit flipped, so that it sorts as an unsigned number.
//!
//! `counts` holds each queue's length. It changes in the same sled transaction as the queue
//! (append, removal, cap drop, record set aside), so it is exact after a crash too, and opening
//! the store reads one number per queue instead of every record: a full scan would pull the whole
//! backlog into memory, which sled's cache does not give back (see `docs/performance.md`,
//! "Gateway footprint"). A queue is counted, and its count written, when the store is opened
//! and the queue has no count (a store written before `counts` existed, or a platform added
//! since), or holds a record newer than the newest its count knows of (an older gateway, which
//! does not keep `counts`, has run on the store since), or is empty with a count above zero.
//! The queue trees themselves are unchanged, so an older gateway can still run on the store; the
//! one case a count cannot notice is an older gateway that removed records but wrote none: the
//! count is then too high until a restart finds the queue empty.
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
//! # IO errors
//!
//! sled 0.34 stops writing after its first IO error: every later write returns the same error,
//! even once the cause is gone (a full disk that has been cleaned up). [`SledStore`] therefore
//! marks itself *poisoned* on an IO error (or on any error while appending) and, on the next
//! operation at least [`REOPEN_INTERVAL`] later, drops the database (every handle, so that sled
//! releases its file lock) and opens it again on the same path, retrying at that interval for as
//! long as it fails. Meanwhile writes fail, and so do many reads: sled splits and merges tree
//! nodes as it reads, which are writes. A record whose append failed was never acknowledged, so
//! it must not be sent: reads that still work skip it (and anything appended after it), and it is
//! deleted from the reopened database, should part of it have reached the disk, before the
//! database is used again. Everything appended successfully before was flushed, so it is
//! recovered, in order; a removal that was not yet flushed may be undone, and that record is sent
//! again (delivery is at least once, as after a crash).
//!
//! # Invariants
//!
//! - [`Store::append`] returns only after the record is in every platform's queue and flushed to
//!   disk; the caller sends nothing before that. A queue read never returns a record whose
//!   append has not returned successfully.
//! - A record leaves a platform's queue only through [`Store::remove`] (called on the platform's
//!   `9014`, or after the socket write for uploads sent without an ack request) or the size cap.
//! - The size cap drops real-time records (2011, 2021) oldest first and never an
//!   aggregate; each drop is counted and logged.
//! - A record whose version, length or checksum is wrong is moved to `corrupt`, counted and
//!   logged, and skipped when it is read; it is never a reason to refuse to start.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crc::{CRC_32_ISO_HDLC, Crc};
use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionResult, TransactionError, TransactionalTree};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
/// The record format version written.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 28;
const FLAG_AGGREGATE: u8 = 1;
/// Records scanned at most for real-time records to drop when a queue is full.
const DROP_SCAN_LIMIT: usize = 10_000;
/// How long a poisoned store waits before it reopens its database, and between attempts.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(2);
/// The tree of queue lengths.
const COUNTS: &str = "counts";
/// Records [`Store::first_written_since`] looks back at most.
pub const TAIL_SCAN_LIMIT: usize = 100_000;

/// A store error (IO or database).
#[derive(Debug)]
pub struct StoreError(String);

impl StoreError {
    fn reopening() -> Self {
        Self("the database is being reopened after an IO error".into())
    }
}

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

    /// Records in `platform`'s queue that may be read: a record whose append has not
    /// returned yet is not counted.
    fn queue_len(&self, platform: &str) -> u64;

    /// The newest sequence number in `platform`'s queue.
    fn last_seq(&self, platform: &str) -> Option<u64>;

    /// The oldest of the records at the tail of `platform`'s queue written at or after
    /// `since_ms` (UTC milliseconds): where the newest data starts. `None` when the newest record
    /// is older, or the queue is empty. Looks at most [`TAIL_SCAN_LIMIT`] records back.
    fn first_written_since(&self, platform: &str, since_ms: i64) -> Option<u64> {
        let _ = (platform, since_ms);
        None
    }

    /// Aggregate records of `cn` whose `DataTime` is in `begin_ms..=end_ms`, oldest first, at
    /// most `limit`.
    ///
    /// # Errors
    /// The database failed.
    fn history(&self, cn: u16, begin_ms: i64, end_ms: i64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// The `DataTime` of the latest aggregate record of `cn` kept as history, if any.
    fn latest_history_time(&self, cn: u16) -> Option<i64> {
        self.history(cn, i64::MIN, i64::MAX, usize::MAX).ok()?.last().map(|r| r.data_time_ms)
    }

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

/// One platform's queue.
struct Queue {
    platform: String,
    /// `queue/<platform>`: the tree's name, and its key in `counts`.
    name: String,
    tree: sled::Tree,
}

/// Every handle on one open sled database. sled keeps its file lock until the last handle is
/// dropped, so the database is reopened only once this whole value is gone; no handle leaves it.
struct Db {
    db: sled::Db,
    queues: Vec<Queue>,
    counts: sled::Tree,
    history: sled::Tree,
    corrupt: sled::Tree,
    meta: sled::Tree,
}

/// A transaction's error when it never aborts: only sled's own.
fn storage(e: TransactionError<Infallible>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(never) => match never {},
    }
}

fn be_u64(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

/// A queue's entry in `counts`: its length, and the newest sequence number counted in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    len: u64,
    newest: u64,
}

impl Count {
    fn decode(v: &[u8]) -> Option<Self> {
        (v.len() == 16).then(|| Self { len: be_u64(&v[..8]).unwrap_or(0), newest: be_u64(&v[8..]).unwrap_or(0) })
    }

    fn encode(self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.len.to_be_bytes());
        v[8..].copy_from_slice(&self.newest.to_be_bytes());
        v
    }
}

/// Counts a record in or out of `queue` inside a transaction over `counts`: `appended` is the
/// sequence number of a record written, `None` for one removed. Returns the new length.
fn update_count(
    counts: &TransactionalTree,
    queue: &str,
    appended: Option<u64>,
) -> ConflictableTransactionResult<u64, Infallible> {
    let mut c = counts.get(queue)?.and_then(|v| Count::decode(&v)).unwrap_or_default();
    match appended {
        Some(seq) => c = Count { len: c.len.saturating_add(1), newest: c.newest.max(seq) },
        None => c.len = c.len.saturating_sub(1),
    }
    counts.insert(queue.as_bytes(), &c.encode())?;
    Ok(c.len)
}

/// Counts the entries of `tree`, one lookup per entry. A plain iterator reads each page once,
/// and sled's cache only evicts after 64 reads of pages of the same shard (of 256), so a one-pass
/// scan of a large tree leaves all of it in memory; separate lookups let the cache evict.
fn count_entries(tree: &sled::Tree) -> sled::Result<u64> {
    let mut n = 0;
    let mut item = tree.first()?;
    while let Some((k, _)) = item {
        n += 1;
        item = tree.range::<&[u8], _>((Bound::Excluded(k.as_ref()), Bound::Unbounded)).next().transpose()?;
    }
    Ok(n)
}

impl Db {
    fn open(path: &Path, platforms: &[String], cache_bytes: Option<u64>) -> sled::Result<Self> {
        let db = open_db(path, cache_bytes)?;
        let mut queues = Vec::with_capacity(platforms.len());
        for platform in platforms {
            let name = format!("queue/{platform}");
            queues.push(Queue { platform: platform.clone(), tree: db.open_tree(&name)?, name });
        }
        Ok(Self {
            counts: db.open_tree(COUNTS)?,
            history: db.open_tree("history")?,
            corrupt: db.open_tree("corrupt")?,
            meta: db.open_tree("meta")?,
            queues,
            db,
        })
    }

    fn queue(&self, platform: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.platform == platform)
    }

    /// The length of every queue, from `counts`. A queue is counted (and its count stored) when
    /// its count is missing or stale (see the module docs).
    fn load_counts(&self) -> sled::Result<HashMap<String, u64>> {
        let mut lens = HashMap::new();
        let mut counted = false;
        for q in &self.queues {
            let newest = q.tree.last()?.and_then(|(k, _)| be_u64(&k));
            let up_to_date = |c: &Count| match newest {
                Some(n) => n <= c.newest,
                None => c.len == 0,
            };
            let len = match self.counts.get(&q.name)?.and_then(|v| Count::decode(&v)) {
                Some(c) if up_to_date(&c) => c.len,
                _ => {
                    let c = Count { len: count_entries(&q.tree)?, newest: newest.unwrap_or(0) };
                    self.counts.insert(&q.name, &c.encode())?;
                    tracing::info!(platform = %q.platform, records = c.len, "Queue counted; its length is kept from now on.");
                    counted = true;
                    c.len
                }
            };
            lens.insert(q.platform.clone(), len);
        }
        if counted {
            self.db.flush()?;
        }
        Ok(lens)
    }

    /// Writes `value` under `seq` to every queue (and under `history_key` to history), and
    /// counts it, in one transaction. Returns the new queue lengths, in queue order.
    fn insert_record(&self, seq: u64, value: &[u8], history_key: Option<[u8; 18]>) -> sled::Result<Vec<u64>> {
        let key = seq.to_be_bytes();
        let mut trees: Vec<&sled::Tree> = self.queues.iter().map(|q| &q.tree).collect();
        let (counts, history) = (trees.len(), trees.len() + 1);
        trees.extend([&self.counts, &self.history]);
        trees[..]
            .transaction(|t| {
                let mut lens = Vec::with_capacity(self.queues.len());
                for (i, q) in self.queues.iter().enumerate() {
                    t[i].insert(&key[..], value)?;
                    lens.push(update_count(&t[counts], &q.name, Some(seq))?);
                }
                if let Some(k) = history_key {
                    t[history].insert(&k[..], value)?;
                }
                Ok(lens)
            })
            .map_err(storage)
    }

    /// Removes `key` from `queue` and counts it, in one transaction; when `corrupt` is given the
    /// record is moved there instead (key and value). Returns the queue's new length, or `None`
    /// when there was no such record.
    fn remove_from_queue(&self, queue: &Queue, key: &[u8], corrupt: Option<&[u8]>) -> sled::Result<Option<u64>> {
        [&queue.tree, &self.counts, &self.corrupt][..]
            .transaction(|t| {
                if t[0].remove(key)?.is_none() {
                    return Ok(None);
                }
                if let Some(value) = corrupt {
                    t[2].insert(corrupt_key(&queue.name, key), value)?;
                }
                update_count(&t[1], &queue.name, None).map(Some)
            })
            .map_err(storage)
    }

    /// Deletes the records of appends that failed (see the module docs), then flushes.
    fn purge(&self, failed: &[Failed]) -> sled::Result<()> {
        for f in failed {
            for q in &self.queues {
                if self.remove_from_queue(q, &f.seq.to_be_bytes(), None)?.is_some() {
                    tracing::info!(platform = %q.platform, seq = f.seq, "Record of a failed append deleted.");
                }
            }
            if let Some(k) = f.history_key {
                self.history.remove(k)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }
}

fn corrupt_key(tree_name: &str, key: &[u8]) -> Vec<u8> {
    let mut k = tree_name.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// An append that failed with an IO error: its record may be in the database in part.
#[derive(Debug, Clone, Copy)]
struct Failed {
    seq: u64,
    history_key: Option<[u8; 18]>,
}

/// Whether the database must be reopened, and when.
#[derive(Debug)]
struct Health {
    poisoned: bool,
    reopening: bool,
    next_attempt: Instant,
    failed: Vec<Failed>,
}

/// The sled implementation of [`Store`].
pub struct SledStore {
    path: PathBuf,
    platforms: Vec<String>,
    cache_bytes: Option<u64>,
    /// The database; `None` only while it is being reopened.
    db: RwLock<Option<Db>>,
    /// Serialises appends, so that at most one is under way (see `unflushed_from`).
    appending: Mutex<()>,
    /// Serialises the transactions that change a queue's length with the update of `lens`, so
    /// that `lens` follows them in order. Never held across a flush.
    counting: Mutex<()>,
    lens: Mutex<HashMap<String, u64>>,
    /// True from the start of an append until it returns: the record it counted in `lens`
    /// cannot be read yet, so `queue_len` leaves it out.
    in_flight: AtomicBool,
    /// The sequence number of the oldest record whose append has not succeeded (it is under
    /// way, or it failed and the database has not been reopened yet); `u64::MAX` when none.
    /// Reads stop there.
    unflushed_from: AtomicU64,
    health: Mutex<Health>,
    max_queue_records: u64,
    appended: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    corrupt_count: AtomicU64,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("queues", &self.platforms.len())
            .field("stats", &self.stats())
            .finish()
    }
}

fn history_key(cn: u16, data_time_ms: i64, seq: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(&cn.to_be_bytes());
    k[2..10].copy_from_slice(&((data_time_ms as u64) ^ (1 << 63)).to_be_bytes());
    k[10..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked holding it; what it guards stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the sled database, waiting up to two seconds for a previous owner in this process to
/// finish closing: sled releases its file lock from a background thread after the last handle
/// is dropped, so an immediate reopen (a restart inside one process, as the tests and `hj212`
/// subcommands do, or [`SledStore`] after an IO error) can briefly see the lock still held.
/// Another process holding it is reported after the wait.
fn open_db(path: &Path, cache_bytes: Option<u64>) -> sled::Result<sled::Db> {
    let mut waited = 0;
    loop {
        let mut config = sled::Config::new().path(path);
        if let Some(bytes) = cache_bytes {
            config = config.cache_capacity(bytes);
        }
        match config.open() {
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                if waited >= 2000 {
                    return Err(sled::Error::Io(e));
                }
                std::thread::sleep(Duration::from_millis(20));
                waited += 20;
            }
            other => return other,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` with one queue per name in `platforms`, and reads
    /// the queues' lengths (counting a queue that has no stored length yet).
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
        let db = Db::open(path, platforms, cache_bytes)?;
        for name in db.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some(p) = name.strip_prefix("queue/") {
                if !platforms.iter().any(|n| n == p) {
                    tracing::warn!(platform = p, "Queue of a platform no longer configured kept as it is.");
                }
            }
        }
        let lens = db.load_counts()?;
        for (platform, &n) in &lens {
            if n > 0 {
                tracing::info!(%platform, queued = n, "Queue recovered.");
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            platforms: platforms.to_vec(),
            cache_bytes,
            db: RwLock::new(Some(db)),
            appending: Mutex::new(()),
            counting: Mutex::new(()),
            lens: Mutex::new(lens),
            in_flight: AtomicBool::new(false),
            unflushed_from: AtomicU64::new(u64::MAX),
            health: Mutex::new(Health {
                poisoned: false,
                reopening: false,
                next_attempt: Instant::now(),
                failed: Vec::new(),
            }),
            max_queue_records,
            appended: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            corrupt_count: AtomicU64::new(0),
        })
    }

    fn lens_mut(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.lens)
    }

    /// Records counted in `platform`'s queue, including one whose append is under way.
    fn counted_len(&self, platform: &str) -> u64 {
        self.lens_mut().get(platform).copied().unwrap_or(0)
    }

    fn set_len(&self, platform: &str, n: u64) {
        self.lens_mut().insert(platform.to_string(), n);
    }

    /// Runs `f` on the database: reopens it first when it is poisoned and the time has come,
    /// and poisons it when `f` fails with an IO error.
    fn with_db<T>(&self, f: impl FnOnce(&Db) -> sled::Result<T>) -> Result<T, StoreError> {
        let guard = self.db_guard();
        let db = guard.as_ref().ok_or_else(StoreError::reopening)?;
        f(db).map_err(|e| self.fail(e))
    }

    /// The database for one operation (reopened first when that is due); held for the whole
    /// operation, so that a reopening waits until the operation is done with it.
    fn db_guard(&self) -> RwLockReadGuard<'_, Option<Db>> {
        self.reopen_if_due();
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the store poisoned on an IO error (see the module docs).
    fn fail(&self, e: sled::Error) -> StoreError {
        if matches!(e, sled::Error::Io(_)) {
            self.poison(&e);
        }
        e.into()
    }

    /// Marks the store poisoned: its database is reopened [`REOPEN_INTERVAL`] from now.
    fn poison(&self, error: &sled::Error) {
        let mut health = lock(&self.health);
        if !health.poisoned {
            health.poisoned = true;
            health.next_attempt = Instant::now() + REOPEN_INTERVAL;
            tracing::error!(
                %error,
                retry_in = ?REOPEN_INTERVAL,
                "Store error: writes fail until the database is reopened."
            );
        }
    }

    /// Reopens the database if it is poisoned and the last attempt is [`REOPEN_INTERVAL`] old.
    /// One thread does it; other operations meanwhile fail with a "being reopened" error.
    fn reopen_if_due(&self) {
        {
            let mut health = lock(&self.health);
            if !health.poisoned || health.reopening || Instant::now() < health.next_attempt {
                return;
            }
            health.reopening = true;
        }
        // Waits for the operations under way: they hold the read lock while they use the database.
        let old = self.db.write().unwrap_or_else(PoisonError::into_inner).take();
        // No operation can fail (or record a failed append) until a database is back in place.
        let failed = lock(&self.health).failed.clone();
        if let Some(old) = old {
            // sled flushes when its last handle goes; after an IO error that fails and is logged
            // by sled, but a panic inside sled's drop must not take the daemon down.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(old))).is_err() {
                tracing::error!("Closing the failed database panicked inside sled.");
            }
        }
        let reopened = Db::open(&self.path, &self.platforms, self.cache_bytes).and_then(|db| {
            db.purge(&failed)?;
            let lens = db.load_counts()?;
            Ok((db, lens))
        });
        match reopened {
            Ok((db, lens)) => {
                *self.lens_mut() = lens;
                self.unflushed_from.store(u64::MAX, Ordering::SeqCst);
                {
                    let mut health = lock(&self.health);
                    health.poisoned = false;
                    health.reopening = false;
                    health.failed.clear();
                }
                *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(db);
                tracing::info!(path = %self.path.display(), failed_appends = failed.len(), "Store reopened; writes resume.");
            }
            Err(error) => {
                let mut health = lock(&self.health);
                health.reopening = false;
                health.next_attempt = Instant::now() + REOPEN_INTERVAL;
                tracing::error!(%error, retry_in = ?REOPEN_INTERVAL, "Store cannot be reopened yet.");
            }
        }
    }

    /// Stores `record` under `seq` and flushes (the caller holds `appending`).
    fn write_record(&self, db: &Db, seq: u64, record: &Record) -> sled::Result<()> {
        let value = record.encode();
        let history = record.is_aggregate().then(|| history_key(record.cn, record.data_time_ms, seq));
        {
            let _counting = lock(&self.counting);
            let lens = db.insert_record(seq, &value, history)?;
            for (q, n) in db.queues.iter().zip(lens) {
                self.set_len(&q.platform, n);
            }
        }
        let flushed = db.queues.iter().try_for_each(|q| self.enforce_cap(db, q)).and_then(|()| db.db.flush());
        if flushed.is_err() {
            // Not stored after all: until the reopened database is counted, do not count it.
            let _counting = lock(&self.counting);
            for q in &db.queues {
                if let Some(n) = self.lens_mut().get_mut(&q.platform) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        flushed.map(|_| ())
    }

    /// Removes `key` from `queue`, or moves it to `corrupt` when `corrupt` is the value found,
    /// and keeps the queue's length. True when the record was there.
    fn remove_counted(&self, db: &Db, queue: &Queue, key: &[u8], corrupt: Option<&[u8]>) -> sled::Result<bool> {
        let _counting = lock(&self.counting);
        let len = db.remove_from_queue(queue, key, corrupt)?;
        if let Some(n) = len {
            self.set_len(&queue.platform, n);
        }
        Ok(len.is_some())
    }

    /// Moves a corrupt record of `queue` aside.
    fn set_aside(&self, db: &Db, queue: &Queue, key: &[u8], value: &[u8]) -> sled::Result<()> {
        if self.remove_counted(db, queue, key, Some(value))? {
            self.corrupt_count.fetch_add(1, Ordering::Relaxed);
            tracing::error!(tree = %queue.name, key = ?key, len = value.len(), "Corrupt store record skipped and set aside.");
        }
        Ok(())
    }

    /// Drops real-time records oldest first until the queue is within the cap.
    fn enforce_cap(&self, db: &Db, queue: &Queue) -> sled::Result<()> {
        let len = self.counted_len(&queue.platform);
        if len <= self.max_queue_records {
            return Ok(());
        }
        let mut excess = len - self.max_queue_records;
        let mut victims = Vec::new();
        for item in queue.tree.iter().take(DROP_SCAN_LIMIT) {
            let (k, v) = item?;
            if Record::decode(&v).is_none_or(|r| r.is_droppable()) {
                victims.push(k);
                excess -= 1;
                if excess == 0 {
                    break;
                }
            }
        }
        let mut dropped = 0;
        for k in &victims {
            if self.remove_counted(db, queue, k, None)? {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(
                platform = %queue.platform,
                dropped,
                cap = self.max_queue_records,
                "Queue full: oldest real-time records dropped."
            );
        }
        Ok(())
    }

    /// True when `seq` may be read: its append returned successfully.
    fn readable(&self, seq: u64) -> bool {
        seq < self.unflushed_from.load(Ordering::SeqCst)
    }
}

impl Store for SledStore {
    fn append(&self, record: &Record) -> Result<u64, StoreError> {
        let _appending = lock(&self.appending);
        let guard = self.db_guard();
        let db = guard.as_ref().ok_or_else(StoreError::reopening)?;
        let seq = db.db.generate_id().map_err(|e| self.fail(e))?;
        // Appends are serialised, so this is the only one under way, unless an earlier one
        // failed; reads stop at the oldest.
        self.unflushed_from.fetch_min(seq, Ordering::SeqCst);
        self.in_flight.store(true, Ordering::SeqCst);
        let written = self.write_record(db, seq, record);
        if written.is_ok() {
            let _ = self.unflushed_from.compare_exchange(seq, u64::MAX, Ordering::SeqCst, Ordering::SeqCst);
        }
        // After `unflushed_from`, so that a counted record is always a readable one.
        self.in_flight.store(false, Ordering::SeqCst);
        match written {
            Ok(()) => {
                self.appended.fetch_add(1, Ordering::Relaxed);
                Ok(seq)
            }
            Err(e) => {
                // Part of the record may be in the database, unflushed: whatever the error, only
                // a reopened database can be trusted not to hold it.
                let history_key = record.is_aggregate().then(|| history_key(record.cn, record.data_time_ms, seq));
                lock(&self.health).failed.push(Failed { seq, history_key });
                self.poison(&e);
                Err(e.into())
            }
        }
    }

    fn queue_range(&self, platform: &str, from: u64, limit: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        let mut bad = Vec::new();
        let out = self.with_db(|db| {
            let Some(queue) = db.queue(platform) else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            for item in queue.tree.range(from.to_be_bytes()..) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item?;
                let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                    bad.push((k, v));
                    continue;
                };
                let seq = u64::from_be_bytes(key);
                if !self.readable(seq) {
                    break;
                }
                match Record::decode(&v) {
                    Some(r) => out.push((seq, r)),
                    None => bad.push((k, v)),
                }
            }
            Ok(out)
        })?;
        if !bad.is_empty() {
            self.with_db(|db| {
                let Some(queue) = db.queue(platform) else { return Ok(()) };
                bad.iter().try_for_each(|(k, v)| self.set_aside(db, queue, k, v))
            })?;
        }
        Ok(out)
    }

    fn remove(&self, platform: &str, seq: u64) -> Result<(), StoreError> {
        self.with_db(|db| {
            let Some(queue) = db.queue(platform) else { return Ok(()) };
            if self.remove_counted(db, queue, &seq.to_be_bytes(), None)? {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    fn queue_len(&self, platform: &str) -> u64 {
        let unreadable = u64::from(self.in_flight.load(Ordering::SeqCst));
        self.counted_len(platform).saturating_sub(unreadable)
    }

    fn first_written_since(&self, platform: &str, since_ms: i64) -> Option<u64> {
        self.with_db(|db| {
            let Some(queue) = db.queue(platform) else { return Ok(None) };
            let end = self.unflushed_from.load(Ordering::SeqCst);
            let mut first = None;
            for item in queue.tree.range(..end.to_be_bytes()).rev().take(TAIL_SCAN_LIMIT) {
                let (k, v) = item?;
                let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else { continue };
                // A corrupt record is skipped here and set aside when it is read.
                let Some(r) = Record::decode(&v) else { continue };
                if r.written_ms < since_ms {
                    break;
                }
                first = Some(u64::from_be_bytes(key));
            }
            Ok(first)
        })
        .ok()
        .flatten()
    }

    fn last_seq(&self, platform: &str) -> Option<u64> {
        self.with_db(|db| {
            let Some(queue) = db.queue(platform) else { return Ok(None) };
            let end = self.unflushed_from.load(Ordering::SeqCst);
            queue.tree.range(..end.to_be_bytes()).next_back().transpose()
        })
        .ok()
        .flatten()
        .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes))
    }

    fn latest_history_time(&self, cn: u16) -> Option<i64> {
        let lo = history_key(cn, i64::MIN, 0);
        let hi = history_key(cn, i64::MAX, u64::MAX);
        // One step from the end of the range, not a scan of it.
        let last = self.with_db(|db| db.history.range(lo..=hi).next_back().transpose()).ok().flatten()?;
        let (_, v) = last;
        Record::decode(&v).map(|r| r.data_time_ms)
    }

    fn history(&self, cn: u16, begin_ms: i64, end_ms: i64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let lo = history_key(cn, begin_ms, 0);
        let hi = history_key(cn, end_ms, u64::MAX);
        self.with_db(|db| {
            let mut out = Vec::new();
            for item in db.history.range(lo..=hi) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item?;
                let seq = k.get(10..).and_then(be_u64).unwrap_or(0);
                if !self.readable(seq) {
                    continue;
                }
                match Record::decode(&v) {
                    Some(r) => out.push(r),
                    None => {
                        db.corrupt.insert(corrupt_key("history", &k), v.clone())?;
                        db.history.remove(&k)?;
                        self.corrupt_count.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(tree = "history", key = ?k, len = v.len(), "Corrupt store record skipped and set aside.");
                    }
                }
            }
            Ok(out)
        })
    }

    fn purge_history(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_db(|db| {
            let mut n = 0;
            for cn in [2031u16, 2041, 2051, 2061] {
                let lo = history_key(cn, i64::MIN, 0);
                let hi = history_key(cn, before_ms, 0);
                let keys: Vec<sled::IVec> = db.history.range(lo..hi).keys().collect::<Result<_, _>>()?;
                for k in keys {
                    db.history.remove(k)?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    fn meta(&self, key: &str) -> Option<String> {
        let v = self.with_db(|db| db.meta.get(key)).ok()??;
        String::from_utf8(v.to_vec()).ok()
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with_db(|db| {
            db.meta.insert(key, value.as_bytes())?;
            db.db.flush()?;
            Ok(())
        })
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
        // The latest kept per CN (what a restarted acquisition is seeded with), in any order.
        s.append(&rec(2061, 7_200_000)).unwrap();
        s.append(&rec(2061, 1_800_000)).unwrap();
        let last = s.append(&rec(2031, 86_400_000)).unwrap();
        assert_eq!(s.latest_history_time(2061), Some(7_200_000));
        assert_eq!(s.latest_history_time(2031), Some(86_400_000));
        assert_eq!(s.latest_history_time(2051), None);
        assert_eq!(s.purge_history(3_600_001).unwrap(), 2);
        assert_eq!(s.latest_history_time(2061), Some(7_200_000));
        drop(s);
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b")), (4, 5));
        assert_eq!(s.last_seq("b"), Some(last));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_counted_record_can_always_be_read() {
        let dir = temp("counted");
        let s = std::sync::Arc::new(SledStore::open(&dir, &["a".to_string()], 10_000).unwrap());
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || (0..300).for_each(|i| assert!(s.append(&rec(2011, i)).is_ok())))
        };
        let mut checks = 0;
        while !writer.is_finished() {
            // Read in this order: a record counted first is flushed by the time it is read.
            let counted = s.queue_len("a");
            let readable = s.queue_range("a", 0, 10_000).unwrap().len() as u64;
            assert!(readable >= counted, "{counted} counted, {readable} readable");
            checks += 1;
        }
        writer.join().unwrap();
        assert_eq!(s.queue_len("a"), 300);
        assert!(checks > 10, "only {checks} checks");
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
        }
        {
            let db = open_db(&dir, None).unwrap();
            let tree = db.open_tree("queue/a").unwrap();
            let (k, v) = tree.first().unwrap().unwrap();
            let mut bad = v.to_vec();
            bad[30] ^= 1;
            tree.insert(k, bad).unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        // Found when read, not when opened (opening reads no record).
        assert_eq!(s.queue_range("a", 0, 10).unwrap()[0].1.data_time_ms, 2);
        assert_eq!(s.stats().corrupt, 1);
        assert_eq!(s.queue_len("a"), 1);
        drop(s);
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_range("a", 0, 10).unwrap().len()), (1, 1));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queue_lengths_are_kept_and_counted_when_missing_or_stale() {
        let dir = temp("counts");
        let names = vec!["a".to_string(), "b".to_string()];
        {
            let s = SledStore::open(&dir, &names, 1000).unwrap();
            let first = s.append(&rec(2011, 1)).unwrap();
            for i in 2..=300 {
                s.append(&rec(2051, i)).unwrap();
            }
            s.remove("a", first).unwrap();
            s.remove("a", first).unwrap();
            assert_eq!((s.queue_len("a"), s.queue_len("b")), (299, 300));
        }
        let s = SledStore::open(&dir, &names, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b")), (299, 300));
        drop(s);
        // As a store written before the lengths were kept.
        {
            let db = open_db(&dir, None).unwrap();
            assert!(db.drop_tree(COUNTS).unwrap());
            db.flush().unwrap();
        }
        let more = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let s = SledStore::open(&dir, &more, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b"), s.queue_len("c")), (299, 300, 0));
        s.append(&rec(2011, 301)).unwrap();
        drop(s);
        let s = SledStore::open(&dir, &more, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b"), s.queue_len("c")), (300, 301, 1));
        assert_eq!(s.queue_range("b", 0, usize::MAX).unwrap().len(), 301);
        drop(s);
        // An older gateway, which keeps no counts, writes to `a` and empties `c`.
        {
            let db = open_db(&dir, None).unwrap();
            let seq = db.generate_id().unwrap();
            db.open_tree("queue/a").unwrap().insert(seq.to_be_bytes(), rec(2011, 302).encode()).unwrap();
            db.open_tree("queue/c").unwrap().clear().unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(&dir, &more, 1000).unwrap();
        assert_eq!((s.queue_len("a"), s.queue_len("b"), s.queue_len("c")), (301, 301, 0));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
