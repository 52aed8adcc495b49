//! HJ 212-2025 encryption: the standard's Appendix A.2 examples byte for byte, and tests that
//! `CP` contents of every length up to the 2025 limit (950 bytes), made of every character a `CP`
//! may hold, survive encrypt → frame → split in random pieces → decrypt → CRC check.
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

/// HJ 212-2025 Table 2: the `CP` content is at most 950 bytes.
const CP_MAX: usize = 950;

/// The header of every test packet, up to and including `CP=&&`.
const HEADER: &[u8] = b"QN=20240601085857223;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&";

/// Characters a `CP` may hold: the separators `=`, `;`, `,` and `-`, every other printable ASCII
/// character but `&` (two of which end the `CP`), and UTF-8 text of two, three and four bytes
/// (Chinese log text in particular, HJ 212-2017 `i11001`).
fn cp_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec!['=', ';', ',', '-']),
        8 => (0x20u8..=0x7E).prop_filter("not the CP delimiter", |b| *b != b'&').prop_map(char::from),
        3 => proptest::char::range('\u{4E00}', '\u{9FFF}'),
        1 => any::<char>().prop_filter("multi-byte", |c| !c.is_ascii()),
    ]
}

/// Fills exactly `len` bytes from `chars`, cycling through them; a character that would not fit
/// in what is left becomes `0`, so every byte length is reachable with multi-byte text.
fn fill(len: usize, chars: &[char]) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut buf = [0u8; 4];
    for c in chars.iter().cycle() {
        if out.len() == len {
            break;
        }
        let c = if c.len_utf8() <= len - out.len() { *c } else { '0' };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out.resize(len, b'0');
    out
}

/// A `CP` length: any up to the limit, biased towards the edges of the 16-byte SM4 blocks (where
/// the clear tail appears and disappears) and the limit itself.
fn cp_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..=CP_MAX,
        4 => (0..=CP_MAX / 16 + 1, -1isize..=1).prop_map(|(k, d)| (16 * k).saturating_add_signed(d).min(CP_MAX)),
        1 => CP_MAX - 2..=CP_MAX,
    ]
}

/// The test packet's data segment around `cp`.
fn segment(cp: &[u8]) -> Vec<u8> {
    let mut data = HEADER.to_vec();
    data.extend_from_slice(cp);
    data.extend_from_slice(b"&&");
    data
}

/// Encrypts, frames and sends two copies of the packet through a [`Deframer`] in pieces of the
/// given sizes, then checks each frame is whole, decrypts to the plaintext, and carries the
/// plaintext's CRC.
fn round_trip(key: &Key, cp: &[u8], form: CipherForm, cuts: &[usize]) -> Result<(), String> {
    let data = segment(cp);
    let crc = hj212_codec::crc::to_hex(hj212_codec::crc::hj212(&data));
    let wire_data = crypt::encrypt_data(key, &data, form).map_err(|e| e.to_string())?;
    if form == CipherForm::Binary && wire_data.len() != data.len() {
        return Err(format!("binary ciphertext changed the length: {} != {}", wire_data.len(), data.len()));
    }
    let mut wire = format!("##{:04}", wire_data.len()).into_bytes();
    wire.extend_from_slice(&wire_data);
    wire.extend_from_slice(&crc);
    wire.extend_from_slice(b"\r\n");
    // Two frames back to back, fed in pieces.
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
                Event::Skipped { offset, len, reason } => return Err(format!("skipped {len} at {offset}: {reason:?}")),
            }
        }
    }
    if frames.len() != 2 {
        return Err(format!("{} frames", frames.len()));
    }
    for f in &frames {
        if *f != wire {
            return Err("a frame differs from the one sent".into());
        }
        let plain = crypt::decrypt_data(key, &f[6..f.len() - 6]).map_err(|e| e.to_string())?;
        if plain != data {
            return Err("the decrypted segment differs from the plaintext".into());
        }
        if Some(hj212_codec::crc::hj212(&plain)) != hj212_codec::crc::from_hex(&f[f.len() - 6..f.len() - 2]) {
            return Err("the CRC is not the plaintext's".into());
        }
    }
    Ok(())
}

/// Every length from 0 to 950, both wire forms, with pseudo-random keys, contents (of every
/// kind [`cp_char`] draws from) and piece sizes.
#[test]
fn every_cp_length_up_to_950_survives_encrypt_frame_split_decrypt() {
    // A fixed xorshift sequence: deterministic, and different for every length.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Printable ASCII (the separators among it) without `&`, and UTF-8 of two, three and four bytes.
    let pool: Vec<char> = (0x20u8..=0x7E)
        .filter(|b| *b != b'&')
        .map(char::from)
        .chain("排放口废气监测设备维护日志°Ωé€𠀀😀".chars())
        .collect();
    for len in 0..=CP_MAX {
        let chars: Vec<char> = (0..len).map(|_| pool[next() as usize % pool.len()]).collect();
        let cp = fill(len, &chars);
        assert_eq!(cp.len(), len);
        assert!(std::str::from_utf8(&cp).is_ok() && !cp.windows(2).any(|w| w == b"&&"));
        let key = Key::new(next().to_le_bytes().repeat(2).try_into().unwrap());
        let cuts = [1 + next() as usize % 97, 1 + next() as usize % 331, 64 + next() as usize % 449];
        // Hex text takes five bytes per ciphertext byte: five times the pieces' sizes keeps the
        // number of pieces per frame (the random test splits hex text finely).
        let hex_cuts = cuts.map(|c| 5 * c);
        for (form, cuts) in [(CipherForm::Binary, cuts), (CipherForm::HexText, hex_cuts)] {
            if let Err(e) = round_trip(&key, &cp, form, &cuts) {
                panic!("CP of {len} bytes, {form:?}: {e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_cp_survives_encrypt_frame_split_decrypt(
        len in cp_len(),
        chars in prop::collection::vec(cp_char(), 1..=CP_MAX),
        key in prop::array::uniform16(any::<u8>()),
        cuts in prop::collection::vec(1usize..200, 1..10),
        form in prop_oneof![Just(CipherForm::Binary), Just(CipherForm::HexText)],
    ) {
        let cp = fill(len, &chars);
        prop_assert_eq!(cp.len(), len);
        prop_assert!(std::str::from_utf8(&cp).is_ok());
        let key = Key::new(key);
        if let Err(e) = round_trip(&key, &cp, form, &cuts) {
            prop_assert!(false, "CP of {} bytes, {:?}: {}", len, form, e);
        }
    }
}
