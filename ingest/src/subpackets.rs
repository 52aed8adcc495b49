//! Reassembly of sub-packets (HJ 212-2017 Table 3 `PNUM`/`PNO`, Appendix C.47–C.50) into whole
//! messages, per MN, on top of the codec's [`Reassembler`].
//!
//! A long message travels as several complete frames, each with its own QN. With Flag A=1 the
//! platform answers 9014 to each (with that part's QN) and the site waits for it before sending
//! the next (C.50), so the connection driver publishes and answers every part on its own, as any
//! frame: that is the durable record. This module only adds the whole message, built by the
//! codec's merge (which also joins parts cut in the middle of an item), once every part is here.
//!
//! Parts are grouped as the codec (and spec digest §4) recommends: by MN, CN, `PNUM` and the
//! leading `DataTime` group; a later part without that group (cut mid-item) joins the most recent
//! open message of the same MN, CN and `PNUM`. Each open message holds its own codec
//! `Reassembler` (one group), which checks `PNO`, ignores repeated part numbers and merges; this
//! module keeps the QNs of the parts, the limits and the expiry.
//!
//! Invariants:
//! * Memory is bounded: at most `max_groups` open messages (`max_groups_per_site` per MN) and
//!   `max_bytes` of part text in all of them; parts beyond are refused (counted), never queued.
//! * A message is published whole at most once: its group is removed when it completes, and only
//!   parts seen for the first time (not duplicates by MN, CN, QN and `DataTime`) reach it.
//! * Frames that are not sub-packets never take the lock nor allocate here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hj212_codec::Packet;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::subpacket::{Reassembler, Reassembly};

use crate::config::Subpackets as Limits;
use crate::metrics::Metrics;

/// What became of a sub-packet.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Not a sub-packet.
    NotSplit,
    /// Held; more parts are expected.
    Pending,
    /// The last part: the whole message and the QNs of its parts, in `PNO` order.
    Complete {
        /// The merged message (QN of part 1, no `PNUM`/`PNO`, Flag D bit cleared).
        whole: OwnedPacket,
        /// The parts' QNs (`None` for a part without one).
        parts: Vec<Option<String>>,
    },
    /// A part number already held; ignored.
    Duplicate,
    /// Not taken; why.
    Refused(&'static str),
}

/// One message being reassembled.
#[derive(Debug)]
struct Group {
    cn: u16,
    pnum: u16,
    data_time: Option<String>,
    parts: Reassembler,
    qns: Vec<(u16, Option<String>)>,
    last_seen: Instant,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_mn: HashMap<String, Vec<Group>>,
    groups: usize,
    bytes: usize,
}

/// The open messages of every MN.
#[derive(Debug)]
pub(crate) struct Subpackets {
    limits: Limits,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// The value of a leading group made only of `DataTime`, as the codec keys groups by it.
fn leading_data_time<'a>(packet: &Packet<'a>) -> Option<&'a str> {
    let group = packet.cp().groups().next()?;
    let mut pairs = group.pairs();
    let first = pairs.next()?;
    (first.key() == "DataTime" && pairs.next().is_none()).then(|| first.value().unwrap_or(""))
}

impl Subpackets {
    pub(crate) fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self { limits, inner: Mutex::default(), metrics }
    }

    /// True when `packet` is one part of a split message (checked without a lock).
    pub(crate) fn is_part(packet: &Packet<'_>) -> bool {
        matches!((packet.pnum(), packet.pno()), (Some(pnum), Some(pno)) if pnum > 1 || pno > 1)
    }

    /// Offers a part of `mn`'s message, received at `now`.
    pub(crate) fn push(&self, mn: &str, packet: &Packet<'_>, now: Instant) -> Outcome {
        let (Some(pnum), Some(pno)) = (packet.pnum(), packet.pno()) else { return Outcome::NotSplit };
        if pnum <= 1 && pno <= 1 {
            return Outcome::NotSplit;
        }
        let outcome = self.push_part(mn, packet, pnum, pno, now);
        let counters = &self.metrics.counters;
        match &outcome {
            Outcome::Complete { .. } => Metrics::inc(&counters.subpacket_groups_completed),
            Outcome::Duplicate => Metrics::inc(&counters.subpacket_parts_duplicate),
            Outcome::Refused(_) => Metrics::inc(&counters.subpacket_parts_refused),
            Outcome::NotSplit | Outcome::Pending => {}
        }
        outcome
    }

    fn push_part(&self, mn: &str, packet: &Packet<'_>, pnum: u16, pno: u16, now: Instant) -> Outcome {
        if pno == 0 || pno > pnum {
            return Outcome::Refused("PNO out of range");
        }
        let cn = packet.cn();
        let data_time = leading_data_time(packet);
        let size = packet.as_str().len();
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        let expired = expire_site(inner, mn, now, self.max_age());
        self.count_expired(expired);
        let groups = inner.by_mn.get(mn).map_or(&[][..], Vec::as_slice);
        let exact = groups.iter().position(|g| g.cn == cn && g.pnum == pnum && g.data_time.as_deref() == data_time);
        // A part cut mid-item does not repeat `DataTime`: it continues the latest open message.
        let found = exact.or_else(|| {
            (data_time.is_none() && pno > 1)
                .then(|| groups.iter().rposition(|g| g.cn == cn && g.pnum == pnum))
                .flatten()
        });
        if inner.bytes + size > self.limits.max_bytes {
            self.publish_gauges(inner);
            return Outcome::Refused("sub-packet memory limit reached");
        }
        let index = match found {
            Some(i) => i,
            None => {
                if groups.len() >= self.limits.max_groups_per_site {
                    return Outcome::Refused("too many open sub-packet messages for this MN");
                }
                if inner.groups >= self.limits.max_groups {
                    return Outcome::Refused("too many open sub-packet messages");
                }
                let list = inner.by_mn.entry(mn.to_string()).or_default();
                list.push(Group {
                    cn,
                    pnum,
                    data_time: data_time.map(str::to_string),
                    parts: Reassembler::new(1, self.limits.max_bytes),
                    qns: Vec::new(),
                    last_seen: now,
                    bytes: 0,
                });
                inner.groups += 1;
                list.len() - 1
            }
        };
        let Some(list) = inner.by_mn.get_mut(mn) else { return Outcome::Refused("sub-packet group vanished") };
        let group = &mut list[index];
        let qn = packet.qn().map(str::to_string);
        let outcome = match group.parts.push(packet, 0) {
            Reassembly::Pending { .. } => {
                group.bytes += size;
                group.last_seen = now;
                group.qns.push((pno, qn));
                inner.bytes += size;
                Outcome::Pending
            }
            Reassembly::Complete(whole) => {
                let mut done = list.remove(index);
                done.qns.push((pno, qn));
                done.qns.sort_by_key(|(n, _)| *n);
                inner.groups -= 1;
                inner.bytes -= done.bytes;
                Outcome::Complete { whole, parts: done.qns.into_iter().map(|(_, q)| q).collect() }
            }
            Reassembly::Duplicate => Outcome::Duplicate,
            Reassembly::Refused(why) => {
                // The codec drops a group it refuses for size; drop ours with it.
                if group.parts.open() == 0 {
                    let gone = list.remove(index);
                    inner.groups -= 1;
                    inner.bytes -= gone.bytes;
                }
                Outcome::Refused(why)
            }
            Reassembly::NotSplit => Outcome::NotSplit,
        };
        if inner.by_mn.get(mn).is_some_and(Vec::is_empty) {
            inner.by_mn.remove(mn);
        }
        self.publish_gauges(inner);
        outcome
    }

    /// Drops every message that got no part for `expire_secs`; returns how many.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        if inner.groups == 0 {
            return 0;
        }
        let max_age = self.max_age();
        let mns: Vec<String> = inner
            .by_mn
            .iter()
            .filter(|(_, groups)| groups.iter().any(|g| now.saturating_duration_since(g.last_seen) > max_age))
            .map(|(mn, _)| mn.clone())
            .collect();
        let expired = mns.iter().map(|mn| expire_site(inner, mn, now, max_age)).sum();
        self.count_expired(expired);
        self.publish_gauges(inner);
        expired
    }

    fn max_age(&self) -> Duration {
        Duration::from_secs(self.limits.expire_secs)
    }

    fn count_expired(&self, n: usize) {
        if n > 0 {
            Metrics::add(&self.metrics.counters.subpacket_groups_expired, n as u64);
        }
    }

    fn publish_gauges(&self, inner: &Inner) {
        Metrics::set(&self.metrics.gauges.subpacket_groups_open, inner.groups as u64);
        Metrics::set(&self.metrics.gauges.subpacket_bytes, inner.bytes as u64);
    }
}

/// Drops `mn`'s messages that got no part for longer than `max_age`; returns how many.
fn expire_site(inner: &mut Inner, mn: &str, now: Instant, max_age: Duration) -> usize {
    let Some(groups) = inner.by_mn.get_mut(mn) else { return 0 };
    let mut dropped = 0;
    let mut bytes = 0;
    groups.retain(|g| {
        let keep = now.saturating_duration_since(g.last_seen) <= max_age;
        if !keep {
            dropped += 1;
            bytes += g.bytes;
            tracing::info!(
                mn,
                cn = g.cn,
                pnum = g.pnum,
                have = g.qns.len(),
                "Sub-packet message expired before all its parts arrived; its parts were published alone."
            );
        }
        keep
    });
    if groups.is_empty() {
        inner.by_mn.remove(mn);
    }
    inner.groups -= dropped;
    inner.bytes -= bytes;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { enabled: true, max_groups: 3, max_groups_per_site: 2, max_bytes: 4096, expire_secs: 10 }
    }

    fn part<'a>(text: &'a str) -> Packet<'a> {
        Packet::parse(text.as_bytes()).unwrap()
    }

    fn hourly(mn: &str, qn: u32, pno: u16, time: &str, items: &str) -> String {
        format!("QN={qn};ST=32;CN=2061;PW=1;MN={mn};Flag=7;PNUM=2;PNO={pno};CP=&&DataTime={time};{items}&&")
    }

    #[test]
    fn parts_complete_once_with_their_qns_in_part_order() {
        let metrics = Arc::new(Metrics::default());
        let s = Subpackets::new(limits(), metrics.clone());
        let t = Instant::now();
        let two = hourly("M", 2, 2, "20240101000000", "w01018-Avg=2");
        let one = hourly("M", 1, 1, "20240101000000", "w00000-Avg=1");
        assert!(matches!(s.push("M", &part(&two), t), Outcome::Pending));
        assert_eq!(metrics.get("subpacket_groups_open"), 1);
        // The same part number again, with another QN: ignored.
        let again = hourly("M", 3, 2, "20240101000000", "w01018-Avg=2");
        assert!(matches!(s.push("M", &part(&again), t), Outcome::Duplicate));
        let Outcome::Complete { whole, parts } = s.push("M", &part(&one), t) else { panic!() };
        assert_eq!(parts, [Some("1".to_string()), Some("2".to_string())]);
        assert_eq!(whole.cp_get("w00000-Avg"), Some("1"));
        assert_eq!(whole.cp_get("w01018-Avg"), Some("2"));
        assert_eq!(metrics.get("subpacket_groups_open"), 0);
        assert_eq!(metrics.get("subpacket_bytes"), 0);
        assert_eq!(metrics.get("subpacket_groups_completed"), 1);
        assert_eq!(metrics.get("subpacket_parts_duplicate"), 1);
        // A late copy of part 2 opens a new message, which never completes and expires.
        assert!(matches!(s.push("M", &part(&two), t), Outcome::Pending));
        assert_eq!(s.expire(t + Duration::from_secs(5)), 0);
        assert_eq!(s.expire(t + Duration::from_secs(11)), 1);
        assert_eq!(metrics.get("subpacket_groups_expired"), 1);
        assert_eq!(metrics.get("subpacket_groups_open"), 0);
    }

    #[test]
    fn limits_refuse_parts_and_count_them() {
        let metrics = Arc::new(Metrics::default());
        let s = Subpackets::new(limits(), metrics.clone());
        let t = Instant::now();
        for (mn, time) in [("A", "20240101000000"), ("A", "20240101010000"), ("B", "20240101000000")] {
            let p = hourly(mn, 1, 1, time, "w01018-Avg=1");
            assert!(matches!(s.push(mn, &part(&p), t), Outcome::Pending), "{mn} {time}");
        }
        let third = hourly("A", 1, 1, "20240101020000", "w01018-Avg=1");
        assert!(matches!(s.push("A", &part(&third), t), Outcome::Refused(_)), "per MN");
        let other = hourly("C", 1, 1, "20240101000000", "w01018-Avg=1");
        assert!(matches!(s.push("C", &part(&other), t), Outcome::Refused(_)), "all together");
        let big = hourly("B", 2, 2, "20240101000000", &"w01018-Avg=1.0,".repeat(300));
        assert!(matches!(s.push("B", &part(&big), t), Outcome::Refused(_)), "bytes");
        let bad = "QN=1;ST=32;CN=2061;MN=B;Flag=6;PNUM=2;PNO=3;CP=&&&&";
        assert!(matches!(s.push("B", &part(bad), t), Outcome::Refused("PNO out of range")));
        assert_eq!(metrics.get("subpacket_parts_refused"), 4);
        assert!(matches!(s.push("A", &part("QN=1;ST=32;CN=2011;MN=A;CP=&&DataTime=1&&"), t), Outcome::NotSplit));
    }

    #[test]
    fn a_part_cut_mid_item_joins_the_open_message() {
        let s = Subpackets::new(limits(), Arc::new(Metrics::default()));
        let t = Instant::now();
        let a = "QN=1;ST=32;CN=2061;PW=1;MN=M;Flag=6;PNUM=2;PNO=1;CP=&&DataTime=20160801080000;w01018-Avg=40.1,w010&&";
        let b = "QN=2;ST=32;CN=2061;PW=1;MN=M;Flag=6;PNUM=2;PNO=2;CP=&&18-Flag=N&&";
        assert!(matches!(s.push("M", &part(a), t), Outcome::Pending));
        let Outcome::Complete { whole, .. } = s.push("M", &part(b), t) else { panic!() };
        assert_eq!(whole.cp_get("w01018-Flag"), Some("N"));
    }
}
