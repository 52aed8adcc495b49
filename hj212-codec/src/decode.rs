//! Checking a cut frame: CRC, data segment, and the verdict under a strict or lenient policy.
//!
//! A strict receiver follows HJ 212-2017 to the letter: the length field must count the data
//! segment's bytes, the data segment must be at most 1024 bytes, the CRC must be the Appendix A
//! algorithm (unless the caller selected another variant for this peer) and the frame must end
//! in CR LF. A lenient receiver accepts every deviation in [`Deviations`] and reports it; it still
//! refuses a CRC that matches no accepted variant and a data segment that cannot be parsed.

use crate::crc::{CrcPolicy, CrcVariant};
use crate::error::{Error, ErrorKind};
use crate::frame::{Deviations, RawFrame};
use crate::packet::Packet;

/// How frames are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// Refuse every deviation from the standard.
    pub strict: bool,
    /// Which checksums are accepted.
    pub crc: CrcPolicy,
}

impl DecodeOptions {
    /// Strict HJ 212-2017: HJ 212 CRC only, no deviations.
    pub const STRICT: Self = Self { strict: true, crc: CrcPolicy::Only(CrcVariant::Hj212) };
    /// Lenient: any known CRC variant, every readable deviation accepted and reported.
    pub const LENIENT: Self = Self { strict: false, crc: CrcPolicy::Auto };
}

/// A frame with its CRC checked and its data segment parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The frame as cut from the stream.
    pub frame: RawFrame<'a>,
    /// The CRC variant that matched, or the mismatch.
    pub crc: Result<CrcVariant, Error>,
    /// The parsed data segment, or why it could not be parsed (offsets from the frame start).
    pub packet: Result<Packet<'a>, Error>,
    options: DecodeOptions,
}

impl<'a> Decoded<'a> {
    /// Checks and parses `frame`.
    #[must_use]
    pub fn new(frame: RawFrame<'a>, options: DecodeOptions) -> Self {
        let crc = frame.check_crc(options.crc);
        let packet = Packet::parse(frame.data()).map_err(|e| e.shifted(6));
        Self { frame, crc, packet, options }
    }

    /// Every deviation found in the frame and its data segment.
    #[must_use]
    pub fn deviations(&self) -> Deviations {
        let mut d = self.frame.deviations();
        if let Ok(p) = &self.packet {
            d.insert(p.deviations());
        }
        if matches!(self.crc, Ok(v) if v != CrcVariant::Hj212) {
            d.insert(Deviations::NON_STANDARD_CRC);
        }
        d
    }

    /// The first reason to refuse the frame under the options it was decoded with.
    ///
    /// # Errors
    /// The first problem by position in the frame.
    pub fn verdict(&self) -> Result<Packet<'a>, Error> {
        let f = &self.frame;
        let d = self.deviations();
        if self.options.strict {
            if d.contains(Deviations::LENGTH_MISMATCH) {
                let kind = ErrorKind::LengthMismatch { declared: f.declared_len(), actual: f.data().len() };
                return Err(Error::new(kind, 2));
            }
            if d.contains(Deviations::OVER_1024) {
                return Err(Error::new(ErrorKind::DataTooLong { len: f.data().len() }, 6));
            }
        }
        let packet = self.packet?;
        if self.options.strict {
            if d.contains(Deviations::MISPLACED_CP) {
                let at = 6 + packet.header_str().len();
                return Err(Error::new(ErrorKind::MisplacedCp, at));
            }
            if d.contains(Deviations::HEADER_COMMA) {
                return Err(Error::new(ErrorKind::MalformedField, 6 + packet.header_comma_offset()));
            }
            if d.contains(Deviations::UNTERMINATED_CP) {
                return Err(Error::new(ErrorKind::UnterminatedCp, f.crc_offset()));
            }
        }
        let variant = self.crc?;
        if self.options.strict {
            let chosen = matches!(self.options.crc, CrcPolicy::Only(v) if v == variant);
            if variant != CrcVariant::Hj212 && !chosen {
                return Err(Error::new(ErrorKind::NonStandardCrc(variant), f.crc_offset()));
            }
            if d.contains(Deviations::BARE_LF) || d.contains(Deviations::DOUBLE_CR) {
                return Err(Error::new(ErrorKind::BadTerminator, f.crc_offset() + 4));
            }
        }
        Ok(packet)
    }

    /// True when [`Decoded::verdict`] accepts the frame.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.verdict().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;
    use crate::frame::{Split, Splitter};

    fn decode(wire: &[u8], options: DecodeOptions) -> Decoded<'_> {
        match Splitter::default().split(wire, true) {
            Split::Frame(f) => Decoded::new(f, options),
            other => panic!("no frame: {other:?}"),
        }
    }

    #[test]
    fn modbus_crc_is_refused_when_strict_and_reported_when_lenient() {
        let wire =
            b"##0086QN=20170516010101001;ST=22;CN=1072;PW=123456;MN=ABCDEFG1234567;Flag=3;CP=&&PW=654321&&E476\r\n";
        let strict = decode(wire, DecodeOptions::STRICT);
        let e = strict.verdict().unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::CrcMismatch { computed: 0xE681, received: 0xE476 }, 92));
        let lenient = decode(wire, DecodeOptions::LENIENT);
        assert!(lenient.is_valid());
        assert!(lenient.deviations().contains(Deviations::NON_STANDARD_CRC));
        let chosen = DecodeOptions { strict: true, crc: CrcPolicy::Only(CrcVariant::ModbusHighFirst) };
        assert!(decode(wire, chosen).is_valid());
        let auto_strict = DecodeOptions { strict: true, crc: CrcPolicy::Auto };
        assert_eq!(
            decode(wire, auto_strict).verdict().unwrap_err().kind(),
            ErrorKind::NonStandardCrc(CrcVariant::ModbusHighFirst)
        );
    }

    #[test]
    fn length_mismatch_is_refused_when_strict() {
        let wire = b"##0121QN=20250131202809340;ST=39;CN=2051;PW=123456;MN=0507A010003242;Flag=4;CP=&&DataTime=20250131202809;a34001-Avg=92;Flag=N65C0\r\n";
        let e = decode(wire, DecodeOptions::STRICT).verdict().unwrap_err();
        assert_eq!(e.to_string(), "length mismatch at byte 2: frame says 121, data segment has 119 bytes");
        let lenient = decode(wire, DecodeOptions::LENIENT);
        assert!(lenient.is_valid());
        let names: alloc::vec::Vec<_> = lenient.deviations().names().collect();
        assert_eq!(names, ["length_mismatch", "unterminated_cp"]);
    }
}
