//! `hj212-gateway`: command line, logging, signals, systemd notification and exit codes around
//! [`hj212_gateway::start`].
//!
//! Exit codes: 0 after a clean stop, 1 when the daemon failed to start or shutdown timed out,
//! 78 for a configuration error (sysexits `EX_CONFIG`), 130 on a second SIGTERM/SIGINT, 131 on
//! SIGQUIT.
//!
//! SIGHUP reloads the configuration file: it is read and validated first, and an invalid file is
//! logged and ignored (the daemon runs on). A valid one replaces the running gateway: every task
//! is stopped as on SIGTERM (records stay in the store), and the gateway starts again on the new
//! configuration; if that start fails, it starts again on the previous one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use hj212_gateway::{Config, ConfigError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "hj212-gateway",
    version,
    about = "HJ 212 data acquisition unit: analyzers over Modbus RTU to platforms over TCP"
)]
struct Cli {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short, env = "HJ212_GATEWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings, -qq errors).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    quiet: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "HJ212_GATEWAY_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    /// Seconds allowed for a graceful shutdown (overrides the file's `shutdown_timeout_secs`).
    #[arg(long, global = true)]
    shutdown_timeout_secs: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration and exit (0 valid, 78 invalid).
    CheckConfig,
    /// Print the default configuration.
    PrintDefaultConfig,
}

fn init_logging(cli: &Cli) {
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},sled=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(78)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", hj212_gateway::config::DEFAULT_CONFIG);
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckConfig) => {
            return match Config::load(cli.config.as_deref()) {
                Ok(c) => {
                    let analyzers: usize = c.serial.iter().map(|p| p.analyzer.len()).sum();
                    println!(
                        "configuration ok: {} serial port(s), {analyzers} analyzer(s), {} platform(s), store {}",
                        c.serial.len(),
                        c.platform.len(),
                        c.store.path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            };
        }
        Some(Command::Run) | None => {}
    }
    init_logging(&cli);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let limit = Duration::from_secs(cli.shutdown_timeout_secs.unwrap_or(config.shutdown_timeout_secs));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(daemon(cli.config.clone(), config, limit))
}

/// Sends a notification to systemd; errors (no `NOTIFY_SOCKET`, not under systemd) are ignored.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, state);
}

/// Starts the gateway on `config` with a fresh cancellation token.
async fn start(config: Config) -> anyhow::Result<(hj212_gateway::Gateway, CancellationToken)> {
    let token = CancellationToken::new();
    let gateway = hj212_gateway::start(config, token.clone()).await?;
    Ok((gateway, token))
}

/// Cancels the gateway and waits for every task, at most `limit`. False when it timed out.
async fn stop(gateway: hj212_gateway::Gateway, token: &CancellationToken, limit: Duration) -> bool {
    token.cancel();
    tokio::time::timeout(limit, gateway.wait()).await.is_ok()
}

async fn daemon(path: Option<PathBuf>, config: Config, limit: Duration) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let mut config = config;
    let (mut gateway, mut token) = match start(config.clone()).await {
        Ok(g) => g,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Could not start.");
            eprintln!("error: {error:#}");
            return if error.is::<ConfigError>() { ExitCode::from(78) } else { ExitCode::FAILURE };
        }
    };
    // The store is open and the ports and uplinks are started.
    notify(&[sd_notify::NotifyState::Ready]);
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    // The watchdog is pinged from this loop, so a stuck main loop stops the pings.
    let watchdog = {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
    };
    let mut status_tick =
        tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(10)).min(Duration::from_secs(10)));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = quit.recv() => {
                tracing::warn!("SIGQUIT: exiting at once.");
                return ExitCode::from(131);
            }
            _ = hup.recv() => {
                let new = match Config::load(path.as_deref()) {
                    Ok(new) => new,
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the configuration is invalid; the running one is kept.");
                        continue;
                    }
                };
                tracing::info!("SIGHUP: the configuration is valid; restarting on it.");
                notify(&[sd_notify::NotifyState::Reloading]);
                if !stop(gateway, &token, limit).await {
                    tracing::error!(timeout_secs = limit.as_secs(), "Reload: the running gateway did not stop in time.");
                    return ExitCode::FAILURE;
                }
                (gateway, token) = match start(new.clone()).await {
                    Ok(g) => {
                        config = new;
                        tracing::info!("Configuration reloaded.");
                        g
                    }
                    Err(error) => {
                        tracing::error!(
                            error = %format!("{error:#}"),
                            "Reload: the new configuration did not start; going back to the previous one."
                        );
                        match start(config.clone()).await {
                            Ok(g) => g,
                            Err(error) => {
                                tracing::error!(error = %format!("{error:#}"), "Could not start again.");
                                return ExitCode::FAILURE;
                            }
                        }
                    }
                };
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = status_tick.tick() => {
                let status = gateway.status();
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog, sd_notify::NotifyState::Status(&status)]);
                } else {
                    notify(&[sd_notify::NotifyState::Status(&status)]);
                }
            }
        }
    }
    tracing::info!(timeout_secs = limit.as_secs(), "Stopping.");
    notify(&[sd_notify::NotifyState::Stopping]);
    tokio::select! {
        stopped = stop(gateway, &token, limit) => {
            if stopped {
                tracing::info!("Stopped.");
                ExitCode::SUCCESS
            } else {
                tracing::error!(timeout_secs = limit.as_secs(), "Shutdown timed out.");
                ExitCode::FAILURE
            }
        }
        _ = term.recv() => ExitCode::from(130),
        _ = int.recv() => ExitCode::from(130),
        _ = quit.recv() => ExitCode::from(131),
    }
}
