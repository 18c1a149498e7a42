//! Anomalies: what the engine notices about runs by itself, and the job settings that tune it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Running far longer than its job usually takes (raised while it still runs).
    LongRunning,
    /// Far longer than usual from trigger to running (queue, lock wait, pull, start).
    SlowStart,
    /// No output (and no heartbeat line) for a long time while running.
    Stalled,
    /// A success far faster than usual: an empty load is a classic silent failure.
    UnusuallyFast,
    /// Killed by the kernel for exceeding its memory limit.
    OomKilled,
    /// Stopped for running past its timeout.
    TimedOut,
    /// Several failures of the job in a row.
    FailureStreak,
}

impl AnomalyKind {
    /// Every kind.
    pub const ALL: [AnomalyKind; 7] = [
        Self::LongRunning,
        Self::SlowStart,
        Self::Stalled,
        Self::UnusuallyFast,
        Self::OomKilled,
        Self::TimedOut,
        Self::FailureStreak,
    ];

    /// The kind as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LongRunning => "long_running",
            Self::SlowStart => "slow_start",
            Self::Stalled => "stalled",
            Self::UnusuallyFast => "unusually_fast",
            Self::OomKilled => "oom_killed",
            Self::TimedOut => "timed_out",
            Self::FailureStreak => "failure_streak",
        }
    }

    /// Whether it is raised while the run is still going (and closes when the run ends).
    pub fn while_running(self) -> bool {
        matches!(self, Self::LongRunning | Self::SlowStart | Self::Stalled)
    }
}

impl std::str::FromStr for AnomalyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown anomaly kind `{s}`"))
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An anomaly raised on a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Anomaly {
    /// Its id.
    pub id: i64,
    /// What was noticed.
    pub kind: AnomalyKind,
    /// The run it was noticed on.
    pub run_id: String,
    /// The run's job.
    pub job: String,
    /// When.
    pub raised_at: DateTime<Utc>,
    /// What was expected and what happened, in words.
    pub message: String,
    /// The expected value (seconds, or failures for a streak), when there is one.
    pub expected: Option<f64>,
    /// The observed value, in the same unit.
    pub observed: Option<f64>,
    /// Still calling for attention: a run-time anomaly closes when its run ends, the
    /// others with the job's next clean success (or by hand).
    pub open: bool,
    /// When it closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it closed.
    pub closed_reason: Option<String>,
}

/// How the engine watches a job's runs. Every field has a default; the job's
/// `expected_duration_seconds`, when set, replaces the learned usual duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// `long_running` once a run passes max(factor × usual, usual + `long_running_min_extra_seconds`).
    pub long_running_factor: f64,
    /// See `long_running_factor`.
    pub long_running_min_extra_seconds: i64,
    /// `slow_start` once trigger→running passes max(factor × usual, usual + `slow_start_min_extra_seconds`).
    pub slow_start_factor: f64,
    /// See `slow_start_factor`.
    pub slow_start_min_extra_seconds: i64,
    /// `stalled` after this many seconds without output while running; 0 = never. Default:
    /// the engine's `--stall-after-seconds`.
    pub stall_after_seconds: Option<i64>,
    /// `unusually_fast` when a success takes less than this share of the usual duration.
    pub unusually_fast_ratio: f64,
    /// `failure_streak` when this many runs in a row fail; 0 = never.
    pub failure_streak: i64,
    /// The usual is learned from the last 20 successes, once there are at least this many.
    pub min_samples: i64,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            long_running_factor: 3.0,
            long_running_min_extra_seconds: 30,
            slow_start_factor: 3.0,
            slow_start_min_extra_seconds: 60,
            stall_after_seconds: None,
            unusually_fast_ratio: 0.2,
            failure_streak: 3,
            min_samples: 5,
        }
    }
}
