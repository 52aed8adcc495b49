//! The async master over tokio (through embedded-io-adapters, as the gateway runs it) against the
//! simulated analyzer on the other end of an in-memory duplex pipe, on tokio's paused clock.

use std::sync::{Arc, Mutex};

use embedded_io_adapters::tokio_1::FromTokio;
use firmware::modbus::{AsyncMaster, Error, ExceptionCode, FrameErrorKind, MasterConfig};
use firmware::profile::builtin::SURFACE_WATER_COD;
use firmware::profile::{Code, Target, Value};
use firmware::sim::{Fault, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct TokioDelay;

impl embedded_hal_async::delay::DelayNs for TokioDelay {
    async fn delay_ns(&mut self, ns: u32) {
        tokio::time::sleep(std::time::Duration::from_nanos(ns as u64)).await;
    }
}

/// A DE pin that records its edges.
#[derive(Clone, Default)]
struct RecordingPin(Arc<Mutex<Vec<bool>>>);

impl embedded_hal::digital::ErrorType for RecordingPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().push(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().push(true);
        Ok(())
    }
}

/// Length of a request ADU from its first bytes, once known.
fn request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        0x0F | 0x10 => buf.get(6).map(|n| 9 + *n as usize),
        _ => Some(8),
    }
}

/// The device end of the line: read whole requests, answer after the simulator's delay.
async fn serve(mut io: DuplexStream, sim: Arc<Mutex<Simulator>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        let Ok(n) = io.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = request_len(&buf).filter(|l| buf.len() >= *l) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let reply = sim.lock().unwrap().handle(&frame);
            if let Some(reply) = reply {
                tokio::time::sleep(std::time::Duration::from_micros(reply.delay_us as u64)).await;
                if io.write_all(&reply.bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

type TestMaster = AsyncMaster<FromTokio<DuplexStream>, RecordingPin, TokioDelay>;

fn setup() -> (TestMaster, Arc<Mutex<Simulator>>, RecordingPin) {
    let mut sim = Simulator::new(&SURFACE_WATER_COD);
    sim.set(&Target::Pollutant(Code::new("w01018")), Value::Number(42.5));
    let sim = Arc::new(Mutex::new(sim));
    let (ours, theirs) = tokio::io::duplex(512);
    tokio::spawn(serve(theirs, sim.clone()));
    let pin = RecordingPin::default();
    let mut cfg = MasterConfig::new(9600);
    cfg.response_timeout_us = 200_000;
    (AsyncMaster::new(FromTokio::new(ours), pin.clone(), TokioDelay, cfg), sim, pin)
}

async fn read_cod(m: &mut TestMaster) -> Result<[u16; 2], Error<std::io::Error>> {
    let mut regs = [0u16; 2];
    m.read_registers(1, false, 0x1008, &mut regs).await?;
    Ok(regs)
}

#[tokio::test(start_paused = true)]
async fn reads_and_raises_de_only_around_the_transmit() {
    let (mut m, _sim, pin) = setup();
    // Reply 01 03 04 00 00 42 2A 4B 4C: 42.5 as CDAB.
    assert_eq!(read_cod(&mut m).await.unwrap(), [0x0000, 0x422A]);
    assert_eq!(*pin.0.lock().unwrap(), vec![true, false]);
    assert_eq!(m.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn no_answer_times_out_after_retries() {
    let (mut m, sim, _) = setup();
    sim.lock().unwrap().set_fault(Some(Fault::NoAnswer));
    let start = tokio::time::Instant::now();
    let err = read_cod(&mut m).await.unwrap_err();
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::Timeout));
    assert_eq!((m.stats().requests, m.stats().timeouts), (3, 3));
    // Three 200 ms timeouts and three 20 ms turnarounds, on the paused clock.
    assert!(start.elapsed() >= std::time::Duration::from_millis(660));
}

#[tokio::test(start_paused = true)]
async fn late_answer_inside_and_outside_the_timeout() {
    let (mut m, sim, _) = setup();
    sim.lock().unwrap().inject(Fault::Late { delay_us: 150_000 });
    assert_eq!(read_cod(&mut m).await.unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().requests, 1);
    sim.lock().unwrap().inject(Fault::Late { delay_us: 300_000 });
    assert_eq!(read_cod(&mut m).await.unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn crc_exception_wrong_unit_and_noise() {
    let (mut m, sim, _) = setup();
    sim.lock().unwrap().set_fault(Some(Fault::BadCrc));
    let err = read_cod(&mut m).await.unwrap_err();
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::Crc { computed: 0x4C4B, received: 0xB34B }));

    sim.lock().unwrap().set_fault(Some(Fault::Exception(ExceptionCode::IllegalDataValue)));
    let err = read_cod(&mut m).await.unwrap_err();
    assert_eq!(err.exception().map(|e| e.code), Some(ExceptionCode::IllegalDataValue));

    sim.lock().unwrap().set_fault(Some(Fault::OtherUnit(7)));
    let err = read_cod(&mut m).await.unwrap_err();
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::WrongUnit { expected: 1, got: 7 }));

    sim.lock().unwrap().set_fault(Some(Fault::NoiseBefore(vec![0xFF, 0x00])));
    assert_eq!(read_cod(&mut m).await.unwrap(), [0x0000, 0x422A]);
    assert!(m.stats().noise_bytes >= 2);
    let (_io, _pin, _delay) = m.release();
}
