//! The site registry: which MNs may talk to us, with which password and ST, and what we learn
//! about each site while it talks (its CRC variant, its frame rate).
//!
//! Passwords are compared here and nowhere else, and never logged: refusals carry a reason, not
//! the value.
//!
//! What is learnt per MN is learnt only from frames that authenticated (or were accepted under
//! `auth.unknown_mn = "accept"`), and each map holds at most [`MAX_LEARNT`] MNs, so frames that
//! merely claim an MN can neither change what a site is answered with nor grow memory.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hj212_codec::crc::CrcVariant;
use hj212_codec::crypt::{CipherForm, Key};
use hj212_codec::packet::Version;

use crate::config::{Auth, CodeTable, RefusalPolicy, RegistryEntry, UnknownMnPolicy};

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The MN is not in the registry.
    UnknownMn,
    /// The password does not match.
    WrongPassword,
    /// The site may not use this ST.
    StNotAllowed,
}

impl Refusal {
    /// A short stable name for logs and events.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnknownMn => "unknown_mn",
            Self::WrongPassword => "wrong_password",
            Self::StNotAllowed => "st_not_allowed",
        }
    }
}

/// The registry's verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted; the code table in force for the MN.
    Accept {
        /// Which site-information table applies.
        code_table: CodeTable,
    },
    /// Refused and dropped.
    Reject(Refusal),
    /// Refused and published to the quarantine topic.
    Quarantine(Refusal),
}

/// MNs remembered per learnt property (CRC variant, protocol version), at most.
pub const MAX_LEARNT: usize = 100_000;

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u32,
}

/// The registry plus what is learnt per MN.
#[derive(Debug)]
pub struct Registry {
    entries: RwLock<(HashMap<String, RegistryEntry>, Auth)>,
    crc_seen: Mutex<HashMap<String, CrcVariant>>,
    versions: Mutex<HashMap<String, Version>>,
    rate: Mutex<HashMap<String, Window>>,
    max_per_minute: u32,
}

impl Registry {
    /// Builds the registry from the configuration.
    #[must_use]
    pub fn new(entries: &[RegistryEntry], policy: Auth, max_per_minute: u32) -> Self {
        Self {
            entries: RwLock::new((entries.iter().map(|e| (e.mn.clone(), e.clone())).collect(), policy)),
            crc_seen: Mutex::default(),
            versions: Mutex::default(),
            rate: Mutex::default(),
            max_per_minute,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (HashMap<String, RegistryEntry>, Auth)> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the entries and the policy (a reload); what was learnt per MN is kept.
    ///
    /// # Errors
    /// The entries are not valid (see [`crate::config::validate_registry`]); the old ones stay.
    pub fn replace(&self, entries: &[RegistryEntry], policy: Auth) -> Result<usize, crate::ConfigError> {
        crate::config::validate_registry(entries)?;
        let map: HashMap<String, RegistryEntry> = entries.iter().map(|e| (e.mn.clone(), e.clone())).collect();
        let n = map.len();
        *self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (map, policy);
        Ok(n)
    }

    /// The password registered for `mn` (used in the requests the platform sends it).
    #[must_use]
    pub fn password(&self, mn: &str) -> Option<String> {
        self.read().0.get(mn).map(|e| e.password.clone())
    }

    /// The registry's SM4 key and the cipher form to send with, when `mn` has
    /// `encryption = "sm4"`.
    #[must_use]
    pub fn cipher(&self, mn: &str) -> Option<(Key, CipherForm)> {
        let guard = self.read();
        let e = guard.0.get(mn).filter(|e| e.encryption == crate::config::Encryption::Sm4)?;
        Some((Key::from_text(&e.key)?, e.cipher_form.map_or(CipherForm::Binary, |f| f.form())))
    }

    /// Remembers the protocol version a site speaks (from its `Flag`); returns the previous one
    /// when it changed.
    pub fn remember_version(&self, mn: &str, version: Version) -> Option<Version> {
        let mut seen = self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(mn) {
            Some(v) if *v == version => None,
            Some(v) => Some(std::mem::replace(v, version)),
            None => {
                if seen.len() < MAX_LEARNT {
                    seen.insert(mn.to_string(), version);
                }
                None
            }
        }
    }

    /// The protocol version `mn` was last seen speaking.
    #[must_use]
    pub fn version(&self, mn: &str) -> Option<Version> {
        self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(mn).copied()
    }

    /// Checks a frame's MN, password and ST.
    #[must_use]
    pub fn check(&self, mn: &str, pw: Option<&str>, st: &str) -> Verdict {
        let guard = self.read();
        let (entries, policy) = &*guard;
        let refuse = |r: Refusal| match policy.policy {
            RefusalPolicy::Reject => Verdict::Reject(r),
            RefusalPolicy::Quarantine => Verdict::Quarantine(r),
        };
        let Some(entry) = entries.get(mn) else {
            return match policy.unknown_mn {
                UnknownMnPolicy::Reject => Verdict::Reject(Refusal::UnknownMn),
                UnknownMnPolicy::Quarantine => Verdict::Quarantine(Refusal::UnknownMn),
                UnknownMnPolicy::Accept => Verdict::Accept { code_table: CodeTable::National },
            };
        };
        if !constant_time_eq(pw.unwrap_or("").as_bytes(), entry.password.as_bytes()) {
            return refuse(Refusal::WrongPassword);
        }
        // ST 91 is the interaction system: answers from the site use it whatever its own ST is.
        if !entry.allowed_st.is_empty()
            && st != crate::answers::ST_INTERACTION
            && !entry.allowed_st.iter().any(|s| s == st)
        {
            return refuse(Refusal::StNotAllowed);
        }
        Verdict::Accept { code_table: entry.code_table }
    }

    /// The CRC policy to decode a frame from `mn` with (strict mode only; lenient accepts all).
    #[must_use]
    pub fn fixed_crc(&self, mn: &str) -> Option<CrcVariant> {
        self.read().0.get(mn).and_then(RegistryEntry::crc_variant)
    }

    /// The site-information table in force for `mn`, when it is in the registry.
    #[must_use]
    pub fn code_table(&self, mn: &str) -> Option<CodeTable> {
        self.read().0.get(mn).map(|e| e.code_table)
    }

    /// Remembers the CRC variant a site uses; returns the previous one when it changed.
    ///
    /// Call it only for a frame that authenticated. At most [`MAX_LEARNT`] MNs are remembered;
    /// beyond, a new MN is answered with the HJ 212 CRC (or its registry entry's).
    pub fn remember_crc(&self, mn: &str, variant: CrcVariant) -> Option<CrcVariant> {
        let mut seen = self.crc_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(mn) {
            Some(v) if *v == variant => None,
            Some(v) => Some(std::mem::replace(v, variant)),
            None => {
                if seen.len() < MAX_LEARNT {
                    seen.insert(mn.to_string(), variant);
                }
                None
            }
        }
    }

    /// The CRC variant to answer `mn` with: the configured one, else the one it was seen using.
    #[must_use]
    pub fn crc_for(&self, mn: &str) -> CrcVariant {
        self.fixed_crc(mn).unwrap_or_else(|| {
            let seen = self.crc_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.get(mn).copied().unwrap_or(CrcVariant::Hj212)
        })
    }

    /// Counts a frame against the MN's per-minute budget; false when it is over.
    pub fn allow_rate(&self, mn: &str, now: Instant) -> bool {
        if self.max_per_minute == 0 {
            return true;
        }
        let mut rate = self.rate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if rate.len() > 100_000 {
            rate.retain(|_, w| now.duration_since(w.start) < Duration::from_secs(60));
        }
        let w = rate.entry(mn.to_string()).or_insert(Window { start: now, count: 0 });
        if now.duration_since(w.start) >= Duration::from_secs(60) {
            *w = Window { start: now, count: 0 };
        }
        w.count += 1;
        w.count <= self.max_per_minute
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mn: &str, pw: &str, st: &[&str]) -> RegistryEntry {
        RegistryEntry {
            mn: mn.into(),
            password: pw.into(),
            allowed_st: st.iter().map(|s| (*s).to_string()).collect(),
            code_table: CodeTable::National,
            crc: "auto".into(),
            ..RegistryEntry::default()
        }
    }

    #[test]
    fn verdicts_follow_the_policy() {
        let r = Registry::new(&[entry("A", "pw", &["32"])], Auth::default(), 0);
        assert!(matches!(r.check("A", Some("pw"), "32"), Verdict::Accept { .. }));
        assert!(matches!(r.check("A", Some("pw"), "91"), Verdict::Accept { .. }));
        assert_eq!(r.check("A", Some("px"), "32"), Verdict::Reject(Refusal::WrongPassword));
        assert_eq!(r.check("A", None, "32"), Verdict::Reject(Refusal::WrongPassword));
        assert_eq!(r.check("A", Some("pw"), "31"), Verdict::Reject(Refusal::StNotAllowed));
        assert_eq!(r.check("B", Some("pw"), "32"), Verdict::Reject(Refusal::UnknownMn));
        let q = Registry::new(
            &[entry("A", "pw", &[])],
            Auth { policy: RefusalPolicy::Quarantine, unknown_mn: UnknownMnPolicy::Quarantine },
            0,
        );
        assert_eq!(q.check("A", Some("x"), "32"), Verdict::Quarantine(Refusal::WrongPassword));
        assert_eq!(q.check("Z", Some("x"), "32"), Verdict::Quarantine(Refusal::UnknownMn));
    }

    #[test]
    fn a_reload_replaces_entries_and_an_invalid_one_keeps_the_old() {
        let r = Registry::new(&[entry("A", "pw", &[])], Auth::default(), 0);
        assert_eq!(r.replace(&[entry("B", "pw", &[])], Auth::default()), Ok(1));
        assert_eq!(r.check("A", Some("pw"), "32"), Verdict::Reject(Refusal::UnknownMn));
        assert!(matches!(r.check("B", Some("pw"), "32"), Verdict::Accept { .. }));
        assert!(r.replace(&[entry("C", "", &[])], Auth::default()).is_err());
        assert!(matches!(r.check("B", Some("pw"), "32"), Verdict::Accept { .. }));
    }

    #[test]
    fn the_rate_limit_resets_every_minute() {
        let r = Registry::new(&[], Auth::default(), 2);
        let t = Instant::now();
        assert!(r.allow_rate("A", t) && r.allow_rate("A", t));
        assert!(!r.allow_rate("A", t));
        assert!(r.allow_rate("B", t));
        assert!(r.allow_rate("A", t + Duration::from_secs(61)));
    }

    #[test]
    fn crc_variants_are_remembered() {
        let r = Registry::new(&[], Auth::default(), 0);
        assert_eq!(r.crc_for("A"), CrcVariant::Hj212);
        assert_eq!(r.remember_crc("A", CrcVariant::ModbusLowFirst), None);
        assert_eq!(r.crc_for("A"), CrcVariant::ModbusLowFirst);
        assert_eq!(r.remember_crc("A", CrcVariant::Hj212), Some(CrcVariant::ModbusLowFirst));
    }
}
