//! Duplicate detection: a frame with the same MN, CN, QN and `DataTime` as one seen within the
//! window is published once; later copies wait for the first copy's delivery and are answered.
//!
//! Frames with neither a QN nor a `DataTime` are never treated as duplicates: nothing tells two of
//! them apart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ledger::Delivery;

/// What identifies a frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// MN.
    pub mn: String,
    /// CN.
    pub cn: u16,
    /// QN, if any.
    pub qn: Option<String>,
    /// `DataTime`, if any.
    pub data_time: Option<String>,
}

/// Whether a frame was new or a duplicate, with its delivery.
#[derive(Debug)]
pub enum Seen {
    /// First time: published now.
    New(Delivery),
    /// A duplicate of a frame published earlier.
    Duplicate(Delivery),
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, (Instant, Delivery)>,
    order: VecDeque<(Instant, Key)>,
}

/// The window of recently seen frames.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

impl Dedup {
    /// A window of `window` (zero turns detection off), holding at most `max_entries` keys.
    #[must_use]
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self { window, max_entries, inner: Mutex::default() }
    }

    /// Looks `key` up; when it is new, calls `publish` and remembers the result.
    ///
    /// # Errors
    /// Whatever `publish` returns.
    pub fn check<E>(
        &self,
        key: Option<Key>,
        now: Instant,
        publish: impl FnOnce() -> Result<Delivery, E>,
    ) -> Result<Seen, E> {
        let Some(key) = key.filter(|k| (k.qn.is_some() || k.data_time.is_some()) && !self.window.is_zero()) else {
            return publish().map(Seen::New);
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((t, _)) = inner.order.front() {
            if now.duration_since(*t) < self.window && inner.order.len() < self.max_entries {
                break;
            }
            if let Some((t, k)) = inner.order.pop_front() {
                if inner.map.get(&k).is_some_and(|(seen, _)| *seen == t) {
                    inner.map.remove(&k);
                }
            }
        }
        if let Some((_, d)) = inner.map.get(&key) {
            return Ok(Seen::Duplicate(d.clone()));
        }
        let delivery = publish()?;
        inner.map.insert(key.clone(), (now, delivery.clone()));
        inner.order.push_back((now, key));
        Ok(Seen::New(delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(qn: &str) -> Option<Key> {
        Some(Key { mn: "A".into(), cn: 2011, qn: Some(qn.into()), data_time: None })
    }

    #[test]
    fn duplicates_within_the_window_share_the_first_delivery() {
        let d = Dedup::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        let (tx, rx) = tokio::sync::watch::channel(false);
        assert!(matches!(d.check(key("1"), t, || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
        let Ok(Seen::Duplicate(dup)) = d.check(key("1"), t, || Err(())) else { panic!() };
        tx.send_replace(true);
        assert!(*dup.borrow());
        assert!(matches!(d.check(key("1"), t + Duration::from_secs(11), || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
        let none = Some(Key { mn: "A".into(), cn: 2011, qn: None, data_time: None });
        assert!(matches!(d.check(none.clone(), t, || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
        assert!(matches!(d.check(none, t, || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
    }
}
