//! Modbus RTU master: sans-IO frames, line timing, request coalescing, dead-device isolation, and
//! blocking and async drivers on the embedded-hal / embedded-io traits.
//!
//! HJ 212-2017 §7 recommends two-wire RS-485 with one master and many slaves, speaking Modbus RTU
//! per GB/T 19582-2008. Layering, from the bytes up:
//! - [`frame`]: encode requests into a caller buffer; parse answers, resynchronising after noise;
//! - [`timing`]: t1.5, t3.5 and turnaround from the baud rate;
//! - [`coalesce`](mod@coalesce): merge a poll list into few reads;
//! - [`health`]: per-device communication state, back-off, and i12002;
//! - [`Master`] / [`AsyncMaster`]: the drivers.
//!
//! Invariant for the whole module: no allocation, no clock, no panic on bytes from the wire.

pub mod coalesce;
mod driver;
mod driver_async;
pub mod frame;
pub mod health;
pub mod timing;

#[cfg(feature = "alloc")]
pub use coalesce::coalesce_vec;
pub use coalesce::{CoalesceConfig, CoalesceError, ReadBlock, coalesce};
pub use driver::{Error, Master, MasterConfig, MasterStats};
pub use driver_async::AsyncMaster;
pub use frame::{
    Bits, EncodeError, Exception, ExceptionCode, Expect, FrameError, FrameErrorKind, FunctionCode, Parsed, Registers,
    Request, Response, ResponseError, Shape, crc16, encode_request, finish_response, parse_response,
};
pub use health::{CommState, DeviceHealth, HealthConfig, HealthTable};
pub use timing::Timing;
