//! The daemon's two clocks, behind a trait so tests can run the data clock faster.
//!
//! - The **data clock** ([`Clock`]) gives the site's civil time (HJ 212 times are local and
//!   zone-less) and a millisecond count on the same scale. Acquisition, statistics, `DataTime`,
//!   QNs and history use it.
//! - Timers of the link (HJ 212 `OverTime`, reconnect backoff, poll pacing) use tokio's clock
//!   directly and are never scaled.

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hj212_codec::time::DateTime;

/// The data clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The site's civil time now.
    fn now(&self) -> DateTime;

    /// Milliseconds on the scale of [`Clock::now`], from an arbitrary start; never goes back.
    fn ms(&self) -> u64;

    /// UTC milliseconds since 1970 now (for the packet log and record timestamps).
    fn utc_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

const FALLBACK: DateTime = DateTime { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 };

/// The system clock, shifted to the site's zone.
#[derive(Debug, Clone)]
pub struct SystemClock {
    offset_ms: i64,
    start: Instant,
}

impl SystemClock {
    /// A clock for a site `utc_offset_minutes` east of UTC.
    #[must_use]
    pub fn new(utc_offset_minutes: i32) -> Self {
        Self { offset_ms: i64::from(utc_offset_minutes) * 60_000, start: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime {
        DateTime::from_millis(self.utc_ms() + self.offset_ms).unwrap_or(FALLBACK)
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that starts at a given civil time and runs `factor` times faster than real time (for
/// tests: with 600, an hour of data passes in six seconds).
#[derive(Debug, Clone)]
pub struct ScaledClock {
    origin_ms: i64,
    factor: u32,
    start: Instant,
}

impl ScaledClock {
    /// A clock at `origin` now, running `factor` times faster than real time.
    #[must_use]
    pub fn new(origin: DateTime, factor: u32) -> Self {
        Self { origin_ms: origin.to_millis(), factor: factor.max(1), start: Instant::now() }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime {
        DateTime::from_millis(self.origin_ms + i64::try_from(self.ms()).unwrap_or(0)).unwrap_or(FALLBACK)
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_mul(u64::from(self.factor))
    }
}
