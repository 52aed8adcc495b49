//! Comparison monitoring (比对监测): laboratory results against the online values around each
//! sampling time, judged by absolute or relative error against acceptance limits.
//!
//! Default limits — **verify against the official texts before relying on them**:
//! * water, HJ 354/355-2019 (actual water-sample comparison): the tiered table of the domain notes
//!   §6.4, which the notes mark *recalled, not verified* (tag M);
//! * flue gas, HJ 75-2017: the domain notes give no numbers. The defaults below are the reference
//!   method comparison tiers of HJ 75-2017 as recalled here. No text of the standard could be
//!   found to check them against; public implementation code agrees on every figure except
//!   particulate matter (see `docs/data-quality.md`). Each tier's figure is applied to every
//!   single pair. For the absolute- and relative-error tiers that is at least as strict as the
//!   standard's judgement of the mean error; for the relative-accuracy tiers (SO2/NOx ≥ 250
//!   µmol/mol, O2 > 5 %) it is not the same test: relative accuracy over ≥ 9 pairs adds a
//!   confidence term, so a set of pairs that each pass can still fail it.
//!
//! Any rule can be replaced per pollutant in [`ComparisonConfig::rules`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::quality::{LookupKey, refill, stamp};

/// One tier of an acceptance rule, chosen by the laboratory (reference) value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The tier applies to reference values below this (exclusive, unless `inclusive`);
    /// `None`: no upper bound.
    #[serde(default)]
    pub below: Option<f64>,
    /// When true, `below` itself belongs to this tier (HJ 75-2017 writes "≤ 10 mg/m³" for
    /// particulate matter, "≤ 10 m/s" for velocity). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inclusive: bool,
    /// Allowed absolute error |online − lab|, in the pollutant's unit.
    #[serde(default)]
    pub absolute: Option<f64>,
    /// Allowed relative error |online − lab| / lab, percent.
    #[serde(default)]
    pub relative_pct: Option<f64>,
}

/// The acceptance rule of one pollutant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptanceRule {
    /// The pollutant code.
    pub pollutant: String,
    /// Tiers in ascending order of `below`.
    pub tiers: Vec<Tier>,
    /// Where the numbers come from.
    #[serde(default)]
    pub source: String,
}

/// Comparison settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComparisonConfig {
    /// Online values from this many minutes before the sampling time are used. Default 60.
    pub window_before_minutes: f64,
    /// ... and this many after. Default 60.
    pub window_after_minutes: f64,
    /// CNs used for online values, in preference order; the first with values in the window
    /// wins and its valid values are averaged; the engine keeps values of these CNs only.
    /// Default `[2061, 2051]` (real-time data would cost too much memory over a week).
    pub online_cns: Vec<u16>,
    /// Hours of online values the engine keeps for comparisons. Default 168 (a week).
    pub keep_online_hours: f64,
    /// Flags of online values that may be compared. Default `["N"]`.
    pub valid_flags: Vec<String>,
    /// Rules that replace (by pollutant) or add to the built-in defaults.
    pub rules: Vec<AcceptanceRule>,
}

impl Default for ComparisonConfig {
    fn default() -> Self {
        Self {
            window_before_minutes: 60.0,
            window_after_minutes: 60.0,
            online_cns: vec![2061, 2051],
            keep_online_hours: 168.0,
            valid_flags: vec!["N".into()],
            rules: Vec::new(),
        }
    }
}

fn tier(below: Option<f64>, absolute: Option<f64>, relative_pct: Option<f64>) -> Tier {
    Tier { below, inclusive: false, absolute, relative_pct }
}

/// A tier for reference values up to and including `up_to`.
fn tier_le(up_to: f64, absolute: Option<f64>, relative_pct: Option<f64>) -> Tier {
    Tier { below: Some(up_to), inclusive: true, absolute, relative_pct }
}

fn rule(pollutant: &str, source: &str, tiers: Vec<Tier>) -> AcceptanceRule {
    AcceptanceRule { pollutant: pollutant.into(), tiers, source: source.into() }
}

/// The built-in acceptance rules (see the module docs for their status).
#[must_use]
pub fn default_rules() -> Vec<AcceptanceRule> {
    let w = "HJ 354/355-2019 as recalled in the domain notes §6.4 [M], unverified";
    let g = "HJ 75-2017 as recalled here; no text of the standard found, figures match public \
             implementation code; applied per pair";
    let pm = "HJ 75-2017 as recalled here, unverified (public implementation code disagrees); \
              applied per pair";
    vec![
        rule(
            "w01018",
            w,
            vec![
                tier(Some(30.0), Some(5.0), None),
                tier(Some(60.0), None, Some(30.0)),
                tier(Some(100.0), None, Some(20.0)),
                tier(None, None, Some(15.0)),
            ],
        ),
        rule("w21003", w, vec![tier(Some(2.0), Some(0.3), None), tier(None, None, Some(15.0))]),
        rule("w21011", w, vec![tier(Some(0.4), Some(0.06), None), tier(None, None, Some(15.0))]),
        rule("w21001", w, vec![tier(Some(2.0), Some(0.3), None), tier(None, None, Some(15.0))]),
        rule("w01001", w, vec![tier(None, Some(0.5), None)]),
        rule("w01010", w, vec![tier(None, Some(0.5), None)]),
        rule("w00000", w, vec![tier(None, None, Some(10.0))]),
        // SO2, mg/m³ (20, 50, 250 µmol/mol ≈ 57, 143, 715 mg/m³; 6 and 20 µmol/mol ≈ 17 and
        // 57 mg/m³). Lower bounds inclusive: "20 ≤ c < 50".
        rule(
            "a21026",
            g,
            vec![
                tier(Some(57.0), Some(17.0), None),
                tier(Some(143.0), None, Some(30.0)),
                tier(Some(715.0), Some(57.0), None),
                tier(None, None, Some(15.0)),
            ],
        ),
        // NOx as NO2, mg/m³ (20, 50, 250 µmol/mol ≈ 41, 103, 513 mg/m³; 6 and 20 µmol/mol ≈ 12
        // and 41 mg/m³).
        rule(
            "a21002",
            g,
            vec![
                tier(Some(41.0), Some(12.0), None),
                tier(Some(103.0), None, Some(30.0)),
                tier(Some(513.0), Some(41.0), None),
                tier(None, None, Some(15.0)),
            ],
        ),
        // Particulate matter, mg/m³. Upper bounds inclusive: "10 < c ≤ 20".
        rule(
            "a34013",
            pm,
            vec![
                tier_le(10.0, Some(5.0), None),
                tier_le(20.0, Some(6.0), None),
                tier_le(50.0, None, Some(30.0)),
                tier_le(100.0, None, Some(25.0)),
                tier_le(200.0, None, Some(20.0)),
                tier(None, None, Some(15.0)),
            ],
        ),
        // O2 %, velocity m/s, temperature °C, humidity %: "≤ 5.0 %", "≤ 10 m/s".
        rule("a19001", g, vec![tier_le(5.0, Some(1.0), None), tier(None, None, Some(15.0))]),
        rule("a01011", g, vec![tier_le(10.0, None, Some(12.0)), tier(None, None, Some(10.0))]),
        rule("a01012", g, vec![tier(None, Some(3.0), None)]),
        rule("a01014", g, vec![tier_le(5.0, Some(1.5), None), tier(None, None, Some(25.0))]),
    ]
}

/// One laboratory result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSample {
    /// The DAU.
    pub mn: String,
    /// The pollutant code.
    pub pollutant: String,
    /// The sampling time.
    #[serde(with = "stamp")]
    pub sampling_time: DateTime,
    /// The laboratory value.
    pub value: f64,
}

/// One online value, as kept by the engine or supplied by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineValue {
    /// The DAU.
    pub mn: String,
    /// The pollutant code.
    pub pollutant: String,
    /// The CN it came from.
    pub cn: u16,
    /// Its `DataTime`.
    #[serde(with = "stamp")]
    pub time: DateTime,
    /// `Rtd` or `Avg`.
    pub value: f64,
    /// Its flag.
    pub flag: String,
}

/// The online values the engine keeps, compact: per (MN, pollutant), oldest first, with only
/// the time, CN, value and flag of each (the MN and code are not repeated per value).
#[derive(Debug, Clone, Default)]
pub(crate) struct OnlineStore {
    series: BTreeMap<(String, String), VecDeque<Kept>>,
    key: LookupKey<(String, String)>,
    /// The last pruning horizon: a value older than it that came late and still sits behind a
    /// newer one is not given out.
    horizon: i64,
    /// The flags seen, each once (`Kept::flag` is an index into it).
    flags: Vec<Box<str>>,
    flag_index: HashMap<Box<str>, u16>,
}

/// Distinct flags remembered; a site inventing more is kept as [`FLAG_OVERFLOW`].
const MAX_FLAGS: usize = 4096;
const FLAG_OVERFLOW: &str = "?";

#[derive(Debug, Clone)]
struct Kept {
    time: DateTime,
    cn: u16,
    flag: u16,
    value: f64,
}

impl OnlineStore {
    /// Keeps one value.
    pub(crate) fn push(&mut self, mn: &str, pollutant: &str, cn: u16, time: DateTime, value: f64, flag: &str) {
        let flag = self.flag_index(flag);
        let kept = Kept { time, cn, flag, value };
        let key = &mut self.key.0;
        refill(&mut key.0, mn);
        refill(&mut key.1, pollutant);
        match self.series.get_mut(&*key) {
            Some(series) => series.push_back(kept),
            None => {
                self.series.insert(key.clone(), VecDeque::from([kept]));
            }
        }
    }

    fn flag_index(&mut self, flag: &str) -> u16 {
        if let Some(&i) = self.flag_index.get(flag) {
            return i;
        }
        let flag = if self.flags.len() < MAX_FLAGS { flag } else { FLAG_OVERFLOW };
        if let Some(&i) = self.flag_index.get(flag) {
            return i;
        }
        let i = u16::try_from(self.flags.len()).unwrap_or(u16::MAX);
        self.flags.push(flag.into());
        self.flag_index.insert(flag.into(), i);
        i
    }

    /// Forgets values older than `horizon` (the engine's civil milliseconds).
    pub(crate) fn prune(&mut self, horizon: i64) {
        self.horizon = horizon;
        for series in self.series.values_mut() {
            // Values arrive nearly in order; a late one older than the horizon goes with the
            // next that follows it out.
            while series.front().is_some_and(|k| k.time.to_millis() < horizon) {
                series.pop_front();
            }
        }
        self.series.retain(|_, s| !s.is_empty());
    }

    /// The values of the series `keep` selects, as [`OnlineValue`]s.
    pub(crate) fn values(&self, mut keep: impl FnMut(&str, &str) -> bool) -> Vec<OnlineValue> {
        let horizon = self.horizon;
        self.series
            .iter()
            .filter(|((mn, pollutant), _)| keep(mn, pollutant))
            .flat_map(|((mn, pollutant), series)| {
                series.iter().filter(move |k| k.time.to_millis() >= horizon).map(move |k| OnlineValue {
                    mn: mn.clone(),
                    pollutant: pollutant.clone(),
                    cn: k.cn,
                    time: k.time,
                    value: k.value,
                    flag: self.flags.get(usize::from(k.flag)).map_or(FLAG_OVERFLOW, |f| f).to_string(),
                })
            })
            .collect()
    }
}

/// A CSV line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabCsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LabCsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LabCsvError {}

/// Parses a time as `YYYYMMDDhhmmss`, `YYYY-MM-DD hh:mm[:ss]`, `YYYY-MM-DDThh:mm[:ss]` or with
/// `/` as the date separator.
#[must_use]
pub fn parse_time(s: &str) -> Option<DateTime> {
    let s = s.trim();
    if let Some(t) = DateTime::parse(s) {
        return Some(t);
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let ok_shape = s.chars().all(|c| c.is_ascii_digit() || "-/: T".contains(c));
    match digits.len() {
        12 if ok_shape => DateTime::parse(&format!("{digits}00")),
        14 if ok_shape => DateTime::parse(&digits),
        _ => None,
    }
}

/// Reads a laboratory CSV: `mn, pollutant, sampling time, value`, one sample per line.
///
/// A header line is recognised (its value column is not a number) and may reorder the columns by
/// name (`mn`; `pollutant` or `code`; `sampling_time`, `time` or `datetime`; `value`). Fields may be
/// separated by `,`, `;` or tabs; blank lines and lines starting with `#` are skipped.
///
/// # Errors
/// The first line that cannot be read.
pub fn parse_lab_csv(text: &str) -> Result<Vec<LabSample>, LabCsvError> {
    let mut cols = [0usize, 1, 2, 3];
    let mut out = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sep = if line.contains(',') {
            ','
        } else if line.contains(';') {
            ';'
        } else {
            '\t'
        };
        let fields: Vec<&str> = line.split(sep).map(|f| f.trim().trim_matches('"')).collect();
        let err = |message: String| LabCsvError { line: i + 1, message };
        if first {
            first = false;
            let is_header = fields.get(3).is_none_or(|v| v.parse::<f64>().is_err())
                && fields.iter().any(|f| f.eq_ignore_ascii_case("mn"));
            if is_header {
                for (j, name) in fields.iter().enumerate() {
                    let slot = match name.to_ascii_lowercase().as_str() {
                        "mn" => 0,
                        "pollutant" | "code" | "polid" => 1,
                        "sampling_time" | "sampling time" | "time" | "datetime" | "sample_time" => 2,
                        "value" | "lab_value" => 3,
                        _ => continue,
                    };
                    cols[slot] = j;
                }
                continue;
            }
        }
        let get = |slot: usize| fields.get(cols[slot]).copied().filter(|f| !f.is_empty());
        let mn = get(0).ok_or_else(|| err("missing mn".into()))?;
        let pollutant = get(1).ok_or_else(|| err("missing pollutant".into()))?;
        let t = get(2).ok_or_else(|| err("missing sampling time".into()))?;
        let sampling_time = parse_time(t).ok_or_else(|| err(format!("bad sampling time {t:?}")))?;
        let v = get(3).ok_or_else(|| err("missing value".into()))?;
        let value = v.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| err(format!("bad value {v:?}")))?;
        out.push(LabSample { mn: mn.into(), pollutant: pollutant.into(), sampling_time, value });
    }
    Ok(out)
}

/// The comparison of one laboratory sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    /// The DAU.
    pub mn: String,
    /// The pollutant.
    pub pollutant: String,
    /// The sampling time.
    #[serde(with = "stamp")]
    pub sampling_time: DateTime,
    /// The laboratory value.
    pub lab_value: f64,
    /// The mean of the valid online values in the window.
    pub online_value: Option<f64>,
    /// How many online values were averaged.
    pub online_count: u32,
    /// The CN they came from.
    pub online_cn: Option<u16>,
    /// online − lab.
    pub absolute_error: Option<f64>,
    /// (online − lab) / lab × 100.
    pub relative_error_pct: Option<f64>,
    /// The criterion applied (`"|abs| ≤ 5"`, `"|rel| ≤ 15 %"`), empty without a rule.
    pub criterion: String,
    /// `None` when there is no online value or no rule.
    pub pass: Option<bool>,
}

/// The verdict for one MN and pollutant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollutantVerdict {
    /// The DAU.
    pub mn: String,
    /// The pollutant.
    pub pollutant: String,
    /// Samples.
    pub samples: u32,
    /// Passed.
    pub passed: u32,
    /// Failed.
    pub failed: u32,
    /// Without online value or rule.
    pub undecided: u32,
    /// Pass when every decided sample passed (and at least one was decided); `None` when none was.
    pub pass: Option<bool>,
}

/// A comparison report (serialisable to JSON; [`ComparisonReport::to_text`] for people).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// One row per laboratory sample.
    pub rows: Vec<ComparisonRow>,
    /// One verdict per MN and pollutant.
    pub verdicts: Vec<PollutantVerdict>,
}

/// Judges an error against a rule: `(criterion, pass)`.
fn judge(rule: &AcceptanceRule, lab: f64, online: f64) -> (String, bool) {
    let reference = lab.abs();
    let Some(t) = rule.tiers.iter().find(|t| t.below.is_none_or(|b| reference < b || (t.inclusive && reference == b)))
    else {
        return (String::new(), false);
    };
    let abs = (online - lab).abs();
    let mut criterion = Vec::new();
    let mut pass = true;
    if let Some(a) = t.absolute {
        criterion.push(format!("|abs| <= {a}"));
        pass &= abs <= a + 1e-9;
    }
    if let Some(r) = t.relative_pct {
        criterion.push(format!("|rel| <= {r} %"));
        pass &= lab != 0.0 && abs / lab.abs() * 100.0 <= r + 1e-9;
    }
    (criterion.join(" and "), pass)
}

/// Compares laboratory samples with online values.
#[must_use]
pub fn compare(lab: &[LabSample], online: &[OnlineValue], cfg: &ComparisonConfig) -> ComparisonReport {
    let mut rules: BTreeMap<String, AcceptanceRule> =
        default_rules().into_iter().map(|r| (r.pollutant.clone(), r)).collect();
    for r in &cfg.rules {
        rules.insert(r.pollutant.clone(), r.clone());
    }
    let before = (cfg.window_before_minutes * 60_000.0) as i64;
    let after = (cfg.window_after_minutes * 60_000.0) as i64;
    let mut rows = Vec::new();
    for s in lab {
        let t = s.sampling_time.to_millis();
        let near = |cn: u16| -> Vec<f64> {
            online
                .iter()
                .filter(|o| o.cn == cn && o.mn == s.mn && o.pollutant == s.pollutant)
                .filter(|o| cfg.valid_flags.contains(&o.flag))
                .filter(|o| {
                    let x = o.time.to_millis();
                    x >= t - before && x <= t + after
                })
                .map(|o| o.value)
                .collect()
        };
        let found = cfg.online_cns.iter().map(|&cn| (cn, near(cn))).find(|(_, v)| !v.is_empty());
        let (online_value, online_count, online_cn) = match &found {
            Some((cn, v)) => (Some(v.iter().sum::<f64>() / v.len() as f64), v.len() as u32, Some(*cn)),
            None => (None, 0, None),
        };
        let rule = rules.get(&s.pollutant);
        let (criterion, pass) = match (rule, online_value) {
            (Some(r), Some(o)) => {
                let (c, p) = judge(r, s.value, o);
                (c, Some(p))
            }
            (Some(_), None) => (String::new(), None),
            (None, _) => ("no rule".to_string(), None),
        };
        rows.push(ComparisonRow {
            mn: s.mn.clone(),
            pollutant: s.pollutant.clone(),
            sampling_time: s.sampling_time,
            lab_value: s.value,
            online_value,
            online_count,
            online_cn,
            absolute_error: online_value.map(|o| o - s.value),
            relative_error_pct: online_value.filter(|_| s.value != 0.0).map(|o| (o - s.value) / s.value * 100.0),
            criterion,
            pass,
        });
    }
    let mut verdicts: BTreeMap<(String, String), PollutantVerdict> = BTreeMap::new();
    for r in &rows {
        let v = verdicts.entry((r.mn.clone(), r.pollutant.clone())).or_insert_with(|| PollutantVerdict {
            mn: r.mn.clone(),
            pollutant: r.pollutant.clone(),
            samples: 0,
            passed: 0,
            failed: 0,
            undecided: 0,
            pass: None,
        });
        v.samples += 1;
        match r.pass {
            Some(true) => v.passed += 1,
            Some(false) => v.failed += 1,
            None => v.undecided += 1,
        }
        v.pass = (v.passed + v.failed > 0).then_some(v.failed == 0);
    }
    ComparisonReport { rows, verdicts: verdicts.into_values().collect() }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

impl ComparisonReport {
    /// A plain-text report: one line per sample, then the verdicts.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:<8} {:<14} {:>10} {:>10} {:>4} {:>10} {:>8}  {:<6} criterion",
            "MN", "pollut.", "sampled", "lab", "online", "n", "abs err", "rel %", "result"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:<14} {:>10} {:>10} {:>4} {:>10} {:>8}  {:<6} {}",
                r.mn,
                r.pollutant,
                r.sampling_time.to_string(),
                format!("{:.3}", r.lab_value),
                opt(r.online_value, 3),
                r.online_count,
                opt(r.absolute_error, 3),
                opt(r.relative_error_pct, 1),
                match r.pass {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "n/a",
                },
                r.criterion
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<24} {:<8} {:>7} {:>6} {:>6} {:>9}  verdict",
            "MN", "pollut.", "samples", "pass", "fail", "undecided"
        );
        for v in &self.verdicts {
            let _ = writeln!(
                s,
                "{:<24} {:<8} {:>7} {:>6} {:>6} {:>9}  {}",
                v.mn,
                v.pollutant,
                v.samples,
                v.passed,
                v.failed,
                v.undecided,
                match v.pass {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "undecided",
                }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_online_store_gives_back_what_it_kept_until_the_horizon() {
        let at = |m: i64| DateTime::from_millis_or_epoch(1_700_000_000_000 + m * 60_000);
        let mut store = OnlineStore::default();
        store.push("A", "w01018", 2061, at(0), 12.5, "N");
        store.push("A", "w01018", 2061, at(60), 13.0, "M");
        store.push("A", "w00000", 2061, at(0), 3.0, "N");
        store.push("B", "w01018", 2051, at(10), 7.0, "T");
        store.push("A", "w01018", 2061, at(-600), 9.0, "N"); // came late, behind a newer one
        let all = store.values(|_, _| true);
        assert_eq!(all.len(), 5);
        let a: Vec<(f64, &str, u16)> = all
            .iter()
            .filter(|v| v.mn == "A" && v.pollutant == "w01018")
            .map(|v| (v.value, v.flag.as_str(), v.cn))
            .collect();
        assert_eq!(a, [(12.5, "N", 2061), (13.0, "M", 2061), (9.0, "N", 2061)]);
        assert_eq!(store.values(|mn, _| mn == "B")[0].time, at(10));
        // Pruned at minute 5: the late value is not given out even while it waits behind one
        // that is kept; whole series that are too old go.
        store.prune(at(5).to_millis());
        let kept: Vec<(String, f64)> = store.values(|_, _| true).into_iter().map(|v| (v.mn, v.value)).collect();
        assert_eq!(kept, [("A".to_string(), 13.0), ("B".to_string(), 7.0)]);
        // A site inventing flags without end is remembered with a bounded table.
        for i in 0..MAX_FLAGS + 10 {
            store.push("C", "w01018", 2061, at(100), 1.0, &format!("X{i}"));
        }
        assert!(store.flags.len() <= MAX_FLAGS + 1);
        let c = store.values(|mn, _| mn == "C");
        assert_eq!((c[0].flag.as_str(), c.last().map(|v| v.flag.as_str())), ("X0", Some(FLAG_OVERFLOW)));
    }

    fn online(mn: &str, p: &str, cn: u16, t: &str, v: f64, flag: &str) -> OnlineValue {
        OnlineValue {
            mn: mn.into(),
            pollutant: p.into(),
            cn,
            time: parse_time(t).unwrap(),
            value: v,
            flag: flag.into(),
        }
    }

    #[test]
    fn csv_with_and_without_header() {
        let text = "\u{feff}# lab results\nvalue,mn,pollutant,sampling_time\n52.0,A,w01018,2026-03-02 10:15\n\n0.8;A;w21003;20260302101500\n";
        // Separators are chosen per line; the header's column order applies to every line.
        let rows = parse_lab_csv(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].value, 52.0);
        assert_eq!(rows[0].sampling_time.to_string(), "20260302101500");
        assert_eq!((rows[1].mn.as_str(), rows[1].pollutant.as_str(), rows[1].value), ("A", "w21003", 0.8));
        let rows = parse_lab_csv("A,w01018,2026-03-02T10:15:30,52\n").unwrap();
        assert_eq!(rows[0].sampling_time.to_string(), "20260302101530");
        let e = parse_lab_csv("A,w01018,yesterday,52\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse_lab_csv("A,w01018,20260302101500,abc\n").is_err());
    }

    #[test]
    fn tiers_pass_and_fail() {
        let lab = parse_lab_csv(
            "mn,pollutant,sampling_time,value\n\
             A,w01018,20260302100000,20\n\
             A,w01018,20260302120000,80\n\
             A,w21003,20260302100000,1.0\n\
             A,a21026,20260302100000,100\n\
             A,w21011,20260302100000,0.3\n\
             A,x99999,20260302100000,1\n",
        )
        .unwrap();
        let on = vec![
            // COD 20 (<30: ±5): online 24 → pass.
            online("A", "w01018", 2061, "20260302100000", 24.0, "N"),
            // COD 80 (60–100: ±20 %): online 100 (25 %) → fail; the M-flagged value is ignored.
            online("A", "w01018", 2061, "20260302120000", 100.0, "N"),
            online("A", "w01018", 2061, "20260302113000", 80.0, "M"),
            // NH3-N 1.0 (<2: ±0.3): 2051 values 1.2 and 1.4 → mean 1.3 → pass (2061 absent).
            online("A", "w21003", 2051, "20260302095000", 1.2, "N"),
            online("A", "w21003", 2051, "20260302101000", 1.4, "N"),
            // SO2 100 mg/m³ (57–143: ±30 %): 125 → pass.
            online("A", "a21026", 2061, "20260302100000", 125.0, "N"),
            // Outside the window: ignored → TP undecided.
            online("A", "w21011", 2061, "20260302140000", 0.3, "N"),
        ];
        let r = compare(&lab, &on, &ComparisonConfig::default());
        let pass: Vec<Option<bool>> = r.rows.iter().map(|r| r.pass).collect();
        assert_eq!(pass, vec![Some(true), Some(false), Some(true), Some(true), None, None]);
        assert_eq!(r.rows[2].online_count, 2);
        assert_eq!(r.rows[2].online_cn, Some(2051));
        let cod = r.verdicts.iter().find(|v| v.pollutant == "w01018").unwrap();
        assert_eq!((cod.passed, cod.failed, cod.pass), (1, 1, Some(false)));
        let text = r.to_text();
        assert!(text.contains("FAIL") && text.contains("PASS") && text.contains("undecided"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rows"][0]["sampling_time"], "20260302100000");
        // A configured rule replaces the default.
        let cfg = ComparisonConfig {
            rules: vec![AcceptanceRule {
                pollutant: "w01018".into(),
                tiers: vec![tier(None, None, Some(30.0))],
                source: "site".into(),
            }],
            ..ComparisonConfig::default()
        };
        assert_eq!(compare(&lab[1..2], &on, &cfg).rows[0].pass, Some(true));
    }

    #[test]
    fn flue_gas_tier_boundaries() {
        let rules = default_rules();
        let judged = |code: &str, lab: f64, online: f64| {
            let rule = rules.iter().find(|r| r.pollutant == code).unwrap();
            judge(rule, lab, online)
        };
        // SO2: 57 mg/m³ starts the ±30 % tier ("20 ≤ c < 50 µmol/mol"): 57 → 74 passes (29.8 %),
        // where ±17 would fail it; 56.9 → 74 fails (±17).
        assert!(judged("a21026", 57.0, 74.0).1);
        assert!(!judged("a21026", 56.9, 74.0).1);
        // NOx: 513 starts the ±15 % tier.
        assert_eq!(judged("a21002", 513.0, 580.0).0, "|rel| <= 15 %");
        assert_eq!(judged("a21002", 512.0, 560.0).0, "|abs| <= 41");
        // Particulate matter: 10 mg/m³ is still "≤ 10: ±5"; 20 still "±6"; 200 still "±20 %".
        assert_eq!(judged("a34013", 10.0, 14.5).0, "|abs| <= 5");
        assert_eq!(judged("a34013", 20.0, 25.5).0, "|abs| <= 6");
        assert_eq!(judged("a34013", 200.0, 239.0).0, "|rel| <= 20 %");
        assert_eq!(judged("a34013", 200.1, 239.0).0, "|rel| <= 15 %");
        // Velocity 10 m/s is "≤ 10: ±12 %"; O2 and humidity 5.0 % are in their absolute tiers.
        assert!(judged("a01011", 10.0, 11.1).1);
        assert_eq!(judged("a19001", 5.0, 5.9).0, "|abs| <= 1");
        assert_eq!(judged("a01014", 5.0, 6.4).0, "|abs| <= 1.5");
        assert_eq!(judged("a01012", 140.0, 143.0).0, "|abs| <= 3");
        // A configured tier may say the same; the flag is left out of JSON when false.
        let t: Tier = serde_json::from_str(r#"{"below": 10, "inclusive": true, "absolute": 5}"#).unwrap();
        assert!(t.inclusive);
        assert_eq!(
            serde_json::to_string(&tier(Some(1.0), None, Some(5.0))).unwrap(),
            r#"{"below":1.0,"absolute":null,"relative_pct":5.0}"#
        );
    }
}
