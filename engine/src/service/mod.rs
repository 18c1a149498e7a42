//! The rules of the engine, below the HTTP layer: validation, secrets, tokens, alerts, audit.
//! Handlers, the scheduler and the CLI's offline commands all pass through here, so that a
//! rule lives in one place.

pub mod alerts;
pub mod anomalies;
pub mod audit;
pub mod callbacks;
pub mod cancels;
pub mod channels;
pub mod finished;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod links;
pub mod locks;
pub mod logs;
pub mod page;
pub mod runs;
pub mod state;
pub mod stats;
pub mod tokens;
pub mod validate;
pub mod watch;

use std::sync::Arc;

use jobdock_types::{BackendName, FieldError};

use crate::crypto::KeyRing;
use crate::store::Store;

use crate::crypto::CryptoError;
use crate::store::StoreError;

/// What the service functions need: the store, the key ring, the engine's backends, this
/// process's metrics and the signal of the runs it ends.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// The master keys.
    pub keys: Arc<KeyRing>,
    /// Backends a job may name.
    pub backends: Arc<[BackendName]>,
    /// Backend of jobs that name none.
    pub default_backend: BackendName,
    /// This process's metrics.
    pub metrics: crate::metrics::Metrics,
    /// Where a run's callback may go.
    pub callbacks: crate::egress::CallbackPolicy,
    /// Tokens verified in the last moments (see [`crate::auth::TokenCache`]).
    pub tokens: Arc<crate::auth::TokenCache>,
    /// The runs long polls wait for, watched by one task (see [`watch::RunWatch`]).
    pub watch: Arc<watch::RunWatch>,
    /// Runs that have ended, answered without the database (see [`finished`]).
    pub finished: Arc<finished::FinishedRuns>,
    /// Supervisors waiting for a cancel of their run (see [`cancels`]).
    pub cancels: Arc<cancels::CancelBoard>,
}

/// Who acts, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The token's id.
    pub token_id: Option<String>,
    /// The token's name.
    pub token_name: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
}

impl Actor {
    /// An audit entry by this actor.
    pub fn audit<'a>(
        &'a self,
        action: &'a str,
        target: &'a str,
        detail: serde_json::Value,
    ) -> crate::store::NewAuditEntry<'a> {
        crate::store::NewAuditEntry {
            token_id: self.token_id.as_deref(),
            token_name: self.token_name.as_deref(),
            action,
            target,
            detail,
            request_id: self.request_id.as_deref(),
        }
    }
}

/// Errors of the service layer; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Fields of the request are wrong.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's precondition (`If-Match`) no longer holds.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening a secret failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl ServiceError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

/// Shorthand.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
