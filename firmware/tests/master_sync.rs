//! The blocking master against the simulated analyzer on an in-memory RS-485 line, for every fault.

mod common;

use common::{DePin, Delay, Port, Shared, line};
use firmware::modbus::{
    CoalesceConfig, CommState, Error, ExceptionCode, FrameErrorKind, FunctionCode, HealthConfig, HealthTable, Master,
    MasterConfig, ReadBlock, Request, Response, coalesce_vec,
};
use firmware::profile::builtin::SURFACE_WATER_COD;
use firmware::profile::{Code, Target, Value};
use firmware::sim::{Fault, Simulator};

const BAUD: u32 = 9600;
const COD: Target = Target::Pollutant(Code::new("w01018"));

fn setup() -> (Master<Port, DePin, Delay>, Shared) {
    let mut sim = Simulator::new(&SURFACE_WATER_COD);
    sim.set(&COD, Value::Number(42.5));
    let l = line(sim, BAUD);
    let mut cfg = MasterConfig::new(BAUD);
    cfg.response_timeout_us = 200_000;
    (Master::new(Port(l.clone()), DePin(l.clone()), Delay(l.clone()), cfg), l)
}

fn read_cod(m: &mut Master<Port, DePin, Delay>) -> Result<[u16; 2], Error<core::convert::Infallible>> {
    let mut regs = [0u16; 2];
    m.read_registers(1, false, 0x1008, &mut regs)?;
    Ok(regs)
}

/// Unit 1, FC 03, address 0x1008, 2 registers.
const REQUEST: [u8; 8] = [
    0x01, // unit
    0x03, // read holding registers
    0x10, 0x08, // address 0x1008: the surface-water result
    0x00, 0x02, // two registers (an f32)
    0x41, 0x09, // CRC-16/MODBUS, low byte first
];

#[test]
fn reads_a_cdab_float_with_exact_bytes_and_de_timing() {
    let (mut m, l) = setup();
    let regs = read_cod(&mut m).unwrap();
    // Reply on the wire: 01 03 04 | 00 00 42 2A | 4B 4C; 42.5 = 0x422A0000, low word first.
    assert_eq!(regs, [0x0000, 0x422A]);
    let l = l.borrow();
    assert_eq!(l.sent, vec![REQUEST.to_vec()]);
    // DE went high once and low once, and was high exactly for the 8 bytes on the wire.
    assert_eq!(l.de_edges.len(), 2);
    let ((t_up, up), (t_down, down)) = (l.de_edges[0], l.de_edges[1]);
    assert!(up && !down);
    assert_eq!(t_down - t_up, l.timing.transmit_us(8) as u64);
    assert_eq!(l.writes_with_de_low, 0);
    assert_eq!(l.bytes_arriving_with_de_high, 0);
    assert_eq!(m.stats().requests, 1);
    assert_eq!(m.stats().responses, 1);
}

#[test]
fn no_answer_times_out_after_all_retries() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().set_fault(Some(Fault::NoAnswer));
    let err = read_cod(&mut m).unwrap_err();
    assert!(matches!(err, Error::Frame(e) if e.kind == FrameErrorKind::Timeout));
    assert!(err.is_transport());
    assert_eq!(m.stats().requests, 3, "one try and two retries");
    assert_eq!(m.stats().timeouts, 3);
    // Three identical requests on the wire.
    assert!(l.borrow().sent.iter().all(|f| f == &REQUEST));
}

#[test]
fn late_answer_within_the_timeout_is_accepted() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().inject(Fault::Late { delay_us: 150_000 });
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().requests, 1);
}

#[test]
fn answer_later_than_the_timeout_is_retried_and_the_stale_one_drained() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().inject(Fault::Late { delay_us: 205_000 });
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().timeouts, 1);
    assert_eq!(m.stats().retries, 1);
    // The late 9-byte answer arrived during the turnaround delay and was drained as noise.
    assert_eq!(m.stats().noise_bytes, 9);
}

#[test]
fn crc_error_is_retried_then_reported_with_both_values() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().inject(Fault::BadCrc);
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().crc_errors, 1);
    l.borrow_mut().sim().set_fault(Some(Fault::BadCrc));
    let err = read_cod(&mut m).unwrap_err();
    // The reply's CRC 4B 4C had its last byte flipped: received 0xB34B, computed 0x4C4B.
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::Crc { computed: 0x4C4B, received: 0xB34B }));
}

#[test]
fn exception_is_returned_at_once_and_not_retried() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().inject(Fault::Exception(ExceptionCode::ServerDeviceBusy));
    let err = read_cod(&mut m).unwrap_err();
    let e = err.exception().copied().unwrap();
    assert_eq!((e.unit, e.function, e.code), (1, 3, ExceptionCode::ServerDeviceBusy));
    assert!(!err.is_transport());
    assert_eq!(m.stats().requests, 1);
    // A real exception from the device model: an address outside its register block.
    let mut regs = [0u16; 1];
    let err = m.read_registers(1, false, 0x3000, &mut regs).unwrap_err();
    assert_eq!(err.exception().map(|e| e.code), Some(ExceptionCode::IllegalDataAddress));
}

#[test]
fn another_unit_answering_is_a_wrong_unit_error() {
    let (mut m, l) = setup();
    l.borrow_mut().sim().set_fault(Some(Fault::OtherUnit(2)));
    let err = read_cod(&mut m).unwrap_err();
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::WrongUnit { expected: 1, got: 2 }));
    assert_eq!(m.stats().requests, 3);
}

#[test]
fn noise_before_the_frame_is_skipped() {
    let (mut m, l) = setup();
    // Line glitches as the slave's driver switches on: 00 FF 01 (the 01 even looks like our unit).
    l.borrow_mut().sim().inject(Fault::NoiseBefore(vec![0x00, 0xFF, 0x01]));
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!(m.stats().noise_bytes, 3);
    assert_eq!(m.stats().requests, 1);
}

#[test]
fn writes_reach_the_device() {
    let (mut m, l) = setup();
    // Slope i13008 at 0x10A7 is CDAB f32: write 1.25 = 0x3FA00000 as [0x0000, 0x3FA0].
    m.write_registers(1, 0x10A7, &[0x0000, 0x3FA0]).unwrap();
    assert_eq!(l.borrow().sims[0].get(&Target::Info(Code::new("i13008"))), Some(Value::Number(1.25)));
    m.write_register(1, 0x1089, 60).unwrap();
    assert_eq!(l.borrow().sims[0].register(1, FunctionCode::ReadHoldingRegisters, 0x1089), Some(60));
    match m.transact(1, &Request::WriteSingleRegister { address: 0x1083, value: 9 }).unwrap() {
        Response::Written { address, value } => assert_eq!((address, value), (0x1083, 9)),
        other => panic!("unexpected {other:?}"),
    }
    let sent = l.borrow().sent.last().cloned().unwrap();
    assert_eq!(&sent[..6], &[0x01, 0x06, 0x10, 0x83, 0x00, 0x09]); // unit, FC 06, address, value
}

#[test]
fn poll_cycle_backs_off_a_dead_device_and_skips_its_other_blocks() {
    let (mut m, l) = setup();
    let mut points: Vec<ReadBlock> = SURFACE_WATER_COD.blocks().collect();
    // Unit 2 is not on the line: two blocks for it.
    points.push(ReadBlock { unit: 2, function: FunctionCode::ReadHoldingRegisters, address: 0x1008, count: 2 });
    points.push(ReadBlock { unit: 2, function: FunctionCode::ReadHoldingRegisters, address: 0x1083, count: 1 });
    let blocks = coalesce_vec(&points, &CoalesceConfig { max_gap: 8, ..Default::default() }).unwrap();
    let unit1 = blocks.iter().filter(|b| b.unit == 1).count();
    let mut health: HealthTable<4> = HealthTable::new(HealthConfig { failures_before_backoff: 2, backoff_ms: 60_000 });
    let mut now_ms = 0u64;
    for cycle in 0..3 {
        let before = l.borrow().sent.len();
        let mut ok = 0;
        let mut skipped = 0;
        m.poll_cycle(&blocks, &mut health, now_ms, |b, r| match r {
            Ok(Response::Registers(regs)) => {
                assert_eq!(b.unit, 1);
                assert_eq!(regs.len(), b.count as usize);
                ok += 1;
            }
            Err(Error::BackedOff) => skipped += 1,
            Err(e) => assert_eq!((b.unit, e.frame().map(|f| f.kind)), (2, Some(FrameErrorKind::Timeout))),
            Ok(other) => panic!("unexpected {other:?}"),
        });
        let sent = l.borrow().sent.len() - before;
        assert_eq!(ok, unit1);
        match cycle {
            // Cycles 0 and 1: unit 2's first block times out (3 attempts), its second is skipped.
            0 | 1 => {
                assert_eq!((sent, skipped), (unit1 + 3, 1));
            }
            // Cycle 2: unit 2 is backed off, nothing is sent to it.
            _ => assert_eq!((sent, skipped), (unit1, 2)),
        }
        now_ms += 1000;
    }
    assert_eq!(health.state(1), CommState::Ok);
    assert_eq!(health.state(2), CommState::BackedOff { until_ms: 61_000 });
    assert_eq!(health.state(2).i12002(), 1);
}

#[test]
fn de_pin_sequence_with_embedded_hal_mock() {
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction};
    let mut sim = Simulator::new(&SURFACE_WATER_COD);
    sim.set(&COD, Value::Number(1.0));
    let l = line(sim, BAUD);
    let pin = PinMock::new(&[Transaction::set(State::High), Transaction::set(State::Low)]);
    let mut m = Master::new(Port(l.clone()), pin, Delay(l.clone()), MasterConfig::new(BAUD));
    let mut regs = [0u16; 2];
    m.read_registers(1, false, 0x1008, &mut regs).unwrap();
    let (_port, mut pin, _delay) = m.release();
    pin.done();
}
