//! The alert rules fed by data (2011/2021/2051/2061/2031/2062) and site-information (3020)
//! messages, and by commands the platform sent (3011).
//!
//! Every rule fires once per episode: a latch keyed by MN, rule and subject holds until the
//! condition is seen to be false again, so a condition that lasts a day is one alert, not 2,880.
//! Sources and defaults of each rule are in `docs/data-quality.md`.
//!
//! Conventions: a value is read from `Rtd` (2011) or `Avg` (2051/2061/2031); an item without a
//! `Flag` counts as `N`; sentinel values (`9999.99`) take part in no rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hj212_codec::message::{DataItem, DataItemRef, InfoItem};
use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::quality::config::QualityConfig;
use crate::quality::persist::entries;
use crate::quality::{Alert, DAY, Evidence, HOUR, LookupKey, Ms, Rule, Severity, dt, minutes, refill};

/// What the rules read of a data item: a [`DataItemRef`] borrowed from the frame on the daemon's
/// path, a decoded [`DataItem`] elsewhere. Both parse numbers the same way.
pub(crate) trait Item {
    /// The pollutant, facility or process code.
    fn code(&self) -> &str;
    /// The value for `suffix`.
    fn get(&self, suffix: &str) -> Option<&str>;
    /// The value for `suffix` as a finite number, read as the codec reads it.
    fn number(&self, suffix: &str) -> Option<f64>;
}

impl Item for DataItem {
    fn code(&self) -> &str {
        &self.code
    }
    fn get(&self, suffix: &str) -> Option<&str> {
        Self::get(self, suffix)
    }
    fn number(&self, suffix: &str) -> Option<f64> {
        Self::number(self, suffix)
    }
}

impl<T: Item> Item for &T {
    fn code(&self) -> &str {
        (**self).code()
    }
    fn get(&self, suffix: &str) -> Option<&str> {
        (**self).get(suffix)
    }
    fn number(&self, suffix: &str) -> Option<f64> {
        (**self).number(suffix)
    }
}

impl Item for DataItemRef<'_> {
    fn code(&self) -> &str {
        self.code
    }
    fn get(&self, suffix: &str) -> Option<&str> {
        Self::get(self, suffix)
    }
    fn number(&self, suffix: &str) -> Option<f64> {
        Self::number(self, suffix)
    }
}

/// The value of an item for a CN: `Rtd` for real-time data, `Avg` otherwise.
fn value(item: &impl Item, cn: u16) -> Option<f64> {
    if cn == 2011 { item.number("Rtd") } else { item.number("Avg").or_else(|| item.number("Rtd")) }
}

/// The flag of an item, `N` when it has none.
fn flag(item: &impl Item) -> &str {
    item.get("Flag").unwrap_or("N")
}

/// Pollutant-like codes (not facilities `SBn`, not info codes).
fn is_pollutant(code: &str) -> bool {
    !code.starts_with("SB") && !code.starts_with('i')
}

/// Flow codes: wastewater and flue gas.
fn is_flow(code: &str) -> bool {
    code == "w00000" || code == "a00000"
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    start: Ms,
    last: Ms,
    last_end: Ms,
    min: f64,
    max: f64,
    n: u32,
    alerted: bool,
}

/// Hourly values in the window, and whether the alert is latched.
type NearWindow = (VecDeque<(Ms, f64)>, bool);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    pol: String,
    code: String,
    old: f64,
    new: f64,
    at: Ms,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StatusPoint {
    at: Ms,
    code: u16,
    bad: bool,
}

/// What showed that an analyzer was calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CalibrationEvidence {
    /// A value flagged `C`.
    FlagC,
    /// A calibration status (`i12001`, Hebei `i12101`).
    Status,
    /// A calibration time (`i13006`, Hebei `i13101`/`i13107`).
    CalibrationTime,
    /// A 3011 command sent by the platform.
    Command,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct DynamicControl {
    /// (analyzer, code) → the last value of a watched parameter.
    #[serde(with = "entries")]
    params: BTreeMap<(String, String), f64>,
    /// (analyzer, time, kind) of every calibration seen in the last two days.
    evidence: Vec<(String, Ms, CalibrationEvidence)>,
    pending: Vec<Pending>,
    status: BTreeMap<String, Vec<StatusPoint>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Facility {
    /// `SBn` → (state, since, last report).
    sb: BTreeMap<String, (u8, Ms, Ms)>,
    /// Plant current: (value, below-threshold since, last report).
    current: Option<(f64, Option<Ms>, Ms)>,
    /// Last flow report: (period end, flow, flow normal, concentrations normal).
    flow: Option<(Ms, f64, bool, bool)>,
}

/// State of all message-driven rules. All of it is durable: it describes the data, not the
/// connections, and is saved and restored whole (see [`crate::quality::persist`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Rules {
    #[serde(with = "entries")]
    flat: BTreeMap<(String, u16, String), Run>,
    #[serde(with = "entries")]
    near: BTreeMap<(String, String), NearWindow>,
    dc: BTreeMap<String, DynamicControl>,
    facility: BTreeMap<String, Facility>,
    latches: BTreeSet<(String, Rule, String)>,
    seen_checks: BTreeSet<(String, String, Ms)>,
    /// (MN, code) → the first real-time value flagged `B` in the current run.
    #[serde(with = "entries")]
    comm_lost: BTreeMap<(String, String), Ms>,
    /// The lookup key of `flat`, reused.
    #[serde(skip)]
    flat_key: LookupKey<(String, u16, String)>,
}

/// Builds an alert.
fn alert(
    mn: &str,
    rule: Rule,
    severity: Severity,
    at: Ms,
    subject: Option<&str>,
    evidence: Vec<Evidence>,
    message: String,
) -> Alert {
    Alert { mn: mn.to_string(), rule, severity, at: dt(at), subject: subject.map(str::to_string), evidence, message }
}

impl Rules {
    /// Sets a latch; true when it was not set (the alert should be raised).
    fn latch(&mut self, mn: &str, rule: Rule, subject: &str) -> bool {
        self.latches.insert((mn.to_string(), rule, subject.to_string()))
    }

    /// Clears a latch (the condition was seen false).
    fn release(&mut self, mn: &str, rule: Rule, subject: &str) {
        // Called for every normal value: no key is built unless something is latched.
        if self.latches.iter().any(|(m, r, s)| *r == rule && m == mn && s == subject) {
            self.latches.remove(&(mn.to_string(), rule, subject.to_string()));
        }
    }

    /// A data message. `period_ms` is the stream's interval (0 when unknown).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_data<I: Item>(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        cn: u16,
        data_time: Ms,
        period_ms: Ms,
        items: &[I],
        now: Ms,
        out: &mut Vec<Alert>,
    ) {
        if cn == 2062 {
            self.standard_check_2062(cfg, mn, data_time, items, out);
            return;
        }
        if cn == 2021 {
            self.facility_states(mn, data_time, items);
            self.facility_check(cfg, mn, now, out);
            return;
        }
        if !matches!(cn, 2011 | 2051 | 2061 | 2031) {
            return;
        }
        let period = if cn == 2011 { 0 } else { period_ms };
        for item in items {
            if item.code() == "i33200"
                && let Some(v) = value(item, cn)
            {
                self.current(cfg, mn, data_time, v);
            }
            if !is_pollutant(item.code()) {
                continue;
            }
            if cn == 2011 {
                self.analyzer_comm(cfg, mn, item.code(), data_time, flag(item) == "B", out);
            }
            if flag(item) == "C" {
                self.dc.entry(mn.to_string()).or_default().evidence.push((
                    item.code().to_string(),
                    data_time,
                    CalibrationEvidence::FlagC,
                ));
            }
            let Some(v) = value(item, cn).filter(|v| !cfg.is_sentinel(*v)) else { continue };
            let normal = flag(item) == "N";
            if cfg.flat_line.enabled && cfg.flat_line.cns.contains(&cn) && normal {
                self.flat_line(cfg, mn, cn, item.code(), data_time, data_time + period, v, out);
            }
            if cfg.near_limit.enabled && cn == 2061 && normal {
                let v = item.number("ZsAvg").filter(|v| !cfg.is_sentinel(*v)).unwrap_or(v);
                self.near_limit(cfg, mn, item.code(), data_time, v, out);
            }
            if cfg.dynamic_control.enabled && normal {
                self.normal_under_bad_status(cfg, mn, item.code(), data_time, period, out);
            }
        }
        if cfg.consistency.enabled {
            self.consistency(cfg, mn, cn, data_time, items, out);
        }
        if cfg.facility.enabled && cn != 2031 {
            if let Some(f) = items.iter().find(|i| is_flow(i.code()))
                && let Some(q) = value(f, cn)
            {
                let conc_ok =
                    items.iter().filter(|i| is_pollutant(i.code()) && !is_flow(i.code())).all(|i| flag(i) == "N");
                let flow = Some((data_time + period, q, flag(f) == "N", conc_ok));
                match self.facility.get_mut(mn) {
                    Some(fac) => fac.flow = flow,
                    None => self.facility.entry(mn.to_string()).or_default().flow = flow,
                }
            }
            self.facility_check(cfg, mn, now, out);
        }
    }

    /// Tracks runs of real-time values flagged `B` per analyzer; one alert per run.
    fn analyzer_comm(&mut self, cfg: &QualityConfig, mn: &str, code: &str, t: Ms, lost: bool, out: &mut Vec<Alert>) {
        if !lost {
            // The common case, for every value: nothing to build unless a run is open.
            if self.comm_lost.keys().any(|(m, c)| m == mn && c == code) {
                self.comm_lost.remove(&(mn.to_string(), code.to_string()));
            }
            self.release(mn, Rule::AnalyzerCommFailure, code);
            return;
        }
        let first = *self.comm_lost.entry((mn.to_string(), code.to_string())).or_insert(t);
        if t - first < minutes(cfg.link.analyzer_comm_minutes) || !self.latch(mn, Rule::AnalyzerCommFailure, code) {
            return;
        }
        out.push(alert(
            mn,
            Rule::AnalyzerCommFailure,
            Severity::Warning,
            t,
            Some(code),
            vec![Evidence::time("first value flagged B", dt(first)), Evidence::time("latest value flagged B", dt(t))],
            format!(
                "{code}: no communication between analyzer and DAU (flag B) for {:.0} min while the DAU keeps sending",
                (t - first) as f64 / 60_000.0
            ),
        ));
    }

    /// A site-information message (3020).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_site_info(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        data_time: Ms,
        pol_id: Option<&str>,
        items: &[InfoItem],
        now: Ms,
        out: &mut Vec<Alert>,
    ) {
        let dcfg = &cfg.dynamic_control;
        let pol = pol_id.unwrap_or("").to_string();
        for item in items {
            let num = item.value.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            let code = item.code.as_str();
            if code == "i33200"
                && let Some(v) = num
            {
                self.current(cfg, mn, data_time, v);
                continue;
            }
            if !dcfg.enabled {
                continue;
            }
            let dc = self.dc.entry(mn.to_string()).or_default();
            match code {
                "i12001" | "i12101" if code == "i12001" || dcfg.hebei_codes => {
                    let Some(s) = num.map(|v| v as u16) else { continue };
                    let (bad, calib) = if code == "i12001" {
                        (dcfg.bad_status.contains(&s), dcfg.calibration_status.contains(&s))
                    } else {
                        // Hebei i12101: 3 maintenance, 4 fault, 5 calibration, 6 standard check,
                        // 52/53 zero/span calibration, 54 check.
                        (matches!(s, 3 | 4 | 5 | 6 | 52 | 53 | 54), matches!(s, 5 | 52 | 53))
                    };
                    if calib {
                        dc.evidence.push((pol.clone(), data_time, CalibrationEvidence::Status));
                    }
                    let tl = dc.status.entry(pol.clone()).or_default();
                    let pos = tl.partition_point(|p| p.at <= data_time);
                    tl.insert(pos, StatusPoint { at: data_time, code: s, bad });
                }
                "i13006" | "i13101" | "i13107" if code == "i13006" || dcfg.hebei_codes => {
                    if let Some(t) = DateTime::parse(item.value.trim()) {
                        dc.evidence.push((pol.clone(), t.to_millis(), CalibrationEvidence::CalibrationTime));
                    }
                }
                "i13129" if dcfg.hebei_codes => {
                    if let Some(err) = num {
                        let reference =
                            items.iter().find(|i| i.code == "i13130").and_then(|i| i.value.parse::<f64>().ok());
                        let check_time =
                            items.iter().find(|i| i.code == "i13128").and_then(|i| DateTime::parse(i.value.trim()));
                        let at = check_time.map_or(data_time, |t| t.to_millis());
                        let mut ev = vec![Evidence::at("i13129 relative error %", dt(at), err)];
                        if let Some(r) = reference {
                            ev.push(Evidence::value("i13130 reference", r));
                        }
                        self.standard_check(cfg, mn, &pol, at, err, false, ev, out);
                    }
                }
                c if dcfg.watched_parameters.iter().any(|w| w == c) => {
                    let Some(v) = num else { continue };
                    let key = (pol.clone(), c.to_string());
                    if let Some(old) = dc.params.insert(key, v) {
                        let scale = old.abs().max(v.abs()).max(f64::MIN_POSITIVE);
                        if (v - old).abs() / scale > dcfg.change_epsilon {
                            dc.pending.push(Pending {
                                pol: pol.clone(),
                                code: c.to_string(),
                                old,
                                new: v,
                                at: data_time,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        self.facility_check(cfg, mn, now, out);
    }

    /// A command the platform sent: 3011 (calibration) is calibration evidence.
    pub(crate) fn on_calibration_command(&mut self, mn: &str, pol_id: &str, now: Ms) {
        self.dc.entry(mn.to_string()).or_default().evidence.push((
            pol_id.to_string(),
            now,
            CalibrationEvidence::Command,
        ));
    }

    /// Time passes: parameter changes whose window closed are judged; facilities re-checked;
    /// old state pruned.
    pub(crate) fn tick(&mut self, cfg: &QualityConfig, now: Ms, out: &mut Vec<Alert>) {
        let window = minutes(cfg.dynamic_control.calibration_window_minutes);
        for (mn, dc) in &mut self.dc {
            let (due, keep): (Vec<Pending>, Vec<Pending>) = dc.pending.drain(..).partition(|p| p.at + window <= now);
            dc.pending = keep;
            for p in due {
                let calibrated = dc.evidence.iter().any(|(pol, t, _)| {
                    (pol.is_empty() || p.pol.is_empty() || *pol == p.pol) && (*t - p.at).abs() <= window
                });
                if calibrated {
                    continue;
                }
                let what = if p.code == "i13008" {
                    "slope"
                } else if p.code == "i13007" {
                    "intercept"
                } else {
                    "calibration parameter"
                };
                out.push(alert(
                    mn,
                    Rule::UncalibratedParameterChange,
                    Severity::Critical,
                    p.at,
                    Some(&p.pol),
                    vec![
                        Evidence::value(format!("{} before", p.code), p.old),
                        Evidence::at(format!("{} after", p.code), dt(p.at), p.new),
                        Evidence::value("window minutes", cfg.dynamic_control.calibration_window_minutes),
                    ],
                    format!(
                        "{what} {} of {} changed {} → {} with no calibration within {} minutes",
                        p.code,
                        if p.pol.is_empty() { "the analyzer" } else { &p.pol },
                        p.old,
                        p.new,
                        cfg.dynamic_control.calibration_window_minutes
                    ),
                ));
            }
            let horizon = now - 2 * DAY;
            dc.evidence.retain(|(_, t, _)| *t >= horizon);
            for tl in dc.status.values_mut() {
                // Keep the last point before the horizon: it is the state at the horizon.
                let cut = tl.partition_point(|p| p.at < horizon).saturating_sub(1);
                tl.drain(..cut);
            }
        }
        let mns: Vec<String> = self.facility.keys().cloned().collect();
        for mn in mns {
            self.facility_check(cfg, &mn, now, out);
        }
        self.seen_checks.retain(|(_, _, t)| *t >= now - 7 * DAY);
    }

    #[allow(clippy::too_many_arguments)]
    fn flat_line(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        cn: u16,
        code: &str,
        t: Ms,
        end: Ms,
        v: f64,
        out: &mut Vec<Alert>,
    ) {
        let fl = &cfg.flat_line;
        // Called for every value: the key is refilled, not allocated.
        let key = &mut self.flat_key.0;
        refill(&mut key.0, mn);
        key.1 = cn;
        refill(&mut key.2, code);
        let key = &*key;
        if fl.ignore_zero && v == 0.0 {
            self.flat.remove(key);
            return;
        }
        let spec = cfg.pollutant(mn, code);
        let abs_band = spec.and_then(|s| s.flat_band).unwrap_or(fl.absolute_band);
        let min_hours = spec.and_then(|s| s.flat_min_hours).unwrap_or(fl.min_hours);
        let fresh = Run { start: t, last: t, last_end: end.max(t), min: v, max: v, n: 1, alerted: false };
        let Some(run) = self.flat.get_mut(key) else {
            self.flat.insert(key.clone(), fresh);
            return;
        };
        if t <= run.last {
            return;
        }
        let (lo, hi) = (run.min.min(v), run.max.max(v));
        let band = abs_band.max(fl.relative_band * lo.abs().max(hi.abs()));
        if hi - lo > band {
            *run = fresh;
            return;
        }
        run.min = lo;
        run.max = hi;
        run.last = t;
        run.last_end = end.max(t);
        run.n += 1;
        let hours = (run.last_end - run.start) as f64 / HOUR as f64;
        if !run.alerted && hours >= min_hours && run.n >= fl.min_points {
            run.alerted = true;
            let (start, n, lo, hi) = (run.start, run.n, run.min, run.max);
            out.push(alert(
                mn,
                Rule::FlatLine,
                Severity::Warning,
                t,
                Some(code),
                vec![
                    Evidence::time("run start", dt(start)),
                    Evidence::time("run last value", dt(t)),
                    Evidence::value("min", lo),
                    Evidence::value("max", hi),
                    Evidence::value("values", f64::from(n)),
                ],
                format!("{code} (CN {cn}) stayed within [{lo}, {hi}] for {hours:.1} h ({n} values)"),
            ));
        }
    }

    fn near_limit(&mut self, cfg: &QualityConfig, mn: &str, code: &str, t: Ms, v: f64, out: &mut Vec<Alert>) {
        let Some(limit) = cfg.pollutant(mn, code).and_then(|p| p.limit).filter(|l| *l > 0.0) else { return };
        let nl = &cfg.near_limit;
        let (window, latched) = self.near.entry((mn.to_string(), code.to_string())).or_default();
        if window.back().is_some_and(|(last, _)| t <= *last) {
            return;
        }
        window.push_back((t, v));
        let horizon = t - minutes(nl.window_hours * 60.0);
        while window.front().is_some_and(|(w, _)| *w <= horizon) {
            window.pop_front();
        }
        if window.len() < nl.min_samples as usize {
            return;
        }
        let lo = nl.lower_fraction * limit;
        let near = window.iter().filter(|(_, x)| *x >= lo && *x < limit).count();
        let share = near as f64 / window.len() as f64;
        if share < nl.share {
            *latched = false;
            return;
        }
        if *latched {
            return;
        }
        *latched = true;
        let above = window.iter().filter(|(_, x)| *x >= limit).count();
        let first = window.front().map_or(t, |w| w.0);
        out.push(alert(
            mn,
            Rule::NearLimit,
            Severity::Warning,
            t,
            Some(code),
            vec![
                Evidence::value("limit", limit),
                Evidence::value("band low", lo),
                Evidence::value("share in band", share),
                Evidence::value("values in window", window.len() as f64),
                Evidence::value("values at or above limit", above as f64),
                Evidence::time("window start", dt(first)),
                Evidence::time("window end", dt(t)),
            ],
            format!(
                "{:.0} % of {} hourly {code} values lie in [{lo}, {limit}) just under the limit",
                share * 100.0,
                window.len()
            ),
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn standard_check(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        pol: &str,
        at: Ms,
        err_pct: f64,
        reported_fail: bool,
        evidence: Vec<Evidence>,
        out: &mut Vec<Alert>,
    ) {
        let allowed = cfg.dynamic_control.standard_check_allowed_pct;
        if err_pct.abs() <= allowed && !reported_fail {
            return;
        }
        if !self.seen_checks.insert((mn.to_string(), pol.to_string(), at)) {
            return;
        }
        let mut evidence = evidence;
        evidence.push(Evidence::value("allowed error %", allowed));
        out.push(alert(
            mn,
            Rule::StandardCheckFailed,
            Severity::Critical,
            at,
            Some(pol),
            evidence,
            if reported_fail && err_pct.abs() <= allowed {
                format!("standard check of {pol} reported as failed")
            } else {
                format!("standard check of {pol}: deviation {err_pct:.1} % exceeds ±{allowed} %")
            },
        ));
    }

    fn standard_check_2062<I: Item>(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        t: Ms,
        items: &[I],
        out: &mut Vec<Alert>,
    ) {
        if !cfg.dynamic_control.enabled {
            return;
        }
        for item in items {
            let measured = item.number("SampleRd");
            let reference = item.number("StandardValue");
            let failed = item.get("ResultType") == Some("0");
            let err = match (measured, reference) {
                (Some(m), Some(r)) if r != 0.0 => (m - r) / r * 100.0,
                _ if failed => 0.0,
                _ => continue,
            };
            let mut ev = Vec::new();
            if let Some(m) = measured {
                ev.push(Evidence::at("SampleRd", dt(t), m));
            }
            if let Some(r) = reference {
                ev.push(Evidence::value("StandardValue", r));
            }
            ev.push(Evidence::value("relative error %", err));
            self.standard_check(cfg, mn, item.code(), t, err, failed, ev, out);
        }
    }

    fn normal_under_bad_status(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        pol: &str,
        t: Ms,
        period: Ms,
        out: &mut Vec<Alert>,
    ) {
        let Some(dc) = self.dc.get(mn) else { return };
        let Some(tl) = dc.status.get(pol).or_else(|| dc.status.get("")) else { return };
        // The status point in force at `x`.
        let at = |x: Ms| tl.partition_point(|p| p.at <= x).checked_sub(1).map(|i| (i, tl[i]));
        let (bad_share, episode) = if period <= 0 {
            match at(t) {
                Some((_, p)) if p.bad => (1.0, Some(p)),
                _ => (0.0, None),
            }
        } else {
            let end = t + period;
            let mut bad = 0;
            let mut episode = None;
            let mut cursor = t;
            let mut state = at(t).map(|(_, p)| p);
            for p in tl.iter().filter(|p| p.at > t && p.at < end) {
                if state.is_some_and(|s| s.bad) {
                    bad += p.at - cursor;
                    episode = episode.or(state);
                }
                cursor = p.at;
                state = Some(*p);
            }
            if state.is_some_and(|s| s.bad) {
                bad += end - cursor;
                episode = episode.or(state);
            }
            (bad as f64 / period as f64, episode)
        };
        let Some(ep) =
            episode.filter(|_| bad_share > 0.0 && bad_share >= cfg.dynamic_control.status_overlap_share.min(1.0))
        else {
            return;
        };
        let subject = format!("{pol}@{}", ep.at);
        if !self.latch(mn, Rule::NormalFlagDuringBadStatus, &subject) {
            return;
        }
        let what = match ep.code {
            1 | 10 => "maintenance",
            2 | 6 => "fault",
            3 | 8 => "calibration",
            _ => "a non-measuring status",
        };
        out.push(alert(
            mn,
            Rule::NormalFlagDuringBadStatus,
            Severity::Critical,
            t,
            Some(pol),
            vec![
                Evidence::at("status", dt(ep.at), f64::from(ep.code)),
                Evidence::time("data time", dt(t)),
                Evidence::value("share of period under status", bad_share),
            ],
            format!(
                "{pol} flagged N at {} while the analyzer reported status {} ({what}) since {}",
                dt(t),
                ep.code,
                dt(ep.at)
            ),
        ));
    }

    fn consistency<I: Item>(
        &mut self,
        cfg: &QualityConfig,
        mn: &str,
        cn: u16,
        t: Ms,
        items: &[I],
        out: &mut Vec<Alert>,
    ) {
        let c = &cfg.consistency;
        let get = |code: &str| {
            items
                .iter()
                .find(|i| i.code() == code)
                .filter(|i| flag(i) == "N")
                .and_then(|i| value(i, cn))
                .filter(|v| !cfg.is_sentinel(*v))
        };
        // NH3-N ≤ TN.
        if let (Some(nh3), Some(tn)) = (get("w21003"), get("w21001")) {
            if nh3 > tn * (1.0 + c.nh3n_tn_relative) + c.nh3n_tn_absolute {
                if self.latch(mn, Rule::AmmoniaAboveTotalNitrogen, "") {
                    out.push(alert(
                        mn,
                        Rule::AmmoniaAboveTotalNitrogen,
                        Severity::Warning,
                        t,
                        Some("w21003"),
                        vec![Evidence::at("w21003", dt(t), nh3), Evidence::at("w21001", dt(t), tn)],
                        format!("ammonia nitrogen {nh3} above total nitrogen {tn} (CN {cn})"),
                    ));
                }
            } else {
                self.release(mn, Rule::AmmoniaAboveTotalNitrogen, "");
            }
        }
        // 0 ≤ O2 ≤ 21 %.
        if let Some(o2) = get("a19001") {
            if o2 < -c.o2_margin || o2 > 21.0 + c.o2_margin {
                if self.latch(mn, Rule::OxygenOutOfRange, "") {
                    out.push(alert(
                        mn,
                        Rule::OxygenOutOfRange,
                        Severity::Warning,
                        t,
                        Some("a19001"),
                        vec![Evidence::at("a19001", dt(t), o2)],
                        format!("oxygen {o2} % outside 0–21 % (CN {cn})"),
                    ));
                }
            } else {
                self.release(mn, Rule::OxygenOutOfRange, "");
            }
        }
        // Flow zero while loads are positive.
        if let Some(f) = items.iter().find(|i| is_flow(i.code())).filter(|i| flag(i) == "N") {
            let flow = f.number("Cou").or_else(|| value(f, cn));
            if let Some(flow) = flow {
                let loads: Vec<(&str, f64)> = items
                    .iter()
                    .filter(|i| is_pollutant(i.code()) && !is_flow(i.code()))
                    .filter_map(|i| i.number("Cou").filter(|v| !cfg.is_sentinel(*v)).map(|v| (i.code(), v)))
                    .filter(|(_, v)| *v > c.load_positive)
                    .collect();
                if flow <= c.flow_zero && !loads.is_empty() {
                    if self.latch(mn, Rule::LoadWithoutFlow, "") {
                        let mut ev = vec![Evidence::at(format!("{}-Cou", f.code()), dt(t), flow)];
                        ev.extend(loads.iter().map(|(code, v)| Evidence::at(format!("{code}-Cou"), dt(t), *v)));
                        out.push(alert(
                            mn,
                            Rule::LoadWithoutFlow,
                            Severity::Warning,
                            t,
                            Some(f.code()),
                            ev,
                            format!("flow {} is {flow} while {} load(s) are positive (CN {cn})", f.code(), loads.len()),
                        ));
                    }
                } else if flow > c.flow_zero || items.iter().any(|i| i.get("Cou").is_some()) {
                    self.release(mn, Rule::LoadWithoutFlow, "");
                }
            }
        }
    }

    fn facility_states<I: Item>(&mut self, mn: &str, t: Ms, items: &[I]) {
        let fac = self.facility.entry(mn.to_string()).or_default();
        for item in items.iter().filter(|i| i.code().starts_with("SB")) {
            let Some(rs) = item.get("RS").and_then(|v| v.trim().parse::<u8>().ok()) else { continue };
            let e = fac.sb.entry(item.code().to_string()).or_insert((rs, t, t));
            if e.0 != rs {
                *e = (rs, t, t);
            } else if t > e.2 {
                e.2 = t;
            }
        }
    }

    fn current(&mut self, cfg: &QualityConfig, mn: &str, t: Ms, amps: f64) {
        let fac = self.facility.entry(mn.to_string()).or_default();
        let below = amps < cfg.facility.current_min_amps;
        let since = match fac.current {
            Some((_, Some(s), _)) if below => Some(s),
            _ if below => Some(t),
            _ => None,
        };
        fac.current = Some((amps, since, t));
    }

    fn facility_check(&mut self, cfg: &QualityConfig, mn: &str, now: Ms, out: &mut Vec<Alert>) {
        let fc = &cfg.facility;
        if !fc.enabled {
            return;
        }
        let Some(fac) = self.facility.get(mn) else { return };
        let max_age = minutes(fc.max_age_minutes);
        let min_dur = minutes(fc.min_duration_minutes);
        let listed = cfg.site(mn).map(|s| s.facilities.as_slice()).unwrap_or_default();
        let mut evidence = Vec::new();
        let mut subject = None;
        for (code, &(rs, since, last)) in &fac.sb {
            if (listed.is_empty() || listed.contains(code))
                && rs == 0
                && now - last <= max_age
                && now - since >= min_dur
            {
                evidence.push(Evidence::at(format!("{code}-RS off since"), dt(since), 0.0));
                subject.get_or_insert_with(|| code.clone());
            }
        }
        if let Some((amps, Some(since), last)) = fac.current
            && now - last <= max_age
            && now - since >= min_dur
        {
            evidence.push(Evidence::at("i33200 current below threshold since", dt(since), amps));
            subject.get_or_insert_with(|| "i33200".to_string());
        }
        let discharging = fac
            .flow
            .filter(|&(end, q, flow_ok, conc_ok)| now - end <= max_age && q > fc.min_flow && flow_ok && conc_ok);
        match (subject, discharging) {
            (Some(s), Some((end, q, _, _))) => {
                if self.latch(mn, Rule::FacilityUnpowered, "") {
                    evidence.push(Evidence::at("flow (normal)", dt(end), q));
                    out.push(alert(
                        mn,
                        Rule::FacilityUnpowered,
                        Severity::Critical,
                        now,
                        Some(&s),
                        evidence,
                        format!("treatment facility {s} has no power while flow {q} and concentrations are reported as normal"),
                    ));
                }
            }
            _ => self.release(mn, Rule::FacilityUnpowered, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::config::{PollutantSpec, SiteEntry};
    use crate::quality::{MINUTE, Rule};

    const T0: Ms = 20_000 * DAY;

    fn item(code: &str, fields: &[(&str, &str)]) -> DataItem {
        DataItem { code: code.into(), fields: fields.iter().map(|(s, v)| ((*s).into(), (*v).into())).collect() }
    }
    fn avg(code: &str, v: f64, flag: &str) -> DataItem {
        item(code, &[("Avg", &v.to_string()), ("Flag", flag)])
    }
    fn info(code: &str, v: &str) -> InfoItem {
        InfoItem { code: code.into(), value: v.into() }
    }
    fn rules_of(out: &[Alert]) -> Vec<Rule> {
        out.iter().map(|a| a.rule).collect()
    }
    /// A deterministic pseudo-random sequence in [0, 1).
    fn noise(i: i64) -> f64 {
        let x = (i as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % 10_000) as f64 / 10_000.0
    }
    fn cfg_with_limit(limit: f64) -> QualityConfig {
        QualityConfig {
            sites: vec![SiteEntry {
                mn: "A".into(),
                pollutants: vec![PollutantSpec {
                    code: "w01018".into(),
                    limit: Some(limit),
                    ..PollutantSpec::default()
                }],
                ..SiteEntry::default()
            }],
            ..QualityConfig::default()
        }
    }

    #[test]
    fn values_flagged_b_for_too_long_raise_analyzer_comm_failure_once_per_run() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        let b = [item("w01018", &[("Flag", "B")]), item("w00000", &[("Rtd", "3.5"), ("Flag", "N")])];
        // 9 minutes of B: not yet.
        for i in 0..10 {
            r.on_data(&cfg, "A", 2011, T0 + i * MINUTE, 0, &b, T0 + i * MINUTE, &mut out);
        }
        assert!(out.is_empty());
        // The tenth minute raises it, once, for the silent analyzer only.
        for i in 10..30 {
            r.on_data(&cfg, "A", 2011, T0 + i * MINUTE, 0, &b, T0 + i * MINUTE, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::AnalyzerCommFailure]);
        assert_eq!(out[0].subject.as_deref(), Some("w01018"));
        // Back to normal, then a new run alerts again.
        let ok = [item("w01018", &[("Rtd", "40"), ("Flag", "N")])];
        r.on_data(&cfg, "A", 2011, T0 + 31 * MINUTE, 0, &ok, T0 + 31 * MINUTE, &mut out);
        for i in 32..45 {
            r.on_data(&cfg, "A", 2011, T0 + i * MINUTE, 0, &b, T0 + i * MINUTE, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::AnalyzerCommFailure, Rule::AnalyzerCommFailure]);
    }

    #[test]
    fn short_communication_glitches_do_not_alert() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        for i in 0..60 {
            let f = if i % 6 == 0 { "B" } else { "N" };
            let it = [item("w01018", &[("Rtd", "40"), ("Flag", f)])];
            r.on_data(&cfg, "A", 2011, T0 + i * MINUTE, 0, &it, T0 + i * MINUTE, &mut out);
        }
        assert!(out.iter().all(|a| a.rule != Rule::AnalyzerCommFailure));
    }

    #[test]
    fn flat_line_triggers_on_a_frozen_value_only() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        // Frozen: COD 23.4 for 8 hours of hourly data → one alert after 6 values.
        for h in 0..8 {
            r.on_data(&cfg, "A", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", 23.4, "N")], T0, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::FlatLine]);
        assert_eq!(out[0].at, dt(T0 + 5 * HOUR));
        // Within a tiny band (±0.01 on 50) also counts.
        out.clear();
        for h in 0..8 {
            let v = 50.0 + if h % 2 == 0 { 0.01 } else { -0.01 };
            r.on_data(&cfg, "B", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", v, "N")], T0, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::FlatLine]);
        // Honest: ±3 % noise for two days, zeros during shutdown, and a frozen value flagged M.
        out.clear();
        for h in 0..48 {
            let v = 30.0 * (1.0 + 0.06 * (noise(h) - 0.5));
            r.on_data(&cfg, "C", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", v, "N")], T0, &mut out);
            r.on_data(&cfg, "C", 2061, T0 + h * HOUR, HOUR, &[avg("w00000", 0.0, "N")], T0, &mut out);
            r.on_data(&cfg, "D", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", 12.0, "M")], T0, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // Real-time data: 6 hours of identical Rtd every 30 s triggers once.
        for i in 0..(6 * 120 + 1) {
            r.on_data(
                &cfg,
                "E",
                2011,
                T0 + i * 30_000,
                30_000,
                &[item("a21026", &[("Rtd", "12.5"), ("Flag", "N")])],
                T0,
                &mut out,
            );
        }
        assert_eq!(rules_of(&out), vec![Rule::FlatLine]);
    }

    #[test]
    fn near_limit_triggers_on_hugging_not_on_honest_spread() {
        let cfg = cfg_with_limit(50.0);
        let mut r = Rules::default();
        let mut out = Vec::new();
        // Honest: mean 30, spread ±12 (some exceedances would be fine too).
        for h in 0..72 {
            let v = 30.0 + 24.0 * (noise(h) - 0.5);
            r.on_data(&cfg, "A", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", v, "N")], T0, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // Hugging: 60 % of the next 72 hours in [45, 50).
        let mut r = Rules::default();
        for h in 0..72 {
            let v = if h % 5 < 3 { 45.5 + 4.0 * noise(h) } else { 20.0 + 10.0 * noise(h) };
            r.on_data(&cfg, "A", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", v, "N")], T0, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::NearLimit]);
        // No limit configured: nothing.
        let mut r = Rules::default();
        let mut out = Vec::new();
        for h in 0..72 {
            r.on_data(&cfg, "Z", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", 49.0 + noise(h), "N")], T0, &mut out);
        }
        assert!(out.iter().all(|a| a.rule != Rule::NearLimit));
    }

    #[test]
    fn slope_change_without_calibration() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        let k = |r: &mut Rules, t: Ms, v: &str, out: &mut Vec<Alert>| {
            r.on_site_info(&cfg, "A", t, Some("w01018"), &[info("i13008", v)], t, out);
        };
        k(&mut r, T0, "1.000", &mut out);
        k(&mut r, T0 + HOUR, "1.000", &mut out); // unchanged
        k(&mut r, T0 + 10 * HOUR, "1.150", &mut out); // changed, no calibration
        r.tick(&cfg, T0 + 11 * HOUR, &mut out);
        assert!(out.is_empty(), "the window is still open");
        r.tick(&cfg, T0 + 12 * HOUR, &mut out);
        assert_eq!(rules_of(&out), vec![Rule::UncalibratedParameterChange]);
        assert_eq!(out[0].subject.as_deref(), Some("w01018"));

        // Honest: status 3 (calibration) 20 minutes after the change, intercept changes.
        let mut r = Rules::default();
        let mut out = Vec::new();
        r.on_site_info(&cfg, "A", T0, Some("w01018"), &[info("i13007", "0.10")], T0, &mut out);
        r.on_site_info(&cfg, "A", T0 + HOUR, Some("w01018"), &[info("i13007", "0.25")], T0 + HOUR, &mut out);
        r.on_site_info(&cfg, "A", T0 + HOUR + 20 * MINUTE, Some("w01018"), &[info("i12001", "3")], T0, &mut out);
        // Another analyzer calibrated by a 3011 command, and one by its calibration time i13006.
        r.on_site_info(&cfg, "A", T0, Some("w21003"), &[info("i13008", "2.0")], T0, &mut out);
        r.on_calibration_command("A", "w21003", T0 + 3 * HOUR - 30 * MINUTE);
        r.on_site_info(&cfg, "A", T0 + 3 * HOUR, Some("w21003"), &[info("i13008", "2.1")], T0, &mut out);
        r.on_site_info(&cfg, "A", T0, Some("w21011"), &[info("i13008", "0.9")], T0, &mut out);
        r.on_site_info(
            &cfg,
            "A",
            T0 + 5 * HOUR,
            Some("w21011"),
            &[info("i13006", &dt(T0 + 5 * HOUR - 10 * MINUTE).to_string()), info("i13008", "0.95")],
            T0,
            &mut out,
        );
        r.tick(&cfg, T0 + DAY, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn standard_checks() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        // Hebei i13129: 14 % fails, 4 % passes.
        r.on_site_info(&cfg, "A", T0, Some("w01018"), &[info("i13129", "14.0"), info("i13130", "50")], T0, &mut out);
        r.on_site_info(&cfg, "A", T0 + DAY, Some("w01018"), &[info("i13129", "-4.0")], T0, &mut out);
        assert_eq!(rules_of(&out), vec![Rule::StandardCheckFailed]);
        // HJ 212-2025 CN 2062: 11.5 vs 10 fails; 10.3 vs 10 passes; ResultType=0 fails.
        out.clear();
        let bad = item("w21003", &[("SampleRd", "11.5"), ("StandardValue", "10"), ("ResultType", "1")]);
        let good = item("w21011", &[("SampleRd", "10.3"), ("StandardValue", "10"), ("ResultType", "1")]);
        let flagged = item("w21001", &[("SampleRd", "10.1"), ("StandardValue", "10"), ("ResultType", "0")]);
        r.on_data(&cfg, "A", 2062, T0, 0, &[bad.clone(), good, flagged], T0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].subject.as_deref(), Some("w21003"));
        assert_eq!(out[1].subject.as_deref(), Some("w21001"));
        // The same check re-sent is not a new alert.
        r.on_data(&cfg, "A", 2062, T0, 0, &[bad], T0, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn normal_flag_during_maintenance() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        r.on_site_info(&cfg, "A", T0, Some("w01018"), &[info("i12001", "0")], T0, &mut out);
        r.on_site_info(&cfg, "A", T0 + 2 * HOUR, Some("w01018"), &[info("i12001", "1")], T0, &mut out);
        r.on_site_info(&cfg, "A", T0 + 4 * HOUR, Some("w01018"), &[info("i12001", "0")], T0, &mut out);
        for h in 0..6 {
            // Honest hours are N; the maintenance hours are N too (the violation) or M (fine).
            r.on_data(&cfg, "A", 2061, T0 + h * HOUR, HOUR, &[avg("w01018", 20.0 + h as f64, "N")], T0, &mut out);
            r.on_data(
                &cfg,
                "A",
                2061,
                T0 + h * HOUR,
                HOUR,
                &[avg("w21003", 2.0 + h as f64, if (2..4).contains(&h) { "M" } else { "N" })],
                T0,
                &mut out,
            );
        }
        assert_eq!(rules_of(&out), vec![Rule::NormalFlagDuringBadStatus], "one alert per episode");
        assert_eq!(out[0].subject.as_deref(), Some("w01018"));
        // Real-time: status at the instant.
        out.clear();
        r.on_data(
            &cfg,
            "A",
            2011,
            T0 + 2 * HOUR + 5 * MINUTE,
            0,
            &[item("w21011", &[("Rtd", "0.3"), ("Flag", "N")])],
            T0,
            &mut out,
        );
        r.on_data(&cfg, "A", 2011, T0 + 5 * HOUR, 0, &[item("w21011", &[("Rtd", "0.3"), ("Flag", "N")])], T0, &mut out);
        assert!(out.is_empty(), "w21011 has no status of its own and w01018's does not apply");
        r.on_site_info(&cfg, "A", T0 + 6 * HOUR, None, &[info("i12001", "2")], T0, &mut out);
        r.on_data(
            &cfg,
            "A",
            2011,
            T0 + 6 * HOUR + 5 * MINUTE,
            0,
            &[item("w21011", &[("Rtd", "0.3"), ("Flag", "N")])],
            T0,
            &mut out,
        );
        r.on_data(
            &cfg,
            "A",
            2011,
            T0 + 6 * HOUR + 6 * MINUTE,
            0,
            &[item("w21011", &[("Rtd", "0.3"), ("Flag", "D")])],
            T0,
            &mut out,
        );
        assert_eq!(rules_of(&out), vec![Rule::NormalFlagDuringBadStatus]);
    }

    #[test]
    fn physical_consistency() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        let rec = |nh3: f64, tn: f64| vec![avg("w21003", nh3, "N"), avg("w21001", tn, "N")];
        r.on_data(&cfg, "A", 2061, T0, HOUR, &rec(15.0, 10.0), T0, &mut out);
        r.on_data(&cfg, "A", 2061, T0 + HOUR, HOUR, &rec(16.0, 10.0), T0, &mut out); // same episode
        assert_eq!(rules_of(&out), vec![Rule::AmmoniaAboveTotalNitrogen]);
        // Honest: NH3-N slightly above TN within the measurement error, or well below.
        out.clear();
        for (h, (a, b)) in [(8.0, 12.0), (0.25, 0.1), (10.5, 10.0)].into_iter().enumerate() {
            r.on_data(&cfg, "B", 2061, T0 + h as i64 * HOUR, HOUR, &rec(a, b), T0, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // O2.
        let o2 = |v: &str| vec![item("a19001", &[("Rtd", v), ("Flag", "N")])];
        r.on_data(&cfg, "G", 2011, T0, 30_000, &o2("23.5"), T0, &mut out);
        r.on_data(&cfg, "H", 2011, T0, 30_000, &o2("-1.0"), T0, &mut out);
        r.on_data(&cfg, "I", 2011, T0, 30_000, &o2("20.9"), T0, &mut out);
        r.on_data(&cfg, "I", 2011, T0, 30_000, &o2("0.0"), T0, &mut out);
        r.on_data(&cfg, "J", 2011, T0, 30_000, &[item("a19001", &[("Rtd", "25"), ("Flag", "D")])], T0, &mut out);
        assert_eq!(rules_of(&out), vec![Rule::OxygenOutOfRange, Rule::OxygenOutOfRange]);
        // Flow zero with loads.
        out.clear();
        let cou = |code: &str, v: &str| item(code, &[("Cou", v), ("Avg", "1"), ("Flag", "N")]);
        r.on_data(&cfg, "K", 2061, T0, HOUR, &[cou("w00000", "0"), cou("w01018", "1.2")], T0, &mut out);
        assert_eq!(rules_of(&out), vec![Rule::LoadWithoutFlow]);
        out.clear();
        r.on_data(&cfg, "L", 2061, T0, HOUR, &[cou("w00000", "0"), cou("w01018", "0")], T0, &mut out);
        r.on_data(&cfg, "L", 2061, T0, HOUR, &[cou("w00000", "63.0"), cou("w01018", "1.2")], T0, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn facility_without_power() {
        let cfg = QualityConfig::default();
        let mut r = Rules::default();
        let mut out = Vec::new();
        let sb = |rs: &str| vec![item("SB1", &[("RS", rs)])];
        let flow = |q: &str| {
            vec![item("w00000", &[("Rtd", q), ("Flag", "N")]), item("w01018", &[("Rtd", "30"), ("Flag", "N")])]
        };
        // SB1 off from T0; discharge normal all along.
        for m in 0..60 {
            let t = T0 + m * MINUTE;
            r.on_data(&cfg, "A", 2021, t, 0, &sb("0"), t, &mut out);
            r.on_data(&cfg, "A", 2011, t, 0, &flow("5.2"), t, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::FacilityUnpowered]);
        assert_eq!(out[0].at, dt(T0 + 30 * MINUTE));
        // Honest: facility running; or off with no discharge; or a short stop (10 minutes).
        out.clear();
        for m in 0..60 {
            let t = T0 + m * MINUTE;
            r.on_data(&cfg, "B", 2021, t, 0, &sb("1"), t, &mut out);
            r.on_data(&cfg, "B", 2011, t, 0, &flow("5.2"), t, &mut out);
            r.on_data(&cfg, "C", 2021, t, 0, &sb("0"), t, &mut out);
            r.on_data(&cfg, "C", 2011, t, 0, &flow("0"), t, &mut out);
            r.on_data(&cfg, "D", 2021, t, 0, &sb(if (20..30).contains(&m) { "0" } else { "1" }), t, &mut out);
            r.on_data(&cfg, "D", 2011, t, 0, &flow("5.2"), t, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // Plant current below threshold (i33200 via 3020) while discharging.
        for m in 0..40 {
            let t = T0 + m * MINUTE;
            r.on_site_info(&cfg, "E", t, None, &[info("i33200", "0.2")], t, &mut out);
            r.on_data(&cfg, "E", 2011, t, 0, &flow("5.2"), t, &mut out);
            r.on_site_info(&cfg, "F", t, None, &[info("i33200", "35.5")], t, &mut out);
            r.on_data(&cfg, "F", 2011, t, 0, &flow("5.2"), t, &mut out);
        }
        assert_eq!(rules_of(&out), vec![Rule::FacilityUnpowered]);
        assert_eq!(out[0].mn, "E");
    }
}
