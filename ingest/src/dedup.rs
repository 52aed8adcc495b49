//! Duplicate detection: a frame with the same MN, CN, QN and `DataTime` as one seen within the
//! window is published once; later copies wait for the first copy's delivery and are answered.
//!
//! Frames with neither a QN nor a `DataTime` are never treated as duplicates: nothing tells two of
//! them apart.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ledger::Delivery;

/// What identifies a frame: MN, CN, QN and `DataTime`, in one allocation shared by the window's
/// map and its queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<[u8]>);

impl Key {
    /// The key of a frame; `None` when it has neither a QN nor a `DataTime`.
    #[must_use]
    pub fn new(mn: &str, cn: u16, qn: Option<&str>, data_time: Option<&str>) -> Option<Self> {
        if qn.is_none() && data_time.is_none() {
            return None;
        }
        // Each part carries its length (absent and empty differ), so no text of one part can be
        // read as the start of the next, whatever bytes a site sends.
        let mut bytes = Vec::with_capacity(mn.len() + 48);
        let mut part = |p: Option<&str>| match p {
            Some(p) => {
                bytes.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
                bytes.extend_from_slice(p.as_bytes());
            }
            None => bytes.extend_from_slice(&u32::MAX.to_be_bytes()),
        };
        part(Some(mn));
        part(qn);
        part(data_time);
        bytes.extend_from_slice(&cn.to_be_bytes());
        Some(Self(bytes.into()))
    }
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
        let Some(key) = key.filter(|_| !self.window.is_zero()) else {
            return publish().map(Seen::New);
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((t, _)) = inner.order.front() {
            if now.duration_since(*t) < self.window && inner.order.len() < self.max_entries {
                break;
            }
            if let Some((t, k)) = inner.order.pop_front()
                && let Entry::Occupied(e) = inner.map.entry(k)
                && e.get().0 == t
            {
                e.remove();
            }
        }
        // One hash of the key per frame: looked up and, when new, inserted through the entry.
        let inner = &mut *inner;
        match inner.map.entry(key) {
            Entry::Occupied(seen) => Ok(Seen::Duplicate(seen.get().1.clone())),
            Entry::Vacant(slot) => {
                let delivery = publish()?;
                inner.order.push_back((now, slot.key().clone()));
                slot.insert((now, delivery.clone()));
                Ok(Seen::New(delivery))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(qn: &str) -> Option<Key> {
        Key::new("A", 2011, Some(qn), None)
    }

    #[test]
    fn duplicates_within_the_window_share_the_first_delivery() {
        let d = Dedup::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        let (settle, rx) = Delivery::pending();
        assert!(matches!(d.check(key("1"), t, || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
        let Ok(Seen::Duplicate(dup)) = d.check(key("1"), t, || Err(())) else { panic!() };
        settle.delivered();
        assert!(dup.is_delivered());
        assert!(matches!(d.check(key("1"), t + Duration::from_secs(11), || Ok::<_, ()>(rx.clone())), Ok(Seen::New(_))));
        assert!(Key::new("A", 2011, None, None).is_none(), "nothing tells two such frames apart");
    }

    #[test]
    fn keys_differ_in_every_part_and_between_absent_and_empty() {
        let base = Key::new("A", 2011, Some("1"), Some("2"));
        assert_eq!(base, Key::new("A", 2011, Some("1"), Some("2")));
        for other in [
            Key::new("B", 2011, Some("1"), Some("2")),
            Key::new("A", 2051, Some("1"), Some("2")),
            Key::new("A", 2011, Some("3"), Some("2")),
            Key::new("A", 2011, Some("1"), Some("3")),
            Key::new("A", 2011, Some(""), Some("2")),
            Key::new("A", 2011, None, Some("2")),
            Key::new("A", 2011, Some("1"), None),
            Key::new("A", 2011, Some("12"), None),
            Key::new("A2", 2011, Some("1"), Some("2")),
        ] {
            assert_ne!(base, other);
        }
        // Parts do not run into each other.
        assert_ne!(Key::new("A", 2011, Some("12"), Some("3")), Key::new("A", 2011, Some("1"), Some("23")));
    }
}
