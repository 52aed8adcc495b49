//! Civil date-times as HJ 212 writes them: `YYYYMMDDhhmmss` (N14) and `YYYYMMDDhhmmsszzz` (QN).
//!
//! HJ 212 times are local civil times with no zone. The crate never reads a clock: callers pass
//! a [`DateTime`] in. 2005-era senders put 17 digits (with milliseconds) in `DataTime`; both
//! lengths are accepted (spec digest §11.9).

use core::fmt;

/// A civil date-time with millisecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// Year, 1970..=9999.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Millisecond, 0..=999.
    pub millis: u16,
}

fn digits(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl DateTime {
    /// 1970-01-01 00:00:00.000, the start of the range.
    pub const EPOCH: Self = Self { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };

    /// [`DateTime::from_millis`], with times outside 1970..=9999 clamped to [`DateTime::EPOCH`].
    #[must_use]
    pub fn from_millis_or_epoch(ms: i64) -> Self {
        Self::from_millis(ms).unwrap_or(Self::EPOCH)
    }

    /// The civil time at a UTC millisecond count in a zone `offset_minutes` east of UTC (HJ 212
    /// times carry no zone; Chinese sites use UTC+8, `480`).
    #[must_use]
    pub fn civil_from_utc(utc_ms: i64, offset_minutes: i32) -> Self {
        Self::from_millis_or_epoch(utc_ms + i64::from(offset_minutes) * 60_000)
    }

    /// Parses 14 digits (`YYYYMMDDhhmmss`) or 17 digits (with milliseconds), checking the calendar.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 14 && b.len() != 17 {
            return None;
        }
        let t = Self {
            year: digits(&b[0..4])? as u16,
            month: digits(&b[4..6])? as u8,
            day: digits(&b[6..8])? as u8,
            hour: digits(&b[8..10])? as u8,
            minute: digits(&b[10..12])? as u8,
            second: digits(&b[12..14])? as u8,
            millis: if b.len() == 17 { digits(&b[14..17])? as u16 } else { 0 },
        };
        t.is_valid().then_some(t)
    }

    /// True when every field is in range and the day exists in its month.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0) => 29,
            2 => 28,
            _ => return false,
        };
        (1970..=9999).contains(&self.year)
            && (1..=days_in_month).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.millis < 1000
    }

    /// Milliseconds since 1970-01-01 00:00:00 of the same (zone-less) civil time scale.
    #[must_use]
    pub fn to_millis(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), u32::from(self.month), u32::from(self.day));
        ((days * 24 + i64::from(self.hour)) * 60 + i64::from(self.minute)) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millis)
    }

    /// The inverse of [`DateTime::to_millis`]; `None` outside years 1970..=9999.
    #[must_use]
    pub fn from_millis(ms: i64) -> Option<Self> {
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let t = Self {
            year: u16::try_from(y).ok()?,
            month: m as u8,
            day: d as u8,
            hour: (rem / 3_600_000) as u8,
            minute: (rem / 60_000 % 60) as u8,
            second: (rem / 1000 % 60) as u8,
            millis: (rem % 1000) as u16,
        };
        t.is_valid().then_some(t)
    }

    /// Writes `YYYYMMDDhhmmss`.
    #[must_use]
    pub fn n14(&self) -> [u8; 14] {
        let mut out = [0u8; 14];
        self.write_digits(&mut out);
        out
    }

    /// Writes `YYYYMMDDhhmmsszzz`, the QN form.
    #[must_use]
    pub fn n17(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        self.write_digits(&mut out[..14]);
        put(&mut out[14..17], u32::from(self.millis));
        out
    }

    fn write_digits(&self, out: &mut [u8]) {
        put(&mut out[0..4], u32::from(self.year));
        put(&mut out[4..6], u32::from(self.month));
        put(&mut out[6..8], u32::from(self.day));
        put(&mut out[8..10], u32::from(self.hour));
        put(&mut out[10..12], u32::from(self.minute));
        put(&mut out[12..14], u32::from(self.second));
    }

    /// The same time truncated to the start of its minute, hour or day.
    #[must_use]
    pub fn truncate(&self, unit: TimeUnit) -> Self {
        let mut t = *self;
        t.millis = 0;
        t.second = 0;
        if unit >= TimeUnit::Hour {
            t.minute = 0;
        }
        if unit >= TimeUnit::Day {
            t.hour = 0;
        }
        t
    }
}

fn put(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A calendar unit for [`DateTime::truncate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeUnit {
    /// Minute.
    Minute,
    /// Hour.
    Hour,
    /// Day.
    Day,
}

impl fmt::Display for DateTime {
    /// Writes `YYYYMMDDhhmmss`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.n14();
        // The digits are ASCII by construction.
        f.write_str(core::str::from_utf8(&d).unwrap_or("00000000000000"))
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn parse_and_format_both_lengths() {
        let t = DateTime::parse("20160801085857223").unwrap();
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis), (2016, 8, 1, 8, 58, 57, 223));
        assert_eq!(&t.n17(), b"20160801085857223");
        assert_eq!(&t.n14(), b"20160801085857");
        assert!(DateTime::parse("20160230000000").is_none());
        assert!(DateTime::parse("2016080108585").is_none());
        assert!(DateTime::parse("2016080108585x").is_none());
    }

    #[test]
    fn civil_time_from_utc_and_clamping() {
        let utc = DateTime::parse("20261128160000").unwrap().to_millis();
        assert_eq!(DateTime::civil_from_utc(utc, 480).to_string(), "20261129000000");
        assert_eq!(DateTime::from_millis_or_epoch(-1), DateTime::EPOCH);
    }

    #[test]
    fn millis_round_trip_across_leap_years() {
        for s in ["19700101000000000", "20000229235959999", "20261128143000000", "21000301000000000"] {
            let t = DateTime::parse(s).unwrap();
            assert_eq!(DateTime::from_millis(t.to_millis()), Some(t), "{s}");
        }
        assert_eq!(DateTime::parse("19700102000000").unwrap().to_millis(), 86_400_000);
    }
}
