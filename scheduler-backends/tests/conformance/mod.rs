//! The conformance suite every backend must pass, written once against the `Backend` trait.
//!
//! A backend's test file builds a [`Target`] (the backend, a busybox-like image, and an
//! [`Inspector`] that shows what the scheduler stores) and runs each case through [`run`],
//! which gives the case its own installation id and removes whatever the case left behind.

// Each backend's test file runs the cases it supports; the others are unused there.
#![allow(dead_code)]

mod lifecycle;
mod output;
mod secrets;
mod volume;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use jobdock_backends::{
    Backend, Exit, LaunchSpec, LogFrom, LogGap, LogItem, LogLine, LogStream, Resources, RunHandle,
    SecretDelivery, TaskState,
};

pub use lifecycle::*;
pub use output::*;
pub use secrets::*;
#[allow(unused_imports)]
pub use volume::*;

/// Generous bound for anything a healthy scheduler does in seconds; it only keeps a broken
/// backend from hanging the suite.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// What the scheduler stores about a run, seen from outside the backend under test: used to
/// check labels and that no secret value leaks into the scheduler's own records.
#[async_trait]
pub trait Inspector: Send + Sync {
    /// Everything someone with API access can read about the run (e.g. `docker inspect`).
    async fn describe(&self, handle: &RunHandle) -> Result<String>;
    /// The labels the scheduler holds for the run's object.
    async fn labels(&self, handle: &RunHandle) -> Result<BTreeMap<String, String>>;
    /// The names the scheduler shows for it (container, service, Job...).
    async fn names(&self, handle: &RunHandle) -> Result<Vec<String>>;
}

/// An inspector for cases that look only at what the backend itself gives.
pub struct Unseen;

#[async_trait]
impl Inspector for Unseen {
    async fn describe(&self, _: &RunHandle) -> Result<String> {
        Ok(String::new())
    }
    async fn labels(&self, _: &RunHandle) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }
    async fn names(&self, _: &RunHandle) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A backend to put through the suite.
#[derive(Clone)]
pub struct Target {
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    /// An image with busybox's `sh`, `sleep`, `dd`, `cat`, `head`, `tr`.
    pub image: String,
    /// A view on the scheduler that does not go through the backend.
    pub inspector: Arc<dyn Inspector>,
    /// The backend's log merges stderr into stdout (Kubernetes' pod log does): every line
    /// comes tagged stdout, and the cases tell the streams apart by what they wrote.
    pub merged_streams: bool,
}

/// What a case gets: the target and an installation id of its own, so that cases running in
/// parallel never see each other's runs.
#[derive(Clone)]
pub struct Ctx {
    /// The backend under test.
    pub backend: Arc<dyn Backend>,
    /// See [`Target::image`].
    pub image: String,
    /// See [`Target::inspector`].
    pub inspector: Arc<dyn Inspector>,
    /// See [`Target::merged_streams`].
    pub merged_streams: bool,
    /// This case's installation id.
    pub installation_id: String,
}

/// Runs one case, then removes every run of its installation, even when it failed or
/// panicked, so that a failing case leaves no containers behind.
pub async fn run<F, Fut>(target: Target, case: F) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let ctx = Ctx {
        backend: target.backend,
        image: target.image,
        inspector: target.inspector,
        merged_streams: target.merged_streams,
        installation_id: format!("conformance-{}", uuid::Uuid::new_v4().simple()),
    };
    let outcome = AssertUnwindSafe(case(ctx.clone())).catch_unwind().await;
    let swept = sweep(&ctx).await;
    match outcome {
        Err(panic) => resume_unwind(panic),
        Ok(result) => result.and(swept),
    }
}

/// Cleans up every run of the case's installation.
async fn sweep(ctx: &Ctx) -> Result<()> {
    let left = ctx.backend.list_in_flight(&ctx.installation_id).await?;
    for run in left {
        ctx.backend
            .cleanup(&run.handle)
            .await
            .with_context(|| format!("sweeping {:?}", run.handle))?;
    }
    Ok(())
}

impl Ctx {
    /// A spec running `script` with `sh -c`, under a fresh run id.
    pub fn spec(&self, script: &str) -> LaunchSpec {
        LaunchSpec {
            run_id: uuid::Uuid::new_v4().to_string(),
            attempt: 1,
            job: "conformance".into(),
            installation_id: self.installation_id.clone(),
            image: self.image.clone(),
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            env: Vec::new(),
            secrets: Vec::new(),
            secret_delivery: SecretDelivery::Env,
            resources: Resources::default(),
            network: None,
            user: None,
            labels: BTreeMap::from([("dev.jobdock.test".into(), "conformance".into())]),
            registry_auth: None,
            pull_policy: None,
            timeout: None,
            log_driver: None,
        }
    }

    /// Launches `spec`, waits for its end and reads its whole output.
    pub async fn run_to_end(&self, spec: &LaunchSpec) -> Result<(RunHandle, Exit, Vec<LogLine>)> {
        let handle = self.backend.launch(spec).await?;
        let exit = self.wait(&handle).await?;
        let lines = self.logs(&handle, None).await?;
        Ok((handle, exit, lines))
    }

    /// [`Backend::wait`], bounded by [`PATIENCE`].
    pub async fn wait(&self, handle: &RunHandle) -> Result<Exit> {
        tokio::time::timeout(PATIENCE, self.backend.wait(handle))
            .await
            .map_err(|_| anyhow!("run did not end within {PATIENCE:?}"))?
            .map_err(Into::into)
    }

    /// The whole output from `since` until the run ends, bounded by [`PATIENCE`].
    pub async fn logs(
        &self,
        handle: &RunHandle,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<LogLine>> {
        self.logs_from(handle, &LogFrom::since(since)).await
    }

    /// The whole output from `from` until the run ends, bounded by [`PATIENCE`]. A gap in
    /// it fails the case: nothing here gives a backend a reason to lose output.
    pub async fn logs_from(&self, handle: &RunHandle, from: &LogFrom) -> Result<Vec<LogLine>> {
        let (lines, gaps) = self.items_from(handle, from).await?;
        ensure!(gaps.is_empty(), "the backend reported gaps: {gaps:?}");
        Ok(lines)
    }

    /// The whole output from `from` until the run ends, and the gaps the backend reported.
    pub async fn items_from(
        &self,
        handle: &RunHandle,
        from: &LogFrom,
    ) -> Result<(Vec<LogLine>, Vec<LogGap>)> {
        let collect = async {
            let mut stream = self.backend.logs(handle, from);
            let (mut lines, mut gaps) = (Vec::new(), Vec::new());
            while let Some(item) = stream.next().await {
                match item? {
                    LogItem::Line(l) => lines.push(l),
                    LogItem::Gap(g) => gaps.push(g),
                }
            }
            Ok::<_, anyhow::Error>((lines, gaps))
        };
        tokio::time::timeout(PATIENCE, collect)
            .await
            .map_err(|_| anyhow!("log stream did not end within {PATIENCE:?}"))?
    }

    /// Follows the output until a line equal to `text` appears: the run has reached that
    /// point (e.g. installed its signal handler).
    pub async fn wait_for_line(&self, handle: &RunHandle, text: &str) -> Result<()> {
        let find = async {
            let mut stream = self.backend.logs(handle, &LogFrom::start());
            while let Some(item) = stream.next().await {
                if matches!(item?, LogItem::Line(l) if l.line == text) {
                    return Ok(());
                }
            }
            bail!("output ended without the line {text:?}")
        };
        tokio::time::timeout(PATIENCE, find)
            .await
            .map_err(|_| anyhow!("no line {text:?} within {PATIENCE:?}"))?
    }

    /// The lines `stream` carried. Where the backend keeps the streams apart, those tagged
    /// with it; where it merges them ([`Target::merged_streams`]), every line must come
    /// tagged stdout, and `origin` says which stream the case wrote a line to.
    pub fn stream_lines<'a>(
        &self,
        lines: &'a [LogLine],
        stream: LogStream,
        origin: impl Fn(&str) -> LogStream,
    ) -> Result<Vec<&'a LogLine>> {
        if !self.merged_streams {
            return Ok(lines.iter().filter(|l| l.stream == stream).collect());
        }
        let stray = lines.iter().find(|l| l.stream != LogStream::Stdout);
        ensure!(
            stray.is_none(),
            "merged streams, yet a line tagged {stray:?}"
        );
        Ok(lines.iter().filter(|l| origin(&l.line) == stream).collect())
    }

    /// Polls the state until `done` accepts it.
    pub async fn state_until(
        &self,
        handle: &RunHandle,
        done: impl Fn(&TaskState) -> bool,
    ) -> Result<TaskState> {
        let started = Instant::now();
        loop {
            let state = self.backend.state(handle).await?;
            if done(&state) {
                return Ok(state);
            }
            if started.elapsed() > PATIENCE {
                bail!("state still {state:?} after {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The text of the lines of one stream.
pub fn texts(lines: &[LogLine], stream: LogStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}

/// A value that cannot appear anywhere by chance.
pub fn unique_value(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}
