//! The Docker backend against the real local daemon: the conformance suite, then what only
//! Docker has (host config, the secrets directory, adopting a half-launched container).
//!
//! Needs a Docker daemon and `/bin/busybox` from `busybox-static`; no registry.

mod conformance;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use async_trait::async_trait;
use conformance::{Ctx, Inspector, Target};
use jobdock_backends::docker::{DockerBackend, DockerConfig};
use jobdock_backends::{LogStream, RunHandle, SecretDelivery, TaskState};
use serde_json::Value;

/// Reads what Docker stores through the `docker` CLI, independently of the backend.
struct DockerCli;

impl DockerCli {
    async fn inspect(&self, handle: &RunHandle) -> Result<Value> {
        let out = docker(&["inspect", &handle.backend_ref]).await?;
        let mut all: Vec<Value> = serde_json::from_str(&out)?;
        all.pop().context("docker inspect returned nothing")
    }
}

#[async_trait]
impl Inspector for DockerCli {
    async fn describe(&self, handle: &RunHandle) -> Result<String> {
        docker(&["inspect", &handle.backend_ref]).await
    }

    async fn labels(&self, handle: &RunHandle) -> Result<BTreeMap<String, String>> {
        let labels = self.inspect(handle).await?["Config"]["Labels"].clone();
        Ok(serde_json::from_value(labels)?)
    }

    async fn names(&self, handle: &RunHandle) -> Result<Vec<String>> {
        let name = self.inspect(handle).await?["Name"]
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

async fn target_with(config: DockerConfig) -> Result<Target> {
    let image = tokio::task::spawn_blocking(jobdock_testkit::images::busybox_image).await??;
    Ok(Target {
        backend: Arc::new(DockerBackend::connect(config).await?),
        image,
        inspector: Arc::new(DockerCli),
        merged_streams: false,
    })
}

async fn target() -> Result<Target> {
    target_with(DockerConfig::default()).await
}

macro_rules! conformance_tests {
    ($($case:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $case() -> Result<()> {
            conformance::run(target().await?, conformance::$case).await
        }
    )+};
}

conformance_tests!(
    exit_zero_is_success,
    exit_code_is_reported,
    oom_kill_is_reported,
    stop_terminates_gracefully,
    stop_kills_after_grace,
    launch_is_idempotent,
    list_in_flight_finds_runs,
    cleanup_removes_and_is_idempotent,
    missing_image_fails_to_pull,
    unknown_run_is_not_found,
    logs_are_complete_and_in_order,
    long_line_comes_back_whole,
    logs_resume_after_since,
    env_and_env_secrets_are_delivered,
    file_secrets_are_delivered_privately,
    identity_labels_are_set,
);

#[tokio::test]
async fn health_names_daemon_and_api_version() -> Result<()> {
    let health = target().await?.backend.health().await;
    ensure!(health.ok, "{health:?}");
    ensure!(health.detail.starts_with("docker "), "{}", health.detail);
    ensure!(health.detail.contains("(API 1."), "{}", health.detail);
    Ok(())
}

/// Limits, user, network and hardening land in the container's host config, and the
/// configured defaults fill what the spec leaves out.
#[tokio::test]
async fn host_config_is_hardened_and_limited() -> Result<()> {
    let config = DockerConfig {
        default_memory_bytes: Some(48 << 20),
        ..DockerConfig::default()
    };
    conformance::run(target_with(config).await?, |ctx: Ctx| async move {
        let mut spec = ctx.spec("exit 0");
        spec.resources.cpus = Some(0.5);
        spec.user = Some("65534".into());
        let limited = ctx.backend.launch(&spec).await?;
        let defaulted = ctx.backend.launch(&ctx.spec("exit 0")).await?;

        let info = DockerCli.inspect(&limited).await?;
        let host = &info["HostConfig"];
        ensure!(
            host["SecurityOpt"] == serde_json::json!(["no-new-privileges"]),
            "{host}"
        );
        ensure!(host["NanoCpus"] == 500_000_000, "{host}");
        ensure!(host["NetworkMode"] == "bridge", "{host}");
        ensure!(info["Config"]["User"] == "65534", "{info}");
        let name = format!("/jobdock-{}-1", spec.run_id);
        ensure!(info["Name"] == name.as_str(), "{}", info["Name"]);

        let host = DockerCli.inspect(&defaulted).await?["HostConfig"].clone();
        ensure!(host["Memory"] == 48 << 20, "{host}");
        ensure!(
            host["MemorySwap"] == 48 << 20,
            "swap must equal memory: {host}"
        );
        Ok(())
    })
    .await
}

/// File secrets live in a private directory on `/dev/shm` while the run exists, and go with
/// its cleanup.
#[tokio::test]
async fn secret_files_live_on_tmpfs_until_cleanup() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let mut spec = ctx.spec("exit 0");
        spec.secrets = vec![jobdock_backends::Secret {
            name: "TOKEN".into(),
            value: secrecy::SecretString::from("file-secret-value"),
        }];
        spec.secret_delivery = SecretDelivery::Files;
        let handle = ctx.backend.launch(&spec).await?;
        ctx.wait(&handle).await?;

        let dir = PathBuf::from(format!("/dev/shm/jobdock/{}-1", spec.run_id));
        let file = std::fs::metadata(dir.join("TOKEN")).context("secret file missing")?;
        ensure!(file.mode() & 0o777 == 0o400, "mode {:o}", file.mode());
        let parent = std::fs::metadata("/dev/shm/jobdock")?;
        ensure!(
            parent.mode() & 0o777 == 0o700,
            "parent mode {:o}",
            parent.mode()
        );

        ctx.backend.cleanup(&handle).await?;
        ensure!(!dir.exists(), "{} left after cleanup", dir.display());
        ctx.backend.cleanup(&handle).await?;
        Ok(())
    })
    .await
}

/// A launch interrupted between create and start (an engine crash) is completed by the
/// next launch, which starts the existing container instead of creating another.
#[tokio::test]
async fn launch_starts_a_container_left_created() -> Result<()> {
    conformance::run(target().await?, |ctx: Ctx| async move {
        let spec = ctx.spec("echo started");
        let name = format!("jobdock-{}-1", spec.run_id);
        let mut args = vec!["create".to_owned(), "--name".into(), name.clone()];
        for (k, v) in spec.identity_labels() {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend([
            spec.image.clone(),
            "sh".into(),
            "-c".into(),
            "echo started".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let created = docker(&refs).await?.trim().to_owned();

        let handle = ctx.backend.launch(&spec).await?;
        ensure!(handle.backend_ref == created, "{handle:?} vs {created}");
        ensure!(ctx.wait(&handle).await?.exit_code == Some(0));
        let lines = ctx.logs(&handle, None).await?;
        ensure!(
            conformance::texts(&lines, LogStream::Stdout) == ["started"],
            "{lines:?}"
        );
        Ok(())
    })
    .await
}

/// With `keep_failed`, cleanup keeps a failed container for inspection but not a
/// successful one.
#[tokio::test]
async fn keep_failed_keeps_only_failed_containers() -> Result<()> {
    let config = DockerConfig {
        keep_failed: true,
        ..DockerConfig::default()
    };
    conformance::run(target_with(config).await?, |ctx: Ctx| async move {
        let failed = ctx.backend.launch(&ctx.spec("exit 3")).await?;
        let succeeded = ctx.backend.launch(&ctx.spec("exit 0")).await?;
        ctx.wait(&failed).await?;
        ctx.wait(&succeeded).await?;
        ctx.backend.cleanup(&failed).await?;
        ctx.backend.cleanup(&succeeded).await?;

        let kept = ctx.backend.state(&failed).await?;
        // Removed by hand before checking, so that a failed check leaves nothing behind.
        docker(&["rm", "-f", &failed.backend_ref]).await?;
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
