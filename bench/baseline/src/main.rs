//! The ceiling the status-poll benchmark divides by: what axum alone answers for
//! `GET /api/v1/runs/{id}` on this machine, with the least a real endpoint must do — check a
//! bearer token and serialise a run-sized JSON body — and nothing else (no store, no
//! middleware).
//!
//! Usage: `jobdock-bench-baseline ADDR TOKEN BODY.json`; it prints `listening on ADDR` once
//! it accepts connections.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

struct Baseline {
    token: String,
    body: serde_json::Value,
}

async fn run(
    State(b): State<Arc<Baseline>>,
    Path(_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == b.token);
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // Serialised on every request, as the engine does.
    match serde_json::to_vec(&b.body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, token, body] = args.as_slice() else {
        return Err("usage: jobdock-bench-baseline ADDR TOKEN BODY.json".into());
    };
    let body = serde_json::from_slice(&std::fs::read(body)?)?;
    let state = Arc::new(Baseline {
        token: token.clone(),
        body,
    });
    let app = Router::new()
        .route("/api/v1/runs/{id}", get(run))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
