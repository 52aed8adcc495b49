//! Commands down: JSON on `{prefix}/cmd/{mn}` becomes a platform request to that site, and what
//! the site answers (9011, 9012, data) is published on `{prefix}/reply/{mn}` with the command's id.
//! The schema is in `docs/mqtt.md`.
//!
//! A request goes out with a fresh QN, the site's registered password, the ST and version the site
//! last used, and Flag A=1. Replies are matched by QN: the 9011 and 9012 carry the request's QN,
//! and so do data replies (HJ 212-2017 Appendix C); a data frame with another QN but the
//! request's CN, while the request is open, counts as a reply too. A command ends with its 9012,
//! a refusing 9011 (`QnRtn` other than 1), the site's disconnection, or `commands.timeout_secs`.
//!
//! Several instances. Every instance subscribes `{prefix}/cmd/+` (a shared subscription would hand
//! a command to one instance, most likely not the one the site is connected to), so every instance
//! sees every command. With `commands.absent = "silent"`, an instance the site is not connected to
//! says nothing, and only the one that has the site answers.
//!
//! Invariants:
//! * Parameter names and values never carry the frame's separators (`;`, `,`, `=`, `&`) or line
//!   breaks: such a command is refused, never sent.
//! * Every command gets at least one message on the reply topic: `sent`, or an `error`; except,
//!   with `commands.absent = "silent"`, a command for a site connected to no instance, which gets
//!   none (the caller's timeout tells).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hj212_codec::encode::OwnedPacket;
use hj212_codec::packet::{Flag, Packet, Version};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::AbsentSite;
use crate::conn::{AnswerTx, Outgoing, Shared, now_ms, topic_segment};
use crate::ledger::Received;
use crate::metrics::Metrics;

/// A command, read from its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The caller's id, echoed in every reply.
    pub id: String,
    /// The request's command code (1000–8999).
    pub cn: u16,
    /// `CP` groups, in order.
    pub groups: Vec<Vec<(String, String)>>,
}

/// A command that cannot be sent: its id (when it could be read) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The command's id, if readable.
    pub id: Option<String>,
    /// What was wrong.
    pub error: String,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_value(v: &str) -> bool {
    v.len() <= 1024 && !v.bytes().any(|b| matches!(b, b';' | b',' | b'=' | b'&' | b'\r' | b'\n' | 0))
}

impl Command {
    /// Reads a command: `id`, `cn`, then either named parameters (one `CP` group, in name
    /// order) or `cp`, a list of groups of `[name, value]` pairs, or both (the named group first).
    ///
    /// # Errors
    /// Not JSON, no `id` or `cn`, a `cn` outside 1000–8999, or a parameter that is not a string or
    /// number or that would break the frame.
    pub fn parse(payload: &[u8]) -> Result<Self, Refused> {
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| Refused { id: None, error: format!("invalid JSON: {e}") })?;
        let obj = v.as_object().ok_or_else(|| Refused { id: None, error: "a command is a JSON object".into() })?;
        let id = obj.get("id").and_then(scalar);
        let refuse = |error: String| Refused { id: id.clone(), error };
        let Some(id_value) = id.clone() else { return Err(refuse("missing \"id\"".into())) };
        let cn = obj
            .get("cn")
            .and_then(scalar)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| refuse("missing or invalid \"cn\"".into()))?;
        if !(1000..=8999).contains(&cn) {
            return Err(refuse(format!("cn {cn} is not a platform request (1000-8999)")));
        }
        let mut groups = Vec::new();
        let mut named = Vec::new();
        for (k, v) in obj {
            if matches!(k.as_str(), "id" | "cn" | "cp") {
                continue;
            }
            let value = scalar(v).ok_or_else(|| refuse(format!("parameter {k:?}: expected a string or number")))?;
            named.push((k.clone(), value));
        }
        if !named.is_empty() {
            groups.push(named);
        }
        if let Some(cp) = obj.get("cp") {
            let bad = || refuse("\"cp\" must be a list of groups of [name, value] pairs".into());
            for g in cp.as_array().ok_or_else(bad)? {
                let mut group = Vec::new();
                for pair in g.as_array().ok_or_else(bad)? {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => {
                            let k = k.as_str().ok_or_else(bad)?;
                            let v = scalar(v).ok_or_else(bad)?;
                            group.push((k.to_string(), v));
                        }
                        _ => return Err(bad()),
                    }
                }
                groups.push(group);
            }
        }
        for (k, v) in groups.iter().flatten() {
            if !valid_key(k) {
                return Err(refuse(format!("parameter name {k:?} is not allowed")));
            }
            if !valid_value(v) {
                return Err(refuse(format!("parameter {k}: value contains a separator or is too long")));
            }
        }
        Ok(Self { id: id_value, cn, groups })
    }
}

/// Who asked for a request, and so who hears about its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A command on `{prefix}/cmd/{mn}`: replies go to `{prefix}/reply/{mn}`.
    Mqtt,
    /// A gap-recovery request of the data-quality engine: its end goes back to the engine.
    Quality,
}

/// A command sent and not finished.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    id: String,
    cn: u16,
    origin: Origin,
}

/// Open commands of one connection, by the request's QN.
pub(crate) type PendingMap = Arc<Mutex<HashMap<String, Pending>>>;

/// How to reach a connected site.
#[derive(Debug, Clone)]
pub(crate) struct SiteLink {
    pub(crate) conn_id: u64,
    pub(crate) tx: AnswerTx,
    pub(crate) pending: PendingMap,
    pub(crate) st: String,
    pub(crate) version: Version,
}

fn reply_topic(shared: &Shared, mn: &str) -> String {
    format!("{}/reply/{}", shared.config.mqtt.prefix, topic_segment(mn))
}

/// Publishes one reply message.
pub(crate) fn publish_reply(shared: &Shared, mn: &str, body: &Value) {
    if let Err(error) = shared.ledger.publish(reply_topic(shared, mn), body.to_string().into_bytes(), false, None) {
        tracing::warn!(mn, %error, "Could not publish a command reply.");
    }
}

fn fail(shared: &Shared, mn: &str, id: Option<&str>, error: &str) {
    Metrics::inc(&shared.metrics.counters.commands_failed);
    tracing::info!(mn, id = ?id, error, "Command refused.");
    publish_reply(shared, mn, &json!({"id": id, "mn": mn, "event": "error", "error": error}));
}

/// Reads commands from the MQTT subscription until the channel closes.
pub(crate) async fn run(mut rx: mpsc::Receiver<Received>, shared: Arc<Shared>) {
    let prefix = format!("{}/cmd/", shared.config.mqtt.prefix);
    while let Some(msg) = tokio::select! {
        () = shared.shutdown.cancelled() => None,
        m = rx.recv() => m,
    } {
        let Some(mn) = msg.topic.strip_prefix(&prefix).filter(|m| !m.is_empty() && !m.contains('/')) else {
            continue;
        };
        Metrics::inc(&shared.metrics.counters.commands_received);
        let command = match Command::parse(&msg.payload) {
            Ok(c) => c,
            Err(r) => {
                fail(&shared, mn, r.id.as_deref(), &r.error);
                continue;
            }
        };
        send(&shared, mn, &command);
    }
}

/// The error for a site with no connection to this instance.
const NOT_CONNECTED: &str = "site not connected";

fn send(shared: &Arc<Shared>, mn: &str, command: &Command) {
    match send_request(shared, mn, command, Origin::Mqtt) {
        Ok(qn) => {
            publish_reply(shared, mn, &json!({"id": command.id, "mn": mn, "cn": command.cn, "qn": qn, "event": "sent"}))
        }
        Err(error) if error == NOT_CONNECTED && shared.config.commands.absent == AbsentSite::Silent => {
            Metrics::inc(&shared.metrics.counters.commands_absent);
            tracing::debug!(mn, id = %command.id, "Command for a site not connected here; left to the instance that has it.");
        }
        Err(error) => fail(shared, mn, Some(command.id.as_str()), &error),
    }
}

/// Sends a platform request (fresh QN, the site's password, ST and version, Flag A=1) to a
/// connected site and tracks it until its 9012, a refusing 9011, the connection's end or
/// `commands.timeout_secs`. Returns the request's QN.
///
/// # Errors
/// The site is not connected or not registered, has too many pending commands, or the request
/// cannot be encoded.
pub(crate) fn send_request(
    shared: &Arc<Shared>,
    mn: &str,
    command: &Command,
    origin: Origin,
) -> Result<String, String> {
    let link = shared.sites.lock().unwrap_or_else(PoisonError::into_inner).get(mn).cloned();
    let Some(link) = link else {
        return Err(NOT_CONNECTED.into());
    };
    let Some(pw) = shared.registry.password(mn) else {
        return Err("site not in the registry".into());
    };
    if link.pending.lock().unwrap_or_else(PoisonError::into_inner).len() >= shared.config.commands.max_pending_per_site
    {
        return Err("too many commands pending for this site".into());
    }
    let now = hj212_codec::time::DateTime::civil_from_utc(now_ms(), shared.config.utc_offset_minutes);
    let qn = shared.qn.lock().unwrap_or_else(PoisonError::into_inner).next_string(now);
    let mut p = OwnedPacket::new(Some(&qn), &link.st, command.cn, &pw, mn, Some(Flag::new(link.version, false, true)));
    for g in &command.groups {
        p.push_group(g.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    // The CRC variant the site last used in a frame that authenticated.
    let frame = shared.request_frame(mn, link.version, &p, shared.registry.crc_for(mn))?;
    if origin == Origin::Mqtt
        && let Some(q) = &shared.quality
    {
        q.command_sent(mn, &p.data_segment());
    }
    link.pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(qn.clone(), Pending { id: command.id.clone(), cn: command.cn, origin });
    let out =
        Outgoing { frame, mn: mn.to_string(), cn: command.cn, qn: Some(qn.clone()), received: None, awaits: None };
    if !link.tx.send(out) {
        link.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&qn);
        return Err("connection closed".into());
    }
    Metrics::inc(&shared.metrics.counters.commands_sent);
    tracing::info!(mn, id = %command.id, cn = command.cn, qn = %qn, "Command sent.");

    let shared2 = shared.clone();
    let mn2 = mn.to_string();
    let qn2 = qn.clone();
    let limit = Duration::from_secs(shared.config.commands.timeout_secs);
    shared.tracker.spawn(async move {
        tokio::select! {
            () = shared2.shutdown.cancelled() => {}
            () = tokio::time::sleep(limit) => {
                let gone = link.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&qn2);
                if let Some(p) = gone {
                    Metrics::inc(&shared2.metrics.counters.commands_failed);
                    ended(&shared2, &mn2, &qn2, &p, false, || json!({
                        "id": p.id, "mn": mn2, "cn": p.cn, "qn": qn2, "event": "error", "error": "timeout"
                    }));
                }
            }
        }
    });
    Ok(qn)
}

/// Reports the end of a request: to the data-quality engine for its own requests, else on the
/// reply topic.
fn ended(shared: &Shared, mn: &str, qn: &str, p: &Pending, ok: bool, reply: impl FnOnce() -> Value) {
    match p.origin {
        Origin::Quality => {
            tracing::debug!(mn, qn, ok, "Gap-recovery request finished.");
            if let Some(q) = &shared.quality {
                q.history_finished(mn, ok);
            }
        }
        Origin::Mqtt => publish_reply(shared, mn, &reply()),
    }
}

/// Publishes a frame from a site on the reply topic when it answers one of its open commands
/// (or, for the data-quality engine's requests, tells the engine how they ended).
/// `body` is the frame's published payload (JSON), carried as `data` in a data reply.
pub(crate) fn match_reply(shared: &Shared, pending: &PendingMap, packet: &Packet<'_>, body: &[u8]) {
    let mut map = pending.lock().unwrap_or_else(PoisonError::into_inner);
    if map.is_empty() {
        return;
    }
    let mn = packet.mn().unwrap_or("");
    let qn = packet.qn().unwrap_or("");
    let cn = packet.cn();
    let int = |k: &str| packet.cp().get(k).and_then(|v| v.trim().parse::<i64>().ok());
    // (pending, ok, reply): `ok` is `Some` when the request ended.
    let reply = match cn {
        9011 => map.get(qn).cloned().map(|p| {
            let qn_rtn = int("QnRtn");
            let end = (qn_rtn != Some(1)).then_some(false);
            if end.is_some() {
                map.remove(qn);
            }
            let r = json!({"id": p.id, "mn": mn, "cn": p.cn, "qn": qn, "event": "request_answer", "qn_rtn": qn_rtn});
            (p, end, r)
        }),
        9012 => map.remove(qn).map(|p| {
            let exe_rtn = int("ExeRtn");
            let ok = matches!(exe_rtn, Some(1 | 100));
            let r = json!({"id": p.id, "mn": mn, "cn": p.cn, "qn": qn, "event": "result", "exe_rtn": exe_rtn});
            (p, Some(ok), r)
        }),
        9013 | 9014 => None,
        _ => {
            let by_qn = map.get(qn).map(|p| (qn.to_string(), p.clone()));
            let found = by_qn.or_else(|| map.iter().find(|(_, p)| p.cn == cn).map(|(q, p)| (q.clone(), p.clone())));
            found.map(|(request_qn, p)| {
                let data: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let r = json!({"id": p.id, "mn": mn, "cn": p.cn, "qn": request_qn, "event": "data", "data": data});
                (p, None, r)
            })
        }
    };
    drop(map);
    match reply {
        Some((p, Some(ok), r)) => ended(shared, mn, qn, &p, ok, || r),
        Some((p, None, r)) if p.origin == Origin::Mqtt => publish_reply(shared, mn, &r),
        _ => {}
    }
}

/// Reports the open commands of a closed connection as failed.
pub(crate) fn connection_closed(shared: &Shared, mn: &str, pending: &PendingMap) {
    let open: Vec<(String, Pending)> = pending.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
    for (qn, p) in open {
        Metrics::inc(&shared.metrics.counters.commands_failed);
        ended(
            shared,
            mn,
            &qn,
            &p,
            false,
            || json!({"id": p.id, "mn": mn, "cn": p.cn, "qn": qn, "event": "error", "error": "connection closed"}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_and_generic_cp_are_read() {
        let c = Command::parse(br#"{"id":"c1","cn":1062,"RtdInterval":30}"#).unwrap();
        assert_eq!(c, Command { id: "c1".into(), cn: 1062, groups: vec![vec![("RtdInterval".into(), "30".into())]] });
        let c = Command::parse(br#"{"id":7,"cn":"3020","cp":[[["PolId","w01018"]],[["InfoId","i13004"]]]}"#).unwrap();
        assert_eq!(c.id, "7");
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups[1][0], ("InfoId".into(), "i13004".into()));
        let c = Command::parse(br#"{"id":"x","cn":2011}"#).unwrap();
        assert!(c.groups.is_empty());
    }

    #[test]
    fn bad_commands_are_refused_with_their_id() {
        assert_eq!(Command::parse(b"nope").unwrap_err().id, None);
        assert_eq!(Command::parse(br#"{"cn":1062}"#).unwrap_err().error, "missing \"id\"");
        let e = Command::parse(br#"{"id":"c","cn":9014}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("c"));
        assert!(Command::parse(br#"{"id":"c","cn":1062,"RtdInterval":"30;PW=1"}"#).is_err());
        assert!(Command::parse(br#"{"id":"c","cn":1062,"cp":[[["a;b","1"]]]}"#).is_err());
        assert!(Command::parse(br#"{"id":"c","cn":1062,"x":[1]}"#).is_err());
    }
}
