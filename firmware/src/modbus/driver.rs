//! The blocking Modbus RTU master over `embedded-io` and `embedded-hal`.
//!
//! Invariants:
//! - The RS-485 driver-enable (DE) pin is high exactly while a request is written: raised just before
//!   the first byte, lowered after `flush` returns, and lowered even when the write fails.
//! - Time is counted by the delays this driver asks for: it never reads a clock. The response timeout
//!   is the sum of the poll steps waited while no byte was ready.
//! - Stale bytes waiting in the receiver before a request (a late answer to an earlier one) are
//!   drained and counted as noise, so they cannot be taken for the answer to the next request.
//! - Only transport errors are retried; a device exception is returned at once.
//! - A silence of [`MasterConfig::frame_gap_us`] (t3.5) inside an answer ends the frame: bytes
//!   before it that do not form the answer are discarded as noise and the wait goes on, so a cut
//!   frame or another device's chatter cannot fill the buffer ahead of the real answer.
//! - The bus, pin and delay are handed back by [`Master::release`].

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_io::{Read, ReadReady, Write};

use super::coalesce::ReadBlock;
use super::frame::{
    EncodeError, Exception, Expect, FrameError, FrameErrorKind, MAX_ADU_LEN, Parsed, Request, Response, ResponseError,
    encode_request, finish_response, parse_response,
};
use super::health::HealthTable;
use super::timing::Timing;

/// Master settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterConfig {
    /// Line timing (from the baud rate).
    pub timing: Timing,
    /// How long to wait for a complete answer after the request was sent, in microseconds
    /// (default 1 s: analyzers are slow).
    pub response_timeout_us: u32,
    /// Extra attempts after a transport error (default 2, so three attempts in all).
    pub retries: u8,
    /// Silence before each request, in microseconds; never less than t3.5 (default 20 ms).
    pub inter_request_delay_us: u32,
    /// Blocking driver only: how long to sleep between checks for received bytes (default one
    /// character time).
    pub poll_step_us: u32,
    /// Blocking driver only: a silence this long inside an answer ends the frame (default t3.5;
    /// Modbus over serial line v1.02 §2.5.1.1). Bytes received before such a silence that do not
    /// form a frame for the request (a cut frame, another device's chatter, line noise) are
    /// discarded as noise, and the master keeps waiting for the real answer within the response
    /// timeout. Set it to t1.5 for the strict rule (a frame with a longer inter-character gap is
    /// discarded) or to 0 to turn it off (an adapter whose latency exceeds t3.5). Silence is
    /// counted in poll steps, so it is resolved to `poll_step_us`.
    pub frame_gap_us: u32,
}

impl MasterConfig {
    /// Defaults for `baud`.
    pub const fn new(baud: u32) -> Self {
        let timing = Timing::from_baud(baud);
        Self {
            timing,
            response_timeout_us: 1_000_000,
            retries: 2,
            inter_request_delay_us: 20_000,
            poll_step_us: timing.char_us,
            frame_gap_us: timing.t3_5_us,
        }
    }
}

/// Counters kept by a master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterStats {
    /// Requests sent, retries included.
    pub requests: u32,
    /// Valid answers (exceptions included).
    pub responses: u32,
    /// Retries after transport errors.
    pub retries: u32,
    /// Attempts that ended in a timeout.
    pub timeouts: u32,
    /// Attempts that ended in a CRC error.
    pub crc_errors: u32,
    /// Exceptions returned by devices.
    pub exceptions: u32,
    /// Bytes discarded: noise before frames, stale bytes drained before requests, and partial
    /// frames ended by a silence.
    pub noise_bytes: u32,
    /// Times received bytes were discarded because a silence of `frame_gap_us` ended them
    /// without a frame (blocking driver).
    pub gap_resyncs: u32,
}

/// An error from a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The serial port failed.
    Io(E),
    /// The DE pin failed.
    Pin(embedded_hal::digital::ErrorKind),
    /// The request could not be encoded (a caller error).
    Encode(EncodeError),
    /// The device answered with an exception.
    Exception(Exception),
    /// The answer was missing, damaged or someone else's, on every attempt; this is the last error.
    Frame(FrameError),
    /// The device is backed off and was not asked (see [`HealthTable`]).
    BackedOff,
}

impl<E> Error<E> {
    /// True for errors that say the device or the line is not answering properly: frame errors and
    /// IO errors. These count towards dead-device isolation; exceptions and caller errors do not.
    pub const fn is_transport(&self) -> bool {
        matches!(self, Self::Frame(_) | Self::Io(_) | Self::Pin(_))
    }

    /// The exception, if the device refused the request.
    pub const fn exception(&self) -> Option<&Exception> {
        match self {
            Self::Exception(e) => Some(e),
            _ => None,
        }
    }

    /// The frame error, if the transport failed.
    pub const fn frame(&self) -> Option<&FrameError> {
        match self {
            Self::Frame(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "serial port error: {e:?}"),
            Self::Pin(e) => write!(f, "DE pin error: {e:?}"),
            Self::Encode(e) => write!(f, "cannot encode request: {e}"),
            Self::Exception(e) => e.fmt(f),
            Self::Frame(e) => e.fmt(f),
            Self::BackedOff => f.write_str("device backed off after repeated failures"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: core::fmt::Debug> std::error::Error for Error<E> {}

impl<E> From<ResponseError> for Error<E> {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Exception(e) => Self::Exception(e),
            ResponseError::Frame(e) => Self::Frame(e),
        }
    }
}

/// State shared by the blocking and the async master: buffers, settings, counters.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) config: MasterConfig,
    pub(crate) stats: MasterStats,
    pub(crate) tx: [u8; MAX_ADU_LEN],
    pub(crate) rx: [u8; MAX_ADU_LEN],
}

impl Core {
    pub(crate) const fn new(config: MasterConfig) -> Self {
        Self {
            config,
            stats: MasterStats {
                requests: 0,
                responses: 0,
                retries: 0,
                timeouts: 0,
                crc_errors: 0,
                exceptions: 0,
                noise_bytes: 0,
                gap_resyncs: 0,
            },
            tx: [0; MAX_ADU_LEN],
            rx: [0; MAX_ADU_LEN],
        }
    }

    pub(crate) fn encode<E>(&mut self, unit: u8, request: &Request<'_>) -> Result<(usize, Expect), Error<E>> {
        let len = encode_request(unit, request, &mut self.tx).map_err(Error::Encode)?;
        Ok((len, request.expectation(unit)))
    }

    /// Books the outcome of one attempt; returns whether to retry.
    pub(crate) fn book(&mut self, outcome: &Result<(usize, usize), ResponseError>, attempt: u8) -> bool {
        match outcome {
            Ok((skipped, _)) => {
                self.stats.responses += 1;
                self.stats.noise_bytes = self.stats.noise_bytes.saturating_add(*skipped as u32);
                false
            }
            Err(ResponseError::Exception(_)) => {
                self.stats.responses += 1;
                self.stats.exceptions += 1;
                false
            }
            Err(ResponseError::Frame(e)) => {
                match e.kind {
                    FrameErrorKind::Timeout => self.stats.timeouts += 1,
                    FrameErrorKind::Crc { .. } => self.stats.crc_errors += 1,
                    _ => {}
                }
                let retry = attempt < self.config.retries;
                if retry {
                    self.stats.retries += 1;
                }
                retry
            }
        }
    }

    /// Re-parses the completed answer in `rx[..n]` (the loop proved it complete).
    pub(crate) fn response<E>(&self, expect: &Expect, n: usize) -> Result<Response<'_>, Error<E>> {
        match parse_response(expect, &self.rx[..n]) {
            Ok(Parsed::Complete { response, .. }) => Ok(response),
            Ok(Parsed::Partial { .. }) => Err(Error::Frame(FrameError {
                kind: FrameErrorKind::ShortFrame { expected: expect.response_len(), got: n },
                offset: 0,
            })),
            Err(e) => Err(e.into()),
        }
    }
}

/// What one receive step concluded.
pub(crate) fn step(expect: &Expect, rx: &[u8]) -> Option<Result<(usize, usize), ResponseError>> {
    match parse_response(expect, rx) {
        Ok(Parsed::Complete { skipped, consumed, .. }) => Some(Ok((skipped, consumed))),
        Ok(Parsed::Partial { .. }) if rx.len() >= MAX_ADU_LEN => Some(Err(finish_response(expect, rx))),
        Ok(Parsed::Partial { .. }) => None,
        Err(e) => Some(Err(e)),
    }
}

/// A blocking Modbus RTU master on a half-duplex RS-485 line.
///
/// `IO` is the UART (bytes in and out, with [`ReadReady`] so the master can wait without blocking
/// forever), `DE` the transceiver's driver-enable pin, `D` the delay that paces everything.
#[derive(Debug)]
pub struct Master<IO, DE, D> {
    io: IO,
    de: DE,
    delay: D,
    core: Core,
}

impl<IO, DE, D> Master<IO, DE, D>
where
    IO: Read + ReadReady + Write,
    DE: OutputPin,
    D: DelayNs,
{
    /// A master on `io`, driving `de`, pacing with `delay`.
    pub const fn new(io: IO, de: DE, delay: D, config: MasterConfig) -> Self {
        Self { io, de, delay, core: Core::new(config) }
    }

    /// Hands back the port, the pin and the delay.
    pub fn release(self) -> (IO, DE, D) {
        (self.io, self.de, self.delay)
    }

    /// The settings.
    pub const fn config(&self) -> &MasterConfig {
        &self.core.config
    }

    /// The counters.
    pub const fn stats(&self) -> &MasterStats {
        &self.core.stats
    }

    /// Sends `request` to `unit` and waits for its answer, retrying transport errors.
    ///
    /// # Errors
    /// [`Error::Exception`] if the device refused; [`Error::Frame`] with the last attempt's error if
    /// every attempt failed on the wire; [`Error::Io`] / [`Error::Pin`] if the hardware failed;
    /// [`Error::Encode`] for an invalid request.
    pub fn transact(&mut self, unit: u8, request: &Request<'_>) -> Result<Response<'_>, Error<IO::Error>> {
        let (len, expect) = self.core.encode(unit, request)?;
        let mut attempt = 0u8;
        let n = loop {
            self.delay.delay_us(self.core.config.timing.turnaround_us(self.core.config.inter_request_delay_us));
            self.drain()?;
            self.send(len)?;
            let (outcome, n) = self.receive(&expect)?;
            let retry = self.core.book(&outcome, attempt);
            match outcome {
                Ok(_) => break n,
                Err(e) if !retry => return Err(e.into()),
                Err(_) => attempt += 1,
            }
        };
        self.core.response(&expect, n)
    }

    /// Sends a write request to every device (unit 0); no answer is expected.
    ///
    /// # Errors
    /// IO, pin or encode errors.
    pub fn broadcast(&mut self, request: &Request<'_>) -> Result<(), Error<IO::Error>> {
        let (len, _) = self.core.encode(0, request)?;
        self.delay.delay_us(self.core.config.timing.turnaround_us(self.core.config.inter_request_delay_us));
        self.send(len)
    }

    /// Reads registers (FC 03 or 04, per `input`) into `out`; returns the number read (`out.len()`).
    ///
    /// # Errors
    /// As [`Master::transact`].
    pub fn read_registers(
        &mut self,
        unit: u8,
        input: bool,
        address: u16,
        out: &mut [u16],
    ) -> Result<usize, Error<IO::Error>> {
        let count = out.len() as u16;
        let request = if input {
            Request::ReadInputRegisters { address, count }
        } else {
            Request::ReadHoldingRegisters { address, count }
        };
        match self.transact(unit, &request)? {
            Response::Registers(r) => Ok(r.copy_to(out)),
            _ => Ok(0),
        }
    }

    /// Writes one holding register (FC 06).
    ///
    /// # Errors
    /// As [`Master::transact`].
    pub fn write_register(&mut self, unit: u8, address: u16, value: u16) -> Result<(), Error<IO::Error>> {
        self.transact(unit, &Request::WriteSingleRegister { address, value }).map(|_| ())
    }

    /// Writes holding registers (FC 16).
    ///
    /// # Errors
    /// As [`Master::transact`].
    pub fn write_registers(&mut self, unit: u8, address: u16, values: &[u16]) -> Result<(), Error<IO::Error>> {
        self.transact(unit, &Request::WriteMultipleRegisters { address, values }).map(|_| ())
    }

    /// One poll cycle over `blocks` at `now_ms`, with dead-device isolation.
    ///
    /// Each block's outcome is handed to `on_block`. A backed-off device's blocks, and the blocks of a
    /// device after its first transport failure in this cycle, are reported as
    /// [`Error::BackedOff`] without touching the bus.
    pub fn poll_cycle<const N: usize>(
        &mut self,
        blocks: &[ReadBlock],
        health: &mut HealthTable<N>,
        now_ms: u64,
        mut on_block: impl FnMut(&ReadBlock, Result<Response<'_>, Error<IO::Error>>),
    ) {
        health.begin_cycle(now_ms);
        for block in blocks {
            if !health.may_request(block.unit, now_ms) {
                on_block(block, Err(Error::BackedOff));
                continue;
            }
            let Some(request) = Request::read(block.function, block.address, block.count) else {
                on_block(block, Err(Error::Encode(EncodeError::InvalidCount { count: 0, max: 0 })));
                continue;
            };
            let result = self.transact(block.unit, &request);
            health.record(block.unit, !matches!(&result, Err(e) if e.is_transport()));
            on_block(block, result);
        }
        health.end_cycle(now_ms);
    }

    fn send(&mut self, len: usize) -> Result<(), Error<IO::Error>> {
        self.core.stats.requests += 1;
        self.de.set_high().map_err(|e| Error::Pin(embedded_hal::digital::Error::kind(&e)))?;
        let written = self.io.write_all(&self.core.tx[..len]).and_then(|()| self.io.flush());
        // Lower DE whatever happened: a stuck driver would jam the whole bus.
        let lowered = self.de.set_low();
        written.map_err(Error::Io)?;
        lowered.map_err(|e| Error::Pin(embedded_hal::digital::Error::kind(&e)))
    }

    fn drain(&mut self) -> Result<(), Error<IO::Error>> {
        while self.io.read_ready().map_err(Error::Io)? {
            let n = self.io.read(&mut self.core.rx).map_err(Error::Io)?;
            if n == 0 {
                break;
            }
            self.core.stats.noise_bytes = self.core.stats.noise_bytes.saturating_add(n as u32);
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn receive(&mut self, expect: &Expect) -> Result<(Result<(usize, usize), ResponseError>, usize), Error<IO::Error>> {
        let mut n = 0;
        let mut waited: u32 = 0;
        // Silence since the last byte, and what the bytes discarded at the last gap would have said.
        let mut silent: u32 = 0;
        let mut discarded: Option<ResponseError> = None;
        let step_us = self.core.config.poll_step_us.max(1);
        let gap_us = self.core.config.frame_gap_us;
        loop {
            if self.io.read_ready().map_err(Error::Io)? {
                let got = self.io.read(&mut self.core.rx[n..]).map_err(Error::Io)?;
                if got > 0 {
                    n += got;
                    silent = 0;
                    if let Some(outcome) = step(expect, &self.core.rx[..n]) {
                        return Ok((outcome, n));
                    }
                    continue;
                }
            }
            if n > 0 && gap_us > 0 && silent >= gap_us {
                // The silence ended a frame, and `step` found no answer in it: noise. Start over, so a
                // real answer behind it has the whole buffer (§2.5.1.1: frames are delimited by t3.5).
                discarded = Some(finish_response(expect, &self.core.rx[..n]));
                self.core.stats.noise_bytes = self.core.stats.noise_bytes.saturating_add(n as u32);
                self.core.stats.gap_resyncs += 1;
                n = 0;
            }
            if waited >= self.core.config.response_timeout_us {
                // Report what the last bytes were; if they were discarded at a gap, what they were then.
                let err = match discarded {
                    Some(e) if n == 0 => e,
                    _ => finish_response(expect, &self.core.rx[..n]),
                };
                return Ok((Err(err), n));
            }
            self.delay.delay_us(step_us);
            waited = waited.saturating_add(step_us);
            silent = silent.saturating_add(step_us);
        }
    }
}
