//! Idempotency keys of triggers: the key a call carries (header or body), how it is kept,
//! and the hash of the body that must match when the key is used again.

use jobdock_types::TriggerRequest;
use serde_json::json;

use super::{Result, ServiceError};
use crate::crypto::sha256_hex;

pub(super) fn key_of(req: &TriggerRequest, header: Option<&str>) -> Result<Option<String>> {
    let key = match (req.idempotency_key.as_deref(), header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ServiceError::invalid(
                "idempotency_key",
                "differs from the Idempotency-Key header; send one or make them equal",
            ))
        }
        (Some(k), _) | (None, Some(k)) => Some(k.to_string()),
        (None, None) => None,
    };
    let Some(k) = key else { return Ok(None) };
    if k.is_empty() || k.chars().count() > MAX_KEY || k.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY} printable characters"),
        ));
    }
    if k.chars().count() <= STORED_KEY {
        return Ok(Some(k));
    }
    // A caller without a hash function (Data Factory's expressions have none) may send a
    // long key built from its run id and a ForEach item; the store keeps its digest.
    Ok(Some(format!("sha256:{}", sha256_hex(k.as_bytes()))))
}

/// Longest idempotency key kept as it is; a longer one is kept as `sha256:<hex>` of it.
const STORED_KEY: usize = 255;

/// Longest idempotency key accepted.
const MAX_KEY: usize = 4096;

/// SHA-256 of the parts of the body that shape the run, to spot a key reused for another run.
pub(super) fn request_hash(req: &TriggerRequest) -> String {
    let canonical = json!({ "env": req.env, "command": req.command }).to_string();
    sha256_hex(canonical.as_bytes())
}
