//! API tokens and their scopes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a token may do. Each scope includes everything of the scopes below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read jobs, runs, logs and locks.
    Read,
    /// Read, and start, cancel and read runs: the scope a pipeline holds.
    Trigger,
    /// Trigger, and manage jobs, secrets and locks.
    Operator,
    /// Everything, tokens and the audit log included.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Trigger => "trigger",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "trigger" => Ok(Self::Trigger),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope `{other}`: expected admin, operator, trigger or read"
            )),
        }
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A name for people, e.g. `adf-prod`.
    pub name: String,
    /// What the token may do.
    pub scope: Scope,
    /// Restrict the token to jobs whose names match one of these patterns (`*` matches any
    /// run of characters), e.g. `["customer-a-*"]`. Left out: every job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<String>>,
}

/// A token as listed: never its secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// The token's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// The job-name patterns it is restricted to, or `null` for every job.
    pub jobs: Option<Vec<String>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /api/v1/tokens`: the only time the token's value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The token's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// The job-name patterns it is restricted to.
    pub jobs: Option<Vec<String>>,
    /// The bearer token. Store it now: it cannot be shown again.
    pub token: String,
}
