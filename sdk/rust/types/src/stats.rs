//! Per-job statistics of finished runs: they outlive the runs that retention prunes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::RunStatus;

/// One finished run, as the statistics keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunStatEntry {
    /// The run's id (the run itself may have been pruned since).
    pub run_id: String,
    /// Its final status.
    pub status: RunStatus,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Its last attempt's container start to its end, in milliseconds; `null` when it never
    /// started.
    pub duration_ms: Option<i64>,
    /// From its trigger to its first attempt's start, in milliseconds; `null` when it never
    /// started.
    pub start_latency_ms: Option<i64>,
}

/// `GET /api/v1/jobs/{name}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStats {
    /// The job's name.
    pub job: String,
    /// Finished runs recorded (the newest 1000 are kept, also once the runs are pruned).
    /// Runs cancelled before they started and skipped runs are not recorded.
    pub count: i64,
    /// Of those, the ones that succeeded.
    pub success_count: i64,
    /// How many of the latest successful runs the figures below are taken over (at most 20).
    pub baseline_runs: i64,
    /// Median duration of those runs, in milliseconds (nearest rank).
    pub median_duration_ms: Option<i64>,
    /// 90th percentile of their durations, in milliseconds (nearest rank).
    pub p90_duration_ms: Option<i64>,
    /// Median of their start latencies (trigger to container start), in milliseconds.
    pub median_start_latency_ms: Option<i64>,
    /// The latest finished runs, newest first (at most 20).
    pub recent: Vec<RunStatEntry>,
}
