//! `/api/v1/anomalies`: what the engine noticed on runs, across jobs, newest first; and
//! closing one by hand once someone has looked at it.

use axum::extract::{Path, State};
use axum::Json;
use jobdock_types::{Anomaly, AnomalyKind, Page, Problem};
use serde::Deserialize;

use super::auth::{Caller, Operator, Read};
use super::error::ApiError;
use super::json::OptionalJson;
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::service::anomalies;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(close))
}

/// Query of `GET /api/v1/anomalies`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnomalyQuery {
    /// `true`: only those still calling for attention; `false`: only closed ones.
    open: Option<bool>,
    /// Only of this job.
    job: Option<String>,
    /// Only of this kind, e.g. `long_running`.
    #[param(value_type = Option<AnomalyKind>)]
    kind: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A page of anomalies (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AnomalyPage {
    items: Vec<Anomaly>,
    next_cursor: Option<String>,
}

/// Anomalies across jobs, newest first (only of the jobs the token may see).
#[utoipa::path(get, operation_id = "listAnomalies", path = "/api/v1/anomalies", tag = "monitoring", params(AnomalyQuery),
    responses((status = 200, body = AnomalyPage), (status = 422, body = Problem)))]
pub async fn list(
    caller: Caller<Read>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<AnomalyQuery>,
) -> Result<Json<Page<Anomaly>>, ApiError> {
    let limit = PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| k.parse::<AnomalyKind>())
        .transpose()
        .map_err(|m| ApiError::invalid("kind", m))?;
    let filter = anomalies::Filter {
        open: q.open,
        job: q.job.as_deref(),
        kind,
    };
    let page = anomalies::list(&s.ctx, filter, q.cursor.as_deref(), limit, |job| {
        caller.principal.may_reach_job(job)
    })
    .await?;
    Ok(Json(page))
}

/// Body of `POST /api/v1/anomalies/{id}/close`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// Why, for the record (default: "closed by <token>").
    reason: Option<String>,
}

/// Close an anomaly by hand: someone has looked at it.
#[utoipa::path(post, operation_id = "closeAnomaly", path = "/api/v1/anomalies/{id}/close", tag = "monitoring",
    params(("id" = i64, Path)), request_body(content = CloseRequest, description = "Optional"),
    responses((status = 200, body = Anomaly), (status = 404, body = Problem)))]
pub async fn close(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CloseRequest>,
) -> Result<Json<Anomaly>, ApiError> {
    let known = anomalies::get(&s.ctx, &id).await?;
    caller.check_job(&known.job)?;
    let closed = anomalies::close(&s.ctx, &caller.actor, &known, req.reason).await?;
    Ok(Json(closed))
}
