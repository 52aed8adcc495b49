//! Writing packets: an owned packet model and the frame encoder.
//!
//! [`OwnedPacket`] keeps header fields and `CP` pairs in order and exactly as written, so a parsed
//! packet written back gives the same bytes. Packets we build ourselves use the HJ 212-2017 field
//! order `QN;ST;CN;PW;MN;Flag;[PNUM;PNO;]CP` (Table 3, Figure 4) and an upper-case CRC.
//!
//! Invariant: the encoder never emits a data segment over [`MAX_DATA_LEN_2017`] bytes unless the
//! caller asks for the raw form explicitly ([`OwnedPacket::to_frame_unchecked`], used only to
//! re-emit what a peer sent).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::crc::{self, CrcVariant};
use crate::error::{Error, ErrorKind};
use crate::frame::{MAX_DATA_LEN_2017, MAX_DATA_LEN_FIELD};
use crate::packet::{Flag, Packet};

/// One `key=value` pair of `CP`; `value` is `None` for a token without `=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedPair {
    /// The key as written.
    pub key: String,
    /// The value as written.
    pub value: Option<String>,
}

impl OwnedPair {
    /// A `key=value` pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: Some(value.into()) }
    }
}

/// A packet that owns its text, for building, storing and re-encoding.
///
/// Two packets are equal when they write the same data segment.
#[derive(Debug, Clone, Default)]
pub struct OwnedPacket {
    /// Header fields before `CP`, in order, as written (blank fields left out).
    pub header: Vec<(String, String)>,
    /// `CP` groups (separated by `;`) of pairs (separated by `,`), in order.
    pub cp: Vec<Vec<OwnedPair>>,
    /// True when the received `CP` had no closing `&&` (kept so the bytes round-trip).
    pub cp_unterminated: bool,
    /// The header text as received, written back verbatim while [`OwnedPacket::header`] still
    /// reads the same from it (blank fields, spaces and `,` separators survive).
    raw_header: Option<String>,
}

impl PartialEq for OwnedPacket {
    fn eq(&self, other: &Self) -> bool {
        self.data_segment() == other.data_segment()
    }
}

impl Eq for OwnedPacket {}

impl core::hash::Hash for OwnedPacket {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.data_segment().hash(state);
    }
}

/// The fields of a header text: split at `;` and `,`, blank and `=`-less segments left out.
fn header_fields(raw: &str) -> Vec<(String, String)> {
    raw.split([';', ',']).filter_map(|f| f.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl OwnedPacket {
    /// Copies a parsed packet, keeping every byte of its data segment.
    #[must_use]
    pub fn from_packet(p: &Packet<'_>) -> Self {
        let header = header_fields(p.header_str());
        let cp = p
            .cp()
            .groups()
            .map(|g| {
                g.pairs()
                    .map(|pair| OwnedPair {
                        key: pair.raw_key().to_string(),
                        value: pair.raw_value().map(str::to_string),
                    })
                    .collect()
            })
            .collect();
        Self {
            header,
            cp,
            cp_unterminated: p.deviations().contains(crate::frame::Deviations::UNTERMINATED_CP),
            raw_header: Some(p.header_str().to_string()),
        }
    }

    /// A packet with the 2017 header `QN;ST;CN;PW;MN;Flag` (fields given as `None` are left out).
    #[must_use]
    pub fn new(qn: Option<&str>, st: &str, cn: u16, pw: &str, mn: &str, flag: Option<Flag>) -> Self {
        let mut header = Vec::with_capacity(6);
        if let Some(qn) = qn {
            header.push(("QN".into(), qn.into()));
        }
        header.push(("ST".into(), st.into()));
        header.push(("CN".into(), alloc::format!("{cn:04}")));
        header.push(("PW".into(), pw.into()));
        header.push(("MN".into(), mn.into()));
        if let Some(flag) = flag {
            header.push(("Flag".into(), flag.0.to_string()));
        }
        Self { header, cp: Vec::new(), cp_unterminated: false, raw_header: None }
    }

    /// The value of the header field `name` (names compared after trimming).
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.header.iter().find(|(k, _)| k.trim() == name).map(|(_, v)| v.trim())
    }

    /// Sets a header field, replacing it in place or appending it.
    pub fn set_field(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.header.iter_mut().find(|(k, _)| k.trim() == name) {
            Some(slot) => slot.1 = value,
            None => self.header.push((name.into(), value)),
        }
    }

    /// Removes a header field.
    pub fn remove_field(&mut self, name: &str) {
        self.header.retain(|(k, _)| k.trim() != name);
    }

    /// Sets `PNUM` and `PNO`, placed right before `CP` as in HJ 212-2017 Appendix C.49.
    pub fn set_sub_packet(&mut self, pnum: u16, pno: u16) {
        self.remove_field("PNUM");
        self.remove_field("PNO");
        // HJ 212-2025 places `RF` after `PNUM;PNO`, right before `CP`.
        let at = self.header.iter().position(|(k, _)| k.trim() == "RF").unwrap_or(self.header.len());
        self.header.insert(at, ("PNO".into(), pno.to_string()));
        self.header.insert(at, ("PNUM".into(), pnum.to_string()));
    }

    /// Marks the packet as HJ 212-2025 back-fill (`RF=1`, after `PNUM`/`PNO`, before `CP`).
    pub fn set_backfill(&mut self) {
        self.set_field("RF", "1");
    }

    /// Appends a `CP` group of `key=value` pairs.
    pub fn push_group<K: Into<String>, V: Into<String>>(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        self.cp.push(pairs.into_iter().map(|(k, v)| OwnedPair::new(k, v)).collect());
    }

    /// The value of the first `CP` pair whose trimmed key is `key`.
    #[must_use]
    pub fn cp_get(&self, key: &str) -> Option<&str> {
        self.cp.iter().flatten().find(|p| p.key.trim() == key).and_then(|p| p.value.as_deref()).map(str::trim)
    }

    /// Writes the `CP=&&…&&` part.
    pub fn write_cp(&self, out: &mut String) {
        out.push_str("CP=&&");
        write_groups(&self.cp, out);
        if !self.cp_unterminated {
            out.push_str("&&");
        }
    }

    /// The data segment: header fields, then `CP`.
    #[must_use]
    pub fn data_segment(&self) -> String {
        let mut out = String::with_capacity(128);
        if let Some(raw) = self.raw_header.as_deref().filter(|raw| header_fields(raw) == self.header) {
            out.push_str(raw);
            self.write_cp(&mut out);
            return out;
        }
        for (k, v) in &self.header {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push(';');
        }
        self.write_cp(&mut out);
        out
    }

    /// Encodes a whole frame with an upper-case CRC.
    ///
    /// # Errors
    /// [`ErrorKind::DataTooLong`] when the data segment is over 1024 bytes (split it first, see
    /// [`crate::subpacket`]).
    pub fn to_frame(&self, variant: CrcVariant) -> Result<Vec<u8>, Error> {
        let data = self.data_segment();
        if data.len() > MAX_DATA_LEN_2017 {
            return Err(Error::new(ErrorKind::DataTooLong { len: data.len() }, 6));
        }
        Ok(frame(data.as_bytes(), variant, false))
    }

    /// Encodes a frame of any length up to 9999 bytes, optionally with a lower-case CRC.
    ///
    /// This exists to re-emit exactly what a peer sent (for example in `hj212 encode`); our own
    /// messages go through [`OwnedPacket::to_frame`].
    ///
    /// # Errors
    /// [`ErrorKind::FrameTooLong`] when the data segment cannot be expressed in four digits.
    pub fn to_frame_unchecked(&self, variant: CrcVariant, lowercase: bool) -> Result<Vec<u8>, Error> {
        let data = self.data_segment();
        if data.len() > MAX_DATA_LEN_FIELD {
            return Err(Error::new(ErrorKind::FrameTooLong { declared: data.len(), max: MAX_DATA_LEN_FIELD }, 2));
        }
        Ok(frame(data.as_bytes(), variant, lowercase))
    }
}

/// Writes groups joined by `;` and pairs joined by `,`.
pub fn write_groups(groups: &[Vec<OwnedPair>], out: &mut String) {
    for (gi, group) in groups.iter().enumerate() {
        if gi > 0 {
            out.push(';');
        }
        for (pi, pair) in group.iter().enumerate() {
            if pi > 0 {
                out.push(',');
            }
            out.push_str(&pair.key);
            if let Some(v) = &pair.value {
                out.push('=');
                out.push_str(v);
            }
        }
    }
}

/// Frames a data segment: `##` + length + data + CRC + CR LF. The caller checks the length.
#[must_use]
pub fn frame(data: &[u8], variant: CrcVariant, lowercase: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(b"##");
    let len = data.len().min(MAX_DATA_LEN_FIELD);
    out.extend_from_slice(&[
        b'0' + (len / 1000) as u8,
        b'0' + (len / 100 % 10) as u8,
        b'0' + (len / 10 % 10) as u8,
        b'0' + (len % 10) as u8,
    ]);
    out.extend_from_slice(data);
    let mut hex = crc::to_hex(variant.compute(data));
    if lowercase {
        hex.make_ascii_lowercase();
    }
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Version;

    #[test]
    fn odd_headers_are_written_back_as_received() {
        for seg in [
            "ST=32;;CN=1062;CP=&&a=1&&",
            "ST=32; ;CN=1062;CP=&&a=1&&",
            "ST=32;CN=1062; CP=&&a=1&&",
            "QN=1,ST=32;CN=1062;CP=&&a=1;;b&&",
        ] {
            let p = Packet::parse(seg.as_bytes()).unwrap();
            let mut owned = OwnedPacket::from_packet(&p);
            assert_eq!(owned.data_segment(), seg);
            assert_eq!(owned.field("CN"), Some("1062"));
            // An edit falls back to the canonical form.
            owned.set_field("CN", "1061");
            assert!(owned.data_segment().contains(";CN=1061;"));
            assert!(!owned.data_segment().split("CP=").next().unwrap().contains(";;"));
        }
    }

    #[test]
    fn builds_the_appendix_a_example() {
        let mut p = OwnedPacket::new(
            Some("20160801085857223"),
            "32",
            1062,
            "100000",
            "010000A8900016F000169DC0",
            Some(Flag::new(Version::V2017, false, true)),
        );
        p.push_group([("RtdInterval", "30")]);
        assert_eq!(
            p.to_frame(CrcVariant::Hj212).unwrap(),
            b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
        );
    }

    #[test]
    fn sub_packet_fields_go_before_the_backfill_marker() {
        let mut p = OwnedPacket::new(Some("1"), "31", 2061, "1", "M", Some(Flag(9)));
        p.set_backfill();
        p.set_sub_packet(2, 1);
        assert_eq!(p.data_segment(), "QN=1;ST=31;CN=2061;PW=1;MN=M;Flag=9;PNUM=2;PNO=1;RF=1;CP=&&&&");
    }

    #[test]
    fn refuses_to_emit_over_1024_bytes() {
        let mut p = OwnedPacket::new(None, "32", 2011, "1", "1", None);
        p.push_group([("x", "y".repeat(1100))]);
        let len = p.data_segment().len();
        assert!(len > 1024);
        assert_eq!(p.to_frame(CrcVariant::Hj212).unwrap_err().kind(), ErrorKind::DataTooLong { len });
        assert!(p.to_frame_unchecked(CrcVariant::Hj212, false).is_ok());
    }
}
