//! Runs: one execution of a job, from trigger to final status, with its attempts and logs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a run stands. Final statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting to start (for a slot, a lock, or the next attempt's backoff).
    Queued,
    /// Claimed by the engine; the container is being created (image pull included).
    Starting,
    /// The container runs.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, was killed for memory, or could not start.
    Failed,
    /// Stopped because it ran longer than `timeout_seconds`.
    TimedOut,
    /// Stopped (or never started) because someone cancelled it.
    Cancelled,
    /// The backend no longer knows the run.
    Lost,
    /// Never started: its job's `on_conflict` is `skip` and a slot was taken.
    Skipped,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 9] = [
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Lost,
        Self::Skipped,
    ];

    /// The status as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
            Self::Skipped => "skipped",
        }
    }

    /// Whether the run has ended for good.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Starting | Self::Running)
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown run status `{s}`"))
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /api/v1/jobs/{name}/runs`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Environment variables added to (or overriding) the job's `env`. May not name a secret
    /// or a `JOBDOCK_*` variable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A command instead of the job's. Needs an operator token, or a job with
    /// `allow_command_override`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A retried call with the same key returns the first run (200) instead of starting
    /// another. Also accepted as the `Idempotency-Key` header; when both are sent they must
    /// be equal (422 otherwise). At most 4096 characters; one longer than 255 is kept as
    /// `sha256:<hex>` of it, so that a caller without a hash function may send a long one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A URL the engine POSTs the run's outcome to once the run is final, as Data Factory's
    /// Webhook activity expects: `{"Output": <the run>, "StatusCode": "200"}` for a run that
    /// succeeded, else `{"Output": …, "Error": {"ErrorCode", "Message"}, "StatusCode": "424"}`.
    /// It must be `https` to a host with public addresses only, unless the operator allows
    /// the host (`callback_allowed_hosts`). Not part of the idempotency comparison: a replay
    /// with another URI adds it, and calls it at once when the run has ended.
    #[serde(
        default,
        rename = "callBackUri",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub callback_uri: Option<String>,
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunAttempt {
    /// 1 for the first.
    pub attempt: i64,
    /// How this attempt ended, or `running`/`starting` while it goes on.
    pub status: RunStatus,
    /// Its exit code.
    pub exit_code: Option<i64>,
    /// Killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// Why it ended, in words.
    pub reason: Option<String>,
    /// When its container started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// The run's id.
    pub id: String,
    /// The job's name.
    pub job: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The current (or last) attempt, from 1.
    pub attempt: i64,
    /// Attempts allowed in all.
    pub max_attempts: i64,
    /// The latest attempt's exit code.
    pub exit_code: Option<i64>,
    /// The latest attempt was killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// Why the run stands where it does, in words (e.g. "exited with code 3").
    pub reason: Option<String>,
    /// What started it: `api`, `schedule`, `rerun`.
    pub trigger: String,
    /// The token (or schedule) that triggered it.
    pub triggered_by: Option<String>,
    /// The idempotency key it was triggered with.
    pub idempotency_key: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt's container started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// While queued for a retry: when the next attempt may start.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Trigger to the first attempt's start, in milliseconds.
    pub queue_ms: Option<i64>,
    /// The latest attempt's start to its end (or to now while running), in milliseconds.
    pub duration_ms: Option<i64>,
    /// Every attempt so far (in `GET /api/v1/runs/{id}`; lists leave it empty).
    pub attempts: Vec<RunAttempt>,
    /// False when the engine knows output is missing from the stored log: a backend could
    /// not deliver part of it (the log marks the place and the timeline has a `log_gap`
    /// event). Output dropped past the log cap does not count: the log ends saying so.
    #[serde(default = "yes")]
    pub log_complete: bool,
    /// The latest progress its script reported (`::jobdock::progress <done>/<total> <text>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
    /// The address of its log, absolute. Signed (`?exp=…&sig=…`): it opens this run's log
    /// without a token until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    /// Anomalies noticed on the run (`long_running`, `stalled`, `unusually_fast`...), oldest first.
    #[serde(default)]
    pub anomalies: Vec<crate::Anomaly>,
}

/// One line of a run's log, as `?format=jsonl` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// When the container wrote it.
    pub ts: DateTime<Utc>,
    /// `stdout` or `stderr` (or `jobdock` for the engine's own notices, such as the cap).
    pub stream: String,
    /// The line (secret values replaced by `***`).
    pub line: String,
    /// The attempt that wrote it.
    pub attempt: i64,
}

/// A run holding or waiting for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockRun {
    /// The run's id.
    pub run_id: String,
    /// Its job.
    pub job: String,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
}

/// A named lock shared by jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lock {
    /// The lock's name.
    pub key: String,
    /// How many runs may hold it at once (1 unless set).
    pub capacity: i64,
    /// The runs holding it, oldest first.
    pub holders: Vec<LockRun>,
    /// The queued runs that need it, first in line first.
    pub waiters: Vec<LockRun>,
    /// Holders of jobs the caller's token does not reach, counted, not shown.
    #[serde(default)]
    pub other_holders: i64,
    /// Waiters of jobs the caller's token does not reach, counted, not shown.
    #[serde(default)]
    pub other_waiters: i64,
}

/// Body of `PUT /api/v1/locks/{key}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LockCapacity {
    /// How many runs may hold the lock at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub capacity: i64,
}

fn yes() -> bool {
    true
}

/// The latest progress a run's script reported, with a line
/// `::jobdock::progress <done>[/<total>] [message]` (the SDK's `progress()` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunProgress {
    /// Items done, when the line starts with a count.
    pub done: Option<i64>,
    /// Items in all, when the line gives `<done>/<total>`.
    pub total: Option<i64>,
    /// The rest of the line.
    pub message: String,
    /// When the script reported it.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl RunProgress {
    /// Reads what follows the marker: `40/100 loading orders`, `40 loading`, or words only.
    pub fn parse(text: &str, at: chrono::DateTime<chrono::Utc>) -> Self {
        let text = text.trim();
        let (head, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let counts = match head.split_once('/') {
            Some((d, t)) => d
                .parse()
                .ok()
                .zip(t.parse().ok())
                .map(|(d, t)| (d, Some(t))),
            None => head.parse().ok().map(|d| (d, None)),
        };
        match counts {
            Some((done, total)) => Self {
                done: Some(done),
                total,
                message: rest.trim().to_string(),
                at,
            },
            None => Self {
                done: None,
                total: None,
                message: text.to_string(),
                at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunProgress;

    #[test]
    fn progress_reads_counts_then_words() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let p = |t: &str| {
            let p = RunProgress::parse(t, at);
            (p.done, p.total, p.message)
        };
        assert_eq!(
            p("40/100 loading orders"),
            (Some(40), Some(100), "loading orders".into())
        );
        assert_eq!(p("  7  rows "), (Some(7), None, "rows".into()));
        assert_eq!(p("12/80"), (Some(12), Some(80), String::new()));
        assert_eq!(p("loading 40/100"), (None, None, "loading 40/100".into()));
        assert_eq!(p("4.5/10 half"), (None, None, "4.5/10 half".into()));
        assert_eq!(p("40/x odd"), (None, None, "40/x odd".into()));
    }
}
