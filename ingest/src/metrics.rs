//! Counters and the event stream.
//!
//! Counters and gauges are plain atomics, read with [`Metrics::snapshot`] and exported in the
//! Prometheus text format by [`Metrics::render_prometheus`] (served by `crate::http`).
//! Labelled counters (frames by CN and verdict, auth failures by reason) live in small maps whose
//! size is bounded, so hostile input cannot grow them without limit.
//! [`Event`]s are broadcast to whoever subscribes ([`crate::Handle::events`]): a trace of what
//! the daemon did, in order, used by the tests to check that a 9014 is written only after the
//! broker's acknowledgement. Sending an event without subscribers costs one failed send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hj212_codec::Deviations;
use tokio::sync::broadcast;

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident ),* $(,)?) => {
        /// The daemon's counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$m])* pub $name: AtomicU64, )*
        }

        impl Counters {
            fn each(&self, mut f: impl FnMut(&'static str, u64)) {
                $( f(stringify!($name), self.$name.load(Ordering::Relaxed)); )*
            }
        }
    };
}

counters! {
    /// Connections accepted.
    connections_accepted,
    /// Connections closed at once because `max_connections` was reached.
    connections_refused,
    /// Connections that closed without sending a byte (load-balancer probes).
    connections_probe,
    /// Connections closed for silence.
    connections_idle_closed,
    /// Connections closed for sending too many bytes without a frame.
    connections_garbage_closed,
    /// Frames cut from the streams.
    frames_in,
    /// Frames refused by the decoder (CRC, parse, strict-mode deviations).
    frames_invalid,
    /// Bytes skipped between frames.
    bytes_skipped,
    /// Frames that carried at least one deviation from the standard.
    frames_with_deviations,
    /// Frames dropped by the per-MN rate limit.
    frames_rate_limited,
    /// Frames refused by authentication (unknown MN, wrong password, ST not allowed).
    auth_refused,
    /// Frames published to the quarantine topic.
    quarantined,
    /// Frames not published again because they duplicate a recent one.
    duplicates,
    /// Messages handed to the MQTT ledger.
    mqtt_published,
    /// Messages acknowledged by the broker.
    mqtt_acked,
    /// Messages republished after a reconnect.
    mqtt_republished,
    /// Publishes refused because the ledger was full.
    mqtt_ledger_full,
    /// MQTT connection errors.
    mqtt_errors,
    /// Answers written (9013, 9014, and the 1012 after a 1013).
    answers_sent,
    /// 9014s abandoned because the acknowledgement did not come in time.
    answers_timed_out,
    /// Packet-log lines dropped because the writer fell behind or failed.
    packet_log_dropped,
    /// Connections closed because a started frame did not complete in time.
    connections_frame_timeout,
    /// Messages written to the spool.
    spool_written,
    /// Spooled messages acknowledged by the broker and removed from the spool.
    spool_forwarded,
    /// Messages found in the spool at start, to be replayed.
    spool_recovered,
    /// Frames refused because the spool was full (policy `refuse`).
    spool_refused,
    /// Spooled messages deleted to make room (policy `drop_oldest`).
    spool_dropped,
    /// Spool write or flush errors (a full disk, for one).
    spool_errors,
    /// Commands received on the command topic.
    commands_received,
    /// Commands sent to a site.
    commands_sent,
    /// Commands refused (bad JSON, site not connected, too many pending) or timed out.
    commands_failed,
    /// Auth-registry reloads applied.
    registry_reloads,
    /// Auth-registry reloads refused (the old registry stays).
    registry_reload_errors,
    /// Inputs handed to the data-quality engine's queue.
    quality_inputs,
    /// Inputs dropped because the data-quality queue was full (never waited for).
    quality_inputs_dropped,
    /// Data-quality alerts raised (by rule: `quality_alerts_total{rule=…}`).
    quality_alerts,
    /// Gap-recovery history requests sent to sites.
    quality_requests_sent,
    /// Gap-recovery requests that could not be sent (site gone, too many pending).
    quality_requests_failed,
    /// Gap-recovery requests finished (any outcome).
    quality_recoveries,
    /// Settled daily accounting records published.
    quality_daily_records,
    /// Data-quality state files that could not be written, or read at start (moved aside).
    quality_state_errors,
    /// HJ 212-2025 frames that did not decrypt with any key in force (or came in clear although
    /// they must be encrypted); never published nor answered.
    decrypt_failures,
    /// HJ 212-2025 frames decrypted.
    frames_decrypted,
    /// HJ 212-2025 heartbeats (9015) received; answered, not published.
    heartbeats,
    /// HJ 212-2025 key exchanges (1014) started by the platform.
    key_exchanges_started,
    /// HJ 212-2025 keys installed after the site's 9012 (ExeRtn=1).
    key_rotations,
    /// HJ 212-2025 key exchanges that failed (refusing 9011/9012, no key to protect them).
    key_exchanges_failed,
    /// HJ 212-2025 DAUs assigned an MN (1002 sent).
    registrations,
    /// HJ 212-2025 registrations refused (not in the table, counter exhausted).
    registrations_refused,
    /// Connections closed because they did not read their answers (`limits.max_queued_answers`
    /// answers waiting, or a write that made no progress for `limits.idle_timeout_secs`).
    connections_unread_closed,
    /// Refused frames over their peer's per-minute budget: counted, but neither logged nor
    /// published to the quarantine topic.
    auth_refused_throttled,
    /// Commands for a site not connected to this instance, left unanswered
    /// (`commands.absent = "silent"`).
    commands_absent,
    /// Messages reassembled from all their sub-packets and published whole.
    subpacket_groups_completed,
    /// Messages dropped before all their sub-packets arrived (`subpackets.expire_secs`).
    subpacket_groups_expired,
    /// Sub-packets not taken for reassembly (limits reached, `PNO` out of range); the parts
    /// themselves are still published and answered.
    subpacket_parts_refused,
    /// Sub-packets that repeated a part number already held (with another QN); ignored.
    subpacket_parts_duplicate,
    /// Whole messages that could not be published (ledger or spool full).
    subpacket_wholes_failed,
}

macro_rules! gauges {
    ($( $(#[$m:meta])* $name:ident ),* $(,)?) => {
        /// The daemon's gauges (values that go up and down).
        #[derive(Debug, Default)]
        pub struct Gauges {
            $( $(#[$m])* pub $name: AtomicU64, )*
        }

        impl Gauges {
            fn each(&self, mut f: impl FnMut(&'static str, u64)) {
                $( f(stringify!($name), self.$name.load(Ordering::Relaxed)); )*
            }
        }
    };
}

gauges! {
    /// Open site connections.
    connections_open,
    /// 1 once every listener is bound.
    listeners_bound,
    /// 1 while every MQTT connection (`mqtt.connections`) is up.
    mqtt_connected,
    /// MQTT connections up.
    mqtt_connections_up,
    /// Messages in the MQTT ledger waiting for their PUBACK.
    mqtt_unacked,
    /// 1 when a spool is configured.
    spool_enabled,
    /// 1 while the spool accepts writes (configured, not full, last write succeeded).
    spool_available,
    /// Messages in the spool.
    spool_depth,
    /// Bytes of messages in the spool.
    spool_bytes,
    /// Messages being reassembled from sub-packets.
    subpacket_groups_open,
    /// Bytes of sub-packet text held for reassembly.
    subpacket_bytes,
}

/// Upper bounds, in seconds, of the ack-latency histogram buckets.
pub const ACK_LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A histogram of frame-to-answer latencies.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; ACK_LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (bound, b) in ACK_LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The verdict on one frame, a label of `frames_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Published (or spooled) and, if asked, answered.
    Accepted,
    /// A duplicate of a recent frame.
    Duplicate,
    /// Refused by the decoder.
    Invalid,
    /// Refused by authentication.
    AuthRefused,
    /// Dropped by the per-MN rate limit.
    RateLimited,
    /// Not accepted: the ledger or the spool was full, or the spool failed.
    NotAccepted,
}

impl Verdict {
    /// The label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
            Self::AuthRefused => "auth_refused",
            Self::RateLimited => "rate_limited",
            Self::NotAccepted => "not_accepted",
        }
    }
}

/// Distinct CN values tracked per verdict; further ones are counted under `cn="other"`.
const MAX_CN_LABELS: usize = 256;

/// Counters plus the per-deviation counts.
#[derive(Debug)]
pub struct Metrics {
    /// The named counters.
    pub counters: Counters,
    /// The gauges.
    pub gauges: Gauges,
    /// Frame to 9014 latency.
    pub ack_latency: Histogram,
    deviations: [AtomicU64; 16],
    frames: Mutex<BTreeMap<(Option<u16>, Verdict), u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    quality_alerts: Mutex<BTreeMap<&'static str, u64>>,
    events: broadcast::Sender<Event>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            gauges: Gauges::default(),
            ack_latency: Histogram::default(),
            deviations: Default::default(),
            frames: Mutex::default(),
            auth_failures: Mutex::default(),
            quality_alerts: Mutex::default(),
            events: broadcast::channel(1024).0,
        }
    }
}

/// Something the daemon did, for observers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message was handed to the MQTT client.
    Published {
        /// The topic.
        topic: String,
        /// The QN of the frame it carries, if any.
        qn: Option<String>,
    },
    /// The broker acknowledged a message.
    Acked {
        /// The topic.
        topic: String,
        /// The QN of the frame it carries, if any.
        qn: Option<String>,
    },
    /// An answer was written to a site.
    AnswerSent {
        /// The site.
        mn: String,
        /// The answer's command code.
        cn: u16,
        /// The QN it answers (or its own QN for a 1012).
        qn: Option<String>,
    },
    /// A message was written to the spool.
    Spooled {
        /// The topic.
        topic: String,
        /// The QN of the frame it carries, if any.
        qn: Option<String>,
    },
    /// A frame was refused by authentication.
    AuthRefused {
        /// The MN the frame claimed.
        mn: String,
        /// Why: `unknown_mn`, `wrong_password` or `st_not_allowed`.
        reason: &'static str,
    },
}

impl Metrics {
    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Counts one frame by CN (`None` when it could not be read) and verdict.
    pub fn count_frame(&self, cn: Option<u16>, verdict: Verdict) {
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if frames.len() >= MAX_CN_LABELS && !frames.contains_key(&(cn, verdict)) {
            (None, verdict)
        } else {
            (cn, verdict)
        };
        *frames.entry(key).or_insert(0) += 1;
    }

    /// Counts one authentication failure by reason.
    pub fn count_auth_failure(&self, reason: &'static str) {
        *self.auth_failures.lock().unwrap_or_else(PoisonError::into_inner).entry(reason).or_insert(0) += 1;
    }

    /// Counts one data-quality alert by rule (a bounded set of names).
    pub fn count_quality_alert(&self, rule: &'static str) {
        Self::inc(&self.counters.quality_alerts);
        *self.quality_alerts.lock().unwrap_or_else(PoisonError::into_inner).entry(rule).or_insert(0) += 1;
    }

    /// Data-quality alerts counted for this rule.
    #[must_use]
    pub fn quality_alerts(&self, rule: &str) -> u64 {
        self.quality_alerts.lock().unwrap_or_else(PoisonError::into_inner).get(rule).copied().unwrap_or(0)
    }

    /// Frames counted with this CN and verdict.
    #[must_use]
    pub fn frames(&self, cn: Option<u16>, verdict: Verdict) -> u64 {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).get(&(cn, verdict)).copied().unwrap_or(0)
    }

    /// True when `/healthz` reports healthy: listeners bound, and the broker connected or the
    /// spool available.
    #[must_use]
    pub fn healthy(&self) -> bool {
        let g = &self.gauges;
        g.listeners_bound.load(Ordering::Relaxed) == 1
            && (g.mqtt_connected.load(Ordering::Relaxed) == 1 || g.spool_available.load(Ordering::Relaxed) == 1)
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4), names prefixed
    /// `hj212_ingest_`.
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(8192);
        self.counters.each(|name, v| {
            let _ = writeln!(out, "# TYPE hj212_ingest_{name}_total counter\nhj212_ingest_{name}_total {v}");
        });
        self.gauges.each(|name, v| {
            let _ = writeln!(out, "# TYPE hj212_ingest_{name} gauge\nhj212_ingest_{name} {v}");
        });
        out.push_str("# HELP hj212_ingest_frames_total Frames received, by command code and verdict.\n");
        out.push_str("# TYPE hj212_ingest_frames_total counter\n");
        for ((cn, verdict), v) in self.frames.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let cn = cn.map_or_else(|| "other".to_string(), |c| format!("{c:04}"));
            let _ = writeln!(out, "hj212_ingest_frames_total{{cn=\"{cn}\",verdict=\"{}\"}} {v}", verdict.name());
        }
        out.push_str("# HELP hj212_ingest_auth_failures_total Frames refused by authentication, by reason.\n");
        out.push_str("# TYPE hj212_ingest_auth_failures_total counter\n");
        for (reason, v) in self.auth_failures.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "hj212_ingest_auth_failures_total{{reason=\"{reason}\"}} {v}");
        }
        out.push_str("# HELP hj212_ingest_quality_alerts_by_rule_total Data-quality alerts, by rule.\n");
        out.push_str("# TYPE hj212_ingest_quality_alerts_by_rule_total counter\n");
        for (rule, v) in self.quality_alerts.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "hj212_ingest_quality_alerts_by_rule_total{{rule=\"{rule}\"}} {v}");
        }
        out.push_str("# TYPE hj212_ingest_deviations_total counter\n");
        for bit in 0..16u16 {
            let v = self.deviations[bit as usize].load(Ordering::Relaxed);
            if v > 0 {
                let name = deviation_name(bit).map_or_else(|| format!("bit{bit}"), str::to_string);
                let _ = writeln!(out, "hj212_ingest_deviations_total{{kind=\"{name}\"}} {v}");
            }
        }
        out.push_str("# HELP hj212_ingest_ack_latency_seconds From a frame's arrival to its 9014 being written.\n");
        out.push_str("# TYPE hj212_ingest_ack_latency_seconds histogram\n");
        let h = &self.ack_latency;
        for (bound, b) in ACK_LATENCY_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "hj212_ingest_ack_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "hj212_ingest_ack_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ =
            writeln!(out, "hj212_ingest_ack_latency_seconds_sum {}", h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "hj212_ingest_ack_latency_seconds_count {count}");
        out
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` from a gauge, stopping at zero.
    pub fn sub(gauge: &AtomicU64, n: u64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// Counts the deviations of one frame.
    pub fn count_deviations(&self, d: Deviations) {
        if d.is_empty() {
            return;
        }
        Self::inc(&self.counters.frames_with_deviations);
        for bit in 0..16 {
            if d.bits() & (1 << bit) != 0 {
                Self::inc(&self.deviations[bit]);
            }
        }
    }

    /// Broadcasts an event to the current subscribers.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Broadcasts the event `make` builds, building it only when someone subscribes (events
    /// carry copies of topics and QNs, not worth making per frame for nobody).
    pub fn emit_with(&self, make: impl FnOnce() -> Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }

    /// Subscribes to events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Every counter by name; deviations as `deviation_<name>`.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        self.counters.each(|name, v| {
            out.insert(name.to_string(), v);
        });
        self.gauges.each(|name, v| {
            out.insert(name.to_string(), v);
        });
        for bit in 0..16u16 {
            let v = self.deviations[bit as usize].load(Ordering::Relaxed);
            if v > 0 {
                let name =
                    deviation_name(bit).map_or_else(|| format!("deviation_bit{bit}"), |n| format!("deviation_{n}"));
                out.insert(name, v);
            }
        }
        out
    }

    /// One counter by name (0 for an unknown name).
    #[must_use]
    pub fn get(&self, name: &str) -> u64 {
        self.snapshot().get(name).copied().unwrap_or(0)
    }
}

fn deviation_name(bit: u16) -> Option<&'static str> {
    let all = [
        Deviations::LENGTH_MISMATCH,
        Deviations::OVER_1024,
        Deviations::BARE_LF,
        Deviations::DOUBLE_CR,
        Deviations::NON_STANDARD_CRC,
        Deviations::UNTERMINATED_CP,
        Deviations::MISPLACED_CP,
        Deviations::HEADER_COMMA,
    ];
    all.into_iter().find(|d| d.bits() == 1 << bit).and_then(|d| d.names().next())
}
