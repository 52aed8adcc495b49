//! The platform's answers, built with the codec's `OwnedPacket`.
//!
//! This module is the one place that decides what the platform sends back, so it can be replaced
//! by the codec's platform-role exchange machine later without touching the connection driver.
//!
//! * 9014 (data answer) and 9013 (notification answer) echo the request's `QN`, `PW` and `MN`,
//!   with `ST=91` and `Flag=4` (HJ 212-2017 Appendix C: answers ask for no answer).
//! * A 2005-style peer that sent no header `QN` gets the 2005 layout instead:
//!   `ST=91;CN=9014;PW=…;MN=…;CP=&&QN=<qn if any>;CN=<cn>&&`.
//! * 1012 (set time) carries the platform's clock as `SystemTime`, in the sites' zone.
//!
//! Answers are encoded with the CRC variant the peer uses, so a device that only understands its
//! own (Modbus-style) CRC can read them.

use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::packet::{Flag, Packet};
use hj212_codec::time::DateTime;

/// `ST` of the system-interaction answers (HJ 212-2017 Table 5).
pub const ST_INTERACTION: &str = "91";

/// Builds an answer (`cn` is 9013 or 9014) to `request`.
#[must_use]
pub fn answer(request: &Packet<'_>, cn: u16, crc: CrcVariant) -> Vec<u8> {
    let pw = request.pw().unwrap_or("");
    let mn = request.mn().unwrap_or("");
    let packet = match request.qn() {
        Some(qn) => {
            OwnedPacket::new(Some(qn), ST_INTERACTION, cn, pw, mn, Some(Flag::new(request.version(), false, false)))
        }
        None => {
            let mut p = OwnedPacket::new(None, ST_INTERACTION, cn, pw, mn, None);
            let mut group: Vec<(&str, &str)> = Vec::with_capacity(2);
            if let Some(qn) = request.reference_qn() {
                group.push(("QN", qn));
            }
            group.push(("CN", request.cn_str()));
            p.push_group(group);
            p
        }
    };
    encode(&packet, crc)
}

/// Builds the 1012 "set time" request that follows a 1013, with `qn` as its QN and `now` (in the
/// sites' zone) as `SystemTime`.
#[must_use]
pub fn set_time(request: &Packet<'_>, qn: &str, now: DateTime, crc: CrcVariant) -> Vec<u8> {
    let pw = request.pw().unwrap_or("");
    let mn = request.mn().unwrap_or("");
    let flag = request.flag().map(|f| Flag::new(f.version(), false, true));
    let mut p = OwnedPacket::new(Some(qn), request.st(), 1012, pw, mn, flag);
    if let Some(pol) = request.cp().get("PolId") {
        p.push_group([("PolId", pol)]);
    }
    let time: String = now.n14().iter().map(|&b| char::from(b)).collect();
    p.push_group([("SystemTime", time)]);
    encode(&p, crc)
}

fn encode(p: &OwnedPacket, crc: CrcVariant) -> Vec<u8> {
    // Our answers are short; the unchecked form only matters for absurdly long QN/PW/MN echoes.
    p.to_frame(crc).or_else(|_| p.to_frame_unchecked(crc, false)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_echo_qn_pw_and_mn() {
        let p =
            Packet::parse(b"QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=ABC;Flag=5;CP=&&DataTime=20160801085857&&")
                .unwrap();
        let f = answer(&p, 9014, CrcVariant::Hj212);
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.starts_with("##0066QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=ABC;Flag=4;CP=&&&&"), "{text}");
        assert!(text.ends_with("\r\n"));
    }

    #[test]
    fn peers_without_header_qn_get_the_2005_layout() {
        let p = Packet::parse(b"ST=32;CN=2011;PW=123456;MN=ABC;CP=&&DataTime=20160801085857&&").unwrap();
        let f = answer(&p, 9014, CrcVariant::Hj212);
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.contains("ST=91;CN=9014;PW=123456;MN=ABC;CP=&&CN=2011&&"), "{text}");
    }

    #[test]
    fn set_time_carries_the_clock() {
        let p = Packet::parse(b"QN=20160801085857223;ST=32;CN=1013;PW=1;MN=ABC;Flag=5;CP=&&&&").unwrap();
        let now = DateTime::parse("20240102030405").unwrap();
        let f = set_time(&p, "20240102030405000", now, CrcVariant::Hj212);
        let text = std::str::from_utf8(&f).unwrap();
        assert!(
            text.contains("QN=20240102030405000;ST=32;CN=1012;PW=1;MN=ABC;Flag=5;CP=&&SystemTime=20240102030405&&"),
            "{text}"
        );
    }
}
