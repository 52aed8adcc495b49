//! The JSON payload published for each accepted frame (schema in `docs/mqtt.md`).
//!
//! Values that the standard defines as numbers are published as JSON numbers; everything else
//! (flags, times, log text) as strings. Names and units come from the codec's code tables; the
//! site-information table in force for the MN decides the names of `i…` codes. The raw frame is
//! included with every password masked: passwords never reach MQTT.

use hj212_codec::codes::Suffix;
use hj212_codec::log::mask_password;
use hj212_codec::tables::{self, DeviceClass, DynamicControl, InfoCategory};
use hj212_codec::{CrcVariant, Decoded, Deviations, Packet};

use crate::config::CodeTable;

/// Everything about a frame that is not in the frame itself.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// When it was received, in milliseconds since 1970 (UTC).
    pub received_ms: i64,
    /// The peer address.
    pub peer: &'a str,
    /// The site-information table for the MN.
    pub code_table: CodeTable,
    /// The frame arrived SM4-encrypted (HJ 212-2025) and was decrypted.
    pub encrypted: bool,
    /// Why a quarantined frame was refused (published on the quarantine topic only).
    pub refused: Option<&'a str>,
    /// For a message reassembled from sub-packets: the QNs of its parts, in `PNO` order
    /// (published as `parts` on the whole-message topic only).
    pub parts: Option<&'a [Option<String>]>,
}

/// Writes the payload of one frame as compact JSON.
///
/// Written straight into bytes rather than through a `serde_json::Value`: at the throughput
/// ceiling the value tree (a map node and a string key per field) and its serialisation were a
/// fifth of the daemon's CPU (`docs/performance.md`).
#[must_use]
pub fn write(decoded: &Decoded<'_>, packet: &Packet<'_>, ctx: &Context<'_>) -> Vec<u8> {
    let mut raw = decoded.frame.bytes().to_vec();
    mask_password(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let raw = raw.trim_end_matches(['\r', '\n']);
    let crc = decoded.crc.as_ref().ok().map(|v| v.name());
    write_fields(packet, raw, crc, decoded.deviations(), ctx)
}

/// Writes the payload of a message reassembled from sub-packets (`ctx.parts` names them).
///
/// It never travelled as one frame, so `raw` is its data segment (`QN=…;…;CP=&&…&&`, passwords
/// masked) without `##`, length and CRC; `crc_variant` is the one its parts used, and
/// `deviations` is empty (each part's own are on the part's payload).
#[must_use]
pub fn write_whole(packet: &Packet<'_>, crc: CrcVariant, ctx: &Context<'_>) -> Vec<u8> {
    // `mask_password` reads a key at offset 6 as a field start (after `##LLLL`): give the data
    // segment that prefix while masking.
    let mut raw = Vec::with_capacity(packet.as_str().len() + 6);
    raw.extend_from_slice(b"##0000");
    raw.extend_from_slice(packet.as_str().as_bytes());
    mask_password(&mut raw);
    let raw = String::from_utf8_lossy(&raw[6..]);
    write_fields(packet, &raw, Some(crc.name()), Deviations::NONE, ctx)
}

fn write_fields(
    packet: &Packet<'_>,
    raw: &str,
    crc: Option<&str>,
    deviations: Deviations,
    ctx: &Context<'_>,
) -> Vec<u8> {
    let mut j = Json::with_capacity(3 * raw.len() + 256);
    j.begin(b'{');
    j.key("mn").str(packet.mn().unwrap_or(""));
    j.key("st").str(packet.st());
    j.key("cn").str(packet.cn_str());
    j.key("qn").opt_str(packet.qn());
    j.key("flag").opt_uint(packet.flag().map(|f| u64::from(f.0)));
    j.key("version").opt_uint(packet.version().year().map(u64::from));
    j.key("received_at").str(&rfc3339(ctx.received_ms));
    j.key("peer").str(ctx.peer);
    j.key("data_time").opt_str(packet.cp().get("DataTime"));
    j.key("pnum").opt_uint(packet.pnum().map(u64::from));
    j.key("pno").opt_uint(packet.pno().map(u64::from));
    j.key("backfill").bool(packet.is_backfill());
    j.key("encrypted").bool(ctx.encrypted);
    j.key("items");
    items(&mut j, packet, Section::Measurements, ctx.code_table);
    j.key("info");
    items(&mut j, packet, Section::Info, ctx.code_table);
    j.key("facilities");
    items(&mut j, packet, Section::Facilities, ctx.code_table);
    j.key("crc_variant").opt_str(crc);
    j.key("deviations").begin(b'[');
    for name in deviations.names() {
        j.str(name);
    }
    j.end(b']');
    j.key("raw").str(raw);
    if let Some(reason) = ctx.refused {
        j.key("refused").str(reason);
    }
    if let Some(parts) = ctx.parts {
        j.key("parts").begin(b'[');
        for qn in parts {
            j.opt_str(qn.as_deref());
        }
        j.end(b']');
    }
    j.end(b'}');
    j.buf
}

/// Formats milliseconds since 1970 as RFC 3339 UTC with milliseconds.
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    match hj212_codec::time::DateTime::from_millis(ms) {
        Some(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
        ),
        None => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// A compact JSON writer: commas are placed by the writer, strings escaped as RFC 8259 asks.
struct Json {
    buf: Vec<u8>,
    /// A value was written at this level: the next key or element needs a comma.
    comma: bool,
}

impl Json {
    fn with_capacity(n: usize) -> Self {
        Self { buf: Vec::with_capacity(n), comma: false }
    }

    fn sep(&mut self) {
        if self.comma {
            self.buf.push(b',');
        }
    }

    fn begin(&mut self, bracket: u8) -> &mut Self {
        self.sep();
        self.buf.push(bracket);
        self.comma = false;
        self
    }

    fn end(&mut self, bracket: u8) {
        self.buf.push(bracket);
        self.comma = true;
    }

    fn key(&mut self, key: &str) -> &mut Self {
        self.str(key);
        self.buf.push(b':');
        self.comma = false;
        self
    }

    fn str(&mut self, s: &str) {
        self.sep();
        self.buf.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..0x20 => b"",
                _ => continue,
            };
            self.buf.extend_from_slice(&bytes[start..i]);
            if escaped.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.buf.extend_from_slice(b"\\u00");
                self.buf.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            } else {
                self.buf.extend_from_slice(escaped);
            }
            start = i + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
        self.comma = true;
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }

    fn opt_uint(&mut self, n: Option<u64>) {
        match n {
            Some(n) => {
                self.sep();
                // Writing to a Vec cannot fail.
                let _ = std::io::Write::write_fmt(&mut self.buf, format_args!("{n}"));
                self.comma = true;
            }
            None => self.null(),
        }
    }

    /// A finite number, formatted as serde_json formats an `f64` (`2.5`, `12.0`, `1e-7`).
    fn f64(&mut self, n: f64) {
        self.sep();
        if serde_json::to_writer(&mut self.buf, &n).is_err() {
            self.buf.extend_from_slice(b"null");
        }
        self.comma = true;
    }

    fn bool(&mut self, b: bool) {
        self.sep();
        self.buf.extend_from_slice(if b { b"true" } else { b"false" });
        self.comma = true;
    }

    fn null(&mut self) {
        self.sep();
        self.buf.extend_from_slice(b"null");
        self.comma = true;
    }

    fn value(&mut self, v: Val<'_>) {
        match v {
            Val::Num(n) => self.f64(n),
            Val::Text(s) => self.str(s),
        }
    }
}

/// A field value: numbers where the standard defines numbers, text otherwise.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Num(f64),
    Text(&'a str),
}

fn number_or_text(value: &str) -> Val<'_> {
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Val::Num(n),
        _ => Val::Text(value),
    }
}

fn category_name(c: InfoCategory) -> &'static str {
    match c {
        InfoCategory::Log => "log",
        InfoCategory::State => "state",
        InfoCategory::Parameter => "parameter",
        _ => "other",
    }
}

fn device_name(d: DeviceClass) -> &'static str {
    match d {
        DeviceClass::Analyzer => "analyzer",
        DeviceClass::Dau => "dau",
        DeviceClass::Auxiliary => "auxiliary",
        _ => "other",
    }
}

/// The three arrays `CP` is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Pollutant and process items (`items`).
    Measurements,
    /// Site-information items, `i…-Info` (`info`).
    Info,
    /// Facility status items, `SB…` (`facilities`).
    Facilities,
}

/// Writes one of the arrays `CP` is split into.
///
/// Within a `;` group, consecutive pairs with the same code form one item (the layout of the
/// standard's examples); a field repeated within an item keeps its last value. `PolId=` sets the
/// analyzer for the information items that follow it.
fn items(j: &mut Json, packet: &Packet<'_>, section: Section, table: CodeTable) {
    j.begin(b'[');
    let mut pol_id: Option<&str> = None;
    // The item being gathered: its code and fields.
    let mut code: Option<&str> = None;
    let mut fields: Vec<(&str, Val<'_>)> = Vec::new();
    for group in packet.cp().groups() {
        for pair in group.pairs() {
            if pair.key() == "PolId" {
                pol_id = pair.value();
                continue;
            }
            let Some((c, suffix)) = pair.code_and_suffix() else { continue };
            let value = pair.value().unwrap_or("");
            if suffix == "Info" {
                flush(j, &mut code, &mut fields);
                if section == Section::Info {
                    info_item(j, c, value, pol_id, table);
                }
                continue;
            }
            let wanted = if c.starts_with("SB") { Section::Facilities } else { Section::Measurements };
            if code != Some(c) {
                flush(j, &mut code, &mut fields);
                if wanted == section {
                    code = Some(c);
                }
            }
            if code.is_none() {
                continue;
            }
            let parsed = Suffix::parse(suffix);
            let (key, v) = match parsed {
                Suffix::Flag => ("flag", Val::Text(value)),
                s if s.is_numeric() => (suffix, number_or_text(value)),
                _ => (suffix, Val::Text(value)),
            };
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(field) => field.1 = v,
                None => fields.push((key, v)),
            }
        }
        flush(j, &mut code, &mut fields);
    }
    j.end(b']');
}

/// Writes the gathered item, if any.
fn flush<'a>(j: &mut Json, code: &mut Option<&'a str>, fields: &mut Vec<(&'a str, Val<'a>)>) {
    let Some(c) = code.take() else { return };
    j.begin(b'{');
    // A field named like one of the item's own keys (a device's odd suffix) replaces it.
    let free = |key: &str| !fields.iter().any(|(k, _)| *k == key);
    if free("code") {
        j.key("code").str(c);
    }
    if !c.starts_with("SB") {
        let row = tables::pollutant(c).or_else(|| tables::process(c));
        if free("name") {
            j.key("name").opt_str(row.map(|r| r.name_en));
        }
        if free("name_zh") {
            j.key("name_zh").opt_str(row.map(|r| r.name_zh));
        }
        if free("unit") {
            j.key("unit").opt_str(row.map(|r| r.unit));
        }
    }
    for (key, v) in fields.drain(..) {
        j.key(key).value(v);
    }
    j.end(b'}');
}

fn info_item(j: &mut Json, code: &str, value: &str, pol_id: Option<&str>, table: CodeTable) {
    let (row, dynamic) = match table {
        CodeTable::Hebei => (
            tables::info_code_in(tables::INFO_CODES_HEBEI, code).or_else(|| tables::info_code(code)),
            tables::dynamic_control_in(tables::DYNAMIC_CONTROL_HEBEI, code).or_else(|| tables::dynamic_control(code)),
        ),
        CodeTable::National => (tables::info_code(code), tables::dynamic_control(code)),
    };
    let class = tables::info_category(code);
    let value = match class {
        Some((_, InfoCategory::Log)) => Val::Text(value),
        _ => number_or_text(value),
    };
    j.begin(b'{');
    j.key("code").str(code);
    j.key("pol_id").opt_str(pol_id);
    j.key("name").opt_str(row.map(|r| r.name_en));
    j.key("name_zh").opt_str(row.map(|r| r.name_zh));
    j.key("unit").opt_str(row.map(|r| r.unit));
    j.key("category").opt_str(class.map(|(_, c)| category_name(c)));
    j.key("dynamic_control").opt_str(dynamic.map(DynamicControl::name));
    j.key("device").opt_str(class.map(|(d, _)| device_name(d)));
    j.key("value").value(value);
    j.end(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use hj212_codec::{DecodeOptions, Split, Splitter};
    use serde_json::{Value, json};

    #[test]
    fn values_are_numbers_and_passwords_are_masked() {
        let mut p = hj212_codec::encode::OwnedPacket::new(Some("20240101000000000"), "32", 2011, "secret", "MN1", None);
        p.push_group([("DataTime", "20240101000000")]);
        p.push_group([("w01018-Rtd", "2.5"), ("w01018-Flag", "N")]);
        p.push_group([("SB1-RS", "1")]);
        p.push_group([("PolId", "w01018")]);
        p.push_group([("i12001-Info", "0")]);
        let frame = p.to_frame(hj212_codec::CrcVariant::Hj212).unwrap();
        let Split::Frame(f) = Splitter::default().split(&frame, true) else { panic!() };
        let d = Decoded::new(f, DecodeOptions::LENIENT);
        let packet = d.verdict().unwrap();
        let ctx = Context {
            received_ms: 0,
            peer: "p",
            code_table: CodeTable::National,
            encrypted: false,
            refused: None,
            parts: None,
        };
        let text = String::from_utf8(write(&d, &packet, &ctx)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["items"][0]["Rtd"], json!(2.5));
        assert_eq!(v["items"][0]["flag"], json!("N"));
        assert_eq!(v["items"][0]["unit"], json!("mg/L"));
        assert_eq!(v["facilities"][0]["RS"], json!(1.0));
        assert_eq!(v["info"][0]["pol_id"], json!("w01018"));
        assert_eq!(v["info"][0]["category"], json!("state"));
        assert_eq!(v["received_at"], json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(v["backfill"], json!(false));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("PW=******"));
    }

    /// `dynamic_control` follows the MN's table: a Hebei-only code is categorised under Hebei and
    /// null under the national table; `category` (from the code's characters) is the same in both.
    #[test]
    fn info_items_carry_the_dynamic_control_category_of_the_mns_table() {
        let mut p = hj212_codec::encode::OwnedPacket::new(Some("20240101000000000"), "32", 3020, "pw", "MN1", None);
        p.push_group([("DataTime", "20240101000000")]);
        p.push_group([("PolId", "w01018"), ("i13128-Info", "20240101000000"), ("i13129-Info", "2.5")]);
        p.push_group([("i12001-Info", "0"), ("i13008-Info", "1.02"), ("i11001-Info", "//log//")]);
        let frame = p.to_frame(hj212_codec::CrcVariant::Hj212).unwrap();
        let Split::Frame(f) = Splitter::default().split(&frame, true) else { panic!() };
        let d = Decoded::new(f, DecodeOptions::LENIENT);
        let packet = d.verdict().unwrap();
        let info = |code_table| {
            let ctx = Context { received_ms: 0, peer: "p", code_table, encrypted: false, refused: None, parts: None };
            let v: Value = serde_json::from_slice(&write(&d, &packet, &ctx)).unwrap();
            v["info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["dynamic_control"].clone(), i["category"].clone()))
                .collect::<Vec<_>>()
        };
        let parameter = json!("parameter");
        assert_eq!(
            info(CodeTable::Hebei),
            [
                (json!("standard_check"), parameter.clone()),
                (json!("standard_check"), parameter.clone()),
                (json!("working"), json!("state")),
                (json!("calibration"), parameter.clone()),
                (Value::Null, json!("log")),
            ]
        );
        assert_eq!(
            info(CodeTable::National),
            [
                (Value::Null, parameter.clone()),
                (Value::Null, parameter.clone()),
                (json!("working"), json!("state")),
                (json!("calibration"), parameter),
                (Value::Null, json!("log")),
            ]
        );
    }

    /// Escapes, odd numbers, a repeated field, a field named like an item key, and `PolId`:
    /// the payload text exactly. (Checked against serde_json's `Value` tree when the writer
    /// replaced it: equal on these and on every packet of the shared vectors.)
    #[test]
    fn payload_text_for_odd_fields() {
        let odd: [&[(&str, &str)]; 4] = [
            &[("w01018-Rtd", "1e-7"), ("w01018-Rtd", "-0"), ("w01018-unit", "odd"), ("w01018-Flag", "N")],
            &[
                ("i11001-Info", "log \"quoted\" \\ back\ttab\u{1}ctl 中文"),
                ("w00000-Min", " 12 "),
                ("w00000-Max", "NaN"),
            ],
            &[("SB1-RS", "inf"), ("SB1-RT", "12.50"), ("a21026-SampleTime", "20240101000000"), ("a21026-Avg", "x")],
            &[("PolId", "w01018"), ("i13004-Info", "3.0"), ("i12001-Info", "1"), ("w01018-EFlag", "A1")],
        ];
        let expected = [
            r###"{"mn":"MN1","st":"32","cn":"2011","qn":"20240101000000000","flag":null,"version":2005,"received_at":"1970-01-01T00:00:00.005Z","peer":"p","data_time":"20240101000000","pnum":null,"pno":null,"backfill":false,"encrypted":false,"items":[{"code":"w01018","name":"Chemical oxygen demand (COD)","name_zh":"化学需氧量","Rtd":-0.0,"unit":"odd","flag":"N"}],"info":[],"facilities":[],"crc_variant":"hj212","deviations":[],"raw":"##0138QN=20240101000000000;ST=32;CN=2011;PW=**;MN=MN1;CP=&&DataTime=20240101000000;w01018-Rtd=1e-7,w01018-Rtd=-0,w01018-unit=odd,w01018-Flag=N&&A3C1"}"###,
            r###"{"mn":"MN1","st":"32","cn":"2011","qn":"20240101000000000","flag":null,"version":2005,"received_at":"1970-01-01T00:00:00.005Z","peer":"p","data_time":"20240101000000","pnum":null,"pno":null,"backfill":false,"encrypted":false,"items":[{"code":"w00000","name":"Wastewater (flow)","name_zh":"污水","unit":"L/s","Min":12.0,"Max":"NaN"}],"info":[{"code":"i11001","pol_id":null,"name":"Analyzer run log","name_zh":"运行日志","unit":"","category":"log","dynamic_control":null,"device":"analyzer","value":"log \"quoted\" \\ back\ttab\u0001ctl 中文"}],"facilities":[],"crc_variant":"hj212","deviations":[],"raw":"##0156QN=20240101000000000;ST=32;CN=2011;PW=**;MN=MN1;CP=&&DataTime=20240101000000;i11001-Info=log \"quoted\" \\ back\ttab\u0001ctl 中文,w00000-Min= 12 ,w00000-Max=NaN&&4DC0"}"###,
            r###"{"mn":"MN1","st":"32","cn":"2011","qn":"20240101000000000","flag":null,"version":2005,"received_at":"1970-01-01T00:00:00.005Z","peer":"p","data_time":"20240101000000","pnum":null,"pno":null,"backfill":false,"encrypted":false,"items":[{"code":"a21026","name":"Sulphur dioxide (SO2)","name_zh":"二氧化硫","unit":"mg/m³","SampleTime":"20240101000000","Avg":"x"}],"info":[],"facilities":[{"code":"SB1","RS":"inf","RT":12.5}],"crc_variant":"hj212","deviations":[],"raw":"##0148QN=20240101000000000;ST=32;CN=2011;PW=**;MN=MN1;CP=&&DataTime=20240101000000;SB1-RS=inf,SB1-RT=12.50,a21026-SampleTime=20240101000000,a21026-Avg=x&&D201"}"###,
            r###"{"mn":"MN1","st":"32","cn":"2011","qn":"20240101000000000","flag":null,"version":2005,"received_at":"1970-01-01T00:00:00.005Z","peer":"p","data_time":"20240101000000","pnum":null,"pno":null,"backfill":false,"encrypted":false,"items":[{"code":"w01018","name":"Chemical oxygen demand (COD)","name_zh":"化学需氧量","unit":"mg/L","EFlag":"A1"}],"info":[{"code":"i13004","pol_id":"w01018","name":"Digestion temperature","name_zh":"消解温度","unit":"°C","category":"parameter","dynamic_control":"running","device":"analyzer","value":3.0},{"code":"i12001","pol_id":"w01018","name":"Analyzer working state","name_zh":"工作状态","unit":"","category":"state","dynamic_control":"working","device":"analyzer","value":1.0}],"facilities":[],"crc_variant":"hj212","deviations":[],"raw":"##0137QN=20240101000000000;ST=32;CN=2011;PW=**;MN=MN1;CP=&&DataTime=20240101000000;PolId=w01018,i13004-Info=3.0,i12001-Info=1,w01018-EFlag=A1&&8641"}"###,
        ];
        for (pairs, expected) in odd.into_iter().zip(expected) {
            let mut p = hj212_codec::encode::OwnedPacket::new(Some("20240101000000000"), "32", 2011, "pw", "MN1", None);
            p.push_group([("DataTime", "20240101000000")]);
            p.push_group(pairs.iter().copied());
            let frame = p.to_frame_unchecked(hj212_codec::CrcVariant::Hj212, false).unwrap();
            let Split::Frame(f) = Splitter::default().split(&frame, true) else { panic!() };
            let d = Decoded::new(f, DecodeOptions::LENIENT);
            let packet = d.verdict().unwrap();
            let ctx = Context {
                received_ms: 5,
                peer: "p",
                code_table: CodeTable::National,
                encrypted: false,
                refused: None,
                parts: None,
            };
            let text = String::from_utf8(write(&d, &packet, &ctx)).unwrap();
            assert_eq!(text, expected);
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
        }
    }
}
