//! `/healthz` (the process lives) and `/readyz` (the database answers; each backend's state
//! is reported but does not fail readiness, so that one scheduler being down does not take
//! every replica out of a load balancer). Neither needs a token.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The state of one check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `down`.
    pub status: &'static str,
    /// What was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Readiness: every check by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// The database.
    pub database: Check,
    /// Each configured backend.
    pub backends: BTreeMap<String, Check>,
}

/// The process lives.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "health", security(), responses((status = 200)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Whether this replica can serve: 200 while the database answers, 503 when it does not.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "health", security(),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = match tokio::time::timeout(Duration::from_secs(5), s.ctx.store.ping()).await {
        Ok(Ok(())) => Check {
            status: "ok",
            detail: None,
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            Check {
                status: "down",
                detail: Some("the database does not answer".into()),
            }
        }
        Err(_) => Check {
            status: "down",
            detail: Some("the database did not answer within 5 s".into()),
        },
    };
    let ready = database.status == "ok";
    let backends = s
        .backends
        .health()
        .await
        .into_iter()
        .map(|(name, h)| {
            let status = if h.ok { "ok" } else { "down" };
            (
                name,
                Check {
                    status,
                    detail: Some(h.detail),
                },
            )
        })
        .collect();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        backends,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
