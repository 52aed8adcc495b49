//! The data segment: header fields and `CP`, parsed without copying.
//!
//! HJ 212-2017 §6.3.2 (Table 3) lists the header fields `QN;ST;CN;PW;MN;Flag;[PNUM;PNO;]CP`.
//! Real senders put them in other orders (2005 puts `PNUM;PNO` after `QN`), leave `QN` and `Flag`
//! out, and add fields of their own (spec digest §2, §11), so the parser accepts any order, keeps
//! unknown fields, and requires only `ST`, `CN` and `CP`. The header text is kept as received, so
//! a packet written back is byte-identical.
//!
//! Invariant: parsing never panics and never allocates.

use crate::cp::Cp;
use crate::error::{Error, ErrorKind};
use crate::frame::Deviations;
use crate::scan::HeaderStops;

/// The protocol version carried in the high six bits of `Flag` (HJ 212-2017 Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// HJ/T 212-2005 (version bits 0, or no `Flag` at all).
    V2005,
    /// HJ 212-2017 (version bits 1).
    V2017,
    /// HJ 212-2025 (version bits 2).
    V2025,
    /// A version number this crate does not know.
    Other(u8),
}

impl Version {
    /// The version from the six version bits.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits {
            0 => Self::V2005,
            1 => Self::V2017,
            2 => Self::V2025,
            n => Self::Other(n),
        }
    }

    /// The six version bits.
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::V2005 => 0,
            Self::V2017 => 1,
            Self::V2025 => 2,
            Self::Other(n) => n,
        }
    }

    /// The year the version is known by, such as `2017`, or `None` for an unknown version.
    #[must_use]
    pub const fn year(self) -> Option<u16> {
        match self {
            Self::V2005 => Some(2005),
            Self::V2017 => Some(2017),
            Self::V2025 => Some(2025),
            Self::Other(_) => None,
        }
    }
}

/// The `Flag` field: `V5..V0 D A` (HJ 212-2017 Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flag(pub u8);

impl Flag {
    /// Bit 0: the sender wants an answer.
    pub const ACK: u8 = 0b01;
    /// Bit 1: the packet carries `PNUM` and `PNO`.
    pub const SPLIT: u8 = 0b10;

    /// Builds a flag from its parts.
    #[must_use]
    pub const fn new(version: Version, split: bool, ack: bool) -> Self {
        Self((version.bits() << 2) | if split { Self::SPLIT } else { 0 } | if ack { Self::ACK } else { 0 })
    }

    /// True when the sender wants an answer (A bit).
    #[must_use]
    pub const fn wants_ack(self) -> bool {
        self.0 & Self::ACK != 0
    }

    /// True when the packet is one of several (D bit).
    #[must_use]
    pub const fn is_split(self) -> bool {
        self.0 & Self::SPLIT != 0
    }

    /// The protocol version.
    #[must_use]
    pub const fn version(self) -> Version {
        Version::from_bits(self.0 >> 2)
    }

    /// The same flag with the A bit set or cleared.
    #[must_use]
    pub const fn with_ack(self, ack: bool) -> Self {
        Self(if ack { self.0 | Self::ACK } else { self.0 & !Self::ACK })
    }

    /// The same flag with the D bit set or cleared.
    #[must_use]
    pub const fn with_split(self, split: bool) -> Self {
        Self(if split { self.0 | Self::SPLIT } else { self.0 & !Self::SPLIT })
    }
}

/// A parsed data segment, borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    data: &'a str,
    header_end: usize,
    cp: Cp<'a>,
    deviations: Deviations,
    qn: Option<&'a str>,
    st: Option<&'a str>,
    cn: Option<&'a str>,
    pw: Option<&'a str>,
    mn: Option<&'a str>,
    flag: Option<Flag>,
    pnum: Option<u16>,
    pno: Option<u16>,
    rf: bool,
    first_comma: usize,
}

impl<'a> Packet<'a> {
    /// Parses a data segment (the bytes between the length field and the CRC).
    ///
    /// Error offsets count from the start of the data segment; add 6 for the frame.
    ///
    /// # Errors
    /// Invalid UTF-8, no `CP=&&`, bytes after `CP`'s closing `&&`, a header field without `=`,
    /// a missing `ST` or `CN`, or a `Flag`, `PNUM` or `PNO` that is not a number.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        // `simdutf8` says only whether the bytes are valid; `core` says where they stop being so.
        let data = match simdutf8::basic::from_utf8(data) {
            Ok(text) => text,
            Err(_) => core::str::from_utf8(data).map_err(|e| Error::new(ErrorKind::InvalidUtf8, e.valid_up_to()))?,
        };
        let mut packet = Self {
            data,
            header_end: 0,
            cp: Cp::default(),
            deviations: Deviations::NONE,
            qn: None,
            st: None,
            cn: None,
            pw: None,
            mn: None,
            flag: None,
            pnum: None,
            pno: None,
            rf: false,
            first_comma: 0,
        };
        let header_end = packet.parse_header()?;
        packet.header_end = header_end;
        let area_start = header_end + 5;
        let rest = &data.as_bytes()[area_start..];
        let area_end = if rest.ends_with(b"&&") {
            data.len() - 2
        } else {
            match memchr::memmem::rfind(rest, b"&&") {
                Some(i) => return Err(Error::new(ErrorKind::TrailingData, area_start + i + 2)),
                None => {
                    packet.deviations.insert(Deviations::UNTERMINATED_CP);
                    data.len()
                }
            }
        };
        packet.cp = Cp::new(&data[area_start..area_end], area_start);
        Ok(packet)
    }

    /// Walks the header fields once, up to `CP=&&`; returns the offset of `CP`.
    fn parse_header(&mut self) -> Result<usize, Error> {
        let data = self.data;
        let b = data.as_bytes();
        let len = b.len();
        let mut pos = 0;
        let stops = HeaderStops::new(b);
        let cp_at = loop {
            if pos >= len {
                return Err(Error::new(ErrorKind::MissingCp, 0));
            }
            // Fast path: a field that starts with `CP=&&`, or with a name this parser reads and
            // `=` (no spaces), and has no `&`: the rest goes the general way below.
            if pos + 8 <= len {
                let word = crate::scan::word_from(b, pos);
                if word & 0xFF_FFFF_FFFF == u64::from_le_bytes(*b"CP=&&\0\0\0") {
                    break pos;
                }
                if let Some((field, name_len)) = Known::from_word(word) {
                    let at = pos + name_len;
                    let end = stops.find(b, at);
                    if end == len || b[end] != b'&' {
                        self.known_field(field, at, end)?;
                        if end < len && b[end] == b',' && !self.deviations.contains(Deviations::HEADER_COMMA) {
                            self.deviations.insert(Deviations::HEADER_COMMA);
                            self.first_comma = end;
                        }
                        pos = end + 1;
                        continue;
                    }
                }
            }
            let mut start = pos;
            while start < len && b[start] == b' ' {
                start += 1;
            }
            if b[start..].starts_with(b"CP=&&") {
                break start;
            }
            let mut end = stops.find(b, pos);
            let amp = end < len && b[end] == b'&';
            if amp {
                end = crate::scan::find2(b, end, b';', b',');
            }
            // `&` never belongs to a header field: `CP=&&` without a `;` before it (C.19).
            let mut field_end = end;
            let mut misplaced = None;
            if amp {
                if let Some(i) = memchr::memmem::find(&b[pos..end], b"CP=&&") {
                    field_end = pos + i;
                    misplaced = Some(pos + i);
                }
            }
            self.header_field(pos, field_end)?;
            if let Some(at) = misplaced {
                self.deviations.insert(Deviations::MISPLACED_CP);
                break at;
            }
            if end < len && b[end] == b',' && !self.deviations.contains(Deviations::HEADER_COMMA) {
                self.deviations.insert(Deviations::HEADER_COMMA);
                self.first_comma = end;
            }
            pos = end + 1;
        };
        if self.st.is_none() {
            return Err(Error::new(ErrorKind::MissingField("ST"), cp_at));
        }
        let Some(cn) = self.cn else {
            return Err(Error::new(ErrorKind::MissingField("CN"), cp_at));
        };
        if cn.is_empty() || !cn.bytes().all(|b| b.is_ascii_digit()) {
            let at = memchr::memmem::find(&b[..cp_at], b"CN=").map_or(0, |i| i + 3);
            return Err(Error::new(ErrorKind::InvalidField("CN"), at));
        }
        Ok(cp_at)
    }

    /// Stores the value `data[at..end]` (spaces trimmed) of a field this parser reads.
    #[inline(always)]
    fn known_field(&mut self, field: Known, at: usize, end: usize) -> Result<(), Error> {
        let value = trim_spaces(&self.data[at..end]);
        match field {
            Known::Qn => set_once(&mut self.qn, value),
            Known::St => set_once(&mut self.st, value),
            Known::Cn => set_once(&mut self.cn, value),
            Known::Pw => set_once(&mut self.pw, value),
            Known::Mn => set_once(&mut self.mn, value),
            Known::Flag => {
                let v = parse_num(value, at, "Flag")?;
                let v = u8::try_from(v).map_err(|_| Error::new(ErrorKind::InvalidField("Flag"), at))?;
                self.flag.get_or_insert(Flag(v));
            }
            Known::Pnum => {
                let v = parse_num(value, at, "PNUM")?;
                self.pnum.get_or_insert(v);
            }
            Known::Pno => {
                let v = parse_num(value, at, "PNO")?;
                self.pno.get_or_insert(v);
            }
            // HJ 212-2025 Table 3 (provisional): `RF=1` marks back-filled data; no `RF=0` exists.
            Known::Rf => self.rf = value == "1",
        }
        Ok(())
    }

    /// Reads the header field `data[at..end]`.
    fn header_field(&mut self, at: usize, end: usize) -> Result<(), Error> {
        let field = &self.data[at..end];
        let Some(eq) = field.bytes().position(|b| b == b'=') else {
            if field.bytes().all(|b| b == b' ') {
                return Ok(());
            }
            return Err(Error::new(ErrorKind::MalformedField, at));
        };
        match Known::from_name(trim_spaces(&field[..eq]).as_bytes()) {
            Some(known) => self.known_field(known, at + eq + 1, end),
            None => Ok(()),
        }
    }

    /// The whole data segment as text.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.data
    }

    /// The header text before `CP=`, as received (normally ending in `;`).
    #[must_use]
    pub fn header_str(&self) -> &'a str {
        &self.data[..self.header_end]
    }

    /// Offset in the data segment of the first `,` used as a header separator (see
    /// [`Deviations::HEADER_COMMA`]); 0 when there is none.
    #[must_use]
    pub const fn header_comma_offset(&self) -> usize {
        self.first_comma
    }

    /// The header fields in the order received, as `(name, value)` with spaces trimmed.
    pub fn header_fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.header_str()
            .split([';', ','])
            .filter(|f| !f.trim().is_empty())
            .filter_map(|f| f.split_once('='))
            .map(|(n, v)| (n.trim(), v.trim()))
    }

    /// The `CP` data area.
    #[must_use]
    pub const fn cp(&self) -> Cp<'a> {
        self.cp
    }

    /// Departures from the standard found while parsing.
    #[must_use]
    pub const fn deviations(&self) -> Deviations {
        self.deviations
    }

    /// `QN`, the request number (a millisecond timestamp in 2017).
    #[must_use]
    pub const fn qn(&self) -> Option<&'a str> {
        self.qn
    }

    /// The header `QN`, or the `QN` inside `CP` as 2005-era answers carry it (spec digest §11.4).
    #[must_use]
    pub fn reference_qn(&self) -> Option<&'a str> {
        self.qn.or_else(|| self.cp.get("QN"))
    }

    /// `ST`, the system code.
    #[must_use]
    pub fn st(&self) -> &'a str {
        self.st.unwrap_or_default()
    }

    /// `CN`, the command code, as text.
    #[must_use]
    pub fn cn_str(&self) -> &'a str {
        self.cn.unwrap_or_default()
    }

    /// `CN` as a number (the parser checked that it is all digits).
    #[must_use]
    pub fn cn(&self) -> u16 {
        self.cn_str().bytes().fold(0u16, |acc, d| acc.wrapping_mul(10).wrapping_add(u16::from(d - b'0')))
    }

    /// `PW`, the access password.
    #[must_use]
    pub const fn pw(&self) -> Option<&'a str> {
        self.pw
    }

    /// `MN`, the device identifier.
    #[must_use]
    pub const fn mn(&self) -> Option<&'a str> {
        self.mn
    }

    /// `Flag`, when present.
    #[must_use]
    pub const fn flag(&self) -> Option<Flag> {
        self.flag
    }

    /// `PNUM`, the number of sub-packets.
    #[must_use]
    pub const fn pnum(&self) -> Option<u16> {
        self.pnum
    }

    /// `PNO`, this sub-packet's number (from 1).
    #[must_use]
    pub const fn pno(&self) -> Option<u16> {
        self.pno
    }

    /// The protocol version: from `Flag`, else 2005 (no `Flag` is the 2005 style).
    #[must_use]
    pub fn version(&self) -> Version {
        self.flag.map_or(Version::V2005, Flag::version)
    }

    /// True when the sender asks for an answer.
    #[must_use]
    pub fn wants_ack(&self) -> bool {
        self.flag.is_some_and(Flag::wants_ack)
    }

    /// True for an HJ 212-2025 back-filled packet (`RF=1`, provisional).
    #[must_use]
    pub const fn is_backfill(&self) -> bool {
        self.rf
    }

    /// True when the packet is one of several (both `PNUM` and `PNO` present).
    #[must_use]
    pub const fn is_sub_packet(&self) -> bool {
        self.pnum.is_some() && self.pno.is_some()
    }
}

/// The header fields the parser stores.
#[derive(Clone, Copy)]
enum Known {
    Qn,
    St,
    Cn,
    Pw,
    Mn,
    Flag,
    Pnum,
    Pno,
    Rf,
}

impl Known {
    /// The field called `name`.
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"QN" => Self::Qn,
            b"ST" => Self::St,
            b"CN" => Self::Cn,
            b"PW" => Self::Pw,
            b"MN" => Self::Mn,
            b"Flag" => Self::Flag,
            b"PNUM" => Self::Pnum,
            b"PNO" => Self::Pno,
            b"RF" => Self::Rf,
            _ => return None,
        })
    }

    /// The field whose `name=` starts the little-endian `word` (eight bytes of the header), and
    /// the length of `name=`: the header walk's fast path, without a search for the `=`.
    #[inline(always)]
    fn from_word(word: u64) -> Option<(Self, usize)> {
        const fn tag(name: &[u8]) -> u64 {
            let mut t = 0u64;
            let mut i = 0;
            while i < name.len() {
                t |= (name[i] as u64) << (8 * i);
                i += 1;
            }
            t
        }
        const QN: u64 = tag(b"QN=");
        const ST: u64 = tag(b"ST=");
        const CN: u64 = tag(b"CN=");
        const PW: u64 = tag(b"PW=");
        const MN: u64 = tag(b"MN=");
        const RF: u64 = tag(b"RF=");
        const PNO: u64 = tag(b"PNO=");
        const FLAG: u64 = tag(b"Flag=");
        const PNUM: u64 = tag(b"PNUM=");
        let field = match word & 0xFF_FFFF {
            QN => (Self::Qn, 3),
            ST => (Self::St, 3),
            CN => (Self::Cn, 3),
            PW => (Self::Pw, 3),
            MN => (Self::Mn, 3),
            RF => (Self::Rf, 3),
            _ => match word & 0xFF_FFFF_FFFF {
                FLAG => (Self::Flag, 5),
                PNUM => (Self::Pnum, 5),
                _ if word & 0xFFFF_FFFF == PNO => (Self::Pno, 4),
                _ => return None,
            },
        };
        Some(field)
    }
}

fn set_once<'a>(slot: &mut Option<&'a str>, value: &'a str) {
    slot.get_or_insert(value);
}

fn parse_num(value: &str, at: usize, name: &'static str) -> Result<u16, Error> {
    let invalid = || Error::new(ErrorKind::InvalidField(name), at);
    if value.is_empty() || value.len() > 5 {
        return Err(invalid());
    }
    let mut n = 0u32;
    for d in value.bytes() {
        if !d.is_ascii_digit() {
            return Err(invalid());
        }
        n = n * 10 + u32::from(d - b'0');
    }
    u16::try_from(n).map_err(|_| invalid())
}

/// Trims ASCII spaces, as the standard's own examples need (`CP=&& PolId`, `i12003-Info =0`).
#[inline]
fn trim_spaces(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if f != b' ' && l != b' ' => s,
        _ => s.trim_matches(' '),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &[u8] =
        b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";

    #[test]
    fn parses_the_appendix_a_example() {
        let p = Packet::parse(SEG).unwrap();
        assert_eq!(p.qn(), Some("20160801085857223"));
        assert_eq!(p.st(), "32");
        assert_eq!(p.cn(), 1062);
        assert_eq!(p.pw(), Some("100000"));
        assert_eq!(p.mn(), Some("010000A8900016F000169DC0"));
        assert_eq!(p.flag(), Some(Flag(5)));
        assert_eq!(p.version(), Version::V2017);
        assert!(p.wants_ack());
        assert_eq!(p.cp().get("RtdInterval"), Some("30"));
        assert_eq!(p.cp().offset(), SEG.len() - 2 - 14);
        assert!(p.deviations().is_empty());
    }

    #[test]
    fn header_in_2005_order_with_missing_qn_and_flag() {
        let p =
            Packet::parse(b"ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817;B01-Rtd=36.91&&")
                .unwrap();
        assert_eq!(p.qn(), None);
        assert_eq!(p.flag(), None);
        assert_eq!(p.version(), Version::V2005);
        let p = Packet::parse(b"QN=1;ST=31;CN=2051;PW=1;MN=1;PNO=0002;PNUM=0002;CP=&&&&").unwrap();
        assert_eq!((p.pnum(), p.pno()), (Some(2), Some(2)));
        assert!(p.is_sub_packet());
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = Packet::parse(b"QN=1;ST=32;CN=1062;Flag=x;CP=&&&&").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidField("Flag"), 24));
        let e = Packet::parse(b"QN=1;CN=1062;CP=&&&&").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingField("ST"));
        let e = Packet::parse(b"QN=1;ST=32;CN=1062").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingCp);
        let e = Packet::parse(b"ST=32;CN=1062;CP=&&a=1&&xx").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::TrailingData, 24));
        let e = Packet::parse(b"ST=32;CN=10a2;CP=&&&&").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidField("CN"), 9));
        let e = Packet::parse(b"ST=32;CN=1062;junk;CP=&&&&").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::MalformedField, 14));
        let e = Packet::parse(b"ST=32;CN=1062;CP=&&\xff&&").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidUtf8, 19));
    }

    #[test]
    fn deviations_are_reported() {
        let p = Packet::parse(b"ST=32;CN=2051;Flag=5CP=&&a=1&&").unwrap();
        assert!(p.deviations().contains(Deviations::MISPLACED_CP));
        let p = Packet::parse(b"ST=39;CN=2051;CP=&&DataTime=1;a34001-Avg=92;Flag=N").unwrap();
        assert!(p.deviations().contains(Deviations::UNTERMINATED_CP));
        assert_eq!(p.cp().get("a34001-Avg"), Some("92"));
    }

    #[test]
    fn fast_and_general_header_paths_agree() {
        // Names at the start of a field take the fast path; spaces send them the general way.
        let fast = Packet::parse(b"QN=1;ST=32;CN=2011;PW=9;MN=A;Flag=5;PNUM=2;PNO=1;RF=1;XY=0;CP=&&&&").unwrap();
        let general =
            Packet::parse(b" QN =1; ST= 32 ;CN =2011 ;PW = 9;MN= A ; Flag = 5 ; PNUM =2; PNO= 1; RF =1;XY =0; CP=&&&&")
                .unwrap();
        for p in [fast, general] {
            let fields = (p.qn(), p.st(), p.cn(), p.pw(), p.mn(), p.flag(), p.pnum(), p.pno(), p.is_backfill());
            assert_eq!(fields, (Some("1"), "32", 2011, Some("9"), Some("A"), Some(Flag(5)), Some(2), Some(1), true));
        }
        let e = Packet::parse(b"QN=1;ST=32;CN=1062;PNUM=99999;CP=&&&&").unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidField("PNUM"), 24));
    }

    #[test]
    fn the_2025_backfill_marker() {
        let p = Packet::parse(b"QN=1;ST=31;CN=2061;PW=1;MN=1;Flag=9;RF=1;CP=&&&&").unwrap();
        assert!(p.is_backfill());
        assert_eq!(p.version(), Version::V2025);
        assert!(!Packet::parse(b"QN=1;ST=31;CN=2061;Flag=9;CP=&&&&").unwrap().is_backfill());
    }

    #[test]
    fn reference_qn_falls_back_to_cp() {
        let p = Packet::parse(b"ST=91;CN=9013;PW=1;MN=1;CP=&&QN=20040516010101001&&").unwrap();
        assert_eq!(p.reference_qn(), Some("20040516010101001"));
    }
}
