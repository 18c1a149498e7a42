//! The Docker engine backend: one container per attempt of a run, on the local (or
//! `DOCKER_HOST`) daemon, driven through bollard.
//!
//! Each concern has its module: translating the spec (`create`), launching exactly once
//! (`launch`), the image and its pull policy (`image`), secret files (`secrets`), state and waiting (`status`), output (`logs`), and
//! finding and removing containers (`inventory`).

// `create`, `errors`, `logs` and `status` hold helpers the Swarm backend shares.
pub(crate) mod attach;
pub(crate) mod client;
pub(crate) mod create;
mod cursor;
pub(crate) mod errors;
pub(crate) mod image;
mod inventory;
mod launch;
pub(crate) mod logs;
mod resume;
mod secrets;
pub(crate) mod status;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use futures::StreamExt;

use crate::{
    Backend, BackendError, BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogFrom,
    LogStreamBox, RunHandle, TaskState,
};

pub use logs::MAX_LINE_BYTES;

/// How the Docker backend runs containers, beyond what each run's spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Memory limit in bytes for runs whose spec sets none.
    pub default_memory_bytes: Option<u64>,
    /// User (`uid[:gid]` or a name) for runs whose spec sets none; `None` = the image's.
    pub default_user: Option<String>,
    /// Network mode for runs whose spec sets none.
    pub default_network: String,
    /// Whether [`Backend::cleanup`] keeps a container that exited with a non-zero code, for
    /// someone to inspect; its secret files are removed all the same.
    pub keep_failed: bool,
    /// Host directory, on a tmpfs, under which each run's secret files are written for
    /// [`SecretDelivery::Files`](crate::SecretDelivery::Files). It must be on the daemon's
    /// host: file secrets work only with a local daemon.
    pub secrets_dir: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            default_memory_bytes: None,
            default_user: None,
            default_network: "bridge".into(),
            keep_failed: false,
            secrets_dir: PathBuf::from("/dev/shm/jobdock"),
        }
    }
}

/// Runs each attempt of a run as one Docker container named `jobdock-<run id>-<attempt>`.
///
/// Secrets travel as environment variables, or as files under `/run/secrets` bind-mounted
/// read-only from a host tmpfs ([`DockerConfig::secrets_dir`]). The file mode needs the
/// daemon to be local to the engine: the files are written on the engine's host. Docker has
/// no deadline of its own, so [`LaunchSpec::timeout`] is left to the engine.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    docker: Docker,
    config: DockerConfig,
    attachments: attach::Attachments,
}

impl DockerBackend {
    /// Connects to the daemon named by `DOCKER_HOST` (or the local socket) and agrees on an
    /// API version with it: bollard's default is newer than many daemons speak, and without
    /// the negotiation every call fails.
    pub async fn connect(config: DockerConfig) -> Result<Self, BackendError> {
        let docker = client::connect().map_err(errors::from_docker)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(errors::from_docker)?;
        Ok(Self {
            docker,
            config,
            attachments: attach::Attachments::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The host's address on the daemon's default bridge network (`docker0`'s gateway,
    /// usually 172.17.0.1): containers reach the host there, so the engine serves its runs
    /// there. `None` when the daemon has no such network (or no IPv4 gateway on it).
    pub async fn bridge_gateway(&self) -> Option<std::net::IpAddr> {
        let network = self.docker.inspect_network("bridge", None).await.ok()?;
        network
            .ipam?
            .config?
            .into_iter()
            .find_map(|c| gateway_of(&c))
    }
}

/// The IPv4 gateway of a network's IPAM entry: the one it names, else the first address
/// of its subnet, which Docker's default IPAM gives the bridge when none is named (daemons
/// 20.10 and older leave `Gateway` out of the default bridge's entry).
fn gateway_of(c: &bollard::models::IpamConfig) -> Option<std::net::IpAddr> {
    if let Some(g) = c.gateway.as_deref().and_then(|g| g.parse().ok()) {
        return Some(g).filter(std::net::IpAddr::is_ipv4);
    }
    let (base, _) = c.subnet.as_deref()?.split_once('/')?;
    let base: std::net::Ipv4Addr = base.parse().ok()?;
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
        u32::from(base).checked_add(1)?,
    )))
}

/// A container's output from `from`: the attachment made at launch while it lasts
/// (everything, in order, once, whatever the log driver keeps); otherwise the driver's files
/// from the stored position and a new attachment ([`resume`]), with a [`crate::LogGap`]
/// where the files no longer reach back. A position stored as a time alone (before cursors)
/// is followed by time.
pub(crate) fn container_logs(
    docker: &Docker,
    attachments: &attach::Attachments,
    handle: &RunHandle,
    from: &LogFrom,
) -> LogStreamBox {
    let ordinal = |c: &Option<String>| {
        c.as_deref()
            .and_then(|c| c.parse::<cursor::DockerCursor>().ok())
            .map_or(0, |c| c.ordinal)
    };
    let fresh = from.stdout.is_none() && from.stderr.is_none();
    match attachments.take(&handle.backend_ref) {
        attach::Found::Live(stream) if fresh => return stream,
        attach::Found::Done { stdout, stderr }
            if (ordinal(&from.stdout), ordinal(&from.stderr)) == (stdout, stderr) =>
        {
            return futures::stream::empty().boxed();
        }
        _ if fresh && from.since.is_some() => {
            return logs::follow(docker, handle, from.since);
        }
        _ => {}
    }
    resume::resume(docker, attachments, handle, from)
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn health(&self) -> BackendHealth {
        match self.docker.version().await {
            Ok(v) => BackendHealth {
                ok: true,
                detail: format!(
                    "docker {} (API {})",
                    v.version.as_deref().unwrap_or("unknown"),
                    self.docker.client_version()
                ),
            },
            Err(e) => BackendHealth {
                ok: false,
                detail: errors::from_docker(e).to_string(),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id, attempt = spec.attempt, job = %spec.job))]
    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
        launch::launch(&self.docker, &self.config, &self.attachments, spec).await
    }

    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError> {
        status::state(&self.docker, handle).await
    }

    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
        container_logs(&self.docker, &self.attachments, handle, from)
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError> {
        status::wait(&self.docker, handle).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError> {
        status::stop(&self.docker, handle, grace).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %handle.run_id, attempt = handle.attempt))]
    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError> {
        self.attachments.forget(&handle.backend_ref);
        inventory::cleanup(&self.docker, &self.config, handle).await
    }

    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError> {
        inventory::list_in_flight(&self.docker, installation_id).await
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::IpamConfig;

    use super::gateway_of;

    #[test]
    fn the_bridge_gateway_is_named_or_the_subnets_first_address() {
        let named = IpamConfig {
            subnet: Some("172.17.0.0/16".into()),
            gateway: Some("172.17.0.254".into()),
            ..Default::default()
        };
        assert_eq!(gateway_of(&named), Some("172.17.0.254".parse().unwrap()));
        let unnamed = IpamConfig {
            subnet: Some("172.17.0.0/16".into()),
            ..Default::default()
        };
        assert_eq!(gateway_of(&unnamed), Some("172.17.0.1".parse().unwrap()));
        let v6 = IpamConfig {
            subnet: Some("fd00::/64".into()),
            gateway: Some("fd00::1".into()),
            ..Default::default()
        };
        assert_eq!(gateway_of(&v6), None);
        assert_eq!(gateway_of(&IpamConfig::default()), None);
    }
}
