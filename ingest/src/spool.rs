//! The spool: a durable FIFO (sled) in front of the MQTT ledger, so frames survive broker
//! outages and restarts of ingest.
//!
//! A spooled message is written to sled under a key that grows by one per message, then a pump
//! task hands the messages to the [`Ledger`] in key order, at most `window` at a time, and deletes
//! each one when the broker acknowledges it. At start every message still in the spool is
//! replayed, in order. So a message leaves the spool only on its PUBACK (at least once: a message
//! whose PUBACK was lost with a crash is published again).
//!
//! Durability. sled writes are made durable by a flush. Messages that nobody waits for are
//! flushed by sled's background flusher (every 500 ms). A caller that must know a message is on
//! disk ([`Wait::Flush`], for `ack_after = "spool"`) gets a [`Delivery`] that is delivered after a
//! flush that started after the write: one flusher task runs the flushes, so concurrent writers
//! share one (group commit).
//!
//! Bounds. The spool holds at most `max_bytes` of topics and payloads. When full it refuses new
//! messages or deletes the oldest, as configured; a write error (a full disk, for one) refuses
//! the message and marks the spool unavailable until a write succeeds again.
//!
//! Invariants:
//! * Keys are assigned and written under one lock, so the pump, which reads forward from a
//!   cursor, never skips a message written after one it has already seen.
//! * A message is deleted only after its PUBACK, or by the `drop_oldest` policy (counted).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SpoolFullPolicy;
use crate::delivery::Settle;
use crate::ledger::{Delivery, Ledger};
use crate::metrics::{Event, Metrics};

/// What the caller of [`Spool::append`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: the returned delivery is abandoned at once.
    Nothing,
    /// The message is flushed to disk.
    Flush,
    /// The broker acknowledged the message.
    Puback,
}

/// Why a message was not spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolError {
    /// The spool holds `max_bytes` and the policy is `refuse`, or the message alone is larger.
    Full,
    /// sled failed (the message is not in the spool).
    Io(String),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("the spool is full"),
            Self::Io(e) => write!(f, "spool write failed: {e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

#[derive(Debug, Default)]
struct Waiters {
    on_ack: HashMap<u64, Settle>,
    on_flush: BTreeMap<u64, Settle>,
}

/// The spool; share it with an `Arc`.
#[derive(Debug)]
pub struct Spool {
    db: sled::Db,
    /// Serialises key assignment with the write (see the invariants).
    write: Mutex<u64>,
    waiters: Mutex<Waiters>,
    bytes: AtomicU64,
    depth: AtomicU64,
    max_bytes: u64,
    on_full: SpoolFullPolicy,
    io_failed: AtomicBool,
    /// The last append was refused for room (cleared by a successful append or a delete).
    refusing: AtomicBool,
    metrics: Arc<Metrics>,
    pump_wake: Notify,
    flush_wake: Notify,
}

/// Encodes a record: topic length (2 bytes, big endian), topic, QN length (1 byte), QN, payload.
fn encode(topic: &str, qn: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let qn = qn.unwrap_or("");
    let qn = &qn.as_bytes()[..qn.len().min(255)];
    let topic = &topic.as_bytes()[..topic.len().min(usize::from(u16::MAX))];
    let mut v = Vec::with_capacity(3 + topic.len() + qn.len() + payload.len());
    v.extend_from_slice(&u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(topic);
    v.push(u8::try_from(qn.len()).unwrap_or(u8::MAX));
    v.extend_from_slice(qn);
    v.extend_from_slice(payload);
    v
}

/// A decoded record: topic, QN, payload; `None` for a corrupt one.
fn decode(v: &[u8]) -> Option<(String, Option<String>, Vec<u8>)> {
    let tl = usize::from(u16::from_be_bytes([*v.first()?, *v.get(1)?]));
    let topic = std::str::from_utf8(v.get(2..2 + tl)?).ok()?.to_string();
    let ql = usize::from(*v.get(2 + tl)?);
    let qn = std::str::from_utf8(v.get(3 + tl..3 + tl + ql)?).ok()?.to_string();
    let payload = v.get(3 + tl + ql..)?.to_vec();
    Some((topic, Some(qn).filter(|q| !q.is_empty()), payload))
}

fn key_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

impl Spool {
    /// Opens (or creates) the spool at `path` and counts what it holds.
    ///
    /// # Errors
    /// sled cannot open the directory (missing permissions, or another process holds it).
    pub fn open(
        path: &Path,
        max_bytes: u64,
        on_full: SpoolFullPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, sled::Error> {
        let config = sled::Config::new().path(path).flush_every_ms(Some(500)).cache_capacity(32 * 1024 * 1024);
        // sled releases its file lock from a background thread after the last handle is dropped:
        // a reopen in the same process (a restart in tests) may have to wait a moment for it.
        // sled reports a held lock as an `Other` error whose text names it, not always as
        // `WouldBlock` (the gateway's store retries on the same error).
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if tries < 60
                        && (e.kind() == std::io::ErrorKind::WouldBlock
                            || e.to_string().contains("could not acquire lock")) =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        let (mut bytes, mut depth, mut next, mut corrupt) = (0u64, 0u64, 0u64, 0u64);
        for item in db.iter() {
            let (k, v) = item?;
            match (key_of(&k), decode(&v)) {
                (Some(key), Some(_)) => {
                    bytes += v.len() as u64;
                    depth += 1;
                    next = next.max(key + 1);
                }
                _ => {
                    // A corrupt record is skipped and counted; the daemon still starts.
                    corrupt += 1;
                    let _ = db.remove(k);
                }
            }
        }
        if corrupt > 0 {
            tracing::warn!(corrupt, "Removed corrupt spool records.");
            Metrics::add(&metrics.counters.spool_errors, corrupt);
        }
        Metrics::add(&metrics.counters.spool_recovered, depth);
        Metrics::set(&metrics.gauges.spool_enabled, 1);
        Metrics::set(&metrics.gauges.spool_available, 1);
        Metrics::set(&metrics.gauges.spool_depth, depth);
        Metrics::set(&metrics.gauges.spool_bytes, bytes);
        if depth > 0 {
            tracing::info!(messages = depth, bytes, "Spool holds messages from an earlier run; replaying them.");
        }
        Ok(Self {
            db,
            write: Mutex::new(next),
            waiters: Mutex::default(),
            bytes: AtomicU64::new(bytes),
            depth: AtomicU64::new(depth),
            max_bytes,
            on_full,
            io_failed: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            metrics,
            pump_wake: Notify::new(),
            flush_wake: Notify::new(),
        })
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Messages in the spool.
    #[must_use]
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    fn update_gauges(&self) {
        let g = &self.metrics.gauges;
        let bytes = self.bytes.load(Ordering::Relaxed);
        Metrics::set(&g.spool_depth, self.depth.load(Ordering::Relaxed));
        Metrics::set(&g.spool_bytes, bytes);
        let full = self.on_full == SpoolFullPolicy::Refuse
            && (bytes >= self.max_bytes || self.refusing.load(Ordering::Relaxed));
        Metrics::set(&g.spool_available, u64::from(!full && !self.io_failed.load(Ordering::Relaxed)));
    }

    /// Writes a message; the returned [`Delivery`] turns true as `wait` says.
    ///
    /// # Errors
    /// [`SpoolError::Full`] when there is no room under the `refuse` policy, [`SpoolError::Io`]
    /// when sled fails.
    pub fn append(&self, topic: &str, qn: Option<&str>, payload: &[u8], wait: Wait) -> Result<Delivery, SpoolError> {
        let record = encode(topic, qn, payload);
        let len = record.len() as u64;
        let mut next = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if len > self.max_bytes {
            Metrics::inc(&self.metrics.counters.spool_refused);
            return Err(SpoolError::Full);
        }
        while self.bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            if self.on_full == SpoolFullPolicy::Refuse {
                self.refusing.store(true, Ordering::Relaxed);
                Metrics::inc(&self.metrics.counters.spool_refused);
                self.update_gauges();
                return Err(SpoolError::Full);
            }
            match self.db.first() {
                Ok(Some((k, _))) => {
                    if let Some(key) = key_of(&k) {
                        self.remove(key, false);
                        Metrics::inc(&self.metrics.counters.spool_dropped);
                    }
                }
                _ => break,
            }
        }
        let key = *next;
        if let Err(error) = self.db.insert(key.to_be_bytes(), record) {
            Metrics::inc(&self.metrics.counters.spool_errors);
            self.io_failed.store(true, Ordering::Relaxed);
            self.update_gauges();
            tracing::error!(%error, "Spool write failed.");
            return Err(SpoolError::Io(error.to_string()));
        }
        *next += 1;
        self.io_failed.store(false, Ordering::Relaxed);
        self.refusing.store(false, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.depth.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = Delivery::pending();
        match wait {
            Wait::Nothing => {}
            Wait::Puback => {
                self.waiters().on_ack.insert(key, tx);
            }
            Wait::Flush => {
                self.waiters().on_flush.insert(key, tx);
                self.flush_wake.notify_one();
            }
        }
        drop(next);
        Metrics::inc(&self.metrics.counters.spool_written);
        self.metrics.emit_with(|| Event::Spooled { topic: topic.to_string(), qn: qn.map(str::to_string) });
        self.update_gauges();
        self.pump_wake.notify_one();
        Ok(rx)
    }

    /// Deletes a message and settles whoever waits for it: delivered when `acked` (the broker has
    /// it), abandoned when the message was dropped.
    fn remove(&self, key: u64, acked: bool) {
        match self.db.remove(key.to_be_bytes()) {
            Ok(Some(old)) => {
                self.refusing.store(false, Ordering::Relaxed);
                self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
                self.depth.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(error) => {
                Metrics::inc(&self.metrics.counters.spool_errors);
                tracing::error!(%error, "Spool delete failed.");
            }
        }
        let mut w = self.waiters();
        let settles = [w.on_ack.remove(&key), w.on_flush.remove(&key)];
        drop(w);
        for tx in settles.into_iter().flatten() {
            if acked {
                tx.delivered();
            }
        }
        self.update_gauges();
    }

    /// Flushes to disk now.
    ///
    /// # Errors
    /// sled failed.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }

    /// Runs the pump (spool to ledger) and the flusher until `stop`; both are spawned on
    /// `tracker`. Messages handed to the ledger keep their acknowledgement waits until `hard_stop`.
    pub fn spawn(
        self: &Arc<Self>,
        ledger: Ledger,
        window: usize,
        tracker: &TaskTracker,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        tracker.spawn(self.clone().pump(ledger, window, tracker.clone(), stop.clone(), hard_stop));
        tracker.spawn(self.clone().flusher(stop));
    }

    async fn pump(
        self: Arc<Self>,
        ledger: Ledger,
        window: usize,
        tracker: TaskTracker,
        stop: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(window));
        let mut cursor: u64 = 0;
        loop {
            let next = self.db.range(cursor.to_be_bytes()..).next();
            let (key, record) = match next {
                Some(Ok((k, v))) => match (key_of(&k), decode(&v)) {
                    (Some(key), Some(record)) => (key, record),
                    (key, _) => {
                        Metrics::inc(&self.metrics.counters.spool_errors);
                        if let Some(key) = key {
                            cursor = key + 1;
                            self.remove(key, false);
                        } else {
                            let _ = self.db.remove(k);
                        }
                        continue;
                    }
                },
                Some(Err(error)) => {
                    Metrics::inc(&self.metrics.counters.spool_errors);
                    tracing::error!(%error, "Spool read failed.");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                None => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = self.pump_wake.notified() => continue,
                    }
                }
            };
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (topic, qn, payload) = record;
            match ledger.publish_spooled(topic, payload, qn) {
                Ok(delivery) => {
                    cursor = key + 1;
                    let spool = self.clone();
                    let hard = hard_stop.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = hard.cancelled() => {}
                            delivered = delivery.settled() => if delivered {
                                spool.remove(key, true);
                                Metrics::inc(&spool.metrics.counters.spool_forwarded);
                            },
                        }
                    });
                }
                Err(_) => {
                    drop(permit);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }

    async fn flusher(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.flush_wake.notified() => {}
            }
            let upto = *self.write.lock().unwrap_or_else(PoisonError::into_inner);
            match self.db.flush_async().await {
                Ok(_) => {
                    let mut w = self.waiters();
                    let later = w.on_flush.split_off(&upto);
                    let done = std::mem::replace(&mut w.on_flush, later);
                    drop(w);
                    for tx in done.into_values() {
                        tx.delivered();
                    }
                }
                Err(error) => {
                    Metrics::inc(&self.metrics.counters.spool_errors);
                    self.io_failed.store(true, Ordering::Relaxed);
                    self.update_gauges();
                    tracing::error!(%error, "Spool flush failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.flush_wake.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("hj212-spool-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn records_round_trip() {
        let r = encode("a/b", Some("20240102030405123"), b"{}");
        assert_eq!(decode(&r), Some(("a/b".into(), Some("20240102030405123".into()), b"{}".to_vec())));
        assert_eq!(decode(&encode("t", None, b"")), Some(("t".into(), None, Vec::new())));
        assert_eq!(decode(&[0, 9, b'x']), None);
    }

    #[tokio::test]
    async fn full_spools_refuse_or_drop_the_oldest_and_survive_reopening() {
        let path = temp("full");
        let metrics = Arc::new(Metrics::default());
        {
            let s = Spool::open(&path, 100, SpoolFullPolicy::Refuse, metrics.clone()).unwrap();
            s.append("t", None, &[b'x'; 40], Wait::Nothing).unwrap();
            s.append("t", None, &[b'x'; 40], Wait::Nothing).unwrap();
            assert!(matches!(s.append("t", None, &[b'x'; 40], Wait::Nothing), Err(SpoolError::Full)));
            assert_eq!(metrics.gauges.spool_available.load(Ordering::Relaxed), 0);
            s.flush().unwrap();
        }
        let s = Spool::open(&path, 100, SpoolFullPolicy::DropOldest, metrics.clone()).expect("reopen");
        assert_eq!(s.depth(), 2);
        s.append("u", None, &[b'y'; 40], Wait::Nothing).unwrap();
        assert_eq!(s.depth(), 2);
        assert_eq!(metrics.get("spool_dropped"), 1);
        let keys: Vec<u64> = s.db.iter().keys().map(|k| key_of(&k.unwrap()).unwrap()).collect();
        assert_eq!(keys, [1, 2]);
        drop(s);
        let _ = std::fs::remove_dir_all(&path);
    }
}
