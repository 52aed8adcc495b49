//! Every plaintext HJ 212-2025 packet of the 2025 digest (§13) as a golden test: strict decode,
//! version 2025, byte-identical re-encoding, and a typed message whose `CP` writes back the same.
#![cfg(feature = "alloc")]

use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::{Header, Message};
use hj212_codec::{CrcVariant, DecodeOptions, Decoded, Split, Splitter, Version};

#[test]
fn every_2025_packet_decodes_types_and_re_encodes() {
    let text = include_str!("vectors/hj212-2025.txt");
    let mut count = 0;
    for line in text.lines().filter(|l| l.starts_with("##")) {
        let mut wire = line.strip_suffix("\\r\\n").unwrap().as_bytes().to_vec();
        wire.extend_from_slice(b"\r\n");
        let Split::Frame(frame) = Splitter::default().split(&wire, true) else { panic!("{line}") };
        let packet = Decoded::new(frame, DecodeOptions::STRICT).verdict().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(packet.version(), Version::V2025, "{line}");
        let owned = OwnedPacket::from_packet(&packet);
        assert_eq!(owned.to_frame_unchecked(CrcVariant::Hj212, frame.crc_is_lowercase()).unwrap(), wire);
        let m = Message::from_packet(&packet).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(!matches!(m, Message::Other { .. }) || packet.cn() == 2111 || packet.cn() == 2052, "{line}: {m:?}");
        let header = Header {
            qn: packet.qn(),
            st: packet.st(),
            pw: packet.pw().unwrap(),
            mn: packet.mn().unwrap_or(""),
            flag: packet.flag(),
        };
        // The typed form writes one group per item; a sender that packs several items into one
        // group (the digest's self-built 2011) differs only in `;` versus `,`.
        let flat = |s: &str| s.replace(' ', "").replace(',', ";");
        assert_eq!(flat(&m.to_packet(&header).data_segment()), flat(packet.as_str()), "{line}");
        count += 1;
    }
    assert_eq!(count, 23);
}
