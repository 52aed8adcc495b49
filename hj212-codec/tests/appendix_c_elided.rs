//! The HJ 212-2017 Appendix C examples that the standard prints with a `…` placeholder ("more
//! items"), as golden tests, one per example, by CN.
//!
//! The shared vectors leave these out (spec digest §10): a packet with `…` in it is not a packet.
//! Here each one is the standard's text with the placeholder removed, together with the `;` that
//! would have separated it from the elided items, keeping every item the standard prints, errata
//! included (spec digest §14). Each example must decode strictly, read as the typed message its
//! role calls for with the values the standard prints, and re-encode byte for byte, both from the
//! parsed packet and from the typed message.
//!
//! The CRCs are ours: the standard prints no CRC for these packets (their segments are elided),
//! so each frame below was built by this crate's encoder, and every test also checks that CRC
//! against a literal bit-by-bit transcription of Appendix A that shares no code with the crate.
#![cfg(feature = "alloc")]

use hj212_codec::crc::{self, CrcVariant};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::{DataItem, Header, Message};
use hj212_codec::time::DateTime;
use hj212_codec::{Command, DataFlag, DecodeOptions, Decoded, Packet, Split, Splitter};

/// C.14, upload of real-time data (CN 2011), as printed: the standard writes `01018-Rtd` without
/// its leading `w` (spec digest §14).
const C14_PRINTED: &[u8] = b"##0217QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;w01001-Rtd=7.1,w01001-Flag=N;w01018-SampleTime=20160801070000,01018-Rtd=2.2,w01018-Flag=N,w01018-EFlag=A01&&0280\r\n";
/// C.14 with that erratum corrected to `w01018-Rtd`, as the field list under the example reads.
const C14: &[u8] = b"##0218QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;w01001-Rtd=7.1,w01001-Flag=N;w01018-SampleTime=20160801070000,w01018-Rtd=2.2,w01018-Flag=N,w01018-EFlag=A01&&6E80\r\n";
/// C.15, upload of facility running states (CN 2021).
const C15: &[u8] = b"##0128QN=20160801085857223;ST=32;CN=2021;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;SB1-RS=1;SB2-RS=0&&F141\r\n";
/// C.16, upload of minute data (CN 2051).
const C16: &[u8] = b"##0325QN=20160801085000001;ST=32;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801084000;w00000-Cou=10.5,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=10.5,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&6180\r\n";
/// C.17, upload of hourly data (CN 2061).
const C17: &[u8] = b"##0325QN=20160801090000001;ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801080000;w00000-Cou=63.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=63.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&B7C1\r\n";
/// C.18, upload of daily data (CN 2031).
const C18: &[u8] = b"##0329QN=20160802000000001;ST=32;CN=2031;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801000000;w00000-Cou=1512.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=2142.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&F781\r\n";
/// C.20, the minute data the site sends back for a history request (CN 2051): its own QN
/// (`…534`, the request was `…223`) and Flag=4 (no answer wanted).
const C20: &[u8] = b"##0325QN=20160801085857534;ST=32;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&DataTime=20160801084000;w00000-Cou=10.5,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=10.5,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&4DC0\r\n";
/// C.21, the hourly data sent back for a history request (CN 2061).
const C21: &[u8] = b"##0325QN=20160801085857534;ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&DataTime=20160801080000;w00000-Cou=63.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=63.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&5E40\r\n";
/// C.23, the daily running times sent back for a history request (CN 2041).
const C23: &[u8] = b"##0132QN=20160801085857534;ST=32;CN=2041;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&DataTime=20160801000000;SB1-RT=1.1;SB2-RT=2.1&&B8C1\r\n";
/// C.29, upload of process (working-condition) real-time data (ST=52, CN 2011): the standard
/// prints `e01001-Rtd` twice (spec digest §14); both are kept.
const C29: &[u8] = b"##0140QN=20160801085857223;ST=52;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;e01001-Rtd=1.1;e01001-Rtd=2.2&&F001\r\n";

/// HJ 212-2017 Appendix A, transcribed bit by bit: shift the register right by eight bits, XOR
/// the byte in, then eight rounds of shift right and XOR 0xA001 when the bit shifted out was 1.
fn appendix_a_bitwise(data: &[u8]) -> u16 {
    let mut reg: u16 = 0xFFFF;
    for &byte in data {
        reg = (reg >> 8) ^ u16::from(byte);
        for _ in 0..8 {
            let out = reg & 0x0001;
            reg >>= 1;
            if out != 0 {
                reg ^= 0xA001;
            }
        }
    }
    reg
}

/// The checks every example passes; returns the packet and its typed message.
fn golden(wire: &'static [u8]) -> (Packet<'static>, Message) {
    // The frame's parts: `##`, four digits, the data segment, four hex digits, CR LF.
    let text = std::str::from_utf8(wire).unwrap();
    let body = text.strip_suffix("\r\n").unwrap();
    let (head, crc_text) = body.split_at(body.len() - 4);
    let data = &head[6..];
    assert_eq!(head[2..6].parse::<usize>().unwrap(), data.len(), "the length field counts the data segment");
    assert!(!data.contains('…'), "the placeholder is gone");
    // Our CRC, cross-checked with the independent transcription of Appendix A.
    let printed = crc::from_hex(crc_text.as_bytes()).unwrap();
    assert_eq!(appendix_a_bitwise(data.as_bytes()), printed, "bit-by-bit Appendix A agrees with the frame's CRC");
    assert_eq!(crc::hj212(data.as_bytes()), printed);
    assert_eq!(hj212_codec::encode::frame(data.as_bytes(), CrcVariant::Hj212, false), wire);

    // Cut from a stream that is still open, and decoded strictly.
    let Split::Frame(frame) = Splitter::default().split(wire, false) else { panic!("no frame in {text}") };
    assert_eq!(frame.len(), wire.len());
    assert_eq!(frame.crc_received(), appendix_a_bitwise(frame.data()));
    let decoded = Decoded::new(frame, DecodeOptions::STRICT);
    let packet = decoded.verdict().unwrap_or_else(|e| panic!("strict decode refused {text}: {e}"));
    assert_eq!(decoded.crc, Ok(CrcVariant::Hj212));
    assert!(decoded.deviations().is_empty(), "{:?}", decoded.deviations());
    assert_eq!(packet.as_str(), data);

    // Re-encoded from the parsed packet, byte for byte.
    let owned = OwnedPacket::from_packet(&packet);
    assert_eq!(owned.to_frame(CrcVariant::Hj212).unwrap(), wire);

    let message = Message::from_packet(&packet).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(message.cn(), packet.cn());
    (packet, message)
}

/// The typed message, wrapped in the packet's own header, gives the same frame.
fn typed_round_trip(packet: &Packet<'_>, message: &Message, wire: &[u8]) {
    let header = Header {
        qn: packet.qn(),
        st: packet.st(),
        pw: packet.pw().unwrap(),
        mn: packet.mn().unwrap(),
        flag: packet.flag(),
    };
    let again = message.to_packet(&header).to_frame(CrcVariant::Hj212).unwrap();
    assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(wire));
}

fn time(s: &str) -> DateTime {
    DateTime::parse(s).unwrap()
}

fn data(message: &Message) -> (Command, DateTime, &[DataItem]) {
    match message {
        Message::Data { cn, data_time, items } => (*cn, *data_time, items),
        other => panic!("expected data, got {other:?}"),
    }
}

/// An item's code and its `(suffix, value)` pairs, for comparing with what the standard prints.
fn item(code: &str, fields: &[(&str, &str)]) -> DataItem {
    DataItem {
        code: code.to_string(),
        fields: fields.iter().map(|(s, v)| ((*s).to_string(), (*v).to_string())).collect(),
    }
}

fn header(packet: &Packet<'_>, qn: &str, st: &str, cn: u16, flag: u8) {
    assert_eq!(packet.qn(), Some(qn));
    assert_eq!(packet.st(), st);
    assert_eq!(packet.cn(), cn);
    assert_eq!(packet.pw(), Some("123456"));
    assert_eq!(packet.mn(), Some("010000A8900016F000169DC0"));
    assert_eq!(packet.flag().map(|f| f.0), Some(flag));
    assert_eq!(packet.version(), hj212_codec::Version::V2017);
    // Flag=5 asks for a 9014 (Appendix C: "根据标志 Flag 的值决定是否返回数据应答"); Flag=4 does not.
    assert_eq!(packet.wants_ack(), flag == 5);
    assert_eq!((packet.pnum(), packet.pno()), (None, None));
}

/// The three pollutants of C.16/C.17/C.20/C.21, with the totals (`-Cou`) of the period.
fn aggregate_items(cou_w00000: &str, cou_w01018: &str) -> Vec<DataItem> {
    vec![
        item("w00000", &[("Cou", cou_w00000), ("Min", "16.4"), ("Avg", "17.5"), ("Max", "20.1"), ("Flag", "N")]),
        item("w01001", &[("Min", "7.1"), ("Avg", "7.5"), ("Max", "7.8"), ("Flag", "N")]),
        item("w01018", &[("Cou", cou_w01018), ("Min", "40.1"), ("Avg", "40.1"), ("Max", "40.1"), ("Flag", "N")]),
    ]
}

#[test]
fn cn2011_c14_real_time_data_with_sample_time_and_eflag() {
    let (packet, message) = golden(C14);
    header(&packet, "20160801085857223", "32", 2011, 5);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::RealTimeData);
    assert_eq!(data_time, time("20160801085857"));
    assert_eq!(
        items,
        [
            item("w01001", &[("Rtd", "7.1"), ("Flag", "N")]),
            item("w01018", &[("SampleTime", "20160801070000"), ("Rtd", "2.2"), ("Flag", "N"), ("EFlag", "A01")]),
        ]
    );
    let cod = &items[1];
    assert_eq!(cod.number("Rtd"), Some(2.2));
    assert_eq!(cod.flag(), Some(DataFlag::Normal));
    assert_eq!(cod.get("SampleTime").and_then(DateTime::parse), Some(time("20160801070000")));
    assert_eq!(cod.get("EFlag"), Some("A01"));
    typed_round_trip(&packet, &message, C14);
}

#[test]
fn cn2011_c14_as_printed_keeps_the_code_without_its_w() {
    // The misprinted `01018-Rtd` is a well-formed pair: strict receivers accept it and the
    // packet re-encodes byte for byte. The typed view keeps it as an item of its own, between
    // the two runs of `w01018` pairs.
    let (packet, message) = golden(C14_PRINTED);
    header(&packet, "20160801085857223", "32", 2011, 5);
    let (_, data_time, items) = data(&message);
    assert_eq!(data_time, time("20160801085857"));
    let codes: Vec<&str> = items.iter().map(|i| i.code.as_str()).collect();
    assert_eq!(codes, ["w01001", "w01018", "01018", "w01018"]);
    assert_eq!(items[2], item("01018", &[("Rtd", "2.2")]));
    assert_eq!(items[3], item("w01018", &[("Flag", "N"), ("EFlag", "A01")]));
    // Written back from the typed view, every pair keeps its place; only the separators between
    // the items of that one `;` group change, since the typed view writes one group per item.
    let h = Header {
        qn: packet.qn(),
        st: packet.st(),
        pw: packet.pw().unwrap(),
        mn: packet.mn().unwrap(),
        flag: packet.flag(),
    };
    let again = message.to_packet(&h).data_segment();
    assert_eq!(again.replace(';', ","), packet.as_str().replace(';', ","));
}

#[test]
fn cn2021_c15_facility_running_states() {
    let (packet, message) = golden(C15);
    header(&packet, "20160801085857223", "32", 2021, 5);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::FacilityState);
    assert_eq!(data_time, time("20160801085857"));
    assert_eq!(items, [item("SB1", &[("RS", "1")]), item("SB2", &[("RS", "0")])]);
    typed_round_trip(&packet, &message, C15);
}

#[test]
fn cn2051_c16_minute_data() {
    let (packet, message) = golden(C16);
    header(&packet, "20160801085000001", "32", 2051, 5);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::MinuteData);
    // The start of the ten-minute period 08:40–08:50.
    assert_eq!(data_time, time("20160801084000"));
    assert_eq!(items, aggregate_items("10.5", "10.5"));
    assert_eq!(items[0].number("Cou"), Some(10.5));
    typed_round_trip(&packet, &message, C16);
}

#[test]
fn cn2061_c17_hourly_data() {
    let (packet, message) = golden(C17);
    header(&packet, "20160801090000001", "32", 2061, 5);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::HourlyData);
    assert_eq!(data_time, time("20160801080000"));
    assert_eq!(items, aggregate_items("63.0", "63.0"));
    typed_round_trip(&packet, &message, C17);
}

#[test]
fn cn2031_c18_daily_data() {
    let (packet, message) = golden(C18);
    header(&packet, "20160802000000001", "32", 2031, 5);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::DailyData);
    assert_eq!(data_time, time("20160801000000"));
    assert_eq!(items, aggregate_items("1512.0", "2142.0"));
    assert_eq!(items[2].number("Cou"), Some(2142.0));
    typed_round_trip(&packet, &message, C18);
}

#[test]
fn cn2051_c20_minute_history_reply() {
    let (packet, message) = golden(C20);
    header(&packet, "20160801085857534", "32", 2051, 4);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::MinuteData);
    // The request asked for BeginTime=EndTime=20160801084000; the reply is that period.
    assert_eq!(data_time, time("20160801084000"));
    assert_eq!(items, aggregate_items("10.5", "10.5"));
    // The same items as the periodic upload of C.16, under the reply's own header.
    assert_eq!(message, golden(C16).1);
    typed_round_trip(&packet, &message, C20);
}

#[test]
fn cn2061_c21_hourly_history_reply() {
    let (packet, message) = golden(C21);
    header(&packet, "20160801085857534", "32", 2061, 4);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::HourlyData);
    assert_eq!(data_time, time("20160801080000"));
    assert_eq!(items, aggregate_items("63.0", "63.0"));
    assert_eq!(message, golden(C17).1);
    typed_round_trip(&packet, &message, C21);
}

#[test]
fn cn2041_c23_daily_running_time_history_reply() {
    let (packet, message) = golden(C23);
    header(&packet, "20160801085857534", "32", 2041, 4);
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::DailyRunTime);
    assert_eq!(data_time, time("20160801000000"));
    assert_eq!(items, [item("SB1", &[("RT", "1.1")]), item("SB2", &[("RT", "2.1")])]);
    assert_eq!(items[1].number("RT"), Some(2.1));
    typed_round_trip(&packet, &message, C23);
}

#[test]
fn cn2011_c29_process_real_time_data_under_st52() {
    let (packet, message) = golden(C29);
    header(&packet, "20160801085857223", "52", 2011, 5);
    // ST 52 is a system code of Table 5: wastewater discharge process monitoring.
    assert_eq!(hj212_codec::tables::system("52").map(|s| s.name_zh), Some("污水排放过程监控"));
    let (cn, data_time, items) = data(&message);
    assert_eq!(cn, Command::RealTimeData);
    assert_eq!(data_time, time("20160801085857"));
    // Both `e01001-Rtd` groups are kept, in order.
    assert_eq!(items, [item("e01001", &[("Rtd", "1.1")]), item("e01001", &[("Rtd", "2.2")])]);
    typed_round_trip(&packet, &message, C29);
}
