//! Automatic gap recovery: history requests (CN 2061/2051 with `BeginTime`/`EndTime`) for periods
//! a connected DAU did not send, without ever causing a request storm.
//!
//! Limits (all in [`RecoveryConfig`]): one outstanding request per MN; a minimum spacing between
//! two requests to the same MN; at most `global_per_minute` requests started in any 60 s and
//! `global_outstanding` in flight across all MNs; MNs are served round-robin so that one site
//! with many gaps cannot starve the others; a period is asked for at most `max_attempts` times,
//! `retry_after_minutes` apart.
//!
//! A request ends on the DAU's 9012 (or a refusing 9011), on [`crate::quality::Event::HistoryFinished`],
//! or after `reply_timeout_minutes`; its [`RecoveryRecord`] says how many of the missing periods
//! arrived in the meantime and whether the gap closed.

use std::collections::{BTreeMap, VecDeque};

use hj212_codec::codes::Command;
use hj212_codec::message::Message;
use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::quality::config::RecoveryConfig;
use crate::quality::{MINUTE, Ms, dt, minutes, stamp};

/// How a recovery request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// Every missing period of the range arrived.
    Closed,
    /// Some arrived.
    Partial,
    /// The DAU answered but none arrived.
    NotClosed,
    /// The DAU refused the request (9011 other than 1, or a failed 9012 with nothing received).
    Refused,
    /// No answer in time (nothing received).
    TimedOut,
}

/// The record of one recovery request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// The DAU.
    pub mn: String,
    /// 2061 or 2051.
    pub cn: u16,
    /// `BeginTime` sent.
    #[serde(with = "stamp")]
    pub begin: DateTime,
    /// `EndTime` sent (the start of the last missing period, inclusive).
    #[serde(with = "stamp")]
    pub end: DateTime,
    /// When the request was planned.
    #[serde(with = "stamp")]
    pub requested_at: DateTime,
    /// When it ended.
    #[serde(with = "stamp")]
    pub finished_at: DateTime,
    /// Highest attempt number among its periods (1 = first request).
    pub attempt: u32,
    /// Missing periods in the range when requested.
    pub missing_before: u32,
    /// Of those, periods that arrived.
    pub recovered: u32,
    /// Of those, periods still missing.
    pub still_missing: u32,
    /// How it ended.
    pub outcome: RecoveryOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outstanding {
    cn: u16,
    periods: Vec<Ms>,
    requested_at: Ms,
    attempt: u32,
    answered: bool,
}

/// The planner's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Planner {
    outstanding: BTreeMap<String, Outstanding>,
    last_request: BTreeMap<String, Ms>,
    started: VecDeque<Ms>,
    #[serde(with = "crate::quality::persist::entries")]
    attempts: BTreeMap<(String, u16, Ms), (u32, Ms)>,
    cursor: Option<String>,
}

impl Planner {
    /// The MNs in round-robin order, starting after the last one served.
    pub(crate) fn rotate(&self, mut mns: Vec<String>) -> Vec<String> {
        mns.sort();
        if let Some(c) = &self.cursor {
            let split = mns.partition_point(|m| m <= c);
            mns.rotate_left(split);
        }
        mns
    }

    /// True while the global limits allow one more request.
    pub(crate) fn global_ok(&mut self, now: Ms, cfg: &RecoveryConfig) -> bool {
        while self.started.front().is_some_and(|&t| t <= now - MINUTE) {
            self.started.pop_front();
        }
        self.started.len() < cfg.global_per_minute as usize && self.outstanding.len() < cfg.global_outstanding as usize
    }

    /// True when this MN may get a request now.
    pub(crate) fn mn_ok(&self, now: Ms, mn: &str, cfg: &RecoveryConfig) -> bool {
        !self.outstanding.contains_key(mn)
            && self.last_request.get(mn).is_none_or(|&t| now - t >= minutes(cfg.per_mn_spacing_minutes))
    }

    /// Keeps the periods that may be asked for (attempts left, retry delay over).
    pub(crate) fn askable(&self, now: Ms, mn: &str, cn: u16, missing: Vec<Ms>, cfg: &RecoveryConfig) -> Vec<Ms> {
        missing
            .into_iter()
            .filter(|&p| match self.attempts.get(&(mn.to_string(), cn, p)) {
                None => true,
                Some(&(n, last)) => n < cfg.max_attempts && now - last >= minutes(cfg.retry_after_minutes),
            })
            .collect()
    }

    /// Starts a request for the first missing period and those after it within the span.
    pub(crate) fn start(
        &mut self,
        now: Ms,
        mn: &str,
        cn: u16,
        askable: &[Ms],
        cfg: &RecoveryConfig,
    ) -> Option<Message> {
        let first = *askable.first()?;
        let span =
            if cn == 2051 { minutes(cfg.minute_max_span_minutes) } else { minutes(cfg.hourly_max_span_hours * 60.0) };
        let periods: Vec<Ms> = askable.iter().copied().take_while(|&p| p - first < span.max(1)).collect();
        let last = *periods.last()?;
        let mut attempt = 0;
        for &p in &periods {
            let e = self.attempts.entry((mn.to_string(), cn, p)).or_insert((0, now));
            e.0 += 1;
            e.1 = now;
            attempt = attempt.max(e.0);
        }
        self.outstanding
            .insert(mn.to_string(), Outstanding { cn, periods, requested_at: now, attempt, answered: false });
        self.last_request.insert(mn.to_string(), now);
        self.started.push_back(now);
        self.cursor = Some(mn.to_string());
        Some(Message::HistoryRequest { cn: Command::from_value(cn), begin: dt(first), end: dt(last) })
    }

    /// True when this MN has a request outstanding.
    pub(crate) fn is_outstanding(&self, mn: &str) -> bool {
        self.outstanding.contains_key(mn)
    }

    /// A 9011 arrived: `accepted` is `QnRtn=1`. Returns the request when it ends here.
    pub(crate) fn answered(&mut self, mn: &str, accepted: bool) -> Option<Outstanding> {
        if accepted {
            if let Some(o) = self.outstanding.get_mut(mn) {
                o.answered = true;
            }
            None
        } else {
            self.outstanding.remove(mn)
        }
    }

    /// The request of this MN ends (9012 or an explicit finish).
    pub(crate) fn finish(&mut self, mn: &str) -> Option<Outstanding> {
        self.outstanding.remove(mn)
    }

    /// Requests past their reply timeout.
    pub(crate) fn timed_out(&mut self, now: Ms, cfg: &RecoveryConfig) -> Vec<(String, Outstanding)> {
        let limit = minutes(cfg.reply_timeout_minutes);
        let late: Vec<String> =
            self.outstanding.iter().filter(|(_, o)| now - o.requested_at >= limit).map(|(m, _)| m.clone()).collect();
        late.into_iter().filter_map(|m| self.outstanding.remove(&m).map(|o| (m, o))).collect()
    }

    /// The planner as a restarted daemon sees it. A request that was outstanding was sent on a
    /// connection that no longer exists and its answer can no longer be matched: it is dropped
    /// and its attempt given back, so that its periods, if still missing, are asked for again
    /// once the DAU is connected and its spacing (`last_request`, kept) allows. Nothing else
    /// changes, so a daemon that restarts in a loop still respects every rate limit.
    pub(crate) fn restored(mut self) -> Self {
        for (mn, o) in std::mem::take(&mut self.outstanding) {
            for p in &o.periods {
                let key = (mn.clone(), o.cn, *p);
                if let Some(e) = self.attempts.get_mut(&key) {
                    e.0 = e.0.saturating_sub(1);
                    if e.0 == 0 {
                        self.attempts.remove(&key);
                    }
                }
            }
        }
        self
    }

    /// Forgets attempt counts for periods before `before`.
    pub(crate) fn prune(&mut self, before: Ms) {
        self.attempts.retain(|(_, _, p), _| *p >= before);
    }
}

/// How a request ended, before counting what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Answered,
    Refused,
    TimedOut,
}

/// Builds the record of a finished request; `has` tells whether a period has arrived.
pub(crate) fn conclude(mn: &str, o: &Outstanding, now: Ms, ending: Ending, has: impl Fn(Ms) -> bool) -> RecoveryRecord {
    let recovered = u32::try_from(o.periods.iter().filter(|&&p| has(p)).count()).unwrap_or(u32::MAX);
    let total = u32::try_from(o.periods.len()).unwrap_or(u32::MAX);
    let still = total - recovered;
    let outcome = if still == 0 {
        RecoveryOutcome::Closed
    } else if recovered > 0 {
        RecoveryOutcome::Partial
    } else {
        match ending {
            Ending::Answered if o.answered => RecoveryOutcome::NotClosed,
            Ending::Answered | Ending::Refused => RecoveryOutcome::Refused,
            Ending::TimedOut => RecoveryOutcome::TimedOut,
        }
    };
    RecoveryRecord {
        mn: mn.to_string(),
        cn: o.cn,
        begin: dt(*o.periods.first().unwrap_or(&0)),
        end: dt(*o.periods.last().unwrap_or(&0)),
        requested_at: dt(o.requested_at),
        finished_at: dt(now),
        attempt: o.attempt,
        missing_before: total,
        recovered,
        still_missing: still,
        outcome,
    }
}

impl Outstanding {
    /// The CN asked for.
    pub(crate) fn cn(&self) -> u16 {
        self.cn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::HOUR;

    #[test]
    fn limits_per_mn_and_globally() {
        let cfg = RecoveryConfig { global_per_minute: 2, ..RecoveryConfig::default() };
        let mut p = Planner::default();
        let now = 1_000 * HOUR;
        let gaps = vec![now - 5 * HOUR, now - 4 * HOUR, now - 2 * HOUR];
        assert!(p.global_ok(now, &cfg) && p.mn_ok(now, "A", &cfg));
        let m = p.start(now, "A", 2061, &gaps, &cfg).unwrap();
        assert_eq!(m, Message::HistoryRequest { cn: Command::HourlyData, begin: dt(gaps[0]), end: dt(gaps[2]) });
        assert!(!p.mn_ok(now, "A", &cfg), "one outstanding request per MN");
        p.start(now, "B", 2061, &gaps, &cfg).unwrap();
        assert!(!p.global_ok(now + 1000, &cfg), "two per minute");
        assert!(p.global_ok(now + MINUTE, &cfg));
        // Finished but spaced: A waits 15 minutes.
        p.finish("A").unwrap();
        assert!(!p.mn_ok(now + 5 * MINUTE, "A", &cfg));
        assert!(p.mn_ok(now + 15 * MINUTE, "A", &cfg));
        // Attempts: retried after an hour, at most three times.
        assert!(p.askable(now + 15 * MINUTE, "A", 2061, gaps.clone(), &cfg).is_empty());
        let mut t = now;
        for _ in 0..2 {
            t += HOUR;
            let ask = p.askable(t, "A", 2061, gaps.clone(), &cfg);
            assert_eq!(ask.len(), 3);
            p.start(t, "A", 2061, &ask, &cfg).unwrap();
            p.finish("A");
        }
        assert!(p.askable(t + 5 * HOUR, "A", 2061, gaps, &cfg).is_empty());
    }

    #[test]
    fn span_and_round_robin() {
        let cfg = RecoveryConfig::default();
        let mut p = Planner::default();
        let gaps: Vec<Ms> = (0..30).map(|h| h * HOUR).collect();
        let Some(Message::HistoryRequest { end, .. }) = p.start(100 * HOUR, "B", 2061, &gaps, &cfg) else { panic!() };
        assert_eq!(end, dt(23 * HOUR), "24 hours at most");
        assert_eq!(p.rotate(vec!["C".into(), "A".into(), "B".into()]), vec!["C", "A", "B"]);
        let o = p.finish("B").unwrap();
        let r = conclude("B", &o, 101 * HOUR, Ending::Answered, |t| t < 10 * HOUR);
        assert_eq!((r.missing_before, r.recovered, r.still_missing, r.outcome), (24, 10, 14, RecoveryOutcome::Partial));
        let r = conclude("B", &o, 101 * HOUR, Ending::TimedOut, |_| false);
        assert_eq!(r.outcome, RecoveryOutcome::TimedOut);
        let r = conclude("B", &o, 101 * HOUR, Ending::Answered, |_| true);
        assert_eq!(r.outcome, RecoveryOutcome::Closed);
    }
}
