//! The Kubernetes backend against an API-level fake (`kube_fake`) whose kubelet runs each
//! pod's command on the host: the conformance cases that fit a fake, then what only
//! Kubernetes has. `kube_by_hand` has the tests that move pods along by hand to check each
//! Kubernetes behaviour on the requests the fake received.
//!
//! The `#[ignore]`d `real_*` tests run the shared conformance suite against a real cluster
//! (the kubeconfig's current context, namespace `default`): `KUBECONFIG=~/.kube/config cargo
//! test -p jobdock-backends --test kubernetes -- --ignored` (they pull `busybox:1.36`).

mod conformance;
mod kube_by_hand;
mod kube_fake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use conformance::{texts, Ctx, Inspector, Target};
use futures::StreamExt;
use jobdock_backends::kubernetes::{KubernetesBackend, KubernetesConfig};
use jobdock_backends::{LogFrom, LogItem, LogStream, RunHandle};
use kube_fake::{FakeKube, Options};
use serde_json::Value;

/// Reads the Job as the cluster stores it, independently of the backend.
struct KubeInspector {
    jobs: kube::Api<k8s_openapi::api::batch::v1::Job>,
}

impl KubeInspector {
    async fn job(&self, handle: &RunHandle) -> Result<Value> {
        Ok(serde_json::to_value(
            self.jobs.get(&handle.backend_ref).await?,
        )?)
    }
}

#[async_trait]
impl Inspector for KubeInspector {
    async fn describe(&self, handle: &RunHandle) -> Result<String> {
        Ok(self.job(handle).await?.to_string())
    }

    async fn labels(&self, handle: &RunHandle) -> Result<BTreeMap<String, String>> {
        Ok(serde_json::from_value(
            self.job(handle).await?["metadata"]["labels"].clone(),
        )?)
    }

    async fn names(&self, handle: &RunHandle) -> Result<Vec<String>> {
        let job = self.job(handle).await?;
        ensure!(job["metadata"]["name"].is_string(), "no name");
        Ok(vec![job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()])
    }
}

/// A fake with a kubelet and a backend pointed at it.
async fn fake_target() -> Result<(FakeKube, Target)> {
    let fake = FakeKube::start(Options { kubelet: true }).await?;
    let backend = KubernetesBackend::with_client(fake.client(), KubernetesConfig::default())
        .with_poll_interval(Duration::from_millis(50));
    let target = Target {
        backend: Arc::new(backend),
        image: "busybox:1.36".into(),
        inspector: Arc::new(KubeInspector {
            jobs: kube::Api::default_namespaced(fake.client()),
        }),
        merged_streams: true,
    };
    Ok((fake, target))
}

/// Runs `case` against a fake with a kubelet, as a conformance case.
async fn with_fake<F, Fut>(case: F) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (_fake, target) = fake_target().await?;
    conformance::run(target, case).await
}

macro_rules! conformance_tests {
    ($($case:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $case() -> Result<()> {
            with_fake(conformance::$case).await
        }
    )+};
}

// Not here: `oom_kill_is_reported` (the fake cannot enforce a memory limit; see
// `a_container_killed_for_memory_is_reported_oom_killed`), `missing_image_fails_to_pull` (Kubernetes pulls
// after the Job is created, so a failed pull is an exit after `pending_timeout`, not a launch
// error; see `kube_by_hand::image_pull_backoff_pends_then_ends_the_run`).
conformance_tests!(
    exit_zero_is_success,
    exit_code_is_reported,
    stop_terminates_gracefully,
    stop_kills_after_grace,
    launch_is_idempotent,
    list_in_flight_finds_runs,
    cleanup_removes_and_is_idempotent,
    unknown_run_is_not_found,
    logs_are_complete_and_in_order,
    long_line_comes_back_whole,
    logs_resume_after_since,
    env_and_env_secrets_are_delivered,
    file_secrets_are_delivered_privately,
    identity_labels_are_set,
);

#[tokio::test]
async fn dollar_signs_reach_the_container_as_written() -> Result<()> {
    with_fake(|ctx| async move {
        let mut spec = ctx.spec("echo '$(SOURCE) costs $$5'; echo \"$PRICE\"");
        spec.env = vec![
            ("SOURCE".into(), "erp".into()),
            ("PRICE".into(), "$$5 $(SOURCE)".into()),
        ];
        let (_, exit, lines) = ctx.run_to_end(&spec).await?;
        ensure!(exit.exit_code == Some(0), "exit {exit:?}");
        let out = texts(&lines, LogStream::Stdout);
        ensure!(out == ["$(SOURCE) costs $$5", "$$5 $(SOURCE)"], "{out:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_run_past_its_deadline_is_killed_and_reported() -> Result<()> {
    with_fake(|ctx| async move {
        let mut spec = ctx.spec("sleep 300");
        spec.timeout = Some(Duration::from_secs(1));
        let started = std::time::Instant::now();
        // The Job controller deletes the pod, and its log with it: only the exit is left.
        let handle = ctx.backend.launch(&spec).await?;
        let exit = ctx.wait(&handle).await?;
        ensure!(exit.deadline_exceeded, "exit {exit:?}");
        let reason = exit.reason.clone().unwrap_or_default();
        ensure!(reason.starts_with("DeadlineExceeded"), "exit {exit:?}");
        let took = started.elapsed();
        ensure!(took < Duration::from_secs(30), "ended after {took:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_container_killed_for_memory_is_reported_oom_killed() -> Result<()> {
    with_fake(|ctx| async move {
        let (_, exit, _) = ctx
            .run_to_end(&ctx.spec(": fake:oom; kill -KILL $$"))
            .await?;
        ensure!(
            exit.oom_killed && exit.exit_code == Some(137),
            "exit {exit:?}"
        );
        let (_, exit, _) = ctx.run_to_end(&ctx.spec("kill -KILL $$")).await?;
        ensure!(
            !exit.oom_killed && exit.exit_code == Some(137),
            "exit {exit:?}"
        );
        Ok(())
    })
    .await
}

async fn real_target() -> Result<Target> {
    std::env::var("KUBECONFIG").context("KUBECONFIG is not set")?;
    let client = kube::Client::try_default().await?;
    let backend = KubernetesBackend::connect(KubernetesConfig {
        pending_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await?;
    Ok(Target {
        backend: Arc::new(backend),
        image: "busybox:1.36".into(),
        inspector: Arc::new(KubeInspector {
            jobs: kube::Api::default_namespaced(client),
        }),
        merged_streams: true,
    })
}

macro_rules! real_cluster_tests {
    ($($name:ident => $case:ident),+ $(,)?) => {$(
        #[tokio::test]
        #[ignore = "needs a Kubernetes cluster through KUBECONFIG"]
        async fn $name() -> Result<()> {
            conformance::run(real_target().await?, conformance::$case).await
        }
    )+};
}

// Not here: `missing_image_fails_to_pull` (Kubernetes pulls after the Job is created, so a
// failed pull is an exit after `pending_timeout`, not a launch error).
real_cluster_tests!(
    real_exit_zero_is_success => exit_zero_is_success,
    real_exit_code_is_reported => exit_code_is_reported,
    real_oom_kill_is_reported => oom_kill_is_reported,
    real_stop_terminates_gracefully => stop_terminates_gracefully,
    real_stop_kills_after_grace => stop_kills_after_grace,
    real_launch_is_idempotent => launch_is_idempotent,
    real_list_in_flight_finds_runs => list_in_flight_finds_runs,
    real_cleanup_removes_and_is_idempotent => cleanup_removes_and_is_idempotent,
    real_unknown_run_is_not_found => unknown_run_is_not_found,
    real_logs_are_complete_and_in_order => logs_are_complete_and_in_order,
    real_long_line_comes_back_whole => long_line_comes_back_whole,
    real_logs_resume_after_since => logs_resume_after_since,
    real_env_and_env_secrets_are_delivered => env_and_env_secrets_are_delivered,
    real_file_secrets_are_delivered_privately => file_secrets_are_delivered_privately,
    real_identity_labels_are_set => identity_labels_are_set,
);

/// The kubelet rotates the log every 64 KiB and serves only the current file: a read that
/// resumes from a line written before the rotations hears of the gap first, then gets the
/// current file's lines, in order and once, to the end.
#[tokio::test]
async fn a_resumed_read_after_rotation_reports_the_gap() -> Result<()> {
    let (fake, target) = fake_target().await?;
    fake.world().container_log_max_size = Some(64 * 1024);
    conformance::run(target, |ctx: Ctx| async move {
        const N: u64 = 20_000;
        let script = format!(
            "echo first; sleep 1; awk 'BEGIN {{ for (i = 1; i <= {N}; i++) printf \"out %07d\\n\", i }}'"
        );
        let handle = ctx.backend.launch(&ctx.spec(&script)).await?;
        let mut stream = ctx.backend.logs(&handle, &LogFrom::start());
        let first = match stream.next().await.context("no output")?? {
            LogItem::Line(l) => l,
            LogItem::Gap(g) => anyhow::bail!("a gap in a fresh read: {g:?}"),
        };
        ensure!(first.line == "first", "{first:?}");
        drop(stream);
        ctx.wait(&handle).await?;

        let had = LogFrom {
            since: Some(first.ts),
            stdout: first.cursor.clone(),
            stderr: None,
        };
        let (rest, gaps) = ctx.items_from(&handle, &had).await?;
        ensure!(gaps.len() == 1, "{gaps:?}");
        ensure!(
            gaps[0].after == Some(first.ts) && gaps[0].before > Some(first.ts),
            "{gaps:?}"
        );
        let (out, _) = conformance::numbers(&rest)?;
        let from = *out.first().context("nothing after the gap")?;
        ensure!(from > 1, "the current file cannot hold the first lines");
        conformance::exactly(&out, from, N, 1).context("stdout after the gap")?;
        Ok(())
    })
    .await
}

/// Without rotation in the way, a resumed read gets exactly the lines after its point, and
/// no gap.
#[tokio::test]
async fn a_resumed_read_within_the_current_file_has_no_gap() -> Result<()> {
    let (fake, target) = fake_target().await?;
    fake.world().container_log_max_size = Some(10 << 20);
    conformance::run(target, |ctx: Ctx| async move {
        let script = "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo \"line $i\"; done";
        let (handle, _, all) = ctx.run_to_end(&ctx.spec(script)).await?;
        let had = LogFrom {
            since: Some(all[9].ts),
            stdout: all[9].cursor.clone(),
            stderr: None,
        };
        let (rest, gaps) = ctx.items_from(&handle, &had).await?;
        ensure!(gaps.is_empty(), "{gaps:?}");
        ensure!(texts(&rest, LogStream::Stdout) == texts(&all[10..], LogStream::Stdout));
        Ok(())
    })
    .await
}
