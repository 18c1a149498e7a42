//! The settings as layers, lowest first: defaults, the settings file, the environment, the
//! flags. clap reads the flags and their variables, so that `--help` names both and a value
//! of the wrong type is refused by its flag's name; figment stacks what clap found, by where
//! it found it, over the file and the defaults, and extracts one [`Layered`] struct.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use super::args::StoreArgs;
use super::ConfigError;
use crate::telemetry::LogFormat;

/// The data directory when none is set.
const DEFAULT_DATA_DIR: &str = "./jobdock-data";

/// Names of the layers that a value may come from, as errors say them.
const FILE: &str = "settings file";
const ENVIRONMENT: &str = "environment";
const FLAGS: &str = "command line";

/// Every setting that the file, the environment or a flag may give, after layering. The
/// fields are the file's keys; `None` keeps the component's own default.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Layered {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log: String,
    pub default_backend: String,
    pub log_cap_mb: Option<i64>,
    pub default_memory_mb: u64,
    pub container_user: Option<String>,
    pub keep_failed_containers: bool,
    pub backend_reattach_seconds: Option<u64>,
    pub lease_seconds: Option<u64>,
    pub max_running: Option<String>,
    pub schedule_catchup_seconds: Option<u64>,
    pub stall_after_seconds: Option<u64>,
    pub nomad_addr: Option<String>,
    pub nomad_namespace: Option<String>,
    pub nomad_region: Option<String>,
    pub nomad_datacenters: String,
    pub kube_namespace: Option<String>,
    pub kube_image_pull_secrets: Option<String>,
    pub kube_pending_timeout_seconds: Option<u64>,
    pub metrics_public: bool,
    pub retention_days: Option<i64>,
    pub retention_max_runs_per_job: Option<i64>,
    pub alert_max_attempts: Option<u32>,
    pub alert_timeout_seconds: Option<u64>,
    pub alert_retry_base_ms: Option<u64>,
    pub public_url: Option<String>,
    pub trust_forwarded_headers: bool,
    pub callback_allowed_hosts: Option<String>,
    pub advertise_url: Option<String>,
}

impl Default for Layered {
    /// The lowest layer: the defaults that belong to no component.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            master_key: None,
            master_key_file: None,
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::default(),
            log: "info".into(),
            default_backend: "docker".into(),
            log_cap_mb: None,
            default_memory_mb: 2048,
            container_user: None,
            keep_failed_containers: false,
            backend_reattach_seconds: None,
            lease_seconds: None,
            max_running: None,
            schedule_catchup_seconds: None,
            stall_after_seconds: None,
            nomad_addr: None,
            nomad_namespace: None,
            nomad_region: None,
            nomad_datacenters: "dc1".into(),
            kube_namespace: None,
            kube_image_pull_secrets: None,
            kube_pending_timeout_seconds: None,
            metrics_public: false,
            retention_days: None,
            retention_max_runs_per_job: None,
            alert_max_attempts: None,
            alert_timeout_seconds: None,
            alert_retry_base_ms: None,
            public_url: None,
            trust_forwarded_headers: false,
            callback_allowed_hosts: None,
            advertise_url: None,
        }
    }
}

/// The layered values, and where each came from (for errors).
pub(super) struct Layers {
    figment: Figment,
    /// The values.
    pub values: Layered,
}

impl Layers {
    /// Layers the defaults, the settings file, then what clap found in the environment and
    /// on the command line (`args`, parsed from `matches`).
    pub fn load<A: Args + Serialize>(
        args: &A,
        store: &StoreArgs,
        matches: &ArgMatches,
    ) -> Result<Self, ConfigError> {
        let found = Value::serialize(args)
            .ok()
            .and_then(Value::into_dict)
            .ok_or_else(|| ConfigError("a path given is not valid UTF-8".into()))?;
        let mut figment = Figment::from(Serialized::defaults(Layered::default()));
        if let Some(file) = settings_file(store)? {
            figment = figment.merge(file);
        }
        let figment = figment
            .merge(Given::new::<A>(&found, matches, ValueSource::EnvVariable))
            .merge(Given::new::<A>(&found, matches, ValueSource::CommandLine));
        let values = figment.extract().map_err(describe)?;
        Ok(Self { figment, values })
    }

    /// An error about the value of `key`, saying where that value was set.
    pub fn invalid(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        match self.origin(key) {
            Some(origin) => ConfigError(format!("{message} ({origin})")),
            None => ConfigError(message.to_string()),
        }
    }

    fn origin(&self, key: &str) -> Option<String> {
        let md = self.figment.find_metadata(key)?;
        match md.name.as_ref() {
            FILE => md.source.as_ref().map(|s| format!("set in {s}")),
            ENVIRONMENT | FLAGS => Some(format!(
                "set by {}",
                md.interpolate(&Profile::Default, &[key])
            )),
            _ => None,
        }
    }
}

/// The settings file: `--config`, which must be there, or else `jobdock.toml` in the data
/// directory when it is there.
fn settings_file(store: &StoreArgs) -> Result<Option<SettingsFile>, ConfigError> {
    if let Some(path) = &store.config {
        std::fs::File::open(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        return Ok(Some(SettingsFile(path.clone())));
    }
    let path = store
        .data_dir
        .clone()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join("jobdock.toml");
    Ok(path.exists().then_some(SettingsFile(path)))
}

/// `jobdock.toml`, whose keys are named as they are written in it.
struct SettingsFile(PathBuf);

impl Provider for SettingsFile {
    fn metadata(&self) -> Metadata {
        Metadata::from(FILE, self.0.as_path()).interpolater(|_, keys| keys.join("."))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::file_exact(&self.0).data()
    }
}

/// The values clap found in one place, the environment or the command line, each key named
/// as it was written there (`JOBDOCK_LOG_CAP_MB`, `--log-cap-mb`).
struct Given {
    layer: &'static str,
    values: Dict,
    spelled: BTreeMap<String, String>,
}

impl Given {
    /// Of `found` (every value of the parsed arguments), those clap took from `source`. An
    /// empty value means "not set", as it does for most tools.
    fn new<A: Args>(found: &Dict, matches: &ArgMatches, source: ValueSource) -> Self {
        let values = found
            .iter()
            .filter(|(key, value)| {
                matches.value_source(key) == Some(source)
                    && !matches!(value, Value::String(_, s) if s.trim().is_empty())
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let command = A::augment_args(clap::Command::new("jobdock"));
        let spelled = command
            .get_arguments()
            .filter_map(|arg| {
                let name = match source {
                    ValueSource::EnvVariable => arg.get_env()?.to_string_lossy().into_owned(),
                    _ => format!("--{}", arg.get_long()?),
                };
                Some((arg.get_id().to_string(), name))
            })
            .collect();
        let layer = match source {
            ValueSource::EnvVariable => ENVIRONMENT,
            _ => FLAGS,
        };
        Self {
            layer,
            values,
            spelled,
        }
    }
}

impl Provider for Given {
    fn metadata(&self) -> Metadata {
        let spelled = self.spelled.clone();
        Metadata::named(self.layer).interpolater(move |_, keys| {
            let key = keys.join(".");
            spelled.get(&key).cloned().unwrap_or(key)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// figment's errors in words; an unknown key suggests the known one it is nearest to.
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| match &e.kind {
            Kind::UnknownField(found, expected) => {
                let place = e
                    .metadata
                    .as_ref()
                    .and_then(|md| md.source.as_ref())
                    .map(|s| format!(" in {s}"))
                    .unwrap_or_default();
                let near = match crate::json::nearest(found, expected.iter().copied()) {
                    Some(k) => format!("; did you mean `{k}`?"),
                    None => "; `jobdock serve --help` shows each setting's [file: key]".into(),
                };
                format!("unknown setting `{found}`{place}{near}")
            }
            _ => e.to_string(),
        })
        .collect();
    ConfigError(lines.join("\n"))
}
