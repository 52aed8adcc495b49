//! Period start times. Minute, hour and day records carry the **start** of their period as
//! DataTime (HJ 212-2017 Table 4; C.16–C.18); periods are half-open `[start, start + length)`.

use crate::profile::DateTime;

/// A record period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A minute record of `MinInterval` minutes (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30).
    Minutes(u8),
    /// An hour record.
    Hour,
    /// A day record (local calendar day).
    Day,
}

impl Period {
    /// Length in seconds.
    pub const fn seconds(self) -> u32 {
        match self {
            Self::Minutes(m) => m as u32 * 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

/// The start of the period that contains `t`. A minute interval that does not divide 60 (or is 0)
/// is treated as 1 minute.
pub fn period_start(t: DateTime, period: Period) -> DateTime {
    let mut s = t;
    s.second = 0;
    match period {
        Period::Minutes(m) => {
            let m = if m > 0 && 60 % m == 0 { m } else { 1 };
            s.minute -= s.minute % m;
        }
        Period::Hour => s.minute = 0,
        Period::Day => {
            s.minute = 0;
            s.hour = 0;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_follow_appendix_c() {
        let t = DateTime::new(2016, 8, 1, 8, 49, 59).unwrap();
        // C.16: a 10-minute record stamped 20160801084000 covers 08:40:00-08:50:00.
        assert_eq!(period_start(t, Period::Minutes(10)), DateTime::new(2016, 8, 1, 8, 40, 0).unwrap());
        // C.17 and C.18.
        assert_eq!(period_start(t, Period::Hour), DateTime::new(2016, 8, 1, 8, 0, 0).unwrap());
        assert_eq!(period_start(t, Period::Day), DateTime::new(2016, 8, 1, 0, 0, 0).unwrap());
        // Half-open: 08:50:00 starts the next block.
        let edge = DateTime::new(2016, 8, 1, 8, 50, 0).unwrap();
        assert_eq!(period_start(edge, Period::Minutes(10)), edge);
        assert_eq!(period_start(t, Period::Minutes(7)), DateTime::new(2016, 8, 1, 8, 49, 0).unwrap());
        assert_eq!(Period::Minutes(10).seconds(), 600);
    }
}
