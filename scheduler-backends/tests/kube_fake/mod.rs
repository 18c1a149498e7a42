//! An HTTP fake of the Kubernetes API server, serving the paths and object shapes the
//! Kubernetes backend uses (Jobs, pods, pod logs, Secrets, `/version`), so that its tests
//! need no cluster.
//!
//! Creating a Job creates its one pod, `Pending`. With [`Options::kubelet`] the pod runs: a
//! kubelet starts its container's command as a host process (`kubelet`), keeps its output as
//! the pod's log (`logs`), and its end becomes the container's `terminated` state and,
//! through the Job controller, the Job's conditions. Without it nothing runs, and the test
//! plays kubelet and Job controller with [`FakeKube::run`], [`FakeKube::write`],
//! [`FakeKube::finish`], [`FakeKube::wait_on`] and [`FakeKube::job_condition`]. Deletes,
//! grace periods, finalizers and the garbage collector work as the API server's do in both
//! (`cluster`). Every request is recorded ([`FakeKube::seen`]) with its body.

// Each test uses a part of the fake; no test uses all of it.
#![allow(dead_code)]

mod cluster;
mod kubelet;
mod logs;
mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

pub use cluster::JOB_NAME_LABEL;

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run each pod on the host as a kubelet would, and let the Job controller react to its
    /// end; otherwise the test moves pods and Jobs along by hand.
    pub kubelet: bool,
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `Content-Type` header (a patch's kind).
    pub content_type: Option<String>,
    /// The body, as JSON when it was.
    pub body: Option<Value>,
}

/// One record of a container's log as the runtime writes it: a line, or a piece of one.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// When the runtime wrote it, RFC 3339 with nanoseconds.
    pub ts: String,
    /// `stdout` or `stderr`; the pod log API does not tell them apart.
    pub stream: &'static str,
    /// The bytes, without a newline.
    pub text: Vec<u8>,
    /// A piece of a longer line, or a last line without a newline: nothing ends it.
    pub partial: bool,
    /// The log file it went to: the kubelet rotates a container's log into a new file
    /// once the current one holds `containerLogMaxSize`.
    pub file: u64,
}

/// The fake cluster's objects and knobs.
#[derive(Debug, Default)]
pub struct World {
    pub jobs: BTreeMap<String, Value>,
    pub pods: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    /// Each pod's log, in the order the runtime wrote it.
    pub logs: BTreeMap<String, Vec<LogRecord>>,
    pub seen: Vec<Seen>,
    /// Answer this many of the next Job/pod reads with 503, as an API server going away would.
    pub fail_reads: usize,
    /// Cut the first log connection after this many records.
    pub cut_logs_after: Option<usize>,
    /// The kubelet's `containerLogMaxSize`: a new log file once the current one holds this
    /// many bytes (none when unset).
    pub container_log_max_size: Option<usize>,
    /// The kubelet's running containers: pod name to process (group) id.
    pub(crate) processes: BTreeMap<String, u32>,
    next_uid: u64,
    resource_version: u64,
    last_stamp: Option<DateTime<Utc>>,
}

impl World {
    /// A fresh object uid.
    pub(crate) fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-0000-0000-{:012}", self.next_uid)
    }

    /// The next `resourceVersion`.
    pub(crate) fn version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Now, as the kubelet stamps log records: nanoseconds, never before the last stamp.
    pub(crate) fn stamp(&mut self) -> String {
        let now = Utc::now().max(self.last_stamp.unwrap_or_default());
        self.last_stamp = Some(now);
        now.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    /// The name of the pod the Job controller made for `job`.
    pub fn pod_of(&self, job: &str) -> Option<String> {
        self.pods
            .iter()
            .find(|(_, p)| p["metadata"]["labels"][JOB_NAME_LABEL] == json!(job))
            .map(|(name, _)| name.clone())
    }
}

/// What the server, the kubelet and the tests share.
pub(crate) struct Cluster {
    world: Mutex<World>,
    pub(crate) options: Options,
    /// Where the kubelet keeps pods' volumes and the image's programs.
    pub(crate) dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Cluster {
    /// Containers die with their node: nothing a test started outlives the fake.
    fn drop(&mut self) {
        for pid in self.lock().processes.values() {
            kubelet::kill_group_now(*pid);
        }
    }
}

/// A running fake; dropping the last clone stops the server.
#[derive(Clone)]
pub struct FakeKube {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    cluster: Arc<Cluster>,
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
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl FakeKube {
    /// Starts a fake on a free port.
    pub async fn start(options: Options) -> anyhow::Result<FakeKube> {
        let dir = tempfile::tempdir()?;
        if options.kubelet {
            kubelet::prepare(dir.path())?;
        }
        let cluster = Arc::new(Cluster {
            world: Mutex::default(),
            options,
            dir,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = routes::router(cluster.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeKube {
            url,
            cluster,
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
        self.cluster.lock()
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.world().seen.clone()
    }

    fn pod_of(&self, job: &str) -> String {
        self.world().pod_of(job).expect("the job's pod")
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
        let mut w = self.world();
        let ts = w.stamp();
        let records = w.logs.entry(pod).or_default();
        let file = records.last().map_or(0, |r| r.file);
        records.push(LogRecord {
            ts,
            stream: "stdout",
            text: line.as_bytes().to_vec(),
            partial: false,
            file,
        });
    }

    /// The container is stuck waiting with `reason`.
    pub fn wait_on(&self, job: &str, reason: &str, message: &str) {
        self.container_state(
            job,
            json!({"waiting": {"reason": reason, "message": message}}),
        );
    }

    /// The container ends with `code` (and `reason`, e.g. `OOMKilled`); a pod whose deletion
    /// was asked then goes, as the kubelet would see to.
    pub fn exit(&self, job: &str, code: i32, reason: &str) {
        let pod = self.pod_of(job);
        let terminated = json!({"exitCode": code, "reason": reason, "startedAt": now(),
            "finishedAt": now(), "containerID": "containerd://fake"});
        cluster::container_ended(&mut self.world(), &pod, terminated, false);
    }

    /// The Job gets the condition `kind` (`Complete`, `Failed`...) with `reason`.
    pub fn job_condition(&self, job: &str, kind: &str, reason: &str) {
        let mut w = self.world();
        let j = w.jobs.get_mut(job).expect("job");
        cluster::add_condition(j, kind, reason, &format!("fake: {reason}"));
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
}
