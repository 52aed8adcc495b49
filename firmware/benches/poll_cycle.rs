//! One poll cycle's host overhead, against the same cycle's time on the wire.
//!
//! A cycle is what the DAU does for one analyzer profile every few seconds: encode each coalesced
//! read request, parse each answer (pre-built from the simulator, so no IO is timed), decode the
//! points, and feed the reading to the statistics (`Acquisition::ingest`, 5 s later than the last
//! cycle, so real-time, minute and hourly records come due at their real rate). The `+dynamic`
//! variant also runs dynamic-control change detection (`Tracker::update`).
//!
//! Wire time of the same cycle at 9600 baud 8N1 (10 bits a byte): every request and every answer
//! byte, plus a t3.5 silence after each request and after each answer (the least the line needs to
//! delimit frames). The device's processing time and the master's inter-request delay are left
//! out, so this is the shortest the cycle can be on the wire and the overhead percentage is an upper
//! bound. The target is below 1 %.
//!
//! `cargo bench -p firmware --bench poll_cycle` prints the wire time and a quick overhead estimate
//! for each profile, then runs criterion.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use firmware::acquire::{AcquireConfig, Acquisition, Reading, decode_block};
use firmware::dynamic::{DynamicConfig, Tracker};
use firmware::modbus::{
    CoalesceConfig, CommState, Parsed, ReadBlock, Request, Response, coalesce_vec, encode_request, parse_response,
};
use firmware::profile::builtin::{FLUE_GAS_CEMS, SURFACE_WATER_COD};
use firmware::profile::{DateTime, PointSpec, Profile, Target, Value};
use firmware::sim::Simulator;
use hj212_codec::time::DateTime as Time;

const BAUD: f64 = 9600.0;
const BITS_PER_BYTE: f64 = 10.0; // 8N1: start, 8 data, stop.
const POLL_MS: u64 = 5_000;

struct Cycle {
    profile: &'static Profile<'static>,
    blocks: Vec<ReadBlock>,
    replies: Vec<Vec<u8>>,
    acquisition: Acquisition,
    tracker: Tracker,
    dynamic: DynamicConfig<'static>,
    values: Vec<Option<Value>>,
    t0: i64,
    now_ms: u64,
    tx: [u8; 256],
}

impl Cycle {
    fn new(profile: &'static Profile<'static>) -> Self {
        let mut sim = Simulator::new(profile);
        for (i, p) in profile.points.iter().enumerate() {
            let v = if p.value.is_time() {
                Value::Time(DateTime::new(2024, 1, 1, 7, 55, 0).expect("valid"))
            } else {
                match p.target {
                    Target::Status => Value::Code(1),
                    Target::Alarm | Target::Fault => Value::Code(0),
                    _ => Value::Number(10.0 + i as f64),
                }
            };
            sim.set_point(p, v);
        }
        let points: Vec<ReadBlock> = profile.points.iter().map(PointSpec::block).collect();
        let blocks = coalesce_vec(&points, &CoalesceConfig { max_gap: 64, ..Default::default() }).expect("coalesces");
        let mut tx = [0u8; 256];
        let replies = blocks
            .iter()
            .map(|b| {
                let r = Request::read(b.function, b.address, b.count).expect("a read");
                let n = encode_request(b.unit, &r, &mut tx).expect("encodes");
                sim.handle(&tx[..n]).expect("answers").bytes
            })
            .collect();
        let t0 = Time { year: 2024, month: 1, day: 1, hour: 8, minute: 0, second: 0, millis: 0 }.to_millis();
        Self {
            profile,
            blocks,
            replies,
            acquisition: Acquisition::new(AcquireConfig::default(), &[profile]),
            tracker: Tracker::new(profile, None),
            dynamic: DynamicConfig::default(),
            values: vec![None; profile.points.len()],
            t0,
            now_ms: 0,
            tx,
        }
    }

    /// Seconds the cycle occupies a 9600-baud 8N1 line, at least.
    fn wire_s(&self) -> f64 {
        let char_s = BITS_PER_BYTE / BAUD;
        let t3_5 = 3.5 * char_s;
        self.replies.iter().map(|r| (8 + r.len()) as f64 * char_s + 2.0 * t3_5).sum()
    }

    fn wire_bytes(&self) -> usize {
        self.replies.iter().map(|r| 8 + r.len()).sum()
    }

    /// One cycle; returns the number of messages produced (so nothing is optimised away).
    fn run(&mut self, dynamic: bool) -> usize {
        self.now_ms += POLL_MS;
        self.values.fill(None);
        for (block, reply) in self.blocks.iter().zip(&self.replies) {
            let Some(request) = Request::read(block.function, block.address, block.count) else { continue };
            let Ok(n) = encode_request(block.unit, &request, &mut self.tx) else { continue };
            black_box(&self.tx[..n]);
            if let Ok(Parsed::Complete { response: Response::Registers(r), .. }) =
                parse_response(&request.expectation(block.unit), black_box(reply))
            {
                let mut regs = [0u16; 125];
                let n = r.copy_to(&mut regs);
                decode_block(self.profile.points, block, &regs[..n], &mut self.values);
            }
        }
        let now = Time::from_millis(self.t0 + self.now_ms as i64).expect("in range");
        let reading = Reading::new(self.profile, &self.values, CommState::Ok);
        let mut produced = self.acquisition.ingest(now, self.now_ms, &[reading]).len();
        if dynamic {
            produced += self.tracker.update(&self.dynamic, &reading, now, self.now_ms).len();
        }
        produced
    }
}

fn profiles() -> [(&'static str, &'static Profile<'static>); 2] {
    [("surface_water_cod", &SURFACE_WATER_COD), ("flue_gas_cems", &FLUE_GAS_CEMS)]
}

/// A quick estimate outside criterion, so the percentage is printed next to the wire time: the
/// median of 21 batches of 1000 cycles.
fn report() {
    println!("poll cycle at 9600 baud 8N1 (wire = request + answer bytes + 2 × t3.5 per read):");
    for (name, profile) in profiles() {
        for dynamic in [false, true] {
            let mut c = Cycle::new(profile);
            for _ in 0..2000 {
                black_box(c.run(dynamic));
            }
            let mut batches: Vec<f64> = (0..21)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..1000 {
                        black_box(c.run(dynamic));
                    }
                    start.elapsed().as_secs_f64() / 1000.0
                })
                .collect();
            batches.sort_by(f64::total_cmp);
            let host = batches[batches.len() / 2];
            let wire = c.wire_s();
            println!(
                "  {name}{}: {} reads, {} bytes, wire {:.1} ms; host {:.2} µs = {:.4} % of wire{}",
                if dynamic { "+dynamic" } else { "" },
                c.blocks.len(),
                c.wire_bytes(),
                wire * 1e3,
                host * 1e6,
                host / wire * 100.0,
                if host / wire < 0.01 { " (target < 1 %: met)" } else { " (target < 1 %: NOT met)" },
            );
        }
    }
}

fn poll_cycle(c: &mut Criterion) {
    report();
    let mut group = c.benchmark_group("poll_cycle");
    for (name, profile) in profiles() {
        let mut cycle = Cycle::new(profile);
        group.bench_function(name, |b| b.iter(|| cycle.run(false)));
        let mut cycle = Cycle::new(profile);
        group.bench_function(format!("{name}+dynamic"), |b| b.iter(|| cycle.run(true)));
    }
    group.finish();
}

criterion_group!(benches, poll_cycle);
criterion_main!(benches);
