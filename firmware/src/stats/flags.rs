//! Data flags (HJ 212-2017 §6.6.4 Table 8) and how they are derived.
//!
//! Precedence when several conditions hold (domain notes §6.3, tag I): a manual entry is `S`; else
//! `B` > `D` > `M` > `C` > `F` > `T` > `N`. Communication loss wins because without it nothing else
//! is known; a fault beats maintenance because it invalidates the value whatever the operator does;
//! `T` (above the instrument's upper measuring limit, not the emission limit) is the weakest because
//! the value was still measured.

use crate::modbus::CommState;
use crate::profile::AnalyzerMode;

/// A data flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// Instrument working normally.
    N,
    /// Instrument stopped.
    F,
    /// Maintenance.
    M,
    /// Manually entered set value.
    S,
    /// Instrument fault.
    D,
    /// Calibration.
    C,
    /// Above the instrument's upper measuring limit.
    T,
    /// Communication between instrument and DAU abnormal.
    B,
}

impl Flag {
    /// The letter on the wire.
    pub const fn as_char(self) -> char {
        match self {
            Self::N => 'N',
            Self::F => 'F',
            Self::M => 'M',
            Self::S => 'S',
            Self::D => 'D',
            Self::C => 'C',
            Self::T => 'T',
            Self::B => 'B',
        }
    }

    /// The flag for a letter.
    pub const fn from_char(c: char) -> Option<Self> {
        Some(match c {
            'N' => Self::N,
            'F' => Self::F,
            'M' => Self::M,
            'S' => Self::S,
            'D' => Self::D,
            'C' => Self::C,
            'T' => Self::T,
            'B' => Self::B,
            _ => return None,
        })
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Rank in the precedence (higher wins): B 7, D 6, M 5, C 4, F 3, T 2, N 1; S 0 (manual only).
    pub const fn precedence(self) -> u8 {
        match self {
            Self::B => 7,
            Self::D => 6,
            Self::M => 5,
            Self::C => 4,
            Self::F => 3,
            Self::T => 2,
            Self::N => 1,
            Self::S => 0,
        }
    }
}

/// A set of flags, e.g. those counted as valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlagSet(u8);

impl FlagSet {
    /// The default for measured values: {N} (appendix-d.md A23).
    pub const MEASURED: Self = Self(Flag::N.bit());
    /// The default for hand-set parameters (a fixed humidity, K_v): {N, S}.
    pub const PARAMETER: Self = Self(Flag::N.bit() | Flag::S.bit());

    /// The empty set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// This set plus `flag`.
    pub const fn with(self, flag: Flag) -> Self {
        Self(self.0 | flag.bit())
    }

    /// True if `flag` is in the set.
    pub const fn contains(self, flag: Flag) -> bool {
        self.0 & flag.bit() != 0
    }
}

/// What a flag is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagInputs {
    /// Communication state of the device that gave the value.
    pub comm: CommState,
    /// Analyzer mode from its status word.
    pub mode: AnalyzerMode,
    /// Fault register non-zero.
    pub fault: bool,
    /// An alarm that makes the result untrustworthy (profile's fatal alarms).
    pub fatal_alarm: bool,
    /// Value above the current range's upper limit (i13001).
    pub over_range: bool,
    /// The value was entered by hand.
    pub manual: bool,
}

impl FlagInputs {
    /// A normal reading from a device that answered.
    pub const fn normal() -> Self {
        Self {
            comm: CommState::Ok,
            mode: AnalyzerMode::Measuring,
            fault: false,
            fatal_alarm: false,
            over_range: false,
            manual: false,
        }
    }
}

/// The flag of one value, by the precedence in the module docs.
pub fn derive_flag(i: &FlagInputs) -> Flag {
    if i.manual {
        Flag::S
    } else if !i.comm.is_ok() {
        Flag::B
    } else if i.fault || i.fatal_alarm || i.mode == AnalyzerMode::Fault {
        Flag::D
    } else if i.mode == AnalyzerMode::Maintenance {
        Flag::M
    } else if matches!(i.mode, AnalyzerMode::Calibration | AnalyzerMode::Check) {
        Flag::C
    } else if i.mode == AnalyzerMode::Stopped {
        Flag::F
    } else if i.over_range {
        Flag::T
    } else {
        Flag::N
    }
}

/// Flag of a water aggregate (notes to C.16–C.18): any abnormal value in the interval makes it
/// abnormal. The standard gives no letter; we use the highest-precedence abnormal flag seen.
pub fn aggregate_flag_water(flags: impl IntoIterator<Item = Flag>) -> Flag {
    flags.into_iter().filter(|f| *f != Flag::N).max_by_key(|f| f.precedence()).unwrap_or(Flag::N)
}

/// Flag of a flue-gas aggregate (notes to C.16–C.18): N when normal values are 75 % or more of the
/// interval (read as inclusive, appendix-d.md A19), else D.
pub fn aggregate_flag_gas(normal: u32, total: u32) -> Flag {
    if total > 0 && normal as u64 * 4 >= total as u64 * 3 { Flag::N } else { Flag::D }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_b_d_m_c_f_t_n() {
        let mut i = FlagInputs::normal();
        assert_eq!(derive_flag(&i), Flag::N);
        i.over_range = true;
        assert_eq!(derive_flag(&i), Flag::T);
        i.mode = AnalyzerMode::Stopped;
        assert_eq!(derive_flag(&i), Flag::F);
        i.mode = AnalyzerMode::Check;
        assert_eq!(derive_flag(&i), Flag::C);
        i.mode = AnalyzerMode::Maintenance;
        assert_eq!(derive_flag(&i), Flag::M);
        i.fatal_alarm = true;
        assert_eq!(derive_flag(&i), Flag::D);
        i.comm = CommState::Failing { consecutive: 1 };
        assert_eq!(derive_flag(&i), Flag::B);
        i.manual = true;
        assert_eq!(derive_flag(&i), Flag::S);
    }

    #[test]
    fn aggregate_flags() {
        assert_eq!(aggregate_flag_water([Flag::N, Flag::C, Flag::N, Flag::T]), Flag::C);
        assert_eq!(aggregate_flag_water([Flag::N; 3]), Flag::N);
        // G3-B: 11 of 12 normal is 91.7 %: N. G3-C: 8 of 12 is 66.7 %: D. 45 of 60 is exactly 75 %: N.
        assert_eq!(aggregate_flag_gas(11, 12), Flag::N);
        assert_eq!(aggregate_flag_gas(8, 12), Flag::D);
        assert_eq!(aggregate_flag_gas(45, 60), Flag::N);
        assert_eq!(aggregate_flag_gas(44, 60), Flag::D);
        assert_eq!(aggregate_flag_gas(0, 0), Flag::D);
        for c in "NFMSDCTB".chars() {
            assert_eq!(Flag::from_char(c).map(Flag::as_char), Some(c));
        }
    }
}
