//! The engine's settings: parsed once at start from flags, `JOBDOCK_*` variables and an
//! optional `jobdock.toml`, validated, and passed down as one typed struct.
//!
//! Precedence: a flag or variable wins over the file, the file over the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use secrecy::SecretString;
use serde::Deserialize;

mod alerts;
mod backends;
mod monitoring;

use backends::{backend_settings, runner_config};
pub use monitoring::MonitoringArgs;

use crate::service::keys::MasterKeySource;
use crate::telemetry::LogFormat;

/// Where the engine keeps its state; shared by `serve` and the offline `keys` commands.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Settings file (TOML). Default: `jobdock.toml` in the data directory, when present.
    #[arg(long, env = "JOBDOCK_CONFIG", value_name = "FILE")]
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
#[derive(Debug, Clone, Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
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
    /// alerts link to runs under it. [file: public_url]
    #[arg(long, env = "JOBDOCK_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// The first admin token, used verbatim when no token exists yet (stored as a hash).
    /// Without it, `serve` creates one and prints it once.
    #[arg(
        long,
        env = "JOBDOCK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,

    #[command(flatten)]
    pub monitoring: MonitoringArgs,
}

const SERVE_AFTER_HELP: &str = "\
Every flag can also be given as its environment variable, or as the key shown in [file: …] in a
TOML settings file (`--config`, or `jobdock.toml` in the data directory). Flags and variables win
over the file.";

/// The `jobdock.toml` file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    master_key: Option<String>,
    master_key_file: Option<PathBuf>,
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    default_backend: Option<String>,
    log_cap_mb: Option<i64>,
    default_memory_mb: Option<u64>,
    container_user: Option<String>,
    keep_failed_containers: Option<bool>,
    backend_reattach_seconds: Option<u64>,
    lease_seconds: Option<u64>,
    max_running: Option<String>,
    schedule_catchup_seconds: Option<u64>,
    stall_after_seconds: Option<u64>,
    nomad_addr: Option<String>,
    nomad_namespace: Option<String>,
    nomad_region: Option<String>,
    nomad_datacenters: Option<String>,
    kube_namespace: Option<String>,
    kube_image_pull_secrets: Option<String>,
    kube_pending_timeout_seconds: Option<u64>,
    metrics_public: Option<bool>,
    retention_days: Option<i64>,
    retention_max_runs_per_job: Option<i64>,
    alert_max_attempts: Option<u32>,
    alert_timeout_seconds: Option<u64>,
    alert_retry_base_ms: Option<u64>,
    public_url: Option<String>,
}

/// A setting that is wrong, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The database to use.
#[derive(Debug, Clone)]
pub enum Database {
    /// Embedded SQLite at this path.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(SecretString),
}

/// Resolved store settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The database.
    pub database: Database,
    /// The master keys.
    pub master_key: MasterKeySource,
}

/// Resolved settings of `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store settings.
    pub store: StoreSettings,
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate and key, when the service terminates TLS itself.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Default backend of jobs.
    pub default_backend: jobdock_types::BackendName,
    /// Bootstrap admin token.
    pub admin_token: Option<SecretString>,
    /// How runs are run.
    pub runner: crate::runner::RunnerConfig,
    /// What the backends are made with.
    pub backends: crate::backends::BackendSettings,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
}

fn read_file(args: &StoreArgs) -> Result<FileSettings, ConfigError> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (
            args.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./jobdock-data"))
                .join("jobdock.toml"),
            false,
        ),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileSettings::default())
        }
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    };
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// An empty variable (`JOBDOCK_MASTER_KEY=`) means "not set", as it does for most tools.
fn non_empty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.trim().is_empty())
}

fn resolve_store(args: &StoreArgs, file: &FileSettings) -> Result<StoreSettings, ConfigError> {
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./jobdock-data"));
    let database = match non_empty(&args.database_url).or_else(|| file.database_url.clone()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Database::Postgres(SecretString::from(url))
        }
        Some(url) if url.starts_with("sqlite:") => Database::Sqlite(PathBuf::from(
            url.trim_start_matches("sqlite:").trim_start_matches("//"),
        )),
        Some(_) => {
            return Err(ConfigError(
                "database_url / DATABASE_URL must start with postgres:// (or sqlite:)".into(),
            ))
        }
        None => Database::Sqlite(data_dir.join("jobdock.db")),
    };
    let master_key =
        if let Some(k) = non_empty(&args.master_key).or_else(|| file.master_key.clone()) {
            MasterKeySource::Inline(SecretString::from(k))
        } else if let Some(p) = args
            .master_key_file
            .clone()
            .or_else(|| file.master_key_file.clone())
        {
            MasterKeySource::File(p)
        } else {
            MasterKeySource::DataDirFile(data_dir.join("master.key"))
        };
    Ok(StoreSettings {
        data_dir,
        database,
        master_key,
    })
}

impl StoreSettings {
    /// Resolves the store settings alone (for the offline `keys` commands).
    pub fn from_args(args: &StoreArgs) -> Result<Self, ConfigError> {
        resolve_store(args, &read_file(args)?)
    }
}

impl Settings {
    /// Resolves and validates every setting of `serve`.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = read_file(&args.store)?;
        let store = resolve_store(&args.store, &file)?;
        let listen = args
            .listen
            .clone()
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = parse_listen(&listen)?;
        let tls = match (
            args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            args.tls_key.clone().or_else(|| file.tls_key.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "tls_cert and tls_key must be given together".into(),
                ))
            }
        };
        let backend = args
            .default_backend
            .clone()
            .or_else(|| file.default_backend.clone())
            .unwrap_or_else(|| "docker".into());
        let default_backend = serde_json::from_value(serde_json::Value::String(backend.clone()))
            .map_err(|_| {
                ConfigError(format!(
                    "default_backend `{backend}` is not one of docker, swarm, kubernetes, nomad"
                ))
            })?;
        let mut runner = runner_config(args, &file)?;
        runner.retention = monitoring::retention_config(&args.monitoring, &file)?;
        Ok(Self {
            store,
            listen,
            tls,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log: args
                .log
                .clone()
                .or_else(|| file.log.clone())
                .unwrap_or_else(|| "info".into()),
            default_backend,
            admin_token: non_empty(&args.admin_token).map(SecretString::from),
            runner,
            backends: backend_settings(args, &file)?,
            metrics_public: monitoring::metrics_public(&args.monitoring, &file),
        })
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError(format!("listen address `{s}` is not host:port")))
}

/// Creates the data directory if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), ConfigError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        ConfigError(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jobdock.toml"),
            "listen = \"127.0.0.1:9999\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let s = Settings::from_args(&parse(&["--data-dir", d])).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.log_format, LogFormat::Json);
        let s =
            Settings::from_args(&parse(&["--data-dir", d, "--listen", "127.0.0.1:7000"])).unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert!(matches!(s.store.database, Database::Sqlite(ref p) if p.ends_with("jobdock.db")));
    }

    #[test]
    fn alert_settings_come_from_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jobdock.toml"),
            "alert_max_attempts = 3\npublic_url = \"https://jd.example.com/\"\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let s =
            Settings::from_args(&parse(&["--data-dir", d, "--alert-retry-base-ms", "50"])).unwrap();
        let a = &s.runner.alerts;
        assert_eq!(a.max_attempts, 3);
        assert_eq!(a.retry_base, std::time::Duration::from_millis(50));
        assert_eq!(a.timeout, std::time::Duration::from_secs(10));
        assert_eq!(a.public_url.as_deref(), Some("https://jd.example.com"));
        for bad in [
            ["--alert-max-attempts", "0"],
            ["--public-url", "jd.example.com"],
        ] {
            let err = Settings::from_args(&parse(&["--data-dir", d, bad[0], bad[1]])).unwrap_err();
            let key = bad[0].trim_start_matches("--").replace('-', "_");
            assert!(err.0.contains(&key), "{err}");
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.toml");
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        let err = Settings::from_args(&parse(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(err.0.contains("lisen"), "{err}");
        let err = Settings::from_args(&parse(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "nowhere",
        ]))
        .unwrap_err();
        assert!(err.0.contains("nowhere"), "{err}");
    }

    #[test]
    fn retention_and_metrics_settings_are_layered_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jobdock.toml"),
            "retention_days = 14\nretention_max_runs_per_job = 50\nmetrics_public = true\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let s = Settings::from_args(&parse(&["--data-dir", d])).unwrap();
        assert_eq!(s.runner.retention.policy.days, 14);
        assert_eq!(s.runner.retention.policy.max_runs_per_job, 50);
        assert!(s.metrics_public);
        let s = Settings::from_args(&parse(&["--data-dir", d, "--retention-days", "90"])).unwrap();
        assert_eq!(s.runner.retention.policy.days, 90);

        let empty = tempfile::tempdir().unwrap();
        let e = empty.path().to_str().unwrap();
        let s = Settings::from_args(&parse(&["--data-dir", e])).unwrap();
        assert_eq!(s.runner.retention.policy.days, 30);
        assert_eq!(s.runner.retention.policy.max_runs_per_job, 1000);
        assert!(!s.metrics_public);
        let err =
            Settings::from_args(&parse(&["--data-dir", e, "--retention-days", "6"])).unwrap_err();
        assert!(err.0.contains("at least 7"), "{err}");
        let err = Settings::from_args(&parse(&["--data-dir", e, "--retention-max-runs-per-job=0"]))
            .unwrap_err();
        assert!(err.0.contains("retention_max_runs_per_job"), "{err}");
    }
}
