//! The daemon's configuration: a TOML file, environment overrides and validation.
//!
//! Order of precedence: an environment variable `HJ212_GATEWAY_*` (see [`Config::apply_env`]),
//! then the file, then the defaults of the `Default` impls here, which `default.toml` mirrors
//! (`hj212-gateway print-default-config` prints it; a test checks that it parses and validates).
//!
//! Every table refuses unknown keys, so a misspelt setting is an error rather than a silent default.
//! [`Config::validate`] reports the first problem with the path of the setting, such as
//! `platform[1].address: invalid socket address "x"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use firmware::profile::{Code, FacilityQuantity, OwnedProfile, Target, builtin};
use serde::Deserialize;

/// The text of `default.toml`, printed by `print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// A configuration that cannot be used; the daemon exits with 78 (`EX_CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// An SM4 key as `NewSK` carries it: 16 printable ASCII characters.
fn valid_key(k: &str) -> bool {
    k.len() == 16 && k.bytes().all(|b| b.is_ascii_graphic())
}

fn bad(path: impl fmt::Display, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{path}: {why}"))
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds allowed for a graceful shutdown after SIGTERM or SIGINT.
    pub shutdown_timeout_secs: u64,
    /// The site: identity and clock.
    pub site: Site,
    /// Polling and statistics.
    pub acquisition: Acquisition,
    /// Serial ports and the analyzers on them.
    pub serial: Vec<SerialPort>,
    /// Platforms to upload to (one or more).
    pub platform: Vec<Platform>,
    /// The DAU's hardware identifiers, uploaded with CN 1001 when an HJ 212-2025 platform
    /// registers it.
    pub hardware: Hardware,
    /// The store-and-forward database.
    pub store: Store,
    /// The packet log.
    pub packet_log: PacketLog,
    /// The metrics endpoint.
    pub metrics: Metrics,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shutdown_timeout_secs: 30,
            site: Site::default(),
            acquisition: Acquisition::default(),
            serial: Vec::new(),
            platform: vec![Platform::default()],
            hardware: Hardware::default(),
            store: Store::default(),
            packet_log: PacketLog::default(),
            metrics: Metrics::default(),
        }
    }
}

/// The dynamic-control code table of the platforms (`3020` i-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CodeTable {
    /// HJ 212-2017 Table B.10.
    #[default]
    National,
    /// The Hebei extension.
    Hebei,
}

/// The site's identity.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Site {
    /// `MN`, the site's unique code (at most 24 characters).
    pub mn: String,
    /// `PW`, the access password (never logged).
    pub pw: String,
    /// `ST`, the system code (HJ 212-2017 Table 5: 21 surface water, 31 flue gas, 32 waste water…).
    pub st: String,
    /// The site's clock zone in minutes east of UTC (HJ 212 times are local; 480 is UTC+8).
    pub utc_offset_minutes: i32,
    /// The i-code table for dynamic control.
    pub code_table: CodeTable,
    /// Let a platform's CN 1012 set the system clock (off by default: the answer is `ExeRtn=2`).
    pub allow_set_clock: bool,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("mn", &self.mn)
            .field("pw", &"***")
            .field("st", &self.st)
            .field("utc_offset_minutes", &self.utc_offset_minutes)
            .field("code_table", &self.code_table)
            .field("allow_set_clock", &self.allow_set_clock)
            .finish()
    }
}

impl Default for Site {
    fn default() -> Self {
        Self {
            mn: "010000A8900016F000169DC0".into(),
            pw: "123456".into(),
            st: "32".into(),
            utc_offset_minutes: 480,
            code_table: CodeTable::National,
            allow_set_clock: false,
        }
    }
}

/// Polling and statistics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acquisition {
    /// `RtdInterval`: seconds between real-time uploads (2011/2021). The standard allows 30–3600;
    /// the file accepts 1 and up for tests.
    pub rtd_interval_secs: u32,
    /// `MinInterval`: minutes per minute record (2051): 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30.
    pub min_interval_mins: u8,
    /// Milliseconds between the starts of two poll cycles of a port.
    pub poll_interval_ms: u64,
    /// Valid samples needed for a 1-minute mean (HJ 212-2017 Appendix D (23); default 12).
    pub samples_per_minute: u32,
    /// Valid minute means needed for an hourly mean ((24); default 45).
    pub minutes_per_hour: u32,
    /// Valid hourly means needed for a daily mean ((25); default 20).
    pub hours_per_day: u32,
    /// Seconds between full dynamic-control snapshots (3020); 0 sends one at start only.
    pub snapshot_interval_secs: u64,
}

impl Default for Acquisition {
    fn default() -> Self {
        Self {
            rtd_interval_secs: 30,
            min_interval_mins: 10,
            poll_interval_ms: 5000,
            samples_per_minute: 12,
            minutes_per_hour: 45,
            hours_per_day: 20,
            snapshot_interval_secs: 3600,
        }
    }
}

/// The `MinInterval` values HJ 212-2017 allows (divisors of 60 up to 30).
pub const MIN_INTERVALS: [u8; 11] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// One serial port (an RS-485 line) and the analyzers on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// The device path, such as `/dev/ttyUSB0`.
    pub device: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits: 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Milliseconds to wait for an analyzer's answer.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u32,
    /// Extra attempts after a transport error.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Milliseconds of silence before each request (at least t3.5).
    #[serde(default = "default_inter_request_delay_ms")]
    pub inter_request_delay_ms: u32,
    /// The kernel's RS-485 mode for a UART whose RTS drives the transceiver (`TIOCSRS485`);
    /// none: left as it is (USB adapters switch direction themselves).
    #[serde(default)]
    pub rs485: Option<Rs485>,
    /// A GPIO that drives the transceiver's DE line around each request.
    #[serde(default)]
    pub de_gpio: Option<DeGpio>,
    /// The analyzers on this line.
    #[serde(default)]
    pub analyzer: Vec<Analyzer>,
}

/// The kernel's RS-485 mode of a port (`struct serial_rs485`, `Documentation/driver-api/serial/serial-rs485.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rs485 {
    /// `SER_RS485_ENABLED` (default true; false turns the mode off).
    pub enabled: bool,
    /// RTS active while sending (`SER_RS485_RTS_ON_SEND`, default true).
    pub rts_on_send: bool,
    /// RTS active after sending (`SER_RS485_RTS_AFTER_SEND`, default false).
    pub rts_after_send: bool,
    /// Keep receiving while sending (`SER_RS485_RX_DURING_TX`, default false).
    pub rx_during_tx: bool,
    /// Switch the bus termination on, where the board can (`SER_RS485_TERMINATE_BUS`).
    pub terminate_bus: bool,
    /// Milliseconds RTS is raised before the first byte (0–100).
    pub delay_rts_before_send_ms: u32,
    /// Milliseconds RTS is held after the last byte (0–100).
    pub delay_rts_after_send_ms: u32,
}

impl Default for Rs485 {
    fn default() -> Self {
        Self {
            enabled: true,
            rts_on_send: true,
            rts_after_send: false,
            rx_during_tx: false,
            terminate_bus: false,
            delay_rts_before_send_ms: 0,
            delay_rts_after_send_ms: 0,
        }
    }
}

/// A GPIO driving the RS-485 transceiver's DE line, through its sysfs `value` file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeGpio {
    /// The line's `value` file, such as `/sys/class/gpio/gpio17/value` (exported, direction `out`).
    pub value_path: PathBuf,
    /// The transceiver transmits when the line is low.
    #[serde(default)]
    pub active_low: bool,
}

const fn default_baud() -> u32 {
    9600
}
const fn default_stop_bits() -> u8 {
    1
}
const fn default_response_timeout_ms() -> u32 {
    1000
}
const fn default_retries() -> u8 {
    2
}
const fn default_inter_request_delay_ms() -> u32 {
    20
}

/// One analyzer: a profile and a unit address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analyzer {
    /// A name for logs and metrics.
    pub name: String,
    /// A built-in profile name (`surface-water-cod`, …; see `docs/devices.md`).
    #[serde(default)]
    pub profile: Option<String>,
    /// A profile file (TOML or JSON, the `OwnedProfile` shape), instead of `profile`.
    #[serde(default)]
    pub profile_file: Option<PathBuf>,
    /// The unit address; replaces the profile's (only for single-unit profiles).
    #[serde(default)]
    pub unit: Option<u8>,
    /// `PolId` for dynamic control; defaults to the profile's first pollutant code.
    #[serde(default)]
    pub pol_id: Option<String>,
    /// HJ 212-2025 electricity-use data (ST 44) from this analyzer's energy-meter points.
    #[serde(default)]
    pub electricity: Option<Electricity>,
}

/// HJ 212-2025 electricity-use monitoring (`ST=44`, CN 2011; provisional): which of an energy
/// meter's quantities go up, under which code. The public material names the codes
/// (`d20105`–`d20405` for production facilities, `d30106`, `d30406` for treatment facilities) but
/// not what each measures, so the mapping is the operator's, from the platform's instructions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Electricity {
    /// Quantity → HJ 212 code. Quantities: `current_1`, `current_2`, `current_3` (A), `power`
    /// (kW), `energy` (kWh), each a facility point of the analyzer's profile.
    pub codes: BTreeMap<String, String>,
}

impl Electricity {
    /// The profile's facility quantity named `name` in [`Electricity::codes`].
    #[must_use]
    pub fn quantity(name: &str) -> Option<FacilityQuantity> {
        match name {
            "current_1" => Some(FacilityQuantity::Current(1)),
            "current_2" => Some(FacilityQuantity::Current(2)),
            "current_3" => Some(FacilityQuantity::Current(3)),
            "power" => Some(FacilityQuantity::Power),
            "energy" => Some(FacilityQuantity::Energy),
            _ => None,
        }
    }
}

impl Analyzer {
    /// Loads the analyzer's profile, with the configured unit address applied.
    ///
    /// # Errors
    /// An unknown built-in name, an unreadable or invalid file, neither or both given, or a unit
    /// override on a profile with several units.
    pub fn load_profile(&self) -> Result<OwnedProfile, ConfigError> {
        let mut profile = match (&self.profile, &self.profile_file) {
            (Some(name), None) => {
                builtin::ALL.iter().find(|p| p.name == name).map(|p| OwnedProfile::from_profile(p)).ok_or_else(
                    || {
                        let names: Vec<&str> = builtin::ALL.iter().map(|p| p.name).collect();
                        bad("profile", format!("unknown built-in profile {name:?} (known: {})", names.join(", ")))
                    },
                )?
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("profile_file", format!("cannot read {}: {e}", path.display())))?;
                let is_json = path.extension().is_some_and(|e| e == "json");
                if is_json {
                    serde_json::from_str(&text).map_err(|e| bad("profile_file", format!("{}: {e}", path.display())))?
                } else {
                    toml::from_str(&text).map_err(|e| bad("profile_file", format!("{}: {e}", path.display())))?
                }
            }
            (Some(_), Some(_)) => return Err(bad("profile", "give either `profile` or `profile_file`, not both")),
            (None, None) => return Err(bad("profile", "missing: give `profile` or `profile_file`")),
        };
        if profile.points.is_empty() {
            return Err(bad("profile", "the profile has no points"));
        }
        for (i, c) in profile.controls.iter().enumerate() {
            if !c.is_valid() {
                return Err(bad(
                    format!("controls[{i}].function"),
                    "a control is triggered with write_single_register, write_multiple_registers or write_single_coil",
                ));
            }
            if profile.controls[..i].iter().any(|o| o.action == c.action) {
                return Err(bad(format!("controls[{i}].action"), format!("{} is listed twice", c.action)));
            }
        }
        if let Some(unit) = self.unit {
            if !(1..=247).contains(&unit) {
                return Err(bad("unit", format!("{unit} is not a Modbus unit address (1–247)")));
            }
            if !profile.is_single_unit() {
                return Err(bad("unit", "the profile spans several units; leave `unit` out"));
            }
            profile.set_unit(unit);
        }
        Ok(profile)
    }
}

/// The checksum written on frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Crc {
    /// HJ 212-2017 Appendix A.
    #[default]
    Hj212,
    /// CRC-16/MODBUS, high byte first (some platforms expect it).
    ModbusHighFirst,
    /// CRC-16/MODBUS, low byte first.
    ModbusLowFirst,
}

impl Crc {
    /// The codec's variant.
    #[must_use]
    pub const fn variant(self) -> hj212_codec::CrcVariant {
        match self {
            Self::Hj212 => hj212_codec::CrcVariant::Hj212,
            Self::ModbusHighFirst => hj212_codec::CrcVariant::ModbusHighFirst,
            Self::ModbusLowFirst => hj212_codec::CrcVariant::ModbusLowFirst,
        }
    }
}

/// One platform (上位机) to upload to.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Platform {
    /// A short name: the store's queue name and the log field (letters, digits, `-`, `_`).
    pub name: String,
    /// `host:port` of the platform's listener.
    pub address: String,
    /// The protocol version: 2017 (default), 2025 or 2005 (`Flag` version bits 1, 2 or 0).
    pub version: u16,
    /// A password for this platform instead of `site.pw` (never logged).
    pub password: Option<String>,
    /// The checksum variant.
    pub crc: Crc,
    /// Ask for `9014` on uploads (Flag A=1) and keep each record until it arrives.
    pub ack: bool,
    /// Seconds without any frame sent after which a heartbeat (CN 9015) is sent; 0 = none.
    /// HJ 212-2025 platforms only: HJ 212-2017 reserves CN 9015, so other versions get none.
    pub heartbeat_secs: u64,
    /// `OverTime`, seconds to wait for an answer before resending (HJ 212-2017 Table 1).
    pub over_time_secs: u64,
    /// `ReCount`, resends before the link is taken as down.
    pub re_count: u16,
    /// Backlog records replayed per second after a reconnect (live data goes first).
    pub replay_per_sec: u32,
    /// At a (re)connection, records written this many seconds before it still count as live:
    /// they go out at once, ahead of the older backlog, so that after a short cut the newest
    /// values arrive first. 0: only records written after the connection came up are live.
    pub live_window_secs: u32,
    /// Uploads waiting for `9014` at once.
    pub max_in_flight: usize,
    /// First reconnect delay, milliseconds (doubles up to `reconnect_max_ms`, with jitter).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// HJ 212-2025 `CP` encryption (§6.4): off, or SM4 with [`Platform::key`].
    pub encryption: Encryption,
    /// How ciphertext is written on the wire (see `docs/decisions/0004-*`).
    pub cipher_form: CipherForm,
    /// The initial SM4 key, 16 characters (never logged). Once the platform has sent a new key
    /// (CN 1014 `NewSK`), the key kept in the store wins over this one.
    pub key: Option<String>,
    /// Ask the platform for a new key (CN 1014) when the key in use is older than this.
    pub key_rotation_days: u32,
    /// Seconds a replaced key is still tried for decrypting frames from the platform.
    pub key_grace_secs: u64,
    /// HJ 212-2025 registration: while the platform has assigned no MN, upload the hardware
    /// identifiers (CN 1001, empty MN) and wait for CN 1002 before sending data.
    pub register: bool,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Platform")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("version", &self.version)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("crc", &self.crc)
            .field("ack", &self.ack)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("over_time_secs", &self.over_time_secs)
            .field("re_count", &self.re_count)
            .field("replay_per_sec", &self.replay_per_sec)
            .field("live_window_secs", &self.live_window_secs)
            .field("max_in_flight", &self.max_in_flight)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("encryption", &self.encryption)
            .field("cipher_form", &self.cipher_form)
            .field("key", &self.key.as_ref().map(|_| "****************"))
            .field("key_rotation_days", &self.key_rotation_days)
            .field("key_grace_secs", &self.key_grace_secs)
            .field("register", &self.register)
            .finish()
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            name: "platform".into(),
            address: "127.0.0.1:9212".into(),
            version: 2017,
            password: None,
            crc: Crc::Hj212,
            ack: true,
            heartbeat_secs: 0,
            over_time_secs: 10,
            re_count: 3,
            replay_per_sec: 5,
            live_window_secs: 120,
            max_in_flight: 8,
            reconnect_min_ms: 1000,
            reconnect_max_ms: 60_000,
            encryption: Encryption::Off,
            cipher_form: CipherForm::Binary,
            key: None,
            key_rotation_days: 90,
            key_grace_secs: 3600,
            register: false,
        }
    }
}

impl Platform {
    /// The protocol version as the codec knows it.
    #[must_use]
    pub const fn codec_version(&self) -> hj212_codec::Version {
        match self.version {
            2005 => hj212_codec::Version::V2005,
            2025 => hj212_codec::Version::V2025,
            _ => hj212_codec::Version::V2017,
        }
    }

    /// True when this platform takes uploads of command `cn` under system code `st`: the records
    /// HJ 212-2025 added (2013 raw data, 2062 standard-check data, 2111 furnace temperature, and
    /// anything under its new systems 44 and 45, such as electricity use) go to 2025 platforms
    /// only; a 2017 or 2005 platform would refuse an unknown CN or ST.
    #[must_use]
    pub fn takes(&self, cn: u16, st: &str) -> bool {
        self.version == 2025 || !(matches!(cn, 2013 | 2062 | 2111) || matches!(st, "44" | "45"))
    }

    /// True for an HJ 212-2025 platform with SM4 encryption on.
    #[must_use]
    pub fn encrypts(&self) -> bool {
        self.version == 2025 && self.encryption == Encryption::Sm4
    }
}

/// HJ 212-2025 `CP` encryption of a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// Everything in clear (allowed on private networks, §6.4.1).
    #[default]
    Off,
    /// SM4-ECB of `CP` for the commands §6.4.4 lists (2000–2999, 1014, 3020).
    Sm4,
}

/// How a platform wants ciphertext written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CipherForm {
    /// Raw ciphertext bytes; length field and CRC of the plaintext (the standard's reading).
    #[default]
    Binary,
    /// `{0xE4,0x3E,…}` text; length field and CRC of that text (some implementations).
    #[serde(alias = "hex_text")]
    HexText,
}

impl CipherForm {
    /// The codec's form.
    #[must_use]
    pub const fn codec(self) -> hj212_codec::crypt::CipherForm {
        match self {
            Self::Binary => hj212_codec::crypt::CipherForm::Binary,
            Self::HexText => hj212_codec::crypt::CipherForm::HexText,
        }
    }
}

/// The DAU's hardware identifiers for HJ 212-2025 registration (CN 1001, `i23005`–`i23008`).
/// Empty values are read from the system at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Hardware {
    /// `i23005`: the DAU's identifier (24 characters in the standard's example). Required when a
    /// platform has `register = true`.
    pub dau_id: String,
    /// `i23006`: the CPU identifier; empty reads the `Serial` line of `/proc/cpuinfo`, else
    /// `/etc/machine-id`.
    pub cpu_id: String,
    /// `i23007`, `i23008`: MAC addresses (12 hex digits); empty reads the first two interfaces of
    /// `/sys/class/net` (by name, loopback and all-zero addresses left out).
    pub macs: Vec<String>,
}

/// The store-and-forward database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// The sled directory.
    pub path: PathBuf,
    /// Days that minute, hourly and daily records are kept for history requests.
    pub retention_days: u32,
    /// Records one platform's queue may hold; past it, real-time records are dropped oldest first.
    pub max_queue_records: u64,
    /// sled's page cache, MiB (sled's own default is 1024; the store's working set is small).
    pub cache_capacity_mib: u64,
    /// The maintenance file written by `hj212 maintenance start|stop` and watched by the daemon;
    /// empty: `maintenance.json` next to the store directory (see [`Config::maintenance_file`]).
    pub maintenance_file: PathBuf,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            path: "/var/lib/hj212-gateway/store".into(),
            retention_days: 400,
            max_queue_records: 200_000,
            cache_capacity_mib: 4,
            maintenance_file: PathBuf::new(),
        }
    }
}

/// The packet log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacketLog {
    /// The file; empty turns the packet log off.
    pub path: PathBuf,
    /// Bytes before the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for PacketLog {
    fn default() -> Self {
        Self { path: "/var/log/hj212-gateway/packets.log".into(), max_bytes: 16 * 1024 * 1024, keep: 5 }
    }
}

/// The metrics endpoint (Prometheus text over HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `host:port` to listen on; empty turns it off.
    pub address: String,
}

impl Config {
    /// True when at least one platform speaks HJ 212-2025: acquisition then also produces the
    /// 2025-only records, which reach only those platforms ([`Platform::takes`]).
    #[must_use]
    pub fn any_2025_platform(&self) -> bool {
        self.platform.iter().any(|p| p.version == 2025)
    }

    /// Parses TOML text (no environment, no validation).
    ///
    /// # Errors
    /// Syntax errors and unknown keys, with their location.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("configuration: {e}")))
    }

    /// Reads `path` (or the defaults without one), applies the environment, validates.
    ///
    /// # Errors
    /// An unreadable file, a parse error, a bad environment variable or a failed check.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
                Self::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
            None => Self::parse(DEFAULT_CONFIG)?,
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies the environment overrides, read through `get`:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `HJ212_GATEWAY_MN`, `_PW`, `_ST` | `site.mn`, `site.pw`, `site.st` |
    /// | `HJ212_GATEWAY_UTC_OFFSET_MINUTES` | `site.utc_offset_minutes` |
    /// | `HJ212_GATEWAY_RTD_INTERVAL_SECS`, `_MIN_INTERVAL_MINS`, `_POLL_INTERVAL_MS` | `acquisition.*` |
    /// | `HJ212_GATEWAY_STORE_PATH`, `_RETENTION_DAYS` | `store.path`, `store.retention_days` |
    /// | `HJ212_GATEWAY_PACKET_LOG` | `packet_log.path` |
    /// | `HJ212_GATEWAY_METRICS_ADDRESS` | `metrics.address` |
    /// | `HJ212_GATEWAY_SHUTDOWN_TIMEOUT_SECS` | `shutdown_timeout_secs` |
    /// | `HJ212_GATEWAY_PLATFORM_<NAME>_ADDRESS` | `address` of the platform `<name>` (upper case, `-` as `_`) |
    /// | `HJ212_GATEWAY_PLATFORM_<NAME>_KEY` | `key` of the platform `<name>` |
    /// | `HJ212_GATEWAY_DAU_ID` | `hardware.dau_id` |
    ///
    /// # Errors
    /// A value that does not parse.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e| ConfigError(format!("environment variable {name}={v:?}: {e}")))
        }
        macro_rules! env {
            ($name:literal, |$n:ident, $v:ident| $apply:expr) => {
                if let Some($v) = get($name) {
                    let $n = $name;
                    let _ = $n;
                    $apply;
                }
            };
        }
        env!("HJ212_GATEWAY_MN", |name, v| self.site.mn = v);
        env!("HJ212_GATEWAY_PW", |name, v| self.site.pw = v);
        env!("HJ212_GATEWAY_ST", |name, v| self.site.st = v);
        env!("HJ212_GATEWAY_UTC_OFFSET_MINUTES", |name, v| self.site.utc_offset_minutes = num(name, &v)?);
        env!("HJ212_GATEWAY_RTD_INTERVAL_SECS", |name, v| self.acquisition.rtd_interval_secs = num(name, &v)?);
        env!("HJ212_GATEWAY_MIN_INTERVAL_MINS", |name, v| self.acquisition.min_interval_mins = num(name, &v)?);
        env!("HJ212_GATEWAY_POLL_INTERVAL_MS", |name, v| self.acquisition.poll_interval_ms = num(name, &v)?);
        env!("HJ212_GATEWAY_STORE_PATH", |name, v| self.store.path = v.into());
        env!("HJ212_GATEWAY_RETENTION_DAYS", |name, v| self.store.retention_days = num(name, &v)?);
        env!("HJ212_GATEWAY_PACKET_LOG", |name, v| self.packet_log.path = v.into());
        env!("HJ212_GATEWAY_METRICS_ADDRESS", |name, v| self.metrics.address = v);
        env!("HJ212_GATEWAY_SHUTDOWN_TIMEOUT_SECS", |name, v| self.shutdown_timeout_secs = num(name, &v)?);
        env!("HJ212_GATEWAY_DAU_ID", |name, v| self.hardware.dau_id = v);
        for p in &mut self.platform {
            let prefix = format!("HJ212_GATEWAY_PLATFORM_{}", p.name.to_ascii_uppercase().replace('-', "_"));
            if let Some(v) = get(&format!("{prefix}_ADDRESS")) {
                p.address = v;
            }
            if let Some(v) = get(&format!("{prefix}_KEY")) {
                p.key = Some(v);
            }
        }
        Ok(())
    }

    /// The maintenance file: `store.maintenance_file`, or `maintenance.json` next to the store
    /// directory when that is empty.
    #[must_use]
    pub fn maintenance_file(&self) -> PathBuf {
        crate::maintenance::file_for(&self.store.path, &self.store.maintenance_file)
    }

    /// Checks every setting; the error names the first bad one.
    ///
    /// # Errors
    /// The path of the setting and why it is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.site;
        if s.mn.is_empty() || s.mn.len() > 24 || !s.mn.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("site.mn", "1 to 24 ASCII letters or digits"));
        }
        for (path, pw) in std::iter::once(("site.pw", &s.pw))
            .chain(self.platform.iter().filter_map(|p| p.password.as_ref().map(|pw| ("platform.password", pw))))
        {
            if pw.is_empty()
                || pw.len() > 9
                || pw.bytes().any(|b| matches!(b, b';' | b',' | b'&' | b'=') || !b.is_ascii_graphic())
            {
                return Err(bad(path, "1 to 9 printable characters without ; , & ="));
            }
        }
        if s.st.len() != 2 || !s.st.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("site.st", format!("{:?} is not a two-digit system code", s.st)));
        }
        if !(-720..=840).contains(&s.utc_offset_minutes) {
            return Err(bad("site.utc_offset_minutes", "must be between -720 and 840"));
        }
        let a = &self.acquisition;
        if !(1..=3600).contains(&a.rtd_interval_secs) {
            return Err(bad("acquisition.rtd_interval_secs", "must be 1–3600 (the standard allows 30–3600)"));
        }
        if !MIN_INTERVALS.contains(&a.min_interval_mins) {
            return Err(bad("acquisition.min_interval_mins", format!("must be one of {MIN_INTERVALS:?}")));
        }
        if !(10..=3_600_000).contains(&a.poll_interval_ms) {
            return Err(bad("acquisition.poll_interval_ms", "must be 10–3600000"));
        }
        if a.samples_per_minute == 0 || a.minutes_per_hour == 0 || a.hours_per_day == 0 {
            return Err(bad(
                "acquisition",
                "samples_per_minute, minutes_per_hour and hours_per_day must be at least 1",
            ));
        }
        for (i, port) in self.serial.iter().enumerate() {
            let path = format!("serial[{i}]");
            if port.device.as_os_str().is_empty() {
                return Err(bad(format!("{path}.device"), "missing"));
            }
            if port.baud == 0 {
                return Err(bad(format!("{path}.baud"), "must be positive"));
            }
            if !matches!(port.stop_bits, 1 | 2) {
                return Err(bad(format!("{path}.stop_bits"), "must be 1 or 2"));
            }
            if port.response_timeout_ms == 0 {
                return Err(bad(format!("{path}.response_timeout_ms"), "must be positive"));
            }
            if let Some(r) = &port.rs485 {
                if r.enabled && r.rts_on_send == r.rts_after_send {
                    return Err(bad(
                        format!("{path}.rs485"),
                        "exactly one of rts_on_send and rts_after_send must be true",
                    ));
                }
                if r.delay_rts_before_send_ms > 100 || r.delay_rts_after_send_ms > 100 {
                    return Err(bad(format!("{path}.rs485"), "delays are 0 to 100 ms (the kernel's limit)"));
                }
                if port.de_gpio.is_some() && r.enabled {
                    return Err(bad(
                        format!("{path}.de_gpio"),
                        "use either rs485 (RTS drives DE) or de_gpio, not both",
                    ));
                }
            }
            if port.de_gpio.as_ref().is_some_and(|g| g.value_path.as_os_str().is_empty()) {
                return Err(bad(format!("{path}.de_gpio.value_path"), "missing"));
            }
            let mut units: Vec<u8> = Vec::new();
            for (j, an) in port.analyzer.iter().enumerate() {
                let apath = format!("{path}.analyzer[{j}]");
                let profile = an.load_profile().map_err(|e| ConfigError(format!("{apath}.{e}")))?;
                if let Some(pol) = &an.pol_id {
                    if Code::try_new(pol).is_none() {
                        return Err(bad(format!("{apath}.pol_id"), "1 to 8 ASCII letters or digits"));
                    }
                }
                if let Some(e) = &an.electricity {
                    if e.codes.is_empty() {
                        return Err(bad(format!("{apath}.electricity.codes"), "map at least one quantity to a code"));
                    }
                    for (name, code) in &e.codes {
                        let at = format!("{apath}.electricity.codes.{name}");
                        let Some(q) = Electricity::quantity(name) else {
                            return Err(bad(at, "not a quantity: current_1, current_2, current_3, power or energy"));
                        };
                        if !profile.points.iter().any(|p| p.target == Target::Facility(q)) {
                            return Err(bad(at, "the analyzer's profile has no such point"));
                        }
                        if Code::try_new(code).is_none() {
                            return Err(bad(at, "1 to 8 ASCII letters or digits"));
                        }
                    }
                }
                let mut mine: Vec<u8> =
                    profile.points.iter().map(|p| p.unit).chain(profile.controls.iter().map(|c| c.unit)).collect();
                mine.sort_unstable();
                mine.dedup();
                if mine.iter().any(|u| units.contains(u)) {
                    return Err(bad(
                        format!("{apath}.unit"),
                        "another analyzer on this port uses the same unit address",
                    ));
                }
                units.extend(mine);
            }
        }
        if self.platform.is_empty() {
            return Err(bad("platform", "at least one platform is needed"));
        }
        for (i, p) in self.platform.iter().enumerate() {
            let path = format!("platform[{i}]");
            if p.name.is_empty() || !p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(bad(format!("{path}.name"), "letters, digits, - and _ only"));
            }
            if self.platform[..i].iter().any(|o| o.name == p.name) {
                return Err(bad(format!("{path}.name"), format!("{:?} is used twice", p.name)));
            }
            if !p.address.contains(':') {
                return Err(bad(format!("{path}.address"), format!("{:?} is not host:port", p.address)));
            }
            if !matches!(p.version, 2005 | 2017 | 2025) {
                return Err(bad(format!("{path}.version"), "must be 2017, 2025 or 2005"));
            }
            if p.encryption == Encryption::Sm4 {
                if p.version != 2025 {
                    return Err(bad(format!("{path}.encryption"), "SM4 needs version = 2025"));
                }
                if !p.key.as_deref().is_some_and(valid_key) {
                    return Err(bad(format!("{path}.key"), "SM4 needs a key of 16 printable ASCII characters"));
                }
            }
            if p.key.as_deref().is_some_and(|k| !valid_key(k)) {
                return Err(bad(format!("{path}.key"), "must be 16 printable ASCII characters"));
            }
            if p.key_rotation_days == 0 {
                return Err(bad(format!("{path}.key_rotation_days"), "must be at least 1"));
            }
            if p.register {
                if p.version != 2025 {
                    return Err(bad(format!("{path}.register"), "registration (CN 1001/1002) needs version = 2025"));
                }
                let id = &self.hardware.dau_id;
                if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad("hardware.dau_id", "registration needs 1 to 64 ASCII letters or digits"));
                }
            }
            if !(1..=99).contains(&p.over_time_secs) || !(1..=99).contains(&p.re_count) {
                return Err(bad(&path, "over_time_secs and re_count must be 1–99 (HJ 212-2017 C.1)"));
            }
            if p.replay_per_sec == 0 || p.max_in_flight == 0 {
                return Err(bad(&path, "replay_per_sec and max_in_flight must be at least 1"));
            }
            if p.reconnect_min_ms == 0 || p.reconnect_max_ms < p.reconnect_min_ms {
                return Err(bad(&path, "need 0 < reconnect_min_ms <= reconnect_max_ms"));
            }
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(bad("store.path", "missing"));
        }
        if self.store.retention_days == 0 {
            return Err(bad("store.retention_days", "must be at least 1"));
        }
        if self.store.max_queue_records < 100 {
            return Err(bad("store.max_queue_records", "must be at least 100"));
        }
        if !self.metrics.address.is_empty() && self.metrics.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("metrics.address", format!("{:?} is not ip:port", self.metrics.address)));
        }
        Ok(())
    }

    /// The MN a platform knows this site by: the one it assigned (CN 1002, kept in the store),
    /// else empty for a platform that registers the DAU, else `site.mn`.
    #[must_use]
    pub fn platform_mn(&self, p: &Platform, assigned: Option<String>) -> String {
        match assigned {
            Some(mn) if p.register => mn,
            _ if p.register => String::new(),
            _ => self.site.mn.clone(),
        }
    }

    /// The password a platform uses: its override, else the site's.
    #[must_use]
    pub fn platform_password<'a>(&'a self, p: &'a Platform) -> &'a str {
        p.password.as_deref().unwrap_or(&self.site.pw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_validates_and_matches_the_defaults() {
        let c = Config::parse(DEFAULT_CONFIG).unwrap();
        c.validate().unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::parse("[site]\nmnn = \"x\"\n").unwrap_err();
        assert!(e.0.contains("mnn"), "{e}");
        let mut c = Config::default();
        c.platform[0].version = 2016;
        assert!(c.validate().unwrap_err().0.starts_with("platform[0].version"));
        let c =
            Config::parse("[[serial]]\ndevice = \"/dev/x\"\n[[serial.analyzer]]\nname = \"a\"\nprofile = \"nope\"\n")
                .unwrap();
        assert!(c.validate().unwrap_err().0.contains("unknown built-in profile"));
    }

    #[test]
    fn profile_controls_follow_the_unit_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("hj212-gw-config-controls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let analyzer = |profile: Option<&str>, file: Option<PathBuf>, unit| Analyzer {
            name: "a".into(),
            profile: profile.map(Into::into),
            profile_file: file,
            unit,
            pol_id: None,
            electricity: None,
        };
        // A built-in surface-water profile moved to unit 7: its control register moves with it.
        let p = analyzer(Some("surface-water-cod"), None, Some(7)).load_profile().unwrap();
        assert_eq!(p.controls.len(), 5);
        assert!(p.controls.iter().all(|c| c.unit == 7 && c.address == 0x1200));
        let file = |name: &str, controls: &str| {
            let path = dir.join(name);
            let text = format!(
                "name = \"x\"\npoints = [{{ unit = 1, function = \"read_holding_registers\", address = 0, \
                 value = \"u16\", target = \"status\" }}]\ncontrols = [{controls}]\n"
            );
            std::fs::write(&path, text).unwrap();
            analyzer(None, Some(path), None).load_profile()
        };
        let ok = file(
            "ok.toml",
            "{ action = \"cleaning\", unit = 1, function = \"write_single_coil\", address = 3, value = 1 }",
        )
        .unwrap();
        assert_eq!(ok.controls[0].action, firmware::profile::ControlAction::Cleaning);
        let e =
            file("read.toml", "{ action = \"cleaning\", unit = 1, function = \"read_coils\", address = 3, value = 1 }")
                .unwrap_err()
                .0;
        assert!(e.starts_with("controls[0].function"), "{e}");
        let e = file(
            "twice.toml",
            "{ action = \"sample_now\", unit = 1, function = \"write_single_register\", address = 3, value = 1 }, \
             { action = \"sample_now\", unit = 1, function = \"write_single_register\", address = 3, value = 2 }",
        )
        .unwrap_err()
        .0;
        assert!(e.contains("sample_now is listed twice"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn electricity_codes_and_rs485_settings_are_checked() {
        let port = |extra: &str| {
            Config::parse(&format!(
                "[[serial]]\ndevice = \"/dev/x\"\n{extra}[[serial.analyzer]]\nname = \"m\"\nprofile = \"energy-meter\"\n"
            ))
            .unwrap()
        };
        let with = |codes: &str| {
            let mut c = port("");
            c.serial[0].analyzer[0].electricity = Some(Electricity {
                codes: codes
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            });
            c.validate()
        };
        assert!(with("current_1=d30106,power=d30406").is_ok());
        let e = with("voltage=d30106").unwrap_err().0;
        assert!(e.starts_with("serial[0].analyzer[0].electricity.codes.voltage"), "{e}");
        assert!(with("power=d30406-Rtd").unwrap_err().0.contains("ASCII letters or digits"));
        assert!(with("").unwrap_err().0.contains("at least one"));
        let mut c = port("");
        c.serial[0].analyzer[0].profile = Some("surface-water-cod".into());
        c.serial[0].analyzer[0].electricity = Some(Electricity { codes: [("power".into(), "d30406".into())].into() });
        assert!(c.validate().unwrap_err().0.contains("no such point"));

        assert!(port("[serial.rs485]\ndelay_rts_after_send_ms = 2\n").validate().is_ok());
        let e = port("[serial.rs485]\nrts_after_send = true\n").validate().unwrap_err().0;
        assert!(e.starts_with("serial[0].rs485") && e.contains("exactly one"), "{e}");
        assert!(port("[serial.rs485]\ndelay_rts_before_send_ms = 500\n").validate().unwrap_err().0.contains("100 ms"));
        let both = port("[serial.rs485]\n[serial.de_gpio]\nvalue_path = \"/sys/class/gpio/gpio5/value\"\n");
        assert!(both.validate().unwrap_err().0.starts_with("serial[0].de_gpio"));
        assert!(port("[serial.de_gpio]\nvalue_path = \"/sys/class/gpio/gpio5/value\"\n").validate().is_ok());
    }

    #[test]
    fn environment_overrides_win() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "HJ212_GATEWAY_MN" => Some("ABC123".into()),
            "HJ212_GATEWAY_PLATFORM_PLATFORM_ADDRESS" => Some("10.0.0.1:1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.site.mn, "ABC123");
        assert_eq!(c.platform[0].address, "10.0.0.1:1");
        assert!(c.apply_env(|k| (k == "HJ212_GATEWAY_RETENTION_DAYS").then(|| "x".into())).is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = Config::default();
        assert!(!format!("{c:?}").contains("123456"));
    }

    #[test]
    fn a_2025_platform_with_sm4_and_registration() {
        let text = "[hardware]\ndau_id = \"6970000000001ABCDEFG1234\"\n[[platform]]\nname = \"p\"\naddress = \"127.0.0.1:1\"\nversion = 2025\nencryption = \"sm4\"\ncipher_form = \"hex-text\"\nkey = \"Secret-Key-12345\"\nregister = true\n";
        let c = Config::parse(text).unwrap();
        c.validate().unwrap();
        let p = &c.platform[0];
        assert!(p.encrypts() && p.register);
        assert_eq!(p.cipher_form, CipherForm::HexText);
        assert_eq!(p.key_rotation_days, 90);
        assert_eq!(p.codec_version(), hj212_codec::Version::V2025);
        assert!(!format!("{c:?}").contains("Secret-Key"));
        assert_eq!(c.platform_mn(p, None), "");
        assert_eq!(c.platform_mn(p, Some("ABC".into())), "ABC");

        let mut bad = c.clone();
        bad.platform[0].key = Some("short".into());
        assert!(bad.validate().unwrap_err().0.starts_with("platform[0].key"));
        let mut bad = c.clone();
        bad.platform[0].version = 2017;
        assert!(bad.validate().unwrap_err().0.starts_with("platform[0].encryption"));
        let mut bad = c.clone();
        bad.hardware.dau_id.clear();
        assert!(bad.validate().unwrap_err().0.starts_with("hardware.dau_id"));
        let mut env = c;
        env.apply_env(|k| (k == "HJ212_GATEWAY_PLATFORM_P_KEY").then(|| "0123456789abcdef".into())).unwrap();
        assert_eq!(env.platform[0].key.as_deref(), Some("0123456789abcdef"));
    }
}
