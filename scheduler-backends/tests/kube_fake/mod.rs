//! An HTTP fake of the Kubernetes API server, serving the paths and object shapes the
//! Kubernetes backend uses (Jobs, pods, pod logs, Secrets, `/version`), so that its tests
//! need no cluster.
//!
//! Nothing runs: creating a Job creates one pod `<job>-pod` in `Pending`, and the test moves
//! it along with [`FakeKube::run`], [`FakeKube::finish`], [`FakeKube::wait_on`] and
//! [`FakeKube::job_condition`]. Every request is recorded ([`FakeKube::seen`]) with its body.

// Each test uses a part of the fake; no test uses all of it.
#![allow(dead_code)]

mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The body, as JSON when it was.
    pub body: Option<Value>,
}

/// The fake cluster's objects and knobs.
#[derive(Debug, Default)]
pub struct World {
    pub jobs: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    /// Each pod's log lines, `(RFC 3339 stamp, text)`.
    pub logs: BTreeMap<String, Vec<(String, String)>>,
    pub seen: Vec<Seen>,
    /// Answer this many of the next Job/pod reads with 503, as an API server going away would.
    pub fail_reads: usize,
    /// Cut the first log connection after this many lines.
    pub cut_logs_after: Option<usize>,
    /// Keep a pod this many pod listings after its deletion is asked (graceful termination).
    pub linger_polls: usize,
    next_uid: u64,
}

/// A running fake; dropping it stops the server.
#[derive(Clone)]
pub struct FakeKube {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub world: Arc<Mutex<World>>,
    server: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if Arc::strong_count(&self.server) == 1 {
            self.server.abort();
        }
    }
}

/// `now` in the API server's format.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl FakeKube {
    /// Starts the fake on a free port.
    pub async fn start() -> anyhow::Result<FakeKube> {
        let world = Arc::new(Mutex::new(World::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = routes::router(world.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeKube {
            url,
            world,
            server: Arc::new(server),
        })
    }

    /// A `kube::Client` for the fake.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// The world, locked.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.world().seen.clone()
    }

    fn pod_of(&self, job: &str) -> String {
        format!("{job}-pod")
    }

    fn container_state(&self, job: &str, state: Value) {
        let pod = self.pod_of(job);
        let mut w = self.world();
        let p = w.pods.get_mut(&pod).expect("pod");
        p["status"]["containerStatuses"] = json!([{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": state,
        }]);
    }

    /// The container starts.
    pub fn run(&self, job: &str) {
        self.container_state(job, json!({"running": {"startedAt": now()}}));
        let pod = self.pod_of(job);
        self.world().pods.get_mut(&pod).expect("pod")["status"]["phase"] = json!("Running");
    }

    /// The container writes a line (stamped now).
    pub fn write(&self, job: &str, line: &str) {
        let pod = self.pod_of(job);
        self.world()
            .logs
            .entry(pod)
            .or_default()
            .push((now(), line.to_owned()));
    }

    /// The container is stuck waiting with `reason`.
    pub fn wait_on(&self, job: &str, reason: &str, message: &str) {
        self.container_state(
            job,
            json!({"waiting": {"reason": reason, "message": message}}),
        );
    }

    /// The container ends with `code` (and `reason`, e.g. `OOMKilled`).
    pub fn exit(&self, job: &str, code: i32, reason: &str) {
        self.container_state(
            job,
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": now(), "finishedAt": now()}}),
        );
        let pod = self.pod_of(job);
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        self.world().pods.get_mut(&pod).expect("pod")["status"]["phase"] = json!(phase);
    }

    /// The Job gets the condition `kind` (`Complete`, `Failed`...) with `reason`.
    pub fn job_condition(&self, job: &str, kind: &str, reason: &str) {
        let mut w = self.world();
        let j = w.jobs.get_mut(job).expect("job");
        let cond = json!({"type": kind, "status": "True", "reason": reason,
            "message": format!("fake: {reason}"), "lastTransitionTime": now()});
        match j["status"]["conditions"].as_array_mut() {
            Some(c) => c.push(cond),
            None => j["status"]["conditions"] = json!([cond]),
        }
    }

    /// The container exits with `code` and the Job is `Complete` (0) or `Failed`.
    pub fn finish(&self, job: &str, code: i32, reason: &str) {
        self.exit(job, code, reason);
        if code == 0 {
            self.job_condition(job, "Complete", "CompletionsReached");
        } else {
            self.job_condition(job, "Failed", "BackoffLimitExceeded");
        }
    }

    pub(crate) fn uid(w: &mut World) -> String {
        w.next_uid += 1;
        format!("00000000-0000-0000-0000-{:012}", w.next_uid)
    }
}
