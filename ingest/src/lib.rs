//! The platform side of HJ 212: accepts data acquisition units and forwards their telemetry.
//!
//! The daemon itself is not written yet; this crate holds its place in the workspace.
