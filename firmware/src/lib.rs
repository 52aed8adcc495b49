#![doc = include_str!("../README.md")]
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
