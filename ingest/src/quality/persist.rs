//! The engine's durable state: what [`Engine::save`] writes and [`Engine::restore`] reads back,
//! so that a restart of the daemon does not forget what the engine learnt.
//!
//! [`EngineState`] is plain serde data (JSON in the daemon's state file). Every field has a
//! default, so a state written by an older version (or `{}`) loads, with what it lacks empty.
//!
//! What is saved, and how it comes back:
//!
//! | part | saved | on restore |
//! |---|---|---|
//! | expectations (announced, inferred and learnt intervals, pollutants seen) | yes | rebuilt from the configuration, then the learnt part inherited (as on a registry reload) |
//! | monitoring start, approved stops | yes | kept (a registry `active_from` still wins) |
//! | received periods (ledger) | today and the [`LEDGER_DAYS`] + ⌈`settle_hours`/24⌉ days before, and at least the recovery lookback | kept; older days live on as settled daily records in the daemon's state file |
//! | daily records already emitted | yes (`emitted_through`) | kept: a settled day is not emitted twice |
//! | rule state: flat-line runs, near-limit windows, watched parameters, pending parameter changes and calibration evidence, status timelines, facility states, latches, standard checks seen, flag-`B` runs | yes | kept as saved |
//! | CRC/auth failure windows | yes | kept: a burst that straddles a restart is still a burst (they age out within `failure_window_minutes`) |
//! | link: last traffic, silent/offline latches | yes | kept |
//! | link: "connected" | yes | **not restored**: the connection belonged to the old process; a link that was connected is taken as disconnected at `saved_at`, and the next frame of the MN reconnects it |
//! | outstanding history request | yes | **not restored as outstanding**: its connection and QN are gone, so no answer can be matched. It is dropped, its attempt given back, and its periods, if still missing, are asked for again once the MN is connected and `per_mn_spacing_minutes` after the interrupted request has passed (no record is emitted for it) |
//! | rate-limit history (last request per MN, requests started in the last minute, attempts per period) | yes | kept, so a daemon that restarts in a loop cannot storm a DAU |
//! | interval commands awaiting their result (1062/1064) | no | their answer would arrive on a connection that no longer exists |
//! | online values for comparisons, recovery records | no (the daemon's state file keeps its own copies) | — |
//!
//! [`Engine::save`]: crate::quality::Engine::save
//! [`Engine::restore`]: crate::quality::Engine::restore

use std::collections::BTreeMap;

use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::quality::accounting::Ledger;
use crate::quality::expect::MnExpect;
use crate::quality::link::{Failures, MnLink};
use crate::quality::recovery::Planner;
use crate::quality::rules::Rules;
use crate::quality::{Ms, stamp};

/// Days of received periods saved before today, on top of the days `settle_hours` covers, and
/// always at least the recovery lookback: enough for the daemon's recomputed recent days, for days
/// not yet settled and for gap recovery.
pub const LEDGER_DAYS: i64 = 3;

/// Serde for a `BTreeMap` whose keys are not strings (tuples): a list of `[key, value]` pairs.
pub(crate) mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the map as a sequence of `[key, value]`.
    pub(crate) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    /// Reads a sequence of `[key, value]`; a later duplicate key wins.
    pub(crate) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// What is saved of one MN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct MnSaved {
    pub(crate) expect: MnExpect,
    pub(crate) link: MnLink,
    pub(crate) start: Ms,
    pub(crate) stops: Vec<(Ms, Ms)>,
}

/// The engine's durable state (see the module docs for what it holds and how it is restored).
/// Opaque: serialise it, store it, and give it back to [`crate::quality::Engine::restore`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineState {
    /// When it was saved (the engine's civil time scale).
    #[serde(with = "stamp::option")]
    saved_at: Option<DateTime>,
    pub(crate) epoch: Option<Ms>,
    pub(crate) mns: BTreeMap<String, MnSaved>,
    pub(crate) ledger: Ledger,
    pub(crate) planner: Planner,
    pub(crate) rules: Rules,
    pub(crate) failures: Failures,
    #[serde(with = "entries")]
    pub(crate) emitted_through: BTreeMap<(String, u16), i64>,
}

impl EngineState {
    /// Assembles a state (used by [`crate::quality::Engine::save`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        saved_at: DateTime,
        epoch: Option<Ms>,
        mns: BTreeMap<String, MnSaved>,
        ledger: Ledger,
        planner: Planner,
        rules: Rules,
        failures: Failures,
        emitted_through: BTreeMap<(String, u16), i64>,
    ) -> Self {
        Self { saved_at: Some(saved_at), epoch, mns, ledger, planner, rules, failures, emitted_through }
    }

    /// When the state was saved, if it says.
    #[must_use]
    pub fn saved_at(&self) -> Option<DateTime> {
        self.saved_at
    }

    /// The number of MNs it describes.
    #[must_use]
    pub fn mn_count(&self) -> usize {
        self.mns.len()
    }
}

#[cfg(test)]
mod tests {
    use hj212_codec::codes::{Command, ExeRtn};
    use hj212_codec::message::{DataItem, InfoItem, Message};

    use super::*;
    use crate::quality::config::{PollutantSpec, QualityConfig, SiteEntry, StreamSpec};
    use crate::quality::recovery::RecoveryOutcome;
    use crate::quality::{Action, DAY, Engine, Event, HOUR, IntervalSource, MINUTE, Rule, dt};

    const T0: Ms = 20_000 * DAY;

    /// What a restart does: the state goes through JSON text, and a new engine starts from it.
    fn restart(e: &Engine, saved_at: Ms, now: Ms) -> Engine {
        let text = serde_json::to_string(&e.save(dt(saved_at))).unwrap();
        let state: EngineState = serde_json::from_str(&text).unwrap();
        Engine::restore(e.config().clone(), state, dt(now))
    }

    /// A deterministic pseudo-random sequence in [0, 1).
    fn noise(i: i64) -> f64 {
        let x = (i as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % 10_000) as f64 / 10_000.0
    }

    /// An hourly record: COD `cod`, and a flow that varies as real flows do.
    fn hourly(t: Ms, cod: f64) -> Message {
        let item = |code: &str, v: f64| DataItem {
            code: code.into(),
            fields: vec![("Avg".into(), format!("{v:.3}")), ("Flag".into(), "N".into())],
        };
        Message::Data {
            cn: Command::HourlyData,
            data_time: dt(t),
            items: vec![item("w01018", cod), item("w00000", 5.1 + noise(t / HOUR) * 0.9)],
        }
    }

    fn alerts_of(actions: &[Action], rule: Rule) -> Vec<crate::quality::Alert> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Alert(a) if a.rule == rule => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    fn requests(actions: &[Action]) -> Vec<Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn recoveries(actions: &[Action]) -> Vec<crate::quality::RecoveryRecord> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Recovery(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Feeds hourly values `v(h)` for hours `hours`, each arriving a minute after its hour;
    /// restarts the engine after the hour `restart_after` if given. Returns the alerts of `rule`.
    fn run_hourly(
        cfg: &QualityConfig,
        hours: std::ops::Range<i64>,
        v: impl Fn(i64) -> f64,
        restart_after: Option<i64>,
        rule: Rule,
    ) -> Vec<crate::quality::Alert> {
        let mut e = Engine::new(cfg.clone());
        let mut out = Vec::new();
        for h in hours {
            let arrive = T0 + (h + 1) * HOUR + MINUTE;
            out.extend(alerts_of(&e.feed_message(dt(arrive), "A", &hourly(T0 + h * HOUR, v(h))), rule));
            if restart_after == Some(h) {
                e = restart(&e, arrive + MINUTE, arrive + 20 * MINUTE);
            }
        }
        out
    }

    #[test]
    fn a_flat_line_that_straddles_a_restart_alerts_when_it_would_have_without_one() {
        let cfg = QualityConfig::default();
        let frozen = |_| 23.4;
        let straight = run_hourly(&cfg, 0..10, frozen, None, Rule::FlatLine);
        assert_eq!(straight.len(), 1);
        assert_eq!(straight[0].at, dt(T0 + 5 * HOUR), "6 values over 6 hours");
        let restarted = run_hourly(&cfg, 0..10, frozen, Some(3), Rule::FlatLine);
        assert_eq!(restarted, straight, "same alert, same time, same evidence");
        // Without the saved run, the restarted engine would start counting again.
        let forgetful = run_hourly(&cfg, 4..10, frozen, None, Rule::FlatLine);
        assert_eq!(forgetful[0].at, dt(T0 + 9 * HOUR));
        // An honest series (±3 % noise) does not alert, restart or not.
        let honest = |h| 30.0 * (1.0 + 0.06 * (noise(h) - 0.5));
        assert!(run_hourly(&cfg, 0..48, honest, Some(20), Rule::FlatLine).is_empty());
        // A run that alerted before the restart does not alert again after it.
        assert_eq!(run_hourly(&cfg, 0..12, frozen, Some(7), Rule::FlatLine).len(), 1);
    }

    #[test]
    fn a_near_limit_window_spans_a_restart() {
        let cfg = QualityConfig {
            sites: vec![SiteEntry {
                mn: "A".into(),
                pollutants: vec![PollutantSpec { code: "w01018".into(), limit: Some(50.0), ..Default::default() }],
                ..SiteEntry::default()
            }],
            ..QualityConfig::default()
        };
        // 60 % of the hours just under the limit.
        let hugging = |h| if h % 5 < 3 { 45.5 + 4.0 * noise(h) } else { 20.0 + 10.0 * noise(h) };
        let straight = run_hourly(&cfg, 0..40, hugging, None, Rule::NearLimit);
        assert_eq!(straight.len(), 1);
        assert_eq!(straight[0].at, dt(T0 + 23 * HOUR), "as soon as 24 samples are in the window");
        assert_eq!(run_hourly(&cfg, 0..40, hugging, Some(15), Rule::NearLimit), straight);
        // Honest spread around 30: nothing, restart or not.
        let honest = |h| 30.0 + 24.0 * (noise(h) - 0.5);
        assert!(run_hourly(&cfg, 0..72, honest, Some(30), Rule::NearLimit).is_empty());
    }

    #[test]
    fn learnt_and_announced_intervals_survive() {
        let cfg = QualityConfig {
            sites: vec![SiteEntry {
                mn: "R".into(),
                streams: vec![StreamSpec { cn: 2051, interval_s: None }],
                ..SiteEntry::default()
            }],
            ..QualityConfig::default()
        };
        let mut e = Engine::new(cfg);
        let minute = |t: Ms| Message::Data {
            cn: Command::MinuteData,
            data_time: dt(t),
            items: vec![DataItem {
                code: "w01018".into(),
                fields: vec![("Avg".into(), "12.5".into()), ("Flag".into(), "N".into())],
            }],
        };
        for i in 0..6 {
            e.feed_message(dt(T0 + i * 2 * MINUTE + 30_000), "U", &minute(T0 + i * 2 * MINUTE));
        }
        e.feed_message(dt(T0), "R", &Message::MinIntervalReply { minutes: 5 });
        let (u, r) = (e.expectations("U"), e.expectations("R"));
        assert_eq!((u[0].cn, u[0].interval_s, u[0].source), (2051, 120, IntervalSource::Inferred));
        assert_eq!((r[0].cn, r[0].interval_s, r[0].source), (2051, 300, IntervalSource::Announced));
        let b = restart(&e, T0 + HOUR, T0 + HOUR + MINUTE);
        assert_eq!(b.expectations("U"), u);
        assert_eq!(b.expectations("R"), r);
    }

    #[test]
    fn an_outstanding_request_is_retried_after_a_restart_not_duplicated() {
        let site = SiteEntry {
            mn: "A".into(),
            streams: vec![StreamSpec { cn: 2061, interval_s: None }],
            ..SiteEntry::default()
        };
        let mut a = Engine::new(QualityConfig { sites: vec![site], ..QualityConfig::default() });
        a.tick(dt(T0));
        a.feed_event(dt(T0), Event::Connected { mn: "A".into() });
        for h in [0, 1, 3] {
            a.feed_message(dt(T0 + (h + 1) * HOUR + MINUTE), "A", &hourly(T0 + h * HOUR, 20.0 + h as f64));
        }
        // 04:30: hour 2 is missing → one request.
        let t1 = T0 + 4 * HOUR + 30 * MINUTE;
        let sent = requests(&a.tick(dt(t1)));
        let expected =
            Message::HistoryRequest { cn: Command::HourlyData, begin: dt(T0 + 2 * HOUR), end: dt(T0 + 2 * HOUR) };
        assert_eq!(sent, vec![expected.clone()]);

        // The daemon stops two minutes later and is back a minute after that.
        let mut b = restart(&a, t1 + 2 * MINUTE, t1 + 3 * MINUTE);
        let status = b.network_status(dt(t1 + 3 * MINUTE));
        assert!(!status[0].connected, "the old connection is not restored");
        assert!(b.tick(dt(t1 + 3 * MINUTE)).is_empty(), "not connected: nothing asked");
        b.feed_event(dt(t1 + 4 * MINUTE), Event::Connected { mn: "A".into() });
        // No phantom timeout for the interrupted request, and no second request while the
        // per-MN spacing (15 minutes after the interrupted one) runs.
        for m in [5, 10, 12, 14] {
            let acts = b.tick(dt(t1 + m * MINUTE));
            assert!(requests(&acts).is_empty() && recoveries(&acts).is_empty(), "{m}: {acts:?}");
        }
        // Then the same gap is asked for once, as a first attempt.
        assert_eq!(requests(&b.tick(dt(t1 + 15 * MINUTE))), vec![expected]);
        assert!(requests(&b.tick(dt(t1 + 16 * MINUTE))).is_empty(), "one outstanding request");
        let at = t1 + 17 * MINUTE;
        b.feed_message(dt(at), "A", &hourly(T0 + 2 * HOUR, 22.0));
        let done = recoveries(&b.feed_message(dt(at), "A", &Message::ExecutionResult { exe_rtn: ExeRtn::Success }));
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].outcome, done[0].attempt, done[0].recovered), (RecoveryOutcome::Closed, 1, 1));

        // Without the restart the request would have timed out and waited an hour for its retry.
        let timed_out = recoveries(&a.tick(dt(t1 + 10 * MINUTE)));
        assert_eq!(timed_out[0].outcome, RecoveryOutcome::TimedOut);
        assert!(requests(&a.tick(dt(t1 + 15 * MINUTE))).is_empty());
    }

    #[test]
    fn a_parameter_change_is_judged_across_a_restart_with_its_calibration_context() {
        let info = |pol: &str, code: &str, v: &str, t: Ms| Message::SiteInfo {
            data_time: dt(t),
            pol_id: Some(pol.into()),
            items: vec![InfoItem { code: code.into(), value: v.into() }],
        };
        let mut e = Engine::new(QualityConfig::default());
        // w01018: slope changes at 10:00 with no calibration. w21003: calibrated (status 3) at
        // 09:50, slope changes at 10:20 — after the restart.
        e.feed_message(dt(T0), "A", &info("w01018", "i13008", "1.00", T0));
        e.feed_message(dt(T0), "A", &info("w21003", "i13008", "2.00", T0));
        e.feed_message(dt(T0 + 10 * HOUR), "A", &info("w01018", "i13008", "1.15", T0 + 10 * HOUR));
        e.feed_message(
            dt(T0 + 9 * HOUR + 50 * MINUTE),
            "A",
            &info("w21003", "i12001", "3", T0 + 9 * HOUR + 50 * MINUTE),
        );
        let mut b = restart(&e, T0 + 10 * HOUR + 5 * MINUTE, T0 + 10 * HOUR + 10 * MINUTE);
        b.feed_message(
            dt(T0 + 10 * HOUR + 20 * MINUTE),
            "A",
            &info("w21003", "i13008", "2.10", T0 + 10 * HOUR + 20 * MINUTE),
        );
        assert!(alerts_of(&b.tick(dt(T0 + 11 * HOUR)), Rule::UncalibratedParameterChange).is_empty());
        let a = alerts_of(&b.tick(dt(T0 + 13 * HOUR)), Rule::UncalibratedParameterChange);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].subject.as_deref(), Some("w01018"));
    }

    #[test]
    fn a_failure_burst_straddling_a_restart_is_a_burst() {
        let mut e = Engine::new(QualityConfig::default());
        for i in 0..3 {
            assert!(e.feed_event(dt(T0 + i * MINUTE), Event::CrcFailure { key: "A".into() }).is_empty());
        }
        let mut b = restart(&e, T0 + 3 * MINUTE, T0 + 4 * MINUTE);
        assert!(b.feed_event(dt(T0 + 5 * MINUTE), Event::CrcFailure { key: "A".into() }).is_empty());
        let a = b.feed_event(dt(T0 + 6 * MINUTE), Event::CrcFailure { key: "A".into() });
        assert_eq!(alerts_of(&a, Rule::RepeatedCrcFailures).len(), 1);
        // Sparse failures around a restart do not.
        let mut e = Engine::new(QualityConfig::default());
        for i in 0..3 {
            e.feed_event(dt(T0 + i * 6 * MINUTE), Event::CrcFailure { key: "B".into() });
        }
        let mut b = restart(&e, T0 + 13 * MINUTE, T0 + 14 * MINUTE);
        for i in 3..6 {
            assert!(b.feed_event(dt(T0 + i * 6 * MINUTE), Event::CrcFailure { key: "B".into() }).is_empty());
        }
    }

    #[test]
    fn a_site_registered_across_the_restart_is_expected_from_the_restart() {
        let site = |mn: &str| SiteEntry {
            mn: mn.into(),
            streams: vec![StreamSpec { cn: 2061, interval_s: None }],
            ..SiteEntry::default()
        };
        let mut e = Engine::new(QualityConfig { sites: vec![site("A")], ..QualityConfig::default() });
        e.tick(dt(T0));
        let later = T0 + 10 * DAY;
        let cfg = QualityConfig { sites: vec![site("A"), site("B")], ..QualityConfig::default() };
        let text = serde_json::to_string(&e.save(dt(later))).unwrap();
        let mut b = Engine::restore(cfg, serde_json::from_str(&text).unwrap(), dt(later));
        let since = |b: &Engine, mn: &str| b.network_status(dt(later)).into_iter().find(|s| s.mn == mn).unwrap().since;
        assert_eq!(since(&b, "A"), Some(dt(T0)), "A keeps its monitoring start");
        assert_eq!(since(&b, "B"), Some(dt(later)), "B starts now");
        let daily: Vec<_> = b
            .tick(dt(later + 4 * HOUR))
            .into_iter()
            .filter_map(|a| match a {
                Action::Daily(d) => Some(d),
                _ => None,
            })
            .collect();
        assert!(daily.iter().all(|d| d.mn == "A"), "no back-dated days for B: {daily:?}");
    }

    #[test]
    fn an_empty_or_older_state_loads() {
        for text in ["{}", r#"{"epoch":null,"mns":{}}"#, r#"{"written_by_a_newer_version":[1,2,3]}"#] {
            let state: EngineState = serde_json::from_str(text).unwrap();
            let mut e = Engine::restore(QualityConfig::default(), state, dt(T0));
            assert!(e.tick(dt(T0)).is_empty());
            assert!(e.network_status(dt(T0)).is_empty());
        }
        let saved = Engine::new(QualityConfig::default()).save(dt(T0));
        assert_eq!(saved.saved_at(), Some(dt(T0)));
        assert_eq!(saved.mn_count(), 0);
    }

    #[test]
    fn only_recent_periods_are_saved() {
        let mut e = Engine::new(QualityConfig::default());
        for h in 0..(10 * 24) {
            e.feed_message(dt(T0 + (h + 1) * HOUR), "A", &hourly(T0 + h * HOUR, 20.0 + noise(h)));
        }
        let now = T0 + 10 * DAY;
        let text = serde_json::to_string(&e.save(dt(now))).unwrap();
        let b = Engine::restore(e.config().clone(), serde_json::from_str(&text).unwrap(), dt(now));
        let days = b.daily_records(dt(now), Some("A"), dt(T0), dt(now - HOUR));
        let received: Vec<u32> = days.iter().map(|d| d.received).collect();
        // With the default 3-hour settling: today and the four days before are kept whole (days
        // 6–9 here, today having nothing yet); older days are not (the daemon keeps their
        // settled records).
        assert_eq!(received.len(), 10);
        assert_eq!(received[6..], [24, 24, 24, 24]);
        assert!(received[..6].iter().all(|&r| r == 0), "{received:?}");
        // (The running engine still has them: its first day counts from its first message.)
        assert_eq!(e.daily_records(dt(now), Some("A"), dt(T0), dt(now - HOUR))[0].received, 23);
    }
}
