//! `GET /metrics`: this replica's metrics for Prometheus, and the middleware that times every
//! API request by its route template.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Installation, Read};
use super::error::ApiError;
use super::AppState;
use crate::metrics::{Metrics, CONTENT_TYPE};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// This replica's metrics in the OpenMetrics text format. Needs a token that may read,
/// unless the engine is configured to expose metrics openly (`--metrics-public`).
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "health",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 401, body = jobdock_types::Problem)))]
pub async fn metrics(State(s): State<AppState>, mut parts: Parts) -> Result<Response, ApiError> {
    if !s.metrics_public {
        Installation::<Read>::from_request_parts(&mut parts, &s).await?;
    }
    let body = s.ctx.metrics.encode();
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}

/// Times a request and counts it under its route's template; a path no route matches counts
/// as `unmatched`, and a method outside the standard ones as `other`, so that no caller can
/// make new series at will.
pub async fn track(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let resp = next.run(req).await;
    m.http_request(
        method,
        route.as_deref().unwrap_or("unmatched"),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
