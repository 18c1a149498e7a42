//! The one trait through which the engine runs containers, whatever schedules them.
//!
//! A backend turns a [`LaunchSpec`] into a running container (a Docker container, a Swarm
//! service, a Kubernetes Job, a Nomad job), reports on it, streams its output, stops it and
//! cleans up after it. It knows nothing of the engine's HTTP API or store: everything it
//! needs arrives in the spec, and everything the engine must remember comes back in a
//! [`RunHandle`]. Each backend's quirks stay inside its own module.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub mod docker;
pub mod kubernetes;
pub mod nomad;
pub mod swarm;

/// Label keys every backend puts on what it creates, so that a restarted engine finds its runs.
pub mod labels {
    /// The run's id.
    pub const RUN_ID: &str = "dev.jobdock.run-id";
    /// The attempt number of the run (1 for the first).
    pub const ATTEMPT: &str = "dev.jobdock.attempt";
    /// The job's name.
    pub const JOB: &str = "dev.jobdock.job";
    /// The engine installation that launched it; stays the same across engine restarts.
    pub const INSTALLATION: &str = "dev.jobdock.installation";
}

/// Names of the scheduler kinds Jobdock can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The local (or `DOCKER_HOST`) Docker engine, one container per run.
    Docker,
    /// Docker Swarm, one replicated-job service per run.
    Swarm,
    /// Kubernetes, one `batch/v1` Job per run.
    Kubernetes,
    /// Nomad, one batch job per run.
    Nomad,
}

impl BackendKind {
    /// Every kind, in a stable order.
    pub const ALL: [BackendKind; 4] = [Self::Docker, Self::Swarm, Self::Kubernetes, Self::Nomad];

    /// The name used in job definitions and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Swarm => "swarm",
            Self::Kubernetes => "kubernetes",
            Self::Nomad => "nomad",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown backend `{s}`: expected docker, swarm, kubernetes or nomad")
            })
    }
}

/// How secret values reach the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretDelivery {
    /// As environment variables.
    #[default]
    Env,
    /// As files `/run/secrets/<KEY>` on an in-memory filesystem.
    Files,
}

/// One secret value handed to a run. The value is wrapped so that it never reaches a log by accident.
#[derive(Debug, Clone)]
pub struct Secret {
    /// The variable (or file) name.
    pub name: String,
    /// The plain value.
    pub value: SecretString,
}

/// Resource limits of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in cores (0.5 = half a core).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

/// Credentials for pulling a private image.
#[derive(Debug, Clone)]
pub struct RegistryAuth {
    /// Registry user name.
    pub username: String,
    /// Registry password or token.
    pub password: SecretString,
    /// Registry host, e.g. `myregistry.azurecr.io`.
    pub server: Option<String>,
}

/// When a run's image is pulled (the job's `pull_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Before every run, with the run's credentials; a failed pull fails the launch even
    /// when the host has the image.
    Always,
    /// Only when the host lacks the image.
    IfNotPresent,
    /// Never: the image must be on the host.
    Never,
}

/// Everything a backend needs to start one attempt of one run.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The run's id (a UUID as text).
    pub run_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The job's name.
    pub job: String,
    /// The engine installation's id, put in the labels.
    pub installation_id: String,
    /// The image reference.
    pub image: String,
    /// The command, or `None` for the image's own.
    pub command: Option<Vec<String>>,
    /// Plain environment variables (configuration and `JOBDOCK_*`), in order.
    pub env: Vec<(String, String)>,
    /// Secret values.
    pub secrets: Vec<Secret>,
    /// How the secrets are delivered.
    pub secret_delivery: SecretDelivery,
    /// Limits.
    pub resources: Resources,
    /// Network mode (Docker: `bridge`, `host`, `none` or a network name); `None` = the backend's default.
    pub network: Option<String>,
    /// User to run as (`uid[:gid]` or a name); `None` = the image's.
    pub user: Option<String>,
    /// Extra labels from the job definition (the identifying labels are added by the backend).
    pub labels: BTreeMap<String, String>,
    /// Credentials to pull the image with.
    pub registry_auth: Option<RegistryAuth>,
    /// When to pull; `None` = the backend's safe default: never run an image that these
    /// credentials (or their absence) could not pull, whatever a host has cached.
    pub pull_policy: Option<PullPolicy>,
    /// Deadline counted from the container's start, enforced by the scheduler itself where it can.
    pub timeout: Option<Duration>,
    /// The log driver of the run's container (Docker and Swarm); `None` = the daemon's default.
    /// The engine keeps the output itself, so `none` saves the host's disk at no loss.
    pub log_driver: Option<LogDriver>,
}

/// A Docker log driver and its options, e.g. `json-file` with `max-size: 1m`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDriver {
    /// The driver's name (`json-file`, `local`, `journald`, `syslog`, `none`, ...).
    pub name: String,
    /// Its options, as `docker run --log-opt` takes them.
    pub options: BTreeMap<String, String>,
}

impl LaunchSpec {
    /// The labels that identify this run on the backend.
    pub fn identity_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(labels::RUN_ID.into(), self.run_id.clone());
        l.insert(labels::ATTEMPT.into(), self.attempt.to_string());
        l.insert(labels::JOB.into(), self.job.clone());
        l.insert(labels::INSTALLATION.into(), self.installation_id.clone());
        l
    }
}

/// What the engine keeps to find a launched run again: backend-specific, but opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The run's id.
    pub run_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// The backend's own name for it (container id, service id, Job name, Nomad job id).
    pub backend_ref: String,
}

/// Where a launched run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted by the scheduler but not running yet (pulling, placing, scheduling).
    Pending {
        /// Why, when the scheduler says (e.g. `ImagePullBackOff`).
        reason: Option<String>,
    },
    /// The container runs.
    Running {
        /// When it started.
        started_at: Option<DateTime<Utc>>,
    },
    /// It has ended.
    Exited(Exit),
    /// The backend does not know this run (any more).
    NotFound,
}

/// How a run's container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The process's exit code, when there was one.
    pub exit_code: Option<i64>,
    /// Killed by the kernel for exceeding its memory limit.
    pub oom_killed: bool,
    /// The scheduler's deadline ran out (Kubernetes `DeadlineExceeded`, for instance).
    pub deadline_exceeded: bool,
    /// When the container started and finished, as the scheduler saw it.
    pub started_at: Option<DateTime<Utc>>,
    /// See `started_at`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why, in words, when it did not simply exit (failed pull, unschedulable, error).
    pub reason: Option<String>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One line of a run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the container wrote it, as near as the backend can tell: the scheduler's own
    /// stamp where its log gives one, else when the line reached the backend (a Docker
    /// container's attached streams carry no stamps).
    pub ts: DateTime<Utc>,
    /// Which stream.
    pub stream: LogStream,
    /// The line, without its newline.
    pub line: String,
    /// Where this line's stream continues after it, for backends whose lines carry no
    /// timestamps of the container's own (Nomad: the byte offset after the line). Opaque to
    /// the engine, which stores it and hands it back in [`LogFrom`] to resume exactly there.
    pub cursor: Option<String>,
}

/// Output a backend knows it could not deliver: the log has a hole at this place.
///
/// A backend reports one where its scheduler no longer holds output the engine had not read
/// yet (a log driver that rotated it away, or one that cannot be read back), so that a
/// missing stretch is never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogGap {
    /// Output after this time may be missing; `None` = from the start.
    pub after: Option<DateTime<Utc>>,
    /// Output before this time may be missing; `None` = up to the end of what was read.
    pub before: Option<DateTime<Utc>>,
    /// Bytes known to be missing, when the backend can tell.
    pub missing_bytes: Option<u64>,
    /// Why, in words, for the log and the run's timeline.
    pub reason: String,
}

/// One item of a run's output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// A line of output.
    Line(LogLine),
    /// Output the backend could not deliver, at this place in the stream.
    Gap(LogGap),
}

impl From<LogLine> for LogItem {
    fn from(line: LogLine) -> Self {
        Self::Line(line)
    }
}

/// Where a log read starts.
///
/// A backend whose lines carry the container's timestamps (Docker, Swarm, Kubernetes)
/// resumes from `since`; one whose lines carry a [`LogLine::cursor`] resumes each stream
/// from its cursor, which then wins over `since` for that stream. A resumed read may repeat
/// lines written at exactly `since`; the engine drops those by their timestamps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFrom {
    /// Lines written at or before this time are skipped; `None` = from the start.
    pub since: Option<DateTime<Utc>>,
    /// The cursor of the last standard-output line already read.
    pub stdout: Option<String>,
    /// The cursor of the last standard-error line already read.
    pub stderr: Option<String>,
}

impl LogFrom {
    /// The whole log.
    pub fn start() -> Self {
        Self::default()
    }

    /// Lines written after `since`.
    pub fn since(since: Option<DateTime<Utc>>) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    /// The cursor given for `stream`.
    pub fn cursor(&self, stream: LogStream) -> Option<&str> {
        match stream {
            LogStream::Stdout => self.stdout.as_deref(),
            LogStream::Stderr => self.stderr.as_deref(),
        }
    }
}

/// A run the backend still has (running or ended but not cleaned up), found by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// How to reach it.
    pub handle: RunHandle,
    /// The job's name, from its labels.
    pub job: String,
}

impl InFlight {
    /// The run a backend object belongs to, read back from the labels
    /// [`LaunchSpec::identity_labels`] put on it; `None` when one is missing.
    pub fn from_labels<'a>(
        backend_ref: String,
        label: impl Fn(&str) -> Option<&'a String>,
    ) -> Option<Self> {
        Some(InFlight {
            handle: RunHandle {
                run_id: label(labels::RUN_ID)?.clone(),
                attempt: label(labels::ATTEMPT)?.parse().ok()?,
                backend_ref,
            },
            job: label(labels::JOB)?.clone(),
        })
    }
}

/// Whether a backend can be reached, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendHealth {
    /// Reachable and usable.
    pub ok: bool,
    /// What it said (version, node count, or the error).
    pub detail: String,
}

/// A backend's error. Keeps the scheduler's own message for the engine's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The image could not be pulled.
    #[error("could not pull image {image}: {message}")]
    ImagePull {
        /// The image reference.
        image: String,
        /// The registry's or daemon's words.
        message: String,
    },
    /// The run's spec cannot be launched as given (bad image name, bad limits, ...).
    #[error("invalid launch request: {0}")]
    Invalid(String),
    /// The backend does not know the run.
    #[error("{0} not found")]
    NotFound(String),
    /// The scheduler cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Any other error from the scheduler's API.
    #[error("backend error: {message}")]
    Api {
        /// HTTP-like status code when the API gave one.
        status: Option<u16>,
        /// The scheduler's message.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A stream of log lines (stdout and stderr interleaved, in the order written), with the
/// gaps a backend knows of in their places.
pub type LogStreamBox = BoxStream<'static, Result<LogItem, BackendError>>;

/// A scheduler that can run Jobdock's containers.
///
/// Every method is safe to call again after an engine restart with a handle stored before it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which kind this is.
    fn kind(&self) -> BackendKind;

    /// Whether the scheduler can be reached now.
    async fn health(&self) -> BackendHealth;

    /// Start one attempt of a run: pull the image if needed, create and start the container.
    /// Launching an attempt that already exists (same run id and attempt) returns its handle
    /// instead of starting a second one.
    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError>;

    /// Where the run stands now.
    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError>;

    /// Stream the run's output from `from` until it ends.
    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox;

    /// Wait until the run has ended and say how.
    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError>;

    /// Ask the run to stop (SIGTERM or the scheduler's equivalent), killing it after `grace`.
    /// Returns once the container has really stopped.
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError>;

    /// Remove everything the run created (container, service, secrets, Job). Idempotent.
    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError>;

    /// The runs this installation has on the backend, found by their labels.
    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError>;
}

/// A launch request for the backends' unit tests.
#[cfg(test)]
pub(crate) fn sample_launch_spec() -> LaunchSpec {
    LaunchSpec {
        run_id: "0190f1a2-run".into(),
        attempt: 2,
        job: "sync".into(),
        installation_id: "inst".into(),
        image: "busybox:1".into(),
        command: Some(vec!["true".into()]),
        env: vec![("A".into(), "1".into())],
        secrets: vec![Secret {
            name: "TOKEN".into(),
            value: SecretString::from("s3cr3t"),
        }],
        secret_delivery: SecretDelivery::Env,
        resources: Resources::default(),
        network: None,
        user: None,
        labels: BTreeMap::new(),
        registry_auth: None,
        pull_policy: None,
        timeout: None,
        log_driver: None,
    }
}
