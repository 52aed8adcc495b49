//! Waste water, Appendix D.1: volume (1)–(4), mean flow (5)–(7) corrected by 10³, load (8)–(11),
//! flow-weighted means (12)–(14) and arithmetic means (15)–(17).
//!
//! One [`WaterAccumulator`] serves every level: feed it 5-s slices for a block (minute record), or
//! finished block summaries for an hour, or hour summaries for a day. Validity is counted per
//! quantity (appendix-d.md §4): a part's volume needs a valid flow; its load needs a valid flow and
//! a valid concentration; the arithmetic mean counts valid concentrations.

use super::{MeanAccumulator, Sum};

/// (1): volume of one slice in m³ from flow `q_lps` (L/s) over `t_s` seconds.
pub fn slice_volume_m3(q_lps: f64, t_s: f64) -> f64 {
    q_lps * t_s * 1e-3
}

/// (8): load of one slice in kg from its volume (m³) and concentration (mg/L).
pub fn slice_load_kg(volume_m3: f64, c_mgl: f64) -> f64 {
    volume_m3 * c_mgl * 1e-3
}

/// (5)–(7) with the missing 10³ restored (A1): mean flow in L/s over `period_s` seconds.
/// The divisor is the nominal period even when parts are invalid (A2); `None` for a zero period.
pub fn mean_flow_lps(volume_m3: f64, period_s: f64) -> Option<f64> {
    (period_s > 0.0).then(|| volume_m3 / period_s * 1e3)
}

/// The result of one water period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaterSummary {
    /// Cou of the flow: volume in m³ over the valid parts ((2)–(4)); `None` below the minimum.
    pub volume_m3: Option<f64>,
    /// Cou of the pollutant: load in kg over the valid parts ((9)–(11)); `None` below the minimum.
    pub load_kg: Option<f64>,
    /// Avg of the flow in L/s, volume over the nominal period.
    pub mean_flow_lps: Option<f64>,
    /// (12)–(14) literally: G / D · 10³ with D over all flow-valid parts. `None` when D = 0 (A25).
    pub weighted_mgl: Option<f64>,
    /// G / D · 10³ with D over only the parts whose load is valid (A5's "matched denominator").
    pub weighted_matched_mgl: Option<f64>,
    /// (15)–(17): arithmetic mean of the valid concentrations.
    pub arithmetic_mgl: Option<f64>,
    /// Smallest valid concentration.
    pub min_mgl: Option<f64>,
    /// Largest valid concentration.
    pub max_mgl: Option<f64>,
    /// Parts with a valid volume.
    pub n_volume: u32,
    /// Parts with a valid load.
    pub n_load: u32,
    /// Parts with a valid concentration.
    pub n_conc: u32,
}

/// Accumulates the parts of one water period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WaterAccumulator {
    volume: Sum,
    load: Sum,
    matched_volume: Sum,
    conc: MeanAccumulator,
    n_volume: u32,
    n_load: u32,
}

impl WaterAccumulator {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            volume: Sum::new(),
            load: Sum::new(),
            matched_volume: Sum::new(),
            conc: MeanAccumulator::new(),
            n_volume: 0,
            n_load: 0,
        }
    }

    /// Adds one slice of `t_s` seconds: `q_lps` is the flow if valid, `c_mgl` the concentration if
    /// valid (for a periodic analyzer, its latest valid result).
    pub fn push_slice(&mut self, q_lps: Option<f64>, c_mgl: Option<f64>, t_s: f64) {
        let volume = q_lps.map(|q| slice_volume_m3(q, t_s));
        let load = volume.zip(c_mgl).map(|(d, c)| slice_load_kg(d, c));
        self.push_part(volume, load, c_mgl);
    }

    /// Adds one part: its volume (m³), load (kg) and concentration (mg/L), each if valid.
    pub fn push_part(&mut self, volume_m3: Option<f64>, load_kg: Option<f64>, c_mgl: Option<f64>) {
        if let Some(d) = volume_m3.filter(|v| v.is_finite()) {
            self.volume.add(d);
            self.n_volume += 1;
            if let Some(g) = load_kg.filter(|v| v.is_finite()) {
                self.load.add(g);
                self.matched_volume.add(d);
                self.n_load += 1;
            }
        }
        if let Some(c) = c_mgl {
            self.conc.push(c, super::Flag::N, super::FlagSet::MEASURED);
        }
    }

    /// Adds a finished sub-period (a block into an hour, an hour into a day). Its arithmetic mean
    /// goes into this period's arithmetic mean, per (16)/(17).
    pub fn push_summary(&mut self, s: &WaterSummary) {
        self.push_part(s.volume_m3, s.load_kg.filter(|_| s.volume_m3.is_some()), s.arithmetic_mgl);
    }

    /// The summary over `period_s` seconds; each quantity needs at least `min_parts` valid parts
    /// (120 slices for a 10-min block at 5 s, (2); 1 block for an hour, (3); 1 hour for a day, (4)).
    pub fn finish(&self, period_s: f64, min_parts: u32) -> WaterSummary {
        let min = min_parts.max(1);
        let volume = (self.n_volume >= min).then(|| self.volume.value());
        let load = (self.n_load >= min).then(|| self.load.value());
        let weighted = |g: Option<f64>, d: f64| g.filter(|_| d > 0.0).map(|g| g / d * 1e3);
        let conc = self.conc.finish(min);
        WaterSummary {
            volume_m3: volume,
            load_kg: load,
            mean_flow_lps: volume.and_then(|d| mean_flow_lps(d, period_s)),
            weighted_mgl: volume.and_then(|d| weighted(load, d)),
            weighted_matched_mgl: weighted(load, self.matched_volume.value()),
            arithmetic_mgl: conc.avg,
            min_mgl: conc.min,
            max_mgl: conc.max,
            n_volume: self.n_volume,
            n_load: self.n_load,
            n_conc: conc.valid,
        }
    }
}
