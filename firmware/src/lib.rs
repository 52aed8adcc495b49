//! The site's logic for an HJ 212 data acquisition unit: the Modbus RTU master that polls analyzers,
//! analyzer profiles, an analyzer simulator, and the HJ 212-2017 Appendix D statistics.
//!
//! The crate is `#![no_std]`; it reads no clock (time is always passed in) and does no IO of its own
//! (the drivers are generic over embedded-hal / embedded-io traits).
//!
//! # Feature flags
//! - `alloc`: owned profiles, the simulator ([`sim`]), `Vec`-returning helpers.
//! - `std` (default): implies `alloc`; serde deserialisation of profiles, `std::error::Error` impls.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), warn(missing_docs))]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod modbus;
pub mod profile;
#[cfg(feature = "alloc")]
pub mod sim;
pub mod stats;
