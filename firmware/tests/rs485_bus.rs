//! Line timing and a shared bus: the blocking master on the in-memory RS-485 double, on its virtual
//! clock. Frames are delimited by silence (t3.5, Modbus over serial line v1.02 §2.5.1.1), and
//! several analyzers share one line, one of them dead.

mod common;

use common::{DePin, Delay, Port, Shared, bus, line};
use firmware::acquire::decode_block;
use firmware::modbus::{
    CoalesceConfig, CommState, Error, FrameErrorKind, HealthConfig, HealthTable, Master, MasterConfig, ReadBlock,
    Response, coalesce_vec,
};
use firmware::profile::builtin::{SURFACE_WATER_COD, SURFACE_WATER_NH3N, SURFACE_WATER_TP};
use firmware::profile::{Code, PointSpec, Profile, Target, Value};
use firmware::sim::{Fault, Simulator};

const BAUD: u32 = 9600;
const COD: Target = Target::Pollutant(Code::new("w01018"));

fn setup(cfg: impl FnOnce(&mut MasterConfig)) -> (Master<Port, DePin, Delay>, Shared) {
    let mut sim = Simulator::new(&SURFACE_WATER_COD);
    sim.set(&COD, Value::Number(42.5));
    let l = line(sim, BAUD);
    let mut c = MasterConfig::new(BAUD);
    // Long enough for a 256-byte answer (293 ms at 9600 baud): the timeout runs while bytes arrive.
    c.response_timeout_us = 500_000;
    cfg(&mut c);
    (Master::new(Port(l.clone()), DePin(l.clone()), Delay(l.clone()), c), l)
}

fn read_cod(m: &mut Master<Port, DePin, Delay>) -> Result<[u16; 2], Error<core::convert::Infallible>> {
    let mut regs = [0u16; 2];
    m.read_registers(1, false, 0x1008, &mut regs)?;
    Ok(regs)
}

/// 250 bytes of another device's long answer, cut off: unit 2, FC 03, byte count 248, then filler.
fn chatter() -> Vec<u8> {
    let mut v = vec![0x02, 0x03, 0xF8];
    v.resize(250, 0x55);
    v
}

#[test]
fn a_fragment_ended_by_t3_5_is_noise_and_the_answer_behind_it_is_taken() {
    let (mut m, l) = setup(|_| {});
    // The chatter, 10 ms of silence (more than t3.5 = 4.0 ms at 9600 baud), then our answer.
    l.borrow_mut().sim().inject(Fault::FragmentBefore { bytes: chatter(), gap_us: 10_000 });
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    let s = m.stats();
    assert_eq!((s.requests, s.gap_resyncs, s.noise_bytes), (1, 1, 250));
}

#[test]
fn without_the_gap_rule_the_same_fragment_costs_a_retry() {
    let (mut m, l) = setup(|c| c.frame_gap_us = 0);
    l.borrow_mut().sim().inject(Fault::FragmentBefore { bytes: chatter(), gap_us: 10_000 });
    // 250 + 9 bytes overflow the 256-byte ADU buffer: the first attempt fails, the retry succeeds.
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    let s = m.stats();
    assert_eq!((s.requests, s.retries, s.gap_resyncs), (2, 1, 0));
}

#[test]
fn a_pause_shorter_than_t3_5_inside_the_answer_is_tolerated() {
    let (mut m, l) = setup(|_| {});
    let char_us = l.borrow().timing.char_us;
    // Three character times (3.4 ms): above t1.5, below t3.5.
    l.borrow_mut().sim().inject(Fault::Pause { after: 4, gap_us: 3 * char_us });
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!((m.stats().requests, m.stats().gap_resyncs), (1, 0));
}

#[test]
fn a_pause_beyond_t3_5_breaks_the_frame_into_noise() {
    let (mut m, l) = setup(|c| c.retries = 0);
    l.borrow_mut().sim().inject(Fault::Pause { after: 4, gap_us: 10_000 });
    // Both halves are discarded at a silence; the last error names what the second half was.
    let err = read_cod(&mut m).unwrap_err();
    assert_eq!(err.frame().map(|e| e.kind), Some(FrameErrorKind::Noise { len: 5 }));
    let s = m.stats();
    assert_eq!((s.gap_resyncs, s.noise_bytes, s.timeouts), (2, 9, 0));
    // With retries, the next attempt gets the whole answer.
    let (mut m, l) = setup(|_| {});
    l.borrow_mut().sim().inject(Fault::Pause { after: 4, gap_us: 10_000 });
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
    assert_eq!((m.stats().requests, m.stats().retries), (2, 1));
}

#[test]
fn strict_t1_5_discards_a_frame_with_a_longer_gap() {
    let (mut m, l) = setup(|c| {
        c.frame_gap_us = c.timing.t1_5_us;
        c.retries = 0;
    });
    let char_us = l.borrow().timing.char_us;
    l.borrow_mut().sim().inject(Fault::Pause { after: 4, gap_us: 3 * char_us });
    assert!(read_cod(&mut m).unwrap_err().is_transport());
    assert!(m.stats().gap_resyncs >= 1);
    // Without a gap the strict master reads normally.
    assert_eq!(read_cod(&mut m).unwrap(), [0x0000, 0x422A]);
}

/// Three analyzers on one line (units 1, 2 and 3), polled every 5 s. Unit 2 dies after the first
/// cycle: it costs one timed-out block per cycle (three attempts) while failing, nothing on the wire
/// once backed off, and never delays the others past their poll period.
#[test]
fn poll_cycle_over_three_analyzers_with_one_dead() {
    let profiles: [&Profile<'static>; 3] = [&SURFACE_WATER_COD, &SURFACE_WATER_NH3N, &SURFACE_WATER_TP];
    let values = [20.0, 1.5, 0.25];
    let sims: Vec<Simulator> = profiles
        .iter()
        .zip(values)
        .map(|(p, v)| {
            let mut sim = Simulator::new(p);
            let code = p.points.iter().find_map(|pt| matches!(pt.target, Target::Pollutant(_)).then_some(pt.target));
            assert!(sim.set(&code.expect("a pollutant"), Value::Number(v)));
            sim
        })
        .collect();
    let l = bus(sims, BAUD);
    let mut cfg = MasterConfig::new(BAUD);
    cfg.response_timeout_us = 500_000;
    let mut m = Master::new(Port(l.clone()), DePin(l.clone()), Delay(l.clone()), cfg);
    let points: Vec<ReadBlock> = profiles.iter().flat_map(|p| p.points.iter().map(PointSpec::block)).collect();
    let blocks = coalesce_vec(&points, &CoalesceConfig { max_gap: 64, ..Default::default() }).unwrap();
    assert_eq!(blocks.iter().filter(|b| b.unit == 2).count(), 2);
    let mut health: HealthTable<4> = HealthTable::new(HealthConfig { failures_before_backoff: 2, backoff_ms: 60_000 });

    const PERIOD_US: u64 = 5_000_000;
    // Per cycle: its length, and the offset of each unit's first request from the cycle start.
    let mut lengths = Vec::new();
    let mut first_request = Vec::new();
    for cycle in 0..6u64 {
        if cycle == 1 {
            l.borrow_mut().sims[1].set_fault(Some(Fault::NoAnswer));
        }
        let start = cycle * PERIOD_US;
        {
            let mut line = l.borrow_mut();
            assert!(line.now_us <= start, "cycle {} overran its period: ended at {} µs", cycle - 1, line.now_us);
            line.now_us = start;
        }
        let sent_before = l.borrow().sent.len();
        let mut decoded: Vec<Vec<Option<Value>>> = profiles.iter().map(|p| vec![None; p.points.len()]).collect();
        let mut unit2 = Vec::new();
        m.poll_cycle(&blocks, &mut health, start / 1000, |b, r| match r {
            Ok(Response::Registers(regs)) => {
                let mut buf = [0u16; 125];
                let n = regs.copy_to(&mut buf);
                for (p, v) in profiles.iter().zip(decoded.iter_mut()) {
                    decode_block(p.points, b, &buf[..n], v);
                }
            }
            Err(e) if b.unit == 2 => unit2.push(matches!(e, Error::BackedOff)),
            other => panic!("unit {}: {other:?}", b.unit),
        });
        let line = l.borrow();
        lengths.push(line.now_us - start);
        let offset = |unit: u8| {
            (sent_before..line.sent.len()).find(|&i| line.sent[i][0] == unit).map(|i| line.sent_at[i] - start)
        };
        first_request.push([offset(1), offset(2), offset(3)]);
        // The live analyzers are read in full, every cycle.
        for (i, v) in [(0, 20.0), (2, 0.25)] {
            let at = profiles[i].points.iter().position(|p| matches!(p.target, Target::Pollutant(_))).unwrap();
            assert_eq!(decoded[i][at], Some(Value::Number(v)), "cycle {cycle}, analyzer {i}");
            assert!(decoded[i].iter().zip(profiles[i].points).all(|(v, p)| v.is_some() || p.value.is_time()));
        }
        match cycle {
            0 => assert!(unit2.is_empty()),
            // Failing: the first block timed out (not backed off), the second was skipped.
            1 | 2 => assert_eq!(unit2, [false, true], "cycle {cycle}"),
            _ => assert_eq!(unit2, [true, true], "cycle {cycle}"),
        }
    }
    let line = l.borrow();
    assert_eq!(line.collisions, 0);
    let t = MasterConfig::new(BAUD);
    let turnaround = u64::from(t.timing.turnaround_us(t.inter_request_delay_us));
    // Unit 1 goes first: its request leaves at the same instant of every period.
    assert!(first_request.iter().all(|f| f[0] == Some(turnaround)), "{first_request:?}");
    // A failing cycle costs three attempts at one block: each at most turnaround + request +
    // timeout (the timeout is counted in poll steps of one character).
    let attempt = turnaround + u64::from(t.timing.transmit_us(8)) + 500_000 + u64::from(t.timing.char_us);
    for cycle in [1, 2] {
        assert!(lengths[cycle] <= lengths[0] + 3 * attempt, "{lengths:?}");
        assert!(first_request[cycle][2] > first_request[0][2], "unit 3 waits for the timeouts");
    }
    // Backed off: nothing goes to unit 2, and the cycle is shorter than a healthy one.
    for cycle in 3..6 {
        assert_eq!(first_request[cycle][1], None, "cycle {cycle} asked unit 2");
        assert!(lengths[cycle] < lengths[0]);
        assert_eq!(first_request[cycle][2], first_request[3][2], "unit 3 keeps one offset");
        assert!(first_request[cycle][2] < first_request[0][2]);
    }
    assert_eq!((health.state(1), health.state(3)), (CommState::Ok, CommState::Ok));
    assert!(matches!(health.state(2), CommState::BackedOff { .. }));
    assert_eq!([1, 2, 3].map(|u| health.state(u).i12002()), [0, 1, 0]);
    let to_unit2 = line.sent.iter().filter(|f| f[0] == 2).count();
    assert_eq!(to_unit2, 2 + 3 + 3, "cycle 0: two blocks; cycles 1 and 2: three attempts each");
}
