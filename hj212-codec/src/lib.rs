//! HJ 212 (HJ 212-2017, with HJ/T 212-2005 tolerance and HJ 212-2025 readiness) in three layers:
//!
//! 1. **Frames** — [`Splitter`] finds `##LLLL…CCCC\r\n` frames in a byte stream that arrives in
//!    pieces, skipping and reporting garbage; [`crc`] computes the Appendix A checksum (and the
//!    Modbus variants that devices send instead).
//! 2. **Packets** — [`Packet::parse`] reads the data segment without copying: header fields in any
//!    order and the `CP` data area as ordered groups of ordered pairs ([`Cp`]); [`Decoded`] joins
//!    the two with a strict or lenient verdict.
//! 3. **Messages** — typed views for the commands of HJ 212-2017 Table 9 ([`message`]), code
//!    tables of Appendix B ([`tables`]), an encoder ([`encode`]), sub-packets ([`subpacket`]) and
//!    QN generation ([`qn`]).
//!
//! The crate does no IO and never reads a clock: times are passed in.
//!
//! ```
//! use hj212_codec::{DecodeOptions, Decoded, Split, Splitter};
//!
//! let wire = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";
//! let Split::Frame(frame) = Splitter::default().split(wire, false) else { panic!() };
//! let decoded = Decoded::new(frame, DecodeOptions::STRICT);
//! let packet = decoded.verdict().unwrap();
//! assert_eq!(packet.cn(), 1062);
//! assert_eq!(packet.cp().get("RtdInterval"), Some("30"));
//! # #[cfg(feature = "alloc")] {
//! let owned = hj212_codec::encode::OwnedPacket::from_packet(&packet);
//! assert_eq!(owned.to_frame(hj212_codec::crc::CrcVariant::Hj212).unwrap(), wire);
//! # }
//! ```
//!
//! # Feature flags
//! - `alloc`: owned packets, the encoder, sub-packets, the [`Deframer`], typed messages.
//! - `std` (default): implies `alloc`; adds `std::error::Error` for [`Error`].
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
// The README's example runs as a doctest too.
#![cfg_attr(doctest, doc = include_str!("../README.md"))]
#![cfg_attr(not(fuzzing), warn(missing_docs))]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod codes;
pub mod cp;
pub mod crc;
mod decode;
mod error;
pub mod frame;
pub mod packet;
mod scan;
pub mod tables;
pub mod time;

#[cfg(feature = "alloc")]
pub mod crypt;
#[cfg(feature = "alloc")]
pub mod encode;
#[cfg(feature = "alloc")]
pub mod log;
#[cfg(feature = "alloc")]
pub mod message;
#[cfg(feature = "alloc")]
pub mod qn;
#[cfg(feature = "alloc")]
pub mod session;
#[cfg(feature = "alloc")]
pub mod subpacket;

pub use codes::{CalibrationType, CheckResult, Command, DataFlag, ExeRtn, QnRtn, Suffix};
pub use cp::{Cp, Group, Pair};
pub use crc::{CrcPolicy, CrcVariant};
pub use decode::{DecodeOptions, Decoded};
pub use error::{Error, ErrorKind};
#[cfg(feature = "alloc")]
pub use frame::{Deframer, Event};
pub use frame::{Deviations, RawFrame, SkipReason, Split, SplitConfig, Splitter};
pub use packet::{Flag, Packet, Version};
