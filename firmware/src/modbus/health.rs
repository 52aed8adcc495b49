//! Dead-device isolation: per-device communication state across poll cycles.
//!
//! A *cycle* is one pass over the poll list. A device whose requests fail (transport errors only:
//! timeouts, CRC, wrong unit, ...) in `failures_before_backoff` consecutive cycles is backed off for
//! `backoff_ms`: its requests are skipped until the back-off expires, then one probe cycle is allowed.
//! Within a cycle, the first failed request of a device skips its remaining requests, so one dead
//! analyzer costs one timeout per cycle, not one per block.
//!
//! A Modbus exception proves the device is alive, so it never counts as a failure.
//!
//! Invariants: time is passed in as milliseconds since an arbitrary epoch and only compared and
//! added (saturating); nothing reads a clock. [`CommState`] is what flag B and i12002 are derived from.

/// Back-off policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failed cycles before the device is backed off (default 3; 0 acts as 1).
    pub failures_before_backoff: u8,
    /// How long a backed-off device is skipped, in milliseconds (default 60 000).
    pub backoff_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { failures_before_backoff: 3, backoff_ms: 60_000 }
    }
}

/// Communication state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommState {
    /// The last cycle succeeded (or no cycle has run yet).
    Ok,
    /// The last `consecutive` cycles failed; the device is still polled.
    Failing {
        /// Consecutive failed cycles.
        consecutive: u8,
    },
    /// The device is skipped until `until_ms`.
    BackedOff {
        /// End of the back-off, in the caller's milliseconds.
        until_ms: u64,
    },
}

impl CommState {
    /// True unless the last cycle failed or the device is backed off.
    pub const fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// HJ 212-2017 Table B.10 i12002 (analyzer–DAU communication): 0 normal, 1 abnormal.
    pub const fn i12002(&self) -> u8 {
        if self.is_ok() { 0 } else { 1 }
    }
}

/// The health of one device across cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceHealth {
    unit: u8,
    state: CommState,
    consecutive: u8,
    failed_this_cycle: bool,
    succeeded_this_cycle: bool,
}

impl DeviceHealth {
    /// A device not yet polled (state `Ok`).
    pub const fn new(unit: u8) -> Self {
        Self { unit, state: CommState::Ok, consecutive: 0, failed_this_cycle: false, succeeded_this_cycle: false }
    }

    /// The unit address.
    pub const fn unit(&self) -> u8 {
        self.unit
    }

    /// The current state.
    pub const fn state(&self) -> CommState {
        self.state
    }

    /// Starts a cycle at `now_ms`; returns false when the device is backed off and must be skipped.
    pub fn begin_cycle(&mut self, now_ms: u64) -> bool {
        self.failed_this_cycle = false;
        self.succeeded_this_cycle = false;
        !matches!(self.state, CommState::BackedOff { until_ms } if now_ms < until_ms)
    }

    /// True while the device may still be asked in this cycle (not backed off, no failure yet).
    pub fn may_request(&self, now_ms: u64) -> bool {
        !self.failed_this_cycle && !matches!(self.state, CommState::BackedOff { until_ms } if now_ms < until_ms)
    }

    /// Records a request that got a valid answer (an exception counts: the device is alive).
    pub fn record_success(&mut self) {
        self.succeeded_this_cycle = true;
    }

    /// Records a request that failed on the transport; the device's other requests are skipped.
    pub fn record_failure(&mut self) {
        self.failed_this_cycle = true;
    }

    /// Ends the cycle at `now_ms` and updates the state.
    pub fn end_cycle(&mut self, now_ms: u64, cfg: &HealthConfig) {
        if self.failed_this_cycle {
            self.consecutive = self.consecutive.saturating_add(1);
            self.state = if self.consecutive >= cfg.failures_before_backoff.max(1) {
                CommState::BackedOff { until_ms: now_ms.saturating_add(cfg.backoff_ms) }
            } else {
                CommState::Failing { consecutive: self.consecutive }
            };
        } else if self.succeeded_this_cycle {
            self.consecutive = 0;
            self.state = CommState::Ok;
        }
        // Neither: the device was skipped (backed off) or had nothing to read; the state stands.
    }
}

/// Health of up to `N` devices, looked up by unit address; no allocation.
#[derive(Debug, Clone)]
pub struct HealthTable<const N: usize> {
    devices: [Option<DeviceHealth>; N],
    config: HealthConfig,
}

impl<const N: usize> HealthTable<N> {
    /// An empty table.
    pub const fn new(config: HealthConfig) -> Self {
        Self { devices: [None; N], config }
    }

    /// The policy in use.
    pub const fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The entry for `unit`, created on first use; `None` if the table is full.
    pub fn device_mut(&mut self, unit: u8) -> Option<&mut DeviceHealth> {
        let idx = match self.devices.iter().position(|d| matches!(d, Some(d) if d.unit == unit)) {
            Some(i) => i,
            None => {
                let free = self.devices.iter().position(Option::is_none)?;
                self.devices[free] = Some(DeviceHealth::new(unit));
                free
            }
        };
        self.devices[idx].as_mut()
    }

    /// The state of `unit` (`Ok` for a unit never seen).
    pub fn state(&self, unit: u8) -> CommState {
        self.devices.iter().flatten().find(|d| d.unit == unit).map_or(CommState::Ok, |d| d.state)
    }

    /// Starts a cycle for every known device.
    pub fn begin_cycle(&mut self, now_ms: u64) {
        for d in self.devices.iter_mut().flatten() {
            d.begin_cycle(now_ms);
        }
    }

    /// True if `unit` may be asked now (unknown units may).
    pub fn may_request(&mut self, unit: u8, now_ms: u64) -> bool {
        self.device_mut(unit).is_none_or(|d| d.may_request(now_ms))
    }

    /// Records the outcome of one request to `unit`.
    pub fn record(&mut self, unit: u8, success: bool) {
        if let Some(d) = self.device_mut(unit) {
            if success { d.record_success() } else { d.record_failure() }
        }
    }

    /// Ends the cycle for every known device.
    pub fn end_cycle(&mut self, now_ms: u64) {
        let cfg = self.config;
        for d in self.devices.iter_mut().flatten() {
            d.end_cycle(now_ms, &cfg);
        }
    }

    /// Iterates over the known devices.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceHealth> {
        self.devices.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failed_cycles_back_off_then_probe() {
        let cfg = HealthConfig { failures_before_backoff: 3, backoff_ms: 10_000 };
        let mut d = DeviceHealth::new(5);
        for (cycle, now) in [0u64, 1000, 2000].into_iter().enumerate() {
            assert!(d.begin_cycle(now));
            d.record_failure();
            assert!(!d.may_request(now), "remaining requests of the cycle are skipped");
            d.end_cycle(now, &cfg);
            if cycle < 2 {
                assert_eq!(d.state(), CommState::Failing { consecutive: cycle as u8 + 1 });
            }
        }
        assert_eq!(d.state(), CommState::BackedOff { until_ms: 12_000 });
        assert_eq!(d.state().i12002(), 1);
        assert!(!d.begin_cycle(11_999));
        d.end_cycle(11_999, &cfg);
        assert_eq!(d.state(), CommState::BackedOff { until_ms: 12_000 }, "a skipped cycle changes nothing");
        assert!(d.begin_cycle(12_000), "the probe cycle is allowed");
        d.record_failure();
        d.end_cycle(12_000, &cfg);
        assert_eq!(d.state(), CommState::BackedOff { until_ms: 22_000 }, "a failed probe backs off again");
        assert!(d.begin_cycle(22_000));
        d.record_success();
        d.end_cycle(22_000, &cfg);
        assert_eq!(d.state(), CommState::Ok);
        assert_eq!(d.state().i12002(), 0);
    }

    #[test]
    fn table_tracks_units_independently() {
        let mut t: HealthTable<2> = HealthTable::new(HealthConfig { failures_before_backoff: 1, backoff_ms: 5 });
        t.begin_cycle(0);
        t.record(1, false);
        t.record(2, true);
        assert!(!t.may_request(1, 0));
        assert!(t.may_request(2, 0));
        t.end_cycle(0);
        assert_eq!(t.state(1), CommState::BackedOff { until_ms: 5 });
        assert_eq!(t.state(2), CommState::Ok);
        assert!(t.device_mut(3).is_none(), "the table is full");
        assert_eq!(t.state(3), CommState::Ok);
    }
}
