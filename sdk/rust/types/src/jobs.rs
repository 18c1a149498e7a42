//! Jobs: a registered container image plus how to run it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The scheduler a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// A container on the engine's Docker daemon.
    Docker,
    /// A Docker Swarm service in replicated-job mode.
    Swarm,
    /// A Kubernetes `batch/v1` Job.
    Kubernetes,
    /// A Nomad batch job.
    Nomad,
}

impl BackendName {
    /// The name used in job definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Swarm => "swarm",
            Self::Kubernetes => "kubernetes",
            Self::Nomad => "nomad",
        }
    }
}

/// What a trigger does when its run cannot start now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Wait, first in first out, and start as soon as possible.
    #[default]
    Queue,
    /// Refuse with 409, naming the run that holds the slot.
    Reject,
    /// Record the run as `skipped`; it never starts.
    Skip,
}

/// Resource limits of each run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores, e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1024))]
    pub cpus: Option<f64>,
    /// Memory limit in MiB. Without it the engine's default limit applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 6, maximum = 4194304))]
    pub memory_mb: Option<i64>,
}

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A crontab(5) expression with 5 fields, or 6 with seconds in front.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Amsterdam`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A paused schedule fires nothing; the job can still be triggered by hand.
    #[serde(default)]
    pub paused: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// Retries of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: i64,
    /// Seconds to wait before the next attempt.
    #[serde(default = "default_backoff")]
    pub backoff_seconds: i64,
}

fn default_backoff() -> i64 {
    30
}

/// Failures that are retried besides non-zero exits and lost runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Retry an attempt that ran past `timeout_seconds`.
    TimedOut,
    /// Retry an attempt killed for exceeding its memory limit.
    OomKilled,
}

/// How secret values reach the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SecretDelivery {
    /// As environment variables (the default).
    #[default]
    Env,
    /// As files `/run/secrets/<KEY>` on an in-memory filesystem.
    Files,
}

/// A Docker log driver and its options, e.g. `{name: json-file, options: {max-size: 1m}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogDriver {
    /// The driver: `json-file`, `local`, `journald`, `syslog`, `none`, ...
    pub name: String,
    /// Its options, as `docker run --log-opt` takes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Credentials for pulling the job's image from a private registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// The registry's host, e.g. `myteam.azurecr.io`.
    pub server: String,
    /// The user name.
    pub username: String,
    /// The name of one of the job's secrets that holds the password. That secret is used for
    /// the pull only and is not passed to the container.
    pub password_secret: String,
}

/// When a run's image is pulled before the run starts.
///
/// Left out, the engine picks the safe default: a job never runs an image that its own
/// credentials (or their absence) could not pull, whatever another job left in a host's
/// cache. On `docker` and `swarm` that is `always`, except for an image that never came
/// from a registry (built or imported on the host), which runs as it is; on `kubernetes`
/// and `nomad` it is `always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull before every run, with the job's credentials; a failed pull fails the run even
    /// when the host has the image (as Kubernetes' `AlwaysPullImages` admission does).
    Always,
    /// Pull only when the host lacks the image. Faster, and it needs no registry once the
    /// image is cached — but any job naming a cached image runs it.
    IfNotPresent,
    /// Never pull: the image must already be on the host.
    Never,
}

/// A job definition as sent to `POST /api/v1/jobs` and `PUT /api/v1/jobs/{name}`.
///
/// Every field but `name` and `image` is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique name: lowercase letters, digits and `-`, at most 63 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
            min_length = 1,
            max_length = 63
        )
    )]
    pub name: String,
    /// The container image, e.g. `registry.example.com/sync/customer-a:1.4`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub image: String,
    /// The command to run instead of the image's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub command: Option<Vec<String>>,
    /// Plain configuration, passed as environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret values, passed to the container but never shown again. On `PUT`/`PATCH`,
    /// leaving this out keeps the stored secrets; giving it replaces the whole set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    /// Where the job runs; the engine's default backend when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendName>,
    /// Limits of each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A run is stopped and ends `timed_out` after this many seconds of running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31622400))]
    pub timeout_seconds: Option<i64>,
    /// At most this many runs of the job at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max_parallel: Option<i64>,
    /// Most runs that may wait in the job's queue; past it a trigger gets 429 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100000))]
    pub max_queued: Option<i64>,
    /// Named locks shared with other jobs; a run needs all of them to start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_keys: Vec<String>,
    /// What a trigger does when the run cannot start now (default `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<OnConflict>,
    /// When the job runs by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Retries of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// How long a run usually takes; without it the engine learns it from past runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration_seconds: Option<i64>,
    /// How the engine watches the job's runs for anomalies (defaults when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::Monitoring>,
    /// Let `trigger`-scoped tokens override the command when they trigger a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_command_override: bool,
    /// Seconds between SIGTERM and SIGKILL when a run is stopped (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub stop_grace_seconds: Option<i64>,
    /// Retry attempts that timed out or were killed for memory too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// How secrets reach the container (default `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_delivery: Option<SecretDelivery>,
    /// Network of the container: `bridge` (default), `host`, `none` or a network's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The Docker log driver of the job's containers (`docker` and `swarm` backends); the
    /// daemon's default when left out. The engine stores every line itself, so `none`
    /// saves the host's disk without losing output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
    /// Credentials for a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAuth>,
    /// When the image is pulled; the safe default (see [`PullPolicy`]) when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Free-form labels for people and filters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What the job does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Channels told about this job's runs, and on which events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<crate::AlertSubscription>,
}

/// A registered job, as the API returns it: the definition with defaults filled in,
/// the names (never the values) of its secrets, and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Unique name.
    pub name: String,
    /// The container image.
    pub image: String,
    /// The command, or `null` for the image's own.
    pub command: Option<Vec<String>>,
    /// Plain configuration.
    pub env: BTreeMap<String, String>,
    /// The names of the job's secrets, sorted.
    pub secret_names: Vec<String>,
    /// Where the job runs.
    pub backend: BackendName,
    /// Limits of each run.
    pub resources: Resources,
    /// Timeout of a run in seconds, if any.
    pub timeout_seconds: Option<i64>,
    /// At most this many runs at once.
    pub max_parallel: i64,
    /// Most runs waiting in the job's queue.
    pub max_queued: i64,
    /// Named locks shared with other jobs.
    pub lock_keys: Vec<String>,
    /// What a trigger does when the run cannot start now.
    pub on_conflict: OnConflict,
    /// When the job runs by itself.
    pub schedule: Option<Schedule>,
    /// The schedule's next fire times (empty without a schedule or while it is paused).
    pub next_fire_times: Vec<DateTime<Utc>>,
    /// Retries of failed attempts.
    pub retries: Option<Retries>,
    /// How long a run usually takes, if set.
    pub expected_duration_seconds: Option<i64>,
    /// How the engine watches the job's runs, defaults filled in.
    pub monitoring: crate::Monitoring,
    /// Whether `trigger`-scoped tokens may override the command.
    pub allow_command_override: bool,
    /// Seconds between SIGTERM and SIGKILL when a run is stopped.
    pub stop_grace_seconds: i64,
    /// Failures retried besides non-zero exits and lost runs.
    pub retry_on: Vec<RetryOn>,
    /// How secrets reach the container.
    pub secret_delivery: SecretDelivery,
    /// Network of the container, if not the backend's default.
    pub network: Option<String>,
    /// The Docker log driver of its containers, if not the daemon's default.
    #[serde(default)]
    pub log_driver: Option<LogDriver>,
    /// Credentials for a private registry (the password stays a secret).
    pub registry: Option<RegistryAuth>,
    /// When the image is pulled; `null` for the safe default (see [`PullPolicy`]).
    #[serde(default)]
    pub pull_policy: Option<PullPolicy>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// What the job does.
    pub description: Option<String>,
    /// Channels told about this job's runs, and on which events.
    #[serde(default)]
    pub alerts: Vec<crate::AlertSubscription>,
    /// When the job was registered.
    pub created_at: DateTime<Utc>,
    /// When its definition or secrets last changed.
    pub updated_at: DateTime<Utc>,
    /// Its latest run, if it has run.
    #[serde(default)]
    pub last_run: Option<LastRun>,
}

/// A job's latest run, in brief (`GET /api/v1/runs/{id}` has the whole run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastRun {
    /// The run's id.
    pub id: String,
    /// Where it stands.
    pub status: crate::RunStatus,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Body of `PUT /api/v1/jobs/{name}/secrets/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The secret's value; it is never shown again.
    pub value: String,
}

impl Job {
    /// The job's definition as a [`JobSpec`] with every default written out, without its
    /// secrets (their values never leave the engine): what `PUT /api/v1/jobs/{name}` takes
    /// back unchanged, keeping the stored secrets.
    pub fn to_spec(&self) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            secrets: None,
            backend: Some(self.backend),
            resources: Some(self.resources),
            timeout_seconds: self.timeout_seconds,
            max_parallel: Some(self.max_parallel),
            max_queued: Some(self.max_queued),
            lock_keys: self.lock_keys.clone(),
            on_conflict: Some(self.on_conflict),
            schedule: self.schedule.clone(),
            retries: self.retries,
            expected_duration_seconds: self.expected_duration_seconds,
            monitoring: Some(self.monitoring),
            allow_command_override: self.allow_command_override,
            stop_grace_seconds: Some(self.stop_grace_seconds),
            retry_on: self.retry_on.clone(),
            secret_delivery: Some(self.secret_delivery),
            network: self.network.clone(),
            log_driver: self.log_driver.clone(),
            registry: self.registry.clone(),
            pull_policy: self.pull_policy,
            labels: self.labels.clone(),
            description: self.description.clone(),
            alerts: self.alerts.clone(),
        }
    }
}
