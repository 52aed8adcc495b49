//! Request numbers (`QN`): a millisecond timestamp `YYYYMMDDhhmmsszzz` that identifies one exchange.
//!
//! HJ 212-2017 Table 3 requires QN to be unique for a command exchange. Two messages created in the
//! same millisecond (a sub-packet burst, a data upload right after a reply) would collide, so the
//! generator never hands out a QN that is not later than the previous one: on a collision, or when
//! the clock steps back, it bumps the milliseconds. One generator serves one MN.
//!
//! A sender that makes QNs in several places for the same MN (a gateway's store records, its
//! sessions' sub-packets, its own notifications) must draw them all from one generator, or two
//! of them can hand out the same QN in the same millisecond. With `std`, [`SharedQnGenerator`] is
//! that one generator behind a lock, cheap to clone, and [`crate::session::Session`] can take its
//! QNs from it.

use crate::time::DateTime;

/// Hands out strictly increasing QNs for one MN.
#[derive(Debug, Clone, Default)]
pub struct QnGenerator {
    last: Option<i64>,
}

impl QnGenerator {
    /// A generator that has issued nothing yet.
    #[must_use]
    pub const fn new() -> Self {
        Self { last: None }
    }

    /// The next QN at time `now`: `now` itself, or one millisecond after the previous QN if that is later.
    pub fn next(&mut self, now: DateTime) -> DateTime {
        let mut ms = now.to_millis();
        if let Some(last) = self.last {
            if ms <= last {
                ms = last + 1;
            }
        }
        self.last = Some(ms);
        DateTime::from_millis(ms).unwrap_or(now)
    }

    /// The next QN as its 17 digits.
    pub fn next_string(&mut self, now: DateTime) -> alloc::string::String {
        let d = self.next(now).n17();
        d.iter().map(|&b| char::from(b)).collect()
    }
}

/// One [`QnGenerator`] shared by every sender of the same MN; clones share the same state.
///
/// Every QN handed out through any clone is later than every QN handed out before it, so QNs
/// made in the same millisecond by different users never collide. [`SharedQnGenerator::lock`]
/// holds the generator for a sequence of QNs that must be consecutive (the parts of a split
/// message).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Default)]
pub struct SharedQnGenerator {
    inner: std::sync::Arc<std::sync::Mutex<QnGenerator>>,
}

#[cfg(feature = "std")]
impl SharedQnGenerator {
    /// A shared generator that has issued nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Exclusive use of the generator until the guard is dropped.
    ///
    /// A lock poisoned by a panic elsewhere is taken over: the generator's state is a single
    /// number, always consistent.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, QnGenerator> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next QN at time `now` (see [`QnGenerator::next`]).
    pub fn next(&self, now: DateTime) -> DateTime {
        self.lock().next(now)
    }

    /// The next QN as its 17 digits.
    pub fn next_string(&self, now: DateTime) -> alloc::string::String {
        self.lock().next_string(now)
    }

    /// True when both handles share one generator.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_and_clock_steps_back_bump_the_milliseconds() {
        let mut g = QnGenerator::new();
        let t = DateTime::parse("20261128235959999").unwrap();
        assert_eq!(g.next_string(t), "20261128235959999");
        assert_eq!(g.next_string(t), "20261129000000000");
        let earlier = DateTime::parse("20261128000000000").unwrap();
        assert_eq!(g.next_string(earlier), "20261129000000001");
        let later = DateTime::parse("20261130000000000").unwrap();
        assert_eq!(g.next_string(later), "20261130000000000");
    }

    #[cfg(feature = "std")]
    #[test]
    fn clones_of_a_shared_generator_never_collide_in_the_same_millisecond() {
        let t = DateTime::parse("20261128235959998").unwrap();
        // Two separate generators hand out the same QN in the same millisecond: the bug this
        // type exists to prevent.
        assert_eq!(QnGenerator::new().next_string(t), QnGenerator::new().next_string(t));
        let a = SharedQnGenerator::new();
        let b = a.clone();
        assert!(a.same_as(&b) && !a.same_as(&SharedQnGenerator::new()));
        assert_eq!(a.next_string(t), "20261128235959998");
        assert_eq!(b.next_string(t), "20261128235959999");
        assert_eq!(a.next_string(t), "20261129000000000");
        {
            // A held lock makes consecutive QNs; the other user waits and comes after them.
            let mut g = b.lock();
            assert_eq!(g.next_string(t), "20261129000000001");
            assert_eq!(g.next_string(t), "20261129000000002");
        }
        assert_eq!(a.next_string(t), "20261129000000003");
    }

    #[cfg(feature = "std")]
    #[test]
    fn threads_sharing_a_generator_get_distinct_increasing_qns() {
        let t = DateTime::parse("20260101000000000").unwrap();
        let shared = SharedQnGenerator::new();
        let threads: alloc::vec::Vec<_> = (0..4)
            .map(|_| {
                let g = shared.clone();
                std::thread::spawn(move || (0..500).map(|_| g.next(t)).collect::<alloc::vec::Vec<_>>())
            })
            .collect();
        let mut all = alloc::vec::Vec::new();
        for th in threads {
            let mine = th.join().unwrap();
            // Each user sees its own QNs strictly increase.
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
            all.extend(mine);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 2000, "no QN was handed out twice");
        // Together they are exactly the 2000 milliseconds from `t` on.
        assert_eq!(all.first().copied(), Some(t));
        assert_eq!(all.last().map(DateTime::to_millis), Some(t.to_millis() + 1999));
    }
}
