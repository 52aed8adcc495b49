//! Sub-packets (HJ 212-2017 Table 3 `PNUM`/`PNO`, Appendix C.47–C.50).
//!
//! A message whose data segment would exceed 1024 bytes (or whose `CP` would exceed 950) is sent
//! as several complete frames, each with its own QN, `Flag` with the D bit set, `PNUM` (the total)
//! and `PNO` (from 1). Following C.49/C.50 we split at item boundaries and repeat the leading
//! `DataTime` group in every sub-packet, so each one parses on its own; an item too long for one
//! sub-packet is split between its pairs.
//!
//! Receivers reassemble by (MN, CN, PNUM, leading DataTime) in arrival order; the standard
//! defines no group identifier (spec digest §4). Some senders cut `CP` at arbitrary character
//! offsets; when the later parts do not start with the repeated `DataTime` group, the raw `CP`
//! texts are concatenated in `PNO` order and parsed again.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::encode::{OwnedPacket, OwnedPair};
use crate::error::{Error, ErrorKind};
use crate::frame::MAX_DATA_LEN_2017;
use crate::packet::{Flag, Packet};
use crate::qn::QnGenerator;
use crate::time::DateTime;

/// HJ 212-2017 Table 3: `CP` is at most 950 characters.
pub const MAX_CP_LEN: usize = 950;

fn pair_len(p: &OwnedPair) -> usize {
    p.key.len() + p.value.as_ref().map_or(0, |v| v.len() + 1)
}

fn group_len(g: &[OwnedPair]) -> usize {
    g.iter().map(pair_len).sum::<usize>() + g.len().saturating_sub(1)
}

/// Splits `packet` into sub-packets whose data segments are at most `max_data_len` bytes (and
/// whose `CP` is at most 950), each with a fresh QN from `qns` at time `now`.
///
/// A packet that already fits is returned unchanged, alone.
///
/// # Errors
/// [`ErrorKind::DataTooLong`] when a single pair cannot fit in a sub-packet.
pub fn split(
    packet: &OwnedPacket,
    max_data_len: usize,
    qns: &mut QnGenerator,
    now: DateTime,
) -> Result<Vec<OwnedPacket>, Error> {
    let max_data_len = max_data_len.min(MAX_DATA_LEN_2017);
    let whole = packet.data_segment();
    let cp_len = group_len_all(&packet.cp);
    if whole.len() <= max_data_len && cp_len <= MAX_CP_LEN {
        return Ok(alloc::vec![packet.clone()]);
    }
    // The groups repeated in every part: a leading group made only of DataTime.
    let repeat = usize::from(packet.cp.first().is_some_and(|g| g.iter().all(|p| p.key.trim() == "DataTime")));
    let (head, items) = packet.cp.split_at(repeat);
    // Header bytes with the worst-case PNUM/PNO and QN, plus `CP=&&` and `&&`.
    let mut template = packet.clone();
    template.cp.clear();
    template.set_field("QN", "00000000000000000");
    template.set_sub_packet(9999, 9999);
    let fixed = template.data_segment().len();
    let head_len = group_len_all(head);
    let budget = (max_data_len.saturating_sub(fixed)).min(MAX_CP_LEN);
    let mut parts: Vec<Vec<Vec<OwnedPair>>> = Vec::new();
    let mut current: Vec<Vec<OwnedPair>> = head.to_vec();
    let mut used = head_len;
    let fresh = |parts: &mut Vec<Vec<Vec<OwnedPair>>>, current: &mut Vec<Vec<OwnedPair>>, used: &mut usize| {
        parts.push(core::mem::replace(current, head.to_vec()));
        *used = head_len;
    };
    for item in items {
        let sep = usize::from(!current.is_empty());
        if used + sep + group_len(item) <= budget {
            used += sep + group_len(item);
            current.push(item.clone());
            continue;
        }
        if current.len() > repeat {
            fresh(&mut parts, &mut current, &mut used);
            let sep = usize::from(!current.is_empty());
            if used + sep + group_len(item) <= budget {
                used += sep + group_len(item);
                current.push(item.clone());
                continue;
            }
        }
        // The item alone is too long: split it between its pairs.
        let mut piece: Vec<OwnedPair> = Vec::new();
        for pair in item {
            let sep = usize::from(!current.is_empty());
            let extra = if piece.is_empty() { sep + pair_len(pair) } else { 1 + pair_len(pair) };
            if used + extra > budget {
                if !piece.is_empty() {
                    current.push(core::mem::take(&mut piece));
                }
                fresh(&mut parts, &mut current, &mut used);
                let sep = usize::from(!current.is_empty());
                if used + sep + pair_len(pair) > budget {
                    return Err(Error::new(ErrorKind::DataTooLong { len: fixed + used + sep + pair_len(pair) }, 6));
                }
                used += sep + pair_len(pair);
            } else {
                used += extra;
            }
            piece.push(pair.clone());
        }
        if !piece.is_empty() {
            current.push(piece);
        }
    }
    if current.len() > repeat || parts.is_empty() {
        parts.push(current);
    }
    let pnum = u16::try_from(parts.len()).map_err(|_| Error::new(ErrorKind::DataTooLong { len: whole.len() }, 6))?;
    let flag =
        packet.field("Flag").and_then(|f| f.parse::<u8>().ok()).map_or(Flag(Flag::SPLIT), |f| Flag(f).with_split(true));
    let mut out = Vec::with_capacity(parts.len());
    for (i, cp) in parts.into_iter().enumerate() {
        let mut p = packet.clone();
        p.cp = cp;
        // Every sub-packet has its own QN (C.49, C.50); a missing QN is added first, as in Table 3.
        let qn = qns.next_string(now);
        if p.field("QN").is_some() {
            p.set_field("QN", qn);
        } else {
            p.header.insert(0, ("QN".into(), qn));
        }
        p.set_field("Flag", flag.0.to_string());
        p.set_sub_packet(pnum, u16::try_from(i + 1).unwrap_or(u16::MAX));
        out.push(p);
    }
    Ok(out)
}

fn group_len_all(groups: &[Vec<OwnedPair>]) -> usize {
    groups.iter().map(|g| group_len(g)).sum::<usize>() + groups.len().saturating_sub(1)
}

/// The key sub-packets of one message share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupKey {
    mn: String,
    cn: u16,
    pnum: u16,
    data_time: Option<String>,
}

#[derive(Debug)]
struct Pending {
    parts: BTreeMap<u16, OwnedPacket>,
    first_seen_ms: u64,
    bytes: usize,
}

/// What [`Reassembler::push`] did with a sub-packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembly {
    /// The packet was not a sub-packet; use it as it is.
    NotSplit,
    /// Stored; `have` of `pnum` parts are here.
    Pending {
        /// Parts received so far.
        have: u16,
        /// Parts expected.
        pnum: u16,
    },
    /// The last part arrived: here is the whole message (Flag D bit cleared, no PNUM/PNO,
    /// the QN of part 1).
    Complete(OwnedPacket),
    /// A part number that was already received; ignored.
    Duplicate,
    /// Refused: `PNO` of 0 or above `PNUM`, or the limits were reached.
    Refused(&'static str),
}

/// Collects sub-packets until every part of a message is here.
///
/// Memory is bounded by `max_groups` open messages and `max_bytes` of stored text per message.
#[derive(Debug)]
pub struct Reassembler {
    pending: BTreeMap<GroupKey, Pending>,
    max_groups: usize,
    max_bytes: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(64, 256 * 1024)
    }
}

impl Reassembler {
    /// A reassembler holding at most `max_groups` open messages of at most `max_bytes` each.
    #[must_use]
    pub fn new(max_groups: usize, max_bytes: usize) -> Self {
        Self { pending: BTreeMap::new(), max_groups, max_bytes }
    }

    /// Open messages.
    #[must_use]
    pub fn open(&self) -> usize {
        self.pending.len()
    }

    /// Offers a packet received at `now_ms` (any monotonic millisecond count).
    pub fn push(&mut self, packet: &Packet<'_>, now_ms: u64) -> Reassembly {
        let (Some(pnum), Some(pno)) = (packet.pnum(), packet.pno()) else {
            return Reassembly::NotSplit;
        };
        if pnum <= 1 && pno <= 1 {
            return Reassembly::NotSplit;
        }
        if pno == 0 || pno > pnum {
            return Reassembly::Refused("PNO out of range");
        }
        let data_time = packet.cp().groups().next().and_then(|g| {
            let mut pairs = g.pairs();
            let first = pairs.next()?;
            (first.key() == "DataTime" && pairs.next().is_none()).then(|| first.value().unwrap_or("").to_string())
        });
        // Parts cut mid-item do not repeat DataTime; group those with the open message of the
        // same MN, CN and PNUM.
        let mut key = GroupKey { mn: packet.mn().unwrap_or("").to_string(), cn: packet.cn(), pnum, data_time };
        if key.data_time.is_none() && pno > 1 {
            if let Some(open) = self.pending.keys().find(|k| k.mn == key.mn && k.cn == key.cn && k.pnum == key.pnum) {
                key = open.clone();
            }
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_groups {
            return Reassembly::Refused("too many open sub-packet groups");
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            parts: BTreeMap::new(),
            first_seen_ms: now_ms,
            bytes: 0,
        });
        if entry.parts.contains_key(&pno) {
            return Reassembly::Duplicate;
        }
        let size = packet.as_str().len();
        if entry.bytes + size > self.max_bytes {
            self.pending.remove(&key);
            return Reassembly::Refused("sub-packet group too large");
        }
        entry.bytes += size;
        entry.parts.insert(pno, OwnedPacket::from_packet(packet));
        let have = u16::try_from(entry.parts.len()).unwrap_or(u16::MAX);
        if have < pnum {
            return Reassembly::Pending { have, pnum };
        }
        let Some(done) = self.pending.remove(&key) else {
            return Reassembly::Refused("sub-packet group vanished");
        };
        Reassembly::Complete(merge(done.parts.into_values().collect()))
    }

    /// Drops open messages first seen more than `max_age_ms` before `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64, max_age_ms: u64) -> usize {
        let before = self.pending.len();
        self.pending.retain(|_, p| now_ms.saturating_sub(p.first_seen_ms) <= max_age_ms);
        before - self.pending.len()
    }
}

/// Joins parts (in PNO order) into one message.
fn merge(parts: Vec<OwnedPacket>) -> OwnedPacket {
    let mut whole = parts[0].clone();
    whole.remove_field("PNUM");
    whole.remove_field("PNO");
    if let Some(flag) = whole.field("Flag").and_then(|f| f.parse::<u8>().ok()) {
        whole.set_field("Flag", Flag(flag).with_split(false).0.to_string());
    }
    let leading = |p: &OwnedPacket| p.cp.first().filter(|g| g.len() == 1 && g[0].key.trim() == "DataTime").cloned();
    let head = leading(&parts[0]);
    let item_aligned = head.is_some() && parts.iter().all(|p| leading(p) == head);
    if item_aligned {
        for p in &parts[1..] {
            whole.cp.extend(p.cp.iter().skip(1).cloned());
        }
        return whole;
    }
    // Cut at arbitrary offsets: join the raw CP texts and read them again.
    let mut text = String::new();
    for p in &parts {
        crate::encode::write_groups(&p.cp, &mut text);
    }
    whole.cp = crate::cp::Cp::new(&text, 0)
        .groups()
        .map(|g| {
            g.pairs()
                .map(|p| OwnedPair { key: p.raw_key().to_string(), value: p.raw_value().map(ToString::to_string) })
                .collect()
        })
        .collect();
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::CrcVariant;
    use crate::packet::Version;

    fn hourly(items: usize) -> OwnedPacket {
        let mut p = OwnedPacket::new(
            Some("20160801085857223"),
            "32",
            2061,
            "123456",
            "010000A8900016F000169DC0",
            Some(Flag::new(Version::V2017, false, true)),
        );
        p.push_group([("DataTime", "20160801080000")]);
        for i in 0..items {
            let code = alloc::format!("w{:05}", 1000 + i);
            p.push_group([
                (alloc::format!("{code}-Cou"), "63.0".to_string()),
                (alloc::format!("{code}-Min"), "16.4".to_string()),
                (alloc::format!("{code}-Avg"), "17.5".to_string()),
                (alloc::format!("{code}-Max"), "20.1".to_string()),
                (alloc::format!("{code}-Flag"), "N".to_string()),
            ]);
        }
        p
    }

    fn now() -> DateTime {
        DateTime::parse("20160801085857534").unwrap()
    }

    #[test]
    fn small_messages_are_not_split() {
        let p = hourly(3);
        assert_eq!(split(&p, 1024, &mut QnGenerator::new(), now()).unwrap(), alloc::vec![p]);
    }

    #[test]
    fn long_messages_split_at_items_and_reassemble() {
        let p = hourly(40);
        let parts = split(&p, 1024, &mut QnGenerator::new(), now()).unwrap();
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut qns = alloc::collections::BTreeSet::new();
        let mut r = Reassembler::default();
        let mut result = None;
        for (i, part) in parts.iter().enumerate() {
            let frame = part.to_frame(CrcVariant::Hj212).unwrap();
            assert!(frame.len() <= 1024 + 12);
            let data = part.data_segment();
            let parsed = Packet::parse(data.as_bytes()).unwrap();
            assert!(parsed.cp().as_str().len() <= MAX_CP_LEN);
            assert_eq!(parsed.flag(), Some(Flag(7)));
            assert_eq!(parsed.pno(), Some(u16::try_from(i + 1).unwrap()));
            assert_eq!(parsed.cp().get("DataTime"), Some("20160801080000"));
            assert!(qns.insert(parsed.qn().unwrap().to_string()), "QNs are unique");
            match r.push(&parsed, 0) {
                Reassembly::Complete(whole) => result = Some(whole),
                Reassembly::Pending { have, .. } => assert_eq!(usize::from(have), i + 1),
                other => panic!("{other:?}"),
            }
        }
        let whole = result.unwrap();
        assert_eq!(whole.cp, p.cp);
        assert_eq!(whole.field("Flag"), Some("5"));
        assert_eq!(r.open(), 0);
    }

    #[test]
    fn an_item_longer_than_a_packet_is_split_between_pairs() {
        let mut p = hourly(0);
        let big: Vec<(String, String)> =
            (0..120).map(|i| (alloc::format!("a{i:05}-Rtd"), "1.25".to_string())).collect();
        p.push_group(big);
        let parts = split(&p, 1024, &mut QnGenerator::new(), now()).unwrap();
        assert!(parts.len() >= 2);
        let total: usize = parts.iter().map(|q| q.cp.iter().skip(1).map(Vec::len).sum::<usize>()).sum();
        assert_eq!(total, 120);
    }

    #[test]
    fn parts_cut_mid_item_are_joined_as_text() {
        let mut r = Reassembler::default();
        let a = "QN=1;ST=32;CN=2061;PW=1;MN=M;Flag=6;PNUM=2;PNO=1;CP=&&DataTime=20160801080000;w01018-Avg=40.1,w010&&";
        let b = "QN=2;ST=32;CN=2061;PW=1;MN=M;Flag=6;PNUM=2;PNO=2;CP=&&18-Flag=N&&";
        assert_eq!(r.push(&Packet::parse(a.as_bytes()).unwrap(), 0), Reassembly::Pending { have: 1, pnum: 2 });
        let Reassembly::Complete(whole) = r.push(&Packet::parse(b.as_bytes()).unwrap(), 1) else { panic!() };
        assert_eq!(whole.cp_get("w01018-Flag"), Some("N"));
        assert_eq!(
            whole.data_segment(),
            "QN=1;ST=32;CN=2061;PW=1;MN=M;Flag=4;CP=&&DataTime=20160801080000;w01018-Avg=40.1,w01018-Flag=N&&"
        );
    }

    #[test]
    fn duplicates_out_of_range_and_expiry() {
        let mut r = Reassembler::new(1, 10_000);
        let a = Packet::parse(b"QN=1;ST=32;CN=2061;MN=M;Flag=6;PNUM=2;PNO=1;CP=&&DataTime=1;a=1&&").unwrap();
        assert!(matches!(r.push(&a, 0), Reassembly::Pending { .. }));
        assert_eq!(r.push(&a, 0), Reassembly::Duplicate);
        let bad = Packet::parse(b"QN=1;ST=32;CN=2061;MN=M;Flag=6;PNUM=2;PNO=3;CP=&&&&").unwrap();
        assert_eq!(r.push(&bad, 0), Reassembly::Refused("PNO out of range"));
        let other = Packet::parse(b"QN=1;ST=32;CN=2061;MN=X;Flag=6;PNUM=2;PNO=1;CP=&&DataTime=1;a=1&&").unwrap();
        assert_eq!(r.push(&other, 0), Reassembly::Refused("too many open sub-packet groups"));
        assert_eq!(r.expire(60_001, 60_000), 1);
        assert_eq!(r.open(), 0);
    }
}
