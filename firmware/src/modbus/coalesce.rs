//! Request coalescing: merge the points of a poll list into as few reads as possible.
//!
//! Invariants:
//! - Only points of the same unit and the same read function are merged.
//! - A block never exceeds the function's per-request limit (125 registers, 2000 bits by default).
//! - Two ranges are merged only when the gap between them is at most `max_gap` items; the gap is
//!   read and thrown away, which is cheaper than another request on a 9600-baud bus.
//! - Every point lies wholly inside exactly one output block; output blocks are sorted by unit,
//!   function and address.
//! - No allocation: the caller supplies the output slice.

use super::frame::{FunctionCode, MAX_READ_BITS, MAX_READ_REGISTERS};

/// One range to read: unit, read function, first address and item count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadBlock {
    /// Unit (slave) address.
    pub unit: u8,
    /// One of FC 01/02/03/04.
    pub function: FunctionCode,
    /// First address.
    pub address: u16,
    /// Number of registers or bits.
    pub count: u16,
}

impl ReadBlock {
    /// One past the last address, as `u32` so a block ending at 0xFFFF does not wrap.
    pub const fn end(&self) -> u32 {
        self.address as u32 + self.count as u32
    }

    /// Offset of `point` inside this block, if the block holds all of it.
    pub fn offset_of(&self, point: &Self) -> Option<usize> {
        (point.unit == self.unit
            && point.function == self.function
            && point.address >= self.address
            && point.end() <= self.end())
        .then(|| (point.address - self.address) as usize)
    }
}

/// Limits for [`coalesce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Most registers per FC 03/04 request (default 125).
    pub max_registers: u16,
    /// Most bits per FC 01/02 request (default 2000).
    pub max_bits: u16,
    /// Largest gap, in items, that may be read and discarded to join two ranges (default 0).
    pub max_gap: u16,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self { max_registers: MAX_READ_REGISTERS, max_bits: MAX_READ_BITS, max_gap: 0 }
    }
}

impl CoalesceConfig {
    fn limit(&self, function: FunctionCode) -> u16 {
        if function.is_bit() { self.max_bits.min(MAX_READ_BITS) } else { self.max_registers.min(MAX_READ_REGISTERS) }
    }
}

/// Why a poll list could not be coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoalesceError {
    /// A point is not a read, has count 0, runs past 0xFFFF or is larger than one request may be.
    InvalidPoint {
        /// Index of the point in the input.
        index: usize,
    },
    /// The output slice is too short.
    OutputFull,
}

impl core::fmt::Display for CoalesceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InvalidPoint { index } => write!(f, "point {index} cannot be read in one request"),
            Self::OutputFull => f.write_str("too many blocks for the output buffer"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoalesceError {}

fn try_merge(a: &ReadBlock, b: &ReadBlock, cfg: &CoalesceConfig) -> Option<ReadBlock> {
    if a.unit != b.unit || a.function != b.function {
        return None;
    }
    let start = a.address.min(b.address) as u32;
    let end = a.end().max(b.end());
    let (lo, hi) = if a.address <= b.address { (a, b) } else { (b, a) };
    let gap = (hi.address as u32).saturating_sub(lo.end());
    if gap > cfg.max_gap as u32 || end - start > cfg.limit(a.function) as u32 {
        return None;
    }
    Some(ReadBlock { unit: a.unit, function: a.function, address: start as u16, count: (end - start) as u16 })
}

/// Merges `points` into read blocks written to `out`; returns how many blocks were written.
///
/// The merge is greedy in address order, which is optimal for the interval case without gaps
/// (the standard first-fit argument) and good enough with gaps.
///
/// # Errors
/// [`CoalesceError::InvalidPoint`] for a point that is not FC 01..=04, has count 0, wraps past 0xFFFF
/// or exceeds the per-request limit; [`CoalesceError::OutputFull`] if `out` is too short (at most
/// `points.len()` blocks are ever needed).
pub fn coalesce(points: &[ReadBlock], cfg: &CoalesceConfig, out: &mut [ReadBlock]) -> Result<usize, CoalesceError> {
    let mut n = 0;
    for (index, p) in points.iter().enumerate() {
        if !p.function.is_read() || p.count == 0 || p.end() > 0x1_0000 || p.count > cfg.limit(p.function) {
            return Err(CoalesceError::InvalidPoint { index });
        }
        let slot = out.get_mut(n).ok_or(CoalesceError::OutputFull)?;
        *slot = *p;
        n += 1;
    }
    let blocks = &mut out[..n];
    blocks.sort_unstable();
    // One pass in sorted order: each block either extends the last output block or starts a new one.
    let mut w = 0;
    for r in 0..n {
        let cur = blocks[r];
        if w > 0 {
            if let Some(m) = try_merge(&blocks[w - 1], &cur, cfg) {
                blocks[w - 1] = m;
                continue;
            }
        }
        blocks[w] = cur;
        w += 1;
    }
    Ok(w)
}

/// [`coalesce`] into a new `Vec`.
///
/// # Errors
/// As [`coalesce`], except that the output never runs out.
#[cfg(feature = "alloc")]
pub fn coalesce_vec(points: &[ReadBlock], cfg: &CoalesceConfig) -> Result<alloc::vec::Vec<ReadBlock>, CoalesceError> {
    let mut out = alloc::vec![ReadBlock { unit: 0, function: FunctionCode::ReadHoldingRegisters, address: 0, count: 0 }; points.len()];
    let n = coalesce(points, cfg, &mut out)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: FunctionCode = FunctionCode::ReadHoldingRegisters;
    const I: FunctionCode = FunctionCode::ReadInputRegisters;

    fn p(unit: u8, function: FunctionCode, address: u16, count: u16) -> ReadBlock {
        ReadBlock { unit, function, address, count }
    }

    #[test]
    fn adjacent_ranges_merge_and_units_stay_apart() {
        let pts = [p(1, H, 0x1008, 2), p(1, H, 0x1005, 3), p(2, H, 0x1005, 3), p(1, I, 0x1008, 2), p(1, H, 0x1083, 1)];
        let mut out = [p(0, H, 0, 0); 8];
        let n = coalesce(&pts, &CoalesceConfig::default(), &mut out).unwrap();
        assert_eq!(&out[..n], &[p(1, H, 0x1005, 5), p(1, H, 0x1083, 1), p(1, I, 0x1008, 2), p(2, H, 0x1005, 3)]);
        for pt in &pts {
            assert_eq!(out[..n].iter().filter(|b| b.offset_of(pt).is_some()).count(), 1);
        }
    }

    #[test]
    fn gap_allowance_and_limit_are_honoured() {
        let pts = [p(1, H, 0x1000, 2), p(1, H, 0x1005, 3), p(1, H, 0x1080, 4)];
        let cfg = CoalesceConfig { max_gap: 3, ..Default::default() };
        let mut out = [p(0, H, 0, 0); 3];
        let n = coalesce(&pts, &cfg, &mut out).unwrap();
        assert_eq!(&out[..n], &[p(1, H, 0x1000, 8), p(1, H, 0x1080, 4)]);
        let cfg = CoalesceConfig { max_gap: 0x200, max_registers: 125, ..Default::default() };
        let n = coalesce(&pts, &cfg, &mut out).unwrap();
        // 0x1000..0x1084 is 132 registers: over the limit, so the last range stays apart.
        assert_eq!(&out[..n], &[p(1, H, 0x1000, 8), p(1, H, 0x1080, 4)]);
        let cfg = CoalesceConfig { max_gap: 0x200, max_registers: 125, max_bits: 2000 };
        let n = coalesce(&[p(1, H, 0x1000, 2), p(1, H, 0x1070, 4)], &cfg, &mut out).unwrap();
        assert_eq!(&out[..n], &[p(1, H, 0x1000, 0x74)]);
    }

    #[test]
    fn invalid_points_are_reported_by_index() {
        let mut out = [p(0, H, 0, 0); 3];
        let cfg = CoalesceConfig::default();
        assert_eq!(
            coalesce(&[p(1, H, 0, 1), p(1, H, 0, 126)], &cfg, &mut out),
            Err(CoalesceError::InvalidPoint { index: 1 })
        );
        assert_eq!(
            coalesce(&[p(1, FunctionCode::WriteSingleRegister, 0, 1)], &cfg, &mut out),
            Err(CoalesceError::InvalidPoint { index: 0 })
        );
        assert_eq!(coalesce(&[p(1, H, 0xFFFF, 2)], &cfg, &mut out), Err(CoalesceError::InvalidPoint { index: 0 }));
        assert_eq!(coalesce(&[p(1, H, 0, 1); 4], &cfg, &mut out), Err(CoalesceError::OutputFull));
    }
}
