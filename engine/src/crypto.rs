//! Secrets at rest: AES-256-GCM (ring) under a ring of master keys.
//!
//! Each value gets a fresh random nonce; the job's name and the secret's key are bound as
//! associated data, so a sealed value copied onto another job or key does not open. The id
//! of the master key that sealed a value is stored beside it: it is derived from the key
//! itself (a SHA-256 fingerprint), so that ids need no configuration and cannot be mixed up.
//!
//! The same keys sign links: a URL that lets whoever holds it read one run until it expires
//! (HMAC-SHA256 under a key derived from each master key with HKDF, so that signing never
//! uses the sealing key itself).

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

use crate::store::SealedSecret;

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A configured key is not base64 of 32 bytes.
    #[error("master key #{index} is not the base64 of 32 bytes ({reason})")]
    BadKey {
        /// Its place in the ring, from 1.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// No key configured.
    #[error("no master key configured")]
    NoKey,
    /// The value was sealed with a key that is not in the ring.
    #[error("value was sealed with master key {0}, which is not configured")]
    UnknownKey(String),
    /// The key is in the ring but the value does not open (tampered with, or moved).
    #[error("value does not open with master key {0}: wrong key or tampered data")]
    Open(String),
    /// The system's random generator failed.
    #[error("random generator failed")]
    Random,
    /// The key file could not be read or written.
    #[error("master key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct MasterKey {
    id: String,
    key: LessSafeKey,
    links: ring::hmac::Key,
    run_tokens: ring::hmac::Key,
}

/// How a run token starts (see [`KeyRing::run_token`]).
pub const RUN_TOKEN_PREFIX: &str = "jdrun_";

/// The master keys: the first seals, all of them open.
pub struct KeyRing {
    keys: Vec<MasterKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// A ring from base64 keys, newest first, separated by commas, spaces or newlines.
    pub fn parse(keys: &SecretString) -> Result<Self, CryptoError> {
        let mut ring = Vec::new();
        let text = keys.expose_secret();
        for (i, k) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .enumerate()
        {
            let bad = |reason: String| CryptoError::BadKey {
                index: i + 1,
                reason,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(k)
                .map_err(|e| bad(e.to_string()))?;
            if bytes.len() != 32 {
                return Err(bad(format!("{} bytes", bytes.len())));
            }
            ring.push(MasterKey {
                id: fingerprint(&bytes),
                key: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad("rejected".into()))?,
                ),
                links: derived_key(&bytes, b"link signing v1"),
                run_tokens: derived_key(&bytes, b"run tokens v1"),
            });
        }
        if ring.is_empty() {
            return Err(CryptoError::NoKey);
        }
        Ok(Self {
            keys: ring,
            rng: SystemRandom::new(),
        })
    }

    /// A link's signature: it lets whoever holds it read run `run_id` until `expires_at`
    /// (Unix seconds). URL-safe base64, signed with the newest key.
    pub fn sign_link(&self, run_id: &str, expires_at: i64) -> String {
        let tag = ring::hmac::sign(
            &self.keys[0].links,
            link_message(run_id, expires_at).as_bytes(),
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `signature` was made by [`KeyRing::sign_link`] for this run and expiry under
    /// any key of the ring (so that a rotation leaves links valid until they expire). The
    /// expiry itself is the caller's to check.
    pub fn verify_link(&self, run_id: &str, expires_at: i64, signature: &str) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let message = link_message(run_id, expires_at);
        self.keys
            .iter()
            .any(|k| ring::hmac::verify(&k.links, message.as_bytes(), &tag).is_ok())
    }

    /// The token of attempt `attempt` of run `run_id` (`JOBDOCK_RUN_TOKEN`):
    /// `jdrun_<run id>.<attempt>.<HMAC>`. Derived, not stored, so that an engine that adopts
    /// a running container after a restart knows it again (to redact it from the log).
    pub fn run_token(&self, run_id: &str, attempt: i64) -> String {
        let tag = ring::hmac::sign(
            &self.keys[0].run_tokens,
            format!("{run_id}:{attempt}").as_bytes(),
        );
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        format!("{RUN_TOKEN_PREFIX}{run_id}.{attempt}.{sig}")
    }

    /// The run and attempt a run token was made for by [`KeyRing::run_token`] under any key
    /// of the ring; `None` for anything else. Whether that attempt still runs is the
    /// caller's to check.
    pub fn verify_run_token(&self, token: &str) -> Option<(String, i64)> {
        let rest = token.strip_prefix(RUN_TOKEN_PREFIX)?;
        let (run_id, rest) = rest.split_once('.')?;
        let (attempt, sig) = rest.split_once('.')?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        let message = format!("{run_id}:{attempt}");
        let valid = self
            .keys
            .iter()
            .any(|k| ring::hmac::verify(&k.run_tokens, message.as_bytes(), &tag).is_ok());
        valid.then(|| Some((run_id.to_string(), attempt.parse().ok()?)))?
    }

    /// A fresh random key, as base64.
    pub fn generate_key() -> Result<String, CryptoError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CryptoError::Random)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Reads a key file (one base64 key per line, newest first).
    pub fn read_file(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|source| CryptoError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&SecretString::from(text))
    }

    /// Creates a key file holding one fresh key, readable by its owner only.
    pub fn create_file(path: &Path) -> Result<Self, CryptoError> {
        let key = Self::generate_key()?;
        write_private(path, &format!("{key}\n")).map_err(|source| CryptoError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&SecretString::from(key))
    }

    /// The id of the key that seals.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Whether a key with this id is in the ring.
    pub fn has(&self, key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == key_id)
    }

    /// Seals `value` for secret `key` of job `job` under the primary key.
    pub fn seal(&self, job: &str, key: &str, value: &str) -> Result<SealedSecret, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let primary = &self.keys[0];
        let mut data = value.as_bytes().to_vec();
        primary
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(job, key)),
                &mut data,
            )
            .map_err(|_| CryptoError::Random)?;
        Ok(SealedSecret {
            key: key.to_string(),
            key_id: primary.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: data,
        })
    }

    /// Opens a sealed value of job `job`.
    pub fn open(&self, job: &str, sealed: &SealedSecret) -> Result<SecretString, CryptoError> {
        let mk = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        let fail = || CryptoError::Open(sealed.key_id.clone());
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| fail())?;
        let mut data = sealed.ciphertext.clone();
        let plain = mk
            .key
            .open_in_place(nonce, Aad::from(aad(job, &sealed.key)), &mut data)
            .map_err(|_| fail())?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| fail())?;
        Ok(SecretString::from(text))
    }
}

fn aad(job: &str, key: &str) -> Vec<u8> {
    // Length-prefixed so that ("a-b", "c") and ("a", "b-c") can never bind the same bytes.
    format!("jobdock/v1/{}:{job}/{key}", job.len()).into_bytes()
}

/// The key that signs links, derived from a master key (HKDF-SHA256).
/// A key for one purpose, derived from a master key (HKDF-SHA256), so that a signature made
/// for one purpose is worthless for another.
fn derived_key(master: &[u8], purpose: &'static [u8]) -> ring::hmac::Key {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"jobdock");
    let info: &[&[u8]] = &[purpose];
    let prk = salt.extract(master);
    let okm = prk
        .expand(info, ring::hmac::HMAC_SHA256)
        .expect("HMAC-SHA256's key length is a valid HKDF output length");
    ring::hmac::Key::from(okm)
}

fn link_message(run_id: &str, expires_at: i64) -> String {
    format!("run:{run_id}:{expires_at}")
}

/// The SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn fingerprint(key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a file that only its owner may read (mode 0600 from its creation on).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::parse(&SecretString::from(keys.join(","))).unwrap()
    }

    #[test]
    fn a_run_token_names_its_run_and_attempt_and_nothing_else_passes() {
        let old = KeyRing::generate_key().unwrap();
        let new = KeyRing::generate_key().unwrap();
        let r = ring(&[&old]);
        let t = r.run_token("0190-run", 2);
        assert!(t.starts_with("jdrun_0190-run.2."), "{t}");
        assert_eq!(r.verify_run_token(&t), Some(("0190-run".into(), 2)));
        // After a rotation the old key still verifies it; another ring does not.
        assert_eq!(
            ring(&[&new, &old]).verify_run_token(&t),
            Some(("0190-run".into(), 2))
        );
        assert_eq!(ring(&[&new]).verify_run_token(&t), None);
        // Another run or attempt with the same signature, a link's signature, garbage.
        let sig = t.rsplit('.').next().unwrap();
        for forged in [
            format!("jdrun_0190-run.3.{sig}"),
            format!("jdrun_0190-other.2.{sig}"),
            format!("jdrun_0190-run.2.{}", r.sign_link("0190-run", 2)),
            "jdrun_0190-run.2".into(),
            "jd_0190-run.2.x".into(),
            String::new(),
        ] {
            assert_eq!(r.verify_run_token(&forged), None, "{forged}");
        }
    }

    #[test]
    fn a_link_opens_one_run_until_it_expires_and_survives_rotation() {
        let old = KeyRing::generate_key().unwrap();
        let new = KeyRing::generate_key().unwrap();
        let r = ring(&[&old]);
        let sig = r.sign_link("run-1", 1_900_000_000);
        assert!(r.verify_link("run-1", 1_900_000_000, &sig));
        assert!(!r.verify_link("run-2", 1_900_000_000, &sig), "another run");
        assert!(
            !r.verify_link("run-1", 1_900_000_001, &sig),
            "another expiry"
        );
        assert!(
            !r.verify_link("run-1", 1_900_000_000, "AAAA"),
            "a forged signature"
        );
        assert!(!r.verify_link("run-1", 1_900_000_000, "not base64!"));
        assert!(
            ring(&[&new, &old]).verify_link("run-1", 1_900_000_000, &sig),
            "rotated"
        );
        assert!(
            !ring(&[&new]).verify_link("run-1", 1_900_000_000, &sig),
            "key dropped"
        );
    }

    #[test]
    fn seal_then_open_round_trips_with_fresh_nonces() {
        let k = KeyRing::generate_key().unwrap();
        let r = ring(&[&k]);
        let a = r.seal("job-a", "TOKEN", "s3cret").unwrap();
        let b = r.seal("job-a", "TOKEN", "s3cret").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(r.open("job-a", &a).unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn a_value_moved_to_another_job_or_key_does_not_open() {
        let r = ring(&[&KeyRing::generate_key().unwrap()]);
        let mut s = r.seal("job-a", "TOKEN", "v").unwrap();
        assert!(matches!(r.open("job-b", &s), Err(CryptoError::Open(_))));
        s.key = "OTHER".into();
        assert!(matches!(r.open("job-a", &s), Err(CryptoError::Open(_))));
    }

    #[test]
    fn old_keys_open_and_the_first_key_seals() {
        let old = KeyRing::generate_key().unwrap();
        let new = KeyRing::generate_key().unwrap();
        let sealed_old = ring(&[&old]).seal("j", "K", "v").unwrap();
        let both = ring(&[&new, &old]);
        assert_eq!(both.open("j", &sealed_old).unwrap().expose_secret(), "v");
        assert_ne!(both.seal("j", "K", "v").unwrap().key_id, sealed_old.key_id);
        assert!(matches!(
            ring(&[&new]).open("j", &sealed_old),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_are_named() {
        let err = KeyRing::parse(&SecretString::from("not-base64!")).unwrap_err();
        assert!(err.to_string().contains("#1"), "{err}");
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = KeyRing::parse(&SecretString::from(short)).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        assert!(matches!(
            KeyRing::parse(&SecretString::from(" ")),
            Err(CryptoError::NoKey)
        ));
    }
}
