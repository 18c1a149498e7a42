//! `/api/v1/jobs/{name}/runs` and `/api/v1/runs`: trigger, read (or long-poll), list and
//! cancel runs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobdock_types::{Page, Problem, Run, RunEvent, RunStatus, TriggerRequest};
use serde::Deserialize;

use super::auth::{Caller, Read, Trigger};
use super::error::{problem, ApiError};
use super::json::OptionalJson;
use super::links::BaseUrl;
use super::outcome;
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::service::runs::{self as svc, Refusal, TriggerError, Triggered};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trigger))
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(events))
        .routes(routes!(cancel))
        .routes(routes!(rerun))
}

/// Start a run of a job. A repeated `Idempotency-Key` (header or body) returns the first run
/// with 200 instead of starting another. With `Prefer: respond-async` the answer is the
/// run's outcome (`GET /api/v1/runs/{id}/outcome`): 202 with `Location` and `Retry-After`
/// while it is not final (a replay of the key too), else 200 or 424.
#[utoipa::path(post, operation_id = "triggerRun", path = "/api/v1/jobs/{name}/runs", tag = "runs",
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Prefer" = Option<String>, Header, description = "`respond-async` for the asynchronous pattern")),
    request_body(content = TriggerRequest, description = "Optional"),
    responses((status = 201, body = Run, headers(("Location" = String, description = "The run's URL"))),
        (status = 200, description = "The run this idempotency key created", body = Run),
        (status = 202, description = "With `Prefer: respond-async`: the run is not final; poll `Location` after `Retry-After` seconds", body = Run,
            headers(("Location" = String, description = "The run's outcome URL, signed"), ("Retry-After" = u32, description = "Seconds"))),
        (status = 424, description = "With `Prefer: respond-async`: the run (of a replayed key) ended without succeeding", body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn trigger(
    caller: Caller<Trigger>,
    State(s): State<AppState>,
    base: BaseUrl,
    Path(name): Path<String>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<TriggerRequest>,
) -> Result<Response, ApiError> {
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be printable ASCII"))?;
    let t = svc::Trigger {
        actor: &caller.actor,
        scope: caller.principal.scope,
        kind: "api",
        header_key,
        base_url: Some(base.0.clone()),
    };
    let with_callback = req.callback_uri.is_some();
    let answer = Answer {
        base,
        respond_async: outcome::respond_async(&headers),
    };
    let result = svc::trigger(&s.ctx, t, &name, req).await;
    if with_callback && result.is_ok() {
        // The run may have ended already (skipped, or a replay): its callback is due now.
        s.runner.alerts_due();
    }
    answer.triggered(&s, result)
}

fn refusal(r: Refusal) -> Response {
    let (status, holder) = match &r {
        Refusal::SlotTaken { holder, .. } => (StatusCode::CONFLICT, Some(holder.clone())),
        Refusal::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
    };
    let mut p = problem(status, Some(r.to_string()));
    p.run_id = holder;
    let mut resp = status.into_response();
    resp.extensions_mut().insert(p);
    resp
}

/// Query of `GET /api/v1/runs/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Long poll: answer as soon as the run has ended, or after this many seconds (at most 60).
    #[param(minimum = 0, maximum = 60)]
    wait_seconds: Option<u64>,
    /// A signed link's expiry (Unix seconds), from a `logs_url` or a `Location`. Read by the
    /// authentication, before the handler.
    #[allow(dead_code)]
    exp: Option<i64>,
    /// A signed link's signature.
    #[allow(dead_code)]
    sig: Option<String>,
}

/// A run's timeline, oldest first: queued, waiting (for what), claimed, launched, started,
/// first output, progress, anomalies, retries, finished.
#[utoipa::path(get, operation_id = "listRunEvents", path = "/api/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path), PageQuery),
    responses((status = 200, body = RunEventPage), (status = 404, body = Problem)))]
pub async fn events(
    caller: Caller<Read>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<RunEvent>>, ApiError> {
    let run = svc::row(&s.ctx, &id).await?;
    caller.check_job(&run.job_name)?;
    let page = svc::events(&s.ctx, &id, q.cursor.as_deref(), q.limit()?).await?;
    Ok(Json(page))
}

/// A page of a run's timeline (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RunEventPage {
    items: Vec<RunEvent>,
    next_cursor: Option<String>,
}

/// One run. With `?wait_seconds=`, the answer comes when the run ends (or the wait is over).
#[utoipa::path(get, operation_id = "getRun", path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path), ReadQuery),
    security(("bearer" = []), ("basic" = []), ("signed_link" = [])),
    responses((status = 200, body = Run), (status = 404, body = Problem)))]
pub async fn read(
    caller: Caller<Read>,
    State(s): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Json<Run>, ApiError> {
    let reading = svc::reading(&s.ctx, &id, q.wait_seconds)?;
    let run = reading.now().await?;
    caller.check_job(&run.job)?;
    let run = reading.at_end(run).await?;
    Ok(Json(base.run(&s.ctx.keys, run)))
}

/// Query of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only runs of this job.
    job: Option<String>,
    /// Only runs in this status.
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A page of runs (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RunPage {
    items: Vec<Run>,
    next_cursor: Option<String>,
}

/// Runs, newest first.
#[utoipa::path(get, operation_id = "listRuns", path = "/api/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = RunPage)))]
pub async fn list(
    caller: Caller<Read>,
    State(s): State<AppState>,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Run>>, ApiError> {
    let limit = PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let status = q
        .status
        .as_deref()
        .map(|st| st.parse::<RunStatus>())
        .transpose()
        .map_err(|m| ApiError::invalid("status", m))?;
    let cursor = q.cursor.as_deref();
    let mut page = svc::list(&s.ctx, q.job.as_deref(), status, cursor, limit, |job| {
        caller.principal.may_reach_job(job)
    })
    .await?;
    page.items = page
        .items
        .into_iter()
        .map(|run| base.run(&s.ctx.keys, run))
        .collect();
    Ok(Json(page))
}

/// Cancel a queued or running run. A running run is reported `cancelled` once its
/// container has really stopped.
#[utoipa::path(post, operation_id = "cancelRun", path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    caller: Caller<Trigger>,
    State(s): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let run = svc::row(&s.ctx, &id).await?;
    caller.check_job(&run.job_name)?;
    let run = svc::cancel(&s.ctx, &caller.actor, &id).await?;
    s.runner.wake();
    Ok(Json(base.run(&s.ctx.keys, run)))
}

/// Start a new run of the same job with the definition this run had. It passes the same
/// gate as any trigger (`on_conflict`, locks, queue cap).
#[utoipa::path(post, operation_id = "rerunRun", path = "/api/v1/runs/{id}/rerun", tag = "runs", params(("id" = String, Path)),
    responses((status = 201, body = Run), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 429, body = Problem)))]
pub async fn rerun(
    caller: Caller<Trigger>,
    State(s): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = svc::row(&s.ctx, &id).await?;
    caller.check_job(&run.job_name)?;
    let answer = Answer {
        base,
        respond_async: outcome::respond_async(&headers),
    };
    answer.triggered(&s, svc::rerun(&s.ctx, &caller.actor, &id).await)
}

/// How a trigger is answered: with links under `base`, and as an outcome when the caller
/// asked for the asynchronous pattern.
struct Answer {
    base: BaseUrl,
    respond_async: bool,
}

impl Answer {
    fn triggered(
        &self,
        s: &AppState,
        result: Result<Triggered, TriggerError>,
    ) -> Result<Response, ApiError> {
        let (status, run) = match result {
            Ok(Triggered::Created(run)) => {
                s.runner.wake();
                (StatusCode::CREATED, *run)
            }
            Ok(Triggered::Existing(run)) => (StatusCode::OK, *run),
            Err(TriggerError::Service(e)) => return Err(e.into()),
            Err(TriggerError::Refused(r)) => return Ok(refusal(r)),
        };
        if self.respond_async {
            let mut resp = outcome::answer(s, &self.base, run);
            resp.headers_mut().insert(
                "preference-applied",
                axum::http::HeaderValue::from_static("respond-async"),
            );
            return Ok(resp);
        }
        let location = format!("{}/api/v1/runs/{}", self.base.0, run.id);
        let run = self.base.run(&s.ctx.keys, run);
        let mut resp = (status, Json(run)).into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
            resp.headers_mut().insert(axum::http::header::LOCATION, v);
        }
        Ok(resp)
    }
}
