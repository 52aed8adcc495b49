//! Word-at-a-time byte search for the short tokens of a data segment.
//!
//! Header fields and `CP` keys and values are a few bytes to a few dozen long; a vectorised
//! search (`memchr`) spends more on setting up than it saves, and a byte loop costs a compare per
//! byte. These helpers test eight bytes at once with the classic SWAR trick: for each wanted byte
//! `c`, `(x ^ c·0x01…01) - 0x01…01 & !(x ^ c·0x01…01) & 0x80…80` has its high bit set in every
//! byte equal to `c`; bytes above a match may be flagged falsely by the borrow, so only the
//! lowest flag is used, which is exact.
//!
//! Invariant: safe code only; every returned index is within the slice or equals its length.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

#[inline(always)]
const fn matches(word: u64, byte: u8) -> u64 {
    let x = word ^ (LO * byte as u64);
    x.wrapping_sub(LO) & !x & HI
}

#[inline(always)]
fn word_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

/// The index of the first byte at or after `from` equal to `a`, `b` or `c`, or `bytes.len()`.
#[inline]
pub(crate) fn find3(bytes: &[u8], from: usize, a: u8, b: u8, c: u8) -> usize {
    let mut i = from;
    while i + 8 <= bytes.len() {
        let w = word_at(bytes, i);
        let m = matches(w, a) | matches(w, b) | matches(w, c);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] != a && bytes[i] != b && bytes[i] != c {
        i += 1;
    }
    i
}

/// The index of the first byte at or after `from` equal to `a` or `b`, or `bytes.len()`.
#[inline]
pub(crate) fn find2(bytes: &[u8], from: usize, a: u8, b: u8) -> usize {
    let mut i = from;
    while i + 8 <= bytes.len() {
        let w = word_at(bytes, i);
        let m = matches(w, a) | matches(w, b);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] != a && bytes[i] != b {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_match_exactly() {
        let text = b"abcdefgh=ijk;lmnop,qrstuvwxyz0123456789==;;";
        for from in 0..text.len() {
            let want3 = (from..text.len()).find(|&i| matches!(text[i], b'=' | b';' | b',')).unwrap_or(text.len());
            assert_eq!(find3(text, from, b'=', b';', b','), want3, "from {from}");
            let want2 = (from..text.len()).find(|&i| matches!(text[i], b';' | b',')).unwrap_or(text.len());
            assert_eq!(find2(text, from, b';', b','), want2, "from {from}");
        }
        // High bytes (UTF-8) and borrow chains must not produce false first matches.
        let tricky = "清洗;\u{1}\u{0}=,".as_bytes();
        assert_eq!(find2(tricky, 0, b';', b','), 6);
        assert_eq!(find3(&[0x3C, 0x3D, 0x3B, 0], 0, b'=', b';', b','), 1);
        assert_eq!(find2(b"", 0, b';', b','), 0);
    }
}
