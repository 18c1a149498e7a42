//! Translating a [`LaunchSpec`] into a Nomad batch job and its secrets variable.
//!
//! Secret values never enter the job: they go into a Nomad Variable that a `template`
//! block reads when the task starts. The job's `Meta` carries the identity labels (Nomad
//! has no labels) and nothing secret.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::NomadConfig;
use crate::{BackendError, LaunchSpec, PullPolicy, SecretDelivery};

/// The one task group's and task's name; log requests name the task.
pub(crate) const TASK: &str = "run";

/// How long Nomad itself waits between the kill signal and SIGKILL when it stops the task
/// (a drain, a `nomad job stop`). [`crate::Backend::stop`] applies its own grace with
/// signals, so this is only the upper bound Nomad's clients allow by default.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the env-file template is rendered (the task's private, in-memory secrets dir).
const ENV_FILE: &str = "secrets/jobdock.env";

/// The task-relative directory holding secret files, mounted at `/run/secrets`.
const FILES_DIR: &str = "secrets/jobdock";

/// The job id of one attempt: also what makes launches idempotent.
pub(crate) fn job_id(run_id: &str, attempt: u32) -> String {
    format!("jobdock-{run_id}-{attempt}")
}

/// The variable holding an attempt's secrets. `nomad/jobs/<job id>` is readable by that
/// job's tasks through their workload identity without any extra ACL policy.
pub(crate) fn variable_path(job_id: &str) -> String {
    format!("nomad/jobs/{job_id}")
}

/// Checks what Nomad cannot take before anything is created.
pub(crate) fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !safe(&spec.run_id) {
        return Err(BackendError::Invalid(
            "run id must be letters, digits, `-` or `_`".into(),
        ));
    }
    if spec.pull_policy == Some(PullPolicy::Never) {
        return Err(BackendError::Invalid(
            "Nomad's docker driver cannot be told never to pull; use `if_not_present` or \
             `always`"
                .into(),
        ));
    }
    if spec.image.trim().is_empty() {
        return Err(BackendError::Invalid("image is empty".into()));
    }
    if spec.registry_auth.is_some() {
        // The docker driver takes credentials only inside the job's own config, which
        // anyone allowed to read the job can see: configure them on the Nomad clients.
        return Err(BackendError::Invalid(
            "registry credentials cannot be passed through a Nomad job spec; configure \
             them on the Nomad clients (docker plugin `auth` block)"
                .into(),
        ));
    }
    if let Some(bad) = spec.secrets.iter().find(|s| !safe(&s.name)) {
        return Err(BackendError::Invalid(format!(
            "secret name `{}` must be letters, digits, `-` or `_`",
            bad.name
        )));
    }
    Ok(())
}

/// The body of `PUT /v1/var/:path`: the secret values as the variable's items.
pub(crate) fn variable_body(spec: &LaunchSpec, path: &str, namespace: Option<&str>) -> Value {
    let items: BTreeMap<&str, &str> = spec
        .secrets
        .iter()
        .map(|s| (s.name.as_str(), s.value.expose_secret()))
        .collect();
    json!({ "Path": path, "Namespace": namespace.unwrap_or("default"), "Items": items })
}

/// The body of `POST /v1/jobs`. `EnforceIndex` with index 0 registers only if no job of
/// that id exists, so two racing launches cannot both (re)register it.
pub(crate) fn register_body(spec: &LaunchSpec, config: &NomadConfig) -> Value {
    let id = job_id(&spec.run_id, spec.attempt);
    let mut job = json!({
        "ID": id,
        "Name": id,
        "Type": "batch",
        "Datacenters": datacenters(config),
        "Meta": spec.identity_labels(),
        "TaskGroups": [{
            "Name": TASK,
            "Count": 1,
            // Retries are the engine's: Nomad must neither restart nor reschedule.
            "RestartPolicy": { "Attempts": 0, "Mode": "fail" },
            "ReschedulePolicy": { "Attempts": 0, "Unlimited": false },
            "Tasks": [task(spec, config, &id)],
        }],
    });
    if let Some(ns) = &config.namespace {
        job["Namespace"] = json!(ns);
    }
    if let Some(region) = &config.region {
        job["Region"] = json!(region);
    }
    json!({ "Job": job, "EnforceIndex": true, "JobModifyIndex": 0 })
}

fn datacenters(config: &NomadConfig) -> Vec<String> {
    if config.datacenters.is_empty() {
        vec!["*".into()]
    } else {
        config.datacenters.clone()
    }
}

/// The docker task: image, command, limits, plain env, and the secret templates.
fn task(spec: &LaunchSpec, config: &NomadConfig, job_id: &str) -> Value {
    let env: BTreeMap<&str, &str> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut task = json!({
        "Name": TASK,
        "Driver": "docker",
        "Config": driver_config(spec),
        "Env": env,
        "Resources": resources(spec, config),
        "KillTimeout": KILL_TIMEOUT.as_nanos() as u64,
        "KillSignal": "SIGTERM",
        "Templates": templates(spec, job_id),
    });
    if let Some(user) = &spec.user {
        task["User"] = json!(user);
    }
    task
}

fn driver_config(spec: &LaunchSpec) -> Value {
    // The docker driver pulls only a missing image unless told otherwise; the safe default
    // pulls every time, so that a job cannot run an image cached by another job.
    let force_pull = !matches!(spec.pull_policy, Some(PullPolicy::IfNotPresent));
    let mut config = json!({ "image": spec.image, "force_pull": force_pull });
    if let Some((command, args)) = spec.command.as_ref().and_then(|c| c.split_first()) {
        config["command"] = json!(command);
        config["args"] = json!(args);
    }
    if let Some(network) = &spec.network {
        config["network_mode"] = json!(network);
    }
    // A CPU limit is a limit, not a scheduling weight.
    if spec.resources.cpus.is_some_and(|c| c > 0.0) {
        config["cpu_hard_limit"] = json!(true);
    }
    if spec.secret_delivery == SecretDelivery::Files && !spec.secrets.is_empty() {
        // Relative sources are inside the task directory, which the docker driver allows
        // without enabling host volumes; the secrets dir is Nomad's own tmpfs.
        config["mounts"] = json!([{
            "type": "bind", "source": FILES_DIR, "target": "/run/secrets", "readonly": true,
        }]);
    }
    config
}

/// Nomad counts CPU in MHz; a core is taken as 1000 MHz and enforced as a hard limit.
fn resources(spec: &LaunchSpec, config: &NomadConfig) -> Value {
    let mut r = json!({});
    if let Some(cpus) = spec.resources.cpus.filter(|c| *c > 0.0) {
        r["CPU"] = json!(((cpus * 1000.0).ceil() as u64).max(1));
    }
    let memory_mb = spec
        .resources
        .memory_bytes
        .map(|b| b.div_ceil(1 << 20))
        .or(config.default_memory_mb);
    if let Some(mb) = memory_mb {
        r["MemoryMB"] = json!(mb);
    }
    r
}

/// The templates that read the secrets variable: one env file, or one file per secret.
fn templates(spec: &LaunchSpec, job_id: &str) -> Value {
    if spec.secrets.is_empty() {
        return json!([]);
    }
    let path = variable_path(job_id);
    match spec.secret_delivery {
        SecretDelivery::Env => json!([{
            "EmbeddedTmpl": format!(
                "{{{{ with nomadVar \"{path}\" }}}}{{{{ range $k, $v := . }}}}{{{{ $k }}}}={{{{ $v | toJSON }}}}\n{{{{ end }}}}{{{{ end }}}}"
            ),
            "DestPath": ENV_FILE,
            "Envvars": true,
            "ChangeMode": "noop",
            "Perms": "0400",
        }]),
        SecretDelivery::Files => {
            let owner = numeric_owner(spec.user.as_deref());
            let files: Vec<Value> = spec
                .secrets
                .iter()
                .map(|s| file_template(&path, &s.name, owner))
                .collect();
            Value::Array(files)
        }
    }
}

/// One secret file, readable by the run's user only when we know its uid, else by all
/// (the mount is read-only and private to the container).
fn file_template(path: &str, name: &str, owner: Option<(u32, u32)>) -> Value {
    let mut t = json!({
        "EmbeddedTmpl": format!(
            "{{{{ with nomadVar \"{path}\" }}}}{{{{ range $k, $v := . }}}}{{{{ if eq $k \"{name}\" }}}}{{{{ $v }}}}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}"
        ),
        "DestPath": format!("{FILES_DIR}/{name}"),
        "ChangeMode": "noop",
        "Perms": if owner.is_some() { "0400" } else { "0444" },
    });
    if let Some((uid, gid)) = owner {
        t["Uid"] = json!(uid);
        t["Gid"] = json!(gid);
    }
    t
}

/// `uid[:gid]` as numbers; a user name cannot be resolved outside the image.
fn numeric_owner(user: Option<&str>) -> Option<(u32, u32)> {
    let (uid, gid) = match user?.split_once(':') {
        Some((u, g)) => (u, g),
        None => (user?, user?),
    };
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resources, Secret};
    use secrecy::SecretString;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            run_id: "r1".into(),
            job: "j".into(),
            image: "busybox:1.36".into(),
            command: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
            env: vec![("A".into(), "b".into())],
            secrets: vec![Secret {
                name: "TOKEN".into(),
                value: SecretString::from("s3cret"),
            }],
            resources: Resources {
                cpus: Some(0.5),
                memory_bytes: Some(3 << 20),
            },
            user: Some("65534".into()),
            ..crate::sample_launch_spec()
        }
    }

    #[test]
    fn job_has_no_secret_and_no_retries() {
        let body = register_body(&spec(), &NomadConfig::new("http://x"));
        let text = body.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        let job = &body["Job"];
        assert_eq!(job["ID"], "jobdock-r1-2");
        assert_eq!(job["Meta"]["dev.jobdock.attempt"], "2");
        let group = &job["TaskGroups"][0];
        assert_eq!(group["RestartPolicy"]["Attempts"], 0);
        assert_eq!(group["ReschedulePolicy"]["Attempts"], 0);
        let task = &group["Tasks"][0];
        assert_eq!(task["Config"]["command"], "sh");
        assert_eq!(task["Config"]["args"], json!(["-c", "echo hi"]));
        assert_eq!(task["Resources"], json!({ "CPU": 500, "MemoryMB": 3 }));
        assert_eq!(task["Templates"][0]["Envvars"], true);
        assert_eq!(body["JobModifyIndex"], 0);
    }

    #[test]
    fn file_secrets_are_templates_owned_by_the_user() {
        let mut s = spec();
        s.secret_delivery = SecretDelivery::Files;
        let body = register_body(&s, &NomadConfig::new("http://x"));
        let task = &body["Job"]["TaskGroups"][0]["Tasks"][0];
        assert_eq!(task["Templates"][0]["DestPath"], "secrets/jobdock/TOKEN");
        assert_eq!(task["Templates"][0]["Uid"], 65534);
        assert_eq!(task["Config"]["mounts"][0]["target"], "/run/secrets");
        assert_eq!(variable_body(&s, "p", None)["Items"]["TOKEN"], "s3cret");
    }

    #[test]
    fn the_image_is_pulled_every_time_unless_the_job_says_otherwise() {
        let force_pull = |p| {
            let mut s = spec();
            s.pull_policy = p;
            register_body(&s, &NomadConfig::new("http://x"))["Job"]["TaskGroups"][0]["Tasks"][0]
                ["Config"]["force_pull"]
                .clone()
        };
        assert_eq!(force_pull(None), true);
        assert_eq!(force_pull(Some(PullPolicy::Always)), true);
        assert_eq!(force_pull(Some(PullPolicy::IfNotPresent)), false);
        let mut s = spec();
        s.pull_policy = Some(PullPolicy::Never);
        assert!(validate(&s).is_err(), "the driver has no such setting");
    }

    #[test]
    fn refuses_what_would_leak_or_break() {
        let mut s = spec();
        s.secrets[0].name = "a b".into();
        assert!(validate(&s).is_err());
        assert_eq!(numeric_owner(Some("10:20")), Some((10, 20)));
        assert_eq!(numeric_owner(Some("app")), None);
    }
}
