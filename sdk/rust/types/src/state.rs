//! The state a job keeps between runs (`/api/v1/jobs/{name}/state`): any JSON object, with
//! every version kept (up to a limit) so that a bad bookmark can be reverted.

use serde::{Deserialize, Serialize};

/// One version of a job's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateVersion {
    /// From 1, one more for each write or revert.
    pub version: i64,
    /// The state, a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub state: serde_json::Map<String, serde_json::Value>,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The run that wrote it, when a run did.
    pub run_id: Option<String>,
    /// The token (or run) that wrote it.
    pub created_by: Option<String>,
}

/// Body of `POST /api/v1/jobs/{name}/state/revert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StateRevert {
    /// The version whose content becomes current again, as a new version.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: i64,
}
