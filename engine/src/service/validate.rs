//! Validation of job definitions: every bad field is reported, each with a message a person
//! understands, before anything is stored.

use std::collections::BTreeSet;

use jobdock_types::{BackendName, FieldError, JobSpec};

/// Limits of what a job definition may hold.
const MAX_NAME: usize = 63;
const MAX_IMAGE: usize = 512;
const MAX_VALUE: usize = 32 * 1024;
const MAX_DESCRIPTION: usize = 4096;

/// Checks a job name: a DNS label (so that it is a valid name on every backend).
pub fn job_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may contain only lowercase letters a-z, digits and `-`".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks an environment variable or secret name.
pub fn var_name(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || key.len() > 255 {
        return Err(
            "must be a variable name: letters, digits and `_`, not starting with a digit".into(),
        );
    }
    if key.to_ascii_uppercase().starts_with("JOBDOCK_") {
        return Err("names starting with JOBDOCK_ are reserved for the engine".into());
    }
    Ok(())
}

pub fn lock_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
    {
        return Err("may contain only lowercase letters, digits, `-`, `_` and `.`".into());
    }
    Ok(())
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(m) = result {
            self.0.push(FieldError::new(field, m));
        }
    }
    fn range(&mut self, field: &str, value: Option<i64>, min: i64, max: i64) {
        if let Some(v) = value {
            if v < min || v > max {
                self.0.push(FieldError::new(
                    field,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
    }
}

fn monitoring(e: &mut Errors, m: &jobdock_types::Monitoring) {
    let factor = |e: &mut Errors, field: &str, v: f64, min: f64, max: f64| {
        if !(min..=max).contains(&v) {
            e.0.push(FieldError::new(
                format!("monitoring.{field}"),
                format!("must be between {min} and {max}"),
            ));
        }
    };
    factor(e, "long_running_factor", m.long_running_factor, 1.0, 1000.0);
    factor(e, "slow_start_factor", m.slow_start_factor, 1.0, 1000.0);
    factor(e, "unusually_fast_ratio", m.unusually_fast_ratio, 0.0, 1.0);
    let day = 86_400;
    e.range(
        "monitoring.long_running_min_extra_seconds",
        Some(m.long_running_min_extra_seconds),
        0,
        366 * day,
    );
    e.range(
        "monitoring.slow_start_min_extra_seconds",
        Some(m.slow_start_min_extra_seconds),
        0,
        366 * day,
    );
    e.range(
        "monitoring.stall_after_seconds",
        m.stall_after_seconds,
        0,
        366 * day,
    );
    e.range("monitoring.failure_streak", Some(m.failure_streak), 0, 1000);
    e.range("monitoring.min_samples", Some(m.min_samples), 1, 20);
}

fn no_nul(s: &str, max: usize) -> Result<(), String> {
    if s.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if s.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    Ok(())
}

/// Checks a whole job definition against the backends the engine has.
pub fn job_spec(spec: &JobSpec, backends: &[BackendName]) -> Result<(), Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    e.check("name", job_name(&spec.name));
    e.check("image", image(&spec.image));
    if let Some(cmd) = &spec.command {
        if cmd.is_empty() {
            e.check(
                "command",
                Err("must not be empty (leave it out to use the image's own)".into()),
            );
        }
        for (i, arg) in cmd.iter().enumerate() {
            e.check(format!("command[{i}]"), no_nul(arg, MAX_VALUE));
        }
    }
    for (k, v) in &spec.env {
        e.check(
            format!("env.{k}"),
            var_name(k).and_then(|_| no_nul(v, MAX_VALUE)),
        );
    }
    if let Some(secrets) = &spec.secrets {
        for (k, v) in secrets {
            e.check(
                format!("secrets.{k}"),
                var_name(k).and_then(|_| no_nul(v, MAX_VALUE)),
            );
            if spec.env.contains_key(k) {
                e.check(
                    format!("env.{k}"),
                    Err("is also a secret; a name is one or the other".into()),
                );
            }
        }
    }
    if let Some(b) = spec.backend {
        if !backends.contains(&b) {
            let have: Vec<&str> = backends.iter().map(|b| b.as_str()).collect();
            e.check(
                "backend",
                Err(format!(
                    "backend `{}` is not configured on this engine (configured: {})",
                    b.as_str(),
                    have.join(", ")
                )),
            );
        }
    }
    if let Some(r) = &spec.resources {
        if let Some(c) = r.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                e.check(
                    "resources.cpus",
                    Err("must be more than 0 and at most 1024".into()),
                );
            }
        }
        e.range("resources.memory_mb", r.memory_mb, 6, 4 * 1024 * 1024);
    }
    e.range("timeout_seconds", spec.timeout_seconds, 1, 366 * 86_400);
    e.range("max_parallel", spec.max_parallel, 1, 10_000);
    e.range("max_queued", spec.max_queued, 0, 100_000);
    let mut seen = BTreeSet::new();
    for (i, k) in spec.lock_keys.iter().enumerate() {
        e.check(format!("lock_keys[{i}]"), lock_key(k));
        if !seen.insert(k) {
            e.check(
                format!("lock_keys[{i}]"),
                Err(format!("`{k}` is named twice")),
            );
        }
    }
    if let Some(s) = &spec.schedule {
        e.check(
            "schedule.cron",
            crate::schedule::parse_cron(&s.cron).map(|_| ()),
        );
        e.check(
            "schedule.timezone",
            crate::schedule::parse_timezone(&s.timezone).map(|_| ()),
        );
    }
    if let Some(r) = &spec.retries {
        e.range("retries.max_attempts", Some(r.max_attempts), 1, 100);
        e.range(
            "retries.backoff_seconds",
            Some(r.backoff_seconds),
            0,
            86_400,
        );
    }
    e.range(
        "expected_duration_seconds",
        spec.expected_duration_seconds,
        1,
        366 * 86_400,
    );
    if let Some(m) = &spec.monitoring {
        monitoring(&mut e, m);
    }
    for (k, v) in &spec.labels {
        e.check(format!("labels.{k}"), label(k, v));
    }
    e.range("stop_grace_seconds", spec.stop_grace_seconds, 0, 3600);
    if let Some(n) = &spec.network {
        e.check("network", network(n));
    }
    if let Some(d) = &spec.log_driver {
        log_driver(&mut e, d, spec.backend);
    }
    if let Some(r) = &spec.registry {
        e.check(
            "registry.server",
            no_nul(&r.server, 255).and_then(|_| non_blank(&r.server)),
        );
        e.check(
            "registry.username",
            no_nul(&r.username, 255).and_then(|_| non_blank(&r.username)),
        );
        let known = spec
            .secrets
            .as_ref()
            .map(|s| s.contains_key(&r.password_secret));
        if known == Some(false) {
            e.check(
                "registry.password_secret",
                Err(format!(
                    "names no secret of this job (`{}`)",
                    r.password_secret
                )),
            );
        }
    }
    if spec.pull_policy == Some(jobdock_types::PullPolicy::Never)
        && spec.backend == Some(BackendName::Nomad)
    {
        e.check(
            "pull_policy",
            Err(
                "Nomad's docker driver cannot be told never to pull; use `if_not_present` \
                 or `always`"
                    .into(),
            ),
        );
    }
    if let Some(d) = &spec.description {
        e.check("description", no_nul(d, MAX_DESCRIPTION));
    }
    for (i, a) in spec.alerts.iter().enumerate() {
        e.check(format!("alerts[{i}].channel"), job_name(&a.channel));
        if spec.alerts[..i].iter().any(|b| b.channel == a.channel) {
            e.check(
                format!("alerts[{i}].channel"),
                Err(format!(
                    "`{}` is named twice; list its events once",
                    a.channel
                )),
            );
        }
        super::channels::check_events(&a.on, &format!("alerts[{i}].on"), &mut e.0);
    }
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(e.0)
    }
}

fn non_blank(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

/// A Docker log driver: a plain name, options of bounded size, and a backend that has one.
fn log_driver(e: &mut Errors, d: &jobdock_types::LogDriver, backend: Option<BackendName>) {
    let docker_like = matches!(
        backend,
        None | Some(BackendName::Docker) | Some(BackendName::Swarm)
    );
    if !docker_like {
        e.check(
            "log_driver",
            Err("applies to the `docker` and `swarm` backends only".into()),
        );
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
    };
    if !plain(&d.name) {
        e.check(
            "log_driver.name",
            Err("must be a driver name such as `json-file`, `local` or `none`".into()),
        );
    }
    for (k, v) in &d.options {
        if !plain(k) {
            e.check(
                format!("log_driver.options.{k}"),
                Err("option names are letters, digits and `-_./:`".into()),
            );
        }
        e.check(format!("log_driver.options.{k}"), no_nul(v, 1024));
    }
}

fn network(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 128
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(
            "must be `bridge`, `host`, `none` or a network name (letters, digits, `-`, `_`, `.`)"
                .into(),
        );
    }
    Ok(())
}

fn image(image: &str) -> Result<(), String> {
    if image.trim().is_empty() {
        return Err(
            "must name a container image, e.g. `registry.example.com/team/sync:1.0`".into(),
        );
    }
    if image.len() > MAX_IMAGE || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must be an image reference without spaces, at most {MAX_IMAGE} characters"
        ));
    }
    Ok(())
}

fn label(k: &str, v: &str) -> Result<(), String> {
    if k.is_empty()
        || k.len() > MAX_NAME
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!(
            "label names are 1 to {MAX_NAME} letters, digits, `-`, `_`, `.` or `/`"
        ));
    }
    no_nul(v, 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "orders-sync".into(),
            image: "busybox:1".into(),
            ..Default::default()
        }
    }

    fn fields(spec: &JobSpec) -> Vec<String> {
        job_spec(spec, &[BackendName::Docker])
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_minimal_job_is_valid() {
        assert_eq!(fields(&spec()), Vec::<String>::new());
    }

    #[test]
    fn names_are_dns_labels() {
        for bad in [
            "",
            "Orders",
            "orders_sync",
            "-orders",
            "orders-",
            &"a".repeat(64),
        ] {
            assert!(job_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "customer-a-orders", "x1", &"a".repeat(63)] {
            assert!(job_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = spec();
        s.name = "Bad Name".into();
        s.image = " ".into();
        s.env.insert("JOBDOCK_RUN_ID".into(), "x".into());
        s.env.insert("1X".into(), "x".into());
        s.secrets = Some([("TOKEN".to_string(), "v".to_string())].into());
        s.env.insert("TOKEN".into(), "x".into());
        s.max_parallel = Some(0);
        s.timeout_seconds = Some(-5);
        s.lock_keys = vec!["a".into(), "a".into()];
        s.backend = Some(BackendName::Nomad);
        s.pull_policy = Some(jobdock_types::PullPolicy::Never);
        s.resources = Some(jobdock_types::Resources {
            cpus: Some(0.0),
            memory_mb: Some(1),
        });
        let f = fields(&s);
        for want in [
            "name",
            "image",
            "env.JOBDOCK_RUN_ID",
            "env.1X",
            "env.TOKEN",
            "max_parallel",
            "timeout_seconds",
            "lock_keys[1]",
            "backend",
            "pull_policy",
            "resources.cpus",
            "resources.memory_mb",
        ] {
            assert!(f.contains(&want.to_string()), "{want} missing from {f:?}");
        }
    }
}
