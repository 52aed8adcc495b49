//! The JSON Lines shape of `hj212 decode --json`, and its inverse for `hj212 encode`.
//!
//! One object per line, tagged by `type` (documented in `docs/cli.md`):
//!
//! - `frame`: `offset` (in the input stream), `valid`, `error` (`null` or `{kind, offset, message}`,
//!   the offset counted from the frame's first `#`), `deviations` (names), `version` (2005, 2017,
//!   2025 or `null`), `crc` (`{received, computed, variant}`), `qn`, `st`, `cn`, `pw`, `mn` (strings
//!   or `null`), `flag`, `pnum`, `pno` (numbers or `null`), `header` (the header fields in order, as
//!   `[name, value]`, exactly as received), `cp` (groups of `[key, value]` pairs, exactly as
//!   received; `value` is `null` for a token without `=`), and `raw` (`{"text": …}` for UTF-8,
//!   otherwise `{"bytes": base64}`).
//! - `skipped`: `offset`, `len`, `reason`.
//! - `summary`: counts.
//!
//! `encode` reads `frame` objects back. It uses `header` when present (so field order and spacing
//! survive) and otherwise writes the 2017 order from `qn`…`pno`; it uses `crc.variant` and the
//! letter case of `crc.received`, so `decode --json | encode` reproduces the input frames.

use anyhow::{Context, Result, bail};
use hj212_codec::crc::{self, CrcVariant};
use hj212_codec::encode::{OwnedPacket, OwnedPair};
use hj212_codec::{Decoded, Flag, Packet, SkipReason};
use serde_json::{Value, json};

/// The JSON object for one decoded frame at stream offset `offset`.
#[must_use]
pub fn frame_json(offset: u64, d: &Decoded<'_>) -> Value {
    let verdict = d.verdict();
    let error = verdict.err().map(|e| json!({"kind": e.kind().name(), "offset": e.offset(), "message": e.to_string()}));
    let f = &d.frame;
    let computed = match d.crc {
        Ok(v) => v.compute(f.data()),
        Err(_) => crc::hj212(f.data()),
    };
    let crc = json!({
        "received": String::from_utf8_lossy(f.crc_text()),
        "computed": format!("{computed:04X}"),
        "variant": d.crc.ok().map(CrcVariant::name),
    });
    let packet = d.packet.ok();
    let p = packet.as_ref();
    json!({
        "type": "frame",
        "offset": offset,
        "valid": verdict.is_ok(),
        "error": error,
        "deviations": d.deviations().names().collect::<Vec<_>>(),
        "version": p.and_then(|p| p.version().year()),
        "crc": crc,
        "qn": p.and_then(Packet::qn),
        "st": p.map(Packet::st),
        "cn": p.map(Packet::cn_str),
        "pw": p.and_then(Packet::pw),
        "mn": p.and_then(Packet::mn),
        "flag": p.and_then(Packet::flag).map(|f| f.0),
        "pnum": p.and_then(Packet::pnum),
        "pno": p.and_then(Packet::pno),
        "header": p.map(header_json),
        "cp": p.map(cp_json),
        "raw": raw_json(f.bytes()),
    })
}

fn header_json(p: &Packet<'_>) -> Value {
    let owned = OwnedPacket::from_packet(p);
    Value::Array(owned.header.into_iter().map(|(k, v)| json!([k, v])).collect())
}

fn cp_json(p: &Packet<'_>) -> Value {
    p.cp()
        .groups()
        .map(|g| g.pairs().map(|pair| json!([pair.raw_key(), pair.raw_value()])).collect::<Vec<_>>())
        .collect()
}

/// `{"text": …}` for UTF-8 bytes, `{"bytes": base64}` otherwise.
#[must_use]
pub fn raw_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({"text": text}),
        Err(_) => json!({"bytes": base64(bytes)}),
    }
}

/// The JSON object for a skipped run.
#[must_use]
pub fn skipped_json(offset: u64, len: usize, reason: SkipReason) -> Value {
    json!({"type": "skipped", "offset": offset, "len": len, "reason": reason.name()})
}

/// Standard base64 with padding.
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn str_field<'v>(v: &'v Value, name: &str) -> Result<Option<&'v str>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => bail!("field {name:?} must be a string or null, found {other}"),
    }
}

fn num_field(v: &Value, name: &str) -> Result<Option<u64>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n.as_u64().map(Some).with_context(|| format!("field {name:?} must be a whole number, found {n}")),
    }
}

fn pair_list(v: &Value, what: &str) -> Result<Vec<(String, Option<String>)>> {
    let list = v.as_array().with_context(|| format!("{what} must be an array of [key, value] pairs"))?;
    list.iter()
        .enumerate()
        .map(|(i, pair)| {
            let items = pair
                .as_array()
                .filter(|a| a.len() == 2)
                .with_context(|| format!("{what}[{i}] must be [key, value]"))?;
            let key = items[0].as_str().with_context(|| format!("{what}[{i}]: the key must be a string"))?;
            let value = match &items[1] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => bail!("{what}[{i}]: the value must be a string, a number or null, found {other}"),
            };
            Ok((key.to_string(), value))
        })
        .collect()
}

/// Builds the frame bytes that a `frame` object describes.
///
/// # Errors
/// A clear message naming the field that is missing or has the wrong type, or an encoding error.
pub fn encode_frame_json(v: &Value) -> Result<Vec<u8>> {
    let mut packet = OwnedPacket::default();
    match v.get("header") {
        Some(h) if !h.is_null() => {
            for (k, val) in pair_list(h, "header")? {
                packet.header.push((k, val.unwrap_or_default()));
            }
        }
        _ => {
            let cn = str_field(v, "cn")?.context("field \"cn\" is required")?;
            let cn: u16 = cn.parse().with_context(|| format!("cn {cn:?} is not a number"))?;
            let flag =
                num_field(v, "flag")?.map(|f| u8::try_from(f).map(Flag).context("flag must be 0..=255")).transpose()?;
            packet = OwnedPacket::new(
                str_field(v, "qn")?,
                str_field(v, "st")?.context("field \"st\" is required")?,
                cn,
                str_field(v, "pw")?.unwrap_or(""),
                str_field(v, "mn")?.unwrap_or(""),
                flag,
            );
            if let (Some(pnum), Some(pno)) = (num_field(v, "pnum")?, num_field(v, "pno")?) {
                packet.set_sub_packet(u16::try_from(pnum)?, u16::try_from(pno)?);
            }
        }
    }
    if let Some(cp) = v.get("cp").filter(|c| !c.is_null()) {
        let groups = cp.as_array().context("cp must be an array of groups")?;
        for (i, g) in groups.iter().enumerate() {
            let pairs = pair_list(g, &format!("cp[{i}]"))?;
            packet.cp.push(pairs.into_iter().map(|(key, value)| OwnedPair { key, value }).collect());
        }
    }
    let crc = v.get("crc");
    let variant = match crc.and_then(|c| c.get("variant")).and_then(Value::as_str) {
        Some(name) => CrcVariant::from_name(name).with_context(|| format!("unknown crc variant {name:?}"))?,
        None => CrcVariant::Hj212,
    };
    let lowercase = crc
        .and_then(|c| c.get("received"))
        .and_then(Value::as_str)
        .is_some_and(|r| r.bytes().any(|b| b.is_ascii_lowercase()));
    let unterminated =
        v.get("deviations").and_then(Value::as_array).is_some_and(|d| d.iter().any(|n| n == "unterminated_cp"));
    packet.cp_unterminated = unterminated;
    Ok(packet.to_frame_unchecked(variant, lowercase)?)
}
