//! Translating a [`LaunchSpec`] into a Swarm service spec: a replicated job that runs once.
//!
//! Pure functions, no I/O: the names of the service and of its secrets, validation of what
//! Swarm would refuse or misread, and the service spec itself.

use std::collections::HashMap;

use bollard::models::{
    Limit, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use super::SwarmConfig;
use crate::docker::create::{checked_memory, is_safe_name, nano_cpus, validate as validate_docker};
use crate::{BackendError, LaunchSpec};

/// The stop grace a service is created with, for when the swarm stops the task itself (a
/// node drained or leaving); [`crate::Backend::stop`] uses its own grace. 10 s is Jobdock's
/// default.
pub(crate) const DEFAULT_STOP_GRACE_NANOS: i64 = 10_000_000_000;

/// Swarm's longest object name (secrets; services allow 63).
const MAX_SECRET_NAME: usize = 64;

/// The service's name: derived from the run and attempt only, so that a retried launch finds
/// the service of an earlier try instead of creating a second one.
pub(crate) fn service_name(run_id: &str, attempt: u32) -> String {
    crate::docker::create::container_name(run_id, attempt)
}

/// The swarm secret holding `key` for one attempt: `jobdock-<run id>-<attempt>-<key>`.
/// Swarm names are at most 64 characters and end with a letter or digit; a key that does not
/// fit is replaced by a stable hash of it (the key still names the file).
pub(crate) fn secret_name(run_id: &str, attempt: u32, key: &str) -> String {
    let plain = format!("{}-{key}", service_name(run_id, attempt));
    let fits =
        plain.len() <= MAX_SECRET_NAME && plain.ends_with(|c: char| c.is_ascii_alphanumeric());
    if fits {
        plain
    } else {
        format!("{}-{:016x}", service_name(run_id, attempt), fnv1a(key))
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions and processes.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rejects what Swarm would refuse or misread. Every secret becomes a file named after its
/// key, whatever the delivery, so every key must be a safe file name.
pub(crate) fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    validate_docker(spec)?;
    if let Some(bad) = spec.secrets.iter().find(|s| !is_safe_name(&s.name)) {
        return Err(BackendError::Invalid(format!(
            "secret name `{}` cannot be a file name: use [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            bad.name
        )));
    }
    Ok(())
}

/// One created swarm secret, to be mounted as `/run/secrets/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretMount {
    /// The secret's swarm id.
    pub(crate) id: String,
    /// The secret's swarm name.
    pub(crate) name: String,
    /// The key, which is the file's name.
    pub(crate) key: String,
}

/// Who owns the secret files. A numeric user gets private files (0400); otherwise (the
/// image's user, or a user known only by name) they are readable by every user of the
/// container (0444), since Swarm cannot resolve names when it writes them.
fn secret_file(key: &str, user: Option<&str>) -> TaskSpecContainerSpecFile {
    let user = user.unwrap_or("").trim();
    let (name, group) = user.split_once(':').unwrap_or((user, ""));
    let uid = name.parse::<u32>().ok();
    let gid = group.parse::<u32>().ok().or(uid);
    TaskSpecContainerSpecFile {
        name: Some(key.to_owned()),
        uid: Some(uid.unwrap_or(0).to_string()),
        gid: Some(gid.unwrap_or(0).to_string()),
        mode: Some(if uid.is_some() { 0o400 } else { 0o444 }),
    }
}

/// Limits: the spec's, or the configured default memory. Swarm has no swap setting on API
/// 1.41, so (unlike the Docker backend) swap is whatever the daemon's default is.
fn resources(spec: &LaunchSpec, config: &SwarmConfig) -> Result<TaskSpecResources, BackendError> {
    let memory = checked_memory(spec.resources.memory_bytes.or(config.default_memory_bytes))?;
    Ok(TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: nano_cpus(spec)?,
            memory_bytes: memory,
            pids: None,
        }),
        ..Default::default()
    })
}

/// The networks to attach: none for `bridge` (a task without networks gets the node's
/// default bridge, as a plain container does), else the named (swarm-scoped) network.
fn networks(spec: &LaunchSpec) -> Option<Vec<NetworkAttachmentConfig>> {
    let network = spec.network.as_deref().filter(|n| *n != "bridge")?;
    Some(vec![NetworkAttachmentConfig {
        target: Some(network.to_owned()),
        ..Default::default()
    }])
}

/// The container part of the task. It never holds a secret value: `docker service inspect`
/// shows the whole spec to anyone with API access, so secrets are only referenced.
fn container_spec(
    spec: &LaunchSpec,
    config: &SwarmConfig,
    secrets: &[SecretMount],
) -> TaskSpecContainerSpec {
    let labels: HashMap<String, String> = spec.identity_labels().into_iter().collect();
    let user = spec.user.clone().or_else(|| config.default_user.clone());
    let secret_refs = secrets
        .iter()
        .map(|s| TaskSpecContainerSpecSecrets {
            file: Some(secret_file(&s.key, user.as_deref())),
            secret_id: Some(s.id.clone()),
            secret_name: Some(s.name.clone()),
        })
        .collect();
    TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels),
        // `args` replaces the image's CMD and keeps its ENTRYPOINT, as `docker run` does.
        args: spec.command.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user,
        secrets: Some(secret_refs),
        stop_grace_period: Some(DEFAULT_STOP_GRACE_NANOS),
        // No `no-new-privileges` here, unlike the Docker backend: `Privileges.NoNewPrivileges`
        // exists for services only in API versions well past the 1.41 we target.
        ..Default::default()
    }
}

/// The service for one attempt: a replicated job of one task that is never restarted.
pub(crate) fn service_spec(
    spec: &LaunchSpec,
    config: &SwarmConfig,
    secrets: &[SecretMount],
) -> Result<ServiceSpec, BackendError> {
    let labels: HashMap<String, String> = spec.identity_labels().into_iter().collect();
    Ok(ServiceSpec {
        name: Some(service_name(&spec.run_id, spec.attempt)),
        labels: Some(labels),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec(spec, config, secrets)),
            resources: Some(resources(spec, config)?),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            networks: networks(spec),
            log_driver: spec.log_driver.as_ref().map(|d| TaskSpecLogDriver {
                name: Some(d.name.clone()),
                options: Some(d.options.clone().into_iter().collect()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        crate::sample_launch_spec()
    }

    fn mounts() -> Vec<SecretMount> {
        vec![SecretMount {
            id: "sid".into(),
            name: secret_name("0190f1a2-run", 2, "TOKEN"),
            key: "TOKEN".into(),
        }]
    }

    #[test]
    fn names_service_and_secrets_after_run_and_attempt() {
        assert_eq!(service_name("abc", 3), "jobdock-abc-3");
        assert_eq!(secret_name("abc", 3, "TOKEN"), "jobdock-abc-3-TOKEN");
        let run = "0190f1a2-0000-7000-8000-000000000000";
        let long = secret_name(run, 1, "A_VERY_LONG_SECRET_NAME_INDEED");
        assert!(long.len() <= MAX_SECRET_NAME, "{long}");
        assert_eq!(long, secret_name(run, 1, "A_VERY_LONG_SECRET_NAME_INDEED"));
        assert_ne!(long, secret_name(run, 1, "A_VERY_LONG_SECRET_NAME_INDEEd"));
        assert!(secret_name("abc", 1, "ends_").ends_with(|c: char| c.is_ascii_hexdigit()));
    }

    #[test]
    fn is_a_one_shot_job_without_secret_values() {
        let service = service_spec(&spec(), &SwarmConfig::default(), &mounts()).unwrap();
        let json = serde_json::to_string(&service).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
        let job = service.mode.unwrap().replicated_job.unwrap();
        assert_eq!(
            (job.max_concurrent, job.total_completions),
            (Some(1), Some(1))
        );
        let task = service.task_template.unwrap();
        let restart = task.restart_policy.unwrap().condition;
        assert_eq!(restart, Some(TaskSpecRestartPolicyConditionEnum::NONE));
        let container = task.container_spec.unwrap();
        assert_eq!(container.env.unwrap(), vec!["A=1"]);
        assert_eq!(container.args.unwrap(), vec!["true"]);
        assert_eq!(container.labels.unwrap()["dev.jobdock.attempt"], "2");
        let file = container.secrets.unwrap()[0].file.clone().unwrap();
        assert_eq!(file.name.as_deref(), Some("TOKEN"));
        assert_eq!(file.mode, Some(0o444));
        assert_eq!(
            service.labels.unwrap()["dev.jobdock.run-id"],
            "0190f1a2-run"
        );
    }

    #[test]
    fn applies_limits_defaults_and_private_files() {
        let mut s = spec();
        s.resources.cpus = Some(0.5);
        s.network = Some("backend".into());
        let config = SwarmConfig {
            default_memory_bytes: Some(64 << 20),
            default_user: Some("1000:50".into()),
            keep_failed: false,
        };
        let service = service_spec(&s, &config, &mounts()).unwrap();
        let task = service.task_template.unwrap();
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(task.networks.unwrap()[0].target.as_deref(), Some("backend"));
        let container = task.container_spec.unwrap();
        assert_eq!(container.user.as_deref(), Some("1000:50"));
        let file = container.secrets.unwrap()[0].file.clone().unwrap();
        assert_eq!(
            (file.uid.as_deref(), file.gid.as_deref()),
            (Some("1000"), Some("50"))
        );
        assert_eq!(file.mode, Some(0o400));
    }

    #[test]
    fn refuses_secret_keys_that_are_not_file_names() {
        let mut s = spec();
        s.secrets[0].name = "../etc/passwd".into();
        let err = validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("../etc/passwd") && !err.contains("s3cr3t"),
            "{err}"
        );
    }
}
