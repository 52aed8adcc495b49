//! Shared pieces of the cross-crate end-to-end tests and of the `hj212-demo` program.
//!
//! The whole chain runs in one process on loopback: simulated analyzers served on pseudo-terminals
//! ([`pty`]), the gateway polling them through the pty slave paths, a controllable TCP proxy
//! ([`proxy`]) where a test wants to cut the uplink, the ingest daemon, an MQTT broker and a
//! subscriber ([`mqtt`]). [`sites`] builds the two demonstration sites (a waste-water outfall and
//! a flue-gas stack) with their configurations; [`packets`] reads packet logs and frames.
//! [`chain`] runs the whole chain with the faults the tests inject, and [`oracle`] is the
//! conservation oracle they check it with. [`daemons`] runs the real daemon binaries as child
//! processes instead, for the tests that kill them with SIGKILL, and the independent Python frame
//! check.
//!
//! Nothing here touches the network beyond 127.0.0.1 or any real hardware; [`chain`] starts a
//! Mosquitto or mounts a small tmpfs (as root) only where a test asks for one.
#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), warn(missing_docs))]

pub mod chain;
pub mod daemons;
pub mod demo;
pub mod mqtt;
pub mod oracle;
pub mod packets;
pub mod proxy;
pub mod pty;
pub mod sites;
pub mod stacks;
pub mod style;
