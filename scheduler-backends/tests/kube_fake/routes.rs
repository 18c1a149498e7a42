//! The fake's HTTP routes: the real API paths, answering with real object shapes and
//! `Status` errors. What the objects go through lives in `cluster`; the pod log in `logs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::cluster::{self, Refusal};
use super::{kubelet, logs, now, Cluster, Seen, World};

type Shared = Arc<Cluster>;
type Q = Query<HashMap<String, String>>;

pub(super) fn router(cluster: Shared) -> Router {
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
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod).delete(delete_pod).patch(patch_pod),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs::serve))
        .route(
            "/api/v1/namespaces/{ns}/secrets",
            get(list_secrets).post(create_secret),
        )
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
        .layer(middleware::from_fn_with_state(cluster.clone(), record))
        .with_state(cluster)
}

async fn record(State(cluster): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    cluster.lock().seen.push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        content_type,
        body: serde_json::from_slice(&bytes).ok(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

pub(super) fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn refused(r: Refusal) -> Response {
    status(r.code, r.reason, &r.message)
}

fn answer(result: Result<Value, Refusal>) -> Response {
    match result {
        Ok(obj) => Json(obj).into_response(),
        Err(r) => refused(r),
    }
}

fn unavailable(w: &mut World) -> Option<Response> {
    (w.fail_reads > 0).then(|| {
        w.fail_reads -= 1;
        status(503, "ServiceUnavailable", "fake: going away")
    })
}

/// Splits a selector at the commas outside `in (...)` sets.
fn requirements(selector: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(selector[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(selector[start..].trim());
    out.retain(|r| !r.is_empty());
    out
}

/// A label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`)
/// against an object's labels.
fn matches(obj: &Value, selector: Option<&String>) -> bool {
    let labels = &obj["metadata"]["labels"];
    let value = |k: &str| labels[k.trim()].as_str();
    let set = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_owned())
            .collect()
    };
    selector.is_none_or(|sel| {
        requirements(sel).into_iter().all(|req| {
            if let Some((k, v)) = req.split_once("!=") {
                value(k) != Some(v.trim())
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                value(k) == Some(v.trim())
            } else if let Some((k, vs)) = req.split_once(" notin ") {
                value(k).is_none_or(|v| !set(vs).iter().any(|s| s == v))
            } else if let Some((k, vs)) = req.split_once(" in ") {
                value(k).is_some_and(|v| set(vs).iter().any(|s| s == v))
            } else if let Some(k) = req.strip_prefix('!') {
                value(k).is_none()
            } else {
                value(req).is_some()
            }
        })
    })
}

fn list<'a>(
    kind: &str,
    api: &str,
    objects: impl Iterator<Item = &'a Value>,
    q: &HashMap<String, String>,
    version: String,
) -> Response {
    let items: Vec<Value> = objects
        .filter(|o| matches(o, q.get("labelSelector")))
        .cloned()
        .collect();
    Json(
        json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": version},
        "items": items}),
    )
    .into_response()
}

/// `DeleteOptions` from the body or the query.
struct DeleteOptions {
    propagation: Option<String>,
    grace: Option<i64>,
    uid: Option<String>,
}

impl DeleteOptions {
    fn read(body: &Bytes, q: &HashMap<String, String>) -> Self {
        let b: Value = serde_json::from_slice(body).unwrap_or_default();
        Self {
            propagation: (b["propagationPolicy"].as_str().map(str::to_owned))
                .or_else(|| q.get("propagationPolicy").cloned()),
            grace: (b["gracePeriodSeconds"].as_i64())
                .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok())),
            uid: b["preconditions"]["uid"].as_str().map(str::to_owned),
        }
    }

    /// 409 when the object is not the one the preconditions name.
    fn check(&self, obj: Option<&Value>, kind: &str, name: &str) -> Result<(), Refusal> {
        match (&self.uid, obj) {
            (Some(uid), Some(o)) if o["metadata"]["uid"] != json!(uid) => Err(Refusal {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {kind} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    o["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            }),
            _ => Ok(()),
        }
    }
}

async fn version() -> Json<Value> {
    Json(
        json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "gitCommit": "0",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"}),
    )
}

async fn list_jobs(State(c): State<Shared>, Query(q): Q) -> Response {
    let mut w = c.lock();
    let version = w.version();
    list("JobList", "batch/v1", w.jobs.values(), &q, version)
}

/// Creates the Job and its pod; with a kubelet, the pod starts running, and a Job with
/// `activeDeadlineSeconds` gets its deadline watched.
async fn create_job(State(c): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(job) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the body is not a Job");
    };
    let created = cluster::create_job(&mut c.lock(), &ns, job);
    let (job, pod) = match created {
        Ok(made) => made,
        Err(r) => return refused(r),
    };
    if c.options.kubelet {
        tokio::spawn(kubelet::run_pod(c.clone(), pod));
        if let Some(secs) = job["spec"]["activeDeadlineSeconds"].as_u64() {
            let (c, name, uid) = (
                c.clone(),
                job["metadata"]["name"].clone(),
                job["metadata"]["uid"].clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                let name = name.as_str().unwrap_or_default();
                cluster::deadline_passed(&mut c.lock(), name, &uid, true);
            });
        }
    }
    (StatusCode::CREATED, Json(job)).into_response()
}

async fn get_job(State(c): State<Shared>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut w = c.lock();
    if let Some(r) = unavailable(&mut w) {
        return r;
    }
    answer((w.jobs.get(&name).cloned()).ok_or_else(|| Refusal::not_found("jobs.batch", &name)))
}

async fn delete_job(
    State(c): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let opts = DeleteOptions::read(&body, &q);
    let mut w = c.lock();
    if let Err(r) = opts.check(w.jobs.get(&name), "jobs.batch", &name) {
        return refused(r);
    }
    let kubelet = c.options.kubelet;
    answer(cluster::delete_job(
        &mut w,
        &name,
        opts.propagation.as_deref(),
        kubelet,
    ))
}

async fn list_pods(State(c): State<Shared>, Query(q): Q) -> Response {
    let mut w = c.lock();
    if let Some(r) = unavailable(&mut w) {
        return r;
    }
    let version = w.version();
    list("PodList", "v1", w.pods.values(), &q, version)
}

async fn get_pod(State(c): State<Shared>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let w = c.lock();
    answer((w.pods.get(&name).cloned()).ok_or_else(|| Refusal::not_found("pods", &name)))
}

async fn delete_pod(
    State(c): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let opts = DeleteOptions::read(&body, &q);
    let mut w = c.lock();
    if let Err(r) = opts.check(w.pods.get(&name), "pods", &name) {
        return refused(r);
    }
    let kubelet = c.options.kubelet;
    answer(cluster::delete_pod(&mut w, &name, opts.grace, kubelet))
}

async fn patch_pod(
    State(c): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let strategic = kind.starts_with("application/strategic-merge-patch+json");
    if !strategic && !kind.starts_with("application/merge-patch+json") {
        return status(
            415,
            "UnsupportedMediaType",
            &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {kind:?})"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the patch is not JSON");
    };
    let kubelet = c.options.kubelet;
    answer(cluster::patch_pod(
        &mut c.lock(),
        &name,
        strategic,
        &patch,
        kubelet,
    ))
}

async fn create_secret(State(c): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut s) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the body is not a Secret");
    };
    let mut w = c.lock();
    let name = s["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if w.secrets.contains_key(&name) {
        return refused(Refusal::exists("secrets", &name));
    }
    // The API server keeps `stringData` as `data`.
    use base64::Engine as _;
    if let Some(plain) = s["stringData"].as_object().cloned() {
        for (k, v) in plain {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            s["data"][k] = json!(encoded);
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("stringData");
        }
    }
    if s["type"].is_null() {
        s["type"] = json!("Opaque");
    }
    s["metadata"]["uid"] = json!(w.uid());
    s["metadata"]["namespace"] = json!(ns);
    s["metadata"]["creationTimestamp"] = json!(now());
    s["metadata"]["resourceVersion"] = json!(w.version());
    w.secrets.insert(name, s.clone());
    (StatusCode::CREATED, Json(s)).into_response()
}

async fn list_secrets(State(c): State<Shared>, Query(q): Q) -> Response {
    let mut w = c.lock();
    let version = w.version();
    list("SecretList", "v1", w.secrets.values(), &q, version)
}

async fn get_secret(
    State(c): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    let w = c.lock();
    answer((w.secrets.get(&name).cloned()).ok_or_else(|| Refusal::not_found("secrets", &name)))
}
