//! One task per serial port: open the port with tokio-serial, run the firmware's Modbus master
//! over it (through `embedded-io-adapters`), poll every analyzer once per cycle, and hand the
//! readings to the [`Site`].
//!
//! A port that cannot be opened, or fails while in use (an IO error, or its device node vanished),
//! is closed and reopened with a growing delay (1 s doubling to 30 s); other ports are unaffected.
//! Dead analyzers are isolated by the firmware's health table: one timeout per cycle, then back-off.
//!
//! RS-485 direction: left to the adapter (most USB–RS-485 adapters switch by themselves), or the
//! kernel's RS-485 mode set when the port opens (`[serial.rs485]`), or a GPIO on DE that the
//! master raises around each request (`[serial.de_gpio]`); see [`crate::rs485`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_io_adapters::tokio_1::FromTokio;
use firmware::acquire::decode_block;
use firmware::modbus::{AsyncMaster, CommState, Error, HealthConfig, HealthTable, MasterConfig, ReadBlock, Response};
use firmware::profile::Value;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Parity, SerialPort};
use crate::metrics::Metrics;
use crate::rs485::{self, DePin, GpioPin};
use crate::site::{ControlError, PortCommand, Site};

/// Devices one port can track health for.
const MAX_UNITS: usize = 32;

/// `DelayNs` on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioDelay;

impl embedded_hal_async::delay::DelayNs for TokioDelay {
    async fn delay_ns(&mut self, ns: u32) {
        tokio::time::sleep(Duration::from_nanos(u64::from(ns))).await;
    }
}

type PortMaster = AsyncMaster<FromTokio<tokio_serial::SerialStream>, DePin, TokioDelay>;

/// An open serial line: the stream and its DE line.
#[derive(Debug)]
pub struct Line {
    /// The port.
    pub stream: tokio_serial::SerialStream,
    /// The DE line the master drives (none unless `de_gpio` is set).
    pub de: DePin,
    /// The driver refused the configured kernel RS-485 mode: worth a warning, not fatal (a USB
    /// adapter or a pty switches direction itself).
    pub rs485_refused: Option<std::io::Error>,
}

/// Opens `port` with its line settings (8 data bits, no flow control) and its RS-485 direction
/// control.
///
/// # Errors
/// The device cannot be opened, or its DE GPIO cannot be driven; the message names which.
pub fn open(port: &SerialPort) -> Result<Line, String> {
    let parity = match port.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop = if port.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    let stream = tokio_serial::new(port.device.to_string_lossy(), port.baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(parity)
        .stop_bits(stop)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| e.to_string())?;
    let rs485_refused = port.rs485.as_ref().and_then(|mode| rs485::apply(&stream, mode).err());
    let de = match &port.de_gpio {
        None => DePin::None,
        Some(g) => DePin::Gpio(
            GpioPin::open(&g.value_path, g.active_low)
                .map_err(|e| format!("cannot drive the DE line {}: {e}", g.value_path.display()))?,
        ),
    };
    Ok(Line { stream, de, rs485_refused })
}

/// Runs the port `index` until `shutdown`. `analyzers` are the site-wide indexes of its analyzers.
pub async fn run(
    index: usize,
    site: Arc<Site>,
    analyzers: Vec<usize>,
    mut commands: mpsc::Receiver<PortCommand>,
    shutdown: CancellationToken,
) {
    let port = site.config.serial[index].clone();
    let device = port.device.display().to_string();
    let mut delay = Duration::from_secs(1);
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for &a in &analyzers {
        blocks.extend(site.analyzers[a].profile.as_profile().blocks());
    }
    let blocks =
        firmware::modbus::coalesce_vec(&blocks, &firmware::modbus::CoalesceConfig::default()).unwrap_or(blocks);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let line = match open(&port) {
            Ok(l) => l,
            Err(error) => {
                Metrics::inc(&site.metrics.port_failures);
                tracing::warn!(port = %device, %error, retry_in_ms = delay.as_millis() as u64, "Cannot open serial port.");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if let Some(error) = &line.rs485_refused {
            Metrics::inc(&site.metrics.rs485_refused);
            tracing::warn!(port = %device, %error, "The port's driver refused the RS-485 mode (TIOCSRS485); polling without it.");
        } else if let Some(mode) = &port.rs485 {
            tracing::info!(port = %device, ?mode, "Kernel RS-485 mode set.");
        }
        Metrics::inc(&site.metrics.port_opens);
        tracing::info!(port = %device, baud = port.baud, analyzers = analyzers.len(), "Serial port open.");
        let mut mcfg = MasterConfig::new(port.baud);
        mcfg.response_timeout_us = port.response_timeout_ms.saturating_mul(1000);
        mcfg.retries = port.retries;
        mcfg.inter_request_delay_us = port.inter_request_delay_ms.saturating_mul(1000);
        let mut master: PortMaster = AsyncMaster::new(FromTokio::new(line.stream), line.de, TokioDelay, mcfg);
        let opened = Instant::now();
        let failure = poll_loop(&site, &port, &analyzers, &blocks, &mut master, &mut commands, &shutdown).await;
        match failure {
            None => return,
            Some(why) => {
                Metrics::inc(&site.metrics.port_failures);
                if opened.elapsed() > Duration::from_secs(60) {
                    delay = Duration::from_secs(1);
                }
                tracing::warn!(port = %device, reason = %why, retry_in_ms = delay.as_millis() as u64, "Serial port closed after a failure.");
                drop(master);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Polls until shutdown (`None`) or a port failure (`Some(reason)`).
async fn poll_loop(
    site: &Arc<Site>,
    port: &SerialPort,
    analyzers: &[usize],
    blocks: &[ReadBlock],
    master: &mut PortMaster,
    commands: &mut mpsc::Receiver<PortCommand>,
    shutdown: &CancellationToken,
) -> Option<String> {
    let start = Instant::now();
    let mut health: HealthTable<MAX_UNITS> = HealthTable::new(HealthConfig::default());
    let mut tick = tokio::time::interval(Duration::from_millis(site.config.acquisition.poll_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            Some(cmd) = commands.recv() => {
                if let Some(why) = command(site, master, cmd).await {
                    return Some(why);
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut values: Vec<Vec<Option<Value>>> =
            analyzers.iter().map(|&a| vec![None; site.analyzers[a].profile.points.len()]).collect();
        let mut io_error: Option<String> = None;
        let mut errors = 0u64;
        let mut regs = [0u16; 125];
        master
            .poll_cycle(blocks, &mut health, now_ms, |block, result| match result {
                Ok(Response::Registers(r)) => {
                    let n = r.copy_to(&mut regs);
                    for (slot, &a) in values.iter_mut().zip(analyzers) {
                        decode_block(&site.analyzers[a].profile.points, block, &regs[..n], slot);
                    }
                }
                Ok(_) => errors += 1,
                Err(Error::Io(e)) => {
                    errors += 1;
                    io_error = Some(e.to_string());
                }
                Err(e) => {
                    errors += 1;
                    tracing::debug!(unit = block.unit, address = block.address, error = %e, "Read failed.");
                }
            })
            .await;
        Metrics::inc(&site.metrics.poll_cycles);
        site.metrics.poll_errors.fetch_add(errors, std::sync::atomic::Ordering::Relaxed);
        let readings: Vec<(usize, Vec<Option<Value>>, CommState)> = analyzers
            .iter()
            .zip(values)
            .map(|(&a, v)| {
                let comm = worst_state(&health, &site.analyzers[a].profile);
                (a, v, comm)
            })
            .collect();
        let messages = site.cycle(&readings);
        site.publish(messages).await;
        if let Some(e) = io_error {
            return Some(e);
        }
        if std::fs::metadata(&port.device).is_err() {
            return Some("device node vanished".into());
        }
    }
}

fn worst_state(health: &HealthTable<MAX_UNITS>, profile: &firmware::profile::OwnedProfile) -> CommState {
    let mut state = CommState::Ok;
    for p in &profile.points {
        let s = health.state(p.unit);
        if !s.is_ok() {
            state = s;
        }
    }
    state
}

/// Carries out a command from an uplink; `Some(reason)` when the port failed.
async fn command(site: &Site, master: &mut PortMaster, cmd: PortCommand) -> Option<String> {
    match cmd {
        PortCommand::WritePoint { analyzer, point, value, reply } => {
            let spec = site.analyzers[analyzer].profile.points[point];
            let mut regs = [0u16; 6];
            let n = spec.encode(value, &mut regs);
            if n == 0 {
                let _ = reply.send(Err("the point's type cannot be written".into()));
                return None;
            }
            let result = master.write_registers(spec.unit, spec.address, &regs[..n]).await;
            let failed = match &result {
                Err(Error::Io(e)) => Some(e.to_string()),
                _ => None,
            };
            tracing::info!(
                analyzer = %site.analyzers[analyzer].name,
                address = spec.address,
                ok = result.is_ok(),
                "Parameter write (CN 3021)."
            );
            let _ = reply.send(result.map_err(|e| e.to_string()));
            failed
        }
        PortCommand::Control { analyzer, control, reply } => {
            let name = &site.analyzers[analyzer].name;
            let Some(request) = control.request() else {
                // `validate` refuses such profiles; kept as an answer rather than a panic.
                let _ = reply.send(Err(ControlError::Unavailable("the control's function is not a write".into())));
                return None;
            };
            let result = master.transact(control.unit, &request).await.map(|_| ());
            let failed = match &result {
                Err(Error::Io(e)) => Some(e.to_string()),
                _ => None,
            };
            let outcome = result.map_err(|e| match e {
                Error::Exception(x) => ControlError::Exception(x.code),
                Error::Encode(_) | Error::BackedOff => ControlError::Unavailable(e.to_string()),
                Error::Io(_) | Error::Pin(_) | Error::Frame(_) => ControlError::Timeout(e.to_string()),
            });
            match &outcome {
                Ok(()) => tracing::info!(
                    analyzer = %name,
                    action = %control.action,
                    unit = control.unit,
                    address = control.address,
                    value = control.value,
                    "Control written to the analyzer."
                ),
                Err(error) => tracing::warn!(
                    analyzer = %name,
                    action = %control.action,
                    unit = control.unit,
                    address = control.address,
                    value = control.value,
                    %error,
                    "Control write failed."
                ),
            }
            let _ = reply.send(outcome);
            failed
        }
        PortCommand::ReadPoint { analyzer, point, reply } => {
            let spec = site.analyzers[analyzer].profile.points[point];
            let mut regs = [0u16; 6];
            let out = &mut regs[..spec.value.registers() as usize];
            let input = spec.function == firmware::modbus::FunctionCode::ReadInputRegisters;
            let result = master.read_registers(spec.unit, input, spec.address, out).await;
            let failed = match &result {
                Err(Error::Io(e)) => Some(e.to_string()),
                _ => None,
            };
            let value =
                result.map_err(|e| e.to_string()).and_then(|n| spec.decode(&regs[..n]).map_err(|e| e.to_string()));
            let _ = reply.send(value);
            failed
        }
    }
}
