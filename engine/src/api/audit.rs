//! `/api/v1/audit`: who changed what, newest first. Admin only.

use axum::extract::State;
use axum::Json;
use jobdock_types::{AuditEntry, Page};
use serde::Deserialize;

use super::auth::{Admin, Installation};
use super::error::ApiError;
use super::query::ApiQuery;
use super::AppState;
use crate::service::audit;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Query of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Only this action, e.g. `job.create`.
    action: Option<String>,
    /// Only this target, e.g. a job's name.
    target: Option<String>,
}

/// A page of audit entries (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(get, operation_id = "listAuditEntries", path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
pub async fn list(
    _caller: Installation<Admin>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = super::query::PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let page = audit::list(
        &s.ctx,
        q.action.as_deref(),
        q.target.as_deref(),
        q.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page))
}
