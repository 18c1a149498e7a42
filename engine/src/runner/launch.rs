//! Turns a run's snapshot into the backend-neutral launch request.

use std::time::Duration;

use jobdock_backends::{LaunchSpec, PullPolicy, RegistryAuth, Resources, Secret, SecretDelivery};
use secrecy::SecretString;

use crate::store::runs::RunRow;

/// The launch request of the run's current attempt. `secrets` are the job's values now:
/// the definition is a snapshot, but a rotated credential takes effect for queued runs.
pub fn launch_spec(
    run: &RunRow,
    installation_id: &str,
    secrets: Vec<(String, SecretString)>,
    run_url: Option<&str>,
) -> Result<LaunchSpec, String> {
    let s = &run.spec;
    let mut env: Vec<(String, String)> =
        s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(url) = run_url {
        env.push(("JOBDOCK_URL".into(), url.to_string()));
    }
    env.push(("JOBDOCK_RUN_ID".into(), run.id.clone()));
    env.push(("JOBDOCK_JOB".into(), run.job_name.clone()));
    env.push(("JOBDOCK_ATTEMPT".into(), run.attempt.to_string()));
    let registry_secret = s.registry.as_ref().map(|r| r.password_secret.clone());
    let mut registry_auth = None;
    let mut delivered = Vec::new();
    for (name, value) in secrets {
        if Some(&name) == registry_secret.as_ref() {
            let r = s
                .registry
                .as_ref()
                .expect("registry is set when its secret is");
            registry_auth = Some(RegistryAuth {
                username: r.username.clone(),
                password: value,
                server: Some(r.server.clone()),
            });
        } else {
            delivered.push(Secret { name, value });
        }
    }
    if let (Some(name), None) = (&registry_secret, &registry_auth) {
        return Err(format!(
            "the job's registry password secret `{name}` is not set; set it with \
             `jobdock secrets set {} {name}`",
            run.job_name
        ));
    }
    Ok(LaunchSpec {
        run_id: run.id.clone(),
        attempt: u32::try_from(run.attempt).unwrap_or(u32::MAX),
        job: run.job_name.clone(),
        installation_id: installation_id.to_string(),
        image: s.image.clone(),
        command: s.command.clone(),
        env,
        secrets: delivered,
        secret_delivery: match s.secret_delivery.unwrap_or_default() {
            jobdock_types::SecretDelivery::Env => SecretDelivery::Env,
            jobdock_types::SecretDelivery::Files => SecretDelivery::Files,
        },
        resources: Resources {
            cpus: s.resources.and_then(|r| r.cpus),
            memory_bytes: s
                .resources
                .and_then(|r| r.memory_mb)
                .map(|mb| mb as u64 * 1024 * 1024),
        },
        network: s.network.clone(),
        user: None,
        labels: s.labels.clone(),
        registry_auth,
        pull_policy: s.pull_policy.map(|p| match p {
            jobdock_types::PullPolicy::Always => PullPolicy::Always,
            jobdock_types::PullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
            jobdock_types::PullPolicy::Never => PullPolicy::Never,
        }),
        timeout: s.timeout_seconds.map(|t| Duration::from_secs(t as u64)),
        log_driver: s.log_driver.as_ref().map(|d| jobdock_backends::LogDriver {
            name: d.name.clone(),
            options: d.options.clone(),
        }),
    })
}
