//! The engine's settings: parsed once at start from flags, `JOBDOCK_*` variables and an
//! optional `jobdock.toml`, validated, and handed down to each component as the settings
//! type it owns. No component imports this module.
//!
//! Precedence: a flag wins over its variable, a variable over the file, the file over the
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use secrecy::SecretString;

mod alerts;
mod args;
mod backends;
mod layers;
mod retention;
#[cfg(test)]
mod tests;

pub use args::{MonitoringArgs, ServeArgs, StoreArgs};
use backends::{backend_settings, runner_config};
use layers::Layers;

use crate::service::keys::MasterKeySource;
use crate::telemetry::LogFormat;

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
    /// How the API builds the URLs it hands out.
    pub links: crate::api::links::LinkSettings,
    /// Where a run's callback may go.
    pub callbacks: crate::egress::CallbackPolicy,
}

/// An empty variable (`JOBDOCK_MASTER_KEY=`) means "not set", as it does for most tools.
fn non_empty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.trim().is_empty())
}

fn resolve_store(l: &Layers) -> Result<StoreSettings, ConfigError> {
    let v = &l.values;
    let data_dir = v.data_dir.clone();
    let database = match &v.database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Database::Postgres(SecretString::from(url.clone()))
        }
        Some(url) if url.starts_with("sqlite:") => Database::Sqlite(PathBuf::from(
            url.trim_start_matches("sqlite:").trim_start_matches("//"),
        )),
        Some(_) => {
            return Err(l.invalid(
                "database_url",
                "database_url / DATABASE_URL must start with postgres:// (or sqlite:)",
            ))
        }
        None => Database::Sqlite(data_dir.join("jobdock.db")),
    };
    let master_key = if let Some(k) = &v.master_key {
        MasterKeySource::Inline(SecretString::from(k.clone()))
    } else if let Some(p) = &v.master_key_file {
        MasterKeySource::File(p.clone())
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
    /// Resolves the store settings alone (for the offline `keys` commands); `matches` are
    /// those `args` were parsed from, which tell a flag from a variable.
    pub fn from_args(args: &StoreArgs, matches: &ArgMatches) -> Result<Self, ConfigError> {
        resolve_store(&Layers::load(args, args, matches)?)
    }
}

impl Settings {
    /// Resolves and validates every setting of `serve`; `matches` are those `args` were
    /// parsed from, which tell a flag from a variable.
    pub fn from_args(args: &ServeArgs, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let l = Layers::load(args, &args.store, matches)?;
        let v = &l.values;
        let store = resolve_store(&l)?;
        let listen = parse_listen(&v.listen).map_err(|e| l.invalid("listen", e))?;
        let tls = match (&v.tls_cert, &v.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(l.invalid("tls_cert", "tls_cert and tls_key must be given together"))
            }
            (None, Some(_)) => {
                return Err(l.invalid("tls_key", "tls_cert and tls_key must be given together"))
            }
        };
        let backend = &v.default_backend;
        let default_backend = serde_json::from_value(serde_json::Value::String(backend.clone()))
            .map_err(|_| {
                l.invalid(
                    "default_backend",
                    format!(
                        "default_backend `{backend}` is not one of docker, swarm, kubernetes, \
                         nomad"
                    ),
                )
            })?;
        let mut runner = runner_config(&l)?;
        runner.retention = retention::retention_config(&l)?;
        if let Some(url) = &v.advertise_url {
            let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(l.invalid(
                    "advertise_url",
                    format!("advertise_url `{url}` must be an http:// or https:// URL, e.g. http://jobdock.internal:8080"),
                ));
            }
            runner.run_url = Some(crate::runner::RunUrl {
                url: url.trim_end_matches('/').to_string(),
                all_backends: true,
            });
        }
        let links = crate::api::links::LinkSettings {
            public_url: runner.alerts.public_url.clone(),
            trust_forwarded_headers: v.trust_forwarded_headers,
            tls: tls.is_some(),
        };
        Ok(Self {
            store,
            listen,
            tls,
            log_format: v.log_format,
            log: v.log.clone(),
            default_backend,
            admin_token: non_empty(&args.admin_token).map(SecretString::from),
            runner,
            backends: backend_settings(&l, non_empty(&args.nomad_token))?,
            metrics_public: v.metrics_public,
            links,
            callbacks: callback_policy(&l)?,
        })
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("listen address `{s}` is not host:port"))
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

/// The hosts a callback may reach besides public ones, lowercase; an IPv6 address is kept
/// in brackets, as a URL writes it.
fn callback_policy(l: &Layers) -> Result<crate::egress::CallbackPolicy, ConfigError> {
    let mut hosts = Vec::new();
    for h in l
        .values
        .callback_allowed_hosts
        .iter()
        .flat_map(|v| v.split(','))
    {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() {
            continue;
        }
        let as_url = reqwest::Url::parse(&format!("http://{h}/")).ok();
        match as_url.as_ref().and_then(|u| u.host_str()) {
            Some(parsed) if parsed == h && as_url.as_ref().and_then(|u| u.port()).is_none() => {
                hosts.push(h)
            }
            _ => {
                return Err(l.invalid(
                    "callback_allowed_hosts",
                    format!(
                        "callback_allowed_hosts: `{h}` is not a host name or address (no \
                         scheme, port or path; an IPv6 address in brackets)"
                    ),
                ))
            }
        }
    }
    Ok(crate::egress::CallbackPolicy {
        allowed_hosts: hosts.into(),
    })
}
