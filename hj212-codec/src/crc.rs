//! The HJ 212 checksum and the two Modbus-style variants that real devices send.
//!
//! HJ 212-2017 Appendix A gives an algorithm it calls "ANSI CRC16", but the register is shifted right
//! by eight bits *before* the byte is XORed in, so only eight bits of state survive from one byte to
//! the next. The whole algorithm is therefore `reg = T[(reg >> 8) ^ byte]` with the ordinary
//! CRC-16/ARC table (polynomial 0xA001, reflected), and it can take only 256 distinct values.
//! The last byte of an HJ 212 CRC is always one of `00 01 40 41 80 81 C0 C1`, which tells it apart
//! from the CRC-16/MODBUS values that some devices print instead (spec digest §1.2, §12.1).
//!
//! The eight-bit step `h ↦ T[h] >> 8` is linear over GF(2) and its eighth power is the identity,
//! so a byte's effect on the checksum depends only on its distance from the end *modulo 8*:
//! [`hj212`] XOR-folds the data into eight bytes and finishes with seven table lookups, at memory
//! speed. The same fact limits what the checksum can see: any change that leaves that fold
//! unchanged goes undetected, such as two bytes eight apart swapped (`QN=20160801085857223` and
//! `QN=00160801285857223` give the same checksum in an otherwise equal segment).
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

/// `POW[k][x]` is the register's high byte after `k` steps that start from high byte `x` with zero
/// input bytes: one step is `high' = POW[1][high ^ byte]`, and the table is linear over GF(2).
///
/// That linear map `M` on eight bits has order 8 (`M⁸ = I`, checked by a test), so a byte's effect
/// on the result depends only on its distance from the end of the data *modulo 8*. The whole
/// algorithm therefore reduces to XOR-folding the data into eight bytes (aligned to its end) and
/// seven table lookups, whatever the length: see [`hj212`]. The tables take 2 KiB.
const POW: [[u8; 256]; 8] = {
    let mut pow = [[0u8; 256]; 8];
    let mut x = 0;
    while x < 256 {
        pow[0][x] = x as u8;
        pow[1][x] = (TABLE[x] >> 8) as u8;
        x += 1;
    }
    let mut k = 2;
    while k < 8 {
        let mut x = 0;
        while x < 256 {
            pow[k][x] = pow[1][pow[k - 1][x] as usize];
            x += 1;
        }
        k += 1;
    }
    pow
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
    // With `m = body.len()` and the register's high byte `h` (initially 0xFF), the byte loop is
    // `h = M(h ^ b)`, so after the body `h = Mᵐ·0xFF ^ XOR over k of M^(m-k)·body[k]`. As
    // `M⁸ = I`, only `(m - k) mod 8` matters: XOR the body into one word, eight bytes at a time
    // counted from its end, then apply `M^d` to the byte at each distance `d`.
    let mut fold = 0u64;
    let mut wide = body.rchunks_exact(32);
    let mut acc = [0u64; 4];
    for block in &mut wide {
        for (a, word) in acc.iter_mut().zip(block.chunks_exact(8)) {
            *a ^= word_le(word);
        }
    }
    let mut words = wide.remainder().rchunks_exact(8);
    for word in &mut words {
        fold ^= word_le(word);
    }
    // The first `m mod 8` bytes sit at the end of a word padded in front with zeros: the first
    // eight bytes shifted up (no copy through memory), or a byte loop for a body that short.
    let head = words.remainder().len();
    let head_word = match body.get(..8) {
        Some(first) if head > 0 => word_le(first) << (8 * (8 - head)),
        Some(_) => 0,
        None => body.iter().enumerate().fold(0, |w, (i, &b)| w | u64::from(b) << (8 * (8 - head + i))),
    };
    fold ^= head_word ^ (acc[0] ^ acc[1]) ^ (acc[2] ^ acc[3]);
    // Byte `j` of the folded word is at distance `8 - j` from the end, and `M⁸ = I`.
    let f = fold.to_le_bytes();
    let high = (POW[body.len() % 8][0xFF] ^ f[0] ^ POW[7][f[1] as usize])
        ^ (POW[6][f[2] as usize] ^ POW[5][f[3] as usize])
        ^ (POW[4][f[4] as usize] ^ POW[3][f[5] as usize])
        ^ (POW[2][f[6] as usize] ^ POW[1][f[7] as usize]);
    TABLE[(high ^ last) as usize]
}

/// Eight bytes as a little-endian word (`bytes` is exactly eight bytes long).
#[inline(always)]
fn word_le(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
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
///
/// Branch-free (a table lookup per digit): CRC digits are random, so a branch on "digit or
/// letter" would be mispredicted about every other frame.
#[must_use]
#[inline]
pub fn from_hex(digits: &[u8]) -> Option<u16> {
    let &[a, b, c, d] = <&[u8; 4]>::try_from(digits).ok()?;
    let [a, b, c, d] = [a, b, c, d].map(|x| HEX[x as usize]);
    // A non-digit reads as 0xFF, so any one of them sets the high nibble of the OR.
    let value = (u16::from(a) << 12) | (u16::from(b) << 8) | (u16::from(c) << 4) | u16::from(d);
    ((a | b | c | d) < 16).then_some(value)
}

/// True when `d` is a hex digit of either case (a table lookup, no branch).
#[inline(always)]
pub(crate) const fn is_hex_digit(d: u8) -> bool {
    HEX[d as usize] < 16
}

/// The value of every hex digit of either case; 0xFF for any other byte.
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

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
        let mut data = [0u8; 1100];
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
    fn the_eight_bit_map_has_order_eight() {
        // `hj212` relies on this: M⁸ = I and no smaller power is the identity.
        for x in 0..=255u8 {
            assert_eq!(POW[1][POW[7][x as usize] as usize], x);
        }
        for (k, table) in POW.iter().enumerate().skip(1) {
            assert!((0..=255).any(|x| table[x] != x as u8), "M^{k} is the identity");
        }
    }

    #[test]
    fn bytes_eight_apart_can_be_swapped_unseen() {
        // A property of Appendix A itself (checked against the bitwise oracle), not of the fold.
        let seg =
            b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
        let mut swapped = *seg;
        swapped.swap(3, 11);
        assert_ne!(&swapped, seg);
        assert_eq!(hj212_bitwise(&swapped), 0x1C80);
        assert_eq!(hj212(&swapped), 0x1C80);
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
        assert_eq!(from_hex(b"1C8"), None);
        assert_eq!(from_hex(b"1C800"), None);
        for d in 0..=255u8 {
            let want = (d as char).to_digit(16).map(|v| v as u16);
            assert_eq!(from_hex(&[b'0', b'0', b'0', d]), want, "{d:#04x}");
            assert_eq!(from_hex(&[d, b'0', b'0', b'0']), want.map(|v| v << 12), "{d:#04x}");
            assert_eq!(is_hex_digit(d), want.is_some());
        }
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
