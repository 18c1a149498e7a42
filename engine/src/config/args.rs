//! The flags of `serve` and of the offline commands, with their variables and `--help`
//! text. clap reads both flags and variables; [`super::layers`] stacks what it found over
//! the settings file and the defaults. A flag's name (with `_` for `-`) is its key in the
//! file and in [`super::layers::Layered`]; a field that is no file key is skipped by serde.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::telemetry::LogFormat;

/// Where the engine keeps its state; shared by `serve` and the offline `keys` commands.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StoreArgs {
    /// Settings file (TOML). Default: `jobdock.toml` in the data directory, when present.
    #[arg(long, env = "JOBDOCK_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Directory of the embedded database and the generated master key; created if missing,
    /// and may hold other files. [file: data_dir] [default: ./jobdock-data]
    #[arg(long, env = "JOBDOCK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL (`postgres://user:pass@host/db`) to use instead of the embedded SQLite
    /// database; needed to run several replicas. [file: database_url]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Master keys sealing secrets: base64 of 32 bytes each, newest first, comma-separated
    /// (the newest seals, all open). Default: `<data-dir>/master.key`, created on first start
    /// with the embedded database. [file: master_key]
    #[arg(
        long,
        env = "JOBDOCK_MASTER_KEY",
        value_name = "KEYS",
        hide_env_values = true
    )]
    pub master_key: Option<String>,

    /// File holding the master keys, one per line, newest first. [file: master_key_file]
    #[arg(long, env = "JOBDOCK_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Flags of `jobdock serve`.
#[derive(Debug, Clone, Args, Serialize)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,

    /// Address to listen on, host:port. [file: listen] [default: 127.0.0.1:8080]
    #[arg(long, env = "JOBDOCK_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// TLS certificate chain (PEM); with --tls-key the service speaks HTTPS itself.
    /// [file: tls_cert]
    #[arg(
        long,
        env = "JOBDOCK_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM). [file: tls_key]
    #[arg(
        long,
        env = "JOBDOCK_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Log format. [file: log_format] [default: text]
    #[arg(long, env = "JOBDOCK_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Which log lines to show, as a tracing filter. [file: log] [default: info]
    #[arg(long, env = "JOBDOCK_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Backend of jobs that name none: docker, swarm, kubernetes or nomad.
    /// [file: default_backend] [default: docker]
    #[arg(long, env = "JOBDOCK_DEFAULT_BACKEND", value_name = "NAME")]
    pub default_backend: Option<String>,

    /// Most log bytes kept per run; past it lines are dropped and the log says how much.
    /// [file: log_cap_mb] [default: 64]
    #[arg(long, env = "JOBDOCK_LOG_CAP_MB", value_name = "MIB")]
    pub log_cap_mb: Option<i64>,

    /// Memory limit of containers whose job sets none, in MiB (0 = no limit).
    /// [file: default_memory_mb] [default: 2048]
    #[arg(long, env = "JOBDOCK_DEFAULT_MEMORY_MB", value_name = "MIB")]
    pub default_memory_mb: Option<u64>,

    /// User the containers run as (`uid[:gid]` or a name). Default: the image's.
    /// [file: container_user]
    #[arg(long, env = "JOBDOCK_CONTAINER_USER", value_name = "USER")]
    pub container_user: Option<String>,

    /// Keep the containers of failed runs for inspection instead of removing them.
    /// [file: keep_failed_containers]
    #[arg(long, env = "JOBDOCK_KEEP_FAILED_CONTAINERS")]
    pub keep_failed_containers: bool,

    /// How long a run waits for an unreachable backend to come back before it is marked
    /// `lost`, in seconds. [file: backend_reattach_seconds] [default: 300]
    #[arg(long, env = "JOBDOCK_BACKEND_REATTACH_SECONDS", value_name = "SECONDS")]
    pub backend_reattach_seconds: Option<u64>,

    /// How long a replica's claim on a run lasts without a heartbeat; another replica takes
    /// the run over after it. [file: lease_seconds] [default: 30]
    #[arg(long, env = "JOBDOCK_LEASE_SECONDS", value_name = "SECONDS")]
    pub lease_seconds: Option<u64>,

    /// Most runs holding a slot at once per backend, as `backend=N` pairs separated by
    /// commas; runs beyond it wait in the queue. [file: max_running] [default: docker=50]
    #[arg(long, env = "JOBDOCK_MAX_RUNNING", value_name = "BACKEND=N,...")]
    pub max_running: Option<String>,

    /// A schedule tick missed while the engine was down fires once at start-up if it is
    /// younger than this many seconds. [file: schedule_catchup_seconds] [default: 3600]
    #[arg(long, env = "JOBDOCK_SCHEDULE_CATCHUP_SECONDS", value_name = "SECONDS")]
    pub schedule_catchup_seconds: Option<u64>,

    /// A running run without output for this many seconds is `stalled`, unless its job
    /// says otherwise; 0 turns the check off. [file: stall_after_seconds] [default: 1800]
    #[arg(long, env = "JOBDOCK_STALL_AFTER_SECONDS", value_name = "SECONDS")]
    pub stall_after_seconds: Option<u64>,

    /// Nomad's HTTP address, e.g. `http://127.0.0.1:4646`; configures the `nomad` backend.
    /// [file: nomad_addr]
    #[arg(long, env = "NOMAD_ADDR", value_name = "URL")]
    pub nomad_addr: Option<String>,

    /// Nomad ACL token, sent as `X-Nomad-Token`.
    #[arg(
        long,
        env = "NOMAD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    #[serde(skip)]
    pub nomad_token: Option<String>,

    /// Nomad namespace of the runs' jobs. [file: nomad_namespace]
    #[arg(long, env = "NOMAD_NAMESPACE", value_name = "NAME")]
    pub nomad_namespace: Option<String>,

    /// Nomad region. [file: nomad_region]
    #[arg(long, env = "NOMAD_REGION", value_name = "NAME")]
    pub nomad_region: Option<String>,

    /// Nomad datacenters the runs may be placed in, comma-separated.
    /// [file: nomad_datacenters] [default: dc1]
    #[arg(long, env = "JOBDOCK_NOMAD_DATACENTERS", value_name = "DC,...")]
    pub nomad_datacenters: Option<String>,

    /// Namespace of the runs' Kubernetes Jobs. The `kubernetes` backend is configured when a
    /// kubeconfig (`KUBECONFIG` or `~/.kube/config`) or an in-cluster service account is
    /// there. [file: kube_namespace] [default: default]
    #[arg(long, env = "JOBDOCK_KUBE_NAMESPACE", value_name = "NAME")]
    pub kube_namespace: Option<String>,

    /// Image pull secrets every run's pod may use, comma-separated. [file: kube_image_pull_secrets]
    #[arg(long, env = "JOBDOCK_KUBE_IMAGE_PULL_SECRETS", value_name = "NAME,...")]
    pub kube_image_pull_secrets: Option<String>,

    /// How long a pod may be stuck pulling its image or unschedulable before its run ends.
    /// [file: kube_pending_timeout_seconds] [default: 300]
    #[arg(
        long,
        env = "JOBDOCK_KUBE_PENDING_TIMEOUT_SECONDS",
        value_name = "SECONDS"
    )]
    pub kube_pending_timeout_seconds: Option<u64>,

    /// Attempts at delivering an alert, the first included, before it is given up.
    /// [file: alert_max_attempts] [default: 8]
    #[arg(long, env = "JOBDOCK_ALERT_MAX_ATTEMPTS", value_name = "N")]
    pub alert_max_attempts: Option<u32>,

    /// How long an alert's receiver may take to answer, in seconds.
    /// [file: alert_timeout_seconds] [default: 10]
    #[arg(long, env = "JOBDOCK_ALERT_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub alert_timeout_seconds: Option<u64>,

    /// Delay before an alert's first retry, in milliseconds; later retries wait 3, 12, 60,
    /// 180 and then 360 times as long. [file: alert_retry_base_ms] [default: 10000]
    #[arg(long, env = "JOBDOCK_ALERT_RETRY_BASE_MS", value_name = "MS")]
    pub alert_retry_base_ms: Option<u64>,

    /// The engine's address as its users reach it, e.g. `https://jobdock.example.com`;
    /// every URL the engine hands out (`Location`, a run's `logs_url`, links in alerts and
    /// callbacks) is built on it. Without it, API answers use the request's scheme and
    /// `Host`. [file: public_url]
    #[arg(long, env = "JOBDOCK_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// The engine sits behind a proxy that sets `X-Forwarded-Proto` and `X-Forwarded-Host`:
    /// build URLs from them when `public_url` is not set. Off, they are ignored, so that a
    /// caller cannot choose the links the engine hands out. [file: trust_forwarded_headers]
    #[arg(long, env = "JOBDOCK_TRUST_FORWARDED_HEADERS")]
    pub trust_forwarded_headers: bool,

    /// Hosts a run's callback (`callBackUri`) may reach besides public ones, comma-separated
    /// (`hooks.internal,10.0.0.7`); they may also use plain `http`. By default a callback must
    /// be `https` to a host whose addresses are all public. [file: callback_allowed_hosts]
    #[arg(long, env = "JOBDOCK_CALLBACK_ALLOWED_HOSTS", value_name = "HOSTS")]
    pub callback_allowed_hosts: Option<String>,

    /// The engine's address as runs reach it, passed to every run as `JOBDOCK_URL` (the
    /// SDK's state and progress calls go there), e.g. `http://jobdock.internal:8080`.
    /// Without it, runs on the local Docker engine (and a one-host swarm) get the host's
    /// address on Docker's bridge, where the engine then also listens, serving the routes a
    /// run uses only; runs on Kubernetes and Nomad get none. [file: advertise_url]
    #[arg(long, env = "JOBDOCK_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// The first admin token, used verbatim when no token exists yet (stored as a hash).
    /// Without it, `serve` creates one and prints it once.
    #[arg(
        long,
        env = "JOBDOCK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    #[serde(skip)]
    pub admin_token: Option<String>,

    #[command(flatten)]
    #[serde(flatten)]
    pub monitoring: MonitoringArgs,
}

const SERVE_AFTER_HELP: &str = "\
Every flag can also be given as its environment variable, or as the key shown in [file: …] in a
TOML settings file (`--config`, or `jobdock.toml` in the data directory). Flags and variables win
over the file.";

/// Flags of `jobdock serve` about metrics and retention.
#[derive(Debug, Clone, Args, Serialize)]
pub struct MonitoringArgs {
    /// Serve `GET /metrics` without a token (by default it needs any token that may read).
    /// [file: metrics_public]
    #[arg(long, env = "JOBDOCK_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Final runs and their logs are pruned this many days after they finished; at least 7.
    /// [file: retention_days] [default: 30]
    #[arg(long, env = "JOBDOCK_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<i64>,

    /// Of each job's runs the newest this many are kept; older final ones are pruned once
    /// they are 7 days old. [file: retention_max_runs_per_job] [default: 1000]
    #[arg(long, env = "JOBDOCK_RETENTION_MAX_RUNS_PER_JOB", value_name = "N")]
    pub retention_max_runs_per_job: Option<i64>,
}
