//! `/api/v1/jobs`: register, read, change and delete jobs and their secrets.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use jobdock_types::{Job, JobSpec, Page, Problem, SecretValue};
use serde::Deserialize;

use super::auth::{Caller, Operator, Read};
use super::error::ApiError;
use super::json::{ApiJson, MergePatch};
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::service::jobs;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, patch, remove))
        .routes(routes!(set_secret, delete_secret))
}

/// Register a job.
#[utoipa::path(post, operation_id = "createJob", path = "/api/v1/jobs", tag = "jobs", request_body = JobSpec,
    responses((status = 201, body = Job), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<impl IntoResponse, ApiError> {
    caller.check_job(&spec.name)?;
    let job = jobs::create(&s.ctx, &caller.actor, spec).await?;
    s.runner.jobs_changed();
    Ok((StatusCode::CREATED, Json(job)))
}

/// List jobs, ordered by name.
#[utoipa::path(get, operation_id = "listJobs", path = "/api/v1/jobs", tag = "jobs", params(PageQuery),
    responses((status = 200, body = JobPage)))]
pub async fn list(
    caller: Caller<Read>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Job>>, ApiError> {
    let page = jobs::list(&s.ctx, q.cursor.as_deref(), q.limit()?, |name| {
        caller.principal.may_reach_job(name)
    })
    .await?;
    Ok(Json(page))
}

/// A page of jobs (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JobPage {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

/// One job.
#[utoipa::path(get, operation_id = "getJob", path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = Problem)))]
pub async fn read(
    _caller: Caller<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(jobs::get(&s.ctx, &name).await?))
}

/// Replace a job's definition; without `secrets`, the stored secrets stay.
#[utoipa::path(put, operation_id = "replaceJob", path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    request_body = JobSpec,
    responses((status = 200, body = Job), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn replace(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<Json<Job>, ApiError> {
    let job = jobs::replace(&s.ctx, &caller.actor, &name, spec).await?;
    s.runner.jobs_changed();
    Ok(Json(job))
}

/// Change some fields of a job with a JSON merge patch (RFC 7396).
#[utoipa::path(patch, operation_id = "patchJob", path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Job), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    MergePatch(patch, _): MergePatch<JobSpec>,
) -> Result<Json<Job>, ApiError> {
    let job = jobs::patch(&s.ctx, &caller.actor, &name, patch).await?;
    s.runner.jobs_changed();
    Ok(Json(job))
}

/// Query of `DELETE /api/v1/jobs/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Cancel the job's active runs first instead of refusing.
    #[serde(default)]
    force: bool,
}

/// Delete a job. Its runs stay readable.
#[utoipa::path(delete, operation_id = "deleteJob", path = "/api/v1/jobs/{name}", tag = "jobs",
    params(("name" = String, Path), DeleteQuery),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    jobs::delete(&s.ctx, &caller.actor, &name, q.force).await?;
    s.runner.jobs_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Set one secret of a job. The value is never shown again.
#[utoipa::path(put, operation_id = "setJobSecret", path = "/api/v1/jobs/{name}/secrets/{key}", tag = "jobs",
    params(("name" = String, Path), ("key" = String, Path)), request_body = SecretValue,
    responses((status = 200, body = Job), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn set_secret(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        jobs::set_secret(&s.ctx, &caller.actor, &name, &key, &body.value).await?,
    ))
}

/// Remove one secret of a job.
#[utoipa::path(delete, operation_id = "deleteJobSecret", path = "/api/v1/jobs/{name}/secrets/{key}", tag = "jobs",
    params(("name" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_secret(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    jobs::delete_secret(&s.ctx, &caller.actor, &name, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
