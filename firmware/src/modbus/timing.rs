//! Serial-line timing derived from the baud rate.
//!
//! Modbus over serial line v1.02 §2.5.1.1: a character is 11 bits (start, 8 data, parity or a second
//! stop bit, stop). Inside a frame the silence between characters must stay under 1.5 character
//! times (t1.5); frames are separated by at least 3.5 character times (t3.5). Above 19200 baud the
//! guide fixes t1.5 = 750 µs and t3.5 = 1750 µs instead of scaling them.
//!
//! Invariant: every value here is a pure function of its inputs; nothing reads a clock.

/// Bits per RTU character (start + 8 data + parity/stop + stop).
pub const BITS_PER_CHAR: u32 = 11;

/// Timing of one serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Baud rate the values were derived from.
    pub baud: u32,
    /// Time to send one character, in microseconds (rounded up).
    pub char_us: u32,
    /// Largest silence allowed inside a frame (t1.5), in microseconds.
    pub t1_5_us: u32,
    /// Smallest silence between frames (t3.5), in microseconds.
    pub t3_5_us: u32,
}

impl Timing {
    /// Timing for `baud` (a zero baud rate is treated as 1 baud rather than dividing by zero).
    pub const fn from_baud(baud: u32) -> Self {
        let b = if baud == 0 { 1 } else { baud } as u64;
        let char_us = (BITS_PER_CHAR as u64 * 1_000_000).div_ceil(b) as u32;
        let (t1_5_us, t3_5_us) = if b > 19_200 {
            (750, 1750)
        } else {
            (
                (BITS_PER_CHAR as u64 * 1_500_000).div_ceil(b) as u32,
                (BITS_PER_CHAR as u64 * 3_500_000).div_ceil(b) as u32,
            )
        };
        Self { baud: b as u32, char_us, t1_5_us, t3_5_us }
    }

    /// Time on the wire for `len` bytes, in microseconds.
    pub const fn transmit_us(&self, len: usize) -> u32 {
        self.char_us.saturating_mul(len as u32)
    }

    /// Turnaround delay before the next request: at least t3.5, or `extra_us` if that is longer.
    ///
    /// Slow devices (many analyzers) need tens of milliseconds between the end of one answer and the
    /// next request; the serial line guide's default for broadcasts is 100 to 200 ms.
    pub const fn turnaround_us(&self, extra_us: u32) -> u32 {
        if extra_us > self.t3_5_us { extra_us } else { self.t3_5_us }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_at_9600_scales_with_the_baud_rate() {
        let t = Timing::from_baud(9600);
        assert_eq!(t.char_us, 1146); // 11 bits / 9600 baud = 1145.8 µs
        assert_eq!(t.t1_5_us, 1719); // 1.5 characters
        assert_eq!(t.t3_5_us, 4011); // 3.5 characters
        assert_eq!(t.transmit_us(8), 9168);
    }

    #[test]
    fn timing_above_19200_is_fixed() {
        let t = Timing::from_baud(115_200);
        assert_eq!((t.t1_5_us, t.t3_5_us), (750, 1750));
        let t = Timing::from_baud(19_200);
        assert_eq!((t.t1_5_us, t.t3_5_us), (860, 2006));
        assert_eq!(Timing::from_baud(0).baud, 1);
        assert_eq!(t.turnaround_us(0), 2006);
        assert_eq!(t.turnaround_us(50_000), 50_000);
    }
}
