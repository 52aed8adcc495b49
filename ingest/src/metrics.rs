//! Counters and the event stream.
//!
//! Counters are plain atomics, read with [`Metrics::snapshot`]; no exporter is wired up yet.
//! [`Event`]s are broadcast to whoever subscribes ([`crate::Handle::events`]): a trace of what
//! the daemon did, in order, used by the tests to check that a 9014 is written only after the
//! broker's acknowledgement. Sending an event without subscribers costs one failed send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// Counters plus the per-deviation counts.
#[derive(Debug)]
pub struct Metrics {
    /// The named counters.
    pub counters: Counters,
    deviations: [AtomicU64; 16],
    events: broadcast::Sender<Event>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { counters: Counters::default(), deviations: Default::default(), events: broadcast::channel(1024).0 }
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
    /// A frame was refused by authentication.
    AuthRefused {
        /// The MN the frame claimed.
        mn: String,
        /// Why: `unknown_mn`, `wrong_password` or `st_not_allowed`.
        reason: &'static str,
    },
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
