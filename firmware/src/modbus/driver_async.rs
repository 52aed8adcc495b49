//! The async Modbus RTU master over `embedded-io-async` and `embedded-hal-async`.
//!
//! Same invariants as the blocking [`Master`](super::Master): DE high exactly for the transmit, no
//! clock reads (the response timeout is a [`DelayNs`] future raced against the reads), stale bytes
//! drained before each request, only transport errors retried, bus handed back by `release`.
//!
//! Unlike the blocking master it does not end frames at a silence of t3.5
//! ([`MasterConfig::frame_gap_us`](super::MasterConfig::frame_gap_us) is ignored): an async read
//! gives no inter-character timing, and on Linux a USB adapter's latency timer (16 ms by default on
//! FTDI parts) splits a continuous answer into chunks with gaps far longer than t3.5 at 9600 baud.
//! It relies on [`parse_response`](super::parse_response)'s resynchronisation instead.
//!
//! On Linux the gateway runs it over tokio through `embedded-io-adapters`' `FromTokio`, with a delay
//! built on `tokio::time::sleep`. Reads must be cancel-safe (tokio's are): a read that loses the race
//! against the timeout is dropped.

use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::Poll;

use embedded_hal::digital::OutputPin;
use embedded_hal_async::delay::DelayNs;
use embedded_io_async::{Read, Write};

use super::coalesce::ReadBlock;
use super::driver::{Core, Error, MasterConfig, MasterStats, step};
use super::frame::{EncodeError, Expect, MAX_ADU_LEN, Request, Response, ResponseError, finish_response};
use super::health::HealthTable;

/// The async Modbus RTU master on a half-duplex RS-485 line.
#[derive(Debug)]
pub struct AsyncMaster<IO, DE, D> {
    io: IO,
    de: DE,
    delay: D,
    core: Core,
}

enum Race<T> {
    Read(T),
    Timeout,
}

/// Polls `read` and `timeout`; whichever is ready first wins (the read when both are).
async fn race<T>(
    read: impl Future<Output = T>,
    timeout: &mut core::pin::Pin<&mut impl Future<Output = ()>>,
) -> Race<T> {
    let mut read = pin!(read);
    poll_fn(|cx| {
        if let Poll::Ready(v) = read.as_mut().poll(cx) {
            return Poll::Ready(Race::Read(v));
        }
        if timeout.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Race::Timeout);
        }
        Poll::Pending
    })
    .await
}

/// Polls `fut` once: `Some` if it was ready at once.
async fn now_or_never<T>(fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

impl<IO, DE, D> AsyncMaster<IO, DE, D>
where
    IO: Read + Write,
    DE: OutputPin,
    D: DelayNs,
{
    /// A master on `io`, driving `de`, timing out with `delay`.
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
    /// As [`Master::transact`](super::Master::transact).
    pub async fn transact(&mut self, unit: u8, request: &Request<'_>) -> Result<Response<'_>, Error<IO::Error>> {
        let (len, expect) = self.core.encode(unit, request)?;
        let mut attempt = 0u8;
        let n = loop {
            self.delay.delay_us(self.core.config.timing.turnaround_us(self.core.config.inter_request_delay_us)).await;
            self.drain().await?;
            self.send(len).await?;
            let (outcome, n) = self.receive(&expect).await?;
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
    pub async fn broadcast(&mut self, request: &Request<'_>) -> Result<(), Error<IO::Error>> {
        let (len, _) = self.core.encode(0, request)?;
        self.delay.delay_us(self.core.config.timing.turnaround_us(self.core.config.inter_request_delay_us)).await;
        self.send(len).await
    }

    /// Reads registers (FC 03 or 04, per `input`) into `out`; returns the number read.
    ///
    /// # Errors
    /// As [`AsyncMaster::transact`].
    pub async fn read_registers(
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
        match self.transact(unit, &request).await? {
            Response::Registers(r) => Ok(r.copy_to(out)),
            _ => Ok(0),
        }
    }

    /// Writes one holding register (FC 06).
    ///
    /// # Errors
    /// As [`AsyncMaster::transact`].
    pub async fn write_register(&mut self, unit: u8, address: u16, value: u16) -> Result<(), Error<IO::Error>> {
        self.transact(unit, &Request::WriteSingleRegister { address, value }).await.map(|_| ())
    }

    /// Writes holding registers (FC 16).
    ///
    /// # Errors
    /// As [`AsyncMaster::transact`].
    pub async fn write_registers(&mut self, unit: u8, address: u16, values: &[u16]) -> Result<(), Error<IO::Error>> {
        self.transact(unit, &Request::WriteMultipleRegisters { address, values }).await.map(|_| ())
    }

    /// One poll cycle over `blocks` at `now_ms`, with dead-device isolation; see
    /// [`Master::poll_cycle`](super::Master::poll_cycle).
    pub async fn poll_cycle<const N: usize>(
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
            let result = self.transact(block.unit, &request).await;
            health.record(block.unit, !matches!(&result, Err(e) if e.is_transport()));
            on_block(block, result);
        }
        health.end_cycle(now_ms);
    }

    async fn send(&mut self, len: usize) -> Result<(), Error<IO::Error>> {
        self.core.stats.requests += 1;
        self.de.set_high().map_err(|e| Error::Pin(embedded_hal::digital::Error::kind(&e)))?;
        let written = match self.io.write_all(&self.core.tx[..len]).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        let lowered = self.de.set_low();
        written.map_err(Error::Io)?;
        lowered.map_err(|e| Error::Pin(embedded_hal::digital::Error::kind(&e)))
    }

    async fn drain(&mut self) -> Result<(), Error<IO::Error>> {
        loop {
            match now_or_never(self.io.read(&mut self.core.rx)).await {
                Some(Ok(0)) | None => return Ok(()),
                Some(Ok(n)) => self.core.stats.noise_bytes = self.core.stats.noise_bytes.saturating_add(n as u32),
                Some(Err(e)) => return Err(Error::Io(e)),
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn receive(
        &mut self,
        expect: &Expect,
    ) -> Result<(Result<(usize, usize), ResponseError>, usize), Error<IO::Error>> {
        let mut n = 0;
        let timeout_us = self.core.config.response_timeout_us;
        let mut timeout = pin!(self.delay.delay_us(timeout_us));
        loop {
            match race(self.io.read(&mut self.core.rx[n..]), &mut timeout).await {
                Race::Read(Ok(0)) => {
                    // End of stream: nothing more will come.
                    timeout.as_mut().await;
                    return Ok((Err(finish_response(expect, &self.core.rx[..n])), n));
                }
                Race::Read(Ok(got)) => {
                    n += got;
                    if let Some(outcome) = step(expect, &self.core.rx[..n]) {
                        return Ok((outcome, n));
                    }
                    debug_assert!(n < MAX_ADU_LEN);
                }
                Race::Read(Err(e)) => return Err(Error::Io(e)),
                Race::Timeout => return Ok((Err(finish_response(expect, &self.core.rx[..n])), n)),
            }
        }
    }
}
