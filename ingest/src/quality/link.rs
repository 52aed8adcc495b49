//! Link state per MN: connected or not, last traffic, silent DAUs, MNs that stopped transmitting
//! or never connected, and bursts of CRC or authentication failures.
//!
//! "Connected" is what the daemon reports with [`crate::quality::Event::Connected`] /
//! [`crate::quality::Event::Disconnected`]. For an MN the daemon never reported a connection
//! event for, the engine treats it as connected while traffic is recent (within
//! `offline_after_minutes`).

use std::collections::{BTreeMap, VecDeque};

use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

use crate::quality::config::LinkConfig;
use crate::quality::{Alert, Evidence, Ms, Rule, Severity, dt, minutes, stamp};

/// The networking state of an MN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Registered, never connected, nothing ever received.
    NeverConnected,
    /// Traffic within the allowance.
    Online,
    /// Connected, but nothing received for longer than its intervals allow.
    Silent,
    /// Not connected and nothing received for longer than its intervals allow.
    Offline,
}

/// One row of the networking status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The DAU.
    pub mn: String,
    /// The registry's display name (empty for unregistered MNs).
    pub name: String,
    /// True when the MN is in the registry.
    pub registered: bool,
    /// The state.
    pub state: LinkState,
    /// Since when the state holds: the last traffic for `silent`/`offline`, the monitoring
    /// start for `never_connected`, the connection (or first traffic) for `online`.
    #[serde(with = "stamp::option")]
    pub since: Option<DateTime>,
    /// The last message received.
    #[serde(with = "stamp::option")]
    pub last_seen: Option<DateTime>,
    /// Whether a connection currently carries this MN (as reported, or inferred).
    pub connected: bool,
}

/// The link state of one MN. `connected` and `connected_since` describe a connection of the
/// running process and are not restored as such (see [`MnLink::restored`]); the rest is durable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct MnLink {
    connected: bool,
    conn_events: bool,
    connected_since: Option<Ms>,
    disconnected_at: Option<Ms>,
    first_rx: Option<Ms>,
    pub(crate) last_rx: Option<Ms>,
    silent_alerted: bool,
    offline_alerted: bool,
}

impl MnLink {
    pub(crate) fn connect(&mut self, now: Ms) {
        self.conn_events = true;
        if !self.connected {
            self.connected_since = Some(now);
        }
        self.connected = true;
    }

    pub(crate) fn disconnect(&mut self, now: Ms) {
        self.conn_events = true;
        self.connected = false;
        self.disconnected_at = Some(now);
    }

    /// This link as a restarted daemon sees it: whatever connection carried the MN ended when
    /// the state was saved (`saved_at`); what was received and which alerts were raised stay.
    pub(crate) fn restored(mut self, saved_at: Ms) -> Self {
        if self.connected {
            self.disconnect(saved_at);
        }
        self.connected_since = None;
        self
    }

    pub(crate) fn received(&mut self, now: Ms) {
        self.first_rx.get_or_insert(now);
        self.last_rx = Some(now.max(self.last_rx.unwrap_or(now)));
        self.silent_alerted = false;
        self.offline_alerted = false;
    }

    /// Connected as reported, or (without reports) with recent traffic.
    pub(crate) fn is_connected(&self, now: Ms, cfg: &LinkConfig) -> bool {
        if self.conn_events {
            self.connected
        } else {
            self.last_rx.is_some_and(|t| now - t <= minutes(cfg.offline_after_minutes))
        }
    }

    /// The state, with its "since".
    pub(crate) fn state(&self, now: Ms, allowance: Ms, start: Ms, cfg: &LinkConfig) -> (LinkState, Option<Ms>) {
        let connected = self.is_connected(now, cfg);
        let reference = self.last_rx.into_iter().chain(self.connected.then_some(self.connected_since).flatten()).max();
        match reference {
            None if !self.conn_events => (LinkState::NeverConnected, Some(start)),
            None => (if connected { LinkState::Silent } else { LinkState::Offline }, self.connected_since),
            Some(r) if now - r <= allowance => {
                (LinkState::Online, if self.conn_events { self.connected_since } else { self.first_rx })
            }
            Some(_) => {
                let since = self.last_rx.or(self.disconnected_at).or(self.connected_since);
                (if connected { LinkState::Silent } else { LinkState::Offline }, since)
            }
        }
    }

    /// Silent / stopped-transmitting alerts, once per episode.
    pub(crate) fn check(&mut self, mn: &str, now: Ms, allowance: Ms, start: Ms, cfg: &LinkConfig) -> Vec<Alert> {
        let mut out = Vec::new();
        let (state, since) = self.state(now, allowance, start, cfg);
        let since_t = since.map(dt);
        let mut evidence = vec![Evidence::value("allowance minutes", allowance as f64 / 60_000.0)];
        if let Some(t) = self.last_rx {
            evidence.push(Evidence::time("last message", dt(t)));
        }
        match state {
            LinkState::Silent if !self.silent_alerted => {
                self.silent_alerted = true;
                out.push(Alert {
                    mn: mn.to_string(),
                    rule: Rule::SilentDau,
                    severity: Severity::Warning,
                    at: dt(now),
                    subject: None,
                    evidence,
                    message: format!(
                        "connected but silent since {}",
                        since_t.map_or_else(|| "connection".to_string(), |t| t.to_string())
                    ),
                });
            }
            LinkState::Offline
                if !self.offline_alerted && since.is_some_and(|s| now - s >= minutes(cfg.offline_after_minutes)) =>
            {
                self.offline_alerted = true;
                out.push(Alert {
                    mn: mn.to_string(),
                    rule: Rule::StoppedTransmitting,
                    severity: Severity::Warning,
                    at: dt(now),
                    subject: None,
                    evidence,
                    message: format!(
                        "not connected, nothing received since {}",
                        since_t.map_or_else(|| "?".to_string(), |t| t.to_string())
                    ),
                });
            }
            _ => {}
        }
        out
    }
}

/// Sliding-window counters of CRC and authentication failures, per key. Durable: the failures
/// happened, and a burst that straddles a restart is still a burst.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Failures {
    #[serde(with = "crate::quality::persist::entries")]
    windows: BTreeMap<(String, Rule), (VecDeque<Ms>, bool)>,
}

impl Failures {
    /// Counts one failure; returns an alert when the threshold is crossed (once per burst).
    pub(crate) fn failure(&mut self, key: &str, rule: Rule, now: Ms, cfg: &LinkConfig) -> Option<Alert> {
        let window = minutes(cfg.failure_window_minutes);
        let (times, latched) = self.windows.entry((key.to_string(), rule)).or_default();
        times.push_back(now);
        while times.front().is_some_and(|&t| t <= now - window) {
            times.pop_front();
        }
        let n = times.len();
        if n >= cfg.failure_threshold as usize && !*latched {
            *latched = true;
            let what = if rule == Rule::RepeatedCrcFailures { "CRC" } else { "authentication" };
            return Some(Alert {
                mn: key.to_string(),
                rule,
                severity: Severity::Warning,
                at: dt(now),
                subject: None,
                evidence: times.iter().map(|&t| Evidence::time("failure", dt(t))).collect(),
                message: format!("{n} {what} failures within {} minutes", cfg.failure_window_minutes),
            });
        }
        None
    }

    /// Re-arms bursts that have died down.
    pub(crate) fn tick(&mut self, now: Ms, cfg: &LinkConfig) {
        let window = minutes(cfg.failure_window_minutes);
        for (times, latched) in self.windows.values_mut() {
            while times.front().is_some_and(|&t| t <= now - window) {
                times.pop_front();
            }
            if times.len() < cfg.failure_threshold as usize {
                *latched = false;
            }
        }
        self.windows.retain(|_, (t, l)| !t.is_empty() || *l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{HOUR, MINUTE};

    #[test]
    fn crc_burst_triggers_once_and_sparse_failures_do_not() {
        let cfg = LinkConfig::default();
        let mut f = Failures::default();
        let t0 = 1000 * HOUR;
        // Honest: one failure every 5 minutes never reaches 5 in 10 minutes.
        for i in 0..20 {
            assert!(f.failure("A", Rule::RepeatedCrcFailures, t0 + i * 5 * MINUTE, &cfg).is_none());
        }
        // Burst: 6 in a minute, one alert.
        let t1 = t0 + 5 * HOUR;
        let alerts: Vec<_> =
            (0..6).filter_map(|i| f.failure("B", Rule::RepeatedAuthFailures, t1 + i * 10_000, &cfg)).collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule, Rule::RepeatedAuthFailures);
        f.tick(t1 + HOUR, &cfg);
        assert!((0..5).filter_map(|i| f.failure("B", Rule::RepeatedAuthFailures, t1 + HOUR + i, &cfg)).count() == 1);
    }

    #[test]
    fn silent_and_offline_once_per_episode() {
        let cfg = LinkConfig::default();
        let mut l = MnLink::default();
        let t0 = 1000 * HOUR;
        let allowance = 30 * MINUTE;
        l.connect(t0);
        l.received(t0);
        assert!(l.check("A", t0 + 20 * MINUTE, allowance, t0, &cfg).is_empty());
        assert_eq!(l.check("A", t0 + 31 * MINUTE, allowance, t0, &cfg)[0].rule, Rule::SilentDau);
        assert!(l.check("A", t0 + 40 * MINUTE, allowance, t0, &cfg).is_empty());
        l.disconnect(t0 + 50 * MINUTE);
        assert_eq!(l.state(t0 + HOUR, allowance, t0, &cfg), (LinkState::Offline, Some(t0)));
        assert!(l.check("A", t0 + HOUR, allowance, t0, &cfg).is_empty(), "not yet 2 hours");
        assert_eq!(l.check("A", t0 + 2 * HOUR, allowance, t0, &cfg)[0].rule, Rule::StoppedTransmitting);
        let never = MnLink::default();
        assert_eq!(never.state(t0, allowance, t0 - HOUR, &cfg), (LinkState::NeverConnected, Some(t0 - HOUR)));
    }
}
