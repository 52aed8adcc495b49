//! Every plaintext HJ 212-2025 packet of the 2025 digest (§13) as a golden test: strict decode,
//! version 2025, byte-identical re-encoding, the specific typed message each one carries (with
//! its field values), and, for the 2025 uploads, the typed view (2013, 2052, 2062, 2111) and
//! its re-encoding byte for byte.
#![cfg(feature = "alloc")]

use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::{DataItem, Header, InfoItem, Message};
use hj212_codec::time::DateTime;
use hj212_codec::{
    CalibrationType, CheckResult, Command, CrcVariant, DataFlag, DecodeOptions, Decoded, ErrorKind, Packet, Split,
    Splitter, Version,
};

fn t(s: &str) -> DateTime {
    DateTime::parse(s).unwrap()
}

fn item(code: &str, fields: &[(&str, &str)]) -> DataItem {
    DataItem { code: code.into(), fields: fields.iter().map(|(s, v)| ((*s).into(), (*v).into())).collect() }
}

fn info(code: &str, value: &str) -> InfoItem {
    InfoItem { code: code.into(), value: value.into() }
}

fn min_avg_max(code: &str, min: &str, avg: &str, max: &str) -> DataItem {
    item(code, &[("Min", min), ("Avg", avg), ("Max", max), ("Flag", "N")])
}

/// The typed message of each packet of `vectors/hj212-2025.txt`, in file order.
fn expected() -> Vec<Message> {
    let pol = || "w01018".to_string();
    vec![
        // A.1: 1011 with an empty CP, a request for the site time.
        Message::GetTime { pol_id: None },
        Message::Data {
            cn: Command::MinuteData,
            data_time: t("20240520210600"),
            items: vec![
                min_avg_max("a01011", "1.35", "1.35", "1.35"),
                min_avg_max("a01012", "9.3", "9.3", "9.3"),
                min_avg_max("a01014", "3.20", "3.211", "3.212"),
            ],
        },
        Message::Data {
            cn: Command::MinuteData,
            data_time: t("20240520210600"),
            items: vec![min_avg_max("a01011", "1.35", "1.35", "1.35"), min_avg_max("a01014", "3.20", "3.20", "3.20")],
        },
        Message::Data {
            cn: Command::RealTimeData,
            data_time: t("20240601085857"),
            items: [
                ("a00000", "33471.0"),
                ("a34013", "12.34"),
                ("a21026", "18.5"),
                ("a21002", "42.1"),
                ("a19001", "6.8"),
                ("a01011", "11.2"),
                ("a01012", "138.5"),
                ("a01014", "8.6"),
                ("a01013", "101.3"),
            ]
            .iter()
            .map(|(c, v)| item(c, &[("Rtd", v)]))
            .collect(),
        },
        Message::SetTimeoutRetry { over_time: 5, re_count: 3 },
        Message::AssignMn { dau_id: "6970000000001ABCDEFG1234".into() },
        Message::Key { created: "20240601085857223".into(), new_key: Some("0000000000000000".into()) },
        Message::HistoryRequest { cn: Command::RawData, begin: t("20240601080000"), end: t("20240601080000") },
        Message::HistoryRequest { cn: Command::RealTimeData, begin: t("20240601064500"), end: t("20240601084500") },
        Message::HistoryRequest {
            cn: Command::StandardCheckData,
            begin: t("20240601080000"),
            end: t("20240601080000"),
        },
        Message::AnalyzerControl {
            cn: Command::Calibrate,
            pol_id: pol(),
            calibration_type: Some(CalibrationType::Zero),
        },
        Message::AnalyzerControl { cn: Command::SampleRetention, pol_id: pol(), calibration_type: None },
        Message::AnalyzerControl { cn: Command::StartStandardCheck, pol_id: pol(), calibration_type: None },
        Message::GetSiteInfo {
            pol_id: Some(pol()),
            info_id: "i11001".into(),
            range: Some((t("20240601010522"), t("20240601085857"))),
        },
        Message::NotificationAnswer,
        Message::NotificationAnswer,
        Message::DataAnswer,
        Message::HardwareIds {
            items: vec![
                info("i23005", "6970000000001ABCDEFG1234"),
                info("i23006", "A800200A8C6D"),
                info("i23007", "E86A643C7BBC"),
                info("i23008", "A763742C1AE1"),
            ],
        },
        Message::Key { created: "20240601085857223".into(), new_key: None },
        Message::Heartbeat,
        Message::Data {
            cn: Command::FurnaceTemperature,
            data_time: t("20240601011000"),
            items: vec![item("a01901", &[("Avg", "868")])],
        },
        Message::Data {
            cn: Command::StandardCheckData,
            data_time: t("20240601080000"),
            items: vec![
                item("w01018", &[("SampleRd", "15.3")]),
                item("w01018", &[("StandardValue", "12")]),
                item("w01018", &[("ResultType", "1")]),
            ],
        },
        Message::Data {
            cn: Command::RawData,
            data_time: t("20240601090000"),
            items: vec![item(
                "w01018",
                &[
                    ("SampleTime", "20240601090109"),
                    ("CompleteTime", "20240601094200"),
                    ("SampleType", "1"),
                    ("Avg", "17.5"),
                    ("Flag", "N"),
                ],
            )],
        },
    ]
}

/// The packets of the vectors file, as wire bytes with CR LF.
fn golden() -> Vec<Vec<u8>> {
    include_str!("vectors/hj212-2025.txt")
        .lines()
        .filter(|l| l.starts_with("##"))
        .map(|line| {
            let mut wire = line.strip_suffix("\\r\\n").unwrap().as_bytes().to_vec();
            wire.extend_from_slice(b"\r\n");
            wire
        })
        .collect()
}

/// Splits and strictly decodes one wire frame, then checks version 2025 and byte-identical
/// re-encoding of the packet as received.
fn decode(wire: &[u8]) -> Packet<'_> {
    let text = String::from_utf8_lossy(wire);
    let Split::Frame(frame) = Splitter::default().split(wire, true) else { panic!("{text}") };
    assert_eq!(frame.len(), wire.len(), "{text}");
    let packet = Decoded::new(frame, DecodeOptions::STRICT).verdict().unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(packet.version(), Version::V2025, "{text}");
    let owned = OwnedPacket::from_packet(&packet);
    assert_eq!(owned.to_frame_unchecked(CrcVariant::Hj212, frame.crc_is_lowercase()).unwrap(), wire, "{text}");
    packet
}

fn header<'p>(packet: &'p Packet<'_>) -> Header<'p> {
    Header {
        qn: packet.qn(),
        st: packet.st(),
        pw: packet.pw().unwrap(),
        mn: packet.mn().unwrap_or(""),
        flag: packet.flag(),
    }
}

/// The whole frame a typed message writes under the packet's own header.
fn frame_of(m: &Message, packet: &Packet<'_>) -> Vec<u8> {
    m.to_packet(&header(packet)).to_frame(CrcVariant::Hj212).unwrap()
}

/// The golden packet with the given CN whose `CP` starts with `DataTime` (an upload).
fn upload(cn: u16) -> Vec<u8> {
    let marker = format!(";CN={cn};");
    golden().into_iter().find(|w| contains(w, &marker) && contains(w, "CP=&&DataTime=")).unwrap()
}

fn contains(wire: &[u8], s: &str) -> bool {
    wire.windows(s.len()).any(|w| w == s.as_bytes())
}

#[test]
fn every_2025_packet_decodes_to_its_typed_message_and_re_encodes() {
    let golden = golden();
    let expected = expected();
    assert_eq!(golden.len(), 23);
    assert_eq!(expected.len(), golden.len());
    for (wire, want) in golden.iter().zip(&expected) {
        let text = String::from_utf8_lossy(wire);
        let packet = decode(wire);
        let m = Message::from_packet(&packet).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&m, want, "{text}");
        assert_eq!(m.cn(), packet.cn(), "{text}");
        // The typed form writes one group per item; a sender that packs several items into one
        // group (the digest's self-built 2011) differs only in `;` versus `,`.
        let flat = |s: &str| s.replace(',', ";");
        assert_eq!(flat(&m.to_packet(&header(&packet)).data_segment()), flat(packet.as_str()), "{text}");
        if packet.cn() != 2011 {
            assert_eq!(frame_of(&m, &packet), *wire, "{text}");
        }
        // Exactly the 2025 uploads have a typed view, and each only its own.
        let views = [
            m.raw_data().is_some(),
            m.standard_check().is_some(),
            m.furnace_temperature().is_some(),
            m.noise_measurement().is_some(),
        ];
        let want_view = match (packet.cn(), &m) {
            (2013, Message::Data { .. }) => Some(0),
            (2062, Message::Data { .. }) => Some(1),
            (2111, Message::Data { .. }) => Some(2),
            _ => None,
        };
        for (i, has) in views.iter().enumerate() {
            assert_eq!(*has, want_view == Some(i), "{text}: view {i}");
        }
    }
}

#[test]
fn raw_data_2013_reads_sampling_completion_type_value_and_flag() {
    let wire = upload(2013);
    let packet = decode(&wire);
    let m = Message::from_packet(&packet).unwrap();
    let raw = m.raw_data().unwrap();
    assert_eq!(raw.data_time, t("20240601090000"));
    assert_eq!(raw.samples.len(), 1);
    let s = &raw.samples[0];
    assert_eq!(s.code, "w01018");
    assert_eq!(s.sample_time, Some(t("20240601090109")));
    assert_eq!(s.complete_time, Some(t("20240601094200")));
    assert_eq!(s.sample_type, Some("1"));
    assert_eq!((s.avg, s.avg_number()), (Some("17.5"), Some(17.5)));
    assert_eq!(s.flag, Some(DataFlag::Normal));
    assert!(s.info.is_empty() && s.other.is_empty());
    let again = raw.to_message();
    assert_eq!(again, m);
    assert_eq!(frame_of(&again, &packet), wire);
}

#[test]
fn standard_check_2062_gathers_one_pollutant_from_three_groups() {
    let wire = upload(2062);
    let packet = decode(&wire);
    let m = Message::from_packet(&packet).unwrap();
    let check = m.standard_check().unwrap();
    assert_eq!(check.data_time, t("20240601080000"));
    assert_eq!(check.checks.len(), 1, "{check:?}");
    let c = &check.checks[0];
    assert_eq!(c.code, "w01018");
    assert_eq!((c.sample_rd, c.sample_rd_number()), (Some("15.3"), Some(15.3)));
    assert_eq!((c.standard_value, c.standard_value_number()), (Some("12"), Some(12.0)));
    assert_eq!(c.result, Some(CheckResult::Pass));
    assert!(c.result.unwrap().is_pass());
    assert!(c.other.is_empty());
    let again = check.to_message();
    assert_eq!(again, m);
    assert_eq!(frame_of(&again, &packet), wire);
}

#[test]
fn furnace_temperature_2111_is_a_five_minute_mean_of_a01901() {
    let wire = upload(2111);
    let packet = decode(&wire);
    let m = Message::from_packet(&packet).unwrap();
    let f = m.furnace_temperature().unwrap();
    assert_eq!(f.data_time, t("20240601011000"));
    assert_eq!(f.window_end(), Some(t("20240601011500")));
    assert_eq!(f.readings.len(), 1);
    assert_eq!((f.readings[0].code, f.readings[0].avg, f.readings[0].flag), ("a01901", Some("868"), None));
    assert_eq!(f.celsius(), Some(868.0));
    let again = f.to_message();
    assert_eq!(again, m);
    assert_eq!(frame_of(&again, &packet), wire);
}

/// No 2052 packet is printed in the digest. This one follows its §5.1 C34 template (`DataTime`,
/// then `<code>-Data`), with the noise codes of HJ 212-2017 C.28 and ST 23; the length and CRC
/// were computed with the digest's §2 CRC routine written independently of the codec.
const NOISE_2052: &[u8] = b"##0194QN=20240601085857223;ST=23;CN=2052;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&DataTime=20240601080000;Leq-Data=56.3;L10-Data=58.1;L50-Data=54.0;L90-Data=50.2;LMx-Data=71.4;LMn-Data=47.9&&3180\r\n";

#[test]
fn noise_measurement_2052_reads_each_level() {
    let packet = decode(NOISE_2052);
    let m = Message::from_packet(&packet).unwrap();
    let n = m.noise_measurement().unwrap();
    assert!(m.raw_data().is_none() && m.standard_check().is_none() && m.furnace_temperature().is_none());
    assert_eq!(n.data_time, t("20240601080000"));
    let levels: Vec<_> = n.levels.iter().map(|l| (l.code, l.data.unwrap(), l.data_number().unwrap())).collect();
    assert_eq!(
        levels,
        [
            ("Leq", "56.3", 56.3),
            ("L10", "58.1", 58.1),
            ("L50", "54.0", 54.0),
            ("L90", "50.2", 50.2),
            ("LMx", "71.4", 71.4),
            ("LMn", "47.9", 47.9)
        ]
    );
    assert_eq!(n.level("LMx").and_then(|l| l.data), Some("71.4"));
    assert!(n.level("Ld").is_none());
    let again = n.to_message();
    assert_eq!(again, m);
    assert_eq!(frame_of(&again, &packet), NOISE_2052);
}

#[test]
fn calibration_type_3011_is_typed_and_keeps_unknown_values() {
    let golden = golden();
    let wire = golden.iter().find(|w| contains(w, ";CN=3011;")).unwrap();
    let m = Message::from_packet(&decode(wire)).unwrap();
    assert_eq!(m.calibration_type(), Some(CalibrationType::Zero));
    // 3022 and 3024 are the same shape with their own CN and no calibration type.
    for cn in [3022, 3024] {
        let wire = golden.iter().find(|w| contains(w, &format!(";CN={cn};"))).unwrap();
        let m = Message::from_packet(&decode(wire)).unwrap();
        assert_eq!((m.cn(), m.calibration_type()), (cn, None));
    }
    for (text, want) in [("1", CalibrationType::Span), ("0", CalibrationType::Zero), ("7", CalibrationType::Other(7))] {
        let seg = format!("ST=32;CN=3011;Flag=9;CP=&&PolId=w01018,CalibrationType={text}&&");
        let m = Message::from_packet(&Packet::parse(seg.as_bytes()).unwrap()).unwrap();
        assert_eq!(m.calibration_type(), Some(want));
        let Message::AnalyzerControl { calibration_type, .. } = &m else { panic!("{m:?}") };
        assert_eq!(*calibration_type, Some(want));
        let mut out = String::new();
        hj212_codec::encode::write_groups(&m.to_cp(), &mut out);
        assert_eq!(out, format!("PolId=w01018,CalibrationType={text}"));
    }
}

#[test]
fn malformed_typed_2025_fields_are_errors_at_their_offset() {
    // Each case: a data segment, the field named in the error, and the bad value's text, whose
    // offset (from the frame start, the segment at byte 6) the error must carry.
    let cases = [
        (
            "ST=32;CN=2013;CP=&&DataTime=20240601090000;w01018-SampleTime=2024060109,w01018-Avg=17.5&&",
            "SampleTime",
            "2024060109,",
        ),
        (
            "ST=32;CN=2013;CP=&&DataTime=20240601090000;w01018-SampleTime=20240601090109,w01018-CompleteTime=20240631094200&&",
            "CompleteTime",
            "20240631094200",
        ),
        (
            "ST=32;CN=2062;CP=&&DataTime=20240601080000;w01018-SampleRd=15.3;w01018-ResultType=pass&&",
            "ResultType",
            "pass",
        ),
        ("ST=32;CN=2062;CP=&&DataTime=20240601080000;w01018-ResultType=256&&", "ResultType", "256"),
        ("ST=32;CN=3011;CP=&&PolId=w01018,CalibrationType=Z&&", "CalibrationType", "Z&&"),
    ];
    for (seg, field, bad) in cases {
        let e = Message::from_packet(&Packet::parse(seg.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidField(field), "{seg}");
        assert_eq!(e.offset(), 6 + seg.find(bad).unwrap(), "{seg}");
    }
    // The same fields are not typed in other uploads: 2011's `-SampleTime` stays text.
    let m = Message::from_packet(
        &Packet::parse(b"ST=32;CN=2011;CP=&&DataTime=20240601090000;w01018-SampleTime=soon,w01018-Rtd=1&&").unwrap(),
    )
    .unwrap();
    assert!(matches!(m, Message::Data { cn: Command::RealTimeData, .. }));
}
