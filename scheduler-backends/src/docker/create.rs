//! Translating a [`LaunchSpec`] into Docker's container-create body.
//!
//! Pure functions, no I/O: validation of what Docker would misread, the container's name, and
//! the hardened host config every Jobdock container gets.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use secrecy::ExposeSecret;

use super::DockerConfig;
use crate::{BackendError, LaunchSpec, SecretDelivery};

/// Where secret files appear inside the container.
pub(crate) const SECRETS_TARGET: &str = "/run/secrets";

/// The container's name: derived from the run and attempt only, so that a retried launch
/// finds the container of an earlier try instead of creating a second one.
pub(crate) fn container_name(run_id: &str, attempt: u32) -> String {
    format!("jobdock-{run_id}-{attempt}")
}

/// Whether `s` may be used in a container name and as a directory name: Docker accepts
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, which also rules out `/` and `..` in paths.
pub(crate) fn is_safe_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Rejects what Docker would accept but misread (an `=` in a variable name splits it) and
/// what could escape the secrets directory. Messages name variables, never their values.
pub(crate) fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    if !is_safe_name(&spec.run_id) {
        return Err(BackendError::Invalid(format!(
            "run id `{}` must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            spec.run_id
        )));
    }
    if spec.image.trim().is_empty() {
        return Err(BackendError::Invalid("the image is empty".into()));
    }
    let env_names = spec.env.iter().map(|(k, _)| k.as_str());
    let secret_names = spec.secrets.iter().map(|s| s.name.as_str());
    for name in env_names.chain(secret_names.clone()) {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(BackendError::Invalid(format!(
                "environment variable name `{name}` is empty or contains `=`"
            )));
        }
    }
    if spec.secret_delivery == SecretDelivery::Files {
        if let Some(bad) = secret_names.clone().find(|n| !is_safe_name(n)) {
            return Err(BackendError::Invalid(format!(
                "secret name `{bad}` cannot be a file name: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
    }
    Ok(())
}

/// The memory limit in bytes as Docker wants it (`i64`), the spec's or the configured default.
fn memory_limit(spec: &LaunchSpec, config: &DockerConfig) -> Result<Option<i64>, BackendError> {
    checked_memory(spec.resources.memory_bytes.or(config.default_memory_bytes))
}

/// A memory limit in bytes as Docker (and Swarm) want it: an `i64` of at least 6 MiB.
pub(crate) fn checked_memory(bytes: Option<u64>) -> Result<Option<i64>, BackendError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    // Docker refuses less than 6 MiB with a cryptic message; say it plainly.
    if bytes < 6 * 1024 * 1024 {
        return Err(BackendError::Invalid(format!(
            "memory limit {bytes} bytes is below Docker's minimum of 6 MiB"
        )));
    }
    i64::try_from(bytes)
        .map(Some)
        .map_err(|_| BackendError::Invalid(format!("memory limit {bytes} bytes is too large")))
}

/// The CPU limit in billionths of a CPU.
pub(crate) fn nano_cpus(spec: &LaunchSpec) -> Result<Option<i64>, BackendError> {
    match spec.resources.cpus {
        None => Ok(None),
        Some(c) if c.is_finite() && c > 0.0 && c < 1e6 => Ok(Some((c * 1e9).round() as i64)),
        Some(c) => Err(BackendError::Invalid(format!(
            "CPU limit {c} is not a positive number"
        ))),
    }
}

/// `NAME=value` pairs: the plain environment, then the secrets when they travel as variables.
fn environment(spec: &LaunchSpec) -> Vec<String> {
    let plain = spec.env.iter().map(|(k, v)| format!("{k}={v}"));
    let secrets = spec
        .secrets
        .iter()
        .filter(|_| spec.secret_delivery == SecretDelivery::Env)
        .map(|s| format!("{}={}", s.name, s.value.expose_secret()));
    plain.chain(secrets).collect()
}

/// The host config: no privilege escalation, limits, network, and the secrets mount.
fn host_config(
    spec: &LaunchSpec,
    config: &DockerConfig,
    secrets_dir: Option<&Path>,
) -> Result<HostConfig, BackendError> {
    let memory = memory_limit(spec, config)?;
    let mounts = secrets_dir.map(|dir| {
        vec![Mount {
            target: Some(SECRETS_TARGET.into()),
            source: Some(dir.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    Ok(HostConfig {
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory,
        // Swap equal to memory means no swap at all: an OOM kills instead of thrashing.
        memory_swap: memory,
        nano_cpus: nano_cpus(spec)?,
        network_mode: Some(
            spec.network
                .clone()
                .unwrap_or_else(|| config.default_network.clone()),
        ),
        mounts,
        log_config: spec.log_driver.as_ref().map(|d| HostConfigLogConfig {
            typ: Some(d.name.clone()),
            config: Some(d.options.clone().into_iter().collect()),
        }),
        ..Default::default()
    })
}

/// The create body for one attempt. It holds secret values when they travel as variables:
/// never log it.
pub(crate) fn container_body(
    spec: &LaunchSpec,
    config: &DockerConfig,
    secrets_dir: Option<&Path>,
) -> Result<ContainerCreateBody, BackendError> {
    let labels: HashMap<String, String> = spec.identity_labels().into_iter().collect();
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: Some(environment(spec)),
        user: spec.user.clone().or_else(|| config.default_user.clone()),
        labels: Some(labels),
        host_config: Some(host_config(spec, config, secrets_dir)?),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        crate::sample_launch_spec()
    }

    #[test]
    fn passes_the_log_driver_and_its_options() {
        let mut s = spec();
        let body = container_body(&s, &DockerConfig::default(), None).unwrap();
        assert_eq!(
            body.host_config.unwrap().log_config,
            None,
            "the daemon's default"
        );
        s.log_driver = Some(crate::LogDriver {
            name: "json-file".into(),
            options: [("max-size".to_string(), "1m".to_string())].into(),
        });
        let body = container_body(&s, &DockerConfig::default(), None).unwrap();
        let log = body.host_config.unwrap().log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(
            log.config.unwrap().get("max-size").map(String::as_str),
            Some("1m")
        );
    }

    #[test]
    fn names_the_container_after_run_and_attempt() {
        assert_eq!(container_name("abc", 3), "jobdock-abc-3");
    }

    #[test]
    fn secrets_go_to_env_only_in_env_mode() {
        let mut s = spec();
        let body = container_body(&s, &DockerConfig::default(), None).unwrap();
        assert_eq!(body.env.unwrap(), vec!["A=1", "TOKEN=s3cr3t"]);
        s.secret_delivery = SecretDelivery::Files;
        let body = container_body(&s, &DockerConfig::default(), None).unwrap();
        assert_eq!(body.env.unwrap(), vec!["A=1"]);
    }

    #[test]
    fn applies_limits_defaults_and_hardening() {
        let mut s = spec();
        s.resources.cpus = Some(0.5);
        let config = DockerConfig {
            default_memory_bytes: Some(64 << 20),
            default_user: Some("1000:1000".into()),
            ..DockerConfig::default()
        };
        let body = container_body(&s, &config, Some(Path::new("/dev/shm/x"))).unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.security_opt.unwrap(), vec!["no-new-privileges"]);
        let mount = &host.mounts.unwrap()[0];
        assert_eq!(mount.source.as_deref(), Some("/dev/shm/x"));
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.labels.unwrap()["dev.jobdock.attempt"], "2");
    }

    #[test]
    fn rejects_what_docker_would_misread() {
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(matches!(validate(&s), Err(BackendError::Invalid(_))));

        let mut s = spec();
        s.secret_delivery = SecretDelivery::Files;
        s.secrets[0].name = "../etc/passwd".into();
        let err = validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("../etc/passwd") && !err.contains("s3cr3t"),
            "{err}"
        );

        let mut s = spec();
        s.run_id = "../x".into();
        assert!(validate(&s).is_err());

        let mut s = spec();
        s.resources.cpus = Some(f64::NAN);
        assert!(container_body(&s, &DockerConfig::default(), None).is_err());
    }
}
