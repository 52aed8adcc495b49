//! Typed views of the HJ 212-2025 uploads 2013, 2052, 2062 and 2111, **provisional**.
//!
//! These uploads decode into [`Message::Data`] like every other upload, so code that stores or
//! forwards data needs nothing new, and a decoded packet re-encodes byte for byte. The views read
//! the fields the 2025 digest names (§5.1, Appendix C tables C28, C31, C34 and C59) into typed
//! values, and write themselves back as a [`Message`] in the layout of the digest's example
//! packets (`to_message`).
//!
//! The field names and meanings come from one public implementation of the standard, not from its
//! text, and stay provisional until they are checked against the official text
//! (`docs/protocol.md`).
//!
//! Within a view, the fields of one code are gathered from every `;` group in the order received
//! (2062 puts each of a pollutant's fields in a group of its own). The first value of a named
//! suffix fills its field; repeated and unnamed suffixes are kept in `other`, in order.
//!
//! [`Message::from_packet`] checks the typed fields when it decodes (a `SampleTime` or
//! `CompleteTime` that is not a time, a `ResultType` that is not a number from 0 to 255), so the
//! view of a decoded message holds every field its packet carried. A message built by hand may
//! hold text that does not parse; a view reads such a field as absent.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{DataItem, Message};
use crate::codes::{CalibrationType, CheckResult, Command, DataFlag};
use crate::error::{Error, ErrorKind};
use crate::packet::Packet;
use crate::time::DateTime;

/// `(suffix, value)` pairs of one code, borrowed from a [`DataItem`].
type Fields<'m> = Vec<(&'m str, &'m str)>;

/// The fields of each code, gathered across the message's groups in order of first appearance.
fn by_code(items: &[DataItem]) -> Vec<(&str, Fields<'_>)> {
    let mut out: Vec<(&str, Fields<'_>)> = Vec::new();
    for item in items {
        let fields = item.fields.iter().map(|(s, v)| (s.as_str(), v.as_str()));
        match out.iter_mut().find(|(code, _)| *code == item.code) {
            Some((_, f)) => f.extend(fields),
            None => out.push((item.code.as_str(), fields.collect())),
        }
    }
    out
}

/// Takes the first value of each suffix in `names` (in that order); the other fields are
/// returned in order.
fn take<'m, const N: usize>(fields: Fields<'m>, names: [&str; N]) -> ([Option<&'m str>; N], Fields<'m>) {
    let mut slots = [None; N];
    let mut rest = Vec::new();
    for (suffix, value) in fields {
        match names.iter().position(|n| *n == suffix) {
            Some(i) if slots[i].is_none() => slots[i] = Some(value),
            _ => rest.push((suffix, value)),
        }
    }
    (slots, rest)
}

/// `xxxxxx-ResultType` and `CalibrationType` values: a number from 0 to 255.
fn small_code(text: &str) -> Option<u8> {
    text.parse().ok()
}

/// True for an information code, `i` and five digits (`i13004`), as 2013 uses for site
/// information attached to a measurement.
fn is_info_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6 && b[0] == b'i' && b[1..].iter().all(u8::is_ascii_digit)
}

/// Checks the fields the typed views read as something other than text, for
/// [`Message::from_packet`]: 2013 `-SampleTime` and `-CompleteTime` are times, 2062 `-ResultType`
/// is a number from 0 to 255.
///
/// # Errors
/// [`ErrorKind::InvalidField`] at the offset of the first bad value (the data segment is assumed to
/// start at byte 6, as everywhere in [`Message::from_packet`]).
pub(super) fn check_typed_fields(packet: &Packet<'_>, cn: Command) -> Result<(), Error> {
    // The 2017 uploads (the hot path) have no typed fields to check.
    if !matches!(cn, Command::RawData | Command::StandardCheckData) {
        return Ok(());
    }
    for pair in packet.cp().pairs() {
        let Some((_, suffix)) = pair.code_and_suffix() else { continue };
        let value = pair.value();
        let (field, ok) = match (cn, suffix) {
            (Command::RawData, "SampleTime") => ("SampleTime", value.and_then(DateTime::parse).is_some()),
            (Command::RawData, "CompleteTime") => ("CompleteTime", value.and_then(DateTime::parse).is_some()),
            (Command::StandardCheckData, "ResultType") => ("ResultType", value.and_then(small_code).is_some()),
            _ => continue,
        };
        if !ok {
            return Err(Error::new(ErrorKind::InvalidField(field), 6 + pair.value_offset()));
        }
    }
    Ok(())
}

/// Builds one [`DataItem`] from the named fields that are present, then `other`.
fn item(code: &str, named: &[(&str, Option<String>)], other: &[(&str, &str)]) -> DataItem {
    let mut fields: Vec<(String, String)> =
        named.iter().filter_map(|(s, v)| v.clone().map(|v| ((*s).to_string(), v))).collect();
    fields.extend(other.iter().map(|(s, v)| ((*s).to_string(), (*v).to_string())));
    DataItem { code: code.to_string(), fields }
}

/// HJ 212-2025 2013 (provisional): an upload of raw periodic measurement data, for analyzers that
/// measure a mixed sample in batches (2025 digest §5.1, table C28).
///
/// Read from a message with [`Message::raw_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawData<'m> {
    /// `DataTime`.
    pub data_time: DateTime,
    /// One measurement per pollutant, in order.
    pub samples: Vec<RawSample<'m>>,
}

/// One pollutant's measurement in a 2013 upload (provisional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample<'m> {
    /// The pollutant code (`w01018`).
    pub code: &'m str,
    /// `-SampleTime`: when sampling from the mixing bucket began.
    pub sample_time: Option<DateTime>,
    /// `-CompleteTime`: when the analyzer finished and output the value.
    pub complete_time: Option<DateTime>,
    /// `-SampleType`: the sampling mode, as sent. The digest names the field but not its values.
    pub sample_type: Option<&'m str>,
    /// `-Avg`: the value measured on the mixed sample, as sent.
    pub avg: Option<&'m str>,
    /// `-<InfoId>` values (`w01018-i13004=…`): site information attached to the measurement, as
    /// `(information code, value)` in order.
    pub info: Vec<(&'m str, &'m str)>,
    /// `-Flag`: the data flag.
    pub flag: Option<DataFlag<'m>>,
    /// Any other `(suffix, value)` of the code, in order.
    pub other: Vec<(&'m str, &'m str)>,
}

impl RawSample<'_> {
    /// `-Avg` as a number, when it is one.
    #[must_use]
    pub fn avg_number(&self) -> Option<f64> {
        number(self.avg)
    }
}

fn number(text: Option<&str>) -> Option<f64> {
    text.and_then(|v| v.parse().ok()).filter(|v: &f64| v.is_finite())
}

impl<'m> RawData<'m> {
    fn new(data_time: DateTime, items: &'m [DataItem]) -> Self {
        let samples = by_code(items)
            .into_iter()
            .map(|(code, fields)| {
                let ([sample_time, complete_time, sample_type, avg, flag], rest) =
                    take(fields, ["SampleTime", "CompleteTime", "SampleType", "Avg", "Flag"]);
                let (info, other) = rest.into_iter().partition(|(s, _)| is_info_code(s));
                RawSample {
                    code,
                    sample_time: sample_time.and_then(DateTime::parse),
                    complete_time: complete_time.and_then(DateTime::parse),
                    sample_type,
                    avg,
                    info,
                    flag: flag.map(DataFlag::parse),
                    other,
                }
            })
            .collect();
        Self { data_time, samples }
    }

    /// The upload as a message, one group per pollutant in the digest's order: `SampleTime`,
    /// `CompleteTime`, `SampleType`, `Avg`, the site information, other fields, `Flag`.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let items = self
            .samples
            .iter()
            .map(|s| {
                let mut other = s.info.clone();
                other.extend_from_slice(&s.other);
                let mut it = item(
                    s.code,
                    &[
                        ("SampleTime", s.sample_time.map(|t| t.to_string())),
                        ("CompleteTime", s.complete_time.map(|t| t.to_string())),
                        ("SampleType", s.sample_type.map(ToString::to_string)),
                        ("Avg", s.avg.map(ToString::to_string)),
                    ],
                    &other,
                );
                if let Some(f) = s.flag {
                    it.fields.push(("Flag".to_string(), f.as_str().to_string()));
                }
                it
            })
            .collect();
        Message::Data { cn: Command::RawData, data_time: self.data_time, items }
    }
}

/// HJ 212-2025 2062 (provisional): an upload of automatic standard-sample check (calibration)
/// data (2025 digest §5.1, table C59).
///
/// Read from a message with [`Message::standard_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardCheck<'m> {
    /// `DataTime`: when the check started (after an automatic calibration, when the verification
    /// started).
    pub data_time: DateTime,
    /// One check per pollutant, in order.
    pub checks: Vec<StandardCheckItem<'m>>,
}

/// One pollutant's standard-sample check in a 2062 upload (provisional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardCheckItem<'m> {
    /// The pollutant code (`w01018`).
    pub code: &'m str,
    /// `-SampleRd`: the value the analyzer measured on the standard solution, as sent.
    pub sample_rd: Option<&'m str>,
    /// `-StandardValue`: the nominal concentration of the standard solution, as sent.
    pub standard_value: Option<&'m str>,
    /// `-ResultType`: whether the check (or the verification after a calibration) passed.
    pub result: Option<CheckResult>,
    /// Any other `(suffix, value)` of the code, in order.
    pub other: Vec<(&'m str, &'m str)>,
}

impl StandardCheckItem<'_> {
    /// `-SampleRd` as a number, when it is one.
    #[must_use]
    pub fn sample_rd_number(&self) -> Option<f64> {
        number(self.sample_rd)
    }

    /// `-StandardValue` as a number, when it is one.
    #[must_use]
    pub fn standard_value_number(&self) -> Option<f64> {
        number(self.standard_value)
    }
}

impl<'m> StandardCheck<'m> {
    fn new(data_time: DateTime, items: &'m [DataItem]) -> Self {
        let checks = by_code(items)
            .into_iter()
            .map(|(code, fields)| {
                let ([sample_rd, standard_value, result], other) =
                    take(fields, ["SampleRd", "StandardValue", "ResultType"]);
                StandardCheckItem {
                    code,
                    sample_rd,
                    standard_value,
                    result: result.and_then(small_code).map(CheckResult::from_value),
                    other,
                }
            })
            .collect();
        Self { data_time, checks }
    }

    /// The upload as a message in the digest's layout: each field in a group of its own
    /// (`w01018-SampleRd=…;w01018-StandardValue=…;w01018-ResultType=…`), other fields after.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let mut items = Vec::new();
        for c in &self.checks {
            let named = [
                ("SampleRd", c.sample_rd.map(ToString::to_string)),
                ("StandardValue", c.standard_value.map(ToString::to_string)),
                ("ResultType", c.result.map(|r| r.value().to_string())),
            ];
            for n in named {
                if n.1.is_some() {
                    items.push(item(c.code, &[n], &[]));
                }
            }
            for o in &c.other {
                items.push(item(c.code, &[], &[*o]));
            }
        }
        Message::Data { cn: Command::StandardCheckData, data_time: self.data_time, items }
    }
}

/// HJ 212-2025 2111 (provisional): an upload of the five-minute mean furnace temperature of a
/// waste incinerator (2025 digest §5.1, table C31).
///
/// Read from a message with [`Message::furnace_temperature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FurnaceTemperature<'m> {
    /// `DataTime`: the start of the five-minute window (`20240601011000` is 01:10–01:15).
    pub data_time: DateTime,
    /// The readings in order; the digest's example has one, [`FurnaceTemperature::CODE`].
    pub readings: Vec<FurnaceReading<'m>>,
}

/// One code's value in a 2111 upload (provisional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FurnaceReading<'m> {
    /// The code (`a01901`).
    pub code: &'m str,
    /// `-Avg`: the five-minute mean, as sent (℃ for `a01901`).
    pub avg: Option<&'m str>,
    /// `-Flag`, when sent (the digest's example has none).
    pub flag: Option<DataFlag<'m>>,
    /// Any other `(suffix, value)` of the code, in order.
    pub other: Vec<(&'m str, &'m str)>,
}

impl FurnaceReading<'_> {
    /// `-Avg` as a number, when it is one.
    #[must_use]
    pub fn avg_number(&self) -> Option<f64> {
        number(self.avg)
    }
}

impl<'m> FurnaceTemperature<'m> {
    /// `a01901`: the mean furnace temperature of a waste incinerator (HJ 212-2017 Appendix B,
    /// ℃, N4.1), the code of the digest's example.
    pub const CODE: &'static str = "a01901";

    /// The length of the averaging window, five minutes, in milliseconds.
    pub const WINDOW_MS: i64 = 5 * 60_000;

    fn new(data_time: DateTime, items: &'m [DataItem]) -> Self {
        let readings = by_code(items)
            .into_iter()
            .map(|(code, fields)| {
                let ([avg, flag], other) = take(fields, ["Avg", "Flag"]);
                FurnaceReading { code, avg, flag: flag.map(DataFlag::parse), other }
            })
            .collect();
        Self { data_time, readings }
    }

    /// The end of the averaging window, five minutes after `DataTime` (`None` past year 9999).
    #[must_use]
    pub fn window_end(&self) -> Option<DateTime> {
        DateTime::from_millis(self.data_time.to_millis() + Self::WINDOW_MS)
    }

    /// The mean furnace temperature in ℃: `a01901-Avg` as a number.
    #[must_use]
    pub fn celsius(&self) -> Option<f64> {
        self.readings.iter().find(|r| r.code == Self::CODE).and_then(FurnaceReading::avg_number)
    }

    /// The upload as a message, one group per code: `Avg`, other fields, `Flag`.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let items = self
            .readings
            .iter()
            .map(|r| {
                let mut it = item(r.code, &[("Avg", r.avg.map(ToString::to_string))], &r.other);
                if let Some(f) = r.flag {
                    it.fields.push(("Flag".to_string(), f.as_str().to_string()));
                }
                it
            })
            .collect();
        Message::Data { cn: Command::FurnaceTemperature, data_time: self.data_time, items }
    }
}

/// HJ 212-2025 2052 (provisional): an upload of a single noise measurement (2025 digest §5.1,
/// table C34).
///
/// Read from a message with [`Message::noise_measurement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseMeasurement<'m> {
    /// `DataTime`: when the measurement started (the digest's example window is 20 minutes).
    pub data_time: DateTime,
    /// One level per noise code (`Leq`, `L10`, …), in order.
    pub levels: Vec<NoiseLevel<'m>>,
}

/// One noise code's value in a 2052 upload (provisional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseLevel<'m> {
    /// The noise code, case as sent (`Leq`, `LMx`).
    pub code: &'m str,
    /// `-Data`: the measured level, as sent (dB).
    pub data: Option<&'m str>,
    /// Any other `(suffix, value)` of the code, in order.
    pub other: Vec<(&'m str, &'m str)>,
}

impl NoiseLevel<'_> {
    /// `-Data` as a number, when it is one.
    #[must_use]
    pub fn data_number(&self) -> Option<f64> {
        number(self.data)
    }
}

impl<'m> NoiseMeasurement<'m> {
    fn new(data_time: DateTime, items: &'m [DataItem]) -> Self {
        let levels = by_code(items)
            .into_iter()
            .map(|(code, fields)| {
                let ([data], other) = take(fields, ["Data"]);
                NoiseLevel { code, data, other }
            })
            .collect();
        Self { data_time, levels }
    }

    /// The level of one noise code.
    #[must_use]
    pub fn level(&self, code: &str) -> Option<&NoiseLevel<'m>> {
        self.levels.iter().find(|l| l.code == code)
    }

    /// The upload as a message, one group per code: `Data`, then other fields.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let items =
            self.levels.iter().map(|l| item(l.code, &[("Data", l.data.map(ToString::to_string))], &l.other)).collect();
        Message::Data { cn: Command::NoiseMeasurement, data_time: self.data_time, items }
    }
}

impl Message {
    /// The HJ 212-2025 2013 raw-data upload this message carries (provisional).
    ///
    /// `None` for any other message, including the 2013 history request
    /// ([`Message::HistoryRequest`]).
    #[must_use]
    pub fn raw_data(&self) -> Option<RawData<'_>> {
        match self {
            Self::Data { cn: Command::RawData, data_time, items } => Some(RawData::new(*data_time, items)),
            _ => None,
        }
    }

    /// The HJ 212-2025 2062 standard-check upload this message carries (provisional).
    ///
    /// `None` for any other message, including the 2062 history request.
    #[must_use]
    pub fn standard_check(&self) -> Option<StandardCheck<'_>> {
        match self {
            Self::Data { cn: Command::StandardCheckData, data_time, items } => {
                Some(StandardCheck::new(*data_time, items))
            }
            _ => None,
        }
    }

    /// The HJ 212-2025 2111 furnace-temperature upload this message carries (provisional).
    #[must_use]
    pub fn furnace_temperature(&self) -> Option<FurnaceTemperature<'_>> {
        match self {
            Self::Data { cn: Command::FurnaceTemperature, data_time, items } => {
                Some(FurnaceTemperature::new(*data_time, items))
            }
            _ => None,
        }
    }

    /// The HJ 212-2025 2052 single noise measurement this message carries (provisional).
    #[must_use]
    pub fn noise_measurement(&self) -> Option<NoiseMeasurement<'_>> {
        match self {
            Self::Data { cn: Command::NoiseMeasurement, data_time, items } => {
                Some(NoiseMeasurement::new(*data_time, items))
            }
            _ => None,
        }
    }

    /// The HJ 212-2025 3011 `CalibrationType` of an analyzer command (provisional): zero or span.
    ///
    /// `None` for other messages and for a 3011 without one (HJ 212-2017).
    #[must_use]
    pub fn calibration_type(&self) -> Option<CalibrationType> {
        match self {
            Self::AnalyzerControl { calibration_type, .. } => *calibration_type,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seg: &str) -> Result<Message, Error> {
        Message::from_packet(&Packet::parse(seg.as_bytes()).unwrap())
    }

    #[test]
    fn raw_samples_sort_info_codes_from_other_fields_and_keep_repeats() {
        let m = msg("ST=32;CN=2013;CP=&&DataTime=20240601090000;w01018-SampleTime=20240601090109,\
             w01018-Avg=17.5,w01018-i13004=168.0,w01018-EFlag=A1,w01018-Avg=18,w01018-Flag=D;\
             w21003-SampleTime=20240601090500,w21003-SampleType=2&&")
        .unwrap();
        let raw = m.raw_data().unwrap();
        assert_eq!(raw.samples.len(), 2);
        let s = &raw.samples[0];
        assert_eq!(
            (s.code, s.avg, s.avg_number(), s.flag),
            ("w01018", Some("17.5"), Some(17.5), Some(DataFlag::Fault))
        );
        assert_eq!(s.complete_time, None);
        assert_eq!(s.info, [("i13004", "168.0")]);
        assert_eq!(s.other, [("EFlag", "A1"), ("Avg", "18")]);
        let s = &raw.samples[1];
        assert_eq!((s.code, s.sample_type, s.avg), ("w21003", Some("2"), None));
        assert_eq!(s.sample_time, DateTime::parse("20240601090500"));
    }

    #[test]
    fn a_hand_built_message_with_bad_text_reads_as_absent() {
        let m = Message::Data {
            cn: Command::StandardCheckData,
            data_time: DateTime::EPOCH,
            items: alloc::vec![DataItem {
                code: "w01018".into(),
                fields: alloc::vec![("ResultType".into(), "yes".into()), ("SampleRd".into(), "n/a".into())],
            }],
        };
        let check = m.standard_check().unwrap();
        assert_eq!(check.checks[0].result, None);
        assert_eq!((check.checks[0].sample_rd, check.checks[0].sample_rd_number()), (Some("n/a"), None));
        assert!(m.raw_data().is_none() && m.furnace_temperature().is_none() && m.noise_measurement().is_none());
    }

    #[test]
    fn info_codes_are_i_and_five_digits() {
        assert!(is_info_code("i13004") && is_info_code("i23005"));
        assert!(!is_info_code("i1300") && !is_info_code("I13004") && !is_info_code("i1300x"));
    }
}
