//! The fake's HTTP routes: the real API paths, answering with real object shapes and
//! `Status` errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{now, FakeKube, Seen, World};

type Shared = Arc<Mutex<World>>;
type Q = Query<HashMap<String, String>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, World> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn router(world: Shared) -> Router {
    Router::new()
        .route("/version", get(version))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs",
            get(list_jobs).post(create_job),
        )
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            get(get_job).delete(delete_job),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", delete(delete_pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route(
            "/api/v1/namespaces/{ns}/secrets",
            axum::routing::post(create_secret),
        )
        .layer(middleware::from_fn_with_state(world.clone(), record))
        .with_state(world)
}

async fn record(State(world): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    lock(&world).seen.push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        body: serde_json::from_slice(&bytes).ok(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn unavailable(w: &mut World) -> Option<Response> {
    (w.fail_reads > 0).then(|| {
        w.fail_reads -= 1;
        status(503, "ServiceUnavailable", "fake: going away")
    })
}

/// `k=v,k2=v2` against an object's labels.
fn matches(obj: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            obj["metadata"]["labels"][k].as_str() == Some(v)
        })
    })
}

fn list(kind: &str, api: &str, items: Vec<Value>) -> Response {
    Json(json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": "1"}, "items": items}))
        .into_response()
}

async fn version() -> Json<Value> {
    Json(
        json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "gitCommit": "0",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"}),
    )
}

async fn list_jobs(State(w): State<Shared>, Query(q): Q) -> Response {
    let w = lock(&w);
    let items = w
        .jobs
        .values()
        .filter(|j| matches(j, q.get("labelSelector")))
        .cloned()
        .collect();
    list("JobList", "batch/v1", items)
}

async fn create_job(
    State(w): State<Shared>,
    Path(ns): Path<String>,
    Json(mut job): Json<Value>,
) -> Response {
    let mut w = lock(&w);
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if w.jobs.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            &format!("jobs.batch \"{name}\" already exists"),
        );
    }
    job["metadata"]["uid"] = json!(FakeKube::uid(&mut w));
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["creationTimestamp"] = json!(now());
    job["status"] = json!({"startTime": now(), "active": 1});
    let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
    labels["batch.kubernetes.io/job-name"] = json!(name);
    let pod_name = format!("{name}-pod");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "creationTimestamp": now(),
            "uid": FakeKube::uid(&mut w)},
        "spec": job["spec"]["template"]["spec"].clone(),
        "status": {"phase": "Pending"}});
    w.pods.insert(pod_name, pod);
    w.jobs.insert(name, job.clone());
    (StatusCode::CREATED, Json(job)).into_response()
}

async fn get_job(State(w): State<Shared>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut w = lock(&w);
    if let Some(r) = unavailable(&mut w) {
        return r;
    }
    match w.jobs.get(&name) {
        Some(j) => Json(j.clone()).into_response(),
        None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(
    State(w): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    let mut w = lock(&w);
    let Some(mut job) = w.jobs.remove(&name) else {
        return status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
    };
    let uid = job["metadata"]["uid"].clone();
    w.secrets.retain(|_, s| {
        !s["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
    });
    for pod in w.pods.values_mut() {
        if pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == json!(name) {
            pod["metadata"]["deletionTimestamp"] = json!(now());
        }
    }
    job["metadata"]["deletionTimestamp"] = json!(now());
    Json(job).into_response()
}

async fn list_pods(State(w): State<Shared>, Query(q): Q) -> Response {
    let mut w = lock(&w);
    if let Some(r) = unavailable(&mut w) {
        return r;
    }
    // Pods being deleted linger for `linger_polls` listings, then are gone.
    let linger = w.linger_polls;
    w.linger_polls = linger.saturating_sub(1);
    if linger == 0 {
        w.pods
            .retain(|_, p| p["metadata"]["deletionTimestamp"].is_null());
    }
    let items = w
        .pods
        .values()
        .filter(|p| matches(p, q.get("labelSelector")))
        .cloned()
        .collect();
    list("PodList", "v1", items)
}

async fn delete_pod(
    State(w): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    let mut w = lock(&w);
    match w.pods.get_mut(&name) {
        Some(p) => {
            p["metadata"]["deletionTimestamp"] = json!(now());
            Json(p.clone()).into_response()
        }
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn create_secret(State(w): State<Shared>, Json(mut s): Json<Value>) -> Response {
    let mut w = lock(&w);
    let name = s["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if w.secrets.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    s["metadata"]["uid"] = json!(FakeKube::uid(&mut w));
    w.secrets.insert(name, s.clone());
    (StatusCode::CREATED, Json(s)).into_response()
}

/// Streams the pod's lines from `sinceTime`; with `follow`, until its container terminates.
async fn pod_log(
    State(w): State<Shared>,
    Path((_ns, pod)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    if !lock(&w).pods.contains_key(&pod) {
        return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
    }
    let since = q
        .get("sinceTime")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let follow = q.get("follow").is_some_and(|f| f == "true");
    let cut = lock(&w).cut_logs_after.take();
    let state = (w, pod, 0usize, 0usize);
    let stream = futures::stream::unfold(state, move |(w, pod, mut i, sent)| async move {
        loop {
            if cut.is_some_and(|c| sent >= c) {
                return None;
            }
            let (next, done) = {
                let g = lock(&w);
                let lines: Vec<_> = g
                    .logs
                    .get(&pod)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(ts, _)| {
                        since.is_none_or(|s| chrono::DateTime::parse_from_rfc3339(ts).unwrap() >= s)
                    })
                    .collect();
                let p = g.pods.get(&pod);
                let ended = p.is_none_or(|p| {
                    !p["status"]["containerStatuses"][0]["state"]["terminated"].is_null()
                });
                (lines.get(i).cloned(), ended || !follow)
            };
            if let Some((ts, line)) = next {
                i += 1;
                let chunk = Ok::<_, std::io::Error>(Bytes::from(format!("{ts} {line}\n")));
                return Some((chunk, (w, pod, i, sent + 1)));
            }
            if done {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Body::from_stream(stream).into_response()
}
