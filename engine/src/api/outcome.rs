//! The asynchronous request-reply pattern (Data Factory's Web activity): a trigger sent with
//! `Prefer: respond-async` is answered 202 with a `Location` to poll, and the outcome URL
//! answers at once, never holding the request: 202 while the run goes on, 200 once it
//! succeeded, and one 4xx (424) once it ended otherwise, so that the caller's step fails
//! with the run's status, exit code, reason and log link.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobdock_types::{Problem, Run, RunStatus};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, Read};
use super::error::{problem, ApiError};
use super::links::BaseUrl;
use super::query::ApiQuery;
use super::AppState;
use crate::service::runs as svc;

/// Seconds a caller is asked to wait between two polls of a run's outcome.
pub const POLL_SECONDS: u32 = 10;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(outcome))
}

/// The query of a run's readable routes: the parameters of a signed link, which stand in
/// for a token (see `logs_url` and the 202's `Location`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LinkQuery {
    /// A signed link's expiry (Unix seconds). Read by the authentication, before the
    /// handler.
    #[allow(dead_code)]
    pub exp: Option<i64>,
    /// A signed link's signature.
    #[allow(dead_code)]
    pub sig: Option<String>,
}

/// A run's outcome, answered at once: 202 (with `Location` and `Retry-After`) while the run
/// is not final, 200 with the run once it succeeded, 424 with `run_status`, `exit_code`,
/// `reason` and `logs_url` once it ended otherwise.
#[utoipa::path(get, operation_id = "getRunOutcome", path = "/api/v1/runs/{id}/outcome", tag = "runs",
    params(("id" = String, Path), LinkQuery),
    security(("bearer" = []), ("basic" = []), ("signed_link" = [])),
    responses(
        (status = 200, description = "The run succeeded", body = Run),
        (status = 202, description = "The run is not final yet; poll `Location` again after `Retry-After` seconds", body = Run,
            headers(("Location" = String, description = "This outcome's URL, signed"), ("Retry-After" = u32, description = "Seconds"))),
        (status = 424, description = "The run ended without succeeding", body = Problem),
        (status = 404, body = Problem)))]
pub async fn outcome(
    caller: Caller<Read>,
    State(s): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    ApiQuery(_link): ApiQuery<LinkQuery>,
) -> Result<Response, ApiError> {
    let row = svc::row(&s.ctx, &id).await?;
    caller.check_job(&row.job_name)?;
    let run = svc::get(&s.ctx, &id).await?;
    Ok(answer(&s, &base, run))
}

/// Whether a request asked for the asynchronous pattern (`Prefer: respond-async`, RFC 7240).
pub fn respond_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split([',', ';'])
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// The outcome answer for `run`, as the outcome URL gives it.
pub fn answer(s: &AppState, base: &BaseUrl, run: Run) -> Response {
    let run = base.run(&s.ctx.keys, run);
    if !run.status.is_final() {
        let location = base.outcome(&s.ctx.keys, &run.id);
        let mut resp = (StatusCode::ACCEPTED, Json(run)).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(header::LOCATION, v);
        }
        h.insert(header::RETRY_AFTER, HeaderValue::from(POLL_SECONDS));
        return resp;
    }
    if run.status == RunStatus::Succeeded {
        return (StatusCode::OK, Json(run)).into_response();
    }
    let status = StatusCode::FAILED_DEPENDENCY;
    let detail = format!(
        "run {} of job `{}` ended `{}`{}",
        run.id,
        run.job,
        run.status,
        run.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let mut p = problem(status, Some(detail));
    p.title = "The run did not succeed".into();
    p.run_id = Some(run.id.clone());
    p.run_status = Some(run.status);
    p.exit_code = run.exit_code;
    p.reason = run.reason.clone();
    p.logs_url = run.logs_url.clone();
    let mut resp = status.into_response();
    resp.extensions_mut().insert(p);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_respond_async_is_read_among_other_preferences() {
        let mut h = HeaderMap::new();
        assert!(!respond_async(&h));
        h.insert("prefer", "wait=10, respond-async".parse().unwrap());
        assert!(respond_async(&h));
        h.insert("prefer", "Respond-Async".parse().unwrap());
        assert!(respond_async(&h));
        h.insert("prefer", "return=minimal".parse().unwrap());
        assert!(!respond_async(&h));
    }
}
