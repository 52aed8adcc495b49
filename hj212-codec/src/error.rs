//! Decode errors: a kind and the byte offset where it was found.
//!
//! Offsets count from the first `#` of the frame unless the method that returns the error says
//! otherwise, so that an operator can find the byte in a hex dump of that frame.

use core::fmt;

use crate::crc::CrcVariant;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The four characters after `##` are not decimal digits.
    BadLengthField,
    /// The length field is larger than the receiver accepts.
    FrameTooLong {
        /// The length the frame declares.
        declared: usize,
        /// The largest data segment accepted.
        max: usize,
    },
    /// The data segment is not as long as the length field says.
    LengthMismatch {
        /// The length the frame declares.
        declared: usize,
        /// The length found between the length field and the CRC.
        actual: usize,
    },
    /// The data segment is over the 1024 bytes that HJ 212-2017 §6.3.1 allows.
    DataTooLong {
        /// The length of the data segment.
        len: usize,
    },
    /// The frame does not end with CR LF after its CRC.
    BadTerminator,
    /// No frame end was found before the next frame began, the stream ended, or the size limit was reached.
    Truncated,
    /// The four characters before the terminator are not hex digits.
    BadCrcField,
    /// The CRC does not match the data segment.
    CrcMismatch {
        /// The value computed over the data segment.
        computed: u16,
        /// The value the frame carries.
        received: u16,
    },
    /// The CRC matches, but with a variant that the standard does not define.
    NonStandardCrc(CrcVariant),
    /// The data segment is not valid UTF-8.
    InvalidUtf8,
    /// The data segment has no `CP=&&`.
    MissingCp,
    /// `CP=&&` is not closed by `&&`.
    UnterminatedCp,
    /// Bytes follow the closing `&&` of `CP`.
    TrailingData,
    /// `CP=&&` does not start a field (for example `Flag=5CP=&&`).
    MisplacedCp,
    /// A header field has no `=`.
    MalformedField,
    /// A mandatory field is absent.
    MissingField(&'static str),
    /// A field's value does not have the form the standard gives it.
    InvalidField(&'static str),
}

impl ErrorKind {
    /// A short stable name for logs, metrics and JSON, such as `crc_mismatch`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::BadLengthField => "bad_length_field",
            Self::FrameTooLong { .. } => "frame_too_long",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::DataTooLong { .. } => "data_too_long",
            Self::BadTerminator => "bad_terminator",
            Self::Truncated => "truncated",
            Self::BadCrcField => "bad_crc_field",
            Self::CrcMismatch { .. } => "crc_mismatch",
            Self::NonStandardCrc(_) => "non_standard_crc",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MissingCp => "missing_cp",
            Self::UnterminatedCp => "unterminated_cp",
            Self::TrailingData => "trailing_data",
            Self::MisplacedCp => "misplaced_cp",
            Self::MalformedField => "malformed_field",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField(_) => "invalid_field",
        }
    }
}

/// A decode error: what went wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    offset: usize,
}

impl Error {
    /// Makes an error of `kind` at byte `offset`.
    #[must_use]
    pub const fn new(kind: ErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The byte offset, from the first `#` of the frame.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// The same error with its offset moved by `by` bytes.
    #[must_use]
    pub const fn shifted(self, by: usize) -> Self {
        Self { kind: self.kind, offset: self.offset + by }
    }

    /// True for a checksum that does not match.
    #[must_use]
    pub const fn is_crc(&self) -> bool {
        matches!(self.kind, ErrorKind::CrcMismatch { .. } | ErrorKind::NonStandardCrc(_) | ErrorKind::BadCrcField)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match self.kind {
            ErrorKind::BadLengthField => write!(f, "bad length field at byte {at}: expected four decimal digits"),
            ErrorKind::FrameTooLong { declared, max } => {
                write!(f, "frame too long at byte {at}: declares {declared} bytes, limit is {max}")
            }
            ErrorKind::LengthMismatch { declared, actual } => {
                write!(f, "length mismatch at byte {at}: frame says {declared}, data segment has {actual} bytes")
            }
            ErrorKind::DataTooLong { len } => {
                write!(f, "data segment too long at byte {at}: {len} bytes, HJ 212-2017 allows 1024")
            }
            ErrorKind::BadTerminator => write!(f, "bad terminator at byte {at}: expected CR LF after the CRC"),
            ErrorKind::Truncated => write!(f, "truncated frame at byte {at}: no CRC and CR LF found"),
            ErrorKind::BadCrcField => write!(f, "bad crc field at byte {at}: expected four hex digits"),
            ErrorKind::CrcMismatch { computed, received } => {
                write!(f, "crc mismatch at byte {at}: computed {computed:04X}, frame says {received:04X}")
            }
            ErrorKind::NonStandardCrc(variant) => {
                write!(f, "non-standard crc at byte {at}: the frame uses the {variant} variant, not HJ 212")
            }
            ErrorKind::InvalidUtf8 => write!(f, "invalid utf-8 at byte {at}"),
            ErrorKind::MissingCp => write!(f, "missing CP=&& in the data segment (searched from byte {at})"),
            ErrorKind::UnterminatedCp => write!(f, "unterminated CP at byte {at}: no closing &&"),
            ErrorKind::TrailingData => write!(f, "trailing data at byte {at}: bytes after the closing && of CP"),
            ErrorKind::MisplacedCp => write!(f, "misplaced CP at byte {at}: CP=&& does not follow a ';'"),
            ErrorKind::MalformedField => write!(f, "malformed field at byte {at}: expected Name=Value"),
            ErrorKind::MissingField(name) => write!(f, "missing field {name} (header ends at byte {at})"),
            ErrorKind::InvalidField(name) => write!(f, "invalid value for {name} at byte {at}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn crc_message_reads_as_documented() {
        let e = Error::new(ErrorKind::CrcMismatch { computed: 0x1C80, received: 0x1C08 }, 128);
        assert_eq!(e.to_string(), "crc mismatch at byte 128: computed 1C80, frame says 1C08");
        assert_eq!(e.kind().name(), "crc_mismatch");
        assert!(e.is_crc());
    }
}
