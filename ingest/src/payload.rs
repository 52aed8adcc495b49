//! The JSON payload published for each accepted frame (schema in `docs/mqtt.md`).
//!
//! Values that the standard defines as numbers are published as JSON numbers; everything else
//! (flags, times, log text) as strings. Names and units come from the codec's code tables; the
//! site-information table in force for the MN decides the names of `i…` codes. The raw frame is
//! included with every password masked: passwords never reach MQTT.

use hj212_codec::codes::Suffix;
use hj212_codec::log::mask_password;
use hj212_codec::tables::{self, DeviceClass, InfoCategory};
use hj212_codec::{Decoded, Packet};
use serde_json::{Map, Value, json};

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
}

/// Builds the payload of one frame.
#[must_use]
pub fn build(decoded: &Decoded<'_>, packet: &Packet<'_>, ctx: &Context<'_>) -> Value {
    let mut raw = decoded.frame.bytes().to_vec();
    mask_password(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let raw = raw.trim_end_matches(['\r', '\n']);
    let (items, info, facilities) = items(packet, ctx.code_table);
    json!({
        "mn": packet.mn().unwrap_or(""),
        "st": packet.st(),
        "cn": packet.cn_str(),
        "qn": packet.qn(),
        "flag": packet.flag().map(|f| f.0),
        "version": packet.version().year(),
        "received_at": rfc3339(ctx.received_ms),
        "peer": ctx.peer,
        "data_time": packet.cp().get("DataTime"),
        "pnum": packet.pnum(),
        "pno": packet.pno(),
        "backfill": packet.is_backfill(),
        "encrypted": ctx.encrypted,
        "items": items,
        "info": info,
        "facilities": facilities,
        "crc_variant": decoded.crc.as_ref().ok().map(|v| v.name()),
        "deviations": decoded.deviations().names().collect::<Vec<_>>(),
        "raw": raw,
    })
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

fn number_or_text(value: &str) -> Value {
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => json!(n),
        _ => json!(value),
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

/// Splits `CP` into measurement items, site-information items and facility items.
///
/// Within a `;` group, consecutive pairs with the same code form one item (the layout of the
/// standard's examples). `PolId=` sets the analyzer for the information items that follow it.
fn items(packet: &Packet<'_>, table: CodeTable) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut items: Vec<Value> = Vec::new();
    let mut info: Vec<Value> = Vec::new();
    let mut facilities: Vec<Value> = Vec::new();
    let mut pol_id: Option<&str> = None;
    for group in packet.cp().groups() {
        let mut current: Option<(&str, Map<String, Value>)> = None;
        let flush = |cur: &mut Option<(&str, Map<String, Value>)>, items: &mut Vec<Value>, fac: &mut Vec<Value>| {
            if let Some((code, obj)) = cur.take() {
                if code.starts_with("SB") { fac.push(Value::Object(obj)) } else { items.push(Value::Object(obj)) }
            }
        };
        for pair in group.pairs() {
            if pair.key() == "PolId" {
                pol_id = pair.value();
                continue;
            }
            let Some((code, suffix)) = pair.code_and_suffix() else { continue };
            let value = pair.value().unwrap_or("");
            if suffix == "Info" {
                flush(&mut current, &mut items, &mut facilities);
                let row = match table {
                    CodeTable::Hebei => {
                        tables::info_code_in(tables::INFO_CODES_HEBEI, code).or_else(|| tables::info_code(code))
                    }
                    CodeTable::National => tables::info_code(code),
                };
                let class = tables::info_category(code);
                let value = match class {
                    Some((_, InfoCategory::Log)) => json!(value),
                    _ => number_or_text(value),
                };
                info.push(json!({
                    "code": code,
                    "pol_id": pol_id,
                    "name": row.map(|r| r.name_en),
                    "name_zh": row.map(|r| r.name_zh),
                    "unit": row.map(|r| r.unit),
                    "category": class.map(|(_, c)| category_name(c)),
                    "device": class.map(|(d, _)| device_name(d)),
                    "value": value,
                }));
                continue;
            }
            if current.as_ref().is_none_or(|(c, _)| *c != code) {
                flush(&mut current, &mut items, &mut facilities);
                let mut obj = Map::new();
                obj.insert("code".into(), json!(code));
                if !code.starts_with("SB") {
                    let row = tables::pollutant(code).or_else(|| tables::process(code));
                    obj.insert("name".into(), json!(row.map(|r| r.name_en)));
                    obj.insert("name_zh".into(), json!(row.map(|r| r.name_zh)));
                    obj.insert("unit".into(), json!(row.map(|r| r.unit)));
                }
                current = Some((code, obj));
            }
            if let Some((_, obj)) = current.as_mut() {
                let parsed = Suffix::parse(suffix);
                let (key, v) = match parsed {
                    Suffix::Flag => ("flag".to_string(), json!(value)),
                    s if s.is_numeric() => (suffix.to_string(), number_or_text(value)),
                    _ => (suffix.to_string(), json!(value)),
                };
                obj.insert(key, v);
            }
        }
        flush(&mut current, &mut items, &mut facilities);
    }
    (items, info, facilities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hj212_codec::{DecodeOptions, Split, Splitter};

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
        let v = build(
            &d,
            &packet,
            &Context { received_ms: 0, peer: "p", code_table: CodeTable::National, encrypted: false },
        );
        assert_eq!(v["items"][0]["Rtd"], json!(2.5));
        assert_eq!(v["items"][0]["flag"], json!("N"));
        assert_eq!(v["items"][0]["unit"], json!("mg/L"));
        assert_eq!(v["facilities"][0]["RS"], json!(1.0));
        assert_eq!(v["info"][0]["pol_id"], json!("w01018"));
        assert_eq!(v["info"][0]["category"], json!("state"));
        assert_eq!(v["received_at"], json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(v["backfill"], json!(false));
        let text = v.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("PW=******"));
    }
}
