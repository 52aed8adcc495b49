//! Open code spaces of the header and `CP`: command codes, data flags, answer codes, item suffixes,
//! and the HJ 212-2025 calibration types and check results.
//!
//! Each is an enum with an `Other` arm, so every well-formed value survives a round trip.
//! Names, numbers and meanings are those of HJ 212-2017 Tables 6–9 and §6.3.3; 2005 values are
//! from spec digest §11 and HJ 212-2025 values from the 2025 digest (marked provisional there).

macro_rules! open_code {
    (
        $(#[$meta:meta])*
        $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, $label:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this crate does not name.
            Other($repr),
        }

        impl $name {
            /// Maps a wire value to its variant.
            #[must_use]
            pub const fn from_value(v: $repr) -> Self {
                match v {
                    $( $value => Self::$variant, )*
                    other => Self::Other(other),
                }
            }

            /// The wire value.
            #[must_use]
            pub const fn value(self) -> $repr {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Other(v) => v,
                }
            }

            /// A short English description, or `None` for an unnamed value.
            #[must_use]
            pub const fn label(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($label), )*
                    Self::Other(_) => None,
                }
            }
        }
    };
}

open_code! {
    /// A command code `CN` (HJ 212-2017 Table 9, the 2005 set, and provisional HJ 212-2025 codes).
    ///
    /// CN 1001 and 3014 mean different things in different versions; the variant names give the
    /// 2017 meaning where one exists, and [`Command::label_for`] gives the version's own.
    Command: u16 {
        /// 1000: set timeout and retry count.
        SetTimeoutRetry = 1000, "set timeout and retry count";
        /// 1001: HJ 212-2025 upload of the DAU's hardware identifiers (2005: set alarm duration).
        UploadHardwareIds = 1001, "upload DAU hardware identifiers (2025)";
        /// 1002: HJ 212-2025 set the DAU's MN.
        SetMn = 1002, "set DAU MN (2025)";
        /// 1011: get the site time (request) or upload it (reply).
        GetTime = 1011, "get site time";
        /// 1012: set the site time.
        SetTime = 1012, "set site time";
        /// 1013: the site asks for a time calibration.
        TimeCalibrationRequest = 1013, "time calibration request";
        /// 1014: HJ 212-2025 key management.
        KeyExchange = 1014, "key management (2025)";
        /// 1021: HJ/T 212-2005 get alarm thresholds.
        GetAlarmThresholds2005 = 1021, "get alarm thresholds (2005)";
        /// 1022: HJ/T 212-2005 set alarm thresholds.
        SetAlarmThresholds2005 = 1022, "set alarm thresholds (2005)";
        /// 1031: HJ/T 212-2005 get the alarm target address.
        GetAlarmTarget2005 = 1031, "get alarm target (2005)";
        /// 1032: HJ/T 212-2005 set the alarm target address.
        SetAlarmTarget2005 = 1032, "set alarm target (2005)";
        /// 1041: HJ/T 212-2005 get the daily report time.
        GetReportTime2005 = 1041, "get report time (2005)";
        /// 1042: HJ/T 212-2005 set the daily report time.
        SetReportTime2005 = 1042, "set report time (2005)";
        /// 1061: get the real-time data interval.
        GetRtdInterval = 1061, "get real-time interval";
        /// 1062: set the real-time data interval.
        SetRtdInterval = 1062, "set real-time interval";
        /// 1063: get the minute-data interval.
        GetMinInterval = 1063, "get minute interval";
        /// 1064: set the minute-data interval.
        SetMinInterval = 1064, "set minute interval";
        /// 1072: set the site access password.
        SetPassword = 1072, "set password";
        /// 2011: real-time data (upload), or start real-time data (request).
        RealTimeData = 2011, "real-time data";
        /// 2012: stop real-time data.
        StopRealTimeData = 2012, "stop real-time data";
        /// 2013: HJ 212-2025 raw periodic measurement data.
        RawData = 2013, "raw measurement data (2025)";
        /// 2021: facility running state (upload), or start it (request).
        FacilityState = 2021, "facility running state";
        /// 2022: stop facility running state.
        StopFacilityState = 2022, "stop facility running state";
        /// 2031: daily data.
        DailyData = 2031, "daily data";
        /// 2041: daily facility running time.
        DailyRunTime = 2041, "daily facility running time";
        /// 2051: minute data.
        MinuteData = 2051, "minute data";
        /// 2052: HJ 212-2025 single noise measurement.
        NoiseMeasurement = 2052, "single noise measurement (2025)";
        /// 2061: hourly data.
        HourlyData = 2061, "hourly data";
        /// 2062: HJ 212-2025 standard-check data.
        StandardCheckData = 2062, "standard-check data (2025)";
        /// 2071: HJ/T 212-2005 alarm records.
        AlarmRecords2005 = 2071, "alarm records (2005)";
        /// 2072: HJ/T 212-2005 alarm event.
        AlarmEvent2005 = 2072, "alarm event (2005)";
        /// 2081: DAU restart time.
        RestartTime = 2081, "DAU restart time";
        /// 2111: HJ 212-2025 five-minute mean furnace temperature.
        FurnaceTemperature = 2111, "furnace temperature (2025)";
        /// 3011: zero and span calibration.
        Calibrate = 3011, "zero/span calibration";
        /// 3012: immediate sampling.
        SampleNow = 3012, "immediate sampling";
        /// 3013: start cleaning or back-blowing.
        Clean = 3013, "cleaning / back-blowing";
        /// 3014: comparison sampling (2005: set sampling schedule).
        ComparisonSampling = 3014, "comparison sampling";
        /// 3015: over-limit sample retention.
        OverLimitSampling = 3015, "over-limit sample retention";
        /// 3016: set the sampling period.
        SetSamplingPeriod = 3016, "set sampling period";
        /// 3017: get the sampling period.
        GetSamplingPeriod = 3017, "get sampling period";
        /// 3018: get the sample-output time.
        GetSampleOutputTime = 3018, "get sample output time";
        /// 3019: get or upload the analyzer's unique identifier.
        InstrumentId = 3019, "analyzer identifier";
        /// 3020: get or upload site information (logs, states, parameters).
        SiteInfo = 3020, "site information";
        /// 3021: set a site parameter.
        SetSiteInfo = 3021, "set site parameter";
        /// 3022: HJ 212-2025 immediate sample retention task.
        SampleRetention = 3022, "sample retention task (2025)";
        /// 3024: HJ 212-2025 start a standard-sample check.
        StartStandardCheck = 3024, "start standard check (2025)";
        /// 9011: request answer (`QnRtn`).
        RequestAnswer = 9011, "request answer";
        /// 9012: execution result (`ExeRtn`).
        ExecutionResult = 9012, "execution result";
        /// 9013: notification answer.
        NotificationAnswer = 9013, "notification answer";
        /// 9014: data answer.
        DataAnswer = 9014, "data answer";
        /// 9015: HJ 212-2025 heartbeat.
        Heartbeat = 9015, "heartbeat (2025)";
    }
}

impl Command {
    /// True for the answers 9011–9014, which are never answered.
    #[must_use]
    pub const fn is_answer(self) -> bool {
        matches!(self.value(), 9011..=9014)
    }

    /// The label in the given version, where a code changed meaning.
    #[must_use]
    pub const fn label_for(self, version: crate::packet::Version) -> Option<&'static str> {
        match (self, version) {
            (Self::UploadHardwareIds, crate::packet::Version::V2005) => Some("set alarm duration (2005)"),
            (Self::ComparisonSampling, crate::packet::Version::V2005) => Some("set sampling schedule (2005)"),
            _ => self.label(),
        }
    }
}

open_code! {
    /// `QnRtn`, the answer to a request (HJ 212-2017 Table 7).
    QnRtn: u16 {
        /// 1: ready to execute.
        Ready = 1, "ready to execute";
        /// 2: refused.
        Refused = 2, "request refused";
        /// 3: wrong password.
        BadPassword = 3, "PW error";
        /// 4: wrong MN.
        BadMn = 4, "MN error";
        /// 5: wrong ST.
        BadSt = 5, "ST error";
        /// 6: wrong Flag.
        BadFlag = 6, "Flag error";
        /// 7: wrong QN.
        BadQn = 7, "QN error";
        /// 8: wrong or unknown CN.
        BadCn = 8, "CN error";
        /// 9: CRC error.
        BadCrc = 9, "CRC error";
        /// 100: unknown error.
        Unknown = 100, "unknown error";
    }
}

open_code! {
    /// `ExeRtn`, the result of executing a request (HJ 212-2017 Table 6).
    ExeRtn: u16 {
        /// 1: success.
        Success = 1, "success";
        /// 2: failed, reason unknown.
        Failed = 2, "failed, reason unknown";
        /// 3: request condition error (for example bad parameters).
        BadCondition = 3, "request condition error";
        /// 4: communication timeout.
        Timeout = 4, "communication timeout";
        /// 5: system busy.
        Busy = 5, "system busy";
        /// 6: system fault.
        Fault = 6, "system fault";
        /// 100: no data.
        NoData = 100, "no data";
    }
}

open_code! {
    /// `SBn-RS`, a treatment facility's running state (HJ 212-2017 Table 4).
    FacilityRunState: u8 {
        /// 0: off.
        Off = 0, "off";
        /// 1: running.
        Running = 1, "running";
        /// 2: calibrating.
        Calibrating = 2, "calibrating";
        /// 3: maintenance.
        Maintenance = 3, "maintenance";
        /// 4: alarm.
        Alarm = 4, "alarm";
        /// 5: back-blowing.
        BackBlowing = 5, "back-blowing";
    }
}

open_code! {
    /// `CalibrationType` of an HJ 212-2025 3011 request, "zero (span) calibration and adjustment",
    /// **provisional**.
    ///
    /// The 2025 digest (§5.1, Appendix C table C41) gives `0` for zero and `1` for span, from one
    /// public implementation only; the standard's own table could not be read. Any other value is
    /// kept as [`CalibrationType::Other`].
    CalibrationType: u8 {
        /// 0: zero-point calibration.
        Zero = 0, "zero calibration";
        /// 1: span (range) calibration.
        Span = 1, "span calibration";
    }
}

open_code! {
    /// `xxxxxx-ResultType` of an HJ 212-2025 2062 standard-check upload, **provisional**.
    ///
    /// The result of an automatic standard-sample check, or of the verification after an automatic
    /// calibration: `1` passed, `0` failed (2025 digest §5.1, Appendix C table C59; one public
    /// implementation only). Any other value is kept as [`CheckResult::Other`].
    CheckResult: u8 {
        /// 0: the check failed.
        Fail = 0, "check failed";
        /// 1: the check passed.
        Pass = 1, "check passed";
    }
}

impl CheckResult {
    /// True for [`CheckResult::Pass`].
    #[must_use]
    pub const fn is_pass(self) -> bool {
        matches!(self, Self::Pass)
    }
}

/// A data flag `xxxxxx-Flag` (HJ 212-2017 Table 8; the 2005 set; HJ 212-2025 `Td`).
///
/// The flag is an opaque string on the wire; the known ones are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataFlag<'a> {
    /// `N`: normal.
    Normal,
    /// `F`: analyzer stopped (2005: emission source stopped).
    Stopped,
    /// `M`: maintenance.
    Maintenance,
    /// `S`: manually set value.
    SetValue,
    /// `D`: analyzer fault.
    Fault,
    /// `C`: calibrating.
    Calibration,
    /// `T`: above the measuring range.
    OverRange,
    /// `B`: communication failure between analyzer and DAU.
    CommFailure,
    /// `P`: power failure (2005 only).
    PowerFailure,
    /// `Td`: HJ 212-2025 flag (provisional meaning).
    Td,
    /// Any other flag, kept verbatim.
    Other(&'a str),
}

impl<'a> DataFlag<'a> {
    /// Classifies a flag string.
    #[must_use]
    pub fn parse(s: &'a str) -> Self {
        match s {
            "N" => Self::Normal,
            "F" => Self::Stopped,
            "M" => Self::Maintenance,
            "S" => Self::SetValue,
            "D" => Self::Fault,
            "C" => Self::Calibration,
            "T" => Self::OverRange,
            "B" => Self::CommFailure,
            "P" => Self::PowerFailure,
            "Td" => Self::Td,
            other => Self::Other(other),
        }
    }

    /// The wire text.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        match self {
            Self::Normal => "N",
            Self::Stopped => "F",
            Self::Maintenance => "M",
            Self::SetValue => "S",
            Self::Fault => "D",
            Self::Calibration => "C",
            Self::OverRange => "T",
            Self::CommFailure => "B",
            Self::PowerFailure => "P",
            Self::Td => "Td",
            Self::Other(s) => s,
        }
    }

    /// True for `N`.
    #[must_use]
    pub const fn is_normal(&self) -> bool {
        matches!(self, Self::Normal)
    }
}

/// The suffix of a data key (`w01018-Rtd` → `Rtd`), HJ 212-2017 §6.3.3 Table 4 and §8.1 of the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suffix<'a> {
    /// `Rtd`: real-time value.
    Rtd,
    /// `Min`: period minimum.
    Min,
    /// `Avg`: period average.
    Avg,
    /// `Max`: period maximum.
    Max,
    /// `Cou`: period cumulative amount.
    Cou,
    /// `ZsRtd`: converted real-time value.
    ZsRtd,
    /// `ZsMin`: converted minimum.
    ZsMin,
    /// `ZsAvg`: converted average.
    ZsAvg,
    /// `ZsMax`: converted maximum.
    ZsMax,
    /// `Flag`: data flag.
    Flag,
    /// `EFlag`: vendor extended flag.
    EFlag,
    /// `SampleTime`: sampling time.
    SampleTime,
    /// `Data`: noise value for the period.
    Data,
    /// `DayData`: daytime noise value.
    DayData,
    /// `NightData`: night-time noise value.
    NightData,
    /// `Info`: site information value.
    Info,
    /// `RS`: facility running state.
    Rs,
    /// `RT`: facility running hours.
    Rt,
    /// `SN`: analyzer unique identifier.
    Sn,
    /// Any other suffix, kept verbatim.
    Other(&'a str),
}

impl<'a> Suffix<'a> {
    /// Classifies a suffix.
    #[must_use]
    pub fn parse(s: &'a str) -> Self {
        match s {
            "Rtd" => Self::Rtd,
            "Min" => Self::Min,
            "Avg" => Self::Avg,
            "Max" => Self::Max,
            "Cou" => Self::Cou,
            "ZsRtd" => Self::ZsRtd,
            "ZsMin" => Self::ZsMin,
            "ZsAvg" => Self::ZsAvg,
            "ZsMax" => Self::ZsMax,
            "Flag" => Self::Flag,
            "EFlag" => Self::EFlag,
            "SampleTime" => Self::SampleTime,
            "Data" => Self::Data,
            "DayData" => Self::DayData,
            "NightData" => Self::NightData,
            "Info" => Self::Info,
            "RS" => Self::Rs,
            "RT" => Self::Rt,
            "SN" => Self::Sn,
            other => Self::Other(other),
        }
    }

    /// The wire text.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        match self {
            Self::Rtd => "Rtd",
            Self::Min => "Min",
            Self::Avg => "Avg",
            Self::Max => "Max",
            Self::Cou => "Cou",
            Self::ZsRtd => "ZsRtd",
            Self::ZsMin => "ZsMin",
            Self::ZsAvg => "ZsAvg",
            Self::ZsMax => "ZsMax",
            Self::Flag => "Flag",
            Self::EFlag => "EFlag",
            Self::SampleTime => "SampleTime",
            Self::Data => "Data",
            Self::DayData => "DayData",
            Self::NightData => "NightData",
            Self::Info => "Info",
            Self::Rs => "RS",
            Self::Rt => "RT",
            Self::Sn => "SN",
            Self::Other(s) => s,
        }
    }

    /// True for suffixes that carry a number (values, not flags, times or text).
    #[must_use]
    pub const fn is_numeric(&self) -> bool {
        matches!(
            self,
            Self::Rtd
                | Self::Min
                | Self::Avg
                | Self::Max
                | Self::Cou
                | Self::ZsRtd
                | Self::ZsMin
                | Self::ZsAvg
                | Self::ZsMax
                | Self::Data
                | Self::DayData
                | Self::NightData
                | Self::Rs
                | Self::Rt
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Version;

    #[test]
    fn commands_round_trip_and_keep_unknown_codes() {
        for v in [1000u16, 1062, 2011, 3020, 9014, 5015, 9021] {
            assert_eq!(Command::from_value(v).value(), v);
        }
        assert_eq!(Command::from_value(5015), Command::Other(5015));
        assert!(Command::DataAnswer.is_answer());
        assert!(!Command::Heartbeat.is_answer());
        assert_eq!(Command::ComparisonSampling.label_for(Version::V2005), Some("set sampling schedule (2005)"));
    }

    #[test]
    fn flags_and_suffixes_round_trip() {
        for s in ["N", "F", "M", "S", "D", "C", "T", "B", "P", "Td", "J", "St"] {
            assert_eq!(DataFlag::parse(s).as_str(), s);
        }
        for s in ["Rtd", "ZsAvg", "RS", "Info", "ValidNum"] {
            assert_eq!(Suffix::parse(s).as_str(), s);
        }
        assert_eq!(QnRtn::from_value(3), QnRtn::BadPassword);
        assert_eq!(ExeRtn::from_value(100).label(), Some("no data"));
    }

    #[test]
    fn calibration_types_and_check_results_keep_unknown_values() {
        assert_eq!(CalibrationType::from_value(0), CalibrationType::Zero);
        assert_eq!(CalibrationType::from_value(1), CalibrationType::Span);
        assert_eq!(CalibrationType::from_value(7), CalibrationType::Other(7));
        for v in 0..=u8::MAX {
            assert_eq!(CalibrationType::from_value(v).value(), v);
            assert_eq!(CheckResult::from_value(v).value(), v);
        }
        assert_eq!(CalibrationType::Span.label(), Some("span calibration"));
        assert!(CheckResult::from_value(1).is_pass());
        assert!(!CheckResult::from_value(0).is_pass());
        assert_eq!(CheckResult::from_value(2), CheckResult::Other(2));
    }
}
