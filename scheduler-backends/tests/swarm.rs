//! The Swarm backend against the real local daemon made a one-node swarm: the conformance
//! suite, then what only Swarm does (secrets as swarm secrets, also for env delivery; the
//! service spec; a failed pull as the run's end; finding runs with a fresh backend).
//!
//! Needs a Docker daemon that is (or may become) a swarm manager, and `/bin/busybox` from
//! `busybox-static`; no registry.

mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use async_trait::async_trait;
use conformance::{unique_value, Ctx, Inspector, Target};
use jobdock_backends::swarm::{SwarmBackend, SwarmConfig};
use jobdock_backends::{
    Backend, LaunchSpec, LogStream, RunHandle, Secret, SecretDelivery, TaskState,
};
use secrecy::SecretString;
use serde_json::Value;

/// Reads what the swarm stores through the `docker` CLI, independently of the backend.
struct SwarmCli;

impl SwarmCli {
    async fn inspect(&self, handle: &RunHandle) -> Result<Value> {
        let out = docker(&["service", "inspect", &handle.backend_ref]).await?;
        let mut all: Vec<Value> = serde_json::from_str(&out)?;
        all.pop().context("docker service inspect returned nothing")
    }
}

#[async_trait]
impl Inspector for SwarmCli {
    /// The service and its tasks, as `docker service inspect` and `docker inspect` show them.
    async fn describe(&self, handle: &RunHandle) -> Result<String> {
        let service = docker(&["service", "inspect", &handle.backend_ref]).await?;
        let tasks = docker(&["service", "ps", "-q", "--no-trunc", &handle.backend_ref]).await?;
        let mut args = vec!["inspect"];
        args.extend(tasks.split_whitespace());
        let tasks = if args.len() > 1 {
            docker(&args).await?
        } else {
            String::new()
        };
        Ok(format!("{service}\n{tasks}"))
    }

    async fn labels(&self, handle: &RunHandle) -> Result<BTreeMap<String, String>> {
        let labels = self.inspect(handle).await?["Spec"]["Labels"].clone();
        Ok(serde_json::from_value(labels)?)
    }

    async fn names(&self, handle: &RunHandle) -> Result<Vec<String>> {
        let name = self.inspect(handle).await?["Spec"]["Name"]
            .as_str()
            .map(str::to_owned);
        Ok(name.into_iter().collect())
    }
}

/// Runs `docker <args>` and returns its output.
async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The names of the swarm secrets of one run.
async fn secrets_of(run_id: &str) -> Result<Vec<String>> {
    let filter = format!("label=dev.jobdock.run-id={run_id}");
    let out = docker(&["secret", "ls", "--filter", &filter, "--format", "{{.Name}}"]).await?;
    Ok(out.lines().map(str::to_owned).collect())
}

async fn backend(config: SwarmConfig) -> Result<SwarmBackend> {
    tokio::task::spawn_blocking(jobdock_testkit::swarm::ensure_swarm).await??;
    SwarmBackend::detect(config)
        .await?
        .context("the daemon is a swarm manager, yet detect found none")
}

async fn target_with(config: SwarmConfig) -> Result<Target> {
    let image = tokio::task::spawn_blocking(jobdock_testkit::images::busybox_image).await??;
    Ok(Target {
        backend: Arc::new(backend(config).await?),
        image,
        inspector: Arc::new(SwarmCli),
        merged_streams: false,
    })
}

async fn target() -> Result<Target> {
    target_with(SwarmConfig::default()).await
}

macro_rules! conformance_tests {
    ($($case:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $case() -> Result<()> {
            conformance::run(target().await?, conformance::$case).await
        }
    )+};
}

// Not run here: `env_and_env_secrets_are_delivered` (secrets are files on Swarm whatever the
// delivery: `env_secrets_arrive_as_files`).
conformance_tests!(
    missing_image_fails_to_pull,
    exit_zero_is_success,
    exit_code_is_reported,
    oom_kill_is_reported,
    stop_terminates_gracefully,
    stop_kills_after_grace,
    launch_is_idempotent,
    list_in_flight_finds_runs,
    cleanup_removes_and_is_idempotent,
    unknown_run_is_not_found,
    logs_are_complete_and_in_order,
    long_line_comes_back_whole,
    logs_resume_after_since,
    file_secrets_are_delivered_privately,
    identity_labels_are_set,
);

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        name: name.into(),
        value: SecretString::from(value.to_owned()),
    }
}

#[tokio::test]
async fn health_names_swarm_and_api_version() -> Result<()> {
    let health = target().await?.backend.health().await;
    ensure!(health.ok, "{health:?}");
    ensure!(
        health.detail.starts_with("docker swarm "),
        "{}",
        health.detail
    );
    ensure!(health.detail.contains("(API 1."), "{}", health.detail);
    Ok(())
}

/// A secret asked for as a variable arrives as `/run/secrets/KEY`, not in the environment,
/// and shows nowhere in what the swarm stores about the service and its task.
#[tokio::test]
async fn env_secrets_arrive_as_files() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let token = unique_value("token");
        let mut spec = ctx.spec("cat /run/secrets/TOKEN; echo; echo \"env=${TOKEN:-unset}\"");
        spec.env = vec![("GREETING".into(), "hello".into())];
        spec.secrets = vec![secret("TOKEN", &token)];
        spec.secret_delivery = SecretDelivery::Env;
        let (handle, exit, lines) = ctx.run_to_end(&spec).await?;
        ensure!(exit.exit_code == Some(0), "exit {exit:?}, {lines:?}");
        let out = conformance::texts(&lines, LogStream::Stdout);
        ensure!(out == [token.as_str(), "env=unset"], "output {out:?}");
        let described = ctx.inspector.describe(&handle).await?;
        ensure!(described.contains("GREETING=hello"), "inspect shows no env");
        ensure!(
            !described.contains(&token),
            "secret value in docker service inspect"
        );
        Ok(())
    })
    .await
}

/// Cleanup removes the service and every swarm secret of the run, and can be repeated.
#[tokio::test]
async fn cleanup_removes_service_and_secrets() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let mut spec = ctx.spec("sleep 300");
        let long_key = "A_SECRET_KEY_TOO_LONG_FOR_A_SWARM_SECRET_NAME";
        spec.secrets = vec![secret("TOKEN", "t"), secret(long_key, "p")];
        let handle = ctx.backend.launch(&spec).await?;
        // Also a run launched just now, whose task has not started: once its service is
        // removed, the swarm still starts it (moby/moby#44312), and cleanup must see to that.
        let fresh = ctx.backend.launch(&ctx.spec("sleep 300")).await?;
        ctx.backend.cleanup(&fresh).await?;
        let filter = format!("label=dev.jobdock.run-id={}", fresh.run_id);
        let containers = docker(&["ps", "-aq", "--filter", &filter]).await?;
        ensure!(
            containers.trim().is_empty(),
            "fresh run's container left: {containers}"
        );
        ctx.state_until(&handle, |s| matches!(s, TaskState::Running { .. }))
            .await?;
        let mut names = secrets_of(&spec.run_id).await?;
        names.sort();
        ensure!(names.len() == 2, "secrets {names:?}");
        ensure!(names.iter().all(|n| n.len() <= 64), "{names:?}");
        ensure!(
            names.contains(&format!("jobdock-{}-1-TOKEN", spec.run_id)),
            "{names:?}"
        );

        ctx.backend.cleanup(&handle).await?;
        ctx.backend.cleanup(&handle).await?;
        let left = secrets_of(&spec.run_id).await?;
        ensure!(left.is_empty(), "secrets left after cleanup: {left:?}");
        let service = docker(&["service", "inspect", &handle.backend_ref]).await;
        ensure!(service.is_err(), "service left after cleanup");
        // Removing a job's service leaves its container running (moby/moby#44312).
        let filter = format!("label=dev.jobdock.run-id={}", spec.run_id);
        let containers = docker(&["ps", "-aq", "--filter", &filter]).await?;
        ensure!(
            containers.trim().is_empty(),
            "container left after cleanup: {containers}"
        );
        Ok(())
    })
    .await
}

/// Two launches of one attempt make one service and one set of secrets.
#[tokio::test]
async fn launching_twice_makes_one_service() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let mut spec = ctx.spec("exit 0");
        spec.secrets = vec![secret("TOKEN", "t")];
        let (a, b) = tokio::join!(ctx.backend.launch(&spec), ctx.backend.launch(&spec));
        let (a, b) = (a?, b?);
        ensure!(a == b, "{a:?} vs {b:?}");
        ensure!(ctx.backend.launch(&spec).await? == a);
        let filter = format!("label=dev.jobdock.run-id={}", spec.run_id);
        let services = docker(&["service", "ls", "-q", "--filter", &filter]).await?;
        ensure!(services.lines().count() == 1, "services: {services}");
        ensure!(
            secrets_of(&spec.run_id).await?.len() == 1,
            "secrets duplicated"
        );
        ctx.wait(&a).await?;
        Ok(())
    })
    .await
}

/// Without the engine's own pull first (`if_not_present`), the node pulls: an image no node
/// has and no registry serves ends the run with a reason that says so, instead of leaving
/// it pending.
#[tokio::test]
async fn missing_image_ends_the_run_with_a_reason() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let mut spec = ctx.spec("exit 0");
        spec.image = format!("jobdock-test/missing-{}:1", uuid::Uuid::new_v4().simple());
        spec.pull_policy = Some(jobdock_backends::PullPolicy::IfNotPresent);
        let handle = ctx.backend.launch(&spec).await?;
        let exit = ctx.wait(&handle).await?;
        ensure!(exit.exit_code.is_none(), "exit {exit:?}");
        let reason = exit.reason.clone().unwrap_or_default();
        ensure!(reason.contains(&spec.image), "reason {reason:?}");
        ensure!(reason.contains("could not be pulled"), "reason {reason:?}");
        ensure!(ctx.backend.state(&handle).await? == TaskState::Exited(exit));
        Ok(())
    })
    .await
}

/// The service is a one-shot job with the limits, the default memory and the user, and the
/// secret files carry the numeric user.
#[tokio::test]
async fn service_is_a_limited_one_shot_job() -> Result<()> {
    let config = SwarmConfig {
        default_memory_bytes: Some(48 << 20),
        ..SwarmConfig::default()
    };
    conformance::run(target_with(config).await?, |ctx: Ctx| async move {
        let mut limited = ctx.spec("exit 0");
        limited.resources.cpus = Some(0.5);
        limited.user = Some("65534:65534".into());
        limited.secrets = vec![secret("TOKEN", "t")];
        let handle = ctx.backend.launch(&limited).await?;
        let defaulted = ctx.backend.launch(&ctx.spec("exit 0")).await?;

        let spec = SwarmCli.inspect(&handle).await?["Spec"].clone();
        ensure!(spec["Name"] == format!("jobdock-{}-1", limited.run_id).as_str());
        let job = &spec["Mode"]["ReplicatedJob"];
        ensure!(
            job["MaxConcurrent"] == 1 && job["TotalCompletions"] == 1,
            "{spec}"
        );
        let task = &spec["TaskTemplate"];
        ensure!(task["RestartPolicy"]["Condition"] == "none", "{task}");
        ensure!(
            task["Resources"]["Limits"]["NanoCPUs"] == 500_000_000,
            "{task}"
        );
        let container = &task["ContainerSpec"];
        ensure!(container["User"] == "65534:65534", "{container}");
        let file = &container["Secrets"][0]["File"];
        ensure!(file["Name"] == "TOKEN" && file["UID"] == "65534", "{file}");
        ensure!(file["Mode"] == 0o400, "{file}");

        let spec = SwarmCli.inspect(&defaulted).await?["Spec"].clone();
        let limits = &spec["TaskTemplate"]["Resources"]["Limits"];
        ensure!(limits["MemoryBytes"] == 48 << 20, "{limits}");
        ctx.wait(&handle).await?;
        ctx.wait(&defaulted).await?;
        Ok(())
    })
    .await
}

/// A backend made after a restart finds the run by its installation and follows it to the end.
#[tokio::test]
async fn a_new_backend_rediscovers_and_follows_a_run() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let mut spec: LaunchSpec = ctx.spec("echo one; sleep 1; echo two");
        spec.job = "rediscovered".into();
        let handle = ctx.backend.launch(&spec).await?;

        let fresh = backend(SwarmConfig::default()).await?;
        let found = fresh.list_in_flight(&ctx.installation_id).await?;
        ensure!(found.len() == 1, "found {found:?}");
        ensure!(found[0].handle == handle && found[0].job == "rediscovered");
        let exit = fresh.wait(&found[0].handle).await?;
        ensure!(exit.exit_code == Some(0), "{exit:?}");
        let lines = ctx.logs(&found[0].handle, None).await?;
        ensure!(
            conformance::texts(&lines, LogStream::Stdout) == ["one", "two"],
            "{lines:?}"
        );
        Ok(())
    })
    .await
}

/// With `keep_failed`, cleanup keeps a failed service (and its secrets) but not a successful one.
#[tokio::test]
async fn keep_failed_keeps_only_failed_services() -> Result<()> {
    let config = SwarmConfig {
        keep_failed: true,
        ..SwarmConfig::default()
    };
    conformance::run(target_with(config).await?, |ctx: Ctx| async move {
        let failed = ctx.backend.launch(&ctx.spec("exit 3")).await?;
        let succeeded = ctx.backend.launch(&ctx.spec("exit 0")).await?;
        ctx.wait(&failed).await?;
        ctx.wait(&succeeded).await?;
        ctx.backend.cleanup(&failed).await?;
        ctx.backend.cleanup(&succeeded).await?;

        let kept = ctx.backend.state(&failed).await?;
        // Removed before checking, so that a failed check leaves nothing behind.
        backend(SwarmConfig::default())
            .await?
            .cleanup(&failed)
            .await?;
        ensure!(
            matches!(kept, TaskState::Exited(_)),
            "failed run not kept: {kept:?}"
        );
        let gone = ctx.backend.state(&succeeded).await?;
        ensure!(gone == TaskState::NotFound, "successful run kept: {gone:?}");
        Ok(())
    })
    .await
}

/// The task's container is attached to as soon as it exists, so a chatty run's output
/// arrives whole although its driver rotates every megabyte.
#[tokio::test]
async fn every_line_arrives_under_rotation() -> Result<()> {
    conformance::run(
        target().await?,
        conformance::every_line_arrives_under_rotation,
    )
    .await
}
