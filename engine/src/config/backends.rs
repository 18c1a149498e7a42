//! The settings of the runner and of the backends, built from the layered values.

use std::time::Duration;

use secrecy::SecretString;

use super::layers::Layers;
use super::ConfigError;
use crate::backends::{BackendSettings, NomadSettings};
use crate::runner::RunnerConfig;

/// `nomad_token` is no file key: it comes from its flag or variable only.
pub(super) fn backend_settings(
    l: &Layers,
    nomad_token: Option<String>,
) -> Result<BackendSettings, ConfigError> {
    Ok(BackendSettings {
        docker: docker_config(l),
        kube: kube_config(l),
        nomad: nomad_settings(l, nomad_token)?,
    })
}

pub(super) fn runner_config(l: &Layers) -> Result<RunnerConfig, ConfigError> {
    let v = &l.values;
    let mut c = RunnerConfig::default();
    if let Some(mb) = v.log_cap_mb {
        if mb < 1 {
            return Err(l.invalid("log_cap_mb", "log_cap_mb must be at least 1"));
        }
        c.log_cap_bytes = mb * 1024 * 1024;
    }
    if let Some(s) = v.backend_reattach_seconds {
        c.reattach_window = Duration::from_secs(s);
    }
    if let Some(spec) = &v.max_running {
        c.backend_caps = parse_caps(spec).map_err(|e| l.invalid("max_running", e))?;
    }
    if let Some(s) = v.schedule_catchup_seconds {
        c.schedule_catchup = Duration::from_secs(s);
    }
    if let Some(s) = v.stall_after_seconds {
        c.stall_after = Duration::from_secs(s);
    }
    if let Some(s) = v.lease_seconds {
        if s < 3 {
            return Err(l.invalid("lease_seconds", "lease_seconds must be at least 3"));
        }
        c.lease_ttl = Duration::from_secs(s);
    }
    c.alerts = super::alerts::alert_config(l)?;
    Ok(c)
}

fn parse_caps(spec: &str) -> Result<std::collections::HashMap<String, i64>, String> {
    let bad = |p: &str| format!("max_running: `{p}` is not `backend=N` with N at least 1");
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

fn nomad_settings(l: &Layers, token: Option<String>) -> Result<Option<NomadSettings>, ConfigError> {
    let v = &l.values;
    let Some(address) = v.nomad_addr.clone() else {
        return Ok(None);
    };
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(l.invalid(
            "nomad_addr",
            format!("nomad_addr `{address}` must start with http:// or https://"),
        ));
    }
    Ok(Some(NomadSettings {
        address,
        token: token.map(SecretString::from),
        namespace: v.nomad_namespace.clone(),
        region: v.nomad_region.clone(),
        datacenters: v
            .nomad_datacenters
            .split(',')
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect(),
    }))
}

fn kube_config(l: &Layers) -> jobdock_backends::kubernetes::KubernetesConfig {
    let v = &l.values;
    let mut c = jobdock_backends::kubernetes::KubernetesConfig::default();
    if let Some(ns) = &v.kube_namespace {
        c.namespace = ns.clone();
    }
    if let Some(list) = &v.kube_image_pull_secrets {
        c.image_pull_secrets = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(s) = v.kube_pending_timeout_seconds {
        c.pending_timeout = Duration::from_secs(s);
    }
    c
}

fn docker_config(l: &Layers) -> jobdock_backends::docker::DockerConfig {
    let v = &l.values;
    jobdock_backends::docker::DockerConfig {
        default_memory_bytes: (v.default_memory_mb > 0)
            .then_some(v.default_memory_mb * 1024 * 1024),
        default_user: v.container_user.clone(),
        keep_failed: v.keep_failed_containers,
        ..Default::default()
    }
}
