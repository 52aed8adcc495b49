//! HJ 212-2025 encryption: the standard's Appendix A.2 examples byte for byte, and a property
//! test that random `CP` contents survive encrypt → frame → split in random pieces → decrypt →
//! CRC check.
#![cfg(feature = "alloc")]

use hj212_codec::crypt::{self, CipherForm, Key};
use hj212_codec::{CrcPolicy, CrcVariant, Deframer, Event, Packet};
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn field<'a>(json: &'a str, name: &str, from: usize) -> (&'a str, usize) {
    let key = format!("\"{name}\": \"");
    let at = json[from..].find(&key).unwrap() + from + key.len();
    let end = json[at..].find('"').unwrap() + at;
    (&json[at..end], end)
}

#[test]
fn appendix_a2_examples_encrypt_and_decrypt_byte_exactly() {
    let json = include_str!("vectors/hj212-2025-sm4.json");
    let key = Key::new([0x30; 16]);
    let mut at = 0;
    for _ in 0..2 {
        let (packet, next) = field(json, "plaintext_packet", at);
        let (cp_plain, next) = field(json, "cp_plaintext", next);
        let (cipher_hex, next) = field(json, "cp_ciphertext_hex", next);
        let (tail, next) = field(json, "cp_clear_tail", next);
        let (crc, next) = field(json, "crc", next);
        at = next;
        let packet = packet.strip_suffix("\\r\\n").unwrap();
        let data = &packet.as_bytes()[6..packet.len() - 4];
        assert_eq!(
            hex(&crypt::encrypt_data(&key, data, CipherForm::Binary).unwrap()
                [data.len() - 2 - cp_plain.len()..data.len() - 2 - tail.len()]),
            cipher_hex
        );
        // The wire frame: plaintext length and CRC, ciphertext in between.
        let wire_data = crypt::encrypt_data(&key, data, CipherForm::Binary).unwrap();
        assert_eq!(wire_data.len(), data.len());
        assert!(wire_data.ends_with(format!("{tail}&&").as_bytes()));
        let mut wire = packet.as_bytes()[..6].to_vec();
        wire.extend_from_slice(&wire_data);
        wire.extend_from_slice(crc.as_bytes());
        wire.extend_from_slice(b"\r\n");
        // The receiver cuts by length, decrypts, then checks the plaintext CRC.
        let mut d = Deframer::default();
        d.feed(&wire);
        let Some(Event::Frame { frame, .. }) = d.next_event() else { panic!("no frame") };
        assert_eq!(frame.len(), wire.len());
        let plain = crypt::decrypt_data(&key, frame.data()).unwrap();
        assert_eq!(plain, data);
        assert_eq!(CrcPolicy::Auto.check(&plain, frame.crc_received()), Ok(CrcVariant::Hj212));
        assert_eq!(Packet::parse(&plain).unwrap().cp().as_str(), cp_plain);
    }
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b'='), Just(b';'), Just(b','), b'0'..=b'z', Just(b'-')], 0..600)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_cp_survives_encrypt_frame_split_decrypt(
        cp in content(),
        key in prop::array::uniform16(any::<u8>()),
        cuts in prop::collection::vec(1usize..200, 1..10),
        form in prop_oneof![Just(CipherForm::Binary), Just(CipherForm::HexText)],
    ) {
        let key = Key::new(key);
        let mut data = b"QN=20240601085857223;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&".to_vec();
        data.extend_from_slice(&cp);
        data.extend_from_slice(b"&&");
        let crc = hj212_codec::crc::to_hex(hj212_codec::crc::hj212(&data));
        let wire_data = crypt::encrypt_data(&key, &data, form).unwrap();
        let mut wire = format!("##{:04}", wire_data.len()).into_bytes();
        wire.extend_from_slice(&wire_data);
        wire.extend_from_slice(&crc);
        wire.extend_from_slice(b"\r\n");
        // Two frames back to back, fed in random pieces.
        let stream = [wire.clone(), wire.clone()].concat();
        let mut d = Deframer::default();
        let mut frames = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - at);
            d.feed(&stream[at..at + n]);
            at += n;
            i += 1;
            while let Some(ev) = d.next_event() {
                match ev {
                    Event::Frame { frame, .. } => frames.push(frame.bytes().to_vec()),
                    Event::Skipped { offset, len, reason } => prop_assert!(false, "skipped {} at {}: {:?}", len, offset, reason),
                }
            }
        }
        prop_assert_eq!(frames.len(), 2);
        for f in &frames {
            prop_assert_eq!(f, &wire);
            let data_wire = &f[6..f.len() - 6];
            let plain = crypt::decrypt_data(&key, data_wire).unwrap();
            prop_assert_eq!(&plain, &data);
            prop_assert_eq!(hj212_codec::crc::hj212(&plain), hj212_codec::crc::from_hex(&f[f.len() - 6..f.len() - 2]).unwrap());
        }
    }
}
