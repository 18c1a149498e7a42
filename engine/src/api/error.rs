//! The HTTP layer's one error type, answered as `application/problem+json` (RFC 9457).
//!
//! A handler's error becomes a response that carries the [`Problem`] (and, for a 5xx, the
//! real error) as extensions; the [`finish`] middleware then writes the body with the
//! request's id and logs the real error under it. Responses that axum itself produces
//! (unknown route, wrong method, body too large) are turned into problems there as well, so
//! that every 4xx and 5xx has the same shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jobdock_types::{FieldError, Problem, PROBLEM_JSON};

use crate::service::ServiceError;
use crate::store::StoreError;

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read at all.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 412: an `If-Match` that no longer holds.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413.
    #[error("the request body is larger than the engine accepts (4 MiB)")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 with the bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// 503: the database is too busy right now (no connection free in time, or a deadlock
    /// it broke); the call may be retried — with its idempotency key for a trigger.
    #[error("the engine is busy; retry in a moment")]
    Busy(#[source] anyhow::Error),
    /// 500: never shown to the caller, logged with the request id.
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

/// The real cause of a 5xx, kept for the log and never put in the body.
#[derive(Clone, Debug)]
struct InternalCause(std::sync::Arc<String>);

impl ApiError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A problem for a status, with the slug naming its type.
pub fn problem(status: StatusCode, detail: Option<String>) -> Problem {
    let slug = match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        409 => "conflict",
        412 => "precondition-failed",
        413 => "payload-too-large",
        415 => "unsupported-media-type",
        422 => "validation-error",
        424 => "run-did-not-succeed",
        429 => "too-many-requests",
        503 => "unavailable",
        _ if status.is_server_error() => "internal-error",
        _ => "error",
    };
    Problem {
        type_: format!("urn:jobdock:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        request_id: None,
        errors: Vec::new(),
        run_id: None,
        run_status: None,
        exit_code: None,
        reason: None,
        logs_url: None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut p = match &self {
            Self::Internal(_) => problem(
                status,
                Some("the engine failed to handle this request; its log has the details under the request id".into()),
            ),
            Self::Invalid(errors) => {
                let mut p = problem(status, Some(summary(errors)));
                p.errors = errors.clone();
                p
            }
            other => problem(status, Some(other.to_string())),
        };
        if let Self::Unauthorized(_) = self {
            p.title = "Unauthorized".into();
        }
        let mut resp = status.into_response();
        if let Self::Busy(e) = &self {
            tracing::warn!(error = %format!("{e:#}"), "request refused while the database is busy");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::Internal(e) = &self {
            resp.extensions_mut()
                .insert(InternalCause(std::sync::Arc::new(format!("{e:#}"))));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(p);
        resp
    }
}

fn summary(errors: &[FieldError]) -> String {
    match errors {
        [one] if one.field.is_empty() => one.message.clone(),
        [one] => format!("{}: {}", one.field, one.message),
        many => format!("{} fields are invalid", many.len()),
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::Invalid(f) => Self::Invalid(f),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::PreconditionFailed(m) => Self::PreconditionFailed(m),
            ServiceError::Store(StoreError::NotFound) => Self::NotFound("not found".into()),
            ServiceError::Store(ref s) if s.is_busy() => Self::Busy(anyhow::Error::new(e)),
            e => Self::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

/// Writes every error response as problem+json with the request id, and logs 5xx causes.
pub async fn finish(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let found = resp.extensions_mut().remove::<Problem>();
    // Error responses that already are JSON (a problem, or `/readyz`'s report) stay as they are.
    if found.is_none()
        && (!(status.is_client_error() || status.is_server_error()) || is_json(&resp))
    {
        return resp;
    }
    let mut p = found.unwrap_or_else(|| problem(status, rejection_detail(status, &method)));
    p.request_id = request_id.clone();
    if let Some(cause) = resp.extensions().get::<InternalCause>() {
        tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %cause.0, "request failed");
    }
    let body = serde_json::to_vec(&p).expect("a problem serialises");
    let (mut parts, _) = resp.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with(PROBLEM_JSON))
}

fn rejection_detail(status: StatusCode, method: &axum::http::Method) -> Option<String> {
    Some(match status {
        StatusCode::NOT_FOUND => "no such endpoint; see /api/v1/openapi.json".into(),
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on this endpoint"),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_a_503_to_retry_and_anything_else_a_500() {
        let busy = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        let resp = busy.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let broken = ApiError::from(StoreError::Database(sqlx::Error::PoolClosed));
        assert_eq!(
            broken.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
