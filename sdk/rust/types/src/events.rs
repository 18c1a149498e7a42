//! A run's timeline: what happened to it, when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunEventKind {
    /// The run was created and waits for its turn.
    Queued,
    /// The run was created as skipped (`on_conflict: skip`).
    Skipped,
    /// The run waits: for a lock, its job's `max_parallel`, its backend's cap, or an earlier
    /// run of its job. Recorded when the reason changes.
    Waiting,
    /// The engine took the run to start it; `detail.waited_ms` is the time since it was queued.
    Claimed,
    /// The backend accepted the container (image pulled when it was missing).
    Launched,
    /// The container started.
    Started,
    /// The first line of output arrived.
    FirstOutput,
    /// The script reported progress (a `::jobdock::progress <text>` line).
    Progress,
    /// The backend could not deliver some of the output: the log says where and why, and
    /// the run's `log_complete` is false.
    LogGap,
    /// Someone asked for the run to be cancelled.
    CancelRequested,
    /// An anomaly was raised (`detail.kind` says which).
    Anomaly,
    /// The attempt failed and another one follows.
    RetryScheduled,
    /// The run reached its final status.
    Finished,
}

impl RunEventKind {
    /// Every kind.
    pub const ALL: [RunEventKind; 13] = [
        Self::Queued,
        Self::Skipped,
        Self::Waiting,
        Self::Claimed,
        Self::Launched,
        Self::Started,
        Self::FirstOutput,
        Self::Progress,
        Self::LogGap,
        Self::CancelRequested,
        Self::Anomaly,
        Self::RetryScheduled,
        Self::Finished,
    ];

    /// The kind as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Skipped => "skipped",
            Self::Waiting => "waiting",
            Self::Claimed => "claimed",
            Self::Launched => "launched",
            Self::Started => "started",
            Self::FirstOutput => "first_output",
            Self::Progress => "progress",
            Self::LogGap => "log_gap",
            Self::CancelRequested => "cancel_requested",
            Self::Anomaly => "anomaly",
            Self::RetryScheduled => "retry_scheduled",
            Self::Finished => "finished",
        }
    }
}

impl std::str::FromStr for RunEventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown run event `{s}`"))
    }
}

/// One entry of a run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunEvent {
    /// Increases with every event of the engine: the order of the timeline.
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The attempt it belongs to.
    pub attempt: i64,
    /// What happened.
    pub kind: RunEventKind,
    /// In words.
    pub message: String,
    /// Facts for machines (durations in ms, lock names, exit code...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}
