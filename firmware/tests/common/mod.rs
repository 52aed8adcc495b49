//! An in-memory half-duplex RS-485 line with simulated analyzers on it, on a virtual clock.
//!
//! The port, the DE pin and the delay share one state. Time moves only when the master asks for a
//! delay, and by the transmit time of the bytes it sends. The double records every frame sent (and
//! when), every DE edge, and any byte written while DE was low or received while DE was high.
//!
//! Several simulators can share the line ([`bus`]), each answering for its own unit ids, as
//! analyzers daisy-chained on one RS-485 pair do. Every simulator sees every request; if more than
//! one answers, the answers are all put on the line and the request is counted as a collision.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::rc::Rc;

use firmware::modbus::Timing;
use firmware::sim::Simulator;

#[derive(Debug)]
pub struct Line {
    pub now_us: u64,
    pub de_high: bool,
    pub de_edges: Vec<(u64, bool)>,
    pub tx: Vec<u8>,
    pub sent: Vec<Vec<u8>>,
    /// When each frame of `sent` started on the wire, µs.
    pub sent_at: Vec<u64>,
    pub rx: VecDeque<(u64, u8)>,
    pub sims: Vec<Simulator>,
    /// Requests answered by more than one simulator.
    pub collisions: usize,
    pub timing: Timing,
    pub writes_with_de_low: usize,
    pub bytes_arriving_with_de_high: usize,
}

pub type Shared = Rc<RefCell<Line>>;

/// A line with one simulated device.
pub fn line(sim: Simulator, baud: u32) -> Shared {
    bus(vec![sim], baud)
}

/// A line shared by several simulated devices.
pub fn bus(sims: Vec<Simulator>, baud: u32) -> Shared {
    Rc::new(RefCell::new(Line {
        now_us: 0,
        de_high: false,
        de_edges: Vec::new(),
        tx: Vec::new(),
        sent: Vec::new(),
        sent_at: Vec::new(),
        rx: VecDeque::new(),
        sims,
        collisions: 0,
        timing: Timing::from_baud(baud),
        writes_with_de_low: 0,
        bytes_arriving_with_de_high: 0,
    }))
}

#[derive(Debug)]
pub struct Port(pub Shared);
#[derive(Debug)]
pub struct DePin(pub Shared);
#[derive(Debug)]
pub struct Delay(pub Shared);

impl Line {
    /// The first simulator (the only one on a [`line`]).
    pub fn sim(&mut self) -> &mut Simulator {
        &mut self.sims[0]
    }
}

impl embedded_io::ErrorType for Port {
    type Error = Infallible;
}

impl embedded_io::Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut l = self.0.borrow_mut();
        let now = l.now_us;
        let mut n = 0;
        while n < buf.len() {
            match l.rx.front() {
                Some(&(at, b)) if at <= now => {
                    buf[n] = b;
                    n += 1;
                    l.rx.pop_front();
                }
                _ => break,
            }
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        let l = self.0.borrow();
        Ok(l.rx.front().is_some_and(|&(at, _)| at <= l.now_us))
    }
}

impl embedded_io::Write for Port {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let mut l = self.0.borrow_mut();
        if !l.de_high {
            l.writes_with_de_low += 1;
        }
        l.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        let mut l = self.0.borrow_mut();
        let frame = std::mem::take(&mut l.tx);
        if frame.is_empty() {
            return Ok(());
        }
        // The bytes leave the UART: time passes while they are on the wire.
        let started = l.now_us;
        l.now_us += l.timing.transmit_us(frame.len()) as u64;
        l.sent.push(frame.clone());
        l.sent_at.push(started);
        let replies: Vec<_> = l.sims.iter_mut().filter_map(|s| s.handle(&frame)).collect();
        if replies.len() > 1 {
            l.collisions += 1;
        }
        let char_us = l.timing.char_us as u64;
        for reply in replies {
            let start = l.now_us + reply.delay_us as u64;
            for (i, b) in reply.bytes.into_iter().enumerate() {
                let pause = match reply.gap {
                    Some((after, gap_us)) if i >= after => gap_us as u64,
                    _ => 0,
                };
                l.rx.push_back((start + pause + (i as u64 + 1) * char_us, b));
            }
        }
        l.rx.make_contiguous().sort_by_key(|&(at, _)| at);
        Ok(())
    }
}

impl embedded_hal::digital::ErrorType for DePin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for DePin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        let mut l = self.0.borrow_mut();
        l.de_high = false;
        let now = l.now_us;
        l.de_edges.push((now, false));
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        let mut l = self.0.borrow_mut();
        l.de_high = true;
        let now = l.now_us;
        l.de_edges.push((now, true));
        Ok(())
    }
}

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        let mut l = self.0.borrow_mut();
        let from = l.now_us;
        l.now_us += (ns as u64).div_ceil(1000);
        let to = l.now_us;
        // A byte that arrives while our driver is enabled would collide on a real half-duplex line.
        if l.de_high {
            let hits = l.rx.iter().filter(|(at, _)| *at > from && *at <= to).count();
            l.bytes_arriving_with_de_high += hits;
        }
    }
}
