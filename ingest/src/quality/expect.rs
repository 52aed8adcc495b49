//! Expectations: what each MN should send, per CN and pollutant, and how often.
//!
//! The interval of a stream comes, in order of preference, from what the DAU announced (replies
//! to 1061 `RtdInterval` and 1063 `MinInterval`), from the registry, from the spacing of the
//! `DataTime`s it sent, and finally from the CN's default.

use std::collections::{BTreeMap, VecDeque};

/// Data times kept per stream to infer its interval from.
const RECENT: usize = 9;

use serde::{Deserialize, Serialize};

use crate::quality::Ms;
use crate::quality::config::{QualityConfig, SiteEntry};

/// Where an interval came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalSource {
    /// A 1061/1063 reply from the DAU.
    Announced,
    /// The site registry.
    Registry,
    /// The spacing of received `DataTime`s.
    Inferred,
    /// The CN's default.
    Default,
}

/// What should arrive on one stream of one MN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    /// The CN.
    pub cn: u16,
    /// Seconds between records.
    pub interval_s: u32,
    /// Where the interval came from.
    pub source: IntervalSource,
    /// The pollutants each record should carry (registry, else those seen so far).
    pub pollutants: Vec<String>,
}

/// The default interval of a CN, seconds.
#[must_use]
pub const fn default_interval(cn: u16) -> Option<u32> {
    match cn {
        2011 | 2021 => Some(30),
        2051 => Some(600),
        2061 => Some(3600),
        2031 | 2041 => Some(86_400),
        _ => None,
    }
}

/// `MinInterval` values HJ 212-2017 Table 4 allows, minutes.
const MIN_INTERVALS: [u32; 11] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];

/// One stream. The registry's part (`registry`, `listed`) is saved too but rebuilt from the
/// configuration on restore ([`MnExpect::inherit`]); what was announced, inferred or learnt is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Stream {
    registry: Option<u32>,
    announced: Option<u32>,
    inferred: Option<u32>,
    listed: bool,
    learned: bool,
    recent: VecDeque<Ms>,
    /// Sorted, without repeats (written as the set it was before).
    pollutants: Vec<String>,
}

/// Expectations of one MN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct MnExpect {
    streams: BTreeMap<u16, Stream>,
    registry_pollutants: Vec<String>,
}

impl MnExpect {
    /// From a registry entry (or none).
    pub(crate) fn new(site: Option<&SiteEntry>, cfg: &QualityConfig) -> Self {
        let mut e = Self::default();
        match site {
            Some(s) if !s.streams.is_empty() => {
                for spec in &s.streams {
                    let st = e.streams.entry(spec.cn).or_default();
                    st.listed = true;
                    st.registry = spec.interval_s.filter(|&i| i > 0);
                }
            }
            Some(_) => {
                for &cn in &cfg.accounting.default_cns {
                    e.streams.entry(cn).or_default().listed = true;
                }
            }
            None => {}
        }
        if let Some(s) = site {
            e.registry_pollutants = s.pollutants.iter().map(|p| p.code.clone()).collect();
        }
        e
    }

    /// Takes over what an older expectation announced, inferred or learnt (registry reload).
    pub(crate) fn inherit(&mut self, old: &Self) {
        for (cn, o) in &old.streams {
            let s = self.streams.entry(*cn).or_default();
            s.announced = o.announced;
            s.inferred = o.inferred;
            s.learned = o.learned;
            s.recent.clone_from(&o.recent);
            s.pollutants.clone_from(&o.pollutants);
        }
    }

    /// The DAU announced an interval (2011 from 1061, 2051 from 1063).
    pub(crate) fn announce(&mut self, cn: u16, seconds: u32) {
        if seconds > 0 {
            self.streams.entry(cn).or_default().announced = Some(seconds);
        }
    }

    /// A record of `cn` with this `DataTime` arrived, carrying these codes.
    pub(crate) fn observe(&mut self, cn: u16, data_time: Ms, codes: &[&str], cfg: &QualityConfig) {
        let st = self.streams.entry(cn).or_default();
        if cfg.accounting.learn_cns.contains(&cn) {
            st.learned = true;
        }
        // Once per record: nothing is allocated for pollutants already known.
        for code in codes {
            if let Err(at) = st.pollutants.binary_search_by(|p| p.as_str().cmp(code)) {
                st.pollutants.insert(at, (*code).to_string());
            }
        }
        if st.recent.contains(&data_time) {
            return;
        }
        st.recent.push_back(data_time);
        if st.recent.len() > RECENT {
            st.recent.pop_front();
        }
        // The most frequent spacing of the last RECENT times (the shorter on a tie).
        let mut times = [0; RECENT];
        let n = st.recent.len();
        times[..n].iter_mut().zip(&st.recent).for_each(|(t, r)| *t = *r);
        times[..n].sort_unstable();
        let mut counts: [(Ms, u32); RECENT] = [(0, 0); RECENT];
        let mut distinct = 0;
        for w in times[..n].windows(2) {
            let d = w[1] - w[0];
            match counts[..distinct].iter_mut().find(|(x, _)| *x == d) {
                Some((_, c)) => *c += 1,
                None => {
                    counts[distinct] = (d, 1);
                    distinct += 1;
                }
            }
        }
        let best = counts[..distinct].iter().max_by_key(|(d, n)| (*n, -*d)).copied();
        if let Some((d, n)) = best
            && n >= 3
            && d % 1000 == 0
        {
            let s = u32::try_from(d / 1000).unwrap_or(0);
            let ok = match cn {
                2051 => s % 60 == 0 && MIN_INTERVALS.contains(&(s / 60)),
                2011 | 2021 => (30..=3600).contains(&s),
                _ => false,
            };
            if ok {
                st.inferred = Some(s);
            }
        }
    }

    /// True when the stream is expected (listed in the registry, or learnt from traffic).
    pub(crate) fn expected(&self, cn: u16) -> bool {
        self.streams.get(&cn).is_some_and(|s| s.listed || s.learned)
    }

    /// The CNs expected, ascending.
    pub(crate) fn expected_cns(&self) -> Vec<u16> {
        self.streams.iter().filter(|(_, s)| s.listed || s.learned).map(|(c, _)| *c).collect()
    }

    /// The interval of a stream, seconds, and its source.
    pub(crate) fn interval(&self, cn: u16) -> Option<(u32, IntervalSource)> {
        let s = self.streams.get(&cn);
        s.and_then(|s| s.announced.map(|i| (i, IntervalSource::Announced)))
            .or_else(|| s.and_then(|s| s.registry.map(|i| (i, IntervalSource::Registry))))
            .or_else(|| s.and_then(|s| s.inferred.map(|i| (i, IntervalSource::Inferred))))
            .or_else(|| default_interval(cn).map(|i| (i, IntervalSource::Default)))
    }

    /// The pollutants a record of `cn` should carry.
    pub(crate) fn pollutants(&self, cn: u16) -> &[String] {
        if self.registry_pollutants.is_empty() {
            self.streams.get(&cn).map_or(&[], |s| s.pollutants.as_slice())
        } else {
            &self.registry_pollutants
        }
    }

    /// The shortest interval among the expected streams (and 2011 when announced), seconds.
    pub(crate) fn shortest_interval(&self) -> Option<u32> {
        let mut cns = self.expected_cns();
        if self.streams.get(&2011).is_some_and(|s| s.announced.is_some()) {
            cns.push(2011);
        }
        cns.into_iter().filter_map(|cn| self.interval(cn).map(|(i, _)| i)).min()
    }

    /// Every expectation, for reports.
    pub(crate) fn all(&self) -> Vec<Expectation> {
        self.expected_cns()
            .into_iter()
            .filter_map(|cn| {
                let (interval_s, source) = self.interval(cn)?;
                Some(Expectation { cn, interval_s, source, pollutants: self.pollutants(cn).to_vec() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::MINUTE;
    use crate::quality::config::StreamSpec;

    #[test]
    fn interval_preference_and_inference() {
        let cfg = QualityConfig::default();
        let site = SiteEntry {
            mn: "A".into(),
            streams: vec![StreamSpec { cn: 2061, interval_s: None }, StreamSpec { cn: 2051, interval_s: Some(300) }],
            ..SiteEntry::default()
        };
        let mut e = MnExpect::new(Some(&site), &cfg);
        assert_eq!(e.interval(2061), Some((3600, IntervalSource::Default)));
        assert_eq!(e.interval(2051), Some((300, IntervalSource::Registry)));
        e.announce(2051, 600);
        assert_eq!(e.interval(2051), Some((600, IntervalSource::Announced)));
        assert!(!e.expected(2011));

        // Unregistered: learnt from traffic, interval inferred from DataTime spacing.
        let mut u = MnExpect::new(None, &cfg);
        assert!(!u.expected(2051));
        for i in 0..5 {
            u.observe(2051, i * 2 * MINUTE, &["w01018"], &cfg);
        }
        assert!(u.expected(2051));
        assert_eq!(u.interval(2051), Some((120, IntervalSource::Inferred)));
        assert_eq!(u.pollutants(2051), vec!["w01018".to_string()]);
        // A spacing HJ 212 does not allow is not inferred.
        let mut v = MnExpect::new(None, &cfg);
        for i in 0..5 {
            v.observe(2051, i * 7 * MINUTE, &[], &cfg);
        }
        assert_eq!(v.interval(2051), Some((600, IntervalSource::Default)));
        // 2011 traffic is not accounted unless the registry lists it.
        v.observe(2011, 0, &[], &cfg);
        assert!(!v.expected(2011));
    }
}
