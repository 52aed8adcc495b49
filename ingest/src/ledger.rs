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
//! Connections. The ledger can spread its messages over several broker connections (its
//! lanes, `mqtt.connections`): one rumqttc event loop writes and flushes one publish at a time, so
//! one connection caps throughput well below what a broker takes. A message's lane follows from
//! its topic without the last level (`{prefix}/{mn}` for `{prefix}/{mn}/{cn}`): every topic stays
//! on one connection, and so does all of one site's data, which keeps MQTT's per-topic order and
//! each site's order. A reassembled message (`{prefix}/{mn}/{cn}/whole`) drops its last two levels,
//! so it goes over its site's connection too, after the parts it was built from. Lane 0 carries the retained status topic, its will, and the subscriptions.
//! Each lane is a ledger of its own, with the invariants below.
//!
//! Invariants:
//! * A request is put into rumqttc's channel only while the ledger believes the connection is up.
//!   When a poll fails, the ledger first marks the connection down (under the lock), then drains
//!   the channel with `EventLoop::clean`, so no request of the old connection survives into the new
//!   one, where it would be sent twice and shift the FIFO.
//! * One task owns the `EventLoop` and polls it forever (with backoff on errors); the poll future
//!   is never cancelled except at the very end of shutdown.
//! * Events rumqttc buffered on a lost connection are taken before the next one is used (it
//!   would hand them out after the CONNACK, and a stale `Outgoing::Publish` would shift the FIFO):
//!   PUBACKs among them are matched first, messages received passed on, the rest dropped.
//! * A message leaves the ledger only on its PUBACK.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, Incoming, LastWill, MqttOptions,
    NetworkOptions, Outgoing, QoS, StateError, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::delivery::Delivery;
use crate::delivery::Settle;
use crate::metrics::{Event, Metrics};

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
    done: Settle,
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
    /// Client id; lane `i > 0` connects as `{client_id}-{i}`.
    pub client_id: String,
    /// Connections to the broker (lanes), at least one.
    pub connections: usize,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS to the broker (see [`crate::config::MqttTls::client_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Most messages held un-acknowledged, over all connections.
    pub max_unacked: usize,
    /// The MQTT in-flight window of each connection: publishes awaiting their PUBACK on the wire
    /// at once.
    pub inflight: u16,
    /// TCP_NODELAY on the broker connections (`mqtt.tcp_nodelay`).
    pub tcp_nodelay: bool,
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
            .field("connections", &self.connections)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "******"))
            .field("tls", &self.tls.is_some())
            .field("keep_alive", &self.keep_alive)
            .field("max_unacked", &self.max_unacked)
            .field("inflight", &self.inflight)
            .field("tcp_nodelay", &self.tcp_nodelay)
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
    lanes: Arc<[Lane]>,
}

/// One broker connection's ledger.
#[derive(Debug, Clone)]
struct Lane {
    state: Arc<Mutex<State>>,
    client: AsyncClient,
    metrics: Arc<Metrics>,
    max_unacked: usize,
    /// Connections in the pool.
    lanes: u64,
    /// Shared by the lanes: serialises their updates of the connection gauges.
    gauge_lock: Arc<Mutex<()>>,
    /// The retained status topic ("online" on every connect); lane 0 only.
    status_topic: Option<String>,
    /// Lane 0 only.
    subscribe: Arc<[String]>,
}

/// The polling side: owns the rumqttc event loops, one per connection.
pub struct Driver {
    lanes: Vec<LaneDriver>,
}

struct LaneDriver {
    index: usize,
    /// The last failed connection attempt's error, shared by the lanes: a new kind of failure
    /// is logged at warn or error, the same failure again (every retry, every lane) only at debug.
    last_failure: Arc<Mutex<Option<String>>>,
    lane: Lane,
    eventloop: EventLoop,
    received: mpsc::Sender<Received>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("lanes", &self.lanes.len()).finish_non_exhaustive()
    }
}

impl Ledger {
    /// Creates the ledger and its driver (run [`Driver::run`] in a task), and the receiver of
    /// messages on the subscribed topics.
    #[must_use]
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> (Self, Driver, mpsc::Receiver<Received>) {
        let n = settings.connections.max(1);
        let (received, rx) = mpsc::channel(256);
        let mut lanes = Vec::with_capacity(n);
        let mut drivers = Vec::with_capacity(n);
        let gauge_lock = Arc::new(Mutex::new(()));
        let last_failure = Arc::new(Mutex::new(None));
        for index in 0..n {
            let (lane, eventloop) = Lane::new(settings, index, metrics.clone(), gauge_lock.clone());
            lanes.push(lane.clone());
            drivers.push(LaneDriver {
                index,
                last_failure: last_failure.clone(),
                lane,
                eventloop,
                received: received.clone(),
            });
        }
        (Self { lanes: lanes.into() }, Driver { lanes: drivers }, rx)
    }

    /// The lane of `topic`: chosen by the topic without its last level.
    fn lane(&self, topic: &str) -> &Lane {
        &self.lanes[lane_index(topic, self.lanes.len())]
    }

    /// Publishes `payload` to `topic` at QoS 1; the returned [`Delivery`] is delivered on PUBACK.
    ///
    /// # Errors
    /// [`LedgerFull`] when the topic's connection holds its share of `max_unacked` messages
    /// already, or after shutdown began.
    pub fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        qn: Option<String>,
    ) -> Result<Delivery, LedgerFull> {
        self.lane(&topic).publish(topic, payload, retain, qn, false)
    }

    /// As [`Ledger::publish`], for a message the spool holds durably: [`Ledger::drain`] does not
    /// wait for it at shutdown.
    ///
    /// # Errors
    /// As for [`Ledger::publish`].
    pub fn publish_spooled(&self, topic: String, payload: Vec<u8>, qn: Option<String>) -> Result<Delivery, LedgerFull> {
        self.lane(&topic).publish(topic, payload, false, qn, true)
    }

    /// Messages waiting for their PUBACK.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.lanes.iter().map(|l| l.lock().entries.len()).sum()
    }

    /// True while every MQTT connection is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.lanes.iter().all(|l| l.lock().connected)
    }

    /// Waits until every message not held by the spool is acknowledged, or `limit` passes;
    /// true when none is left.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.lanes.iter().all(|l| l.lock().entries.values().all(|e| e.spooled)) {
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
        let first = &self.lanes[0];
        if let Some(topic) = &first.status_topic {
            if let Ok(d) = first.publish(topic.clone(), b"offline".to_vec(), true, None, false) {
                let _ = tokio::time::timeout(limit, d.settled()).await;
            }
        }
        for lane in self.lanes.iter() {
            lane.lock().closed = true;
            let _ = lane.client.try_disconnect();
        }
    }
}

impl Lane {
    fn new(settings: &Settings, index: usize, metrics: Arc<Metrics>, gauge_lock: Arc<Mutex<()>>) -> (Self, EventLoop) {
        let n = settings.connections.max(1);
        let client_id = if index == 0 { settings.client_id.clone() } else { format!("{}-{index}", settings.client_id) };
        let mut options = MqttOptions::new(client_id, settings.host.clone(), settings.port);
        options.set_keep_alive(settings.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        // rumqttc's default window of 100 publishes capped throughput at 100 per PUBACK round
        // trip (`mqtt.inflight`, default 1000).
        options.set_inflight(settings.inflight.max(1));
        if index == 0 {
            options.set_last_will(LastWill::new(settings.status_topic.clone(), "offline", QoS::AtLeastOnce, true));
        }
        if let Some((user, pass)) = &settings.credentials {
            options.set_credentials(user.clone(), pass.clone());
        }
        if let Some(tls) = &settings.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
        }
        let max_unacked = settings.max_unacked.div_ceil(n).max(1);
        // Room for every message the lane may hold, so `try_publish` never finds the channel full.
        let (client, mut eventloop) = AsyncClient::new(options, max_unacked + 64);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(settings.tcp_nodelay);
        eventloop.set_network_options(network);
        let lane = Self {
            state: Arc::default(),
            client,
            metrics,
            max_unacked,
            lanes: n as u64,
            gauge_lock,
            status_topic: (index == 0).then(|| settings.status_topic.clone()),
            subscribe: if index == 0 { settings.subscribe.clone().into() } else { Arc::from([]) },
        };
        (lane, eventloop)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts this lane's connection up or down in the gauges.
    fn count_connection(&self, up: bool) {
        let _serial = self.gauge_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let g = &self.metrics.gauges;
        if up {
            Metrics::add(&g.mqtt_connections_up, 1);
        } else {
            Metrics::sub(&g.mqtt_connections_up, 1);
        }
        let all = g.mqtt_connections_up.load(std::sync::atomic::Ordering::Relaxed) >= self.lanes;
        Metrics::set(&g.mqtt_connected, u64::from(all));
    }

    fn publish(
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
        let (done, delivery) = Delivery::pending();
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(id, Entry { topic, payload, retain, qn, done, sends: 0, spooled });
        Metrics::add(&self.metrics.gauges.mqtt_unacked, 1);
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
}

impl Driver {
    /// Polls every connection's event loop until `stop` is cancelled, reconnecting with backoff.
    pub async fn run(self, stop: CancellationToken) {
        let tasks: Vec<_> = self.lanes.into_iter().map(|l| tokio::spawn(l.run(stop.clone()))).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl LaneDriver {
    async fn run(mut self, stop: CancellationToken) {
        let lane = self.index;
        let mut backoff = Duration::from_millis(100);
        loop {
            let polled = tokio::select! {
                () = stop.cancelled() => break,
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(MqttEvent::Incoming(Incoming::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    tracing::info!(lane, session_present = ack.session_present, code = ?ack.code, "Connected to the MQTT broker.");
                    self.on_connack();
                }
                Ok(MqttEvent::Incoming(Incoming::PubAck(ack))) => self.on_puback(ack.pkid),
                Ok(MqttEvent::Incoming(Incoming::Publish(p))) => self.forward(&p),
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => self.on_outgoing(pkid, false),
                Ok(MqttEvent::Outgoing(Outgoing::AwaitAck(pkid))) => self.on_outgoing(pkid, true),
                Ok(MqttEvent::Incoming(Incoming::Disconnect)) => {
                    tracing::warn!(lane, "The MQTT broker sent DISCONNECT.");
                }
                Ok(_) => {}
                Err(error) => {
                    Metrics::inc(&self.lane.metrics.counters.mqtt_errors);
                    let was_connected = self.on_error();
                    let wait = jitter(backoff);
                    let retry_in_ms = wait.as_millis() as u64;
                    let text = error.to_string();
                    let repeated = {
                        let mut last = self.last_failure.lock().unwrap_or_else(PoisonError::into_inner);
                        last.replace(text.clone()).as_deref() == Some(text.as_str())
                    };
                    if was_connected {
                        tracing::warn!(lane, %error, "MQTT connection lost; unacknowledged messages will be republished.");
                    } else if repeated {
                        tracing::debug!(lane, %error, retry_in_ms, "MQTT connection attempt failed.");
                    } else if let Some(hint) = configuration_hint(&error) {
                        tracing::error!(lane, %error, hint, retry_in_ms, "Cannot connect to the MQTT broker.");
                    } else {
                        tracing::warn!(lane, %error, retry_in_ms, "Cannot connect to the MQTT broker.");
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Passes a message that arrived on a subscribed topic on.
    fn forward(&self, p: &rumqttc::Publish) {
        let r = Received { topic: p.topic.clone(), payload: p.payload.to_vec() };
        if self.received.try_send(r).is_err() {
            Metrics::inc(&self.lane.metrics.counters.commands_failed);
            tracing::warn!(topic = %p.topic, "Dropped an incoming MQTT message: too many waiting.");
        }
    }

    /// Takes the events rumqttc buffered on the lost connection, which it would hand out on the
    /// next one: an `Outgoing::Publish` of the old connection would be matched to the first
    /// message of the new one and shift every later match, so it is dropped. PUBACKs among them
    /// are real (the broker has those messages) and are matched; messages received are passed on.
    fn drop_stale_events(&mut self) {
        for event in std::mem::take(&mut self.eventloop.state.events) {
            match event {
                MqttEvent::Incoming(Incoming::Publish(p)) => self.forward(&p),
                // A PUBACK the broker did send: its message is safe, and is matched while the
                // lost connection's packet ids are still known (`on_error` runs this first).
                MqttEvent::Incoming(Incoming::PubAck(ack)) => self.on_puback(ack.pkid),
                _ => {}
            }
        }
    }

    fn on_connack(&mut self) {
        // With a clean session the event loop dropped whatever it had; so do we, then resend all.
        self.eventloop.pending.clear();
        self.drop_stale_events();
        let lane = self.lane.clone();
        let mut state = lane.lock();
        if !state.connected {
            state.connected = true;
            lane.count_connection(true);
        }
        for filter in lane.subscribe.iter() {
            if let Err(error) = lane.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                tracing::warn!(%error, filter = %filter, "Could not subscribe.");
            }
        }
        state.fifo.clear();
        state.by_pkid.clear();
        state.collided = None;
        let ids: Vec<u64> = state.entries.keys().copied().collect();
        if let Some(topic) = lane.status_topic.as_ref().filter(|_| !state.closed) {
            let (done, _) = Delivery::pending();
            let id = state.next_id;
            state.next_id += 1;
            let entry = Entry {
                topic: topic.clone(),
                payload: b"online".to_vec(),
                retain: true,
                qn: None,
                done,
                sends: 0,
                spooled: false,
            };
            state.entries.insert(id, entry);
            Metrics::add(&lane.metrics.gauges.mqtt_unacked, 1);
            Metrics::inc(&lane.metrics.counters.mqtt_published);
            lane.send(&mut state, id);
        }
        for id in ids {
            lane.send(&mut state, id);
        }
    }

    fn on_outgoing(&mut self, pkid: u16, collided: bool) {
        let mut state = self.lane.lock();
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
            self.lane.metrics.emit_with(|| Event::Published { topic: e.topic.clone(), qn: e.qn.clone() });
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        let mut state = self.lane.lock();
        let Some(id) = state.by_pkid.remove(&pkid) else {
            tracing::debug!(pkid, "PUBACK for a packet id the ledger does not track.");
            return;
        };
        if let Some(entry) = state.entries.remove(&id) {
            Metrics::sub(&self.lane.metrics.gauges.mqtt_unacked, 1);
            drop(state);
            Metrics::inc(&self.lane.metrics.counters.mqtt_acked);
            self.lane.metrics.emit(Event::Acked { topic: entry.topic, qn: entry.qn });
            entry.done.delivered();
        }
    }

    /// Marks the connection down and drains rumqttc's queues; returns whether it was up.
    fn on_error(&mut self) -> bool {
        // Buffered events first, while the lost connection's packet ids are still mapped.
        self.drop_stale_events();
        let was = {
            let mut state = self.lane.lock();
            let was = state.connected;
            if was {
                self.lane.count_connection(false);
            }
            state.connected = false;
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

/// `d` scaled by a random factor in [0.75, 1.25), so that the lanes, and the ingest instances
/// of a cluster, do not all reconnect to a restarted broker at the same instants.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded from the operating system's generator; no cryptographic need here.
    let x = std::collections::hash_map::RandomState::new().build_hasher().finish();
    d.mul_f64(0.75 + (x % 1000) as f64 / 2000.0)
}

/// The lane, of `lanes`, that carries `topic`: a hash of the topic without its last level, so
/// `{prefix}/{mn}/{cn}` goes by its site.
fn lane_index(topic: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    // `{prefix}/{mn}/{cn}/whole` goes with `{prefix}/{mn}/{cn}`, the site's data.
    let topic = topic.strip_suffix("/whole").unwrap_or(topic);
    let group = topic.rsplit_once('/').map_or(topic, |(group, _)| group);
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(group, &mut hasher);
    usize::try_from(std::hash::Hasher::finish(&hasher) % lanes as u64).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sites_topics_share_a_lane_and_sites_spread_over_all_lanes() {
        let mut used = std::collections::BTreeSet::new();
        for i in 0..200 {
            let mn = format!("010000A8900016F0001{i:05}");
            let lane = lane_index(&format!("hj212/{mn}/2011"), 4);
            for cn in ["2051", "2061", "2031", "3020"] {
                assert_eq!(lane_index(&format!("hj212/{mn}/{cn}"), 4), lane, "{mn} {cn}");
                assert_eq!(lane_index(&format!("hj212/{mn}/{cn}/whole"), 4), lane, "{mn} {cn} whole");
            }
            // A prefix with levels of its own changes nothing.
            let deep = lane_index(&format!("org/env/hj212/{mn}/2011"), 4);
            assert_eq!(lane_index(&format!("org/env/hj212/{mn}/2051"), 4), deep);
            used.insert(lane);
        }
        assert_eq!(used.len(), 4, "lanes used: {used:?}");
        assert_eq!(lane_index("hj212/anything/2011", 1), 0);
        assert_eq!(lane_index("no-levels", 3), lane_index("no-levels", 3));
    }

    #[test]
    fn reconnect_delays_are_spread_around_the_backoff() {
        let d = Duration::from_millis(1000);
        let delays: std::collections::BTreeSet<Duration> = (0..50).map(|_| jitter(d)).collect();
        assert!(delays.iter().all(|j| (750..1250).contains(&j.as_millis())), "{delays:?}");
        assert!(delays.len() > 10, "not spread: {delays:?}");
    }
}
