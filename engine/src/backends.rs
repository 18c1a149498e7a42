//! The backends this engine has: configured, or detected at start. A job may name only these.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobdock_backends::docker::DockerBackend;
use jobdock_backends::docker::DockerConfig;
use jobdock_backends::kubernetes::KubernetesBackend;
use jobdock_backends::kubernetes::KubernetesConfig;
use jobdock_backends::nomad::{NomadBackend, NomadConfig};
use jobdock_backends::swarm::{SwarmBackend, SwarmConfig};
use jobdock_backends::{Backend, BackendHealth};
use jobdock_types::BackendName;
use secrecy::SecretString;

/// What the backends are made with; `config` builds it from the engine's settings.
#[derive(Debug, Clone, Default)]
pub struct BackendSettings {
    /// How the Docker and Swarm backends make containers; its memory default is every
    /// backend's.
    pub docker: DockerConfig,
    /// How runs are made on Kubernetes, when a cluster is configured.
    pub kube: KubernetesConfig,
    /// The Nomad cluster, when one is configured.
    pub nomad: Option<NomadSettings>,
}

/// Where the `nomad` backend finds its cluster.
#[derive(Debug, Clone)]
pub struct NomadSettings {
    /// HTTP address.
    pub address: String,
    /// ACL token.
    pub token: Option<SecretString>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Datacenters.
    pub datacenters: Vec<String>,
}

/// The engine's backends by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Backends {
    map: BTreeMap<BackendName, Arc<dyn Backend>>,
    /// The host's address on the local Docker engine's bridge network, where its
    /// containers reach the host.
    docker_gateway: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

/// A kubeconfig or an in-cluster service account is there, as kube's client looks for them.
fn kube_configured() -> bool {
    std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists())
}

impl Backends {
    /// A set holding the given backends (tests may bring their own).
    pub fn from_list(list: Vec<(BackendName, Arc<dyn Backend>)>) -> Self {
        Self {
            map: list.into_iter().collect(),
            docker_gateway: None,
        }
    }

    /// The backends the settings configure, or that are detected at start: `docker` when
    /// the local daemon (`DOCKER_HOST` or the default socket) answers, `swarm` too when that
    /// daemon is a swarm manager, `kubernetes` when a kubeconfig or a service account is
    /// there, and `nomad` when an
    /// address is configured (whether or not it answers right now: runs then wait, and
    /// `/readyz` says why, instead of jobs being refused).
    pub async fn detect(settings: &BackendSettings) -> Self {
        let mut map: BTreeMap<BackendName, Arc<dyn Backend>> = BTreeMap::new();
        let mut docker_gateway = None;
        let docker_there = std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new("/var/run/docker.sock").exists();
        if docker_there {
            match DockerBackend::connect(settings.docker.clone()).await {
                Ok(b) => {
                    docker_gateway = b.bridge_gateway().await;
                    map.insert(BackendName::Docker, Arc::new(b));
                }
                Err(e) => tracing::warn!(error = %e, "the Docker backend is not available"),
            }
            let swarm = SwarmConfig {
                default_memory_bytes: settings.docker.default_memory_bytes,
                default_user: settings.docker.default_user.clone(),
                keep_failed: settings.docker.keep_failed,
            };
            match SwarmBackend::detect(swarm).await {
                Ok(Some(b)) => {
                    map.insert(BackendName::Swarm, Arc::new(b));
                }
                Ok(None) => tracing::debug!("the Docker daemon is not a swarm manager"),
                Err(e) => tracing::warn!(error = %e, "the Swarm backend is not available"),
            }
        }
        if kube_configured() {
            let mut config = settings.kube.clone();
            config.default_memory_bytes = settings.docker.default_memory_bytes;
            match KubernetesBackend::connect(config).await {
                Ok(b) => {
                    map.insert(BackendName::Kubernetes, Arc::new(b));
                }
                Err(e) => tracing::warn!(error = %e, "the Kubernetes backend is not available"),
            }
        }
        if let Some(n) = &settings.nomad {
            let config = NomadConfig {
                address: n.address.clone(),
                token: n.token.clone(),
                namespace: n.namespace.clone(),
                region: n.region.clone(),
                datacenters: n.datacenters.clone(),
                default_memory_mb: settings
                    .docker
                    .default_memory_bytes
                    .map(|b| b / (1024 * 1024)),
            };
            match NomadBackend::new(config) {
                Ok(b) => {
                    map.insert(BackendName::Nomad, Arc::new(b));
                }
                Err(e) => tracing::warn!(error = %e, "the Nomad backend is not available"),
            }
        }
        Self {
            map,
            docker_gateway,
        }
    }

    /// The host's address on the local Docker engine's bridge network, if there is one.
    pub fn docker_gateway(&self) -> Option<std::net::IpAddr> {
        self.docker_gateway
    }

    /// The backend of this name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.map
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, b)| b)
    }

    /// The names, for validation.
    pub fn names(&self) -> Vec<BackendName> {
        self.map.keys().copied().collect()
    }

    /// The names as the store keeps them.
    pub fn name_strings(&self) -> Vec<String> {
        self.map.keys().map(|k| k.as_str().to_string()).collect()
    }

    /// Every backend.
    pub fn iter(&self) -> impl Iterator<Item = (&BackendName, &Arc<dyn Backend>)> {
        self.map.iter()
    }

    /// Each backend's health, asked at once with a bound on the wait.
    pub async fn health(&self) -> BTreeMap<String, BackendHealth> {
        let checks = self.map.iter().map(|(name, b)| async move {
            let h = tokio::time::timeout(Duration::from_secs(3), b.health())
                .await
                .unwrap_or_else(|_| BackendHealth {
                    ok: false,
                    detail: "did not answer within 3 s".into(),
                });
            (name.as_str().to_string(), h)
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }
}
