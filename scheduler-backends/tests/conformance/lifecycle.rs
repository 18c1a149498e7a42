//! Cases on a run's life: exit codes, OOM, stopping, idempotent launch, finding runs again,
//! cleanup and unknown runs.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use jobdock_backends::{BackendError, LogStream, RunHandle, TaskState};

use super::{texts, Ctx};

/// A command that exits 0 is reported as such, with sensible timestamps.
pub async fn exit_zero_is_success(ctx: Ctx) -> Result<()> {
    let spec = ctx.spec("exit 0");
    let (handle, exit, _) = ctx.run_to_end(&spec).await?;
    ensure!(exit.exit_code == Some(0), "exit {exit:?}");
    ensure!(!exit.oom_killed && !exit.deadline_exceeded, "exit {exit:?}");
    let (started, finished) = (exit.started_at, exit.finished_at);
    ensure!(started.is_some() && finished >= started, "times {exit:?}");
    ensure!(handle.run_id == spec.run_id && handle.attempt == 1);
    let state = ctx.backend.state(&handle).await?;
    ensure!(
        state == TaskState::Exited(exit.clone()),
        "state {state:?} vs {exit:?}"
    );
    Ok(())
}

/// A non-zero exit code comes back exactly.
pub async fn exit_code_is_reported(ctx: Ctx) -> Result<()> {
    let (handle, exit, _) = ctx.run_to_end(&ctx.spec("exit 3")).await?;
    ensure!(exit.exit_code == Some(3), "exit {exit:?}");
    ensure!(!exit.oom_killed, "exit {exit:?}");
    match ctx.backend.state(&handle).await? {
        TaskState::Exited(e) => ensure!(e.exit_code == Some(3), "state exit {e:?}"),
        other => anyhow::bail!("state {other:?}"),
    }
    Ok(())
}

/// A run that allocates past its memory limit is killed and reported as OOM-killed.
pub async fn oom_kill_is_reported(ctx: Ctx) -> Result<()> {
    // `exec`: the allocating process must be the container's main one, as in a real job.
    // Alive a moment before it runs out of memory: a container killed within milliseconds
    // of its start can die before containerd watches its cgroup for OOM events, and then
    // nothing reports the OOM kill (seen under load). Real scripts take longer to start.
    let mut spec = ctx.spec("sleep 1; exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    spec.resources.memory_bytes = Some(16 << 20);
    let (_, exit, _) = ctx.run_to_end(&spec).await?;
    ensure!(exit.oom_killed, "not reported as OOM: {exit:?}");
    ensure!(
        exit.exit_code == Some(137),
        "not killed by SIGKILL: {exit:?}"
    );
    ensure!(exit.reason.is_some(), "no reason: {exit:?}");
    Ok(())
}

/// `stop` sends SIGTERM: a process that exits on it stops well before the grace ends.
pub async fn stop_terminates_gracefully(ctx: Ctx) -> Result<()> {
    let spec = ctx.spec("trap 'echo got TERM; exit 0' TERM; echo ready; sleep 300 & wait");
    let handle = ctx.backend.launch(&spec).await?;
    ctx.wait_for_line(&handle, "ready").await?;
    let started = Instant::now();
    ctx.backend.stop(&handle, Duration::from_secs(30)).await?;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(15), "stop took {took:?}");
    let exit = match ctx.backend.state(&handle).await? {
        TaskState::Exited(exit) => exit,
        other => anyhow::bail!("not stopped once stop returned: {other:?}"),
    };
    ensure!(exit.exit_code == Some(0), "exit {exit:?}");
    let lines = ctx.logs(&handle, None).await?;
    ensure!(
        texts(&lines, LogStream::Stdout).contains(&"got TERM"),
        "{lines:?}"
    );
    // Stopping what has already stopped is not an error.
    ctx.backend.stop(&handle, Duration::from_secs(1)).await?;
    Ok(())
}

/// A process that traps SIGTERM and carries on is killed once the grace is over.
pub async fn stop_kills_after_grace(ctx: Ctx) -> Result<()> {
    let spec = ctx.spec("trap 'echo got TERM' TERM; echo ready; while true; do sleep 1; done");
    let handle = ctx.backend.launch(&spec).await?;
    ctx.wait_for_line(&handle, "ready").await?;
    let started = Instant::now();
    ctx.backend.stop(&handle, Duration::from_secs(2)).await?;
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(1500),
        "grace not honoured: {took:?}"
    );
    ensure!(took < Duration::from_secs(30), "stop took {took:?}");
    let exit = match ctx.backend.state(&handle).await? {
        TaskState::Exited(exit) => exit,
        other => anyhow::bail!("not stopped once stop returned: {other:?}"),
    };
    ensure!(exit.exit_code == Some(137), "not killed: {exit:?}");
    let lines = ctx.logs(&handle, None).await?;
    ensure!(
        texts(&lines, LogStream::Stdout).contains(&"got TERM"),
        "{lines:?}"
    );
    Ok(())
}

/// Launching the same attempt again, in turn or at once, returns the same run and never
/// starts a second container.
pub async fn launch_is_idempotent(ctx: Ctx) -> Result<()> {
    let spec = ctx.spec("echo started; sleep 1");
    let first = ctx.backend.launch(&spec).await?;
    let again = ctx.backend.launch(&spec).await?;
    ensure!(first == again, "{first:?} vs {again:?}");

    let other = ctx.spec("echo started; sleep 1");
    let (a, b) = tokio::join!(ctx.backend.launch(&other), ctx.backend.launch(&other));
    ensure!(a? == b?, "concurrent launches gave different runs");

    for s in [&spec, &other] {
        let handle = ctx.backend.launch(s).await?;
        ctx.wait(&handle).await?;
        // Once it has ended, a launch must not start it again either.
        ensure!(ctx.backend.launch(s).await? == handle);
        let lines = ctx.logs(&handle, None).await?;
        let starts = texts(&lines, LogStream::Stdout)
            .iter()
            .filter(|l| **l == "started")
            .count();
        ensure!(starts == 1, "started {starts} times");
        let runs = ctx.backend.list_in_flight(&ctx.installation_id).await?;
        let count = runs.iter().filter(|r| r.handle.run_id == s.run_id).count();
        ensure!(count == 1, "{count} runs for one attempt");
    }
    Ok(())
}

/// Runs are found again by installation id, with their job, and only by it.
pub async fn list_in_flight_finds_runs(ctx: Ctx) -> Result<()> {
    let mut first = ctx.spec("sleep 300");
    first.job = "first-job".into();
    let mut second = ctx.spec("exit 0");
    second.job = "second-job".into();
    let h1 = ctx.backend.launch(&first).await?;
    let h2 = ctx.backend.launch(&second).await?;
    ctx.wait(&h2).await?;

    let mut found = ctx.backend.list_in_flight(&ctx.installation_id).await?;
    found.sort_by(|a, b| a.job.cmp(&b.job));
    let summary: Vec<_> = found.iter().map(|r| (r.job.as_str(), &r.handle)).collect();
    ensure!(
        summary == [("first-job", &h1), ("second-job", &h2)],
        "found {found:?}"
    );
    let elsewhere = ctx
        .backend
        .list_in_flight(&super::unique_value("other"))
        .await?;
    ensure!(
        elsewhere.is_empty(),
        "another installation sees {elsewhere:?}"
    );
    Ok(())
}

/// Cleanup removes the run, running or not, and can be repeated; afterwards the run is
/// unknown to every method.
pub async fn cleanup_removes_and_is_idempotent(ctx: Ctx) -> Result<()> {
    let ended = ctx.backend.launch(&ctx.spec("exit 0")).await?;
    ctx.wait(&ended).await?;
    let running = ctx.backend.launch(&ctx.spec("sleep 300")).await?;
    ctx.state_until(&running, |s| matches!(s, TaskState::Running { .. }))
        .await?;

    for handle in [&ended, &running] {
        ctx.backend.cleanup(handle).await?;
        ctx.backend.cleanup(handle).await?;
        let state = ctx.backend.state(handle).await?;
        ensure!(
            state == TaskState::NotFound,
            "state after cleanup {state:?}"
        );
        let waited = ctx.backend.wait(handle).await;
        ensure!(
            matches!(waited, Err(BackendError::NotFound(_))),
            "wait after cleanup {waited:?}"
        );
        ctx.backend.stop(handle, Duration::from_secs(1)).await?;
    }
    let left = ctx.backend.list_in_flight(&ctx.installation_id).await?;
    ensure!(left.is_empty(), "left after cleanup: {left:?}");
    Ok(())
}

/// An image that is not local and cannot be pulled fails the launch with `ImagePull`.
pub async fn missing_image_fails_to_pull(ctx: Ctx) -> Result<()> {
    let mut spec = ctx.spec("exit 0");
    spec.image = format!("jobdock-test/missing-{}:1", uuid::Uuid::new_v4().simple());
    match ctx.backend.launch(&spec).await {
        Err(BackendError::ImagePull { image, message }) => {
            ensure!(image == spec.image, "image {image}");
            ensure!(!message.trim().is_empty(), "no message from the daemon");
        }
        other => anyhow::bail!("expected ImagePull, got {other:?}"),
    }
    let left = ctx.backend.list_in_flight(&ctx.installation_id).await?;
    ensure!(left.is_empty(), "a failed launch left {left:?}");
    Ok(())
}

/// A handle the backend never issued is `NotFound`, and cleaning it up is a no-op.
pub async fn unknown_run_is_not_found(ctx: Ctx) -> Result<()> {
    let handle = RunHandle {
        run_id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        backend_ref: format!("jobdock-unknown-{}", uuid::Uuid::new_v4().simple()),
    };
    let state = ctx.backend.state(&handle).await?;
    ensure!(state == TaskState::NotFound, "state {state:?}");
    ctx.backend.cleanup(&handle).await?;
    Ok(())
}
