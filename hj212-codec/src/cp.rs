//! The `CP` data area: ordered groups of ordered `key=value` pairs, borrowed from the frame.
//!
//! HJ 212-2017 §6.3.3.1: `;` separates items and `,` separates the values of one item, so
//! `DataTime=…;w01018-Rtd=2.2,w01018-Flag=N` is two groups, the second with two pairs. There is
//! no escaping. Log text is wrapped in `//…//` (notes under Appendix C.40/C.41) and may contain
//! separators, so a value that starts with `//` runs to the next `//`.
//!
//! Nothing is trimmed or normalised in what is stored, so writing the groups back gives the same
//! bytes; the accessors ([`Pair::key`], [`Pair::value`]) trim the spaces that the standard's own
//! examples contain (`CP=&& PolId=…`, `i12003-Info =0`).
//!
//! Invariant: iteration never allocates and never panics.

use crate::scan::{PairEnds, PairScanner};

/// The data area between `CP=&&` and the closing `&&`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cp<'a> {
    text: &'a str,
    offset: usize,
}

impl<'a> Cp<'a> {
    /// Wraps a data area that starts `offset` bytes into its data segment.
    #[must_use]
    pub const fn new(text: &'a str, offset: usize) -> Self {
        Self { text, offset }
    }

    /// The raw data area.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// Offset of the data area in the data segment.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// True for `CP=&&&&`.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The `;`-separated groups, in order. An empty data area has no groups.
    #[must_use]
    pub fn groups(&self) -> Groups<'a> {
        Groups { text: self.text, pos: 0, base: self.offset, done: self.text.is_empty() }
    }

    /// Every pair of every group, in order (one pass over the text).
    #[must_use]
    pub fn pairs(&self) -> Pairs<'a> {
        Pairs::new(self.text, self.offset, self.text.is_empty())
    }

    /// The value of the first pair whose trimmed key is `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs().find(|p| p.key() == key).and_then(|p| p.value())
    }
}

/// One `;`-separated group of pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group<'a> {
    text: &'a str,
    offset: usize,
}

impl<'a> Group<'a> {
    /// The raw text of the group.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// Offset of the group in the data segment.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// The `,`-separated pairs, in order.
    #[must_use]
    pub fn pairs(&self) -> Pairs<'a> {
        Pairs::new(self.text, self.offset, false)
    }
}

/// One `key=value` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    raw_key: &'a str,
    raw_value: Option<&'a str>,
    offset: usize,
}

impl<'a> Pair<'a> {
    /// Splits one raw pair at its first `=`.
    #[must_use]
    pub fn parse(raw: &'a str, offset: usize) -> Self {
        match raw.split_once('=') {
            Some((k, v)) => Self { raw_key: k, raw_value: Some(v), offset },
            None => Self { raw_key: raw, raw_value: None, offset },
        }
    }

    /// The key with surrounding spaces removed.
    #[must_use]
    #[inline]
    pub fn key(&self) -> &'a str {
        trim(self.raw_key)
    }

    /// The value with surrounding spaces removed; `None` when the pair has no `=`.
    #[must_use]
    #[inline]
    pub fn value(&self) -> Option<&'a str> {
        self.raw_value.map(trim)
    }

    /// The key exactly as received.
    #[must_use]
    pub const fn raw_key(&self) -> &'a str {
        self.raw_key
    }

    /// The value exactly as received.
    #[must_use]
    pub const fn raw_value(&self) -> Option<&'a str> {
        self.raw_value
    }

    /// Offset of the pair in the data segment.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Offset of the value in the data segment (of the key when there is no value).
    #[must_use]
    pub const fn value_offset(&self) -> usize {
        match self.raw_value {
            Some(_) => self.offset + self.raw_key.len() + 1,
            None => self.offset,
        }
    }

    /// The key split at its last `-` into a code and a suffix (`w01018-Rtd` → `w01018`, `Rtd`).
    ///
    /// Codes may themselves contain `-` (`Nh3-scr-Rtd`), so the split is at the last one.
    #[must_use]
    pub fn code_and_suffix(&self) -> Option<(&'a str, &'a str)> {
        self.key().rsplit_once('-')
    }
}

/// One pair found by [`scan_pair`]: key end, whether there is a `=`, and pair end (the index of
/// the `;` or `,` that ends it, or the text's length).
#[derive(Clone, Copy)]
struct Scanned {
    key_end: usize,
    has_value: bool,
    end: usize,
}

/// Reads one pair starting at `start`: the key runs to the first `=`, `;` or `,`; the value runs
/// to the next `;` or `,`, except that a value starting with `//` (after spaces) runs to the
/// closing `//` first.
///
/// One pass, a block of bytes at a time ([`crate::scan::pair_ends`]); a value that starts with a
/// space or `/` is re-read out of line.
#[inline(always)]
fn scan_pair(b: &[u8], start: usize) -> Scanned {
    finish_pair(b, crate::scan::pair_ends(b, start))
}

/// The pair from its separators, re-reading a value that may be a log out of line.
#[inline(always)]
fn finish_pair(b: &[u8], p: PairEnds) -> Scanned {
    if p.eq && matches!(b.get(p.key_end + 1), Some(b' ' | b'/')) {
        return scan_value_slow(b, p.key_end);
    }
    Scanned { key_end: p.key_end, has_value: p.eq, end: p.end }
}

/// The value after the `=` at `eq` when it starts with a space or `/`: a log value `//…//`
/// runs to its closing `//` (or to the end when it is missing) before the separator search.
#[cold]
#[inline(never)]
fn scan_value_slow(b: &[u8], eq: usize) -> Scanned {
    let len = b.len();
    let mut i = eq + 1;
    let mut j = i;
    while j < len && b[j] == b' ' {
        j += 1;
    }
    if j + 1 < len && b[j] == b'/' && b[j + 1] == b'/' {
        i = match memchr::memmem::find(&b[j + 2..], b"//") {
            Some(k) => j + 2 + k + 2,
            None => len,
        };
    }
    let end = crate::scan::find2(b, i.min(len), b';', b',');
    Scanned { key_end: eq, has_value: true, end }
}

/// Trims ASCII spaces (and, rarely, other white space) from both ends.
///
/// The common case (printable ASCII at both ends) is two compares, inlined into the accessors;
/// the rest goes to an out-of-line call.
#[inline(always)]
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if f.wrapping_sub(b'!') < 0x5F && l.wrapping_sub(b'!') < 0x5F => s,
        _ => trim_slow(s),
    }
}

#[cold]
#[inline(never)]
fn trim_slow(s: &str) -> &str {
    s.trim()
}

/// Iterator over the groups of a [`Cp`].
#[derive(Debug, Clone)]
pub struct Groups<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
    done: bool,
}

impl<'a> Iterator for Groups<'a> {
    type Item = Group<'a>;

    fn next(&mut self) -> Option<Group<'a>> {
        if self.done {
            return None;
        }
        let b = self.text.as_bytes();
        let start = self.pos;
        let mut at = start;
        loop {
            let s = scan_pair(b, at);
            match b.get(s.end) {
                Some(b',') => at = s.end + 1,
                Some(_) => {
                    self.pos = s.end + 1;
                    return Some(Group { text: &self.text[start..s.end], offset: self.base + start });
                }
                _ => {
                    self.done = true;
                    return Some(Group { text: &self.text[start..s.end], offset: self.base + start });
                }
            }
        }
    }
}

/// Iterator over pairs: of one [`Group`], or of a whole [`Cp`] across its groups.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
    done: bool,
    scanner: PairScanner,
}

impl<'a> Pairs<'a> {
    const fn new(text: &'a str, base: usize, done: bool) -> Self {
        Self { text, pos: 0, base, done, scanner: PairScanner::new() }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Pair<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Pair<'a>> {
        if self.done {
            return None;
        }
        let b = self.text.as_bytes();
        let start = self.pos;
        let s = finish_pair(b, self.scanner.pair_ends(b, start));
        let pair = Pair {
            raw_key: &self.text[start..s.key_end],
            raw_value: if s.has_value { Some(&self.text[s.key_end + 1..s.end]) } else { None },
            offset: self.base + start,
        };
        if s.end == b.len() {
            self.done = true;
        } else {
            self.pos = s.end + 1;
        }
        Some(pair)
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::vec::Vec;

    use super::*;

    fn shape(cp: &Cp<'_>) -> Vec<Vec<(&'static str, Option<&'static str>)>> {
        cp.groups()
            .map(|g| {
                g.pairs()
                    .map(|p| {
                        let k: &'static str = alloc::string::String::from(p.raw_key()).leak();
                        let v = p.raw_value().map(|v| &*alloc::string::String::from(v).leak());
                        (k, v)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn groups_and_pairs_keep_order() {
        let cp = Cp::new("DataTime=20160801084000;w01018-Rtd=2.2,w01018-Flag=N", 0);
        assert_eq!(
            shape(&cp),
            [
                alloc::vec![("DataTime", Some("20160801084000"))],
                alloc::vec![("w01018-Rtd", Some("2.2")), ("w01018-Flag", Some("N"))]
            ]
        );
        assert_eq!(cp.get("w01018-Flag"), Some("N"));
    }

    #[test]
    fn log_values_may_contain_separators() {
        let cp = Cp::new("DataTime=20160801085000;i11001-Info=//a;b,c=d//,x=1", 10);
        let groups: Vec<_> = cp.groups().collect();
        assert_eq!(groups.len(), 2);
        let pairs: Vec<_> = groups[1].pairs().collect();
        assert_eq!(pairs[0].value(), Some("//a;b,c=d//"));
        assert_eq!(pairs[1].key(), "x");
        assert_eq!(pairs[1].offset(), 10 + 24 + 24);
    }

    #[test]
    fn unclosed_log_runs_to_the_end() {
        let cp = Cp::new("i11001-Info=//never closed;x=1", 0);
        assert_eq!(cp.groups().count(), 1);
    }

    #[test]
    fn empty_area_has_no_groups_and_empty_tokens_are_kept() {
        assert_eq!(Cp::new("", 0).groups().count(), 0);
        assert_eq!(
            shape(&Cp::new("a=1;;b", 0)),
            [alloc::vec![("a", Some("1"))], alloc::vec![("", None)], alloc::vec![("b", None)]]
        );
    }

    /// The rules of [`scan_pair`] written as a byte loop, as an oracle for the word-wise scan.
    fn pairs_bytewise(text: &str) -> Vec<(usize, &str, Option<&str>)> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut pos = 0;
        if text.is_empty() {
            return out;
        }
        loop {
            let mut i = pos;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
                i += 1;
            }
            let (key_end, value, end) = if i < b.len() && b[i] == b'=' {
                let mut j = i + 1;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                let mut k = i + 1;
                if j + 1 < b.len() && b[j] == b'/' && b[j + 1] == b'/' {
                    k = text[j + 2..].find("//").map_or(b.len(), |x| j + 2 + x + 2);
                }
                while k < b.len() && !matches!(b[k], b';' | b',') {
                    k += 1;
                }
                (i, Some(&text[i + 1..k]), k)
            } else {
                (i, None, i)
            };
            out.push((pos, &text[pos..key_end], value));
            if end == b.len() {
                return out;
            }
            pos = end + 1;
        }
    }

    #[test]
    fn word_wise_scan_equals_the_byte_loop() {
        const ALPHABET: &[u8] = b"ab=;, /=x,;/";
        let mut x: u32 = 7;
        let mut text = alloc::string::String::new();
        for round in 0..20_000 {
            text.clear();
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = (x >> 16) as usize % if round % 8 == 0 { 200 } else { 40 };
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                text.push(char::from(ALPHABET[(x >> 16) as usize % ALPHABET.len()]));
            }
            let got: Vec<_> = Cp::new(&text, 0).pairs().map(|p| (p.offset(), p.raw_key(), p.raw_value())).collect();
            assert_eq!(got, pairs_bytewise(&text), "round {round}: {text:?}");
            let joined: Vec<_> = Cp::new(&text, 0).groups().flat_map(|g| g.pairs()).map(|p| p.offset()).collect();
            assert_eq!(joined, got.iter().map(|p| p.0).collect::<Vec<_>>(), "{text:?}");
        }
    }

    #[test]
    fn keys_split_at_the_last_hyphen_and_spaces_are_trimmed() {
        let p = Pair::parse(" Nh3-scr-Rtd =4.1", 0);
        assert_eq!(p.code_and_suffix(), Some(("Nh3-scr", "Rtd")));
        assert_eq!(p.value(), Some("4.1"));
        assert_eq!(p.raw_key(), " Nh3-scr-Rtd ");
    }
}
