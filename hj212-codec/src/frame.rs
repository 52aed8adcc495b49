//! Finding frames in a byte stream.
//!
//! A frame is `##` + four decimal digits (the data-segment length) + the data segment + four hex
//! digits (the CRC) + CR LF (HJ 212-2017 §6.3.1, Table 2). Bytes arrive from TCP or a serial line in
//! arbitrary pieces, with garbage between frames, and real senders do not always count the length
//! the way the standard does. [`Splitter::split`] looks at the start of a buffer and says one of three
//! things: here is a complete frame of `n` bytes, skip `n` bytes of garbage, or wait for more bytes.
//!
//! How the end of a frame is found (the same rules are written out in `docs/protocol.md`):
//!
//! 1. If the declared length lines up (four hex digits and CR LF right after the declared data
//!    segment), that is the frame. This is the only rule that can cut an HJ 212-2025 frame whose
//!    encrypted `CP` contains CR or LF bytes.
//! 2. Otherwise the frame ends at the first line feed after the length field, provided the four
//!    bytes before it (and before an optional CR, or two) are hex digits. Because that line feed may
//!    belong to the frame's own data in the encrypted case, rule 2 is applied only once the buffer
//!    holds the whole declared frame, or the line feed is followed by `##`, or the CRC before it
//!    verifies, or the stream has ended.
//! 3. If a new `##` + four digits appears before any line feed, the bytes before it are a truncated
//!    frame and are skipped with [`ErrorKind::Truncated`].
//!
//! Invariants: `split` never panics, never allocates, never returns a length larger than its input,
//! and every call on a non-empty buffer either makes progress or asks for more bytes. A trailing `#`
//! is kept, because it may be the first half of the next `##`.

use crate::crc::{self, CrcPolicy, CrcVariant};
use crate::error::{Error, ErrorKind};

/// The largest data segment HJ 212-2017 allows (§6.3.1, Table 2).
pub const MAX_DATA_LEN_2017: usize = 1024;

/// The largest length the four-digit field can express.
pub const MAX_DATA_LEN_FIELD: usize = 9999;

/// Bytes around the data segment: `##`, the length, the CRC and CR LF.
pub const FRAME_OVERHEAD: usize = 12;

/// Ways in which a frame departs from the standard but can still be read.
///
/// A lenient receiver accepts them and reports them; a strict receiver refuses the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Deviations(u16);

impl Deviations {
    /// No deviation.
    pub const NONE: Self = Self(0);
    /// The length field does not match the data segment (often: characters counted, not bytes).
    pub const LENGTH_MISMATCH: Self = Self(1 << 0);
    /// The data segment is longer than 1024 bytes.
    pub const OVER_1024: Self = Self(1 << 1);
    /// The frame ends with a bare LF.
    pub const BARE_LF: Self = Self(1 << 2);
    /// The frame ends with CR CR LF.
    pub const DOUBLE_CR: Self = Self(1 << 3);
    /// The CRC is a Modbus variant.
    pub const NON_STANDARD_CRC: Self = Self(1 << 4);
    /// `CP` has no closing `&&`.
    pub const UNTERMINATED_CP: Self = Self(1 << 5);
    /// `CP=&&` does not start a field (`Flag=5CP=&&`).
    pub const MISPLACED_CP: Self = Self(1 << 6);
    /// A header field is separated by `,` instead of `;` (`QN=…534,ST=32`, Appendix C.22).
    pub const HEADER_COMMA: Self = Self(1 << 7);

    const NAMES: [(Self, &'static str); 8] = [
        (Self::LENGTH_MISMATCH, "length_mismatch"),
        (Self::OVER_1024, "over_1024"),
        (Self::BARE_LF, "bare_lf"),
        (Self::DOUBLE_CR, "double_cr"),
        (Self::NON_STANDARD_CRC, "non_standard_crc"),
        (Self::UNTERMINATED_CP, "unterminated_cp"),
        (Self::MISPLACED_CP, "misplaced_cp"),
        (Self::HEADER_COMMA, "header_comma"),
    ];

    /// True when no deviation is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every deviation in `other` is set here.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Adds the deviations of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// The raw bits, for counters.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The stable names of the deviations that are set, such as `length_mismatch`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().filter(move |(d, _)| self.contains(*d)).map(|(_, n)| n)
    }
}

/// How a [`Splitter`] treats the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitConfig {
    /// The largest declared data-segment length accepted; larger frames are skipped as garbage.
    pub max_data_len: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { max_data_len: MAX_DATA_LEN_FIELD }
    }
}

/// Why bytes were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Bytes before a `##`.
    Garbage,
    /// A `##` that does not start a readable frame; the error says why.
    Broken(ErrorKind),
}

impl SkipReason {
    /// A short stable name for logs and JSON.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Garbage => "garbage",
            Self::Broken(kind) => kind.name(),
        }
    }
}

/// What [`Splitter::split`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// A frame occupies the first `frame.len()` bytes.
    Frame(RawFrame<'a>),
    /// The first `len` bytes are not part of any frame.
    Skip {
        /// How many bytes to drop.
        len: usize,
        /// Why.
        reason: SkipReason,
    },
    /// The buffer holds the start of a frame (or nothing); read more bytes.
    Incomplete,
}

/// A frame cut from the stream: its bytes, located but not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    bytes: &'a [u8],
    declared_len: usize,
    data_end: usize,
    deviations: Deviations,
}

impl<'a> RawFrame<'a> {
    /// The whole frame, from `##` through the terminator.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The frame's length in bytes, terminator included.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // A frame is never empty.
    pub const fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The data segment: the bytes the CRC covers.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        &self.bytes[6..self.data_end]
    }

    /// The length the frame declares.
    #[must_use]
    pub const fn declared_len(&self) -> usize {
        self.declared_len
    }

    /// The four CRC characters as received.
    #[must_use]
    pub fn crc_text(&self) -> &'a [u8] {
        &self.bytes[self.data_end..self.data_end + 4]
    }

    /// The CRC value the frame carries.
    #[must_use]
    #[inline]
    pub fn crc_received(&self) -> u16 {
        // The splitter only builds frames whose CRC field is four hex digits.
        crc::from_hex(self.crc_text()).unwrap_or(0)
    }

    /// True when the CRC was written with lower-case letters (allowed; noted for re-encoding).
    #[must_use]
    pub fn crc_is_lowercase(&self) -> bool {
        self.crc_text().iter().any(u8::is_ascii_lowercase)
    }

    /// Framing deviations found while cutting the frame.
    #[must_use]
    pub const fn deviations(&self) -> Deviations {
        self.deviations
    }

    /// Byte offset of the CRC field, from the start of the frame.
    #[must_use]
    pub const fn crc_offset(&self) -> usize {
        self.data_end
    }

    /// Checks the CRC under `policy`.
    ///
    /// # Errors
    /// [`ErrorKind::CrcMismatch`] at the CRC's offset when no accepted variant matches.
    pub fn check_crc(&self, policy: CrcPolicy) -> Result<CrcVariant, Error> {
        let received = self.crc_received();
        policy
            .check(self.data(), received)
            .map_err(|computed| Error::new(ErrorKind::CrcMismatch { computed, received }, self.data_end))
    }
}

/// Cuts frames from the start of a buffer. Stateless and cheap to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Splitter {
    config: SplitConfig,
}

impl Splitter {
    /// A splitter with the given limits.
    #[must_use]
    pub const fn new(config: SplitConfig) -> Self {
        Self { config }
    }

    /// The limits in force.
    #[must_use]
    pub const fn config(&self) -> SplitConfig {
        self.config
    }

    /// Looks at the start of `buf`. `eof` says that no more bytes will come.
    ///
    /// The caller drops `frame.len()` or `len` bytes after handling a `Frame` or `Skip`, and calls
    /// again; on `Incomplete` it appends more bytes (or calls once more with `eof = true`).
    #[must_use]
    pub fn split<'a>(&self, buf: &'a [u8], eof: bool) -> Split<'a> {
        if buf.is_empty() {
            return Split::Incomplete;
        }
        if !buf.starts_with(b"##") {
            return skip_garbage(buf, eof);
        }
        if buf.len() < 6 {
            if buf[2..].iter().all(u8::is_ascii_digit) {
                return if eof { broken(buf.len(), ErrorKind::Truncated) } else { Split::Incomplete };
            }
            return broken(1, ErrorKind::BadLengthField);
        }
        let Some(declared) = parse_digits(&buf[2..6]) else {
            return broken(1, ErrorKind::BadLengthField);
        };
        if declared > self.config.max_data_len {
            return broken(1, ErrorKind::FrameTooLong { declared, max: self.config.max_data_len });
        }
        // Rule 1: the declared length lines up.
        let exact = 6 + declared;
        if let Some(frame) = exact_frame(buf, declared, exact) {
            return Split::Frame(frame);
        }
        // The declared length may still line up once more bytes arrive.
        let have_declared = buf.len() >= exact + 6;
        // Rule 2: the first line feed after the length field.
        let window_end = buf.len().min(6 + self.config.max_data_len + 7);
        let window = &buf[6..window_end];
        let newline = memchr::memchr(b'\n', window).map(|i| 6 + i);
        let candidate = newline.and_then(|nl| line_frame(buf, declared, nl).map(|f| (nl, f)));
        // A candidate whose CRC verifies is a frame whatever else the buffer holds.
        if let Some((_, frame)) = candidate {
            if CrcPolicy::Auto.check(frame.data(), frame.crc_received()).is_ok() {
                return Split::Frame(frame);
            }
        }
        // Rule 3: a new frame starts before this one ended. A `##` + four digits may also sit
        // inside a value of a frame still arriving, so cut only once this frame cannot grow into
        // its declared length any more, or a line feed has arrived.
        if let Some(next) = next_frame_start(&buf[..newline.unwrap_or(buf.len())], 2) {
            return if have_declared || eof || newline.is_some() {
                broken(next, ErrorKind::Truncated)
            } else {
                Split::Incomplete
            };
        }
        match (newline, candidate) {
            (Some(nl), Some((_, frame))) => {
                if have_declared || eof || followed_by_frame(buf, nl) {
                    Split::Frame(frame)
                } else {
                    Split::Incomplete
                }
            }
            // A line that does not end in a CRC: if it could not be an encrypted frame's data,
            // drop it through its line feed.
            (Some(nl), None) => {
                if have_declared || eof || followed_by_frame(buf, nl) {
                    broken(nl + 1, ErrorKind::BadCrcField)
                } else {
                    Split::Incomplete
                }
            }
            (None, _) => {
                if eof || window_end == 6 + self.config.max_data_len + 7 {
                    return broken(buf.len().min(window_end), ErrorKind::Truncated);
                }
                Split::Incomplete
            }
        }
    }
}

fn broken(len: usize, kind: ErrorKind) -> Split<'static> {
    Split::Skip { len, reason: SkipReason::Broken(kind) }
}

/// Skips everything before the next `##`, keeping a trailing `#` until the stream ends.
fn skip_garbage(buf: &[u8], eof: bool) -> Split<'_> {
    let len = match memchr::memmem::find(&buf[1..], b"##") {
        Some(i) => i + 1,
        None if buf.ends_with(b"#") && !eof => buf.len() - 1,
        None => buf.len(),
    };
    if len == 0 { Split::Incomplete } else { Split::Skip { len, reason: SkipReason::Garbage } }
}

fn parse_digits(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0')))
}

/// Four hex digits (branch-free: see [`crc::from_hex`]).
fn is_hex4(b: &[u8]) -> bool {
    b.len() == 4 && b.iter().fold(true, |ok, &d| ok & crc::is_hex_digit(d))
}

/// Rule 1: `##LLLL` + exactly `declared` bytes + CRC + terminator.
fn exact_frame(buf: &[u8], declared: usize, data_end: usize) -> Option<RawFrame<'_>> {
    let crc_field = buf.get(data_end..data_end + 4)?;
    if !is_hex4(crc_field) {
        return None;
    }
    let tail = &buf[data_end + 4..];
    let (term_len, deviation) = if tail.starts_with(b"\r\n") {
        (2, Deviations::NONE)
    } else if tail.starts_with(b"\n") {
        (1, Deviations::BARE_LF)
    } else if tail.starts_with(b"\r\r\n") {
        (3, Deviations::DOUBLE_CR)
    } else {
        return None;
    };
    let mut deviations = deviation;
    if declared > MAX_DATA_LEN_2017 {
        deviations.insert(Deviations::OVER_1024);
    }
    Some(RawFrame { bytes: &buf[..data_end + 4 + term_len], declared_len: declared, data_end, deviations })
}

/// Rule 2: a frame whose line feed is at `nl`.
fn line_frame(buf: &[u8], declared: usize, nl: usize) -> Option<RawFrame<'_>> {
    let mut deviations = Deviations::NONE;
    let mut term_start = nl;
    if buf[nl - 1] == b'\r' {
        term_start -= 1;
        if buf[term_start - 1] == b'\r' && term_start >= 11 {
            term_start -= 1;
            deviations.insert(Deviations::DOUBLE_CR);
        }
    } else {
        deviations.insert(Deviations::BARE_LF);
    }
    let data_end = term_start.checked_sub(4)?;
    if data_end < 6 || !is_hex4(&buf[data_end..term_start]) {
        return None;
    }
    let actual = data_end - 6;
    if actual != declared {
        deviations.insert(Deviations::LENGTH_MISMATCH);
    }
    if actual > MAX_DATA_LEN_2017 {
        deviations.insert(Deviations::OVER_1024);
    }
    Some(RawFrame { bytes: &buf[..=nl], declared_len: declared, data_end, deviations })
}

/// True when the byte after the line feed at `nl` starts a new frame (or may, when it is the last).
fn followed_by_frame(buf: &[u8], nl: usize) -> bool {
    match buf.get(nl + 1..) {
        Some([]) | None => false,
        Some(rest) => rest.starts_with(b"##") || rest == b"#",
    }
}

/// The offset of the next `##` followed by four digits, searching from `from`.
fn next_frame_start(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memmem::find(&buf[at..], b"##") {
        let start = at + i;
        let digits = buf.get(start + 2..(start + 6).min(buf.len())).unwrap_or(&[]);
        if digits.iter().all(u8::is_ascii_digit) && (digits.len() == 4 || start + 6 > buf.len()) {
            if digits.len() == 4 {
                return Some(start);
            }
            return None;
        }
        at = start + 1;
    }
    None
}

/// An event produced by a [`Deframer`], with its offset in the whole stream.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A frame was cut; `offset` is the stream offset of its first `#`.
    Frame {
        /// Stream offset of the frame.
        offset: u64,
        /// The frame.
        frame: RawFrame<'a>,
    },
    /// Bytes that belong to no frame.
    Skipped {
        /// Stream offset of the first skipped byte.
        offset: u64,
        /// How many bytes were skipped.
        len: usize,
        /// Why (the reason of the first skip when several runs were merged).
        reason: SkipReason,
    },
}

/// A buffering front end to [`Splitter`] for callers that read a stream in pieces.
///
/// Feed bytes with [`Deframer::feed`], then call [`Deframer::next_event`] until it returns `None`.
/// Adjacent skipped runs within what is buffered are merged into one event; garbage that goes on
/// in a later read is reported as a further event (a run is reported as soon as it is known, not
/// held back in case more follows). Memory stays bounded by the longest frame the splitter
/// accepts plus one read.
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
pub struct Deframer {
    splitter: Splitter,
    buf: alloc::vec::Vec<u8>,
    start: usize,
    consumed: u64,
    pending: usize,
    eof: bool,
}

#[cfg(feature = "alloc")]
impl Deframer {
    /// A deframer with the given splitter.
    #[must_use]
    pub fn new(splitter: Splitter) -> Self {
        Self { splitter, ..Self::default() }
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.settle();
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Says that the stream has ended; the rest of the buffer is then resolved.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Bytes held and not yet resolved.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start - self.pending
    }

    /// Stream offset of the next unresolved byte.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.consumed + self.pending as u64
    }

    fn settle(&mut self) {
        self.start += self.pending;
        self.consumed += self.pending as u64;
        self.pending = 0;
    }

    /// The next frame or skipped run, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        self.settle();
        let Self { splitter, buf, start, consumed, pending, eof } = self;
        let mut skipped: Option<(usize, SkipReason)> = None;
        loop {
            let at = *start + skipped.map_or(0, |s| s.0);
            match splitter.split(&buf[at..], *eof) {
                Split::Skip { len, reason } => skipped.get_or_insert((0, reason)).0 += len,
                Split::Frame(frame) if skipped.is_none() => {
                    *pending = frame.len();
                    return Some(Event::Frame { offset: *consumed, frame });
                }
                Split::Frame(_) | Split::Incomplete => break,
            }
        }
        let (len, reason) = skipped?;
        *pending = len;
        Some(Event::Skipped { offset: *consumed, len, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: &[u8] = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

    fn frame_of(split: Split<'_>) -> RawFrame<'_> {
        match split {
            Split::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn exact_frame_and_trailing_bytes_are_left() {
        let mut wire = ANCHOR.to_vec();
        wire.extend_from_slice(b"##00");
        let f = frame_of(Splitter::default().split(&wire, false));
        assert_eq!(f.len(), ANCHOR.len());
        assert_eq!(&wire[f.len()..], b"##00");
        assert_eq!(f.crc_received(), 0x1C80);
        assert!(f.deviations().is_empty());
        assert_eq!(f.check_crc(CrcPolicy::Auto), Ok(CrcVariant::Hj212));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for n in 0..ANCHOR.len() {
            assert_eq!(Splitter::default().split(&ANCHOR[..n], false), Split::Incomplete, "prefix {n}");
        }
    }

    #[test]
    fn garbage_is_skipped_up_to_the_next_header_and_a_trailing_hash_is_kept() {
        assert_eq!(Splitter::default().split(b"xyz##0", false), Split::Skip { len: 3, reason: SkipReason::Garbage });
        assert_eq!(Splitter::default().split(b"xyz#", false), Split::Skip { len: 3, reason: SkipReason::Garbage });
        assert_eq!(Splitter::default().split(b"#", false), Split::Incomplete);
        assert_eq!(
            Splitter::default().split(b"##AB##0101", false),
            Split::Skip { len: 1, reason: SkipReason::Broken(ErrorKind::BadLengthField) }
        );
    }

    #[test]
    fn length_counted_in_characters_is_found_by_the_line_feed() {
        // Two three-byte characters counted as one each: declared 4 short.
        let seg = "QN=1;ST=32;CN=3020;PW=1;MN=1;Flag=4;CP=&&i11001-Info=//清洗//&&";
        let crc = crate::crc::to_hex(crate::crc::hj212(seg.as_bytes()));
        let declared = seg.chars().count();
        let mut wire = alloc::format!("##{declared:04}{seg}").into_bytes();
        wire.extend_from_slice(&crc);
        wire.extend_from_slice(b"\r\n");
        let f = frame_of(Splitter::default().split(&wire, false));
        assert_eq!(f.len(), wire.len());
        assert!(f.deviations().contains(Deviations::LENGTH_MISMATCH));
        assert_eq!(f.check_crc(CrcPolicy::Auto), Ok(CrcVariant::Hj212));
    }

    #[test]
    fn over_declared_length_waits_then_resolves_at_eof() {
        // Missing closing && of CP: declared 121, actual 119 (real log line).
        let wire = b"##0121QN=20250131202809340;ST=39;CN=2051;PW=123456;MN=0507A010003242;Flag=4;CP=&&DataTime=20250131202809;a34001-Avg=92;Flag=N65C0\r\n";
        // The CRC verifies, so the frame is cut without waiting.
        let f = frame_of(Splitter::default().split(wire, false));
        assert_eq!(f.len(), wire.len());
        assert!(f.deviations().contains(Deviations::LENGTH_MISMATCH));
    }

    #[test]
    fn truncated_frame_before_a_new_header_is_skipped() {
        let mut wire = b"##0101QN=2016080108".to_vec();
        wire.extend_from_slice(ANCHOR);
        let s = Splitter::default().split(&wire, false);
        assert_eq!(s, Split::Skip { len: 19, reason: SkipReason::Broken(ErrorKind::Truncated) });
    }

    #[test]
    fn too_long_declared_length_is_refused() {
        let s = Splitter::new(SplitConfig { max_data_len: 1024 }).split(b"##2000QN=", false);
        assert_eq!(
            s,
            Split::Skip { len: 1, reason: SkipReason::Broken(ErrorKind::FrameTooLong { declared: 2000, max: 1024 }) }
        );
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn deframer_merges_skips_and_tracks_offsets() {
        let mut d = Deframer::default();
        let mut wire = b"noise".to_vec();
        wire.extend_from_slice(ANCHOR);
        wire.extend_from_slice(b"\x00\x01##");
        wire.extend_from_slice(ANCHOR);
        d.feed(&wire);
        let mut seen = alloc::vec::Vec::new();
        while let Some(ev) = d.next_event() {
            seen.push(match ev {
                Event::Frame { offset, frame } => (offset, frame.len(), "frame"),
                Event::Skipped { offset, len, .. } => (offset, len, "skip"),
            });
        }
        let n = ANCHOR.len() as u64;
        assert_eq!(
            seen,
            [(0, 5, "skip"), (5, ANCHOR.len(), "frame"), (5 + n, 4, "skip"), (9 + n, ANCHOR.len(), "frame")]
        );
    }
}
