//! `GET /api/v1/jobs/{name}/stats`: a job's run statistics, which outlive pruned runs.

use axum::extract::{Path, State};
use axum::Json;
use jobdock_types::{JobStats, Problem};

use super::auth::{Caller, Read};
use super::error::ApiError;
use super::AppState;
use crate::service::stats;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(job_stats))
}

/// A job's statistics: how many runs finished and succeeded, the median and 90th percentile
/// duration and the median start latency over its last 20 successful runs, and its latest
/// runs' durations.
#[utoipa::path(get, operation_id = "getJobStats", path = "/api/v1/jobs/{name}/stats", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobStats), (status = 404, body = Problem)))]
pub async fn job_stats(
    _caller: Caller<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<JobStats>, ApiError> {
    Ok(Json(stats::job(&s.ctx, &name).await?))
}
