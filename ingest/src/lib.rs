//! The platform side of HJ 212: accepts data acquisition units over TCP, checks and
//! authenticates their frames, publishes them to MQTT, and answers them.
//!
//! A data upload that asks for an answer (Flag A=1) is answered with 9014 only after the broker has
//! acknowledged its MQTT message (PUBACK at QoS 1): the site deletes a record on that 9014, so the
//! record must be safe at the next hop first.
//!
//! [`run`] runs the daemon until its shutdown token is cancelled; [`start`] does the same but returns
//! once the listeners are bound, with a [`Handle`] that tells the bound addresses, so tests (and the
//! binary, for `sd_notify`) can act at that point.
//!
//! Modules:
//! * [`config`]: the TOML configuration and its environment overrides;
//! * `conn`: listeners and the per-connection driver;
//! * [`answers`]: the platform's answers (one small module, to be replaced by the codec's
//!   exchange machine);
//! * [`ledger`]: MQTT publishing with delivery tracking and republish after reconnect, over TCP or
//!   TLS ([`config::MqttTls`]), with a user name and password when configured;
//! * [`spool`]: the durable sled spool in front of the ledger (broker outages, restarts);
//! * [`commands`]: commands down from `{prefix}/cmd/{mn}` and their replies;
//! * [`quality`]: the sans-IO data-quality engine, and [`quality_task`]: the task that owns it in
//!   the daemon (alerts, daily records, gap recovery, the state file read by `report`/`compare`);
//! * `http`: the Prometheus `/metrics` and `/healthz` endpoint;
//! * [`v2025`]: HJ 212-2025 encryption, key store and registration;
//! * [`watchdog`]: systemd watchdog interval and status text for the binary's main loop;
//! * `subpackets`: reassembly of split messages (`PNUM`/`PNO`) into whole ones, per MN, bounded;
//! * [`auth`], [`dedup`], [`payload`], [`metrics`], [`broker`] (the embedded rumqttd), `packet_log`.
#![cfg_attr(not(fuzzing), warn(missing_docs))]

pub mod answers;
pub mod auth;
pub mod broker;
pub mod commands;
pub mod config;
mod conn;
pub mod dedup;
pub mod delivery;
mod http;
pub mod ledger;
pub mod metrics;
mod packet_log;
pub mod payload;
pub mod quality;
pub mod quality_task;
pub mod spool;
mod subpackets;
pub mod v2025;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ConfigError};
pub use metrics::{Event, Metrics};

/// A running daemon.
#[derive(Debug)]
pub struct Handle {
    listen_addrs: Vec<SocketAddr>,
    mqtt_addr: (String, u16),
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
    ledger: ledger::Ledger,
    registry: Arc<auth::Registry>,
    quality: Option<Arc<tokio::sync::watch::Sender<quality::QualityConfig>>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Handle {
    /// The addresses the listeners are bound to, in configuration order.
    #[must_use]
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The MQTT broker in use (the embedded one's loopback address when embedded).
    #[must_use]
    pub fn mqtt_addr(&self) -> (&str, u16) {
        (&self.mqtt_addr.0, self.mqtt_addr.1)
    }

    /// The counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Subscribes to the event stream from now on.
    #[must_use]
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.metrics.subscribe()
    }

    /// The address of the `/metrics` and `/healthz` endpoint, when enabled.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Replaces the site registry and the authentication policy with those of `config` (a
    /// reload, as on SIGHUP); what was learnt per site (CRC variant, rate) is kept.
    ///
    /// # Errors
    /// The new registry is not valid; the old one stays in force.
    pub fn reload_registry(&self, config: &Config) -> Result<usize, ConfigError> {
        self.reloader().reload(config)
    }

    /// A handle that reloads the registry, usable after [`Handle::wait`] took the handle.
    #[must_use]
    pub fn reloader(&self) -> Reloader {
        Reloader { registry: self.registry.clone(), metrics: self.metrics.clone(), quality: self.quality.clone() }
    }

    /// True while every MQTT connection is up.
    #[must_use]
    pub fn mqtt_connected(&self) -> bool {
        self.ledger.is_connected()
    }

    /// Waits until the daemon has stopped (after its shutdown token was cancelled).
    ///
    /// # Errors
    /// Shutdown did not finish within `shutdown_timeout_secs`, or a task failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("the supervisor task failed")?
    }
}

/// Reloads the site registry of a running daemon (see [`Handle::reload_registry`]).
#[derive(Debug, Clone)]
pub struct Reloader {
    registry: Arc<auth::Registry>,
    metrics: Arc<Metrics>,
    quality: Option<Arc<tokio::sync::watch::Sender<quality::QualityConfig>>>,
}

impl Reloader {
    /// Records a reload that could not even read its configuration (logged and counted).
    pub fn reload_failed(&self, error: &ConfigError) {
        Metrics::inc(&self.metrics.counters.registry_reload_errors);
        tracing::error!(error = %error, "Configuration not reloaded; the old registry stays in force.");
    }

    /// Replaces the registry and authentication policy with those of `config`.
    ///
    /// # Errors
    /// The new registry is not valid; the old one stays in force (logged and counted).
    pub fn reload(&self, config: &Config) -> Result<usize, ConfigError> {
        match self.registry.replace(&config.registry, config.auth.clone()) {
            Ok(n) => {
                if let Some(q) = &self.quality {
                    q.send_replace(config.quality_config());
                }
                Metrics::inc(&self.metrics.counters.registry_reloads);
                tracing::info!(sites = n, "Site registry reloaded.");
                Ok(n)
            }
            Err(e) => {
                Metrics::inc(&self.metrics.counters.registry_reload_errors);
                tracing::error!(error = %e, "Site registry not reloaded; the old one stays in force.");
                Err(e)
            }
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled, then stops gracefully within the configured
/// time limit.
///
/// # Errors
/// The configuration is invalid ([`ConfigError`]), a listener or the embedded broker cannot bind,
/// the packet log cannot be opened, or shutdown timed out.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Starts the daemon and returns once every listener is bound.
///
/// # Errors
/// As for [`run`], except for the shutdown time limit (see [`Handle::wait`]).
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Handle> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());

    let mqtt_addr = if config.mqtt.embedded() {
        let addr = broker::start(config.mqtt.embedded_port).await?;
        (addr.ip().to_string(), addr.port())
    } else {
        (config.mqtt.host.clone().unwrap_or_default(), config.mqtt.port)
    };

    let pl = &config.packet_log;
    let (packet_log, log_task) = packet_log::PacketLog::open(&pl.path, pl.max_bytes, pl.keep, metrics.clone())
        .with_context(|| format!("cannot open the packet log {}", pl.path.display()))?;
    let log_task = log_task.map(tokio::spawn);

    let settings = ledger::Settings {
        host: mqtt_addr.0.clone(),
        port: mqtt_addr.1,
        client_id: config.client_id(),
        credentials: config.mqtt.username.clone().map(|u| (u, config.mqtt.password.clone().unwrap_or_default())),
        tls: if config.mqtt.embedded() { None } else { config.mqtt.tls.client_config(&mqtt_addr.0)? },
        keep_alive: Duration::from_secs(config.mqtt.keep_alive_secs),
        connections: config.mqtt.connections,
        max_unacked: config.mqtt.max_unacked,
        inflight: config.mqtt.inflight,
        tcp_nodelay: config.mqtt.tcp_nodelay,
        status_topic: format!("{}/status/{}", config.mqtt.prefix, config.instance),
        subscribe: if config.commands.enabled { vec![format!("{}/cmd/+", config.mqtt.prefix)] } else { Vec::new() },
    };
    let spool = if config.spool.enabled() {
        let s = &config.spool;
        let spool = spool::Spool::open(&s.path, s.max_bytes, s.on_full, metrics.clone())
            .with_context(|| format!("cannot open the spool {}", s.path.display()))?;
        Some(Arc::new(spool))
    } else {
        None
    };
    let (ledger, driver, received) = ledger::Ledger::new(&settings, metrics.clone());
    let mqtt_stop = CancellationToken::new();
    let driver_task = tokio::spawn(driver.run(mqtt_stop.clone()));

    let mut listeners = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.addr).await.with_context(|| format!("cannot listen on {}", l.addr))?;
        listeners.push((listener, l.tcp_nodelay));
    }
    let listen_addrs: Vec<SocketAddr> = listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect();
    let http_listener = match config.metrics.addr()? {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?)
        }
        None => None,
    };
    let metrics_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = http_listener {
        tokio::spawn(http::serve(l, metrics.clone(), mqtt_stop.clone()));
    }
    let spool_stop = CancellationToken::new();
    let spool_hard_stop = CancellationToken::new();
    let spool_tracker = TaskTracker::new();
    if let Some(spool) = &spool {
        spool.spawn(ledger.clone(), config.spool.window, &spool_tracker, spool_stop.clone(), spool_hard_stop.clone());
    }
    let registry = Arc::new(auth::Registry::new(
        &config.registry,
        config.auth.clone(),
        config.limits.max_frames_per_minute_per_mn,
    ));

    let (quality_feed, quality_rx) = if config.quality.enabled {
        let (feed, rx) = quality_task::channel(config.quality.channel_capacity, metrics.clone());
        let (tx, config_rx) = tokio::sync::watch::channel(config.quality_config());
        (Some(feed), Some((rx, config_rx, Arc::new(tx))))
    } else {
        (None, None)
    };
    let quality_reload = quality_rx.as_ref().map(|(_, _, tx)| tx.clone());
    let shared = Arc::new(conn::Shared {
        registry: registry.clone(),
        ledger: ledger.clone(),
        dedup: dedup::Dedup::new(Duration::from_secs(config.limits.dedup_window_secs), 100_000),
        metrics: metrics.clone(),
        packet_log,
        qn: std::sync::Mutex::default(),
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        active: AtomicUsize::new(0),
        config: config.clone(),
        spool: spool.clone(),
        sites: std::sync::Mutex::default(),
        next_conn_id: std::sync::atomic::AtomicU64::new(0),
        quality: quality_feed,
        keys: v2025::KeyStore::open(&config.keys).context("cannot open the key store")?,
        registrar: v2025::Registrar::open(&config.registration).context("cannot open the registration state")?,
        not_accepted_log: conn::LogGate::default(),
        subpackets: config
            .subpackets
            .enabled
            .then(|| subpackets::Subpackets::new(config.subpackets.clone(), metrics.clone())),
    });
    let listener_tracker = TaskTracker::new();
    for (listener, nodelay) in listeners {
        listener_tracker.spawn(conn::accept_loop(listener, nodelay, shared.clone()));
    }
    listener_tracker.spawn(commands::run(received, shared.clone()));
    if shared.subpackets.is_some() {
        let shared = shared.clone();
        listener_tracker.spawn(async move {
            // Expiry is also checked on every part of the same MN; this catches sites that stopped.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shared.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Some(s) = &shared.subpackets {
                    s.expire(std::time::Instant::now());
                }
            }
        });
    }
    if let Some((rx, config_rx, _)) = quality_rx {
        listener_tracker.spawn(quality_task::run(rx, shared.clone(), config_rx));
    }
    listener_tracker.close();
    Metrics::set(&metrics.gauges.listeners_bound, 1);
    tracing::info!(listeners = ?listen_addrs, mqtt = %format!("{}:{}", mqtt_addr.0, mqtt_addr.1), embedded = config.mqtt.embedded(), mqtt_tls = settings.tls.is_some(), "hj212-ingest is ready.");
    if config.registry.is_empty() && config.auth.unknown_mn != config::UnknownMnPolicy::Accept {
        tracing::warn!("The site registry is empty: every frame will be refused.");
    }

    let supervisor_ledger = ledger.clone();
    let supervisor_metrics = metrics.clone();
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        let limit = Duration::from_secs(config.shutdown_timeout_secs);
        let deadline = tokio::time::Instant::now() + limit;
        tracing::info!(timeout_secs = limit.as_secs(), "Shutting down.");
        let graceful = async {
            listener_tracker.wait().await;
            let tracker = shared.tracker.clone();
            drop(shared);
            tracker.close();
            tracker.wait().await;
            spool_stop.cancel();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !supervisor_ledger.drain(left).await {
                tracing::warn!(unacked = supervisor_ledger.unacked(), "Unacknowledged MQTT messages at shutdown.");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            supervisor_ledger.close(left.min(Duration::from_secs(2))).await;
        };
        let result = tokio::time::timeout_at(deadline, graceful).await;
        spool_stop.cancel();
        spool_hard_stop.cancel();
        spool_tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), spool_tracker.wait()).await;
        if let Some(spool) = spool {
            if let Err(error) = spool.flush() {
                tracing::error!(%error, "Spool flush at shutdown failed.");
            }
            tracing::info!(messages = spool.depth(), "Spool closed.");
        }
        Metrics::set(&supervisor_metrics.gauges.listeners_bound, 0);
        mqtt_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), driver_task).await;
        if let Some(task) = log_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        match result {
            Ok(()) => {
                tracing::info!("Stopped.");
                Ok(())
            }
            Err(_) => {
                tracing::error!(timeout_secs = limit.as_secs(), "Shutdown timed out.");
                Err(anyhow::anyhow!("shutdown timed out after {} s", limit.as_secs()))
            }
        }
    });

    Ok(Handle { listen_addrs, mqtt_addr, metrics, metrics_addr, ledger, registry, quality: quality_reload, done })
}
