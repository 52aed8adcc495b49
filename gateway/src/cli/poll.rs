//! `hj212 poll`: poll every configured analyzer once and print what the gateway would upload,
//! without storing or sending it.
//!
//! The path is the daemon's: the same coalesced read blocks, the firmware's async master with the
//! port's settings, `decode_block`, the health table's communication state, and the [`Site`]'s
//! `cycle` (the firmware's acquisition and dynamic-control modules) and `encode` (the site's
//! header). The store is an in-memory one that is thrown away. One cycle gives the real-time
//! upload (2011) and the first dynamic-control snapshot (3020); statistics (2051…) need time.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use embedded_io_adapters::tokio_1::FromTokio;
use firmware::acquire::decode_block;
use firmware::modbus::{AsyncMaster, CommState, HealthConfig, HealthTable, MasterConfig, ReadBlock, Response};
use firmware::profile::{Code, Target, Value};
use hj212_codec::{DecodeOptions, Decoded, Split, Splitter};

use super::Style;
use crate::serial::{self, TokioDelay};
use crate::site::{AnalyzerInfo, Site};
use crate::store::{Record, Store, StoreError, StoreStats};

/// An in-memory store that keeps nothing: `poll` must not touch the daemon's.
#[derive(Debug, Default)]
struct Scratch {
    meta: Mutex<Vec<(String, String)>>,
}

impl Store for Scratch {
    fn append(&self, _: &Record) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn queue_range(&self, _: &str, _: u64, _: usize) -> Result<Vec<(u64, Record)>, StoreError> {
        Ok(Vec::new())
    }
    fn remove(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn queue_len(&self, _: &str) -> u64 {
        0
    }
    fn last_seq(&self, _: &str) -> Option<u64> {
        None
    }
    fn history(&self, _: u16, _: i64, _: i64, _: usize) -> Result<Vec<Record>, StoreError> {
        Ok(Vec::new())
    }
    fn purge_history(&self, _: i64) -> Result<usize, StoreError> {
        Ok(0)
    }
    fn meta(&self, key: &str) -> Option<String> {
        self.meta.lock().ok()?.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        if let Ok(mut m) = self.meta.lock() {
            m.push((key.into(), value.into()));
        }
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// Options of `poll`.
#[derive(Debug, Clone, clap::Args)]
pub struct PollOpts {
    /// The gateway's configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// Print JSON Lines (`decode --json` frames) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Builds the site's analyzers as the daemon does.
///
/// # Errors
/// A profile cannot be loaded.
pub fn analyzers(config: &crate::Config) -> Result<Vec<AnalyzerInfo>> {
    let mut out = Vec::new();
    for (pi, port) in config.serial.iter().enumerate() {
        for an in &port.analyzer {
            let profile = an.load_profile()?;
            let first = profile.points.iter().find_map(|p| match p.target {
                Target::Pollutant(c) => Some(c),
                _ => None,
            });
            let pol_id = an.pol_id.as_deref().and_then(Code::try_new).or(first).unwrap_or(Code::new("w00000"));
            out.push(AnalyzerInfo { name: an.name.clone(), port: pi, profile, pol_id });
        }
    }
    Ok(out)
}

/// Runs `poll`: 0 when every analyzer answered, 1 when some did not, 2 when a port would not open.
///
/// # Errors
/// Configuration (exit 78) or runtime errors.
pub fn run(opts: &PollOpts, style: Style) -> Result<u8> {
    let config = crate::Config::load(Some(&opts.config))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    rt.block_on(poll(config, opts, style))
}

async fn poll(config: crate::Config, opts: &PollOpts, style: Style) -> Result<u8> {
    let infos = analyzers(&config)?;
    let config = Arc::new(config);
    let clock = Arc::new(crate::SystemClock::new(config.site.utc_offset_minutes));
    let ports = config.serial.iter().map(|_| tokio::sync::mpsc::channel(1).0).collect();
    let site = Site::new(config.clone(), clock, Arc::new(Scratch::default()), Arc::default(), infos, ports);
    let mut readings: Vec<(usize, Vec<Option<Value>>, CommState)> = Vec::new();
    let mut code = 0u8;
    let mut err = io::stderr().lock();
    for (pi, port) in config.serial.iter().enumerate() {
        let mine: Vec<usize> =
            site.analyzers.iter().enumerate().filter(|(_, a)| a.port == pi).map(|(i, _)| i).collect();
        let line = match serial::open(port) {
            Ok(l) => l,
            Err(e) => {
                writeln!(err, "{}: cannot open: {e}", port.device.display())?;
                code = 2;
                continue;
            }
        };
        let mut mcfg = MasterConfig::new(port.baud);
        mcfg.response_timeout_us = port.response_timeout_ms.saturating_mul(1000);
        mcfg.retries = port.retries;
        mcfg.inter_request_delay_us = port.inter_request_delay_ms.saturating_mul(1000);
        if let Some(e) = &line.rs485_refused {
            writeln!(err, "{}: the driver refused the RS-485 mode: {e}", port.device.display())?;
        }
        let mut master = AsyncMaster::new(FromTokio::new(line.stream), line.de, TokioDelay, mcfg);
        let mut blocks: Vec<ReadBlock> = Vec::new();
        for &a in &mine {
            blocks.extend(site.analyzers[a].profile.as_profile().blocks());
        }
        let blocks =
            firmware::modbus::coalesce_vec(&blocks, &firmware::modbus::CoalesceConfig::default()).unwrap_or(blocks);
        let mut health: HealthTable<32> = HealthTable::new(HealthConfig::default());
        let mut values: Vec<Vec<Option<Value>>> =
            mine.iter().map(|&a| vec![None; site.analyzers[a].profile.points.len()]).collect();
        let mut regs = [0u16; 125];
        let mut failures = Vec::new();
        master
            .poll_cycle(&blocks, &mut health, 0, |block, result| match result {
                Ok(Response::Registers(r)) => {
                    let n = r.copy_to(&mut regs);
                    for (slot, &a) in values.iter_mut().zip(&mine) {
                        decode_block(&site.analyzers[a].profile.points, block, &regs[..n], slot);
                    }
                }
                Ok(_) => failures.push(format!("unit {} @0x{:04X}: unexpected answer", block.unit, block.address)),
                Err(e) => failures.push(format!("unit {} @0x{:04X} x{}: {e}", block.unit, block.address, block.count)),
            })
            .await;
        for f in &failures {
            writeln!(err, "{}: {f}", port.device.display())?;
        }
        for (&a, v) in mine.iter().zip(values) {
            let mut comm = CommState::Ok;
            for p in &site.analyzers[a].profile.points {
                let s = health.state(p.unit);
                if !s.is_ok() {
                    comm = s;
                }
            }
            let read = v.iter().filter(|x| x.is_some()).count();
            writeln!(
                err,
                "{} ({}, {}): {read} of {} points read{}",
                site.analyzers[a].name,
                site.analyzers[a].profile.name,
                port.device.display(),
                v.len(),
                if comm.is_ok() { String::new() } else { format!(", comm {comm:?}") }
            )?;
            if !comm.is_ok() && code == 0 {
                code = 1;
            }
            readings.push((a, v, comm));
        }
    }
    let messages = site.cycle(&readings);
    let mut out = io::stdout().lock();
    for m in &messages {
        let record = site.encode(m).with_context(|| format!("cannot encode CN {}", m.cn()))?;
        let Split::Frame(frame) = Splitter::default().split(&record.frame, true) else { continue };
        let decoded = Decoded::new(frame, DecodeOptions::default());
        if opts.json {
            writeln!(out, "{}", super::json::frame_json(0, &decoded))?;
        } else {
            writeln!(out, "{}", super::decode::frame_text(0, &decoded, style))?;
        }
    }
    if messages.is_empty() {
        writeln!(err, "nothing to upload from this cycle")?;
    }
    Ok(code)
}
