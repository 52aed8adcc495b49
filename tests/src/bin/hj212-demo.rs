//! `hj212-demo`: simulated analyzers → gateways → ingest → MQTT on loopback, shown live.
//! The logic is in `hj212_tests::demo`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hj212_tests::demo;
use hj212_tests::style::Style;

/// Runs two simulated sites, their gateways, the ingest daemon and an MQTT viewer on loopback,
/// and shows the frames going up, the acknowledgements coming back and the MQTT payloads.
#[derive(Debug, Parser)]
#[command(name = "hj212-demo", version)]
struct Cli {
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS", env = "HJ212_DEMO_DURATION")]
    duration: Option<u64>,
    /// How many times faster than real time the data clock runs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600), env = "HJ212_DEMO_SPEED")]
    speed: u32,
    /// Keep the stores and packet logs in this directory (default: a temporary one, removed).
    #[arg(long, value_name = "DIR", env = "HJ212_DEMO_DIR")]
    dir: Option<PathBuf>,
    /// Colours: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemons' own logs go to stderr, warnings and errors only unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = match cli.color.as_str() {
        "always" => true,
        "never" => false,
        _ => !no_color && std::io::stderr().is_terminal(),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let style = match cli.color.as_str() {
        "always" => Style::new(true),
        "never" => Style::new(false),
        _ => Style::detect(),
    };
    let options = demo::Options {
        duration: cli.duration.map(Duration::from_secs),
        speed: cli.speed,
        dir: cli.dir.as_deref().map(demo::absolute),
        style,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(demo::run(options));
    // The embedded broker's threads cannot be stopped; leave without waiting for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
