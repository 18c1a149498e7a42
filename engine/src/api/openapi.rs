//! The OpenAPI 3 document, generated from the handlers' annotations and the API types.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Jobdock", description = "Runs containerised data syncs on demand, on a schedule, on Docker, Swarm, Kubernetes or Nomad."),
    paths(
        super::health::healthz, super::health::readyz, super::metrics::metrics,
        super::jobs::create, super::jobs::list, super::jobs::read, super::jobs::replace,
        super::jobs::patch, super::jobs::remove, super::jobs::set_secret, super::jobs::delete_secret,
        super::stats::job_stats,
        super::runs::trigger, super::runs::list, super::runs::read, super::runs::events, super::runs::cancel, super::runs::rerun, super::logs::logs,
        super::locks::list, super::locks::read, super::locks::set,
        super::tokens::create, super::tokens::list, super::tokens::revoke,
        super::channels::create, super::channels::list, super::channels::read,
        super::channels::patch, super::channels::remove, super::channels::deliveries, super::channels::test,
        super::audit::list,
        super::anomalies::list, super::anomalies::close,
        openapi_json,
    ),
    components(schemas(jobdock_types::FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(), responses((status = 200)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
