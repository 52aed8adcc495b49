//! The HJ 212 data acquisition unit for embedded Linux (`hj212-gateway`), and the library behind
//! the `hj212` CLI.
//!
//! The daemon runs the `firmware` crate on Linux: serial ports ([`serial`]) poll the analyzers,
//! the firmware turns readings into messages, the [`site`] writes each one to the [`store`]
//! (durably, once per platform queue) and wakes the [`uplink`]s, which deliver them over TCP,
//! driven by the codec's exchange state machine, and delete each record on the platform's
//! `9014`. [`start`] starts everything and returns a [`Gateway`]; [`run`] also waits for it.
//!
//! Shutdown: cancel the token passed to [`start`]; every task stops at its next await and
//! [`Gateway::wait`] returns once all have. The binary bounds that wait with a time limit.
#![deny(unsafe_code)] // allowed once: the RS-485 ioctl in `rs485`
#![cfg_attr(not(fuzzing), warn(missing_docs))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod maintenance;
pub mod metrics;
pub mod packet_log;
pub mod rs485;
pub mod serial;
pub mod site;
pub mod store;
pub mod uplink;
pub mod v2025;

use std::sync::Arc;

use anyhow::Context as _;
use firmware::profile::{Code, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, ScaledClock, SystemClock};
pub use config::{Config, ConfigError};
pub use store::{Record, SledStore, Store};

/// Choices a caller can make beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The data clock; the system clock in the site's zone when `None`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    tracker: TaskTracker,
    site: Arc<site::Site>,
    platforms: Vec<String>,
}

impl Gateway {
    /// The store, to inspect queues (tests, status).
    #[must_use]
    pub fn store(&self) -> Arc<dyn Store> {
        self.site.store.clone()
    }

    /// The counters.
    #[must_use]
    pub fn metrics(&self) -> Arc<metrics::Metrics> {
        self.site.metrics.clone()
    }

    /// A one-line status for systemd's `STATUS=`: links up and queue depths.
    #[must_use]
    pub fn status(&self) -> String {
        let up = self.site.metrics.links_up.load(std::sync::atomic::Ordering::Relaxed);
        let queues: Vec<String> =
            self.platforms.iter().map(|p| format!("{p}={}", self.site.store.queue_len(p))).collect();
        format!("links up {up}/{}; queued {}", self.platforms.len(), queues.join(" "))
    }

    /// Waits until every task has stopped (after the shutdown token was cancelled).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

/// Starts the gateway with the system clock; see [`start_with`].
///
/// # Errors
/// As [`start_with`].
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
    start_with(config, shutdown, Options::default()).await
}

/// Validates `config`, opens the store and the packet log, and starts the serial ports, the
/// uplinks, the retention task and the metrics endpoint. Returns once everything runs.
///
/// # Errors
/// A [`ConfigError`] (exit 78) for a bad configuration; otherwise the store, the packet log or
/// the metrics address could not be opened.
pub async fn start_with(config: Config, shutdown: CancellationToken, options: Options) -> anyhow::Result<Gateway> {
    config.validate()?;
    let config = Arc::new(config);
    let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock::new(config.site.utc_offset_minutes)));
    let mut analyzers = Vec::new();
    for (pi, port) in config.serial.iter().enumerate() {
        for an in &port.analyzer {
            let profile = an.load_profile()?;
            let first = profile.points.iter().find_map(|p| match p.target {
                Target::Pollutant(c) => Some(c),
                _ => None,
            });
            let pol_id = an.pol_id.as_deref().and_then(Code::try_new).or(first).unwrap_or(Code::new("w00000"));
            analyzers.push(site::AnalyzerInfo { name: an.name.clone(), port: pi, profile, pol_id });
        }
    }
    let platforms: Vec<String> = config.platform.iter().map(|p| p.name.clone()).collect();
    let store = {
        let (path, names, cap) = (config.store.path.clone(), platforms.clone(), config.store.max_queue_records);
        let cache = Some(config.store.cache_capacity_mib.max(1) * 1024 * 1024);
        tokio::task::spawn_blocking(move || SledStore::open_with_cache(&path, &names, cap, cache))
            .await
            .context("store task")?
            .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let log = Arc::new(
        packet_log::PacketLog::open(&config.packet_log.path, config.packet_log.max_bytes, config.packet_log.keep)
            .with_context(|| format!("cannot open the packet log {}", config.packet_log.path.display()))?,
    );
    let metrics = Arc::new(metrics::Metrics::default());
    let mut port_tx = Vec::new();
    let mut port_rx = Vec::new();
    for _ in &config.serial {
        let (tx, rx) = mpsc::channel(8);
        port_tx.push(tx);
        port_rx.push(rx);
    }
    let site = Arc::new(site::Site::new(config.clone(), clock, store.clone(), metrics.clone(), analyzers, port_tx));
    let tracker = TaskTracker::new();
    if !config.metrics.address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.address)
            .await
            .with_context(|| format!("cannot listen for metrics on {}", config.metrics.address))?;
        tracker.spawn(metrics::serve(listener, metrics.clone(), store.clone(), platforms.clone(), shutdown.clone()));
    }
    for (i, rx) in port_rx.into_iter().enumerate() {
        let mine: Vec<usize> = site.analyzers.iter().enumerate().filter(|(_, a)| a.port == i).map(|(j, _)| j).collect();
        tracker.spawn(serial::run(i, site.clone(), mine, rx, shutdown.clone()));
    }
    for p in &config.platform {
        tracker.spawn(uplink::run(site.clone(), log.clone(), p.clone(), shutdown.clone()));
    }
    tracker.spawn(retention(site.clone(), shutdown.clone()));
    tracker.close();
    tracing::info!(
        ports = config.serial.len(),
        analyzers = site.analyzers.len(),
        platforms = platforms.len(),
        store = %config.store.path.display(),
        "Gateway started."
    );
    Ok(Gateway { tracker, site, platforms })
}

/// Starts the gateway and waits until `shutdown` is cancelled and every task has stopped.
///
/// # Errors
/// As [`start`].
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Deletes history older than the retention, at start and every hour.
async fn retention(site: Arc<site::Site>, shutdown: CancellationToken) {
    loop {
        let keep_ms = i64::from(site.config.store.retention_days) * 86_400_000;
        let before = site.clock.now().to_millis() - keep_ms;
        let store = site.store.clone();
        match tokio::task::spawn_blocking(move || store.purge_history(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "History past the retention removed."),
            Ok(Err(error)) => tracing::error!(%error, "History purge failed."),
            _ => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
