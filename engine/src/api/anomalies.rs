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
use crate::store::anomalies::AnomalyFilter;
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
    let mut before_id = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::invalid("cursor", "is not a cursor of this list"))?;
    let mut items = Vec::new();
    loop {
        let filter = AnomalyFilter {
            open: q.open,
            job: q.job.as_deref(),
            kind,
            before_id,
        };
        let batch = s.ctx.store.anomalies(filter, limit as i64 + 1).await?;
        let exhausted = batch.len() <= limit;
        for a in batch {
            if items.len() == limit {
                return Ok(Json(Page {
                    items,
                    next_cursor: before_id.map(|b| b.to_string()),
                }));
            }
            before_id = Some(a.id);
            if caller.principal.may_reach_job(&a.job) {
                items.push(a);
            }
        }
        if exhausted {
            return Ok(Json(Page {
                items,
                next_cursor: None,
            }));
        }
    }
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
    let not_found = || ApiError::NotFound(format!("anomaly `{id}` does not exist"));
    let n: i64 = id.parse().map_err(|_| not_found())?;
    let reason = req
        .reason
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.chars().take(500).collect())
        .unwrap_or_else(|| {
            let by = caller.actor.token_name.as_deref().unwrap_or("a token");
            format!("closed by {by}")
        });
    let known = s.ctx.store.anomaly(n).await?.ok_or_else(not_found)?;
    caller.check_job(&known.job)?;
    let detail = serde_json::json!({ "kind": known.kind.as_str(), "run_id": known.run_id, "reason": reason });
    let target = format!("anomaly/{n}");
    let audit = caller.actor.audit("anomaly.close", &target, detail);
    let closed = s
        .ctx
        .store
        .close_anomaly(n, &reason, audit)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(closed))
}
