//! The HJ 212 data acquisition unit for embedded Linux, and the library behind the `hj212` CLI.
#![forbid(unsafe_code)]

pub mod cli;
