//! Transmission accounting per MN, stream (CN) and civil day.
//!
//! The O&M assessment (domain notes §7.3) defines, for the hourly records of a period:
//!
//! * transmission rate (数据传输率) = received records / expected records, where expected is the
//!   number of periods minus approved stop periods;
//! * effective rate (数据有效率) = valid records / received records;
//! * their product, the transmission-effective rate (数据传输有效率) = valid / expected.
//!
//! The same definitions are applied to every accounted stream (2061 hourly by default; 2051 and
//! 2031 when expected). A record is *received* when a record of its period (its `DataTime`
//! snapped to the interval grid, counted once however often it is re-sent) arrived, whenever it
//! arrived — a record recovered by a history request counts for the day of its `DataTime`. A
//! record is *valid* when every expected pollutant is present and flagged with a valid flag
//! (`N` by default). Rates are fractions (0–1), `None` when the denominator is 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quality::{DAY, LookupKey, Ms, date_string, refill};

/// One pollutant's share of a [`DailyRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollutantDay {
    /// The pollutant code.
    pub code: String,
    /// Counted records that carried it.
    pub received: u32,
    /// ... with a valid flag.
    pub valid: u32,
    /// received / expected of the day.
    pub transmission_rate: Option<f64>,
    /// valid / received.
    pub effective_rate: Option<f64>,
    /// How often each flag appeared (`""` for an item without a flag).
    pub flags: BTreeMap<String, u32>,
}

/// The accounting of one MN, stream and day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyRecord {
    /// The DAU.
    pub mn: String,
    /// The civil day, `YYYY-MM-DD`.
    pub date: String,
    /// The stream.
    pub cn: u16,
    /// The interval used, seconds.
    pub interval_s: u32,
    /// Periods expected (due, after the monitoring start, not in an approved stop).
    pub expected: u32,
    /// Periods excused by an approved stop.
    pub excused: u32,
    /// Expected periods for which a record arrived.
    pub received: u32,
    /// Received records whose expected pollutants are all present and validly flagged.
    pub valid: u32,
    /// Received records that arrived after their grace period (late or recovered).
    pub late: u32,
    /// received / expected.
    pub transmission_rate: Option<f64>,
    /// valid / received.
    pub effective_rate: Option<f64>,
    /// valid / expected (the product of the two rates).
    pub transmission_effective_rate: Option<f64>,
    /// True when the day is over (every period of the day is due).
    pub complete: bool,
    /// Start times (`hh:mm`) of the first 48 missing periods.
    pub missing_periods: Vec<String>,
    /// Per pollutant.
    pub pollutants: Vec<PollutantDay>,
}

/// What the ledger needs to know about a stream to account for it.
#[derive(Debug, Clone)]
pub(crate) struct StreamCtx<'a> {
    pub mn: &'a str,
    pub cn: u16,
    pub interval_ms: Ms,
    /// From when periods are expected.
    pub start: Ms,
    /// Approved stops `[begin, end)`.
    pub stops: &'a [(Ms, Ms)],
    pub pollutants: &'a [String],
    pub valid_flags: &'a [String],
    /// A period is due `grace` after its end.
    pub grace: Ms,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Period {
    late: bool,
    items: Flags,
}

/// The `(code, flag)` pairs of one received record in one allocation: the ledger holds days of
/// them for every site. Written and read as the list of pairs it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Flags(Box<[u8]>);

impl Flags {
    /// Packs the pairs: each text as a 2-byte length and its bytes (a longer text is cut at a
    /// character boundary; no code or flag comes near it).
    pub(crate) fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut bytes = Vec::new();
        let mut put = |text: &str| {
            let mut end = text.len().min(usize::from(u16::MAX));
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            bytes.extend_from_slice(&u16::try_from(end).unwrap_or(0).to_le_bytes());
            bytes.extend_from_slice(&text.as_bytes()[..end]);
        };
        for (code, flag) in pairs {
            put(code);
            put(flag);
        }
        Self(bytes.into_boxed_slice())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, in the order given.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        let mut next = move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
            let (text, tail) = tail.split_at(len);
            rest = tail;
            Some(std::str::from_utf8(text).unwrap_or(""))
        };
        std::iter::from_fn(move || Some((next()?, next()?)))
    }
}

impl Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        Ok(Self::new(pairs.iter().map(|(c, f)| (c.as_str(), f.as_str()))))
    }
}

/// Received periods per MN and stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Ledger {
    #[serde(with = "crate::quality::persist::entries")]
    streams: BTreeMap<(String, u16), BTreeMap<Ms, Period>>,
    /// The lookup key of `streams`, reused for every record.
    #[serde(skip)]
    key: LookupKey<(String, u16)>,
}

/// Snaps a time to the start of its period on a grid anchored at midnight.
pub(crate) fn snap(t: Ms, interval_ms: Ms) -> Ms {
    let day = t.div_euclid(DAY) * DAY;
    day + (t - day).div_euclid(interval_ms.max(1)) * interval_ms.max(1)
}

impl StreamCtx<'_> {
    fn excused(&self, start: Ms) -> bool {
        let end = start + self.interval_ms;
        self.stops.iter().any(|&(b, e)| b <= start && end <= e)
    }
    fn first_period(&self) -> Ms {
        snap(self.start, self.interval_ms)
    }
    fn valid(&self, p: &Period) -> bool {
        let ok = |flag: &str| self.valid_flags.iter().any(|f| f == flag);
        if self.pollutants.is_empty() {
            !p.items.is_empty() && p.items.iter().all(|(_, f)| ok(f))
        } else {
            self.pollutants.iter().all(|code| p.items.iter().any(|(c, f)| c == code && ok(f)))
        }
    }
}

impl Ledger {
    /// Records a received record; returns its period start.
    pub(crate) fn record(&mut self, ctx: &StreamCtx<'_>, data_time: Ms, received_at: Ms, items: Flags) -> Ms {
        let start = snap(data_time, ctx.interval_ms);
        let late = received_at > start + ctx.interval_ms + ctx.grace;
        let key = &mut self.key.0;
        refill(&mut key.0, ctx.mn);
        key.1 = ctx.cn;
        let periods = match self.streams.get_mut(&*key) {
            Some(periods) => periods,
            None => self.streams.entry(key.clone()).or_default(),
        };
        match periods.get_mut(&start) {
            // A re-sent record replaces the items (a corrected value) but keeps "on time".
            Some(p) => p.items = items,
            None => {
                periods.insert(start, Period { late, items });
            }
        }
        start
    }

    /// True when a record of the period starting at `start` arrived.
    pub(crate) fn has(&self, mn: &str, cn: u16, start: Ms) -> bool {
        self.streams.get(&(mn.to_string(), cn)).is_some_and(|p| p.contains_key(&start))
    }

    /// Period starts in `[from, to)` that are due by `now`, expected and not received.
    pub(crate) fn missing(&self, ctx: &StreamCtx<'_>, from: Ms, to: Ms, now: Ms) -> Vec<Ms> {
        let iv = ctx.interval_ms.max(1);
        let mut t = snap(from.max(ctx.first_period()), iv);
        if t < from {
            t += iv;
        }
        let periods = self.streams.get(&(ctx.mn.to_string(), ctx.cn));
        let mut out = Vec::new();
        while t < to && t + iv + ctx.grace <= now {
            if !ctx.excused(t) && !periods.is_some_and(|p| p.contains_key(&t)) {
                out.push(t);
            }
            t += iv;
        }
        out
    }

    /// The record of one day (`day` = days since 1970-01-01) as of `now`.
    pub(crate) fn daily(&self, ctx: &StreamCtx<'_>, day: i64, now: Ms) -> DailyRecord {
        let iv = ctx.interval_ms.max(1);
        let day_start = day * DAY;
        let day_end = day_start + DAY;
        let first = ctx.first_period();
        let periods = self.streams.get(&(ctx.mn.to_string(), ctx.cn));
        let (mut expected, mut excused, mut received, mut valid, mut late) = (0u32, 0u32, 0u32, 0u32, 0u32);
        let mut missing_periods = Vec::new();
        let mut per: BTreeMap<&str, (u32, u32, BTreeMap<String, u32>)> =
            ctx.pollutants.iter().map(|c| (c.as_str(), (0, 0, BTreeMap::new()))).collect();
        let valid_flag = |f: &str| ctx.valid_flags.iter().any(|v| v == f);
        let mut t = day_start;
        while t < day_end {
            let got = periods.and_then(|p| p.get(&t));
            let due = t + iv + ctx.grace <= now;
            if t < first || !(due || got.is_some()) {
                t += iv;
                continue;
            }
            if ctx.excused(t) {
                excused += 1;
                t += iv;
                continue;
            }
            expected += 1;
            match got {
                Some(p) => {
                    received += 1;
                    late += u32::from(p.late);
                    valid += u32::from(ctx.valid(p));
                    for (code, flag) in p.items.iter() {
                        if ctx.pollutants.is_empty() || per.contains_key(code) {
                            let e = per.entry(code).or_default();
                            e.0 += 1;
                            e.1 += u32::from(valid_flag(flag));
                            *e.2.entry(flag.to_string()).or_default() += 1;
                        }
                    }
                }
                None => {
                    if missing_periods.len() < 48 {
                        let s = (t - day_start) / 60_000;
                        missing_periods.push(format!("{:02}:{:02}", s / 60, s % 60));
                    }
                }
            }
            t += iv;
        }
        let ratio = |a: u32, b: u32| (b > 0).then(|| f64::from(a) / f64::from(b));
        DailyRecord {
            mn: ctx.mn.to_string(),
            date: date_string(day),
            cn: ctx.cn,
            interval_s: u32::try_from(iv / 1000).unwrap_or(u32::MAX),
            expected,
            excused,
            received,
            valid,
            late,
            transmission_rate: ratio(received, expected),
            effective_rate: ratio(valid, received),
            transmission_effective_rate: ratio(valid, expected),
            complete: day_end + ctx.grace <= now,
            missing_periods,
            pollutants: per
                .into_iter()
                .map(|(code, (r, v, flags))| PollutantDay {
                    code: code.to_string(),
                    received: r,
                    valid: v,
                    transmission_rate: ratio(r, expected),
                    effective_rate: ratio(v, r),
                    flags,
                })
                .collect(),
        }
    }

    /// A copy holding only the periods that start at or after `from` (what is saved).
    pub(crate) fn since(&self, from: Ms) -> Self {
        let streams = self
            .streams
            .iter()
            .map(|(k, periods)| {
                (k.clone(), periods.range(from..).map(|(t, p)| (*t, p.clone())).collect::<BTreeMap<_, _>>())
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        Self { streams, key: LookupKey::default() }
    }

    /// The received periods held, per (MN, CN).
    #[cfg(test)]
    pub(crate) fn held(&self) -> BTreeMap<(String, u16), (usize, Ms)> {
        self.streams.iter().map(|(k, p)| (k.clone(), (p.len(), p.keys().next().copied().unwrap_or_default()))).collect()
    }

    /// Forgets periods that start before `before`.
    pub(crate) fn prune(&mut self, before: Ms) {
        for periods in self.streams.values_mut() {
            *periods = periods.split_off(&before);
        }
        self.streams.retain(|_, p| !p.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::HOUR;

    fn items(flag: &str) -> Flags {
        Flags::new([("w01018", flag), ("w00000", "N")])
    }

    #[test]
    fn flags_keep_their_pairs_and_are_written_as_the_list() {
        let f = Flags::new([("w01018", "N"), ("", ""), ("a34013", "长"), ("x", "MM")]);
        assert_eq!(f.iter().collect::<Vec<_>>(), [("w01018", "N"), ("", ""), ("a34013", "长"), ("x", "MM")]);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"[["w01018","N"],["",""],["a34013","长"],["x","MM"]]"#);
        assert_eq!(serde_json::from_str::<Flags>(&json).unwrap(), f);
        assert!(Flags::new([]).is_empty() && Flags::new([]).iter().next().is_none());
        // A text longer than the 2-byte length is cut at a character boundary, never split.
        let long = "长".repeat(30_000);
        let f = Flags::new([(long.as_str(), "N")]);
        let (code, flag) = f.iter().next().unwrap();
        assert!(code.len() <= usize::from(u16::MAX) && long.starts_with(code) && flag == "N");
    }

    #[test]
    fn rates_follow_the_assessment_definitions() {
        let pollutants = vec!["w01018".to_string(), "w00000".to_string()];
        let valid_flags = vec!["N".to_string()];
        let day = 20_000; // 2024-10-04
        let d0 = day * DAY;
        // Approved stop 20:00–22:00 excuses two hours.
        let stops = [(d0 + 20 * HOUR, d0 + 22 * HOUR)];
        let ctx = StreamCtx {
            mn: "A",
            cn: 2061,
            interval_ms: HOUR,
            start: d0 - DAY,
            stops: &stops,
            pollutants: &pollutants,
            valid_flags: &valid_flags,
            grace: 10 * 60_000,
        };
        let mut l = Ledger::default();
        // 18 hours received: 15 N, 3 with COD flagged M; hours 18, 19, 20, 21, 22, 23 missing
        // (20 and 21 excused). Hour 3 is sent twice (counted once); hour 5 arrives a day late.
        for h in 0..18 {
            let flag = if h < 15 { "N" } else { "M" };
            let at = if h == 5 { d0 + DAY + HOUR } else { d0 + (h + 1) * HOUR + 60_000 };
            l.record(&ctx, d0 + h * HOUR + 5_000, at, items(flag));
        }
        l.record(&ctx, d0 + 3 * HOUR, d0 + 4 * HOUR, items("N"));
        let r = l.daily(&ctx, day, d0 + 2 * DAY);
        assert_eq!((r.expected, r.excused, r.received, r.valid, r.late), (22, 2, 18, 15, 1));
        assert!((r.transmission_rate.unwrap() - 18.0 / 22.0).abs() < 1e-12);
        assert!((r.effective_rate.unwrap() - 15.0 / 18.0).abs() < 1e-12);
        assert!((r.transmission_effective_rate.unwrap() - 15.0 / 22.0).abs() < 1e-12);
        assert!(r.complete);
        assert_eq!(r.missing_periods, vec!["18:00", "19:00", "22:00", "23:00"]);
        let cod = r.pollutants.iter().find(|p| p.code == "w01018").unwrap();
        assert_eq!((cod.received, cod.valid, cod.flags["M"]), (18, 15, 3));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<DailyRecord>(&json).unwrap(), r);

        // Mid-day: due periods are expected (0–8 at 10:05), and so are periods already received
        // (here 9–17, recorded ahead by the test).
        let r = l.daily(&ctx, day, d0 + 10 * HOUR + 5 * 60_000);
        assert_eq!((r.expected, r.received), (18, 18));
        let r = Ledger::default().daily(&ctx, day, d0 + 10 * HOUR + 5 * 60_000);
        assert_eq!((r.expected, r.received), (9, 0));
        assert!(!r.complete);
        // Missing periods for recovery.
        assert_eq!(
            l.missing(&ctx, d0, d0 + DAY, d0 + 2 * DAY),
            vec![d0 + 18 * HOUR, d0 + 19 * HOUR, d0 + 22 * HOUR, d0 + 23 * HOUR]
        );
    }

    #[test]
    fn nothing_expected_before_the_monitoring_start() {
        let none: Vec<String> = Vec::new();
        let flags = vec!["N".to_string()];
        let d0 = 20_000 * DAY;
        let ctx = StreamCtx {
            mn: "A",
            cn: 2061,
            interval_ms: HOUR,
            start: d0 + 12 * HOUR + 30 * 60_000,
            stops: &[],
            pollutants: &none,
            valid_flags: &flags,
            grace: 0,
        };
        let r = Ledger::default().daily(&ctx, 20_000, d0 + DAY);
        assert_eq!((r.expected, r.received, r.transmission_rate), (12, 0, Some(0.0)));
        assert_eq!(r.effective_rate, None);
    }
}
