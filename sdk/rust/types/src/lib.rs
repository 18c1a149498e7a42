//! The shapes of Jobdock's HTTP API, shared by the engine (which serves them) and by every
//! client (which sends and reads them). Serde only: no HTTP, no database.
//!
//! Input types reject unknown fields, so that a typo in a job file is an error, not a
//! silently ignored setting.

mod alerts;
mod events;
mod jobs;
mod monitoring;
mod problem;
mod runs;
mod state;
mod stats;
mod tokens;

pub use alerts::*;
pub use events::*;
pub use jobs::*;
pub use monitoring::*;
pub use problem::*;
pub use runs::*;
pub use state::*;
pub use stats::*;
pub use tokens::*;

use serde::{Deserialize, Serialize};

/// A page of a list: `items` and, when there are more, the cursor that fetches the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One recorded change or action: who did what to what, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The token's id (`null` for actions of the engine itself or of the CLI's offline commands).
    pub token_id: Option<String>,
    /// The token's name at that time.
    pub token_name: Option<String>,
    /// What was done, e.g. `job.create`, `secret.set`, `token.revoke`, `run.trigger`.
    pub action: String,
    /// What it was done to, e.g. the job's name or the token's id.
    pub target: String,
    /// More about it (never a secret value).
    pub detail: serde_json::Value,
    /// The request that did it.
    pub request_id: Option<String>,
}
