//! The conservation oracle of the end-to-end tests.
//!
//! A record leaves the gateway's store only on a 9014, and ingest sends a 9014 only after the
//! broker's PUBACK (or its durable spool), so:
//!
//! * every record the gateway sent and no longer holds (acknowledged) must reach the subscriber;
//! * nothing may reach the subscriber that the gateway did not send;
//! * what arrives is the very frame the gateway sent (byte for byte, password masked) with its
//!   values, and values of flag `N` are what the simulator served;
//! * every record the gateway stored was sent or is still queued;
//! * a statistics record is never dated after the data clock, and (where a test asks,
//!   [`statistics_once`]) a period (CN, `DataTime`) is delivered under one QN only.
//!
//! Duplicates (the same QN more than once) are allowed, at least once, and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hj212_codec::encode::OwnedPacket;
use hj212_codec::log::Direction;
use hj212_gateway::{Clock, SledStore, Store as _};
use serde_json::Value as Json;

use crate::chain::JumpClock;
use crate::mqtt::{self, Subscriber};
use crate::packets::{self, parse_frame};
use crate::sites::Site;

/// One data message received by the subscriber.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it was taken from the subscriber.
    pub at: Instant,
    /// The payload.
    pub payload: Json,
    /// The highest data-clock reading seen up to that moment (`YYYYMMDDhhmmss`).
    pub clock_max: String,
}

/// Everything the subscriber received on the data topics: by QN, and in arrival order.
#[derive(Debug, Default)]
pub struct Received {
    /// Every delivery of each QN, in arrival order.
    pub by_qn: BTreeMap<String, Vec<Json>>,
    /// Every delivery, in arrival order.
    pub arrivals: Vec<Arrival>,
    clock_max: String,
    /// A clock that jumps: its high-water mark is used rather than its reading now.
    jumping: Option<Arc<JumpClock>>,
}

impl Received {
    /// For a data clock that jumps: the clock a record is judged against is its high-water mark.
    #[must_use]
    pub fn with_jumping_clock(clock: Arc<JumpClock>) -> Self {
        Self { jumping: Some(clock), ..Self::default() }
    }

    /// Takes what the subscriber has received so far.
    pub fn take(&mut self, sub: &mut Subscriber, clock: &dyn Clock) {
        let now = self.jumping.as_ref().map_or_else(|| clock.now(), |j| j.high_water()).to_string();
        if now > self.clock_max {
            self.clock_max = now;
        }
        for m in sub.drain() {
            if mqtt::data_topic("hj212", &m.topic).is_none() {
                continue;
            }
            let qn = m.payload["qn"].as_str().unwrap_or_default().to_string();
            self.arrivals.push(Arrival {
                at: Instant::now(),
                payload: m.payload.clone(),
                clock_max: self.clock_max.clone(),
            });
            self.by_qn.entry(qn).or_default().push(m.payload);
        }
    }

    /// Waits (bounded) for a real-time upload (2011) received after `since` that satisfies `pred`.
    ///
    /// # Panics
    /// None arrives within `limit`.
    pub async fn wait_for(
        &mut self,
        sub: &mut Subscriber,
        clock: &dyn Clock,
        what: &str,
        since: Instant,
        limit: Duration,
        pred: impl Fn(&Json) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        let mut from = 0;
        loop {
            self.take(sub, clock);
            if self.arrivals[from..].iter().any(|a| a.at >= since && a.payload["cn"] == "2011" && pred(&a.payload)) {
                return;
            }
            from = self.arrivals.len();
            if Instant::now() >= deadline {
                crate::stacks::dump(what);
                panic!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for fresh normal real-time data: every main value flagged `N`, with a `DataTime`
    /// after the data clock's reading now. Returns how long it took.
    pub async fn wait_fresh(
        &mut self,
        sub: &mut Subscriber,
        clock: &dyn Clock,
        what: &str,
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        let now = clock.now().to_string();
        self.wait_for(sub, clock, what, started, limit, |v| {
            all_normal(v) && v["data_time"].as_str().is_some_and(|t| t > now.as_str())
        })
        .await;
        started.elapsed()
    }
}

/// The data item `code` of a payload.
#[must_use]
pub fn item<'a>(payload: &'a Json, code: &str) -> Option<&'a Json> {
    payload["items"].as_array()?.iter().find(|i| i["code"] == code)
}

/// The flag of the data item `code`.
#[must_use]
pub fn flag_of(payload: &Json, code: &str) -> Option<String> {
    item(payload, code).and_then(|i| i["flag"].as_str()).map(str::to_string)
}

/// COD and flow both flagged `N` (the water site's main values).
#[must_use]
pub fn all_normal(v: &Json) -> bool {
    ["w01018", "w00000"].iter().all(|c| flag_of(v, c).as_deref() == Some("N"))
}

/// The frame as the subscriber sees it in `raw`: CR LF removed.
#[must_use]
pub fn raw_text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).trim_end_matches(['\r', '\n']).to_string()
}

/// Compares one MQTT payload with the frame the gateway sent: every numeric `code-Suffix` pair
/// and every flag of the frame is in the payload with the same value.
///
/// # Errors
/// The first difference.
pub fn check_values(payload: &Json, sent: &OwnedPacket) -> Result<(), String> {
    for pair in sent.cp.iter().flatten() {
        let Some(value) = pair.value.as_deref() else { continue };
        let Some((code, suffix)) = pair.key.split_once('-') else { continue };
        if !matches!(suffix, "Rtd" | "Min" | "Avg" | "Max" | "Cou" | "Flag") {
            continue;
        }
        let it = item(payload, code).ok_or_else(|| format!("{code} missing from the payload"))?;
        if suffix == "Flag" {
            if it["flag"] != value {
                return Err(format!("{code} flag {} on MQTT, {value} sent", it["flag"]));
            }
        } else {
            let want: f64 = value.parse().map_err(|_| format!("{code}-{suffix}={value} is not a number"))?;
            if it[suffix].as_f64() != Some(want) {
                return Err(format!("{code}-{suffix}: {} on MQTT, {value} sent", it[suffix]));
            }
        }
    }
    Ok(())
}

/// Values of flag `N` must be what the simulator served (each analyzer's main value, constant in
/// these tests). Returns how many values it checked.
///
/// # Errors
/// The first value that differs.
pub fn check_served(payload: &Json, site: &Site) -> Result<usize, String> {
    let keys: &[&str] = match payload["cn"].as_str() {
        Some("2011") => &["Rtd"],
        Some("2051" | "2061") => &["Min", "Avg", "Max"],
        _ => return Ok(0),
    };
    let mut checked = 0;
    for a in &site.analyzers {
        let (code, served) = a.main;
        let Some(it) = item(payload, code) else { continue };
        if it["flag"] != "N" {
            continue;
        }
        for k in keys {
            if it[*k].as_f64() != Some(served) {
                return Err(format!("{} {code}-{k} = {} but the simulator served {served}", payload["cn"], it[*k]));
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// What the gateway sent, from its packet log.
#[derive(Debug, Default)]
pub struct Sent {
    /// Upload QNs in the order first sent.
    pub order: Vec<String>,
    /// QN → the frame (password masked), the packet and how many times it was sent.
    pub by_qn: BTreeMap<String, (Vec<u8>, OwnedPacket, u32)>,
    /// The answers (9011–9014) the gateway sent to platform requests, by (QN, CN). They are not
    /// records, but one seen on MQTT must be one the gateway sent.
    pub answers: BTreeSet<(String, String)>,
}

/// Reads the uploads (answers left out) the gateway logged as sent.
///
/// # Panics
/// A logged frame is unreadable, carries no QN, or a QN names two different frames.
#[must_use]
pub fn read_sent(log: &Path) -> Sent {
    let mut sent = Sent::default();
    for r in packets::read_log(log) {
        if r.direction != Direction::Out {
            continue;
        }
        let p = parse_frame(&r.frame).expect("the gateway logged an unreadable frame");
        if packets::is_answer(packets::cn(&p)) {
            if let (Some(qn), Some(cn)) = (p.field("QN"), p.field("CN")) {
                sent.answers.insert((qn.to_string(), cn.to_string()));
            }
            continue;
        }
        let qn = p.field("QN").expect("uploads carry a QN").to_string();
        match sent.by_qn.get_mut(&qn) {
            // A resend is the same frame; a different frame under the same QN is a QN reused.
            Some((frame, _, n)) => {
                assert_eq!(raw_text(frame), raw_text(&r.frame), "QN {qn} reused for another frame");
                *n += 1;
            }
            None => {
                sent.order.push(qn.clone());
                sent.by_qn.insert(qn, (r.frame.clone(), p, 1));
            }
        }
    }
    sent
}

/// The QNs still in `platform`'s queue of the (closed) store at `path`.
///
/// # Panics
/// The store cannot be opened.
#[must_use]
pub fn queued_qns(path: &Path, platform: &str) -> BTreeSet<String> {
    let store = SledStore::open(path, &[platform.to_string()], 200_000).expect("reopen store");
    store
        .queue_range(platform, 0, 1_000_000)
        .expect("read the queue")
        .iter()
        .filter_map(|(_, r)| parse_frame(&r.frame).and_then(|p| p.field("QN").map(str::to_string)))
        .collect()
}

/// The figures of one conservation check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Uploads sent (distinct QNs).
    pub sent: usize,
    /// Sends beyond the first, over all uploads.
    pub resends: u64,
    /// Sent and no longer queued: acknowledged by 9014, all found on MQTT.
    pub acked: usize,
    /// Still in the gateway's queue.
    pub queued: usize,
    /// Queued and never sent.
    pub unsent_queued: usize,
    /// Deliveries on MQTT beyond the first of each QN.
    pub duplicates: usize,
    /// Records the gateway stored over all its lives.
    pub stored: u64,
    /// Statistics records (2051/2061/2031) delivered, first deliveries only.
    pub statistics: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records sent ({} resends), {} acknowledged and all on MQTT, {} still queued ({} never sent), \
             {} duplicates on MQTT, {} statistics records; {} stored over the gateway's lives",
            self.sent,
            self.resends,
            self.acked,
            self.queued,
            self.unsent_queued,
            self.duplicates,
            self.statistics,
            self.stored
        )
    }
}

/// Checks conservation once the gateway is stopped: `queued` is what its store still holds,
/// `sent` what its packet log shows, `got` what the subscriber received (taken again for up to
/// five seconds while acknowledged records are missing), `stored` the records it stored.
///
/// # Panics
/// Any rule of the oracle broken.
pub async fn check(
    sub: &mut Subscriber,
    clock: &dyn Clock,
    got: &mut Received,
    sent: &Sent,
    queued: &BTreeSet<String>,
    site: &Site,
    stored: u64,
) -> Tally {
    // The subscriber may get the last ones a moment after ingest saw their PUBACK.
    let acked: Vec<&String> = sent.by_qn.keys().filter(|qn| !queued.contains(*qn)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let missing = loop {
        got.take(sub, clock);
        let missing: Vec<String> =
            acked.iter().filter(|qn| !got.by_qn.contains_key(**qn)).map(|s| (*s).clone()).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(missing.is_empty(), "acknowledged by 9014 but never on MQTT: {missing:?}");

    let mut duplicates = 0;
    for (qn, copies) in &got.by_qn {
        // The gateway's answers to the platform's own requests (a gap-recovery 2061 of ingest's
        // data-quality engine, a command) reach MQTT too: each must be one the gateway sent.
        let answers: Vec<&Json> = copies
            .iter()
            .filter(|v| v["cn"].as_str().and_then(|c| c.parse().ok()).is_some_and(packets::is_answer))
            .collect();
        for v in &answers {
            let cn = v["cn"].as_str().unwrap_or_default().to_string();
            assert!(sent.answers.contains(&(qn.clone(), cn)), "an answer on MQTT the gateway never sent: {qn} {v}");
        }
        if answers.len() == copies.len() {
            continue;
        }
        let copies: Vec<&Json> = copies.iter().filter(|v| !answers.contains(v)).collect();
        let (frame, packet, _) =
            sent.by_qn.get(qn).unwrap_or_else(|| panic!("on MQTT but never sent: {qn} {copies:?}"));
        duplicates += copies.len() - 1;
        for v in copies {
            assert_eq!(v["raw"].as_str(), Some(raw_text(frame).as_str()), "payload differs from the frame sent");
            assert_eq!(v["mn"], site.mn);
            check_values(v, packet).unwrap_or_else(|e| panic!("QN {qn}: {e}"));
            check_served(v, site).unwrap_or_else(|e| panic!("QN {qn}: {e}"));
        }
    }
    let unsent_queued = queued.iter().filter(|qn| !sent.by_qn.contains_key(*qn)).count();
    // Everything the gateway stored was sent or is still queued (none dropped on the way).
    assert!(
        usize::try_from(stored).unwrap_or(usize::MAX) <= sent.by_qn.len() + unsent_queued,
        "{stored} records stored but only {} sent and {unsent_queued} queued unsent",
        sent.by_qn.len()
    );
    Tally {
        sent: sent.by_qn.len(),
        resends: sent.by_qn.values().map(|(_, _, n)| u64::from(n - 1)).sum(),
        acked: acked.len(),
        queued: queued.len(),
        unsent_queued,
        duplicates,
        stored,
        statistics: statistics_once(got, |_| false),
    }
}

/// Statistics records (2051/2061/2031): none dated after the data clock at its arrival, and no
/// period (CN, `DataTime`) delivered under two QNs, for the arrivals `judged` selects. Returns
/// the number of first deliveries.
///
/// # Panics
/// A record ahead of the data clock, or a period reported twice.
#[must_use]
pub fn statistics_once(got: &Received, judged: impl Fn(&Arrival) -> bool) -> usize {
    let mut periods: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut first_arrivals: BTreeSet<&str> = BTreeSet::new();
    let mut count = 0;
    for a in &got.arrivals {
        let v = &a.payload;
        let cn = v["cn"].as_str().unwrap_or_default();
        if !matches!(cn, "2051" | "2061" | "2031") {
            continue;
        }
        let qn = v["qn"].as_str().unwrap_or_default();
        let t = v["data_time"].as_str().unwrap_or_default().to_string();
        assert!(t <= a.clock_max, "{cn} QN {qn} with DataTime {t} after the data clock {}", a.clock_max);
        // Only a QN's first arrival: later ones are the same record delivered again (a resend
        // published anew, or the same MQTT message published again after a broker restart,
        // identical to the byte; at least once either way).
        if !first_arrivals.insert(qn) {
            continue;
        }
        count += 1;
        if judged(a)
            && let Some(first) = periods.insert((cn.to_string(), t.clone()), qn.to_string())
        {
            panic!("{cn} DataTime {t} delivered under two QNs: {first}, then {qn}");
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(cn: &str, qn: &str, data_time: &str, received_at: &str) -> Arrival {
        Arrival {
            at: Instant::now(),
            payload: serde_json::json!({"cn": cn, "qn": qn, "data_time": data_time, "received_at": received_at}),
            clock_max: "20991231235959".into(),
        }
    }

    fn received(arrivals: Vec<Arrival>) -> Received {
        let mut got = Received::default();
        for a in arrivals {
            let qn = a.payload["qn"].as_str().unwrap_or_default().to_string();
            got.by_qn.entry(qn).or_default().push(a.payload.clone());
            got.arrivals.push(a);
        }
        got
    }

    #[test]
    fn a_record_delivered_again_counts_once_and_a_period_under_two_qns_is_caught() {
        // The same MQTT message twice (a broker restart before its PUBACK), and a resend
        // published anew with another arrival time: one record each.
        let got = received(vec![
            arrival("2051", "Q1", "20260301180100", "t1"),
            arrival("2051", "Q1", "20260301180100", "t1"),
            arrival("2061", "Q2", "20260301170000", "t2"),
            arrival("2061", "Q2", "20260301170000", "t3"),
            arrival("2011", "Q3", "20260301180100", "t4"),
        ]);
        assert_eq!(statistics_once(&got, |_| true), 2);
        // The same period under another QN is a period reported twice.
        let twice = received(vec![
            arrival("2051", "Q1", "20260301180100", "t1"),
            arrival("2051", "Q9", "20260301180100", "t9"),
        ]);
        let caught = std::panic::catch_unwind(|| statistics_once(&twice, |_| true));
        let message = caught.expect_err("must be caught").downcast::<String>().map(|m| *m).unwrap_or_default();
        assert!(message.contains("under two QNs: Q1, then Q9"), "{message}");
        assert_eq!(statistics_once(&twice, |_| false), 2, "not judged: counted, not failed");
    }
}
