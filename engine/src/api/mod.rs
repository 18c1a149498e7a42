//! The HTTP API: thin handlers that parse, authorise, call a service function and map its
//! error. `router(state)` builds the whole app, testable without a socket.

mod anomalies;
mod audit;
pub mod auth;
mod channels;
pub mod error;
mod health;
mod jobs;
pub mod json;
pub mod links;
mod locks;
mod logs;
mod metrics;
pub mod openapi;
mod outcome;
mod query;
mod rules;
mod runs;
mod shape;
mod state;
mod stats;
mod tokens;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::backends::Backends;
use crate::runner::Runner;
use crate::service::Ctx;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The service layer's context.
    pub ctx: Ctx,
    /// This replica's runner, woken when a run is queued or cancelled.
    pub runner: Runner,
    /// The backends, for readiness.
    pub backends: Backends,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
    /// How the URLs handed out are built.
    pub links: std::sync::Arc<links::LinkSettings>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route with its OpenAPI entry: a handler is registered with `routes!`, which takes
/// its path and methods from the handler's `#[utoipa::path]`, so no route exists without its
/// documentation and the document lists exactly the routes served.
pub fn openapi_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(health::routes())
        .merge(jobs::routes())
        .merge(runs::routes())
        .merge(outcome::routes())
        .merge(locks::routes())
        .merge(state::routes())
        .merge(logs::routes())
        .merge(tokens::routes())
        .merge(channels::routes())
        .merge(audit::routes())
        .merge(anomalies::routes())
        .merge(openapi::routes())
        .merge(metrics::routes())
        .merge(stats::routes())
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = openapi_router().split_for_parts();
    serve_with_layers(
        routes.layer(axum::Extension(std::sync::Arc::new(openapi::finish(doc)))),
        state,
    )
}

/// The routes a run uses — its job's state, and health — for the listener on Docker's
/// bridge, which containers reach; nothing else of the API is served there.
pub fn run_router(state: AppState) -> Router {
    let (routes, _) = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(health::routes())
        .merge(state::routes())
        .split_for_parts();
    serve_with_layers(routes, state)
}

fn serve_with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.ctx.metrics.clone(),
            metrics::track,
        ))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let path = req
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str)
                .unwrap_or("-");
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path, request_id = id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(error::finish))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(120),
        ));
    routes
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
        .layer(layers)
        .with_state(state)
}
