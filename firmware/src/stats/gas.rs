//! Flue gas, Appendix D.2: state and basis conversions (18)–(22), converted concentration
//! (26)–(28), flow (29)–(32) and emission (33)–(34), plus the validity counts of (23)–(25).
//!
//! Units: concentrations mg/m³; B_a and P_s in **Pa** (the wire's kPa × 1000, A7); t_s in °C;
//! X_sw and O₂ in %. Every function returns `None` where the text is undefined.

/// (18): actual state → standard state (273 K, 101325 Pa). `None` when B_a + P_s ≤ 0.
pub fn standard_state(c_actual: f64, ba_pa: f64, ps_pa: f64, ts_c: f64) -> Option<f64> {
    let p = ba_pa + ps_pa;
    (p > 0.0).then(|| c_actual * (101_325.0 / p) * ((273.0 + ts_c) / 273.0))
}

/// (19): wet → dry basis, with X_sw in % used as a fraction (A6). `None` when X_sw ≥ 100 %.
pub fn dry_basis(c_wet: f64, xsw_pct: f64) -> Option<f64> {
    (xsw_pct < 100.0).then(|| c_wet / (1.0 - xsw_pct / 100.0))
}

/// (20): µmol/mol → mg/m³ at standard state for molar mass `m_g_per_mol` (22.4 L/mol fixed).
pub fn ppm_to_mg(ppm: f64, m_g_per_mol: f64) -> f64 {
    m_g_per_mol / 22.4 * ppm
}

/// (21): NOx as NO₂ from mass concentrations of NO and NO₂ (M_NO2 46, M_NO 30 by default, A8).
pub fn nox_from_mass(c_no: f64, c_no2: f64, m_no2: f64, m_no: f64) -> f64 {
    c_no * m_no2 / m_no + c_no2
}

/// (22): NOx as NO₂ from volume concentrations (ppm) of NO and NO₂.
pub fn nox_from_ppm(no_ppm: f64, no2_ppm: f64, m_no2: f64) -> f64 {
    (no_ppm + no2_ppm) * m_no2 / 22.4
}

/// (27): measured excess-air coefficient from dry O₂ %. `None` when O₂ ≥ 21 % (A10).
pub fn excess_air(o2_dry_pct: f64) -> Option<f64> {
    (o2_dry_pct < 21.0).then(|| 21.0 / (21.0 - o2_dry_pct))
}

/// The reference for a converted concentration, set by the source's emission standard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reference {
    /// No reference: the converted value is the dry standard-state value, D.2.3(4).
    None,
    /// Reference O₂ content in %, (28).
    O2(f64),
    /// Reference excess-air coefficient α_s, (26).
    Alpha(f64),
}

/// (26)/(28)/D.2.3(4): converted ("折算", Zs) concentration from the dry standard-state value and
/// dry O₂. `None` when O₂ ≥ 21 % with a reference (A10) or α_s ≤ 0.
pub fn converted(c_sn_dry: f64, o2_dry_pct: f64, reference: Reference) -> Option<f64> {
    match reference {
        Reference::None => Some(c_sn_dry),
        Reference::O2(o2s) => (o2_dry_pct < 21.0).then(|| c_sn_dry * (21.0 - o2s) / (21.0 - o2_dry_pct)),
        Reference::Alpha(alpha_s) => excess_air(o2_dry_pct).filter(|_| alpha_s > 0.0).map(|a| c_sn_dry * a / alpha_s),
    }
}

/// (29): section velocity from the velocity-field coefficient K_v and point velocity V_p (m/s).
pub fn section_velocity(kv: f64, vp_mps: f64) -> f64 {
    kv * vp_mps
}

/// (30): actual (wet) flow in m³ over `seconds` (3600 for Q_sh) from duct area `f_m2` and mean
/// section velocity; A21 uses the window length for minute records.
pub fn actual_flow_m3h(f_m2: f64, vs_mps: f64, seconds: f64) -> f64 {
    seconds * f_m2 * vs_mps
}

/// (31): standard-state dry flow Q_snh from actual flow Q_sh, with t_s (°C), B_a and P_s (Pa) and
/// X_sw (%). `None` when X_sw ≥ 100 % or t_s ≤ −273 °C.
pub fn standard_dry_flow_m3h(q_sh: f64, ts_c: f64, ba_pa: f64, ps_pa: f64, xsw_pct: f64) -> Option<f64> {
    (xsw_pct < 100.0 && ts_c > -273.0)
        .then(|| q_sh * (273.0 / (273.0 + ts_c)) * ((ba_pa + ps_pa) / 101_325.0) * (1.0 - xsw_pct / 100.0))
}

/// (33): emission in kg from the **measured** dry standard-state mean (mg/m³, not the converted
/// one, A15) and the standard dry flow (m³); `unit_factor` is 1e-6 for mg/m³ → kg (1e-9 for ng/m³ →
/// g, A16). The daily emission (34) is the plain sum of the hourly values (A17).
pub fn emission_kg(c_mg_m3: f64, q_sn_m3: f64, unit_factor: f64) -> f64 {
    c_mg_m3 * q_sn_m3 * unit_factor
}

/// Minimum valid counts for the flue-gas means (23)–(25).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasValidity {
    /// Valid instantaneous values per 1-min mean (n ≥ 12).
    pub samples_per_minute: u32,
    /// Valid minute means per hourly mean (k ≥ 45).
    pub minutes_per_hour: u32,
    /// Valid hourly means per daily mean (m ≥ 20).
    pub hours_per_day: u32,
}

impl Default for GasValidity {
    fn default() -> Self {
        Self { samples_per_minute: 12, minutes_per_hour: 45, hours_per_day: 20 }
    }
}

/// (23): does a 1-min mean with `n` valid samples exist?
pub fn minute_mean_valid(n: u32, v: &GasValidity) -> bool {
    n >= v.samples_per_minute
}

/// (24): does an hourly mean with `k` valid minutes exist?
pub fn hourly_mean_valid(k: u32, v: &GasValidity) -> bool {
    k >= v.minutes_per_hour
}

/// (25): does a daily mean with `m` valid hours exist?
pub fn daily_mean_valid(m: u32, v: &GasValidity) -> bool {
    m >= v.hours_per_day
}
