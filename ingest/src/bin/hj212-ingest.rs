//! `hj212-ingest`: command line, logging, signals, systemd notification and exit codes around
//! [`hj212_ingest::start`].
//!
//! Exit codes: 0 after a clean stop, 1 when the daemon failed or shutdown timed out, 78 for a
//! configuration error (sysexits `EX_CONFIG`), 130 on a second SIGTERM/SIGINT, 131 on SIGQUIT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use hj212_ingest::quality::{self, report::CalendarMetric};
use hj212_ingest::quality_task::State;
use hj212_ingest::{Config, ConfigError};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: the daemon allocates a little for every frame
/// (payload, topic, ledger entry), and glibc's malloc took about a fifth of its CPU at the
/// throughput ceiling; with mimalloc the ceiling rose by about a quarter (`docs/performance.md`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hj212-ingest",
    version,
    about = "HJ 212 platform daemon: TCP listener to MQTT, with acknowledgements"
)]
struct Cli {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short, env = "HJ212_INGEST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings, -qq errors).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    quiet: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "HJ212_INGEST_LOG_FORMAT", global = true)]
    log_format: LogFormat,
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
    /// Transmission accounting of one day and the networking status, from the daemon's quality
    /// state file (`quality.state_path`; written by the running daemon every
    /// `quality.persist_secs`).
    Report {
        /// The civil day, `YYYY-MM-DD`.
        #[arg(long)]
        date: String,
        /// Only this MN.
        #[arg(long)]
        mn: Option<String>,
        /// Print the records as JSON instead of tables (each with its MN's networking status
        /// in `network`).
        #[arg(long)]
        json: bool,
        /// Also write the completeness calendar (SVG) of the MN to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// The state file (default: `quality.state_path` of the configuration).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Comparison monitoring: laboratory results (CSV: mn, pollutant, sampling_time, value)
    /// against the online values in the daemon's quality state file. Exit 0 pass, 2 fail, 3 no
    /// decision (no online value near any sample).
    Compare {
        /// The MN.
        #[arg(long)]
        mn: String,
        /// The laboratory CSV file.
        #[arg(long)]
        lab: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The state file (default: `quality.state_path` of the configuration).
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

fn init_logging(cli: &Cli) {
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // The embedded broker is chatty at info; keep it to warnings unless RUST_LOG says otherwise.
    let default = format!("{level},rumqttd=warn,rumqttc=warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{}", hj212_ingest::config::DEFAULT_CONFIG);
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckConfig) => {
            return match Config::load(cli.config.as_deref()) {
                Ok(config) => {
                    println!(
                        "configuration ok: {} listener(s), {} registered site(s), MQTT {}",
                        config.listeners.len(),
                        config.registry.len(),
                        if config.mqtt.embedded() {
                            "embedded broker".to_string()
                        } else {
                            format!(
                                "{}:{}{}",
                                config.mqtt.host.as_deref().unwrap_or(""),
                                config.mqtt.port,
                                if config.mqtt.tls.enabled { " over TLS" } else { "" }
                            )
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            };
        }
        Some(Command::Report { ref date, ref mn, json, ref svg, ref state }) => {
            return quality_cli(&cli, state.as_deref(), |config, st| {
                report(config, st, date, mn.as_deref(), json, svg.as_deref())
            });
        }
        Some(Command::Compare { ref mn, ref lab, json, ref state }) => {
            return quality_cli(&cli, state.as_deref(), |config, st| compare(config, st, mn, lab, json));
        }
        Some(Command::Run) | None => {}
    }
    init_logging(&cli);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(daemon(config, cli.config.clone()))
}

/// Loads the configuration and the quality state file, then runs `f` (exit 1 on its error).
fn quality_cli(
    cli: &Cli,
    state: Option<&std::path::Path>,
    f: impl FnOnce(&Config, &State) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let path = state.map_or_else(|| config.quality.state_path.clone(), std::path::Path::to_path_buf);
    let result = State::load(&path).and_then(|st| f(&config, &st));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    config: &Config,
    state: &State,
    date: &str,
    mn: Option<&str>,
    json: bool,
    svg: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let records = state.day(date, mn);
    let network = state.network(mn);
    if json {
        let rows = quality::report::report_rows(&records, &network, &state.written_at);
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", quality::report::render_table(&records));
        if records.is_empty() {
            println!("(no record for {date}; state written at {})", state.written_at);
        }
        println!();
        print!("{}", quality::report::render_network_section(&network, &state.written_at));
    }
    if let Some(file) = svg {
        let mn = mn
            .map(str::to_string)
            .or_else(|| records.first().map(|r| r.mn.clone()))
            .ok_or_else(|| anyhow::anyhow!("--svg needs --mn (no record on {date})"))?;
        let mine: Vec<_> = state.daily.iter().filter(|r| r.mn == mn).cloned().collect();
        let cn = if mine.iter().any(|r| r.cn == 2061) { 2061 } else { mine.first().map_or(2061, |r| r.cn) };
        let text = quality::report::render_calendar_svg(&mn, cn, &mine, CalendarMetric::TransmissionEffective);
        std::fs::write(file, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
    }
    let _ = config;
    Ok(ExitCode::SUCCESS)
}

fn compare(config: &Config, state: &State, mn: &str, lab: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(lab).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", lab.display()))?;
    let samples = quality::comparison::parse_lab_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", lab.display()))?;
    let report = state.compare(&samples, Some(mn), &config.quality_config());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    let verdicts: Vec<Option<bool>> = report.verdicts.iter().map(|v| v.pass).collect();
    Ok(if verdicts.contains(&Some(false)) {
        ExitCode::from(2)
    } else if verdicts.contains(&Some(true)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(78)
}

async fn daemon(config: Config, path: Option<PathBuf>) -> ExitCode {
    let token = CancellationToken::new();
    let handle = match hj212_ingest::start(config, token.clone()).await {
        Ok(h) => h,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Could not start.");
            eprintln!("error: {error:#}");
            return if error.is::<ConfigError>() { ExitCode::from(78) } else { ExitCode::FAILURE };
        }
    };
    let metrics = handle.metrics().clone();
    let status = || {
        hj212_ingest::watchdog::status_line(
            metrics.gauges.connections_open.load(Ordering::Relaxed),
            metrics.gauges.mqtt_connected.load(Ordering::Relaxed) == 1,
        )
    };
    // Errors are ignored: outside systemd there is no NOTIFY_SOCKET and this does nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status())]);
    tokio::spawn(signals(token.clone(), handle.reloader(), path));
    let env = |name: &str| std::env::var(name).ok();
    let plan = hj212_ingest::watchdog::plan(
        env("NOTIFY_SOCKET").as_deref(),
        env("WATCHDOG_USEC").as_deref(),
        env("WATCHDOG_PID").as_deref(),
        std::process::id(),
    );
    if let Some(p) = plan {
        tracing::info!(interval_ms = p.interval.as_millis(), watchdog = p.watchdog, "systemd notification enabled.");
    }
    // The watchdog is pinged from this loop, which also waits for the daemon to stop: a wedged
    // runtime stops the pings and lets systemd restart the service.
    let mut tick = tokio::time::interval(plan.map_or(Duration::from_secs(3600), |p| p.interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wait = handle.wait();
    tokio::pin!(wait);
    let result = loop {
        tokio::select! {
            result = &mut wait => break result,
            _ = tick.tick(), if plan.is_some() => {
                let text = status();
                let _ = if plan.is_some_and(|p| p.watchdog) {
                    sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog, sd_notify::NotifyState::Status(&text)])
                } else {
                    sd_notify::notify(false, &[sd_notify::NotifyState::Status(&text)])
                };
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM/SIGINT: graceful stop; a second one, or SIGQUIT, exits at once; SIGHUP reloads the
/// site registry and authentication policy from the configuration file (validated; on an error
/// the old registry stays and the reason is logged).
async fn signals(token: CancellationToken, reloader: hj212_ingest::Reloader, path: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("Cannot install signal handlers.");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = quit.recv() => {
                tracing::warn!("SIGQUIT: exiting immediately.");
                std::process::exit(131);
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the site registry.");
                match Config::load(path.as_deref()) {
                    Ok(config) => {
                        let _ = reloader.reload(&config);
                    }
                    Err(error) => {
                        reloader.reload_failed(&error);
                    }
                }
                continue;
            }
        }
        if token.is_cancelled() {
            tracing::warn!("Second signal: exiting immediately.");
            std::process::exit(130);
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        token.cancel();
    }
}
