//! Block-at-a-time byte search for the short tokens of a data segment.
//!
//! Header fields and `CP` keys and values are a few bytes to a few dozen long; `memchr` spends
//! more on setting up than it saves, and a byte loop costs a compare per byte. The searches here
//! look at a block of bytes at once and turn it into flags. Two backends give the same answers:
//!
//! - **x86-64**: sixteen bytes at a time with SSE2 (`pcmpeqb` + `pmovmskb`: one exact bit per
//!   byte), through the `safe_arch` crate, whose API is safe. SSE2 is part of the x86-64
//!   baseline, so there is no runtime detection. Pairs are walked with a [`PairScanner`] that
//!   classifies whole 64-byte blocks at fixed offsets, and the header with [`HeaderStops`],
//!   which classifies its first 128 bytes up front (see there for why).
//! - **everywhere else** (Cortex-M, AArch64, …): eight bytes in a `u64` with the classic SWAR
//!   trick. For a wanted byte `c`, `(x ^ c·0x01…01) - 0x01…01 & !(x ^ c·0x01…01) & 0x80…80` has
//!   its high bit set in every byte equal to `c`. Bytes *above* a match may be flagged falsely by
//!   the borrow, so only the lowest flag is used, except in [`pair_ends`] (see there).
//!
//! The last block of a slice is read as the slice's last bytes, shifted, so nothing is read past
//! the end and nothing is copied (only a slice shorter than one block is copied into a zeroed
//! block).
//!
//! Invariant: no `unsafe` in this crate; every returned index is within the slice or equals its
//! length.

pub(crate) use backend::{HeaderStops, PairScanner, find2, pair_ends};
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use sse2 as backend;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use swar as backend;

/// Where one `CP` pair ends, as found by [`pair_ends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairEnds {
    /// The first `=`, `;` or `,` at or after the start (or the slice's length).
    pub key_end: usize,
    /// True when the byte at `key_end` is `=`.
    pub eq: bool,
    /// With `eq`, the first `;` or `,` after `key_end` (or the length); else `key_end`.
    pub end: usize,
}

/// The bytes `b[i..]`, at most eight of them, as a little-endian word padded with zero bytes
/// (which match no separator). `i` is less than `b.len()`.
#[inline(always)]
pub(crate) fn word_from(b: &[u8], i: usize) -> u64 {
    if let Some(w) = b.get(i..i + 8) {
        return le(w);
    }
    let len = b.len();
    if len >= 8 {
        // The last eight bytes, shifted so that `b[i]` is the lowest.
        le(&b[len - 8..]) >> (8 * (i + 8 - len))
    } else {
        let mut w = [0u8; 8];
        w[..len - i].copy_from_slice(&b[i..]);
        u64::from_le_bytes(w)
    }
}

/// Eight bytes as a little-endian word.
#[inline(always)]
fn le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Eight bytes at a time in a `u64`: the portable backend (compiled everywhere for its tests).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
mod swar {
    use super::{PairEnds, word_from};

    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    /// Flags (high bit) every byte of `word` equal to `byte`; exact up to and including the
    /// lowest flag, and above it as long as no byte below is flagged.
    #[inline(always)]
    const fn matches(word: u64, byte: u8) -> u64 {
        let x = word ^ (LO * byte as u64);
        x.wrapping_sub(LO) & !x & HI
    }

    /// The index within a word of its lowest flagged byte (`flags` is not zero).
    #[inline(always)]
    const fn first(flags: u64) -> usize {
        (flags.trailing_zeros() / 8) as usize
    }

    /// The index of the first byte at or after `from` equal to `a`, `b` or `c`, or `bytes.len()`.
    #[inline]
    pub(crate) fn find3(bytes: &[u8], from: usize, a: u8, b: u8, c: u8) -> usize {
        let mut i = from;
        while i < bytes.len() {
            let w = word_from(bytes, i);
            let m = matches(w, a) | matches(w, b) | matches(w, c);
            if m != 0 {
                return i + first(m);
            }
            i += 8;
        }
        bytes.len()
    }

    /// The index of the first byte at or after `from` equal to `a` or `b`, or `bytes.len()`.
    #[inline]
    pub(crate) fn find2(bytes: &[u8], from: usize, a: u8, b: u8) -> usize {
        let mut i = from;
        while i < bytes.len() {
            let w = word_from(bytes, i);
            let m = matches(w, a) | matches(w, b);
            if m != 0 {
                return i + first(m);
            }
            i += 8;
        }
        bytes.len()
    }

    /// The first `=`, `;` or `,` from `start` and, when it is `=`, the first `;` or `,` after it.
    ///
    /// The word that holds the `=` usually holds the value's end too. Its `;`/`,` flags above the
    /// `=` are exact: no byte at or below the `=` is a `;` or `,`, so no borrow reaches them.
    #[inline(always)]
    pub(crate) fn pair_ends(b: &[u8], start: usize) -> PairEnds {
        let len = b.len();
        let mut i = start;
        while i < len {
            let w = word_from(b, i);
            let eq = matches(w, b'=');
            let sep = matches(w, b';') | matches(w, b',');
            let any = eq | sep;
            if any == 0 {
                i += 8;
                continue;
            }
            let low = any & any.wrapping_neg();
            let key_end = i + first(low);
            if eq & low == 0 {
                return PairEnds { key_end, eq: false, end: key_end };
            }
            let above = sep & !(low | low.wrapping_sub(1));
            let end = if above != 0 { i + first(above) } else { find2(b, i + 8, b';', b',') };
            return PairEnds { key_end, eq: true, end };
        }
        PairEnds { key_end: len, eq: false, end: len }
    }

    /// The `;`, `,` and `&` of a header; here it holds nothing and each search starts afresh.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct HeaderStops;

    impl HeaderStops {
        /// Reads the start of `b`.
        #[inline(always)]
        pub(crate) fn new(_: &[u8]) -> Self {
            Self
        }

        /// The first `;`, `,` or `&` at or after `from`, or `b.len()`.
        #[inline(always)]
        pub(crate) fn find(&self, b: &[u8], from: usize) -> usize {
            find3(b, from, b';', b',', b'&')
        }
    }

    /// Walks the pairs of one slice; here it holds nothing, each search starts afresh (measured
    /// faster in SWAR than classifying whole blocks, which costs about 25 operations per word).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct PairScanner;

    impl PairScanner {
        /// A scanner that has read nothing yet.
        pub(crate) const fn new() -> Self {
            Self
        }

        /// [`pair_ends`] from `start`; `start` never goes back between calls on one slice.
        #[inline(always)]
        pub(crate) fn pair_ends(&mut self, b: &[u8], start: usize) -> PairEnds {
            pair_ends(b, start)
        }
    }
}

/// Sixteen bytes at a time with SSE2: the x86-64 backend.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };

    use super::PairEnds;

    /// The sixteen bytes from `i` (`i < b.len()`) and how many of their low bytes lie before
    /// `i` (bytes past the end of `b` are never loaded: the last block is `b`'s last sixteen bytes).
    #[inline(always)]
    fn block16(b: &[u8], i: usize) -> (m128i, u32) {
        let len = b.len();
        match b.get(i..i + 16) {
            Some(s) => (block_of(s), 0),
            None if len >= 16 => (block_of(&b[len - 16..]), (i + 16 - len) as u32),
            None => (short_block(&b[i..]), 0),
        }
    }

    /// A slice shorter than a block, padded with zero bytes.
    #[cold]
    #[inline(never)]
    fn short_block(s: &[u8]) -> m128i {
        let mut padded = [0u8; 16];
        padded[..s.len()].copy_from_slice(s);
        load_unaligned_m128i(&padded)
    }

    /// Sixteen bytes (`s.len() == 16`) as a vector.
    #[inline(always)]
    fn block_of(s: &[u8]) -> m128i {
        let mut a = [0u8; 16];
        a.copy_from_slice(s);
        load_unaligned_m128i(&a)
    }

    /// One exact bit per byte from a compare result, bytes before `i` dropped.
    #[inline(always)]
    fn bits(v: m128i, shift: u32) -> u32 {
        (move_mask_i8_m128i(v) as u32 & 0xFFFF) >> shift
    }

    /// All-ones in the bytes of `v` equal to `c`.
    #[inline(always)]
    fn eq(v: m128i, c: u8) -> m128i {
        cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(c as i8))
    }

    /// The `=` flags and the `;`/`,` flags of 64 bytes (`s.len() == 64`), one bit per byte.
    #[inline(always)]
    fn classify64(s: &[u8]) -> (u64, u64) {
        let (mut eqs, mut seps) = (0u64, 0u64);
        for (k, chunk) in s.chunks_exact(16).enumerate() {
            let v = block_of(chunk);
            let e = move_mask_i8_m128i(eq(v, b'=')) as u32 & 0xFFFF;
            let p = move_mask_i8_m128i(bitor_m128i(eq(v, b';'), eq(v, b','))) as u32 & 0xFFFF;
            eqs |= u64::from(e) << (16 * k);
            seps |= u64::from(p) << (16 * k);
        }
        (eqs, seps)
    }

    /// [`classify64`] for fewer than 64 bytes (short `CP`s): whole sixteens, then the last
    /// sixteen bytes shifted; only a slice shorter than sixteen bytes is copied.
    #[inline(never)]
    fn classify_short(s: &[u8]) -> (u64, u64) {
        let classify16 = |v: m128i| {
            let e = move_mask_i8_m128i(eq(v, b'=')) as u32 & 0xFFFF;
            let p = move_mask_i8_m128i(bitor_m128i(eq(v, b';'), eq(v, b','))) as u32 & 0xFFFF;
            (u64::from(e), u64::from(p))
        };
        let len = s.len();
        if len < 16 {
            return classify16(short_block(s));
        }
        let (mut eqs, mut seps) = (0u64, 0u64);
        let mut k = 0;
        while let Some(chunk) = s.get(k..k + 16) {
            let (e, p) = classify16(block_of(chunk));
            eqs |= e << k;
            seps |= p << k;
            k += 16;
        }
        if k < len {
            // The last sixteen bytes overlap the previous chunk by `k + 16 - len`.
            let (e, p) = classify16(block_of(&s[len - 16..]));
            let shift = k + 16 - len;
            eqs |= (e >> shift) << k;
            seps |= (p >> shift) << k;
        }
        (eqs, seps)
    }

    /// The index of the first byte at or after `from` equal to `a`, `b` or `c`, or `bytes.len()`.
    ///
    /// Header values reach 24 bytes (`MN`), so 32 bytes are looked at together where they exist.
    #[inline]
    pub(crate) fn find3(bytes: &[u8], from: usize, a: u8, b: u8, c: u8) -> usize {
        let mut i = from;
        while let Some(s) = bytes.get(i..i + 32) {
            let (lo, hi) = (block_of(&s[..16]), block_of(&s[16..]));
            let lo = bits(bitor_m128i(bitor_m128i(eq(lo, a), eq(lo, b)), eq(lo, c)), 0);
            let hi = bits(bitor_m128i(bitor_m128i(eq(hi, a), eq(hi, b)), eq(hi, c)), 0);
            let m = lo | hi << 16;
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 32;
        }
        while i < bytes.len() {
            let (v, shift) = block16(bytes, i);
            let m = bits(bitor_m128i(bitor_m128i(eq(v, a), eq(v, b)), eq(v, c)), shift);
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
        bytes.len()
    }

    /// The index of the first byte at or after `from` equal to `a` or `b`, or `bytes.len()`.
    #[inline]
    pub(crate) fn find2(bytes: &[u8], from: usize, a: u8, b: u8) -> usize {
        let mut i = from;
        while i < bytes.len() {
            let (v, shift) = block16(bytes, i);
            let m = bits(bitor_m128i(eq(v, a), eq(v, b)), shift);
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
        bytes.len()
    }

    /// The first `=`, `;` or `,` from `start` and, when it is `=`, the first `;` or `,` after it.
    #[inline(always)]
    pub(crate) fn pair_ends(b: &[u8], start: usize) -> PairEnds {
        let len = b.len();
        let mut i = start;
        while i < len {
            let (v, shift) = block16(b, i);
            let eqs = bits(eq(v, b'='), shift);
            let seps = bits(bitor_m128i(eq(v, b';'), eq(v, b',')), shift);
            let any = eqs | seps;
            if any == 0 {
                i += 16;
                continue;
            }
            let k = any.trailing_zeros();
            let key_end = i + k as usize;
            if eqs & (1 << k) == 0 {
                return PairEnds { key_end, eq: false, end: key_end };
            }
            let above = seps & !((2u32 << k) - 1);
            let end = if above != 0 { i + above.trailing_zeros() as usize } else { find2(b, i + 16, b';', b',') };
            return PairEnds { key_end, eq: true, end };
        }
        PairEnds { key_end: len, eq: false, end: len }
    }

    /// The `;`, `,` and `&` flags of the first 128 bytes of a data segment, where the header
    /// almost always ends (`QN;ST;CN;PW;MN;Flag;CP=&&` is about 80 bytes). Classified up front
    /// at fixed offsets, they take the searches off the chain from one header field to the next.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct HeaderStops {
        lo: u64,
        hi: u64,
    }

    impl HeaderStops {
        /// Classifies the first 128 bytes of `b` (fewer when it is shorter).
        #[inline(always)]
        pub(crate) fn new(b: &[u8]) -> Self {
            let stops = |v: m128i| {
                u64::from(
                    move_mask_i8_m128i(bitor_m128i(bitor_m128i(eq(v, b';'), eq(v, b',')), eq(v, b'&'))) as u32 & 0xFFFF,
                )
            };
            let mut flags = [0u64; 2];
            match b.get(..128) {
                Some(head) => {
                    for (k, chunk) in head.chunks_exact(16).enumerate() {
                        flags[k / 4] |= stops(block_of(chunk)) << (16 * (k % 4));
                    }
                }
                None if b.len() >= 16 => {
                    let len = b.len();
                    let mut k = 0;
                    while let Some(chunk) = b.get(k..k + 16) {
                        flags[k / 64] |= stops(block_of(chunk)) << (k % 64);
                        k += 16;
                    }
                    if k < len {
                        let tail = stops(block_of(&b[len - 16..])) >> (k + 16 - len);
                        flags[k / 64] |= tail << (k % 64);
                    }
                }
                None => flags[0] = stops(short_block(b)),
            }
            Self { lo: flags[0], hi: flags[1] }
        }

        /// The first `;`, `,` or `&` at or after `from`, or `b.len()`.
        #[inline(always)]
        pub(crate) fn find(&self, b: &[u8], from: usize) -> usize {
            if from < 64 {
                let lo = self.lo >> from;
                if lo != 0 {
                    return from + lo.trailing_zeros() as usize;
                }
                if self.hi != 0 {
                    return 64 + self.hi.trailing_zeros() as usize;
                }
            } else if from < 128 {
                let hi = self.hi >> (from - 64);
                if hi != 0 {
                    return from + hi.trailing_zeros() as usize;
                }
            }
            find3(b, from.max(128), b';', b',', b'&')
        }
    }

    /// Walks the pairs of one slice with the `=` flags and the `;`/`,` flags of one 64-byte
    /// block, kept while the positions asked for stay in it.
    ///
    /// Searching afresh from each pair's start makes every search wait for the previous one (a
    /// key starts after the last value ends): a load, the compares and `pmovmskb` per pair. Here
    /// the blocks sit at fixed offsets (multiples of 64 from the slice's start), so classifying
    /// them does not depend on where the pairs are, and each separator costs a shift and a
    /// trailing-zero count.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct PairScanner {
        /// One past the block's last byte; 0 before the first block is read.
        next: usize,
        eqs: u64,
        seps: u64,
    }

    impl PairScanner {
        /// A scanner that has read nothing yet.
        pub(crate) const fn new() -> Self {
            Self { next: 0, eqs: 0, seps: 0 }
        }

        /// [`pair_ends`] from `start`.
        #[inline(always)]
        pub(crate) fn pair_ends(&mut self, b: &[u8], start: usize) -> PairEnds {
            let (key_end, eq) = self.first(b, start, true);
            let end = if eq { self.first(b, key_end + 1, false).0 } else { key_end };
            PairEnds { key_end, eq, end }
        }

        /// The first `;` or `,` (or `=` too, with `with_eq`) at or after `from`, or `b.len()`;
        /// and whether it is `=`.
        #[inline(always)]
        fn first(&mut self, b: &[u8], mut from: usize, with_eq: bool) -> (usize, bool) {
            while from < b.len() {
                // The offset in the current block; a position outside it (or no block yet)
                // loads the block that holds it.
                let mut off = from.wrapping_sub(self.next.wrapping_sub(64));
                if off >= 64 {
                    self.load(b, from & !63);
                    off = from & 63;
                }
                let flags = if with_eq { self.eqs | self.seps } else { self.seps } >> off;
                if flags != 0 {
                    let k = off + flags.trailing_zeros() as usize;
                    return (from - off + k, with_eq && (self.eqs >> k) & 1 != 0);
                }
                from = self.next;
            }
            (b.len(), false)
        }

        /// Classifies the block of `b` that starts at `block` (`block < b.len()`).
        #[inline(always)]
        fn load(&mut self, b: &[u8], block: usize) {
            let len = b.len();
            let (eqs, seps) = if let Some(s) = b.get(block..block + 64) {
                classify64(s)
            } else if len >= 64 {
                // The slice's last 64 bytes, shifted so that bit 0 is `b[block]`.
                let (eqs, seps) = classify64(&b[len - 64..]);
                let shift = block + 64 - len;
                (eqs >> shift, seps >> shift)
            } else {
                classify_short(&b[block..])
            };
            *self = Self { next: block + 64, eqs, seps };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want_from(text: &[u8], from: usize, set: &[u8]) -> usize {
        (from..text.len()).find(|&i| set.contains(&text[i])).unwrap_or(text.len())
    }

    /// Both backends (the SWAR one is compiled on every target for this), and the pair
    /// scanner walking forward from every start, against a byte loop.
    fn check(text: &[u8]) {
        for from in 0..=text.len() {
            let want3 = want_from(text, from, b"=;,");
            let want2 = want_from(text, from, b";,");
            assert_eq!(backend::find3(text, from, b'=', b';', b','), want3, "{text:?} from {from}");
            assert_eq!(swar::find3(text, from, b'=', b';', b','), want3, "{text:?} from {from}");
            assert_eq!(find2(text, from, b';', b','), want2, "{text:?} from {from}");
            assert_eq!(swar::find2(text, from, b';', b','), want2, "{text:?} from {from}");
            let eq = want3 < text.len() && text[want3] == b'=';
            let end = if eq { want_from(text, want3 + 1, b";,") } else { want3 };
            let want = PairEnds { key_end: want3, eq, end };
            assert_eq!(pair_ends(text, from), want, "{text:?} from {from}");
            assert_eq!(swar::pair_ends(text, from), want, "{text:?} from {from}");
            let stops = HeaderStops::new(text);
            assert_eq!(stops.find(text, from), want_from(text, from, b";,&"), "{text:?} from {from}");
            // A scanner that has already walked the pairs before `from`.
            let mut scanner = PairScanner::new();
            let mut at = 0;
            while at < from {
                at = scanner.pair_ends(text, at).end + 1;
            }
            assert_eq!(scanner.pair_ends(text, from), want, "{text:?} from {from} after {at}");
        }
    }

    #[test]
    fn finds_the_first_match_exactly() {
        check(b"abcdefgh=ijk;lmnop,qrstuvwxyz0123456789==;;");
        // High bytes (UTF-8) and borrow chains must not produce false first matches.
        check("清洗;\u{1}\u{0}=,".as_bytes());
        check(&[0x3C, 0x3D, 0x3B, 0]);
        check(&[0x3D, 0x3C, 0x3A, 0x2B, 0x2C, 0x2D, 0x01, 0x3B]);
        check(b"");
        // Short slices, tails read as shifted blocks, and blocks of 64.
        for text in [&b"a=1"[..], b"abcdefg=", b"abcdefgh=1", b"x;", b"a34001-Rtd=12.3,a34001-Flag=N"] {
            check(text);
        }
        let long: [u8; 300] = core::array::from_fn(|i| b"ab=c;d,ef=\xff\x01"[i * 7 % 13 % 12]);
        for len in [63, 64, 65, 127, 128, 129, 300] {
            check(&long[..len]);
        }
    }

    #[test]
    fn random_texts_match_the_byte_loop() {
        const ALPHABET: &[u8] = b"a=;,&\x00\x01\x3c\x3e\x2b\x2d\x3a\xff";
        let mut x: u32 = 99;
        let mut text = [0u8; 200];
        for round in 0..3000 {
            let len = if round % 10 == 0 { text.len() } else { 40 };
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = (x >> 16) as usize % len;
            for byte in &mut text[..len] {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *byte = ALPHABET[(x >> 16) as usize % ALPHABET.len()];
            }
            check(&text[..len]);
        }
    }
}
