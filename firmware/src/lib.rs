//! The site's logic for an HJ 212 data acquisition unit: the Modbus RTU master that polls analyzers,
//! analyzer profiles, an analyzer simulator, and the HJ 212-2017 Appendix D statistics.
//!
//! The crate is `#![no_std]`; it reads no clock (time is always passed in) and does no IO of its own
//! (the drivers are generic over embedded-hal / embedded-io traits).
//!
//! # Feature flags
//! - `alloc`: owned profiles, the simulator ([`sim`]), `Vec`-returning helpers, and the
//!   message-producing layers: [`acquire`] (samples, flags, 2011/2051/2061/2031/2021/2041) and
//!   [`dynamic`] (dynamic control: 3020 on change and periodically, 2062).
//! - `std` (default): implies `alloc`; serde deserialisation of profiles, `std::error::Error` impls.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), warn(missing_docs))]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod acquire;
#[cfg(feature = "alloc")]
pub mod dynamic;
pub mod modbus;
pub mod profile;
#[cfg(feature = "alloc")]
pub mod sim;
pub mod stats;
