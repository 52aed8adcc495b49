//! HJ 212-2025 `CP` encryption (§6.4, Appendix A.2): SM4-ECB, no padding.
//!
//! Only the bytes between `CP=&&` and the closing `&&` are encrypted, sixteen at a time; a tail
//! shorter than a block stays in clear. The packet is built and its CRC computed first, then the
//! `CP` content is encrypted, so the length field and the CRC on the wire are those of the
//! plaintext. A receiver therefore cuts the frame by its length (the ciphertext may hold CR, LF
//! and `&&`; see `docs/protocol.md`), decrypts, and only then checks the CRC.
//!
//! What goes on the wire is the raw ciphertext: the standard's own example packets keep the
//! plaintext length (`0295`, `0234`), which only raw bytes fit. Two public implementations send
//! the printed form `{0xE4,0x3E,…}` as text instead; [`CipherForm::HexText`] speaks that
//! form for peers that need it (its length field and CRC are then those of the wire text).
//!
//! Invariant: no allocation beyond the output buffer; no panics on any input.

use alloc::vec::Vec;

use sm4::Sm4;
use sm4::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

use crate::error::{Error, ErrorKind};

/// SM4 block size.
pub const BLOCK: usize = 16;

/// A 128-bit SM4 key (HJ 212-2025 §6.4.2). `NewSK` carries it as 16 ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Keys never reach logs.
        f.write_str("Key(****************)")
    }
}

impl Key {
    /// A key from its 16 bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// A key from the 16 characters of `NewSK`.
    #[must_use]
    pub fn from_text(text: &str) -> Option<Self> {
        <[u8; 16]>::try_from(text.as_bytes()).ok().map(Self)
    }

    /// The key bytes.
    #[must_use]
    pub const fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// How ciphertext is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherForm {
    /// Raw ciphertext bytes (the standard's reading).
    #[default]
    Binary,
    /// `{0xE4,0x3E,…}` text, then the clear tail (a compatibility option for some platforms).
    HexText,
}

/// True for the commands HJ 212-2025 §6.4.4 says must be encrypted: data commands 2000–2999,
/// key management 1014 and site information 3020.
#[must_use]
pub const fn must_encrypt(cn: u16) -> bool {
    matches!(cn, 2000..=2999 | 1014 | 3020)
}

fn cipher(key: &Key) -> Sm4 {
    Sm4::new(&Array::from(key.0))
}

/// Encrypts `CP` content in place: whole blocks encrypted, the tail left as it is.
pub fn encrypt_in_place(key: &Key, content: &mut [u8]) {
    let c = cipher(key);
    for chunk in content.chunks_exact_mut(BLOCK) {
        let mut block = Array::from(<[u8; BLOCK]>::try_from(&*chunk).unwrap_or([0; BLOCK]));
        c.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
}

/// Decrypts `CP` content in place: whole blocks decrypted, the tail left as it is.
pub fn decrypt_in_place(key: &Key, content: &mut [u8]) {
    let c = cipher(key);
    for chunk in content.chunks_exact_mut(BLOCK) {
        let mut block = Array::from(<[u8; BLOCK]>::try_from(&*chunk).unwrap_or([0; BLOCK]));
        c.decrypt_block(&mut block);
        chunk.copy_from_slice(&block);
    }
}

/// Where `CP` content starts and ends in a data segment whose content may be binary: the header
/// is text up to the first `CP=&&` at a field boundary; the content runs to the final `&&`.
fn cp_bounds(data: &[u8]) -> Result<(usize, usize), Error> {
    let mut from = 0;
    let start = loop {
        let Some(i) = memchr::memmem::find(&data[from..], b"CP=&&") else {
            return Err(Error::new(ErrorKind::MissingCp, 0));
        };
        let at = from + i;
        if at == 0 || data[at - 1] == b';' {
            break at + 5;
        }
        from = at + 1;
    };
    if data.len() < start + 2 || !data.ends_with(b"&&") {
        return Err(Error::new(ErrorKind::UnterminatedCp, data.len()));
    }
    Ok((start, data.len() - 2))
}

/// Encrypts the `CP` content of a plaintext data segment for the wire.
///
/// # Errors
/// The data segment has no `CP=&&…&&`.
pub fn encrypt_data(key: &Key, data: &[u8], form: CipherForm) -> Result<Vec<u8>, Error> {
    let (start, end) = cp_bounds(data)?;
    let mut out = Vec::with_capacity(data.len() * if form == CipherForm::HexText { 5 } else { 1 });
    out.extend_from_slice(&data[..start]);
    let content = &data[start..end];
    let whole = content.len() / BLOCK * BLOCK;
    let mut enc = content[..whole].to_vec();
    encrypt_in_place(key, &mut enc);
    match form {
        CipherForm::Binary => out.extend_from_slice(&enc),
        CipherForm::HexText if !enc.is_empty() => {
            out.push(b'{');
            for (i, b) in enc.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"0x");
                out.extend_from_slice(&crate::crc::to_hex(u16::from(*b))[2..]);
            }
            out.push(b'}');
        }
        CipherForm::HexText => {}
    }
    out.extend_from_slice(&content[whole..]);
    out.extend_from_slice(&data[end..]);
    Ok(out)
}

/// Decrypts the `CP` content of a received data segment, detecting the hex-text form.
///
/// # Errors
/// No `CP=&&…&&`, or a hex-text form that does not parse (offset within the data segment).
pub fn decrypt_data(key: &Key, data: &[u8]) -> Result<Vec<u8>, Error> {
    let (start, end) = cp_bounds(data)?;
    let content = &data[start..end];
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..start]);
    if content.starts_with(b"{0x") {
        let close = memchr::memchr(b'}', content).ok_or_else(|| Error::new(ErrorKind::InvalidField("CP"), start))?;
        let mut bytes = Vec::with_capacity(close / 5 + 1);
        for (i, item) in content[1..close].split(|&b| b == b',').enumerate() {
            let at = start + 1 + i * 5;
            let hex = item
                .strip_prefix(b"0x")
                .or_else(|| item.strip_prefix(b"0X"))
                .ok_or_else(|| Error::new(ErrorKind::InvalidField("CP"), at))?;
            let v = match hex {
                [h, l] => crate::crc::from_hex(&[b'0', b'0', *h, *l]),
                _ => None,
            };
            bytes.push(v.ok_or_else(|| Error::new(ErrorKind::InvalidField("CP"), at))? as u8);
        }
        if bytes.len() % BLOCK != 0 {
            return Err(Error::new(ErrorKind::InvalidField("CP"), start));
        }
        decrypt_in_place(key, &mut bytes);
        out.extend_from_slice(&bytes);
        out.extend_from_slice(&content[close + 1..]);
    } else {
        let mut bytes = content.to_vec();
        decrypt_in_place(key, &mut bytes);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&data[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EX2: &str = "QN=20240520210700000;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,a01011-Flag=N;a01012-Min=9.3,a01012-Avg=9.3,a01012-Max=9.3,a01012-Flag=N;a01014-Min=3.20,a01014-Avg=3.211,a01014-Max=3.212,a01014-Flag=N&&";

    #[test]
    fn gb_t_32907_primitive_vector() {
        let key =
            Key::new([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10]);
        let mut block = *key.bytes();
        encrypt_in_place(&key, &mut block);
        assert_eq!(
            block,
            [0x68, 0x1e, 0xdf, 0x34, 0xd2, 0x06, 0x96, 0x5e, 0x86, 0xb3, 0xe9, 0x4f, 0x53, 0x6e, 0x42, 0x46]
        );
    }

    #[test]
    fn the_hex_text_form_round_trips_and_keeps_the_clear_tail() {
        let key = Key::from_text("0000000000000000").unwrap();
        let seg = b"ST=31;CN=2051;CP=&&DataTime=20240520210600;abc&&";
        let wire = encrypt_data(&key, seg, CipherForm::HexText).unwrap();
        let text = core::str::from_utf8(&wire).unwrap();
        assert!(text.starts_with("ST=31;CN=2051;CP=&&{0xE4,0x3E,0x15,0x9A,"), "{text}");
        assert!(text.ends_with("}0210600;abc&&"), "{text}");
        assert_eq!(decrypt_data(&key, &wire).unwrap(), seg);
        assert_eq!(alloc::format!("{key:?}"), "Key(****************)");
    }

    #[test]
    fn binary_form_keeps_length_and_the_plaintext_crc() {
        let key = Key::from_text("0000000000000000").unwrap();
        let wire = encrypt_data(&key, EX2.as_bytes(), CipherForm::Binary).unwrap();
        assert_eq!(wire.len(), EX2.len());
        assert_eq!(decrypt_data(&key, &wire).unwrap(), EX2.as_bytes());
        assert!(must_encrypt(2051) && must_encrypt(1014) && must_encrypt(3020) && !must_encrypt(9015));
    }
}
