//! The MQTT delivery ledger: a message counts as delivered only when the broker has acknowledged
//! it (PUBACK for QoS 1), and nothing that was handed to us is lost across reconnects.
//!
//! rumqttc keeps un-acknowledged publishes across a reconnect only when the broker reports a saved
//! session; with a clean session it drops them.
//! So the ledger keeps its own copy of every message until its PUBACK, and republishes all of them,
//! in order, after every CONNACK.
//!
//! How a PUBACK is matched to a message: rumqttc assigns packet ids as it takes requests from its
//! channel, in order, and reports each with `Outgoing::Publish(pkid)` (or `AwaitAck(pkid)` when the
//! id collides with one still in flight). Every request in that channel comes from this module and
//! is sent while holding the ledger's lock, so the ledger's FIFO of sent messages is in the same
//! order as the channel, and the n-th `Outgoing::Publish` names the n-th message.
//!
//! Invariants:
//! * A request is put into rumqttc's channel only while the ledger believes the connection is up.
//!   When a poll fails, the ledger first marks the connection down (under the lock), then drains
//!   the channel with `EventLoop::clean`, so no request of the old connection survives into the new
//!   one, where it would be sent twice and shift the FIFO.
//! * One task owns the `EventLoop` and polls it forever (with backoff on errors); the poll future
//!   is never cancelled except at the very end of shutdown.
//! * A message leaves the ledger only on its PUBACK.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, Outgoing, QoS, StateError, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Event, Metrics};

/// Whether a message has been acknowledged: becomes `true` once, on its PUBACK.
pub type Delivery = watch::Receiver<bool>;

/// The ledger holds `max_unacked` messages already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerFull;

impl std::fmt::Display for LedgerFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the MQTT ledger is full")
    }
}

impl std::error::Error for LedgerFull {}

#[derive(Debug)]
struct Entry {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    qn: Option<String>,
    done: watch::Sender<bool>,
    sends: u32,
    /// A copy is held durably elsewhere (the spool): shutdown need not wait for it.
    spooled: bool,
}

#[derive(Debug, Default)]
struct State {
    connected: bool,
    closed: bool,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// Messages handed to rumqttc and not yet given a packet id, in channel order.
    fifo: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    /// A message whose packet id collided, waiting for the older one's PUBACK.
    collided: Option<(u16, u64)>,
}

/// Settings of the MQTT connection.
#[derive(Clone)]
pub struct Settings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS to the broker (see [`crate::config::MqttTls::client_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Most messages held un-acknowledged.
    pub max_unacked: usize,
    /// The MQTT in-flight window: publishes awaiting their PUBACK on the wire at once.
    pub inflight: u16,
    /// Retained status topic; "online" is published on every connect, "offline" is the will.
    pub status_topic: String,
    /// Topic filters subscribed to (at QoS 1) after every connect; what arrives on them is
    /// passed on through the receiver [`Ledger::new`] returns.
    pub subscribe: Vec<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "******"))
            .field("tls", &self.tls.is_some())
            .field("keep_alive", &self.keep_alive)
            .field("max_unacked", &self.max_unacked)
            .field("inflight", &self.inflight)
            .field("status_topic", &self.status_topic)
            .field("subscribe", &self.subscribe)
            .finish()
    }
}

/// A message that arrived on one of the subscribed topics.
#[derive(Debug, Clone)]
pub struct Received {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The publishing side of the ledger; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
    client: AsyncClient,
    metrics: Arc<Metrics>,
    max_unacked: usize,
    status_topic: String,
    subscribe: Arc<[String]>,
}

/// The polling side: owns the rumqttc event loop.
pub struct Driver {
    ledger: Ledger,
    eventloop: EventLoop,
    received: mpsc::Sender<Received>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

impl Ledger {
    /// Creates the ledger and its driver (run [`Driver::run`] in a task), and the receiver of
    /// messages on the subscribed topics.
    #[must_use]
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> (Self, Driver, mpsc::Receiver<Received>) {
        let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        options.set_keep_alive(settings.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        // One connection carries every site's data: rumqttc's default window of 100 publishes
        // capped throughput at 100 per PUBACK round trip (`mqtt.inflight`, default 1000).
        options.set_inflight(settings.inflight.max(1));
        options.set_last_will(LastWill::new(settings.status_topic.clone(), "offline", QoS::AtLeastOnce, true));
        if let Some((user, pass)) = &settings.credentials {
            options.set_credentials(user.clone(), pass.clone());
        }
        if let Some(tls) = &settings.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
        }
        // Room for every message the ledger may hold, so `try_publish` never finds the channel full.
        let (client, mut eventloop) = AsyncClient::new(options, settings.max_unacked + 64);
        // Small publishes and their PUBACKs must not wait for Nagle's algorithm.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let ledger = Self {
            state: Arc::default(),
            client,
            metrics,
            max_unacked: settings.max_unacked,
            status_topic: settings.status_topic.clone(),
            subscribe: settings.subscribe.clone().into(),
        };
        let (received, rx) = mpsc::channel(256);
        (ledger.clone(), Driver { ledger, eventloop, received }, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `payload` to `topic` at QoS 1; the returned [`Delivery`] turns true on PUBACK.
    ///
    /// # Errors
    /// [`LedgerFull`] when `max_unacked` messages are waiting already, or after shutdown began.
    pub fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        qn: Option<String>,
    ) -> Result<Delivery, LedgerFull> {
        self.publish_entry(topic, payload, retain, qn, false)
    }

    /// As [`Ledger::publish`], for a message the spool holds durably: [`Ledger::drain`] does not
    /// wait for it at shutdown.
    ///
    /// # Errors
    /// As for [`Ledger::publish`].
    pub fn publish_spooled(&self, topic: String, payload: Vec<u8>, qn: Option<String>) -> Result<Delivery, LedgerFull> {
        self.publish_entry(topic, payload, false, qn, true)
    }

    fn publish_entry(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        qn: Option<String>,
        spooled: bool,
    ) -> Result<Delivery, LedgerFull> {
        let mut state = self.lock();
        if state.closed || state.entries.len() >= self.max_unacked {
            Metrics::inc(&self.metrics.counters.mqtt_ledger_full);
            return Err(LedgerFull);
        }
        let (done, delivery) = watch::channel(false);
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(id, Entry { topic, payload, retain, qn, done, sends: 0, spooled });
        Metrics::set(&self.metrics.gauges.mqtt_unacked, state.entries.len() as u64);
        Metrics::inc(&self.metrics.counters.mqtt_published);
        if state.connected {
            self.send(&mut state, id);
        }
        Ok(delivery)
    }

    /// Hands one message to rumqttc. Called with the lock held, only while connected.
    fn send(&self, state: &mut State, id: u64) {
        let Some(entry) = state.entries.get_mut(&id) else { return };
        match self.client.try_publish(entry.topic.clone(), QoS::AtLeastOnce, entry.retain, entry.payload.clone()) {
            Ok(()) => {
                if entry.sends > 0 {
                    Metrics::inc(&self.metrics.counters.mqtt_republished);
                }
                entry.sends += 1;
                state.fifo.push_back(id);
            }
            // Left in the ledger: it goes out after the next CONNACK.
            Err(error) => tracing::warn!(%error, topic = %entry.topic, "Could not hand a message to the MQTT client."),
        }
    }

    /// Messages waiting for their PUBACK.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.lock().entries.len()
    }

    /// True while the MQTT connection is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// Waits until every message not held by the spool is acknowledged, or `limit` passes;
    /// true when none is left.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.lock().entries.values().all(|e| e.spooled) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes the retained "offline" status, waits briefly for it, refuses further publishes
    /// and disconnects.
    pub async fn close(&self, limit: Duration) {
        if let Ok(mut d) = self.publish(self.status_topic.clone(), b"offline".to_vec(), true, None) {
            let _ = tokio::time::timeout(limit, d.wait_for(|v| *v)).await;
        }
        self.lock().closed = true;
        let _ = self.client.try_disconnect();
    }
}

impl Driver {
    /// Polls the event loop until `stop` is cancelled, reconnecting with backoff.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        // The last failed attempt's error: a new kind of failure is logged at warn or error, the
        // same failure again (every retry) only at debug.
        let mut last_failure: Option<String> = None;
        loop {
            let polled = tokio::select! {
                () = stop.cancelled() => break,
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(MqttEvent::Incoming(Incoming::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    last_failure = None;
                    tracing::info!(session_present = ack.session_present, code = ?ack.code, "Connected to the MQTT broker.");
                    self.on_connack();
                }
                Ok(MqttEvent::Incoming(Incoming::PubAck(ack))) => self.on_puback(ack.pkid),
                Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                    let r = Received { topic: p.topic.clone(), payload: p.payload.to_vec() };
                    if self.received.try_send(r).is_err() {
                        Metrics::inc(&self.ledger.metrics.counters.commands_failed);
                        tracing::warn!(topic = %p.topic, "Dropped an incoming MQTT message: too many waiting.");
                    }
                }
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => self.on_outgoing(pkid, false),
                Ok(MqttEvent::Outgoing(Outgoing::AwaitAck(pkid))) => self.on_outgoing(pkid, true),
                Ok(MqttEvent::Incoming(Incoming::Disconnect)) => tracing::warn!("The MQTT broker sent DISCONNECT."),
                Ok(_) => {}
                Err(error) => {
                    Metrics::inc(&self.ledger.metrics.counters.mqtt_errors);
                    let was_connected = self.on_error();
                    let retry_in_ms = backoff.as_millis() as u64;
                    let text = error.to_string();
                    if was_connected {
                        tracing::warn!(%error, "MQTT connection lost; unacknowledged messages will be republished.");
                    } else if last_failure.as_deref() == Some(text.as_str()) {
                        tracing::debug!(%error, retry_in_ms, "MQTT connection attempt failed.");
                    } else if let Some(hint) = configuration_hint(&error) {
                        tracing::error!(%error, hint, retry_in_ms, "Cannot connect to the MQTT broker.");
                    } else {
                        tracing::warn!(%error, retry_in_ms, "Cannot connect to the MQTT broker.");
                    }
                    last_failure = Some(text);
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn on_connack(&mut self) {
        // With a clean session the event loop dropped whatever it had; so do we, then resend all.
        self.eventloop.pending.clear();
        let ledger = self.ledger.clone();
        let mut state = ledger.lock();
        state.connected = true;
        Metrics::set(&ledger.metrics.gauges.mqtt_connected, 1);
        for filter in ledger.subscribe.iter() {
            if let Err(error) = ledger.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                tracing::warn!(%error, filter = %filter, "Could not subscribe.");
            }
        }
        state.fifo.clear();
        state.by_pkid.clear();
        state.collided = None;
        let ids: Vec<u64> = state.entries.keys().copied().collect();
        if !state.closed {
            let (done, _) = watch::channel(false);
            let id = state.next_id;
            state.next_id += 1;
            let topic = ledger.status_topic.clone();
            state.entries.insert(
                id,
                Entry { topic, payload: b"online".to_vec(), retain: true, qn: None, done, sends: 0, spooled: false },
            );
            Metrics::inc(&ledger.metrics.counters.mqtt_published);
            ledger.send(&mut state, id);
        }
        for id in ids {
            ledger.send(&mut state, id);
        }
    }

    fn on_outgoing(&mut self, pkid: u16, collided: bool) {
        let mut state = self.ledger.lock();
        if !collided {
            if let Some((p, id)) = state.collided {
                if p == pkid {
                    state.collided = None;
                    state.by_pkid.insert(pkid, id);
                    return;
                }
            }
        }
        let Some(id) = state.fifo.pop_front() else {
            tracing::warn!(pkid, "An MQTT publish went out that the ledger did not send.");
            return;
        };
        if collided {
            state.collided = Some((pkid, id));
        } else {
            state.by_pkid.insert(pkid, id);
        }
        if let Some(e) = state.entries.get(&id) {
            self.ledger.metrics.emit(Event::Published { topic: e.topic.clone(), qn: e.qn.clone() });
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        let mut state = self.ledger.lock();
        let Some(id) = state.by_pkid.remove(&pkid) else {
            tracing::debug!(pkid, "PUBACK for a packet id the ledger does not track.");
            return;
        };
        if let Some(entry) = state.entries.remove(&id) {
            Metrics::set(&self.ledger.metrics.gauges.mqtt_unacked, state.entries.len() as u64);
            drop(state);
            Metrics::inc(&self.ledger.metrics.counters.mqtt_acked);
            self.ledger.metrics.emit(Event::Acked { topic: entry.topic, qn: entry.qn });
            entry.done.send_replace(true);
        }
    }

    /// Marks the connection down and drains rumqttc's queues; returns whether it was up.
    fn on_error(&mut self) -> bool {
        let was = {
            let mut state = self.ledger.lock();
            let was = state.connected;
            state.connected = false;
            Metrics::set(&self.ledger.metrics.gauges.mqtt_connected, 0);
            state.fifo.clear();
            state.by_pkid.clear();
            state.collided = None;
            was
        };
        // Anything put into the channel before `connected` went false is drained here.
        self.eventloop.clean();
        self.eventloop.pending.clear();
        was
    }
}

const TLS_HINT: &str =
    "TLS failed: check mqtt.tls (ca_file, server_name, cert_file, key_file) and mqtt.port against the broker";

/// What to check when a connection attempt failed for a reason that retrying will not fix: the
/// broker refused the client, or the TLS handshake failed.
fn configuration_hint(error: &ConnectionError) -> Option<&'static str> {
    let tls = |e: &std::io::Error| e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => Some("the broker refused the credentials: check mqtt.username and mqtt.password"),
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            Some("the broker refused the client id: check mqtt.client_id")
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::RefusedProtocolVersion) => {
            Some("the broker does not accept MQTT 3.1.1")
        }
        ConnectionError::Tls(_) => Some(TLS_HINT),
        ConnectionError::Io(e) | ConnectionError::MqttState(StateError::Io(e)) if tls(e) => Some(TLS_HINT),
        _ => None,
    }
}
