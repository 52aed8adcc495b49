//! Configuration: the registry of sites the platform expects, and every rule's thresholds.
//!
//! Every struct is `#[serde(default)]`: a missing field takes the documented default, so an empty
//! table (`[quality]` in TOML, `{}` in JSON) is a complete configuration. Defaults and the reasons
//! for them are also listed in `docs/data-quality.md`.

use serde::{Deserialize, Serialize};

use crate::quality::comparison::ComparisonConfig;

/// The whole data-quality configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// The site registry: what each MN should send. MNs not listed are still tracked, with
    /// expectations learnt from what they send.
    pub sites: Vec<SiteEntry>,
    /// Values that mean "could not be computed" and take part in no rule. Default `[9999.99]`
    /// (the HJ 212-2025 sentinel for a converted value that cannot be computed).
    pub sentinels: Vec<f64>,
    /// Transmission accounting.
    pub accounting: AccountingConfig,
    /// Gap recovery.
    pub recovery: RecoveryConfig,
    /// Silent DAUs, offline MNs, CRC/auth failure bursts.
    pub link: LinkConfig,
    /// Flat-line rule.
    pub flat_line: FlatLineConfig,
    /// Values hugging the emission limit.
    pub near_limit: NearLimitConfig,
    /// Dynamic-control rules (slope/intercept, standard checks, flags vs. status).
    pub dynamic_control: DynamicControlConfig,
    /// Physical-consistency rules.
    pub consistency: ConsistencyConfig,
    /// Treatment facility without power while discharging.
    pub facility: FacilityConfig,
    /// Comparison monitoring against laboratory results.
    pub comparison: ComparisonConfig,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            sentinels: vec![9999.99],
            accounting: AccountingConfig::default(),
            recovery: RecoveryConfig::default(),
            link: LinkConfig::default(),
            flat_line: FlatLineConfig::default(),
            near_limit: NearLimitConfig::default(),
            dynamic_control: DynamicControlConfig::default(),
            consistency: ConsistencyConfig::default(),
            facility: FacilityConfig::default(),
            comparison: ComparisonConfig::default(),
        }
    }
}

/// One registered DAU.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteEntry {
    /// The MN.
    pub mn: String,
    /// A display name for reports.
    pub name: String,
    /// `YYYYMMDDhhmmss`: from when data are expected. Default: when the engine first heard of the
    /// MN (its first message, or the engine's first call for a registered MN that never spoke).
    pub active_from: Option<String>,
    /// The data streams expected, by CN. Empty: `accounting.default_cns`.
    pub streams: Vec<StreamSpec>,
    /// The pollutants expected in every data record, with their limits. Empty: whatever the
    /// DAU sends.
    pub pollutants: Vec<PollutantSpec>,
    /// Treatment-facility codes (`SB1`, …) whose power matters. Empty: every `SBn` reported.
    pub facilities: Vec<String>,
}

/// One expected data stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSpec {
    /// 2011, 2051, 2061 or 2031.
    pub cn: u16,
    /// The interval in seconds. `None`: announced by the DAU (1061/1063), inferred from the
    /// `DataTime` spacing, or the CN's default (2011: 30 s, 2051: 600 s, 2061: 3600 s, 2031: 1 d).
    pub interval_s: Option<u32>,
}

/// One expected pollutant and its thresholds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollutantSpec {
    /// The code (`w01018`).
    pub code: String,
    /// The emission limit, in the unit the DAU reports (`ZsAvg` for flue gas when sent).
    pub limit: Option<f64>,
    /// Flat-line band for this pollutant in its unit (overrides `flat_line.absolute_band`).
    pub flat_band: Option<f64>,
    /// Flat-line minimum duration for this pollutant, hours (overrides `flat_line.min_hours`).
    pub flat_min_hours: Option<f64>,
}

/// Transmission accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountingConfig {
    /// Flags that make a value valid for the effective rate. Default `["N"]`.
    pub valid_flags: Vec<String>,
    /// CNs accounted when no registry entry lists streams. Default `[2061]` (the hourly record is
    /// what the O&M assessment counts).
    pub default_cns: Vec<u16>,
    /// CNs that become expected once an MN sends them, registered or not. Default
    /// `[2051, 2061, 2031]` (2011 only when the registry lists it).
    pub learn_cns: Vec<u16>,
    /// A period counts as due this long after its end. Default 10 minutes.
    pub grace_minutes: f64,
    /// A day's record is emitted this long after the day ends (time for recovery). Default 3 hours.
    pub settle_hours: f64,
    /// Days of history kept. Default 62.
    pub keep_days: u32,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            valid_flags: vec!["N".into()],
            default_cns: vec![2061],
            learn_cns: vec![2051, 2061, 2031],
            grace_minutes: 10.0,
            settle_hours: 3.0,
            keep_days: 62,
        }
    }
}

/// Gap recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// CNs recovered, in priority order. Default `[2061, 2051]`.
    pub cns: Vec<u16>,
    /// A period is missing this long after its end. Default 20 minutes.
    pub grace_minutes: f64,
    /// How far back hourly (2061) gaps are recovered. Default 48 hours.
    pub hourly_lookback_hours: f64,
    /// How far back minute (2051) gaps are recovered. Default 6 hours.
    pub minute_lookback_hours: f64,
    /// Longest range of one hourly request. Default 24 hours.
    pub hourly_max_span_hours: f64,
    /// Longest range of one minute request. Default 120 minutes.
    pub minute_max_span_minutes: f64,
    /// Minimum time between two requests to one MN. Default 15 minutes.
    pub per_mn_spacing_minutes: f64,
    /// Most requests started in any 60 s, all MNs together. Default 10.
    pub global_per_minute: u32,
    /// Most requests outstanding at once, all MNs together. Default 20.
    pub global_outstanding: u32,
    /// A request with no 9012 after this long is finished as timed out. Default 10 minutes.
    pub reply_timeout_minutes: f64,
    /// Requests for one period before giving up. Default 3.
    pub max_attempts: u32,
    /// Wait before asking again for a period that did not arrive. Default 60 minutes.
    pub retry_after_minutes: f64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cns: vec![2061, 2051],
            grace_minutes: 20.0,
            hourly_lookback_hours: 48.0,
            minute_lookback_hours: 6.0,
            hourly_max_span_hours: 24.0,
            minute_max_span_minutes: 120.0,
            per_mn_spacing_minutes: 15.0,
            global_per_minute: 10,
            global_outstanding: 20,
            reply_timeout_minutes: 10.0,
            max_attempts: 3,
            retry_after_minutes: 60.0,
        }
    }
}

/// Link rules and networking status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// A connected DAU is silent after this many of its shortest expected intervals. Default 3.
    pub silence_factor: f64,
    /// ... and never before this many minutes. Default 10.
    pub silence_floor_minutes: f64,
    /// A registered MN with nothing received for this long (and not connected) has stopped
    /// transmitting. Default 120 minutes (two missed hourly records).
    pub offline_after_minutes: f64,
    /// Window for counting CRC/auth failures. Default 10 minutes.
    pub failure_window_minutes: f64,
    /// Failures in the window that raise an alert. Default 5.
    pub failure_threshold: u32,
    /// An analyzer whose values are flagged `B` (no communication) for this long raises
    /// `analyzer_comm_failure`. Default 10 minutes.
    pub analyzer_comm_minutes: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            silence_factor: 3.0,
            silence_floor_minutes: 10.0,
            offline_after_minutes: 120.0,
            failure_window_minutes: 10.0,
            failure_threshold: 5,
            analyzer_comm_minutes: 10.0,
        }
    }
}

/// Flat line (恒值).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlatLineConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// Band relative to the value: a run stays flat while `max − min ≤ relative_band·|value|`.
    /// Default 0.001 (0.1 %).
    pub relative_band: f64,
    /// Absolute band, same unit as the values; the larger of the two bands applies.
    /// Default 0 (only the relative band).
    pub absolute_band: f64,
    /// A flat run longer than this raises the alert. Default 6 hours.
    pub min_hours: f64,
    /// ... and only with at least this many values. Default 6.
    pub min_points: u32,
    /// Runs of zeros are ignored (shutdown, no discharge). Default true.
    pub ignore_zero: bool,
    /// CNs checked (`Rtd` for 2011, `Avg` for the others). Default `[2011, 2051, 2061]`.
    pub cns: Vec<u16>,
}

impl Default for FlatLineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            relative_band: 0.001,
            absolute_band: 0.0,
            min_hours: 6.0,
            min_points: 6,
            ignore_zero: true,
            cns: vec![2011, 2051, 2061],
        }
    }
}

/// Values hugging the emission limit (贴限).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearLimitConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// The band is `[lower_fraction·limit, limit)`. Default 0.9.
    pub lower_fraction: f64,
    /// Share of the window's hourly values in the band that raises the alert. Default 0.5.
    pub share: f64,
    /// Window over hourly (2061) values, hours. Default 72.
    pub window_hours: f64,
    /// Fewest values in the window for a verdict. Default 24.
    pub min_samples: u32,
}

impl Default for NearLimitConfig {
    fn default() -> Self {
        Self { enabled: true, lower_fraction: 0.9, share: 0.5, window_hours: 72.0, min_samples: 24 }
    }
}

/// Dynamic-control rules (动态管控).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicControlConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// Calibration parameters whose change needs a calibration. Default `["i13007", "i13008"]`
    /// (intercept, slope). Hebei deployments may add `i13103`, `i13118`, `i13119`, `i13120`.
    pub watched_parameters: Vec<String>,
    /// A change needs calibration evidence within this many minutes before or after it.
    /// Default 120.
    pub calibration_window_minutes: f64,
    /// Relative change below which a parameter is unchanged. Default 1e-6.
    pub change_epsilon: f64,
    /// `i12001` values that are calibration evidence. Default `[3, 8]` (校准, 标定).
    pub calibration_status: Vec<u16>,
    /// `i12001` values under which `N` data are suspect. Default `[1, 2, 3, 6, 8, 10]`
    /// (maintenance, fault, calibration, power fault, standardisation, O&M).
    pub bad_status: Vec<u16>,
    /// Also read the Hebei codes (`i12101` status, `i13101`/`i13107` calibration times,
    /// `i13129` standard-check error). Default true.
    pub hebei_codes: bool,
    /// Allowed standard-check relative error, percent. Default 10.
    pub standard_check_allowed_pct: f64,
    /// Share of a minute/hour period under a bad status that makes an `N` flag suspect.
    /// Default 0.5.
    pub status_overlap_share: f64,
}

impl Default for DynamicControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            watched_parameters: vec!["i13007".into(), "i13008".into()],
            calibration_window_minutes: 120.0,
            change_epsilon: 1e-6,
            calibration_status: vec![3, 8],
            bad_status: vec![1, 2, 3, 6, 8, 10],
            hebei_codes: true,
            standard_check_allowed_pct: 10.0,
            status_overlap_share: 0.5,
        }
    }
}

/// Physical-consistency rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// NH3-N may exceed TN by this fraction of TN (measurement error). Default 0.1.
    pub nh3n_tn_relative: f64,
    /// ... plus this absolute margin, mg/L. Default 0.3 (the HJ 355 low-range error).
    pub nh3n_tn_absolute: f64,
    /// O2 may stray this far outside 0–21 %. Default 0.1 (percentage points).
    pub o2_margin: f64,
    /// Flow at or below this is zero. Default 0.
    pub flow_zero: f64,
    /// Loads above this are positive. Default 0.
    pub load_positive: f64,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            nh3n_tn_relative: 0.1,
            nh3n_tn_absolute: 0.3,
            o2_margin: 0.1,
            flow_zero: 0.0,
            load_positive: 0.0,
        }
    }
}

/// Treatment facility without power while discharging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FacilityConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// Plant current (`i33200`, A) below this is "no power". Default 1.0 A.
    pub current_min_amps: f64,
    /// The facility must be off (or below the current) this long. Default 30 minutes.
    pub min_duration_minutes: f64,
    /// States and flows older than this (against `now`) are stale. Default 90 minutes (an hourly
    /// record arrives shortly after its hour ends).
    pub max_age_minutes: f64,
    /// Flow above this is discharging. Default 0.
    pub min_flow: f64,
}

impl Default for FacilityConfig {
    fn default() -> Self {
        Self { enabled: true, current_min_amps: 1.0, min_duration_minutes: 30.0, max_age_minutes: 90.0, min_flow: 0.0 }
    }
}

impl QualityConfig {
    /// The registry entry of an MN.
    #[must_use]
    pub fn site(&self, mn: &str) -> Option<&SiteEntry> {
        self.sites.iter().find(|s| s.mn == mn)
    }

    /// The registry's spec of one pollutant of one MN.
    #[must_use]
    pub fn pollutant(&self, mn: &str, code: &str) -> Option<&PollutantSpec> {
        self.site(mn).and_then(|s| s.pollutants.iter().find(|p| p.code == code))
    }

    /// True when `v` is a sentinel ("not computable") value.
    #[must_use]
    pub fn is_sentinel(&self, v: f64) -> bool {
        self.sentinels.iter().any(|s| (s - v).abs() < 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_is_the_default_and_round_trips() {
        let c: QualityConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, QualityConfig::default());
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<QualityConfig>(&text).unwrap(), c);
        let c: QualityConfig = serde_json::from_str(
            r#"{"near_limit":{"share":0.3},"sites":[{"mn":"A","pollutants":[{"code":"w01018","limit":50}]}]}"#,
        )
        .unwrap();
        assert!((c.near_limit.share - 0.3).abs() < 1e-12);
        assert_eq!(c.near_limit.min_samples, 24);
        assert_eq!(c.pollutant("A", "w01018").unwrap().limit, Some(50.0));
        assert!(serde_json::from_str::<QualityConfig>(r#"{"no_such":1}"#).is_err());
    }
}
