//! HJ 212-2025 on the platform side: SM4 `CP` encryption of frames (§6.4), the store of keys
//! set by 1014 exchanges, key generation, and the registration of DAUs without an MN (1001/1002).
//!
//! Received frames: the splitter cuts an encrypted frame by its length field (rule 1: the binary
//! ciphertext has the plaintext's length), or, for the hex-text form whose wire length differs
//! from its declared length, at its line feed (rule 2: hex text holds no CR or LF). [`open`]
//! decrypts the data segment with each candidate key and accepts the first plaintext that is
//! UTF-8, parses, and whose CRC verifies: the plaintext's CRC (the standard's order: CRC first,
//! then encrypt), or, for the hex-text form only, the CRC of the wire text. The plaintext is
//! re-framed so that the rest of the daemon sees an ordinary frame.
//!
//! Invariants:
//! * Key material never reaches a log line, an MQTT message or a `Debug` output.
//! * A frame that does not decrypt under any key in force is never published nor answered.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use hj212_codec::crc::{self, CrcPolicy, CrcVariant};
use hj212_codec::crypt::{self, CipherForm, Key};
use hj212_codec::{Packet, RawFrame};
use serde::{Deserialize, Serialize};

use crate::config::{Keys, Registration, RegistrationMode};

/// The value of a header field (`MN`, `CN`, …) read from a data segment whose `CP` may be binary.
#[must_use]
pub fn header_field<'a>(data: &'a [u8], name: &str) -> Option<&'a str> {
    let end = cp_start(data).unwrap_or(data.len());
    let header = std::str::from_utf8(&data[..end]).ok()?;
    header.split(';').find_map(|f| f.split_once('=').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim()))
}

/// Where `CP=&&` starts at a field boundary.
fn cp_start(data: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + data[from..].windows(5).position(|w| w == b"CP=&&")?;
        if at == 0 || data[at - 1] == b';' {
            return Some(at);
        }
        from = at + 1;
    }
}

/// True when the frame must go through decryption for a site with a key: its CN is one that
/// HJ 212-2025 §6.4.4 encrypts, or its data segment is not text, or its CRC does not verify as
/// received.
#[must_use]
pub fn needs_decryption(frame: &RawFrame<'_>) -> bool {
    let data = frame.data();
    let cn = header_field(data, "CN").and_then(|c| c.parse::<u16>().ok());
    cn.is_some_and(crypt::must_encrypt)
        || std::str::from_utf8(data).is_err()
        || CrcPolicy::Auto.check(data, frame.crc_received()).is_err()
}

/// Which key decrypted a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The key in force (rotated, or the registry's when none was rotated).
    Current,
    /// The key before the last rotation, within its grace period.
    Previous,
}

/// Why a frame could not be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// No key in force gives a readable plaintext with a matching CRC (wrong key, corruption).
    WrongKey,
    /// The frame is readable plaintext although the site must encrypt this command.
    NotEncrypted,
}

impl OpenError {
    /// A short stable name for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::WrongKey => "wrong_key_or_corrupt",
            Self::NotEncrypted => "sent_in_clear",
        }
    }
}

fn plain_ok(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok() && Packet::parse(data).is_ok()
}

/// Decrypts a received frame with the first of `keys` that fits; returns the plaintext frame
/// (`##`, plaintext length, plaintext, CRC, CR LF) and which key it was.
///
/// # Errors
/// [`OpenError`]: no key fits.
pub fn open(frame: &RawFrame<'_>, keys: &[(Key, KeyUse)]) -> Result<(Vec<u8>, KeyUse), OpenError> {
    let data = frame.data();
    let received = frame.crc_received();
    let wire_crc = CrcPolicy::Auto.check(data, received).ok();
    let hex_text = cp_start(data).is_some_and(|at| data[at + 5..].starts_with(b"{0x"));
    for (key, used) in keys {
        let Ok(plain) = crypt::decrypt_data(key, data) else { continue };
        if !plain_ok(&plain) {
            continue;
        }
        let crc_text = match CrcPolicy::Auto.check(&plain, received) {
            Ok(_) => frame.crc_text().to_vec(),
            Err(_) => match wire_crc {
                Some(variant) if hex_text => crc::to_hex(variant.compute(&plain)).to_vec(),
                _ => continue,
            },
        };
        let mut out = hj212_codec::encode::frame(&plain, CrcVariant::Hj212, false);
        let at = out.len() - 6;
        out[at..at + 4].copy_from_slice(&crc_text);
        return Ok((out, *used));
    }
    if wire_crc.is_some() && !hex_text && plain_ok(data) {
        return Err(OpenError::NotEncrypted);
    }
    Err(OpenError::WrongKey)
}

/// Encrypts a plaintext data segment and frames it for the wire: binary ciphertext keeps the
/// plaintext's length and CRC; the hex-text form carries the length and CRC of the wire text.
///
/// # Errors
/// The data segment has no `CP=&&…&&`.
pub fn seal(data: &[u8], key: &Key, form: CipherForm, variant: CrcVariant) -> Result<Vec<u8>, hj212_codec::Error> {
    let wire = crypt::encrypt_data(key, data, form)?;
    Ok(match form {
        CipherForm::Binary => {
            let mut out = hj212_codec::encode::frame(data, variant, false);
            out[6..6 + wire.len()].copy_from_slice(&wire);
            out
        }
        CipherForm::HexText => hj212_codec::encode::frame(&wire, variant, false),
    })
}

/// Sixteen random printable characters (`0-9A-Za-z`) from the operating system's generator,
/// for `NewSK`.
///
/// # Errors
/// `/dev/urandom` cannot be read.
pub fn random_key_text() -> std::io::Result<String> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = std::fs::File::open("/dev/urandom")?;
    let mut out = String::with_capacity(16);
    let mut buf = [0u8; 64];
    while out.len() < 16 {
        rng.read_exact(&mut buf)?;
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        for b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == 16 {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically (a temporary file, then a rename), readable by the owner
/// only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> anyhow::Result<T> {
    if path.as_os_str().is_empty() {
        return Ok(T::default());
    }
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct SiteKeys {
    /// The key set by the last exchange, if any.
    #[serde(default)]
    current: Option<String>,
    /// When the key in force took effect (or was first used, for the registry key).
    since_ms: i64,
    /// The key before the last exchange.
    #[serde(default)]
    previous: Option<String>,
    /// Until when `previous` still decrypts.
    #[serde(default)]
    previous_until_ms: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    #[serde(default)]
    sites: BTreeMap<String, SiteKeys>,
}

/// The SM4 keys set by 1014 exchanges, per MN, persisted in a JSON file (mode 0600). The
/// registry's key is the fallback for an MN without a rotated key.
pub struct KeyStore {
    path: PathBuf,
    grace_ms: i64,
    rotation_ms: i64,
    state: Mutex<KeyFile>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys never reach logs: only the file and the number of sites.
        let sites = self.state.lock().unwrap_or_else(PoisonError::into_inner).sites.len();
        f.debug_struct("KeyStore").field("path", &self.path).field("sites", &sites).finish_non_exhaustive()
    }
}

fn key_of(text: &str) -> Option<Key> {
    Key::from_text(text)
}

impl KeyStore {
    /// Opens the store (an absent file is an empty store).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn open(cfg: &Keys) -> anyhow::Result<Self> {
        let state: KeyFile = read_json(&cfg.state_path)?;
        let day = 86_400_000_i64;
        Ok(Self {
            path: cfg.state_path.clone(),
            grace_ms: i64::try_from(cfg.grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            rotation_ms: i64::try_from(cfg.rotation_days).unwrap_or(i64::MAX / day).saturating_mul(day),
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyFile> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist(&self, state: &KeyFile) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        if let Err(error) = write_private(&self.path, &bytes) {
            tracing::error!(path = %self.path.display(), %error, "Could not write the key store.");
        }
    }

    /// The key in force for `mn`: the rotated one, else `registry`.
    #[must_use]
    pub fn current(&self, mn: &str, registry: Option<&Key>) -> Option<Key> {
        let state = self.lock();
        state.sites.get(mn).and_then(|s| s.current.as_deref()).and_then(key_of).or_else(|| registry.cloned())
    }

    /// The keys that may decrypt a frame from `mn` at `now_ms`, in the order to try them.
    #[must_use]
    pub fn decrypt_keys(&self, mn: &str, registry: Option<&Key>, now_ms: i64) -> Vec<(Key, KeyUse)> {
        let state = self.lock();
        let site = state.sites.get(mn);
        let mut out = Vec::with_capacity(2);
        match site.and_then(|s| s.current.as_deref()).and_then(key_of) {
            Some(k) => out.push((k, KeyUse::Current)),
            None => out.extend(registry.cloned().map(|k| (k, KeyUse::Current))),
        }
        if let Some(s) = site.filter(|s| now_ms < s.previous_until_ms)
            && let Some(k) = s.previous.as_deref().and_then(key_of)
            && !out.iter().any(|(c, _)| *c == k)
        {
            out.push((k, KeyUse::Previous));
        }
        out
    }

    /// Installs `new` as the key of `mn` from `now_ms`; the key in force until now (`old`)
    /// still decrypts for the grace period.
    pub fn rotate(&self, mn: &str, new: &str, old: Option<&str>, now_ms: i64) {
        let mut state = self.lock();
        let site = state.sites.entry(mn.to_string()).or_default();
        site.previous = old.map(str::to_string).or_else(|| site.current.take());
        site.previous_until_ms = now_ms.saturating_add(self.grace_ms);
        site.current = Some(new.to_string());
        site.since_ms = now_ms;
        self.persist(&state);
    }

    /// The text of the key in force (for [`KeyStore::rotate`]'s `old`).
    #[must_use]
    pub fn current_text(&self, mn: &str) -> Option<String> {
        self.lock().sites.get(mn).and_then(|s| s.current.clone())
    }

    /// True when the key in force for `mn` is older than the rotation period (its age counts
    /// from the rotation, or from the first frame seen with the registry key).
    pub fn rotation_due(&self, mn: &str, now_ms: i64) -> bool {
        if self.rotation_ms == 0 {
            return false;
        }
        let mut state = self.lock();
        if let Some(s) = state.sites.get(mn) {
            return now_ms.saturating_sub(s.since_ms) >= self.rotation_ms;
        }
        state.sites.insert(mn.to_string(), SiteKeys { since_ms: now_ms, ..SiteKeys::default() });
        self.persist(&state);
        false
    }
}

#[derive(Default, Serialize, Deserialize)]
struct RegistrationFile {
    #[serde(default)]
    next: u64,
    #[serde(default)]
    assigned: BTreeMap<String, String>,
}

/// Assigns MNs to DAUs that register with CN 1001 (`[registration]`).
#[derive(Debug)]
pub struct Registrar {
    config: Registration,
    state: Mutex<RegistrationFile>,
}

impl fmt::Debug for RegistrationFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationFile").field("next", &self.next).field("assigned", &self.assigned.len()).finish()
    }
}

impl Registrar {
    /// Opens the registrar and, in `auto` mode, its state file.
    ///
    /// # Errors
    /// The state file exists but cannot be read or parsed.
    pub fn open(config: &Registration) -> anyhow::Result<Self> {
        let state =
            if config.mode == RegistrationMode::Auto { read_json(&config.state_path)? } else { Default::default() };
        Ok(Self { config: config.clone(), state: Mutex::new(state) })
    }

    /// The configured mode.
    #[must_use]
    pub const fn mode(&self) -> RegistrationMode {
        self.config.mode
    }

    /// The MN for the DAU `dau_id`.
    ///
    /// # Errors
    /// A short reason: registration off, DAU not in the table, or the counter exhausted.
    pub fn assign(&self, dau_id: &str) -> Result<String, &'static str> {
        match self.config.mode {
            RegistrationMode::Off => Err("registration_off"),
            RegistrationMode::Table => self.config.table.get(dau_id).cloned().ok_or("not_in_table"),
            RegistrationMode::Auto => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(mn) = state.assigned.get(dau_id) {
                    return Ok(mn.clone());
                }
                let width = 24 - self.config.prefix.len();
                let n = state.next;
                let digits = format!("{n:0width$}");
                if digits.len() > width {
                    return Err("counter_exhausted");
                }
                let mn = format!("{}{digits}", self.config.prefix);
                state.next = n + 1;
                state.assigned.insert(dau_id.to_string(), mn.clone());
                let path = &self.config.state_path;
                if !path.as_os_str().is_empty() {
                    let bytes = serde_json::to_vec_pretty(&*state).unwrap_or_default();
                    if let Err(error) = write_private(path, &bytes) {
                        tracing::error!(path = %path.display(), %error, "Could not write the registration state.");
                    }
                }
                Ok(mn)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hj212_codec::encode::OwnedPacket;
    use hj212_codec::packet::{Flag, Version};
    use hj212_codec::{Split, Splitter};

    fn segment() -> String {
        let mut p = OwnedPacket::new(Some("20240601085857223"), "32", 2051, "123456", "MN1", Some(Flag(9)));
        p.push_group([("DataTime", "20240601085800")]);
        p.push_group([("w01018-Avg", "12.5"), ("w01018-Flag", "N")]);
        p.data_segment()
    }

    fn cut(wire: &[u8]) -> RawFrame<'_> {
        match Splitter::default().split(wire, true) {
            Split::Frame(f) => {
                assert_eq!(f.len(), wire.len());
                f
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_forms_open_with_the_right_key_only() {
        let key = Key::from_text("0123456789abcdef").unwrap();
        let wrong = Key::from_text("fedcba9876543210").unwrap();
        let data = segment();
        let plain = hj212_codec::encode::frame(data.as_bytes(), CrcVariant::Hj212, false);
        for form in [CipherForm::Binary, CipherForm::HexText] {
            let wire = seal(data.as_bytes(), &key, form, CrcVariant::Hj212).unwrap();
            let f = cut(&wire);
            assert!(needs_decryption(&f));
            assert_eq!(header_field(f.data(), "MN"), Some("MN1"));
            let (out, used) = open(&f, &[(wrong.clone(), KeyUse::Current), (key.clone(), KeyUse::Previous)]).unwrap();
            assert_eq!((out.as_slice(), used), (plain.as_slice(), KeyUse::Previous), "{form:?}");
            assert_eq!(open(&f, &[(wrong.clone(), KeyUse::Current)]), Err(OpenError::WrongKey));
        }
        // Hex text with the plaintext's length and CRC (another reading): cut at the line feed.
        let wire = crypt::encrypt_data(&key, data.as_bytes(), CipherForm::HexText).unwrap();
        let mut framed = hj212_codec::encode::frame(data.as_bytes(), CrcVariant::Hj212, false);
        framed.splice(6..6 + data.len(), wire);
        let (out, _) = open(&cut(&framed), &[(key.clone(), KeyUse::Current)]).unwrap();
        assert_eq!(out, plain);
        // Plain text where ciphertext is required.
        assert_eq!(open(&cut(&plain), &[(key, KeyUse::Current)]), Err(OpenError::NotEncrypted));
        let hb = OwnedPacket::new(Some("1"), "32", 9015, "1", "MN1", Some(Flag::new(Version::V2025, false, true)));
        let hb = hb.to_frame(CrcVariant::Hj212).unwrap();
        assert!(!needs_decryption(&cut(&hb)));
    }

    #[test]
    fn random_keys_are_printable_and_differ() {
        let a = random_key_text().unwrap();
        let b = random_key_text().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_grace_period_and_persists() {
        let dir = std::env::temp_dir().join(format!("hj212-keys-{}", std::process::id()));
        let cfg = Keys { state_path: dir.join("keys.json"), grace_secs: 10, rotation_days: 1 };
        let reg = Key::from_text("0000000000000000").unwrap();
        let store = KeyStore::open(&cfg).unwrap();
        assert!(!store.rotation_due("A", 0));
        assert!(store.rotation_due("A", 86_400_000));
        store.rotate("A", "1111111111111111", Some("0000000000000000"), 1000);
        let new = Key::from_text("1111111111111111").unwrap();
        assert_eq!(store.current("A", Some(&reg)), Some(new.clone()));
        assert_eq!(
            store.decrypt_keys("A", Some(&reg), 5000),
            vec![(new.clone(), KeyUse::Current), (reg, KeyUse::Previous)]
        );
        assert_eq!(store.decrypt_keys("A", None, 11_000), vec![(new.clone(), KeyUse::Current)]);
        let again = KeyStore::open(&cfg).unwrap();
        assert_eq!(again.current("A", None), Some(new));
        assert!(!format!("{again:?}").contains("1111"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&cfg.state_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn auto_registration_pads_the_counter_and_remembers_daus() {
        let cfg = Registration {
            mode: RegistrationMode::Auto,
            prefix: "ABC".into(),
            state_path: PathBuf::new(),
            table: BTreeMap::new(),
        };
        let r = Registrar::open(&cfg).unwrap();
        assert_eq!(r.assign("d1").unwrap(), "ABC000000000000000000000");
        assert_eq!(r.assign("d2").unwrap(), "ABC000000000000000000001");
        assert_eq!(r.assign("d1").unwrap(), "ABC000000000000000000000");
        let t = Registrar::open(&Registration {
            mode: RegistrationMode::Table,
            table: [("d1".to_string(), "MN1".to_string())].into(),
            ..cfg
        })
        .unwrap();
        assert_eq!(t.assign("d1"), Ok("MN1".into()));
        assert_eq!(t.assign("d9"), Err("not_in_table"));
    }
}
