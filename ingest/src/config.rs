//! The daemon's configuration: a TOML file, defaults in one place (`default.toml`), environment
//! overrides for the settings an operator changes most, and validation with messages that name
//! the setting.
//!
//! Order of precedence: environment variable, then the file, then the default. The defaults are
//! the values written in `ingest/default.toml`, which is also what `print-default-config` prints;
//! a test checks that the two agree.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hj212_codec::crc::CrcVariant;
use serde::{Deserialize, Deserializer};

use crate::quality::{PollutantSpec, QualityConfig, SiteEntry, StreamSpec};

/// The text of `ingest/default.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// A configuration that could not be read or is not valid (the binary exits with 78).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Instance name, used in the status topic.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Seconds allowed for a graceful shutdown.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// The sites' clock zone in minutes east of UTC.
    #[serde(default = "default_utc_offset")]
    pub utc_offset_minutes: i32,
    /// TCP listeners.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,
    /// Connection and traffic limits.
    #[serde(default)]
    pub limits: Limits,
    /// Frame checking.
    #[serde(default)]
    pub decode: Decode,
    /// Authentication policy.
    #[serde(default)]
    pub auth: Auth,
    /// The MQTT side.
    #[serde(default)]
    pub mqtt: Mqtt,
    /// The packet log.
    #[serde(default)]
    pub packet_log: PacketLog,
    /// The durable spool for broker outages.
    #[serde(default)]
    pub spool: Spool,
    /// Commands down to the sites.
    #[serde(default)]
    pub commands: Commands,
    /// Reassembly of sub-packets (`PNUM`/`PNO`) into whole messages.
    #[serde(default)]
    pub subpackets: Subpackets,
    /// The Prometheus exporter and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The data-quality engine (alerts, accounting, gap recovery).
    #[serde(default)]
    pub quality: Quality,
    /// HJ 212-2025 key management (rotated SM4 keys).
    #[serde(default)]
    pub keys: Keys,
    /// HJ 212-2025 registration of DAUs that have no MN yet (CN 1001 / 1002).
    #[serde(default)]
    pub registration: Registration,
    /// The site registry.
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
}

/// One TCP listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The address to bind, such as `0.0.0.0:9212`; port 0 picks a free port.
    pub addr: SocketAddr,
    /// `TCP_NODELAY` on the accepted connections. Off by default, as in Mosquitto
    /// (`set_tcp_nodelay false`): answers that are ready while an earlier one still waits for the
    /// DAU's TCP ACK leave in one segment instead of one each.
    #[serde(default)]
    pub tcp_nodelay: bool,
}

/// Connection and traffic limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections beyond this are closed right after accept.
    pub max_connections: usize,
    /// Seconds of silence before a connection is closed.
    pub idle_timeout_secs: u64,
    /// The largest declared data-segment length accepted.
    pub max_frame_len: usize,
    /// Bytes without a frame before a connection is closed.
    pub max_garbage_bytes: usize,
    /// Frames per minute accepted from one MN; 0 = no limit.
    pub max_frames_per_minute_per_mn: u32,
    /// Duplicate-detection window in seconds; 0 turns detection off.
    pub dedup_window_secs: u64,
    /// Seconds a 9014 waits for the broker's acknowledgement.
    pub ack_timeout_secs: u64,
    /// Seconds a started frame may take to complete (slowloris guard).
    pub frame_timeout_secs: u64,
    /// Answers queued for one connection, at most: a client that does not read them is closed.
    pub max_queued_answers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout_secs: 600,
            max_frame_len: hj212_codec::frame::MAX_DATA_LEN_FIELD,
            max_garbage_bytes: 16384,
            max_frames_per_minute_per_mn: 600,
            dedup_window_secs: 600,
            ack_timeout_secs: 60,
            frame_timeout_secs: 60,
            max_queued_answers: 1024,
        }
    }
}

/// How frames are judged.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// Accept every readable deviation and count it.
    #[default]
    Lenient,
    /// Refuse every deviation from HJ 212-2017.
    Strict,
}

/// Frame checking.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Decode {
    /// Lenient or strict.
    pub mode: DecodeMode,
}

/// What happens to a frame that fails authentication.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefusalPolicy {
    /// Drop it (logged and counted).
    #[default]
    Reject,
    /// Publish it to `{prefix}/quarantine/{mn}`, unanswered.
    Quarantine,
}

/// What happens to a frame from an MN that is not in the registry.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMnPolicy {
    /// Drop it.
    #[default]
    Reject,
    /// Publish it to `{prefix}/quarantine/{mn}`, unanswered.
    Quarantine,
    /// Treat it as a known site with no password check (trials only).
    Accept,
}

/// Authentication policy.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Wrong password or ST.
    pub policy: RefusalPolicy,
    /// MN not in the registry.
    pub unknown_mn: UnknownMnPolicy,
}

/// The MQTT side.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Topic prefix.
    pub prefix: String,
    /// External broker host.
    pub host: Option<String>,
    /// External broker port.
    pub port: u16,
    /// Run rumqttd in-process; `None` means "when no host is set".
    pub embedded: Option<bool>,
    /// Port of the embedded broker on 127.0.0.1; 0 picks a free port.
    pub embedded_port: u16,
    /// Client id; `None` means `hj212-ingest-{instance}`.
    pub client_id: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password.
    pub password: Option<String>,
    /// MQTT keep-alive in seconds.
    pub keep_alive_secs: u64,
    /// Published messages not yet acknowledged, at most.
    pub max_unacked: usize,
    /// Publishes on the wire awaiting their PUBACK at once (the MQTT in-flight window), at most
    /// `max_unacked`. Brokers that limit it per connection (AWS IoT Core: 100) need it lowered.
    pub inflight: u16,
    /// Connections to the broker: every topic, and all of one site's data, always goes over the
    /// same one (see [`crate::ledger`]). Lane `i > 0` connects as `{client_id}-{i}`.
    pub connections: usize,
    /// TCP_NODELAY on the broker connections. Off (the default), the kernel gathers the
    /// publishes written while earlier ones are unacknowledged into fewer segments (Nagle),
    /// which costs less CPU per message under load; the broker's PUBACKs carry the ACKs back,
    /// so a publish waits about one round trip at most. On, each publish leaves at once.
    pub tcp_nodelay: bool,
    /// TLS to the external broker (`[mqtt.tls]`).
    pub tls: MqttTls,
}

impl fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mqtt")
            .field("prefix", &self.prefix)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("embedded", &self.embedded)
            .field("embedded_port", &self.embedded_port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("max_unacked", &self.max_unacked)
            .field("inflight", &self.inflight)
            .field("connections", &self.connections)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            prefix: "hj212".into(),
            host: None,
            port: 1883,
            embedded: None,
            embedded_port: 1883,
            client_id: None,
            username: None,
            password: None,
            keep_alive_secs: 30,
            max_unacked: 10_000,
            inflight: 1000,
            connections: 1,
            tcp_nodelay: false,
            tls: MqttTls::default(),
        }
    }
}

impl Mqtt {
    /// True when the embedded broker runs.
    #[must_use]
    pub fn embedded(&self) -> bool {
        self.embedded.unwrap_or_else(|| self.host.is_none())
    }
}

/// TLS to the external broker (`[mqtt.tls]`). The files are read when the daemon starts (and by
/// `check-config`); their contents are never logged.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTls {
    /// Connect over TLS (the port is still `mqtt.port`: set it, usually to 8883).
    pub enabled: bool,
    /// PEM file with the CA certificates that may sign the broker's certificate; empty: the
    /// system's trust store.
    pub ca_file: PathBuf,
    /// PEM file with the client certificate chain, for a broker that asks for one (mutual TLS);
    /// needs `key_file`.
    pub cert_file: PathBuf,
    /// PEM file with the private key of `cert_file` (PKCS #8, PKCS #1 or SEC1).
    pub key_file: PathBuf,
    /// The name the broker's certificate must be valid for; empty: `mqtt.host`.
    pub server_name: String,
}

impl MqttTls {
    /// The rustls client configuration (ring crypto, TLS 1.2 and 1.3, the web PKI checks), or
    /// `None` when TLS is off. `host` is the broker host, the name checked when `server_name` is
    /// empty.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM item, the key does not match the certificate,
    /// a name is not usable as a TLS server name, or (without `ca_file`) the system trust store is
    /// empty.
    pub fn client_config(&self, host: &str) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        fn read(setting: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
            std::fs::read(path).map_err(|e| ConfigError(format!("mqtt.tls.{setting} = {path:?}: cannot read: {e}")))
        }
        fn certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
            let pem = read(setting, path)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError(format!("mqtt.tls.{setting} = {path:?}: not readable as PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ConfigError(format!(
                    "mqtt.tls.{setting} = {path:?}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
                )));
            }
            Ok(certs)
        }
        fn name(setting: &str, value: &str) -> Result<ServerName<'static>, ConfigError> {
            ServerName::try_from(value.to_string())
                .map_err(|_| ConfigError(format!("{setting} = {value:?}: not a DNS name or IP address usable for TLS")))
        }

        if !self.enabled {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        if self.ca_file.as_os_str().is_empty() {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let why = native.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(ConfigError(format!(
                    "mqtt.tls: no ca_file, and no CA certificate found in the system trust store{why}; set mqtt.tls.ca_file"
                )));
            }
        } else {
            for (i, cert) in certs("ca_file", &self.ca_file)?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    ConfigError(format!("mqtt.tls.ca_file = {:?}: certificate #{}: {e}", self.ca_file, i + 1))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("mqtt.tls: {e}")))?;
        let builder = if self.server_name.is_empty() {
            name("mqtt.host", host)?;
            builder.with_root_certificates(roots)
        } else {
            let name = name("mqtt.tls.server_name", &self.server_name)?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError(format!("mqtt.tls: {e}")))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
        };
        let config = match (self.cert_file.as_os_str().is_empty(), self.key_file.as_os_str().is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let chain = certs("cert_file", &self.cert_file)?;
                // The key's bytes never reach a message: only the kind of problem is reported.
                let key = PrivateKeyDer::from_pem_slice(&read("key_file", &self.key_file)?).map_err(|e| {
                    let why = match e {
                        rustls::pki_types::pem::Error::NoItemsFound => {
                            "no PEM private key (PKCS #8, PKCS #1 or SEC1) in it"
                        }
                        _ => "not readable as PEM",
                    };
                    ConfigError(format!("mqtt.tls.key_file = {:?}: {why}", self.key_file))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    ConfigError(format!(
                        "mqtt.tls.cert_file = {:?} and key_file = {:?}: not a usable pair: {e}",
                        self.cert_file, self.key_file
                    ))
                })?
            }
            _ => return Err(ConfigError("mqtt.tls: cert_file and key_file go together (mutual TLS)".into())),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// The web PKI's checks of the broker's certificate, against a configured name instead of the host
/// that was dialled (`mqtt.tls.server_name`, for a broker reached by an address its certificate
/// does not name).
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _dialled: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// When a frame that asks for an answer (Flag A=1) gets its 9014.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AckAfter {
    /// After the broker's PUBACK.
    #[default]
    Puback,
    /// After the frame is durably in the spool (written and flushed).
    Spool,
}

/// What the spool does when it holds `max_bytes` already.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFullPolicy {
    /// Refuse new frames: those that ask for an answer stay unanswered (the site resends them),
    /// the others are dropped and counted.
    #[default]
    Refuse,
    /// Delete the oldest spooled messages to make room (they are lost, and counted).
    DropOldest,
}

/// The durable spool (sled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spool {
    /// The sled directory; empty turns the spool off.
    pub path: PathBuf,
    /// The most bytes of messages held.
    pub max_bytes: u64,
    /// What happens when the spool is full.
    pub on_full: SpoolFullPolicy,
    /// Also spool frames that ask for a 9014 (always true when `ack_after = "spool"`).
    pub acked_uploads: bool,
    /// When a 9014 is sent.
    pub ack_after: AckAfter,
    /// Spooled messages in the MQTT ledger at once, at most.
    pub window: usize,
}

impl Default for Spool {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/hj212/ingest-spool"),
            max_bytes: 1024 * 1024 * 1024,
            on_full: SpoolFullPolicy::Refuse,
            acked_uploads: false,
            ack_after: AckAfter::Puback,
            window: 1000,
        }
    }
}

impl Spool {
    /// True when a spool path is set.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }
}

/// Commands down to the sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Commands {
    /// Subscribe to `{prefix}/cmd/+` and forward commands to connected sites.
    pub enabled: bool,
    /// Seconds a command may wait for its 9012 before it is reported as timed out.
    pub timeout_secs: u64,
    /// Commands waiting for their result per site, at most.
    pub max_pending_per_site: usize,
    /// What to do with a command for a site that is not connected to this instance.
    pub absent: AbsentSite,
}

impl Default for Commands {
    fn default() -> Self {
        Self { enabled: true, timeout_secs: 60, max_pending_per_site: 16, absent: AbsentSite::Error }
    }
}

/// What an instance does with a command for a site that is not connected to it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AbsentSite {
    /// Publish `error: site not connected` on the reply topic (one instance).
    #[default]
    Error,
    /// Say nothing: in a cluster every instance gets every command, and only the one the site is
    /// connected to answers; when none is, the caller sees no reply and relies on its timeout.
    Silent,
}

/// Reassembly of sub-packets (HJ 212-2017 Table 3 `PNUM`/`PNO`, Appendix C.47–C.50).
///
/// Each part is published on its own as it arrives (and answered on its own); once every part of
/// a message is here, the whole message is published once more on `{prefix}/{mn}/{cn}/whole`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Subpackets {
    /// Reassemble and publish whole messages.
    pub enabled: bool,
    /// Messages being reassembled at once, all sites together.
    pub max_groups: usize,
    /// Messages being reassembled at once for one MN.
    pub max_groups_per_site: usize,
    /// Bytes of part text held, all messages together.
    pub max_bytes: usize,
    /// A message none of whose missing parts arrived for this many seconds is dropped.
    pub expire_secs: u64,
}

impl Default for Subpackets {
    fn default() -> Self {
        Self { enabled: true, max_groups: 1024, max_groups_per_site: 4, max_bytes: 16 * 1024 * 1024, expire_secs: 600 }
    }
}

/// The Prometheus exporter and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The HTTP address for `/metrics` and `/healthz`; empty turns it off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9213".into() }
    }
}

impl MetricsConfig {
    /// The parsed address, or `None` when off.
    ///
    /// # Errors
    /// The address does not parse.
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| ConfigError(format!("metrics.listen = {:?}: {e}", self.listen)))
    }
}

/// The packet log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacketLog {
    /// The file; empty turns the log off.
    pub path: PathBuf,
    /// Rotate when the file passes this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for PacketLog {
    fn default() -> Self {
        Self { path: PathBuf::from("/var/log/hj212/ingest-packets.log"), max_bytes: 64 * 1024 * 1024, keep: 5 }
    }
}

/// Which site-information code table applies to an MN.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CodeTable {
    /// HJ 212-2017 Table B.10.
    #[default]
    National,
    /// The Hebei extension, falling back to the national table.
    Hebei,
}

impl CodeTable {
    /// A short stable name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::National => "national",
            Self::Hebei => "hebei",
        }
    }
}

/// One registered site.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// The device identifier.
    pub mn: String,
    /// The access password.
    pub password: String,
    /// ST values the site may use; empty means any.
    #[serde(default)]
    pub allowed_st: Vec<String>,
    /// The site-information code table.
    #[serde(default)]
    pub code_table: CodeTable,
    /// `auto`, or a CRC variant name (`hj212`, `modbus`, `modbus-le`).
    #[serde(default = "default_crc")]
    pub crc: String,
    /// A display name for reports (data quality).
    #[serde(default)]
    pub name: String,
    /// `YYYYMMDDhhmmss` (site civil time): from when data are expected. Default: when the daemon
    /// first heard of the MN.
    #[serde(default)]
    pub active_from: Option<String>,
    /// The data streams expected, with their intervals (data quality). Empty: the
    /// `quality.accounting.default_cns`, intervals announced or learnt.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// The pollutants expected in every record, with their emission limits (data quality).
    #[serde(default)]
    pub pollutants: Vec<PollutantSpec>,
    /// Treatment-facility codes (`SB1`, …) whose power matters. Empty: every one reported.
    #[serde(default)]
    pub facilities: Vec<String>,
    /// HJ 212-2025 `CP` encryption for this site: `off` or `sm4`.
    #[serde(default)]
    pub encryption: Encryption,
    /// The site's initial SM4 key: 16 ASCII characters (required with `sm4`). Never logged or
    /// published; `Debug` masks it. A key rotated by a 1014 exchange takes over from it.
    #[serde(default)]
    pub key: String,
    /// How ciphertext is written in frames sent to the site (default `binary`; received frames
    /// are recognised in either form).
    #[serde(default)]
    pub cipher_form: Option<CipherFormSetting>,
}

/// Whether a site's `CP` is encrypted (HJ 212-2025 §6.4).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Plain text.
    #[default]
    Off,
    /// SM4-ECB without padding, for the commands that must be encrypted.
    Sm4,
}

/// How ciphertext is written on the wire (see `hj212_codec::crypt::CipherForm`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CipherFormSetting {
    /// Raw ciphertext bytes; length and CRC of the plaintext (the standard's reading).
    Binary,
    /// `{0xE4,0x3E,…}` text; length and CRC of the wire text (compatibility).
    #[serde(alias = "hex-text")]
    HexText,
}

impl CipherFormSetting {
    /// The codec's form.
    #[must_use]
    pub const fn form(self) -> hj212_codec::crypt::CipherForm {
        match self {
            Self::Binary => hj212_codec::crypt::CipherForm::Binary,
            Self::HexText => hj212_codec::crypt::CipherForm::HexText,
        }
    }
}

/// HJ 212-2025 key management (`[keys]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// The JSON file holding the keys set by 1014 exchanges (mode 0600); empty keeps them in
    /// memory only (the registry key is used again after a restart).
    pub state_path: PathBuf,
    /// Seconds the previous key still decrypts after a rotation.
    pub grace_secs: u64,
    /// Days after which the platform starts a key exchange itself (HJ 212-2025 §6.4.3 asks for
    /// 90); 0 turns platform-initiated rotation off.
    pub rotation_days: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Self { state_path: PathBuf::from("/var/lib/hj212/ingest-keys.json"), grace_secs: 86_400, rotation_days: 90 }
    }
}

/// How DAUs without an MN are registered (`[registration]`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// A 1001 with an empty MN goes through authentication like any frame (and is refused).
    #[default]
    Off,
    /// Assign `prefix` + a persisted counter, padded to 24 characters.
    Auto,
    /// Assign from `table` (DAU id `i23005` → MN); unknown DAUs are refused.
    Table,
}

/// HJ 212-2025 registration (`[registration]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Registration {
    /// `off`, `auto` or `table`.
    pub mode: RegistrationMode,
    /// `auto`: the MN prefix (hex digits 0-9 A-F, fewer than 24).
    pub prefix: String,
    /// `auto`: the JSON file with the counter and the MNs assigned so far; empty keeps them in
    /// memory only.
    pub state_path: PathBuf,
    /// `table`: DAU id (`i23005-Info`) → MN.
    pub table: std::collections::BTreeMap<String, String>,
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Off,
            prefix: String::new(),
            state_path: PathBuf::from("/var/lib/hj212/ingest-registration.json"),
            table: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for RegistryEntry {
    fn default() -> Self {
        Self {
            mn: String::new(),
            password: String::new(),
            allowed_st: Vec::new(),
            code_table: CodeTable::National,
            crc: default_crc(),
            name: String::new(),
            active_from: None,
            streams: Vec::new(),
            pollutants: Vec::new(),
            facilities: Vec::new(),
            encryption: Encryption::Off,
            key: String::new(),
            cipher_form: None,
        }
    }
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("mn", &self.mn)
            .field("password", &"******")
            .field("allowed_st", &self.allowed_st)
            .field("code_table", &self.code_table)
            .field("crc", &self.crc)
            .field("name", &self.name)
            .field("active_from", &self.active_from)
            .field("streams", &self.streams)
            .field("pollutants", &self.pollutants)
            .field("facilities", &self.facilities)
            .field("encryption", &self.encryption)
            .field("key", &if self.key.is_empty() { "" } else { "****************" })
            .field("cipher_form", &self.cipher_form)
            .finish()
    }
}

impl RegistryEntry {
    /// The CRC variant fixed for this site, or `None` for auto-detection.
    #[must_use]
    pub fn crc_variant(&self) -> Option<CrcVariant> {
        CrcVariant::from_name(&self.crc)
    }
}

fn default_instance() -> String {
    "ingest".into()
}
const fn default_shutdown_timeout() -> u64 {
    30
}
const fn default_utc_offset() -> i32 {
    480
}
fn default_listeners() -> Vec<Listener> {
    vec![Listener { addr: SocketAddr::from(([0, 0, 0, 0], 9212)), tcp_nodelay: false }]
}
fn default_crc() -> String {
    "auto".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instance: default_instance(),
            shutdown_timeout_secs: default_shutdown_timeout(),
            utc_offset_minutes: default_utc_offset(),
            listeners: default_listeners(),
            limits: Limits::default(),
            decode: Decode::default(),
            auth: Auth::default(),
            mqtt: Mqtt::default(),
            packet_log: PacketLog::default(),
            spool: Spool::default(),
            commands: Commands::default(),
            subpackets: Subpackets::default(),
            metrics: MetricsConfig::default(),
            quality: Quality::default(),
            keys: Keys::default(),
            registration: Registration::default(),
            registry: Vec::new(),
        }
    }
}

impl Config {
    /// Parses TOML text (no environment overrides, no validation).
    ///
    /// # Errors
    /// The TOML is malformed or names an unknown setting.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))
    }

    /// Reads a file (or the built-in defaults when `path` is `None`), applies the environment
    /// overrides and validates the result.
    ///
    /// # Errors
    /// The file cannot be read, does not parse, or is not valid.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", p.display(), e.0)))?
            }
            None => Self::from_toml(DEFAULT_CONFIG)?,
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `HJ212_INGEST_*` overrides, reading variables through `get`.
    ///
    /// # Errors
    /// A variable whose value cannot be read as the setting's type.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e| ConfigError(format!("environment variable {name}={v:?}: {e}")))
        }
        fn choice<T: serde::de::DeserializeOwned>(name: &str, v: &str) -> Result<T, ConfigError> {
            T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v.trim()))
                .map_err(|e| ConfigError(format!("environment variable {name}={v:?}: {e}")))
        }
        macro_rules! env {
            ($key:literal, |$name:ident, $v:ident| $apply:expr) => {
                if let Some($v) = get($key) {
                    let $v = $v.as_str();
                    let $name = $key;
                    let _ = $name;
                    $apply;
                }
            };
        }
        env!("HJ212_INGEST_INSTANCE", |name, v| self.instance = v.to_string());
        env!("HJ212_INGEST_SHUTDOWN_TIMEOUT_SECS", |name, v| self.shutdown_timeout_secs = parse(name, v)?);
        env!("HJ212_INGEST_UTC_OFFSET_MINUTES", |name, v| self.utc_offset_minutes = parse(name, v)?);
        env!("HJ212_INGEST_LISTEN", |name, v| {
            self.listeners = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse(name, s).map(|addr| Listener { addr, tcp_nodelay: false }))
                .collect::<Result<_, _>>()?;
        });
        env!("HJ212_INGEST_TCP_NODELAY", |name, v| {
            let on: bool = parse(name, v)?;
            self.listeners.iter_mut().for_each(|l| l.tcp_nodelay = on);
        });
        env!("HJ212_INGEST_MAX_CONNECTIONS", |name, v| self.limits.max_connections = parse(name, v)?);
        env!("HJ212_INGEST_IDLE_TIMEOUT_SECS", |name, v| self.limits.idle_timeout_secs = parse(name, v)?);
        env!("HJ212_INGEST_MAX_FRAME_LEN", |name, v| self.limits.max_frame_len = parse(name, v)?);
        env!("HJ212_INGEST_MAX_GARBAGE_BYTES", |name, v| self.limits.max_garbage_bytes = parse(name, v)?);
        env!("HJ212_INGEST_MAX_FRAMES_PER_MINUTE_PER_MN", |name, v| self.limits.max_frames_per_minute_per_mn =
            parse(name, v)?);
        env!("HJ212_INGEST_DEDUP_WINDOW_SECS", |name, v| self.limits.dedup_window_secs = parse(name, v)?);
        env!("HJ212_INGEST_ACK_TIMEOUT_SECS", |name, v| self.limits.ack_timeout_secs = parse(name, v)?);
        env!("HJ212_INGEST_DECODE_MODE", |name, v| self.decode.mode = choice(name, v)?);
        env!("HJ212_INGEST_AUTH_POLICY", |name, v| self.auth.policy = choice(name, v)?);
        env!("HJ212_INGEST_UNKNOWN_MN", |name, v| self.auth.unknown_mn = choice(name, v)?);
        env!("HJ212_INGEST_MQTT_PREFIX", |name, v| self.mqtt.prefix = v.to_string());
        env!("HJ212_INGEST_MQTT_HOST", |name, v| self.mqtt.host = Some(v.to_string()).filter(|h| !h.is_empty()));
        env!("HJ212_INGEST_MQTT_PORT", |name, v| self.mqtt.port = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_EMBEDDED", |name, v| self.mqtt.embedded = Some(parse(name, v)?));
        env!("HJ212_INGEST_MQTT_EMBEDDED_PORT", |name, v| self.mqtt.embedded_port = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_CLIENT_ID", |name, v| self.mqtt.client_id = Some(v.to_string()));
        env!("HJ212_INGEST_MQTT_USERNAME", |name, v| self.mqtt.username = Some(v.to_string()));
        env!("HJ212_INGEST_MQTT_PASSWORD", |name, v| self.mqtt.password = Some(v.to_string()));
        env!("HJ212_INGEST_MQTT_MAX_UNACKED", |name, v| self.mqtt.max_unacked = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_INFLIGHT", |name, v| self.mqtt.inflight = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_TCP_NODELAY", |name, v| self.mqtt.tcp_nodelay = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_CONNECTIONS", |name, v| self.mqtt.connections = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_TLS", |name, v| self.mqtt.tls.enabled = parse(name, v)?);
        env!("HJ212_INGEST_MQTT_TLS_CA_FILE", |name, v| self.mqtt.tls.ca_file = PathBuf::from(v));
        env!("HJ212_INGEST_MQTT_TLS_CERT_FILE", |name, v| self.mqtt.tls.cert_file = PathBuf::from(v));
        env!("HJ212_INGEST_MQTT_TLS_KEY_FILE", |name, v| self.mqtt.tls.key_file = PathBuf::from(v));
        env!("HJ212_INGEST_MQTT_TLS_SERVER_NAME", |name, v| self.mqtt.tls.server_name = v.to_string());
        env!("HJ212_INGEST_PACKET_LOG", |name, v| self.packet_log.path = PathBuf::from(v));
        env!("HJ212_INGEST_FRAME_TIMEOUT_SECS", |name, v| self.limits.frame_timeout_secs = parse(name, v)?);
        env!("HJ212_INGEST_SPOOL", |name, v| self.spool.path = PathBuf::from(v));
        env!("HJ212_INGEST_SPOOL_MAX_BYTES", |name, v| self.spool.max_bytes = parse(name, v)?);
        env!("HJ212_INGEST_SPOOL_ON_FULL", |name, v| self.spool.on_full = choice(name, v)?);
        env!("HJ212_INGEST_SPOOL_ACKED_UPLOADS", |name, v| self.spool.acked_uploads = parse(name, v)?);
        env!("HJ212_INGEST_ACK_AFTER", |name, v| self.spool.ack_after = choice(name, v)?);
        env!("HJ212_INGEST_COMMANDS", |name, v| self.commands.enabled = parse(name, v)?);
        env!("HJ212_INGEST_COMMAND_TIMEOUT_SECS", |name, v| self.commands.timeout_secs = parse(name, v)?);
        env!("HJ212_INGEST_COMMANDS_ABSENT", |name, v| self.commands.absent = choice(name, v)?);
        env!("HJ212_INGEST_MAX_QUEUED_ANSWERS", |name, v| self.limits.max_queued_answers = parse(name, v)?);
        env!("HJ212_INGEST_SUBPACKETS", |name, v| self.subpackets.enabled = parse(name, v)?);
        env!("HJ212_INGEST_SUBPACKET_EXPIRE_SECS", |name, v| self.subpackets.expire_secs = parse(name, v)?);
        env!("HJ212_INGEST_METRICS_LISTEN", |name, v| self.metrics.listen = v.to_string());
        env!("HJ212_INGEST_QUALITY", |name, v| self.quality.enabled = parse(name, v)?);
        env!("HJ212_INGEST_QUALITY_STATE", |name, v| self.quality.state_path = PathBuf::from(v));
        env!("HJ212_INGEST_KEYS_STATE", |name, v| self.keys.state_path = PathBuf::from(v));
        env!("HJ212_INGEST_REGISTRATION_STATE", |name, v| self.registration.state_path = PathBuf::from(v));
        Ok(())
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first problem found, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        if self.instance.is_empty() || self.instance.contains(['/', '+', '#']) {
            return bad(format!("instance = {:?}: must be non-empty and contain no '/', '+' or '#'", self.instance));
        }
        if self.listeners.is_empty() {
            return bad("listeners: at least one [[listeners]] addr is required".into());
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections must be at least 1".into());
        }
        if self.limits.idle_timeout_secs == 0 {
            return bad("limits.idle_timeout_secs must be at least 1".into());
        }
        if !(64..=hj212_codec::frame::MAX_DATA_LEN_FIELD).contains(&self.limits.max_frame_len) {
            return bad(format!("limits.max_frame_len = {}: must be between 64 and 9999", self.limits.max_frame_len));
        }
        if self.limits.max_garbage_bytes == 0 {
            return bad("limits.max_garbage_bytes must be at least 1".into());
        }
        if self.limits.ack_timeout_secs == 0 {
            return bad("limits.ack_timeout_secs must be at least 1".into());
        }
        if self.limits.max_queued_answers == 0 {
            return bad("limits.max_queued_answers must be at least 1".into());
        }
        let sp = &self.subpackets;
        if sp.max_groups == 0 || sp.max_groups_per_site == 0 || sp.max_groups_per_site > sp.max_groups {
            return bad(format!(
                "subpackets.max_groups_per_site = {} and max_groups = {}: need 1 <= max_groups_per_site <= max_groups",
                sp.max_groups_per_site, sp.max_groups
            ));
        }
        if sp.max_bytes < 4096 {
            return bad(format!("subpackets.max_bytes = {}: must be at least 4096", sp.max_bytes));
        }
        if sp.expire_secs == 0 {
            return bad("subpackets.expire_secs must be at least 1".into());
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return bad(format!("utc_offset_minutes = {}: must be between -840 and 840", self.utc_offset_minutes));
        }
        if self.mqtt.prefix.is_empty() || self.mqtt.prefix.contains(['+', '#']) || self.mqtt.prefix.ends_with('/') {
            return bad(format!(
                "mqtt.prefix = {:?}: must be non-empty, without '+', '#' or a trailing '/'",
                self.mqtt.prefix
            ));
        }
        if !self.mqtt.embedded() && self.mqtt.host.is_none() {
            return bad("mqtt: embedded = false needs mqtt.host".into());
        }
        if self.mqtt.max_unacked == 0 || self.mqtt.max_unacked > u16::MAX as usize - 1 {
            return bad(format!("mqtt.max_unacked = {}: must be between 1 and 65534", self.mqtt.max_unacked));
        }
        if self.mqtt.inflight == 0 || usize::from(self.mqtt.inflight) > self.mqtt.max_unacked {
            return bad(format!(
                "mqtt.inflight = {}: must be between 1 and mqtt.max_unacked ({})",
                self.mqtt.inflight, self.mqtt.max_unacked
            ));
        }
        if self.mqtt.connections == 0 || self.mqtt.connections > 64 {
            return bad(format!("mqtt.connections = {}: must be between 1 and 64", self.mqtt.connections));
        }
        if self.mqtt.connections > self.mqtt.max_unacked {
            return bad(format!(
                "mqtt.connections = {}: must not exceed mqtt.max_unacked ({}), which the connections share",
                self.mqtt.connections, self.mqtt.max_unacked
            ));
        }
        if self.mqtt.keep_alive_secs < 5 {
            return bad(format!("mqtt.keep_alive_secs = {}: must be at least 5", self.mqtt.keep_alive_secs));
        }
        self.validate_tls()?;
        if self.limits.frame_timeout_secs == 0 {
            return bad("limits.frame_timeout_secs must be at least 1".into());
        }
        if self.spool.ack_after == AckAfter::Spool && !self.spool.enabled() {
            return bad("spool.ack_after = \"spool\" needs spool.path".into());
        }
        if self.spool.enabled() && self.spool.max_bytes < 64 * 1024 {
            return bad(format!("spool.max_bytes = {}: must be at least 65536", self.spool.max_bytes));
        }
        if self.spool.window == 0 || self.spool.window > self.mqtt.max_unacked {
            return bad(format!(
                "spool.window = {}: must be between 1 and mqtt.max_unacked ({})",
                self.spool.window, self.mqtt.max_unacked
            ));
        }
        if self.commands.timeout_secs == 0 || self.commands.max_pending_per_site == 0 {
            return bad("commands.timeout_secs and commands.max_pending_per_site must be at least 1".into());
        }
        self.metrics.addr()?;
        self.validate_registration()?;
        validate_registry(&self.registry)?;
        self.quality.validate(&self.registry)
    }

    /// `[mqtt.tls]`: settings only with `enabled`, an external broker, and files that load.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.mqtt.tls;
        if !tls.enabled {
            if *tls != MqttTls::default() {
                return Err(ConfigError(
                    "mqtt.tls: ca_file, cert_file, key_file and server_name need mqtt.tls.enabled = true".into(),
                ));
            }
            return Ok(());
        }
        if self.mqtt.embedded() {
            return Err(ConfigError(
                "mqtt.tls.enabled = true needs an external broker (mqtt.host, without embedded = true)".into(),
            ));
        }
        tls.client_config(self.mqtt.host.as_deref().unwrap_or_default()).map(drop)
    }

    fn validate_registration(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        let r = &self.registration;
        let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        if r.mode == RegistrationMode::Auto && (r.prefix.is_empty() || r.prefix.len() > 20 || !hex(&r.prefix)) {
            return bad(format!(
                "registration.prefix = {:?}: mode \"auto\" needs 1 to 20 characters 0-9 A-F",
                r.prefix
            ));
        }
        for (dau, mn) in &r.table {
            if dau.is_empty() || mn.is_empty() || mn.contains(['/', '+', '#', ';', '&', '=', ',']) {
                return bad(format!("registration.table: {dau:?} = {mn:?}: empty, or not usable as an MN"));
            }
        }
        Ok(())
    }

    /// The data-quality engine's configuration: `[quality]` with the registry's sites added.
    #[must_use]
    pub fn quality_config(&self) -> QualityConfig {
        let mut q = self.quality.engine.clone();
        q.sites.extend(self.registry.iter().map(|e| SiteEntry {
            mn: e.mn.clone(),
            name: e.name.clone(),
            active_from: e.active_from.clone(),
            streams: e.streams.clone(),
            pollutants: e.pollutants.clone(),
            facilities: e.facilities.clone(),
        }));
        q
    }

    /// The MQTT client id.
    #[must_use]
    pub fn client_id(&self) -> String {
        self.mqtt.client_id.clone().unwrap_or_else(|| format!("hj212-ingest-{}", self.instance))
    }
}

/// Checks registry entries: MNs usable in topics and unique, passwords set, CRC names known.
///
/// # Errors
/// The first problem found, naming the entry.
pub fn validate_registry(registry: &[RegistryEntry]) -> Result<(), ConfigError> {
    let bad = |msg: String| Err(ConfigError(msg));
    {
        let mut seen = HashSet::new();
        for (i, e) in registry.iter().enumerate() {
            if e.mn.is_empty() || e.mn.contains(['/', '+', '#', ';', '&']) {
                return bad(format!(
                    "registry[{i}].mn = {:?}: must be non-empty, without '/', '+', '#', ';' or '&'",
                    e.mn
                ));
            }
            if !seen.insert(e.mn.as_str()) {
                return bad(format!("registry[{i}].mn = {:?}: listed twice", e.mn));
            }
            if e.password.is_empty() {
                return bad(format!("registry[{i}] (mn {}): password must not be empty", e.mn));
            }
            if e.crc != "auto" && e.crc_variant().is_none() {
                return bad(format!("registry[{i}].crc = {:?}: expected auto, hj212, modbus or modbus-le", e.crc));
            }
            match e.encryption {
                Encryption::Sm4 if !(e.key.len() == 16 && e.key.is_ascii()) => {
                    return bad(format!(
                        "registry[{i}].key (mn {}): encryption = \"sm4\" needs 16 ASCII characters",
                        e.mn
                    ));
                }
                Encryption::Off if !e.key.is_empty() || e.cipher_form.is_some() => {
                    return bad(format!("registry[{i}] (mn {}): key and cipher_form need encryption = \"sm4\"", e.mn));
                }
                _ => {}
            }
            validate_site(&format!("registry[{i}]"), e.active_from.as_deref(), &e.streams, &e.pollutants)?;
        }
    }
    Ok(())
}

/// Checks the data-quality fields of a site: a readable `active_from`, known stream CNs with
/// positive intervals, listed once, and pollutant codes listed once with sensible limits.
fn validate_site(
    at: &str,
    active_from: Option<&str>,
    streams: &[StreamSpec],
    pollutants: &[PollutantSpec],
) -> Result<(), ConfigError> {
    let bad = |msg: String| Err(ConfigError(msg));
    if let Some(t) = active_from
        && hj212_codec::time::DateTime::parse(t).is_none()
    {
        return bad(format!("{at}.active_from = {t:?}: expected YYYYMMDDhhmmss"));
    }
    let mut cns = HashSet::new();
    for (j, s) in streams.iter().enumerate() {
        if ![2011, 2051, 2061, 2031].contains(&s.cn) {
            return bad(format!("{at}.streams[{j}].cn = {}: expected 2011, 2051, 2061 or 2031", s.cn));
        }
        if !cns.insert(s.cn) {
            return bad(format!("{at}.streams[{j}].cn = {}: listed twice", s.cn));
        }
        if s.interval_s == Some(0) {
            return bad(format!("{at}.streams[{j}].interval_s must be at least 1"));
        }
    }
    let mut codes = HashSet::new();
    for (j, p) in pollutants.iter().enumerate() {
        if p.code.is_empty() || !p.code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return bad(format!("{at}.pollutants[{j}].code = {:?}: expected a pollutant code", p.code));
        }
        if !codes.insert(p.code.as_str()) {
            return bad(format!("{at}.pollutants[{j}].code = {:?}: listed twice", p.code));
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        let non_negative = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v >= 0.0);
        if !positive(p.limit) || !non_negative(p.flat_band) || !positive(p.flat_min_hours) {
            return bad(format!(
                "{at}.pollutants[{j}] ({}): limit and flat_min_hours must be > 0, flat_band >= 0",
                p.code
            ));
        }
    }
    Ok(())
}

/// The data-quality engine in the daemon (`[quality]`): the daemon's own settings, and the
/// engine's [`QualityConfig`] in the same table (`[quality.recovery]`, `[quality.flat_line]`, …;
/// see `docs/data-quality.md`). Sites come from the registry (`[[registry]]` `streams`,
/// `pollutants`, …); `[[quality.sites]]` may add MNs that are not in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Quality {
    /// Run the engine. Default true.
    pub enabled: bool,
    /// Inputs queued for the engine at most; beyond that inputs are dropped and counted
    /// (`quality_inputs_dropped`), never waited for.
    pub channel_capacity: usize,
    /// Seconds between two engine ticks (link rules, recovery, daily records).
    pub tick_secs: u64,
    /// The JSON state file (daily records, online values, recoveries, networking status) read by
    /// `hj212-ingest report` and `compare`; empty turns persistence off.
    pub state_path: PathBuf,
    /// Seconds between two writes of the state file (also written at shutdown).
    pub persist_secs: u64,
    /// The engine's thresholds (every rule, accounting, recovery, comparison).
    pub engine: QualityConfig,
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            enabled: true,
            channel_capacity: 65_536,
            tick_secs: 15,
            state_path: PathBuf::from("/var/lib/hj212/ingest-quality.json"),
            persist_secs: 60,
            engine: QualityConfig::default(),
        }
    }
}

impl<'de> Deserialize<'de> for Quality {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        fn take<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            t: &mut toml::Table,
            k: &str,
        ) -> Result<Option<T>, E> {
            t.remove(k).map(|v| v.try_into::<T>().map_err(|e| E::custom(format!("quality.{k}: {e}")))).transpose()
        }
        let mut table = toml::Table::deserialize(d)?;
        let mut q = Self::default();
        if let Some(v) = take(&mut table, "enabled")? {
            q.enabled = v;
        }
        if let Some(v) = take(&mut table, "channel_capacity")? {
            q.channel_capacity = v;
        }
        if let Some(v) = take(&mut table, "tick_secs")? {
            q.tick_secs = v;
        }
        if let Some(v) = take::<String, _>(&mut table, "state_path")? {
            q.state_path = PathBuf::from(v);
        }
        if let Some(v) = take(&mut table, "persist_secs")? {
            q.persist_secs = v;
        }
        q.engine = toml::Value::Table(table).try_into().map_err(|e| D::Error::custom(format!("quality: {e}")))?;
        Ok(q)
    }
}

impl Quality {
    /// Checks the daemon's settings, the engine's thresholds and `[[quality.sites]]`.
    ///
    /// # Errors
    /// The first problem found, naming the setting.
    pub fn validate(&self, registry: &[RegistryEntry]) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        if !(1..=60).contains(&self.tick_secs) {
            return bad(format!("quality.tick_secs = {}: must be between 1 and 60", self.tick_secs));
        }
        if self.channel_capacity == 0 || self.persist_secs == 0 {
            return bad("quality.channel_capacity and quality.persist_secs must be at least 1".into());
        }
        let e = &self.engine;
        let checks: [(&str, f64); 12] = [
            ("accounting.grace_minutes", e.accounting.grace_minutes),
            ("accounting.settle_hours", e.accounting.settle_hours),
            ("recovery.grace_minutes", e.recovery.grace_minutes),
            ("recovery.hourly_lookback_hours", e.recovery.hourly_lookback_hours),
            ("recovery.minute_lookback_hours", e.recovery.minute_lookback_hours),
            ("recovery.per_mn_spacing_minutes", e.recovery.per_mn_spacing_minutes),
            ("recovery.reply_timeout_minutes", e.recovery.reply_timeout_minutes),
            ("link.silence_factor", e.link.silence_factor),
            ("link.silence_floor_minutes", e.link.silence_floor_minutes),
            ("link.offline_after_minutes", e.link.offline_after_minutes),
            ("flat_line.min_hours", e.flat_line.min_hours),
            ("dynamic_control.calibration_window_minutes", e.dynamic_control.calibration_window_minutes),
        ];
        for (name, v) in checks {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("quality.{name} = {v}: must be a finite number >= 0"));
            }
        }
        if e.recovery.hourly_max_span_hours <= 0.0 || e.recovery.minute_max_span_minutes <= 0.0 {
            return bad("quality.recovery: hourly_max_span_hours and minute_max_span_minutes must be > 0".into());
        }
        if let Some(cn) = e.recovery.cns.iter().find(|cn| ![2051, 2061].contains(*cn)) {
            return bad(format!("quality.recovery.cns: {cn} cannot be recovered (2051 or 2061)"));
        }
        for (i, s) in e.sites.iter().enumerate() {
            if s.mn.is_empty() || registry.iter().any(|r| r.mn == s.mn) {
                return bad(format!("quality.sites[{i}].mn = {:?}: empty, or already in the registry", s.mn));
            }
            validate_site(&format!("quality.sites[{i}]"), s.active_from.as_deref(), &s.streams, &s.pollutants)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_validates_and_equals_the_built_in_defaults() {
        let parsed = Config::from_toml(DEFAULT_CONFIG).unwrap();
        parsed.validate().unwrap();
        let built = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }

    #[test]
    fn each_listener_may_turn_nagle_off() {
        let c = Config::from_toml(
            "[[listeners]]\naddr = \"0.0.0.0:9212\"\n[[listeners]]\naddr = \"10.0.0.1:9213\"\ntcp_nodelay = true\n",
        )
        .unwrap();
        assert_eq!(c.listeners.iter().map(|l| l.tcp_nodelay).collect::<Vec<_>>(), [false, true]);
    }

    #[test]
    fn unknown_settings_are_refused() {
        let e = Config::from_toml("[limits]\nmax_conections = 3\n").unwrap_err();
        assert!(e.0.contains("max_conections"), "{e}");
    }

    #[test]
    fn environment_overrides_win_and_bad_values_name_the_variable() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "HJ212_INGEST_LISTEN" => Some("127.0.0.1:1,127.0.0.1:2".into()),
            "HJ212_INGEST_DECODE_MODE" => Some("strict".into()),
            "HJ212_INGEST_MQTT_HOST" => Some("broker".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners.iter().all(|l| !l.tcp_nodelay), "Nagle by default");
        assert_eq!(c.decode.mode, DecodeMode::Strict);
        assert!(!c.mqtt.embedded());
        c.apply_env(|k| (k == "HJ212_INGEST_TCP_NODELAY").then(|| "true".into())).unwrap();
        assert!(c.listeners.iter().all(|l| l.tcp_nodelay), "{:?}", c.listeners);
        let e = c.apply_env(|k| (k == "HJ212_INGEST_MAX_CONNECTIONS").then(|| "many".into())).unwrap_err();
        assert!(e.0.contains("HJ212_INGEST_MAX_CONNECTIONS"), "{e}");
    }

    #[test]
    fn validation_names_the_setting() {
        let c = Config::from_toml("[[registry]]\nmn = \"A\"\npassword = \"\"\n").unwrap();
        assert!(c.validate().unwrap_err().0.contains("registry[0]"));
        let c = Config::from_toml("[mqtt]\nprefix = \"a/#\"\n").unwrap();
        assert!(c.validate().unwrap_err().0.contains("mqtt.prefix"));
    }

    #[test]
    fn the_quality_section_embeds_the_engine_config_and_registry_sites_are_validated() {
        let c = Config::from_toml(
            "[quality]\ntick_secs = 5\n[quality.recovery]\nper_mn_spacing_minutes = 1\n\
             [[registry]]\nmn = \"A\"\npassword = \"p\"\nstreams = [{ cn = 2061, interval_s = 3600 }]\n\
             pollutants = [{ code = \"w01018\", limit = 50.0 }]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.quality.tick_secs, 5);
        assert!((c.quality.engine.recovery.per_mn_spacing_minutes - 1.0).abs() < 1e-12);
        let q = c.quality_config();
        assert_eq!(q.pollutant("A", "w01018").and_then(|p| p.limit), Some(50.0));
        assert!(Config::from_toml("[quality.recovery]\nno_such = 1\n").is_err());
        let bad = Config::from_toml("[[registry]]\nmn = \"A\"\npassword = \"p\"\nstreams = [{ cn = 9999 }]\n").unwrap();
        assert!(bad.validate().unwrap_err().0.contains("registry[0].streams[0].cn"));
        let bad = Config::from_toml("[quality]\ntick_secs = 0\n").unwrap();
        assert!(bad.validate().unwrap_err().0.contains("quality.tick_secs"));
    }

    #[test]
    fn passwords_are_not_printed_by_debug() {
        let c =
            Config::from_toml("[mqtt]\npassword = \"s3cret\"\n[[registry]]\nmn = \"A\"\npassword = \"pw-secret\"\n")
                .unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("s3cret") && !text.contains("pw-secret"), "{text}");
    }

    /// A CA and a certificate for `127.0.0.1` it signed, with their keys, as PEM files in `dir`.
    fn test_pki(dir: &Path) -> [PathBuf; 4] {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let leaf_pem = leaf.signed_by(&leaf_key, &Issuer::new(ca, ca_key)).unwrap().pem();
        let files = ["ca.pem", "leaf.pem", "leaf.key", "other.key"].map(|f| dir.join(f));
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&files[0], ca_pem).unwrap();
        std::fs::write(&files[1], leaf_pem).unwrap();
        std::fs::write(&files[2], leaf_key.serialize_pem()).unwrap();
        std::fs::write(&files[3], KeyPair::generate().unwrap().serialize_pem()).unwrap();
        files
    }

    #[test]
    fn mqtt_tls_files_are_checked_and_errors_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("hj212-ingest-tls-config-{}", std::process::id()));
        let [ca, cert, key, other_key] = test_pki(&dir);
        let tls = |extra: &str| {
            Config::from_toml(&format!(
                "[mqtt]\nhost = \"127.0.0.1\"\nport = 8883\n[mqtt.tls]\nenabled = true\nca_file = {:?}\n{extra}",
                ca.display().to_string()
            ))
            .unwrap()
        };
        let error = |c: Config| c.validate().unwrap_err().0;

        let c = tls("");
        c.validate().unwrap();
        assert!(c.mqtt.tls.client_config("127.0.0.1").unwrap().is_some());
        let both =
            format!("cert_file = {:?}\nkey_file = {:?}\n", cert.display().to_string(), key.display().to_string());
        tls(&both).validate().unwrap();
        tls("server_name = \"broker.example.org\"\n").validate().unwrap();

        let missing =
            Config::from_toml("[mqtt]\nhost = \"h\"\n[mqtt.tls]\nenabled = true\nca_file = \"/nonexistent/ca.pem\"\n")
                .unwrap();
        let e = error(missing);
        assert!(e.contains("mqtt.tls.ca_file") && e.contains("cannot read"), "{e}");
        let not_pem = Config::from_toml(&format!(
            "[mqtt]\nhost = \"h\"\n[mqtt.tls]\nenabled = true\nca_file = {:?}\n",
            key.display().to_string()
        ))
        .unwrap();
        let e = error(not_pem);
        assert!(e.contains("mqtt.tls.ca_file") && e.contains("no PEM certificate"), "{e}");
        let e = error(tls(&format!("cert_file = {:?}\n", cert.display().to_string())));
        assert!(e.contains("cert_file and key_file go together"), "{e}");
        let e = error(tls(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            ca.display().to_string()
        )));
        assert!(e.contains("mqtt.tls.key_file") && e.contains("no PEM private key"), "{e}");
        let e = error(tls(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            other_key.display().to_string()
        )));
        assert!(e.contains("not a usable pair"), "{e}");
        let e = error(tls("server_name = \"not a name\"\n"));
        assert!(e.contains("mqtt.tls.server_name"), "{e}");

        // Settings without `enabled`, and TLS to the embedded broker, are refused.
        let e = error(Config::from_toml(&format!("[mqtt.tls]\nca_file = {:?}\n", ca.display().to_string())).unwrap());
        assert!(e.contains("need mqtt.tls.enabled = true"), "{e}");
        let e = error(Config::from_toml("[mqtt.tls]\nenabled = true\n").unwrap());
        assert!(e.contains("external broker"), "{e}");

        // The environment can turn it on and point at the files.
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "HJ212_INGEST_MQTT_HOST" => Some("127.0.0.1".into()),
            "HJ212_INGEST_MQTT_TLS" => Some("true".into()),
            "HJ212_INGEST_MQTT_TLS_CA_FILE" => Some(ca.display().to_string()),
            "HJ212_INGEST_MQTT_TLS_CERT_FILE" => Some(cert.display().to_string()),
            "HJ212_INGEST_MQTT_TLS_KEY_FILE" => Some(key.display().to_string()),
            "HJ212_INGEST_MQTT_TLS_SERVER_NAME" => Some("broker.example.org".into()),
            _ => None,
        })
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.mqtt.tls.server_name, "broker.example.org");
        assert!(c.mqtt.tls.enabled && c.mqtt.tls.key_file == key);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sm4_keys_are_validated_and_masked() {
        let c = Config::from_toml(
            "[[registry]]\nmn = \"A\"\npassword = \"p\"\nencryption = \"sm4\"\nkey = \"K3y-0123456789ab\"\n\
             cipher_form = \"hex_text\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.registry[0].cipher_form, Some(CipherFormSetting::HexText));
        assert!(!format!("{c:?}").contains("K3y-0123456789ab"));
        let short =
            Config::from_toml("[[registry]]\nmn = \"A\"\npassword = \"p\"\nencryption = \"sm4\"\nkey = \"x\"\n")
                .unwrap();
        assert!(short.validate().unwrap_err().0.contains("registry[0].key"));
        let off =
            Config::from_toml("[[registry]]\nmn = \"A\"\npassword = \"p\"\nkey = \"0000000000000000\"\n").unwrap();
        assert!(off.validate().is_err());
        let auto = Config::from_toml("[registration]\nmode = \"auto\"\nprefix = \"xyz\"\n").unwrap();
        assert!(auto.validate().unwrap_err().0.contains("registration.prefix"));
    }
}
