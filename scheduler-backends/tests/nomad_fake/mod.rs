//! An HTTP fake of the Nomad agent, serving the paths and object shapes the Nomad backend
//! uses, so that its tests need no Nomad.
//!
//! A registered job "runs" on the host: the docker task's `command` and `args` are started
//! with `tokio::process` (the image is ignored, except that an image containing `missing`
//! fails to pull), its output lands in log files served framed like Nomad's, and its exit
//! becomes a `Terminated` event. See `run` for the life of an allocation and `logs` for the
//! log endpoint.

// Each test uses a part of the fake; no test uses all of it.
#![allow(dead_code)]

mod logs;
mod run;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The token every request must carry, when set.
    pub token: Option<String>,
    /// Most bytes of output per log frame: small values split lines across frames.
    pub frame_bytes: usize,
    /// Break the first log connection of each stream after this many data frames.
    pub drop_logs_after_frames: Option<usize>,
    /// Log rotation as logmon does it: a new file `<task>.<stream>.<n+1>` once the current
    /// one holds this many bytes, keeping the newest `log_max_files` (Nomad's defaults are
    /// 10 MB and 10 files).
    pub log_file_bytes: u64,
    /// See `log_file_bytes`.
    pub log_max_files: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            frame_bytes: 4096,
            drop_logs_after_frames: None,
            log_file_bytes: 10 << 20,
            log_max_files: 10,
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `X-Nomad-Token` header.
    pub token: Option<String>,
    /// The body, as JSON when it was.
    pub body: Option<Value>,
}

/// One allocation's fake state.
#[derive(Debug, Clone)]
pub(crate) struct Alloc {
    pub job_id: String,
    pub client_status: String,
    pub create_index: u64,
    /// The task's state object (`State`, `StartedAt`, `Events`...).
    pub task: Value,
    /// The allocation's directory: `alloc/logs/`, `run/secrets/`.
    pub dir: PathBuf,
    /// The process group of the running task.
    pub pid: Option<u32>,
}

/// A registered job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub spec: Value,
    pub stop: bool,
    pub modify_index: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub jobs: HashMap<String, Job>,
    pub allocs: HashMap<String, Alloc>,
    pub vars: HashMap<String, Value>,
    pub seen: Vec<Seen>,
    pub index: u64,
    /// Log streams whose first connection has been broken already.
    pub dropped: HashSet<(String, String)>,
}

/// What the handlers share.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub options: Options,
    pub dir: tempfile::TempDir,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake agent on a port of its own.
pub struct FakeNomad {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    shared: Arc<Shared>,
}

impl FakeNomad {
    /// Starts a fake on a free port.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            options,
            dir: tempfile::tempdir()?,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let app = router(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address, shared })
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// The job as registered (the `Job` object of the POST), if it is still there.
    pub fn job(&self, id: &str) -> Option<Value> {
        self.shared.lock().jobs.get(id).map(|j| j.spec.clone())
    }

    /// A variable's items, if it exists.
    pub fn variable(&self, path: &str) -> Option<Value> {
        self.shared.lock().vars.get(path).cloned()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/jobs", post(register).get(list_jobs))
        .route("/v1/job/{id}", get(read_job).delete(delete_job))
        .route("/v1/job/{id}/allocations", get(allocations))
        .route("/v1/client/allocation/{id}/signal", post(signal))
        .route("/v1/client/fs/logs/{id}", get(logs::serve))
        .route("/v1/client/fs/ls/{id}", get(logs::list))
        .route(
            "/v1/var/{*path}",
            get(read_var).put(put_var).delete(delete_var),
        )
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// Records every request and refuses those without the configured token.
async fn record(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let token = parts
        .headers
        .get("X-Nomad-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.lock().seen.push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        token: token.clone(),
        body: serde_json::from_slice(&bytes).ok(),
    });
    if s.options.token.is_some() && token != s.options.token {
        return (StatusCode::FORBIDDEN, "Permission denied").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn agent_self() -> Json<Value> {
    Json(
        json!({ "config": { "Version": { "Version": "1.9.9-fake" } }, "member": { "Name": "fake" } }),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// `POST /v1/jobs`, with `EnforceIndex` as Nomad checks it.
async fn register(State(s): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let job = body["Job"].clone();
    let Some(id) = job["ID"].as_str().map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "missing job ID");
    };
    let alloc_id = uuid::Uuid::new_v4().to_string();
    {
        let mut inner = s.lock();
        if let Some(existing) = inner.jobs.get(&id) {
            if body["EnforceIndex"] == true {
                let msg = format!(
                    "Enforcing job modify index {}: job exists with conflicting job modify index: {}",
                    body["JobModifyIndex"], existing.modify_index
                );
                return error(StatusCode::INTERNAL_SERVER_ERROR, &msg);
            }
            return Json(json!({ "EvalID": "" })).into_response();
        }
        inner.index += 1;
        let index = inner.index;
        inner.jobs.insert(
            id.clone(),
            Job {
                spec: job,
                stop: false,
                modify_index: index,
            },
        );
        let dir = s.dir.path().join(&alloc_id);
        inner
            .allocs
            .insert(alloc_id.clone(), run::pending_alloc(&id, index, dir));
    }
    tokio::spawn(run::run(s.clone(), alloc_id));
    Json(json!({ "EvalID": uuid::Uuid::new_v4().to_string() })).into_response()
}

async fn list_jobs(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let with_meta = q.get("meta").is_some_and(|m| m == "true");
    let inner = s.lock();
    let stubs: Vec<Value> = inner
        .jobs
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(id, job)| {
            let mut stub = json!({ "ID": id, "Type": "batch", "Stop": job.stop });
            if with_meta {
                stub["Meta"] = job.spec["Meta"].clone();
            }
            stub
        })
        .collect();
    Json(Value::Array(stubs))
}

async fn read_job(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match s.lock().jobs.get(&id) {
        Some(job) => {
            let mut spec = job.spec.clone();
            spec["Stop"] = json!(job.stop);
            Json(spec).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "job not found"),
    }
}

/// `DELETE /v1/job/:id[?purge=true]`: stops the task (kill signal, then SIGKILL after the
/// task's `KillTimeout`), and with `purge` forgets the job and its allocations.
async fn delete_job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let purge = q.get("purge").is_some_and(|p| p == "true");
    let (kill_timeout, allocs) = {
        let mut inner = s.lock();
        let Some(job) = inner.jobs.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "job not found");
        };
        job.stop = true;
        let timeout = job.spec["TaskGroups"][0]["Tasks"][0]["KillTimeout"]
            .as_u64()
            .unwrap_or(5_000_000_000);
        let allocs: Vec<String> = inner
            .allocs
            .iter()
            .filter(|(_, a)| a.job_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        if purge {
            inner.jobs.remove(&id);
        }
        (std::time::Duration::from_nanos(timeout), allocs)
    };
    for alloc in allocs {
        run::kill(&s, &alloc, if purge { "KILL" } else { "TERM" }).await;
        if purge {
            let gone = s.lock().allocs.remove(&alloc);
            if let Some(a) = gone {
                let _ = std::fs::remove_dir_all(a.dir);
            }
        } else {
            tokio::spawn(run::kill_after(s.clone(), alloc, kill_timeout));
        }
    }
    Json(json!({ "EvalID": "" })).into_response()
}

async fn allocations(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let inner = s.lock();
    let allocs: Vec<Value> = inner
        .allocs
        .iter()
        .filter(|(_, a)| a.job_id == id)
        .map(|(alloc_id, a)| run::alloc_json(alloc_id, a))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-Nomad-Index",
        inner.index.to_string().parse().expect("a number"),
    );
    (headers, Json(Value::Array(allocs))).into_response()
}

async fn signal(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let running = s
        .lock()
        .allocs
        .get(&id)
        .map(|a| a.client_status == "running");
    match running {
        None => error(StatusCode::NOT_FOUND, "unknown allocation"),
        Some(false) => error(StatusCode::BAD_REQUEST, "task not running"),
        Some(true) => {
            let sig = body["Signal"]
                .as_str()
                .unwrap_or("SIGTERM")
                .trim_start_matches("SIG")
                .to_owned();
            run::kill(&s, &id, &sig).await;
            Json(json!({})).into_response()
        }
    }
}

async fn read_var(State(s): State<Arc<Shared>>, Path(path): Path<String>) -> Response {
    match s.lock().vars.get(&path) {
        Some(items) => Json(json!({ "Path": path, "Items": items })).into_response(),
        None => error(StatusCode::NOT_FOUND, "variable not found"),
    }
}

async fn put_var(
    State(s): State<Arc<Shared>>,
    Path(path): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    s.lock().vars.insert(path.clone(), body["Items"].clone());
    Json(json!({ "Path": path })).into_response()
}

async fn delete_var(State(s): State<Arc<Shared>>, Path(path): Path<String>) -> Response {
    match s.lock().vars.remove(&path) {
        Some(_) => StatusCode::OK.into_response(),
        None => error(StatusCode::NOT_FOUND, "variable not found"),
    }
}
