//! Request numbers (`QN`): a millisecond timestamp `YYYYMMDDhhmmsszzz` that identifies one exchange.
//!
//! HJ 212-2017 Table 3 requires QN to be unique for a command exchange. Two messages created in the
//! same millisecond (a sub-packet burst, a data upload right after a reply) would collide, so the
//! generator never hands out a QN that is not later than the previous one: on a collision, or when
//! the clock steps back, it bumps the milliseconds. One generator serves one MN.

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
}
