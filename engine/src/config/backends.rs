//! The settings of the runner and of the backends, resolved from `serve`'s flags and the
//! settings file.

use std::time::Duration;

use secrecy::SecretString;

use super::{non_empty, ConfigError, FileSettings, ServeArgs};
use crate::backends::{BackendSettings, NomadSettings};

pub(super) fn backend_settings(
    args: &ServeArgs,
    file: &FileSettings,
) -> Result<BackendSettings, ConfigError> {
    Ok(BackendSettings {
        docker: docker_config(args, file),
        kube: kube_config(args, file),
        nomad: nomad_settings(args, file)?,
    })
}

pub(super) fn runner_config(
    args: &ServeArgs,
    file: &FileSettings,
) -> Result<crate::runner::RunnerConfig, ConfigError> {
    let mut c = crate::runner::RunnerConfig::default();
    if let Some(mb) = args.log_cap_mb.or(file.log_cap_mb) {
        if mb < 1 {
            return Err(ConfigError("log_cap_mb must be at least 1".into()));
        }
        c.log_cap_bytes = mb * 1024 * 1024;
    }
    if let Some(s) = args
        .backend_reattach_seconds
        .or(file.backend_reattach_seconds)
    {
        c.reattach_window = Duration::from_secs(s);
    }
    if let Some(spec) = non_empty(&args.max_running).or_else(|| file.max_running.clone()) {
        c.backend_caps = parse_caps(&spec)?;
    }
    if let Some(s) = args
        .schedule_catchup_seconds
        .or(file.schedule_catchup_seconds)
    {
        c.schedule_catchup = Duration::from_secs(s);
    }
    if let Some(s) = args.stall_after_seconds.or(file.stall_after_seconds) {
        c.stall_after = Duration::from_secs(s);
    }
    if let Some(s) = args.lease_seconds.or(file.lease_seconds) {
        if s < 3 {
            return Err(ConfigError("lease_seconds must be at least 3".into()));
        }
        c.lease_ttl = Duration::from_secs(s);
    }
    c.alerts = super::alerts::alert_config(args, file)?;
    Ok(c)
}

fn parse_caps(spec: &str) -> Result<std::collections::HashMap<String, i64>, ConfigError> {
    let bad = |p: &str| {
        ConfigError(format!(
            "max_running: `{p}` is not `backend=N` with N at least 1"
        ))
    };
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, n) = p.split_once('=').ok_or_else(|| bad(p))?;
            let n: i64 = n.trim().parse().map_err(|_| bad(p))?;
            if n < 1 || !["docker", "swarm", "kubernetes", "nomad"].contains(&name.trim()) {
                return Err(bad(p));
            }
            Ok((name.trim().to_string(), n))
        })
        .collect()
}

fn nomad_settings(
    args: &ServeArgs,
    file: &FileSettings,
) -> Result<Option<NomadSettings>, ConfigError> {
    let Some(address) = non_empty(&args.nomad_addr).or_else(|| file.nomad_addr.clone()) else {
        return Ok(None);
    };
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(ConfigError(format!(
            "nomad_addr `{address}` must start with http:// or https://"
        )));
    }
    let datacenters = non_empty(&args.nomad_datacenters)
        .or_else(|| file.nomad_datacenters.clone())
        .unwrap_or_else(|| "dc1".into());
    Ok(Some(NomadSettings {
        address,
        token: non_empty(&args.nomad_token).map(SecretString::from),
        namespace: non_empty(&args.nomad_namespace).or_else(|| file.nomad_namespace.clone()),
        region: non_empty(&args.nomad_region).or_else(|| file.nomad_region.clone()),
        datacenters: datacenters
            .split(',')
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect(),
    }))
}

fn kube_config(
    args: &ServeArgs,
    file: &FileSettings,
) -> jobdock_backends::kubernetes::KubernetesConfig {
    let mut c = jobdock_backends::kubernetes::KubernetesConfig::default();
    if let Some(ns) = non_empty(&args.kube_namespace).or_else(|| file.kube_namespace.clone()) {
        c.namespace = ns;
    }
    if let Some(list) =
        non_empty(&args.kube_image_pull_secrets).or_else(|| file.kube_image_pull_secrets.clone())
    {
        c.image_pull_secrets = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(s) = args
        .kube_pending_timeout_seconds
        .or(file.kube_pending_timeout_seconds)
    {
        c.pending_timeout = Duration::from_secs(s);
    }
    c
}

fn docker_config(args: &ServeArgs, file: &FileSettings) -> jobdock_backends::docker::DockerConfig {
    let memory_mb = args
        .default_memory_mb
        .or(file.default_memory_mb)
        .unwrap_or(2048);
    jobdock_backends::docker::DockerConfig {
        default_memory_bytes: (memory_mb > 0).then_some(memory_mb * 1024 * 1024),
        default_user: non_empty(&args.container_user).or_else(|| file.container_user.clone()),
        keep_failed: args.keep_failed_containers || file.keep_failed_containers.unwrap_or(false),
        ..Default::default()
    }
}
