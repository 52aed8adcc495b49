//! HJ 212-2017 Appendix D statistics: data flags, Min/Avg/Max/Cou aggregation, waste-water volume
//! and load, flue-gas conversions, validity rules and period start times.
//!
//! Formula numbers "(n)" are Appendix D's. Where the printed text is wrong, the domain notes
//! (`appendix-d.md` §5) say so and we follow the correction, never the misprint:
//! - (5)–(7) as printed give m³/s; mean flow here is `D / period · 10³` L/s (A1).
//! - (19)/(31) take X_sw in % but use it as a fraction: we divide by 100 (A6).
//! - (18)/(31) take B_a and P_s in Pa; the wire (a01013, i23001) is kPa: callers convert (A7).
//! - (34) as printed adds a spurious 10⁻⁶: the daily emission is `Σ G_h` in kg (A17).
//! - Appendix C's COD `-Cou` sample values are placeholders, not golden values (A20).
//!
//! Invariants:
//! - Pure functions of their inputs: no clock, no IO, no allocation, no panics.
//! - A value that the text leaves undefined (below the minimum count, 0/0, O₂ ≥ 21 %, X_sw ≥ 100 %,
//!   B_a + P_s ≤ 0) is `None`, never a sentinel, so it cannot reach exceedance logic.
//! - Sums use compensated (Neumaier) summation; nothing is rounded here (round when serialising).
//! - Every aggregate carries its valid counts.

mod flags;
mod gas;
mod period;
mod water;

pub use flags::{Flag, FlagInputs, FlagSet, aggregate_flag_gas, aggregate_flag_water, derive_flag};
pub use gas::{
    GasValidity, Reference, actual_flow_m3h, converted, daily_mean_valid, dry_basis, emission_kg, excess_air,
    hourly_mean_valid, minute_mean_valid, nox_from_mass, nox_from_ppm, ppm_to_mg, section_velocity,
    standard_dry_flow_m3h, standard_state,
};
pub use period::{Period, period_start};
pub use water::{WaterAccumulator, WaterSummary, mean_flow_lps, slice_load_kg, slice_volume_m3};

/// A compensated sum (Neumaier's variant of Kahan summation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    /// Zero.
    pub const fn new() -> Self {
        Self { sum: 0.0, compensation: 0.0 }
    }

    /// Adds `x`.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The sum.
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Min, Avg, Max and count over the valid values of one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Smallest valid value.
    pub min: Option<f64>,
    /// Arithmetic mean of the valid values, `None` below the minimum count.
    pub avg: Option<f64>,
    /// Largest valid value.
    pub max: Option<f64>,
    /// Valid values.
    pub valid: u32,
    /// All values, valid or not.
    pub total: u32,
    /// Values flagged N.
    pub normal: u32,
}

/// Accumulates values with flags into a [`Summary`]: formulas (15)–(17) and (23)–(25).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanAccumulator {
    sum: Sum,
    min: Option<f64>,
    max: Option<f64>,
    valid: u32,
    total: u32,
    normal: u32,
}

impl MeanAccumulator {
    /// Empty.
    pub const fn new() -> Self {
        Self { sum: Sum::new(), min: None, max: None, valid: 0, total: 0, normal: 0 }
    }

    /// Adds `value` with `flag`; it counts towards the mean only if `flag` is in `valid` and the
    /// value is finite.
    pub fn push(&mut self, value: f64, flag: Flag, valid: FlagSet) {
        self.total += 1;
        if flag == Flag::N {
            self.normal += 1;
        }
        if !valid.contains(flag) || !value.is_finite() {
            return;
        }
        self.valid += 1;
        self.sum.add(value);
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    /// The summary; the mean needs at least `min_valid` valid values (and at least one).
    pub fn finish(&self, min_valid: u32) -> Summary {
        let avg = (self.valid >= min_valid.max(1)).then(|| self.sum.value() / self.valid as f64);
        Summary { min: self.min, avg, max: self.max, valid: self.valid, total: self.total, normal: self.normal }
    }
}

/// i33202 daily energy in kWh from the cumulative counter now and at the start of the day. A counter
/// that went backwards (reset or replaced meter) counts from zero.
pub fn daily_energy_kwh(total_now_kwh: f64, total_at_day_start_kwh: f64) -> f64 {
    let d = total_now_kwh - total_at_day_start_kwh;
    if d >= 0.0 { d } else { total_now_kwh.max(0.0) }
}
