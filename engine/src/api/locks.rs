//! `/api/v1/locks`: named locks shared by jobs, their holders and waiters, and capacities.

use axum::extract::{Path, State};
use axum::Json;
use jobdock_types::{Lock, LockCapacity, Page, Problem};

use super::auth::{Caller, Installation, Operator, Read};
use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::service::locks;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read, set))
}

/// A page of locks (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LockPage {
    items: Vec<Lock>,
    next_cursor: Option<String>,
}

/// Every lock: those with a capacity set, those named by jobs, those held or awaited. A
/// token restricted to some jobs sees only the locks its jobs name or hold, and of their
/// holders and waiters only its own (the others as counts).
#[utoipa::path(get, operation_id = "listLocks", path = "/api/v1/locks", tag = "locks", responses((status = 200, body = LockPage)))]
pub async fn list(
    caller: Caller<Read>,
    State(s): State<AppState>,
) -> Result<Json<Page<Lock>>, ApiError> {
    Ok(Json(Page {
        items: locks::list(&s.ctx, &caller.principal).await?,
        next_cursor: None,
    }))
}

/// One lock with its holders and waiters.
#[utoipa::path(get, operation_id = "getLock", path = "/api/v1/locks/{key}", tag = "locks", params(("key" = String, Path)),
    responses((status = 200, body = Lock), (status = 422, body = Problem)))]
pub async fn read(
    caller: Caller<Read>,
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Lock>, ApiError> {
    Ok(Json(locks::read(&s.ctx, &key, &caller.principal).await?))
}

/// Set how many runs may hold a lock at once. A lock may be shared by every customer's
/// jobs, so only a token that reaches every job sets it.
#[utoipa::path(put, operation_id = "setLockCapacity", path = "/api/v1/locks/{key}", tag = "locks", params(("key" = String, Path)),
    request_body = LockCapacity, responses((status = 200, body = Lock), (status = 422, body = Problem)))]
pub async fn set(
    Installation(caller): Installation<Operator>,
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<LockCapacity>,
) -> Result<Json<Lock>, ApiError> {
    let lock = locks::set_capacity(&s.ctx, &caller.actor, &key, body.capacity).await?;
    s.runner.wake();
    Ok(Json(lock))
}
