//! The HJ 212 checksum and the two Modbus-style variants that real devices send.
//!
//! HJ 212-2017 Appendix A gives an algorithm it calls "ANSI CRC16", but the register is shifted right
//! by eight bits *before* the byte is XORed in, so only eight bits of state survive from one byte to
//! the next. The whole algorithm is therefore `reg = T[(reg >> 8) ^ byte]` with the ordinary
//! CRC-16/ARC table (polynomial 0xA001, reflected), and it can take only 256 distinct values.
//! The last byte of an HJ 212 CRC is always one of `00 01 40 41 80 81 C0 C1`, which tells it apart
//! from the CRC-16/MODBUS values that some devices print instead (spec digest §1.2, §12.1).
//!
//! Invariant: every function here is pure, allocation-free and total over its input.

/// The CRC-16/ARC table (reflected polynomial 0xA001), built at compile time.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut reg = i as u16;
        let mut bit = 0;
        while bit < 8 {
            reg = if reg & 1 == 1 { (reg >> 1) ^ 0xA001 } else { reg >> 1 };
            bit += 1;
        }
        table[i] = reg;
        i += 1;
    }
    table
};

/// `STEP[k - 1][x]` is the register's high byte after `k` steps that start from high byte `x` with
/// zero input bytes. Because the table is linear over GF(2), one step is
/// `high' = STEP[0][high ^ byte]`, and eight steps are
/// `high' = STEP[7][high ^ b0] ^ STEP[6][b1] ^ … ^ STEP[0][b7]`: eight independent loads instead
/// of a chain of eight dependent ones. The same holds for sixteen (slicing-by-16 on an 8-bit
/// state; the tables take 4 KiB).
const STEP: [[u8; 256]; 16] = {
    let mut step = [[0u8; 256]; 16];
    let mut x = 0;
    while x < 256 {
        step[0][x] = (TABLE[x] >> 8) as u8;
        x += 1;
    }
    let mut k = 1;
    while k < 16 {
        let mut x = 0;
        while x < 256 {
            step[k][x] = step[0][step[k - 1][x] as usize];
            x += 1;
        }
        k += 1;
    }
    step
};

/// Computes the HJ 212-2017 checksum (Appendix A) of a data segment.
///
/// The argument is the data segment alone: the bytes that the length field counts, from `QN=`
/// (or whichever field comes first) through the closing `&&` of `CP`.
///
/// ```
/// let seg = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
/// assert_eq!(hj212_codec::crc::hj212(seg), 0x1C80);
/// ```
#[must_use]
pub fn hj212(data: &[u8]) -> u16 {
    let Some((&last, body)) = data.split_last() else {
        return 0xFFFF;
    };
    // Only the high byte of the register carries from one byte to the next.
    let mut high: u8 = 0xFF;
    let mut blocks = body.chunks_exact(16);
    for block in &mut blocks {
        // Two word loads instead of sixteen byte loads; the table lookups stay independent.
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&block[..8]);
        hi.copy_from_slice(&block[8..]);
        let lo = u64::from_le_bytes(lo);
        let hi = u64::from_le_bytes(hi);
        let byte = |w: u64, n: u32| ((w >> (8 * n)) & 0xFF) as usize;
        // A balanced XOR tree: only the first lookup depends on the previous block.
        let x0 = STEP[14][byte(lo, 1)] ^ STEP[13][byte(lo, 2)];
        let x1 = STEP[12][byte(lo, 3)] ^ STEP[11][byte(lo, 4)];
        let x2 = STEP[10][byte(lo, 5)] ^ STEP[9][byte(lo, 6)];
        let x3 = STEP[8][byte(lo, 7)] ^ STEP[7][byte(hi, 0)];
        let x4 = STEP[6][byte(hi, 1)] ^ STEP[5][byte(hi, 2)];
        let x5 = STEP[4][byte(hi, 3)] ^ STEP[3][byte(hi, 4)];
        let x6 = STEP[2][byte(hi, 5)] ^ STEP[1][byte(hi, 6)];
        let rest = ((x0 ^ x1) ^ (x2 ^ x3)) ^ ((x4 ^ x5) ^ (x6 ^ STEP[0][byte(hi, 7)]));
        high = STEP[15][(u64::from(high) ^ (lo & 0xFF)) as usize] ^ rest;
    }
    for &b in blocks.remainder() {
        high = STEP[0][(high ^ b) as usize];
    }
    TABLE[(high ^ last) as usize]
}

/// Computes CRC-16/MODBUS (initial value 0xFFFF, reflected polynomial 0xA001, no final XOR).
#[must_use]
pub fn modbus(data: &[u8]) -> u16 {
    let mut reg: u16 = 0xFFFF;
    for &b in data {
        reg = (reg >> 8) ^ TABLE[((reg ^ u16::from(b)) & 0xFF) as usize];
    }
    reg
}

/// The checksum variants seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrcVariant {
    /// The algorithm of HJ 212-2017 Appendix A, printed high byte first.
    Hj212,
    /// CRC-16/MODBUS printed high byte first (seen in 2005-era equipment).
    ModbusHighFirst,
    /// CRC-16/MODBUS printed low byte first (seen in real device captures).
    ModbusLowFirst,
}

impl CrcVariant {
    /// All variants, in the order auto-detection tries them.
    pub const ALL: [Self; 3] = [Self::Hj212, Self::ModbusHighFirst, Self::ModbusLowFirst];

    /// Computes the value this variant prints for `data`, as the 16-bit number its four hex digits spell.
    #[must_use]
    pub fn compute(self, data: &[u8]) -> u16 {
        match self {
            Self::Hj212 => hj212(data),
            Self::ModbusHighFirst => modbus(data),
            Self::ModbusLowFirst => modbus(data).swap_bytes(),
        }
    }

    /// A short stable name: `hj212`, `modbus` or `modbus-le`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hj212 => "hj212",
            Self::ModbusHighFirst => "modbus",
            Self::ModbusLowFirst => "modbus-le",
        }
    }

    /// Parses the names that [`CrcVariant::name`] returns.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl core::fmt::Display for CrcVariant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which checksums a receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CrcPolicy {
    /// Accept any of [`CrcVariant::ALL`], trying the HJ 212 algorithm first.
    #[default]
    Auto,
    /// Accept only this variant.
    Only(CrcVariant),
    /// Do not check the checksum at all (the frame still needs four hex digits).
    Off,
}

impl CrcPolicy {
    /// Checks `received` against `data` and returns the variant that matched.
    ///
    /// With [`CrcPolicy::Off`] the result is the variant that happens to match, or `Hj212` when none does.
    ///
    /// # Errors
    /// Returns the HJ 212 value (or the selected variant's value) that was expected when nothing matched.
    pub fn check(self, data: &[u8], received: u16) -> Result<CrcVariant, u16> {
        match self {
            Self::Only(v) => {
                let computed = v.compute(data);
                if computed == received { Ok(v) } else { Err(computed) }
            }
            Self::Auto | Self::Off => {
                let hj = hj212(data);
                if hj == received {
                    return Ok(CrcVariant::Hj212);
                }
                let mb = modbus(data);
                if mb == received {
                    Ok(CrcVariant::ModbusHighFirst)
                } else if mb.swap_bytes() == received {
                    Ok(CrcVariant::ModbusLowFirst)
                } else if self == Self::Off {
                    Ok(CrcVariant::Hj212)
                } else {
                    Err(hj)
                }
            }
        }
    }
}

/// Writes `value` as four upper-case hex digits.
#[must_use]
pub fn to_hex(value: u16) -> [u8; 4] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    [
        DIGITS[(value >> 12) as usize & 0xF],
        DIGITS[(value >> 8) as usize & 0xF],
        DIGITS[(value >> 4) as usize & 0xF],
        DIGITS[value as usize & 0xF],
    ]
}

/// Parses four hex digits of either case.
#[must_use]
pub fn from_hex(digits: &[u8]) -> Option<u16> {
    if digits.len() != 4 {
        return None;
    }
    let mut value = 0u16;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u16::from(nibble);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literal bit-by-bit algorithm of Appendix A, kept as an oracle for the table form.
    fn hj212_bitwise(data: &[u8]) -> u16 {
        let mut reg: u16 = 0xFFFF;
        for &b in data {
            reg = (reg >> 8) ^ u16::from(b);
            for _ in 0..8 {
                let lsb = reg & 1;
                reg >>= 1;
                if lsb == 1 {
                    reg ^= 0xA001;
                }
            }
        }
        reg
    }

    #[test]
    fn appendix_a_example_is_1c80_not_the_printed_1c08() {
        let seg =
            b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
        assert_eq!(hj212(seg), 0x1C80);
        assert_eq!(hj212_bitwise(seg), 0x1C80);
    }

    #[test]
    fn table_form_equals_the_bitwise_algorithm() {
        let mut data = [0u8; 300];
        let mut x: u32 = 12345;
        for len in 0..data.len() {
            for byte in data.iter_mut().take(len) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *byte = (x >> 16) as u8;
            }
            assert_eq!(hj212(&data[..len]), hj212_bitwise(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn modbus_check_value() {
        // The catalogue check value of CRC-16/MODBUS over "123456789".
        assert_eq!(modbus(b"123456789"), 0x4B37);
    }

    #[test]
    fn hj212_low_byte_is_one_of_eight_values() {
        for b in 0..=255u8 {
            let low = hj212(&[b, b'x', b]) & 0xFF;
            assert!(matches!(low, 0x00 | 0x01 | 0x40 | 0x41 | 0x80 | 0x81 | 0xC0 | 0xC1));
        }
    }

    #[test]
    fn hex_round_trip_and_case() {
        assert_eq!(from_hex(b"1c80"), Some(0x1C80));
        assert_eq!(from_hex(b"1C80"), Some(0x1C80));
        assert_eq!(from_hex(b"1G80"), None);
        assert_eq!(&to_hex(0x00ab), b"00AB");
    }

    #[test]
    fn policy_detects_modbus_variants() {
        let seg = b"QN=20170516010101001;ST=22;CN=1072;PW=123456;MN=ABCDEFG1234567;Flag=3;CP=&&PW=654321&&";
        assert_eq!(CrcPolicy::Auto.check(seg, 0xE476), Ok(CrcVariant::ModbusHighFirst));
        assert_eq!(CrcPolicy::Auto.check(seg, 0x76E4), Ok(CrcVariant::ModbusLowFirst));
        assert_eq!(CrcPolicy::Only(CrcVariant::Hj212).check(seg, 0xE476), Err(0xE681));
        assert_eq!(CrcPolicy::Auto.check(seg, 0x1234), Err(0xE681));
    }
}
