//! Translating a [`LaunchSpec`] into the `batch/v1` Job and the `Secret`s the run needs.
//!
//! Secret values never appear in the Job: they live in a Secret named after the Job, read
//! through `envFrom.secretRef` or mounted at `/run/secrets`, and created after the Job with an
//! ownerReference to it so that Kubernetes deletes them together.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::KubernetesConfig;
use crate::{labels, BackendError, LaunchSpec, PullPolicy, SecretDelivery};

/// The one container of every pod.
pub(crate) const CONTAINER: &str = "job";
/// Label the Job controller puts on its pods.
pub(crate) const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The finalizer with which a stop keeps a pod (its exit and its log) until `cleanup`.
pub(crate) const KEEP_FINALIZER: &str = "dev.jobdock/keep-after-stop";

/// `jobdock-<run id>-<attempt>`, checked against DNS-1123 (lowercase, at most 63 characters).
pub(crate) fn job_name(run_id: &str, attempt: u32) -> Result<String, BackendError> {
    let name = format!("jobdock-{}-{attempt}", run_id.to_ascii_lowercase());
    let ok = name.len() <= 63
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(name)
    } else {
        Err(BackendError::Invalid(format!(
            "`{name}` is not a valid Kubernetes Job name (DNS-1123, at most 63 characters)"
        )))
    }
}

/// The name of the Secret holding a run's image-pull credentials.
pub(crate) fn pull_secret_name(job: &str) -> String {
    format!("{job}-pull")
}

/// Checks a label key and value the way the API server will, to fail before creating anything.
fn check_label(key: &str, value: &str) -> Result<(), BackendError> {
    fn segment(s: &str, max: usize, empty_ok: bool) -> bool {
        if s.is_empty() {
            return empty_ok;
        }
        s.len() <= max
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let prefix_ok = key.rsplit_once('/').is_none_or(|(p, _)| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.')
                .all(|s| segment(s, 63, false) && !s.contains('_'))
    });
    if prefix_ok && segment(name, 63, false) && segment(value, 63, true) {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "label `{key}={value}` is not valid on Kubernetes"
        )))
    }
}

/// `s` with every `$` doubled. The kubelet expands `$(NAME)` in a container's command, args
/// and env values and turns `$$` into `$`; a run's command and values must reach the
/// process as written, as they do on the other backends.
fn verbatim(s: &str) -> String {
    s.replace('$', "$$")
}

/// The Job for one attempt. `name` comes from [`job_name`].
pub(crate) fn job(
    spec: &LaunchSpec,
    name: &str,
    config: &KubernetesConfig,
) -> Result<Job, BackendError> {
    let labels = spec.identity_labels();
    for (k, v) in &labels {
        check_label(k, v)?;
    }
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": match spec.pull_policy {
            // The safe default, as the AlwaysPullImages admission sets it: a node's cache
            // never stands in for the pod's own pull credentials.
            None | Some(PullPolicy::Always) => "Always",
            Some(PullPolicy::IfNotPresent) => "IfNotPresent",
            Some(PullPolicy::Never) => "Never",
        },
        "env": spec.env.iter().map(|(k, v)| json!({"name": k, "value": verbatim(v)})).collect::<Vec<_>>(),
        "resources": resources(spec, config),
    });
    if let Some(cmd) = &spec.command {
        // Like Docker's `Cmd`: replaces the image's command, keeps its entrypoint.
        container["args"] = json!(cmd.iter().map(|a| verbatim(a)).collect::<Vec<_>>());
    }
    let mut pod = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "containers": [],
    });
    if let Some(user) = &spec.user {
        let (uid, gid) = parse_user(user)?;
        container["securityContext"] = json!({"runAsUser": uid});
        if let Some(gid) = gid {
            container["securityContext"]["runAsGroup"] = json!(gid);
        }
    }
    match spec.network.as_deref() {
        None | Some("bridge") | Some("default") => {}
        Some("host") => pod["hostNetwork"] = json!(true),
        Some(other) => {
            return Err(BackendError::Invalid(format!(
                "network `{other}` is not supported on Kubernetes (only `host`)"
            )))
        }
    }
    if !spec.secrets.is_empty() {
        match spec.secret_delivery {
            SecretDelivery::Env => {
                container["envFrom"] = json!([{"secretRef": {"name": name}}]);
            }
            SecretDelivery::Files => {
                container["volumeMounts"] =
                    json!([{"name": "secrets", "mountPath": "/run/secrets", "readOnly": true}]);
                pod["volumes"] = json!([{"name": "secrets", "secret": {"secretName": name, "defaultMode": 0o444}}]);
            }
        }
    }
    let mut pull: Vec<Value> = config
        .image_pull_secrets
        .iter()
        .map(|s| json!({"name": s}))
        .collect();
    if spec.registry_auth.is_some() {
        pull.push(json!({"name": pull_secret_name(name)}));
    }
    if !pull.is_empty() {
        pod["imagePullSecrets"] = json!(pull);
    }
    pod["containers"] = json!([container]);
    let mut job_spec = json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    });
    if let Some(t) = spec.timeout {
        let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
        job_spec["activeDeadlineSeconds"] = json!(secs.max(1));
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": job_spec,
    });
    serde_json::from_value(job).map_err(|e| BackendError::Invalid(format!("job manifest: {e}")))
}

fn resources(spec: &LaunchSpec, config: &KubernetesConfig) -> Value {
    let mut limits = serde_json::Map::new();
    if let Some(m) = spec.resources.memory_bytes.or(config.default_memory_bytes) {
        limits.insert("memory".into(), json!(m.to_string()));
    }
    if let Some(c) = spec.resources.cpus {
        limits.insert(
            "cpu".into(),
            json!(format!("{}m", (c * 1000.0).ceil() as u64)),
        );
    }
    json!({"limits": limits})
}

/// `uid[:gid]`: Kubernetes runs containers by number only.
fn parse_user(user: &str) -> Result<(i64, Option<i64>), BackendError> {
    let bad = || BackendError::Invalid(format!("user `{user}`: Kubernetes needs `uid[:gid]`"));
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(str::parse).transpose().map_err(|_| bad())?;
    Ok((uid, gid))
}

/// The ownerReference that makes Kubernetes delete a Secret with its Job.
fn owned_by(job: &Job) -> Value {
    json!([{
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "blockOwnerDeletion": true,
        "controller": false,
    }])
}

/// The Secrets to create once the Job exists: the values, and the pull credentials.
pub(crate) fn secrets(spec: &LaunchSpec, job: &Job) -> Result<Vec<KubeSecret>, BackendError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        (labels::RUN_ID.to_owned(), spec.run_id.clone()),
        (
            labels::INSTALLATION.to_owned(),
            spec.installation_id.clone(),
        ),
    ]);
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = Vec::new();
    if !spec.secrets.is_empty() {
        let data: BTreeMap<&str, String> = spec
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), b64(s.value.expose_secret().as_bytes())))
            .collect();
        out.push(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": labels, "ownerReferences": owned_by(job)},
            "data": data,
        }));
    }
    if let Some(auth) = &spec.registry_auth {
        let server = auth
            .server
            .clone()
            .unwrap_or_else(|| "https://index.docker.io/v1/".into());
        let basic = b64(format!("{}:{}", auth.username, auth.password.expose_secret()).as_bytes());
        let mut auths = serde_json::Map::new();
        auths.insert(server, json!({"auth": basic}));
        let config = json!({ "auths": auths }).to_string();
        out.push(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": pull_secret_name(&name), "labels": labels, "ownerReferences": owned_by(job)},
            "data": {".dockerconfigjson": b64(config.as_bytes())},
        }));
    }
    out.into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| BackendError::Invalid(format!("secret: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_1123() {
        let id = "0190A5C2-7B1E-7C3D-9F00-123456789ABC";
        assert_eq!(
            job_name(id, 2).unwrap(),
            "jobdock-0190a5c2-7b1e-7c3d-9f00-123456789abc-2"
        );
        assert!(job_name(&"x".repeat(60), 1).is_err());
        assert!(job_name("a_b", 1).is_err());
    }

    #[test]
    fn dollars_are_not_left_to_the_kubelet() {
        let mut spec = crate::sample_launch_spec();
        spec.command = Some(vec!["echo $(A) $$".into()]);
        spec.env = vec![("A".into(), "$(B)".into())];
        let job = job(&spec, "j", &KubernetesConfig::default()).unwrap();
        let c = &serde_json::to_value(job).unwrap()["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["echo $$(A) $$$$"]));
        assert_eq!(c["env"][0]["value"], "$$(B)");
    }

    #[test]
    fn a_node_cache_never_stands_in_for_pull_credentials_by_default() {
        let policy = |p| {
            let mut spec = crate::sample_launch_spec();
            spec.pull_policy = p;
            let job = job(&spec, "j", &KubernetesConfig::default()).unwrap();
            serde_json::to_value(job).unwrap()["spec"]["template"]["spec"]["containers"][0]
                ["imagePullPolicy"]
                .clone()
        };
        assert_eq!(policy(None), "Always");
        assert_eq!(policy(Some(PullPolicy::Always)), "Always");
        assert_eq!(policy(Some(PullPolicy::IfNotPresent)), "IfNotPresent");
        assert_eq!(policy(Some(PullPolicy::Never)), "Never");
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("dev.jobdock.run-id", "abc-1").is_ok());
        assert!(check_label("example.com/team", "").is_ok());
        assert!(check_label("bad key", "v").is_err());
        assert!(check_label("k", "-v").is_err());
        assert!(check_label("k", &"v".repeat(64)).is_err());
    }
}
