//! The two demonstration sites, their simulated analyzers and their configurations.
//!
//! - A waste-water outfall (ST 32): COD, NH3-N, TP and TN analyzers (the built-in surface-water
//!   profiles, units 1–4) and a flow meter (unit 6), all on one RS-485 line.
//! - A flue-gas stack (ST 31): the built-in CEMS profile (gas analyzer unit 7, parameter unit 8)
//!   on its own line.
//!
//! Values are chosen to be exact in `f32` and short in decimal, so a test can compare what the
//! simulator serves with what reaches MQTT without any tolerance.

use std::net::SocketAddr;
use std::path::Path;

use firmware::profile::{Code, Profile, Target, Value, builtin};
use firmware::sim::Simulator;
use hj212_gateway::config::{Analyzer, Config as GatewayConfig, Parity, Platform, SerialPort};

use crate::pty::{SharedSim, shared};

/// The waste-water site's MN.
pub const WATER_MN: &str = "010000A8900016F000169DC0";
/// The flue-gas site's MN.
pub const GAS_MN: &str = "010000A8900016F000169DC1";
/// The access password of both sites.
pub const PW: &str = "123456";

/// One simulated analyzer: its configured name, the built-in profile and the simulator.
#[derive(Debug, Clone)]
pub struct SimAnalyzer {
    /// The gateway's name for it.
    pub name: &'static str,
    /// The built-in profile name.
    pub profile: &'static str,
    /// The simulator serving it.
    pub sim: SharedSim,
    /// The pollutant code and the value it serves (the main reading).
    pub main: (&'static str, f64),
}

/// A site: identity and analyzers (all on one line).
#[derive(Debug, Clone)]
pub struct Site {
    /// A short name (`water`, `gas`).
    pub name: &'static str,
    /// MN.
    pub mn: &'static str,
    /// ST.
    pub st: &'static str,
    /// The analyzers.
    pub analyzers: Vec<SimAnalyzer>,
}

impl Site {
    /// The simulators, to serve on a [`crate::pty::Line`].
    #[must_use]
    pub fn sims(&self) -> Vec<SharedSim> {
        self.analyzers.iter().map(|a| a.sim.clone()).collect()
    }

    /// The analyzer named `name`.
    ///
    /// # Panics
    /// No such analyzer (a bug in the caller).
    #[must_use]
    pub fn analyzer(&self, name: &str) -> &SimAnalyzer {
        self.analyzers.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no analyzer {name}"))
    }
}

fn water_analyzer(
    name: &'static str,
    profile: &'static Profile<'static>,
    code: &'static str,
    value: f64,
    range: f64,
) -> SimAnalyzer {
    let mut sim = Simulator::new(profile);
    sim.set(&Target::Pollutant(Code::new(code)), Value::Number(value));
    sim.set(&Target::Status, Value::Code(1)); // measuring
    sim.set(&Target::Info(Code::new("i13001")), Value::Number(range));
    sim.set(&Target::Info(Code::new("i13008")), Value::Number(1.0)); // slope
    sim.set(&Target::Info(Code::new("i13007")), Value::Number(0.0)); // intercept
    SimAnalyzer { name, profile: profile.name, sim: shared(sim), main: (code, value) }
}

/// The waste-water outfall. With `full`, all five instruments; otherwise COD and flow only (the
/// lighter set the fault tests use).
#[must_use]
pub fn water(full: bool) -> Site {
    let mut analyzers = vec![water_analyzer("cod", &builtin::SURFACE_WATER_COD, "w01018", 42.5, 1000.0)];
    if full {
        analyzers.push(water_analyzer("nh3n", &builtin::SURFACE_WATER_NH3N, "w21003", 1.25, 50.0));
        analyzers.push(water_analyzer("tp", &builtin::SURFACE_WATER_TP, "w21011", 0.375, 10.0));
        analyzers.push(water_analyzer("tn", &builtin::SURFACE_WATER_TN, "w21001", 12.75, 100.0));
    }
    let mut flow = Simulator::new(&builtin::FLOW_METER);
    flow.set(&Target::Pollutant(Code::new("w00000")), Value::Number(3.5));
    flow.set(&Target::Total(Code::new("w00000")), Value::Number(1024.0));
    analyzers.push(SimAnalyzer {
        name: "flow",
        profile: builtin::FLOW_METER.name,
        sim: shared(flow),
        main: ("w00000", 3.5),
    });
    Site { name: "water", mn: WATER_MN, st: "32", analyzers }
}

/// The flue-gas stack: one CEMS (gas analyzer and flue-gas parameter unit).
#[must_use]
pub fn gas() -> Site {
    let mut sim = Simulator::new(&builtin::FLUE_GAS_CEMS);
    for (code, v) in [
        ("a21026", 35.5),   // SO2, mg/m3
        ("a19001", 10.5),   // O2, %
        ("a01014", 8.25),   // humidity, %
        ("a34013", 5.5),    // particulates, mg/m3
        ("a01012", 120.5),  // temperature, °C
        ("a01013", 101.25), // pressure, kPa
        ("a01011", 12.5),   // velocity, m/s
        ("a00000", 50_000.0),
    ] {
        sim.set(&Target::Pollutant(Code::new(code)), Value::Number(v));
    }
    // NO read as NOx (the profile scales it): 30 × 46/30 = 46 mg/m3 as NO2.
    sim.set(&Target::Pollutant(Code::new("a21002")), Value::Number(46.0));
    sim.set(&Target::Status, Value::Code(1));
    let cems =
        SimAnalyzer { name: "cems", profile: builtin::FLUE_GAS_CEMS.name, sim: shared(sim), main: ("a21026", 35.5) };
    Site { name: "gas", mn: GAS_MN, st: "31", analyzers: vec![cems] }
}

/// How fast a gateway runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Milliseconds between poll cycles (real time).
    pub poll_interval_ms: u64,
    /// `RtdInterval`, seconds of data time.
    pub rtd_interval_secs: u32,
    /// `MinInterval`, minutes of data time.
    pub min_interval_mins: u8,
    /// HJ 212 `OverTime`, seconds, and `ReCount`.
    pub over_time_secs: u64,
    /// HJ 212 `ReCount`.
    pub re_count: u16,
}

/// The gateway's configuration for `site`: its analyzers on `device`, store and packet log under
/// `dir`, one platform (`platform`) at `platform`, polled at `timing`.
#[must_use]
pub fn gateway_config(site: &Site, dir: &Path, device: &Path, platform: SocketAddr, timing: Timing) -> GatewayConfig {
    let mut c = GatewayConfig { shutdown_timeout_secs: 3, ..GatewayConfig::default() };
    c.site.mn = site.mn.into();
    c.site.pw = PW.into();
    c.site.st = site.st.into();
    c.store.path = dir.join("store");
    c.packet_log.path = dir.join("packets.log");
    c.packet_log.max_bytes = 256 * 1024 * 1024;
    c.acquisition.rtd_interval_secs = timing.rtd_interval_secs;
    c.acquisition.min_interval_mins = timing.min_interval_mins;
    c.acquisition.poll_interval_ms = timing.poll_interval_ms;
    c.acquisition.samples_per_minute = 1;
    c.acquisition.minutes_per_hour = 1;
    c.acquisition.hours_per_day = 1;
    c.acquisition.snapshot_interval_secs = 0;
    c.serial = vec![SerialPort {
        device: device.to_path_buf(),
        baud: 9600,
        parity: Parity::None,
        stop_bits: 1,
        response_timeout_ms: 300,
        retries: 1,
        inter_request_delay_ms: 2,
        rs485: None,
        de_gpio: None,
        analyzer: site
            .analyzers
            .iter()
            .map(|a| Analyzer {
                name: a.name.into(),
                profile: Some(a.profile.into()),
                profile_file: None,
                unit: None,
                pol_id: None,
                electricity: None,
            })
            .collect(),
    }];
    c.platform = vec![Platform {
        name: "platform".into(),
        address: platform.to_string(),
        over_time_secs: timing.over_time_secs,
        re_count: timing.re_count,
        reconnect_min_ms: 200,
        reconnect_max_ms: 1000,
        replay_per_sec: 50,
        ..Platform::default()
    }];
    c
}

/// The ingest daemon's configuration, as TOML (so fields added to ingest later keep their
/// defaults): one loopback listener on a free port, the given broker (or the embedded one on a
/// free port), packet log and spool under `dir`, both sites registered.
///
/// # Errors
/// The text does not parse (a bug here, or a renamed setting in ingest).
pub fn ingest_config(dir: &Path, broker: Option<SocketAddr>) -> anyhow::Result<hj212_ingest::Config> {
    ingest_config_with(dir, broker, "")
}

/// [`ingest_config`] with `extra` TOML appended (more `[[registry]]` entries, `[keys]`,
/// `[registration]`, …).
///
/// # Errors
/// The text does not parse.
pub fn ingest_config_with(dir: &Path, broker: Option<SocketAddr>, extra: &str) -> anyhow::Result<hj212_ingest::Config> {
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = hj212_ingest::Config::from_toml(&ingest_toml(dir, listen, broker, extra))?;
    // The data-quality state file defaults to /var/lib: each test keeps its own, or one test's
    // engine state (a slope it set) would judge the next test's data.
    if config.quality.state_path == hj212_ingest::config::Quality::default().state_path {
        config.quality.state_path = dir.join("ingest-quality.json");
    }
    Ok(config)
}

/// The text of [`ingest_config_with`]'s configuration, listening on `listen`, for an
/// `hj212-ingest` process (which reads a file). The data-quality state file is left at its
/// default: a caller that runs the daemon sets `[quality] state_path` in `extra`.
#[must_use]
pub fn ingest_toml(dir: &Path, listen: SocketAddr, broker: Option<SocketAddr>, extra: &str) -> String {
    let mqtt = match broker {
        Some(b) => format!("host = \"{}\"\nport = {}\nembedded = false", b.ip(), b.port()),
        None => "embedded = true\nembedded_port = 0".to_string(),
    };
    let text = format!(
        r#"
shutdown_timeout_secs = 2

[[listeners]]
addr = "{listen}"

[limits]
ack_timeout_secs = 10
max_frames_per_minute_per_mn = 0

[mqtt]
{mqtt}
keep_alive_secs = 5

[packet_log]
path = {log:?}

[spool]
path = {spool:?}

[commands]
timeout_secs = 20

[metrics]
listen = ""

[[registry]]
mn = "{WATER_MN}"
password = "{PW}"
allowed_st = ["32"]

[[registry]]
mn = "{GAS_MN}"
password = "{PW}"
allowed_st = ["31"]
"#,
        log = dir.join("ingest-packets.log").display().to_string(),
        spool = dir.join("ingest-spool").display().to_string(),
    );
    format!("{text}\n{extra}\n")
}
