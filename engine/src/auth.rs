//! API tokens: generation, hashing, and what a token's holder may do.
//!
//! Tokens are 256 random bits, shown once and stored only as their SHA-256. A plain hash (not
//! a slow password hash) suffices because the values are random, not chosen by people; the
//! bootstrap token, which an operator may choose, is stored the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jobdock_types::Scope;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::TokenRow;

/// Prefix of generated tokens, so that secret scanners and people recognise them.
const PREFIX: &str = "jd_";

/// A fresh token value.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator works");
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Compares two hashes in constant time. The database finds the row by its hash already;
/// this guards against a lookup that matched on anything but the exact bytes.
pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling: the token that authenticated the request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// The token's name.
    pub token_name: String,
    /// What it may do.
    pub scope: Scope,
    /// The job-name patterns it is restricted to, or `None` for every job.
    pub jobs: Option<Vec<glob::Pattern>>,
}

impl Principal {
    /// The principal of a stored token.
    pub fn from_row(row: &TokenRow) -> Option<Self> {
        let scope = row.scope.parse().ok()?;
        let jobs = match &row.jobs {
            None => None,
            Some(p) => Some(
                p.iter()
                    .map(|s| glob::Pattern::new(s))
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?,
            ),
        };
        Some(Self {
            token_id: row.id.clone(),
            token_name: row.name.clone(),
            scope,
            jobs,
        })
    }

    /// Whether the token's scope includes `needed`.
    pub fn has_scope(&self, needed: Scope) -> bool {
        self.scope >= needed
    }

    /// Whether the token may reach the job called `name`.
    pub fn may_reach_job(&self, name: &str) -> bool {
        match &self.jobs {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(name)),
        }
    }

    /// Whether the token reaches every job (not restricted to some).
    pub fn reaches_all_jobs(&self) -> bool {
        self.jobs.is_none()
    }
}

/// Checks a job-name pattern of a token: the characters of job names plus `*`.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*')
    {
        return Err("may contain only lowercase letters, digits, `-` and `*`".into());
    }
    Ok(())
}

/// How long a verified token is trusted without asking the store again. A revocation takes
/// effect at once on the replica that made it (which clears the cache) and within this long
/// on the others.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// Most tokens kept; past it the stale ones go, and if none is stale, all.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Verified tokens by hash, so that a request costs no store read for its token: a status
/// poll is the engine's most frequent request, and the token's read was a fifth of its
/// work. Written by hand because entries live two seconds: a map that drops its stale
/// entries when it grows does all a cache crate's eviction policies would.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, CachedToken>>,
}

/// A verified token: who it is, and when it was last recorded as used (Unix ms).
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// What its holder may do.
    pub principal: Principal,
    /// When its use was last recorded.
    pub last_used_at: Option<i64>,
    verified: Instant,
}

impl TokenCache {
    /// The token with SHA-256 `hash`, if it was verified less than [`TOKEN_CACHE_TTL`] ago.
    pub fn get(&self, hash: &[u8]) -> Option<CachedToken> {
        let entries = self.entries.lock().expect("token cache lock");
        entries
            .get(hash)
            .filter(|c| c.verified.elapsed() < TOKEN_CACHE_TTL)
            .cloned()
    }

    /// Remembers a token just verified against the store; returns what it keeps.
    pub fn put(
        &self,
        hash: Vec<u8>,
        principal: Principal,
        last_used_at: Option<i64>,
    ) -> CachedToken {
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.retain(|_, c| c.verified.elapsed() < TOKEN_CACHE_TTL);
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
        }
        let token = CachedToken {
            principal,
            last_used_at,
            verified: Instant::now(),
        };
        entries.insert(hash, token.clone());
        token
    }

    /// Notes that the token's use was recorded at `at_ms`.
    pub fn used(&self, hash: &[u8], at_ms: i64) {
        if let Some(c) = self.entries.lock().expect("token cache lock").get_mut(hash) {
            c.last_used_at = Some(at_ms);
        }
    }

    /// Forgets every token (after a revocation).
    pub fn clear(&self) {
        self.entries.lock().expect("token cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_token_is_trusted_briefly_and_forgotten_on_clear() {
        let cache = TokenCache::default();
        let hash = hash_token("jd_x");
        assert!(cache.get(&hash).is_none());
        cache.put(hash.clone(), principal(Scope::Read, None), None);
        assert_eq!(cache.get(&hash).unwrap().principal.token_id, "t");
        cache.used(&hash, 42);
        assert_eq!(cache.get(&hash).unwrap().last_used_at, Some(42));
        assert!(cache.get(&hash_token("jd_y")).is_none());
        cache.clear();
        assert!(cache.get(&hash).is_none());
        // An entry older than the TTL is not trusted.
        cache.put(hash.clone(), principal(Scope::Read, None), None);
        cache
            .entries
            .lock()
            .unwrap()
            .get_mut(&hash)
            .unwrap()
            .verified -= TOKEN_CACHE_TTL;
        assert!(cache.get(&hash).is_none());
    }

    fn principal(scope: Scope, jobs: Option<&[&str]>) -> Principal {
        Principal::from_row(&TokenRow {
            id: "t".into(),
            name: "n".into(),
            scope: scope.as_str().into(),
            jobs: jobs.map(|j| j.iter().map(|s| s.to_string()).collect()),
            token_hash: vec![],
            created_at: 0,
            last_used_at: None,
        })
        .unwrap()
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = generate_token();
        assert!(a.starts_with("jd_") && a.len() >= 3 + 43, "{a}");
        assert_ne!(a, generate_token());
        assert_eq!(hash_token(&a).len(), 32);
        assert!(hashes_match(&hash_token(&a), &hash_token(&a)));
        assert!(!hashes_match(&hash_token(&a), &hash_token("b")));
    }

    #[test]
    fn scopes_nest() {
        let op = principal(Scope::Operator, None);
        assert!(
            op.has_scope(Scope::Read)
                && op.has_scope(Scope::Trigger)
                && op.has_scope(Scope::Operator)
        );
        assert!(!op.has_scope(Scope::Admin));
        assert!(!principal(Scope::Read, None).has_scope(Scope::Trigger));
    }

    #[test]
    fn job_patterns_restrict() {
        let p = principal(Scope::Trigger, Some(&["customer-a-*", "shared"]));
        assert!(p.may_reach_job("customer-a-orders"));
        assert!(p.may_reach_job("shared"));
        assert!(!p.may_reach_job("customer-b-orders"));
        assert!(!p.may_reach_job("shared-2"));
        assert!(principal(Scope::Read, None).may_reach_job("anything"));
        assert!(validate_pattern("customer-a-*").is_ok());
        assert!(validate_pattern("Customer?").is_err());
    }
}
