//! HJ 212-2025 on the gateway side: sealing and opening SM4-encrypted frames, the per-platform key
//! ring kept in the store, and the hardware identifiers uploaded for registration (CN 1001).
//!
//! # Frames on the wire (HJ 212-2025 §6.4, Appendix A.2; `docs/decisions/0004-*`)
//!
//! A frame is built and its CRC computed over the plaintext first; then, for the commands
//! [`crypt::must_encrypt`] names, the `CP` content is encrypted. In the binary form the length
//! field and the CRC stay those of the plaintext; in the hex-text form they are those of the text
//! that is sent (as the codec documents for [`CipherForm::HexText`]). A receiver cuts the frame by
//! its length, decrypts, and checks the CRC over the plaintext: a wrong key shows as a CRC (or
//! parse) failure, and the frame is dropped.
//!
//! # Keys
//!
//! Each platform has its own [`KeyRing`], kept in the store's `meta` tree: `sk/<platform>` holds
//! the key in use and its creation time (`SKCreateTime`), `sk-prev/<platform>` the key it replaced
//! and when. A replaced key is still tried for decrypting for `key_grace_secs`. The keys are
//! stored in clear in the store (the store directory must be readable by the daemon only); they
//! never reach the logs, the packet log (ciphertext only) or `Debug` output.

use std::path::Path;

use hj212_codec::crypt::{self, CipherForm, Key};
use hj212_codec::encode;
use hj212_codec::message::InfoItem;
use hj212_codec::time::DateTime;
use hj212_codec::{CrcVariant, DecodeOptions, Decoded, Packet, Split, Splitter};

use crate::config::Hardware;
use crate::store::{Store, StoreError};

/// The `CN` of a data segment whose `CP` may be ciphertext: read from the clear header before
/// the first `CP=&&`.
#[must_use]
pub fn header_cn(data: &[u8]) -> Option<u16> {
    let end = data.windows(5).position(|w| w == b"CP=&&")?;
    let header = std::str::from_utf8(&data[..end]).ok()?;
    header.split([';', ',']).find_map(|f| f.trim().strip_prefix("CN=")).and_then(|v| v.trim().parse().ok())
}

/// Seals a plaintext frame for the wire: frames of commands that must be encrypted get their
/// `CP` content encrypted with `key`; every other frame is returned unchanged.
///
/// `variant` is the CRC written on the hex-text form (whose CRC covers the text sent).
///
/// # Errors
/// The frame does not cut or has no `CP=&&…&&`.
pub fn seal(key: &Key, form: CipherForm, variant: CrcVariant, frame: &[u8]) -> Result<Vec<u8>, String> {
    let Split::Frame(f) = Splitter::default().split(frame, true) else {
        return Err("not a frame".into());
    };
    let data = f.data();
    if !header_cn(data).is_some_and(crypt::must_encrypt) {
        return Ok(frame.to_vec());
    }
    let sealed = crypt::encrypt_data(key, data, form).map_err(|e| e.to_string())?;
    Ok(match form {
        CipherForm::Binary => {
            // Same length as the plaintext; the plaintext's length field and CRC are kept.
            let mut out = frame.to_vec();
            out[6..6 + data.len()].copy_from_slice(&sealed);
            out
        }
        CipherForm::HexText => encode::frame(&sealed, variant, false),
    })
}

/// What [`open`] made of a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The frame was in clear (an answer, a heartbeat, a request that needs no encryption, or a
    /// peer that did not encrypt): decode it as it is.
    Clear,
    /// The decrypted frame, whose CRC verified over the plaintext; `previous` when a replaced key
    /// (within its grace period) opened it.
    Decrypted {
        /// The plaintext frame.
        frame: Vec<u8>,
        /// The key index in the list given to [`open`] that opened it.
        key: usize,
    },
    /// No key gives a frame whose CRC verifies and that parses: drop it.
    Failed,
}

/// Opens a received frame with the first of `keys` that works.
///
/// A frame is decrypted when its command must be encrypted or its data segment does not parse
/// as it is. The plaintext must pass the CRC (binary form: the received CRC over the plaintext;
/// hex-text form: the received CRC over the received text) and parse.
#[must_use]
pub fn open(keys: &[&Key], frame: &[u8]) -> Opened {
    let Split::Frame(f) = Splitter::default().split(frame, true) else { return Opened::Clear };
    let data = f.data();
    let parses = Packet::parse(data).is_ok();
    if parses && !header_cn(data).is_some_and(crypt::must_encrypt) {
        return Opened::Clear;
    }
    let hex = data.windows(8).any(|w| w == b"CP=&&{0x");
    let options = DecodeOptions::LENIENT;
    for (i, key) in keys.iter().enumerate() {
        let Ok(plain) = crypt::decrypt_data(key, data) else { continue };
        let rebuilt = if hex {
            let Ok(variant) = f.check_crc(options.crc) else { continue };
            encode::frame(&plain, variant, false)
        } else {
            if plain.len() != data.len() {
                continue;
            }
            let mut out = frame.to_vec();
            out[6..6 + plain.len()].copy_from_slice(&plain);
            out
        };
        let Split::Frame(g) = Splitter::default().split(&rebuilt, true) else { continue };
        if Decoded::new(g, options).verdict().is_ok() {
            return Opened::Decrypted { frame: rebuilt, key: i };
        }
    }
    if parses && f.check_crc(options.crc).is_ok() {
        // A peer that sent this command in clear.
        return Opened::Clear;
    }
    Opened::Failed
}

/// The SM4 keys of one platform: the key in use and the one it replaced.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Key,
    created: DateTime,
    previous: Option<(Key, i64)>,
    grace_ms: i64,
}

fn key_text(k: &Key) -> String {
    String::from_utf8_lossy(k.bytes()).into_owned()
}

fn n17(t: DateTime) -> String {
    t.n17().iter().map(|&b| char::from(b)).collect()
}

impl KeyRing {
    /// The ring of `platform` from the store; a platform seen for the first time starts with
    /// `initial`, created `now` (and stored).
    #[must_use]
    pub fn load(store: &dyn Store, platform: &str, initial: Key, now: DateTime, grace_secs: u64) -> Self {
        let grace_ms = i64::try_from(grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let stored = store.meta(&format!("sk/{platform}")).and_then(|v| {
            let (created, key) = v.split_once(':')?;
            Some((Key::from_text(key)?, DateTime::parse(created)?))
        });
        let previous = store.meta(&format!("sk-prev/{platform}")).and_then(|v| {
            let (retired, key) = v.split_once(':')?;
            Some((Key::from_text(key)?, retired.parse().ok()?))
        });
        match stored {
            Some((current, created)) => Self { current, created, previous, grace_ms },
            None => {
                let ring = Self { current: initial, created: now, previous: None, grace_ms };
                if let Err(error) = ring.save(store, platform) {
                    tracing::error!(platform, %error, "Cannot store the initial key.");
                }
                ring
            }
        }
    }

    fn save(&self, store: &dyn Store, platform: &str) -> Result<(), StoreError> {
        if let Some((key, retired)) = &self.previous {
            store.set_meta(&format!("sk-prev/{platform}"), &format!("{retired}:{}", key_text(key)))?;
        }
        store.set_meta(&format!("sk/{platform}"), &format!("{}:{}", n17(self.created), key_text(&self.current)))
    }

    /// The key frames are encrypted with.
    #[must_use]
    pub const fn current(&self) -> &Key {
        &self.current
    }

    /// When the key in use was created (`SKCreateTime`).
    #[must_use]
    pub const fn created(&self) -> DateTime {
        self.created
    }

    /// `SKCreateTime` of the key in use, 17 digits.
    #[must_use]
    pub fn created_text(&self) -> String {
        n17(self.created)
    }

    /// True when the key in use is older than `rotation_days` at `now`.
    #[must_use]
    pub fn is_due(&self, now: DateTime, rotation_days: u32) -> bool {
        now.to_millis() - self.created.to_millis() >= i64::from(rotation_days) * 86_400_000
    }

    /// The keys to try on a received frame at `now`: the key in use, then the replaced one
    /// while its grace period lasts.
    #[must_use]
    pub fn decrypt_keys(&self, now: DateTime) -> Vec<&Key> {
        let mut keys = vec![&self.current];
        if let Some((key, retired)) = &self.previous {
            if now.to_millis() - retired <= self.grace_ms {
                keys.push(key);
            }
        }
        keys
    }

    /// Installs a new key (CN 1014 `NewSK`) created at `created`, keeping the old one for the
    /// grace period from `now`, and stores both durably.
    ///
    /// # Errors
    /// The store failed; the ring is unchanged then.
    pub fn install(
        &mut self,
        store: &dyn Store,
        platform: &str,
        key: Key,
        created: DateTime,
        now: DateTime,
    ) -> Result<(), StoreError> {
        let mut next = self.clone();
        next.previous = Some((std::mem::replace(&mut next.current, key), now.to_millis()));
        next.created = created;
        next.save(store, platform)?;
        *self = next;
        Ok(())
    }
}

/// The `-Info` items of CN 1001: `i23005` (DAU ID), `i23006` (CPU ID), `i23007`/`i23008` (MACs).
/// Values left empty in the configuration are read from the system; one that cannot be read is
/// left out.
#[must_use]
pub fn hardware_ids(hw: &Hardware) -> Vec<InfoItem> {
    let cpu = if hw.cpu_id.is_empty() {
        read_cpu_id(Path::new("/proc/cpuinfo"), Path::new("/etc/machine-id"))
    } else {
        Some(hw.cpu_id.clone())
    };
    let macs = if hw.macs.is_empty() { read_macs(Path::new("/sys/class/net"), 2) } else { hw.macs.clone() };
    let mut items = vec![InfoItem { code: "i23005".into(), value: hw.dau_id.clone() }];
    if let Some(cpu) = cpu {
        items.push(InfoItem { code: "i23006".into(), value: cpu });
    }
    for (code, mac) in ["i23007", "i23008"].into_iter().zip(macs) {
        items.push(InfoItem { code: code.into(), value: mac.replace([':', '-'], "").to_ascii_uppercase() });
    }
    items
}

/// The CPU identifier: the `Serial` line of `cpuinfo` (ARM boards), else the machine id; upper
/// case, without separators.
#[must_use]
pub fn read_cpu_id(cpuinfo: &Path, machine_id: &Path) -> Option<String> {
    let clean = |s: &str| {
        let v: String = s.trim().chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_uppercase();
        (!v.is_empty() && v.bytes().any(|b| b != b'0')).then_some(v)
    };
    if let Ok(text) = std::fs::read_to_string(cpuinfo) {
        let serial = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("serial").then(|| clean(v)).flatten()
        });
        if serial.is_some() {
            return serial;
        }
    }
    std::fs::read_to_string(machine_id).ok().and_then(|t| clean(&t))
}

/// The MAC addresses of the first `n` interfaces under `net_dir` (by name; loopback and
/// all-zero addresses left out), as 12 upper-case hex digits.
#[must_use]
pub fn read_macs(net_dir: &Path, n: usize) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(net_dir) else { return Vec::new() };
    let mut names: Vec<_> = dir.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|name| name != "lo")
        .filter_map(|name| std::fs::read_to_string(net_dir.join(name).join("address")).ok())
        .map(|a| a.trim().replace(':', "").to_ascii_uppercase())
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_hexdigit()) && a.bytes().any(|b| b != b'0'))
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hj212_codec::encode::OwnedPacket;
    use hj212_codec::{Flag, Version};

    fn frame(cn: u16, cp: &str) -> Vec<u8> {
        let mut p = OwnedPacket::new(
            Some("20260101000000000"),
            "32",
            cn,
            "123456",
            "010000A8900016F000169DC0",
            Some(Flag::new(Version::V2025, false, true)),
        );
        p.push_group([("DataTime", "20260101000000")]);
        p.push_group([("w01018-Rtd", cp), ("w01018-Flag", "N")]);
        p.to_frame(CrcVariant::Hj212).unwrap()
    }

    #[test]
    fn sealed_frames_keep_length_and_crc_and_open_with_the_right_key_only() {
        let k1 = Key::from_text("Key-One-12345678").unwrap();
        let k2 = Key::from_text("Key-Two-12345678").unwrap();
        let plain = frame(2011, "42.5");
        let wire = seal(&k1, CipherForm::Binary, CrcVariant::Hj212, &plain).unwrap();
        assert_eq!(wire.len(), plain.len());
        assert_eq!(wire[..6], plain[..6]);
        assert_eq!(wire[wire.len() - 6..], plain[plain.len() - 6..]);
        assert_ne!(wire, plain);
        assert_eq!(open(&[&k1], &wire), Opened::Decrypted { frame: plain.clone(), key: 0 });
        assert_eq!(open(&[&k2, &k1], &wire), Opened::Decrypted { frame: plain.clone(), key: 1 });
        assert_eq!(open(&[&k2], &wire), Opened::Failed);
        // Commands that need no encryption pass in clear both ways.
        let hb = frame(9015, "1");
        assert_eq!(seal(&k1, CipherForm::Binary, CrcVariant::Hj212, &hb).unwrap(), hb);
        assert_eq!(open(&[&k1], &hb), Opened::Clear);
        // A peer that sends a must-encrypt command in clear is still understood.
        assert_eq!(open(&[&k1], &plain), Opened::Clear);
    }

    #[test]
    fn the_hex_text_form_round_trips() {
        let k = Key::from_text("Key-One-12345678").unwrap();
        let plain = frame(2051, "42.5");
        let wire = seal(&k, CipherForm::HexText, CrcVariant::Hj212, &plain).unwrap();
        assert!(wire.windows(8).any(|w| w == b"CP=&&{0x"), "{}", String::from_utf8_lossy(&wire));
        assert_eq!(open(&[&k], &wire), Opened::Decrypted { frame: plain, key: 0 });
    }

    #[test]
    fn hardware_ids_come_from_the_system_files() {
        let dir = std::env::temp_dir().join(format!("hj212-gw-hw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, mac) in [("lo", "00:00:00:00:00:00"), ("eth1", "a7:63:74:2c:1a:e1"), ("eth0", "e8:6a:64:3c:7b:bc")] {
            std::fs::create_dir_all(dir.join("net").join(name)).unwrap();
            std::fs::write(dir.join("net").join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        std::fs::write(dir.join("cpuinfo"), "processor\t: 0\nSerial\t\t: 00000000a800200a8c6d\n").unwrap();
        std::fs::write(dir.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(read_macs(&dir.join("net"), 2), ["E86A643C7BBC", "A763742C1AE1"]);
        assert_eq!(read_cpu_id(&dir.join("cpuinfo"), &dir.join("machine-id")).as_deref(), Some("00000000A800200A8C6D"));
        assert_eq!(
            read_cpu_id(&dir.join("none"), &dir.join("machine-id")).as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF")
        );
        let hw = Hardware { dau_id: "6970000000001ABCDEFG1234".into(), cpu_id: "A800200A8C6D".into(), macs: vec![] };
        let items = hardware_ids(&Hardware { macs: vec!["e8:6a:64:3c:7b:bc".into()], ..hw });
        assert_eq!(items[0].value, "6970000000001ABCDEFG1234");
        assert_eq!(items[1].value, "A800200A8C6D");
        assert_eq!(items[2].value, "E86A643C7BBC");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_key_ring_persists_rotates_and_keeps_the_old_key_for_the_grace_period() {
        let dir = std::env::temp_dir().join(format!("hj212-gw-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::SledStore::open(&dir, &["p".to_string()], 1000).unwrap();
        let t0 = DateTime::parse("20260101000000000").unwrap();
        let k1 = Key::from_text("Key-One-12345678").unwrap();
        let k2 = Key::from_text("Key-Two-12345678").unwrap();
        let mut ring = KeyRing::load(&store, "p", k1.clone(), t0, 60);
        assert_eq!(ring.created_text(), "20260101000000000");
        assert!(!ring.is_due(t0, 90));
        assert!(ring.is_due(DateTime::from_millis(t0.to_millis() + 90 * 86_400_000).unwrap(), 90));
        let t1 = DateTime::from_millis(t0.to_millis() + 1000).unwrap();
        ring.install(&store, "p", k2.clone(), t1, t1).unwrap();
        assert_eq!(ring.current(), &k2);
        assert_eq!(ring.decrypt_keys(t1), [&k2, &k1]);
        let later = DateTime::from_millis(t1.to_millis() + 61_000).unwrap();
        assert_eq!(ring.decrypt_keys(later), [&k2]);
        // A restart finds the new key, whatever the configuration's initial key says.
        let again = KeyRing::load(&store, "p", k1.clone(), later, 60);
        assert_eq!(again.current(), &k2);
        assert_eq!(again.created(), t1);
        assert_eq!(again.decrypt_keys(t1), [&k2, &k1]);
        assert!(!format!("{again:?}").contains("Key-"));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
