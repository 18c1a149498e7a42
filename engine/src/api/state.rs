//! `/api/v1/jobs/{name}/state`: the state a job keeps between runs, its versions, and
//! reverting to one. People read with a `read` token and write with an `operator` token; a
//! run reads and writes its own job's state with its own token (`JOBDOCK_RUN_TOKEN`), and
//! its writes are held until it succeeds or commits them.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobdock_types::{Page, Problem, RunStatus, StateRevert, StateVersion};
use serde_json::{Map, Value};

use super::auth::{bearer_or_basic, Caller, NeedScope, Operator, Read};
use super::error::ApiError;
use super::json::ApiJson;
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::crypto::RUN_TOKEN_PREFIX;
use crate::service::state::{self, Current, Writer, Written};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read, write))
        .routes(routes!(commit))
        .routes(routes!(versions))
        .routes(routes!(revert))
}

/// Who calls a state route: a token's holder with scope `S`, or a running run of the job
/// named in the path, by its own token.
pub enum StateCaller<S: NeedScope> {
    /// A token's holder.
    Token(Caller<S>),
    /// A run, by the token the engine gave it.
    Run {
        /// The run.
        run_id: String,
    },
}

impl<S: NeedScope> StateCaller<S> {
    fn writer(&self) -> Writer<'_> {
        match self {
            Self::Token(c) => Writer::Person(&c.actor),
            Self::Run { run_id } => Writer::Run(run_id),
        }
    }
}

impl<S: NeedScope> FromRequestParts<AppState> for StateCaller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_or_basic)
            .filter(|t| t.starts_with(RUN_TOKEN_PREFIX));
        let Some(token) = token else {
            return Ok(Self::Token(Caller::from_request_parts(parts, state).await?));
        };
        let (run_id, attempt) = state
            .ctx
            .keys
            .verify_run_token(&token)
            .ok_or(ApiError::Unauthorized("the run token is not valid"))?;
        let run = state
            .ctx
            .store
            .run(&run_id)
            .await
            .map_err(|_| ApiError::Unauthorized("the run token is not valid"))?;
        let live = matches!(run.status, RunStatus::Starting | RunStatus::Running)
            && run.attempt == attempt;
        if !live {
            return Err(ApiError::Unauthorized(
                "the run token's run (or attempt) has ended; a run token lives as long as its run",
            ));
        }
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::Forbidden("a run token reaches its own job's state only".into())
            })?;
        if name != run.job_name {
            return Err(ApiError::Forbidden(format!(
                "a run token reaches its own job's state only (job `{}`)",
                run.job_name
            )));
        }
        Ok(Self::Run { run_id })
    }
}

/// A job's state: any JSON object (at most 1 MiB).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct StateBody(Map<String, Value>);

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a number is a header value")
}

/// The version an `If-Match` header names: `"3"` (or `3`); `*` and no header ask nothing.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::invalid("If-Match", "must be an ETag this API gave, e.g. \"3\""))
}

fn current(c: Current, status: StatusCode) -> Response {
    let mut resp = (status, Json(c.state)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(c.version));
    resp
}

/// The job's state: a JSON object (`{}` before any is written), its version as `ETag`
/// (`"0"` before any). With a run's token: what that run has set, if it has, else the
/// job's.
#[utoipa::path(get, operation_id = "getJobState", path = "/api/v1/jobs/{name}/state", tag = "state",
    params(("name" = String, Path)),
    responses((status = 200, body = Object, headers(("ETag" = String, description = "The state's version"))),
        (status = 404, body = Problem)))]
pub async fn read(
    caller: StateCaller<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let c = state::get(&s.ctx, &name, caller.writer()).await?;
    Ok(current(c, StatusCode::OK))
}

/// Replace the job's state with the body (a JSON object, at most 1 MiB). With `If-Match`,
/// only if the state is still at that version (412 otherwise). An operator's write is the
/// job's state at once (200). A run's write (by its own token) is held: it becomes the
/// job's state when the run succeeds or commits it, and goes with a run that fails (202).
#[utoipa::path(put, operation_id = "putJobState", path = "/api/v1/jobs/{name}/state", tag = "state",
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "The version read, as its ETag")),
    request_body(content = StateBody, description = "The new state"),
    responses((status = 200, body = Object, headers(("ETag" = String, description = "The new version"))),
        (status = 202, description = "A run's write, held until the run succeeds or commits", body = Object),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub async fn write(
    caller: StateCaller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(StateBody(body)): ApiJson<StateBody>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    match state::put(&s.ctx, &name, caller.writer(), &body, expected).await? {
        Written::Current(version) => Ok(current(
            Current {
                state: body,
                version,
            },
            StatusCode::OK,
        )),
        Written::Held => Ok((StatusCode::ACCEPTED, Json(body)).into_response()),
    }
}

/// A run makes the state it holds its job's state now, without waiting for its end (a long
/// load checkpointing). Only a run's own token.
#[utoipa::path(post, operation_id = "commitJobState", path = "/api/v1/jobs/{name}/state/commit", tag = "state",
    params(("name" = String, Path)),
    responses((status = 200, body = Object, headers(("ETag" = String, description = "The job's version"))),
        (status = 403, body = Problem)))]
pub async fn commit(
    caller: StateCaller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let StateCaller::Run { run_id } = &caller else {
        return Err(ApiError::Forbidden(
            "only a run commits what it holds, with its own token; a person writes with PUT".into(),
        ));
    };
    state::commit(&s.ctx, &name, run_id).await?;
    let c = state::get(&s.ctx, &name, Writer::Run(run_id)).await?;
    Ok(current(c, StatusCode::OK))
}

/// A page of the versions of the job's state, newest first (the newest 100 are kept).
#[utoipa::path(get, operation_id = "listJobStateVersions", path = "/api/v1/jobs/{name}/state/versions", tag = "state",
    params(("name" = String, Path), PageQuery),
    responses((status = 200, body = StateVersionPage), (status = 404, body = Problem)))]
pub async fn versions(
    _caller: StateCaller<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<StateVersion>>, ApiError> {
    Ok(Json(
        state::versions(&s.ctx, &name, q.cursor.as_deref(), q.limit()? as i64).await?,
    ))
}

/// A page of state versions (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StateVersionPage {
    items: Vec<StateVersion>,
    next_cursor: Option<String>,
}

/// Make an earlier version's content the job's state again, as a new version.
#[utoipa::path(post, operation_id = "revertJobState", path = "/api/v1/jobs/{name}/state/revert", tag = "state",
    params(("name" = String, Path)), request_body = StateRevert,
    responses((status = 200, body = Object, headers(("ETag" = String, description = "The new version"))),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn revert(
    caller: Caller<Operator>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<StateRevert>,
) -> Result<Response, ApiError> {
    let c = state::revert(&s.ctx, &caller.actor, &name, body.version).await?;
    Ok(current(c, StatusCode::OK))
}
