//! A run's output: through its task's container when the task runs on the node the engine
//! talks to, else through the service's log.
//!
//! The swarm creates and starts the task's container itself, so the engine cannot attach
//! before it starts as the Docker backend does. It attaches as soon as the container exists
//! and takes what the container wrote before that from the log driver's files, with the
//! Docker backend's catch-up ([`crate::docker::container_logs`]): exact while the driver
//! still holds the container's first output, and a reported gap when it rotated it away
//! first (a container writing more than the driver keeps within its first moment).
//!
//! The service's log reads the same driver files with no way to attach, so a task on
//! another node keeps the old limit: a reader slower than the container loses what the
//! driver rotates away, unseen. That stream is built as follows.
//!
//! The swarm's followed log never ends, not even once the job's task has finished (it waits
//! for tasks to come). So the stream follows the log while the task runs, and once
//! [`tasks::wait`] says it has ended, reads the log again without following, from where the
//! followed part got to, to its end. Frames are reassembled into lines by the Docker
//! backend's [`LineAssembler`]: the swarm splits long lines into 16 KiB pieces the same way.

use std::collections::VecDeque;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};

use super::tasks::{self, not_found};
use crate::docker::attach::Attachments;
use crate::docker::container_logs;
use crate::docker::errors::{from_docker, is_not_found};
use crate::docker::logs::{stream_of, LineAssembler};
use crate::{BackendError, Exit, LogFrom, LogItem, LogLine, LogStream, LogStreamBox, RunHandle};

type Frames = BoxStream<'static, Result<LogOutput, bollard::errors::Error>>;

/// Where the log stream is.
struct Cursor {
    docker: Docker,
    handle: RunHandle,
    since: Option<DateTime<Utc>>,
    frames: Frames,
    assembler: LineAssembler,
    ready: VecDeque<LogLine>,
    /// Resolves when the run has ended; `None` once the rest is being read.
    ended: Option<BoxFuture<'static, Result<Exit, BackendError>>>,
    /// The last line handed out per stream, so that the second read skips what the first
    /// one gave (each stream's lines are in time order).
    last_stdout: Option<DateTime<Utc>>,
    last_stderr: Option<DateTime<Utc>>,
    done: bool,
}

/// [`crate::Backend::logs`].
pub(crate) fn logs(
    docker: &Docker,
    attachments: &Attachments,
    handle: &RunHandle,
    from: &LogFrom,
) -> LogStreamBox {
    if from.stdout.is_none() && from.stderr.is_none() && from.since.is_some() {
        // A position stored as a time alone, before cursors: by time, as it was read.
        return follow(docker, handle, from.since);
    }
    let (docker, attachments, handle, from) = (
        docker.clone(),
        attachments.clone(),
        handle.clone(),
        from.clone(),
    );
    let through = async move {
        match local_container(&docker, &handle).await {
            Ok(Some(id)) => {
                let container = RunHandle {
                    backend_ref: id,
                    ..handle
                };
                container_logs(&docker, &attachments, &container, &from)
            }
            Ok(None) => follow(&docker, &handle, from.since),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    };
    stream::once(through).flatten().boxed()
}

/// The task's container once the swarm has created it, when it is on this node; `None`
/// when the task ended without one or runs elsewhere.
async fn local_container(
    docker: &Docker,
    handle: &RunHandle,
) -> Result<Option<String>, BackendError> {
    loop {
        let found = tasks::find(docker, handle)
            .await?
            .ok_or_else(|| not_found(handle))?;
        if let Some(task) = &found.task {
            if let Some(id) = tasks::container_of(task) {
                return match docker.inspect_container(id, None).await {
                    Ok(_) => Ok(Some(id.to_owned())),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(from_docker(e)),
                };
            }
            if tasks::is_final(task) {
                return Ok(None);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Follows the service's output until the run ends.
pub(crate) fn follow(
    docker: &Docker,
    handle: &RunHandle,
    since: Option<DateTime<Utc>>,
) -> LogStreamBox {
    let waiter = {
        let (docker, handle) = (docker.clone(), handle.clone());
        async move { tasks::wait(&docker, &handle).await }.boxed()
    };
    let cursor = Cursor {
        docker: docker.clone(),
        handle: handle.clone(),
        since,
        frames: frames(docker, handle, since, true),
        assembler: LineAssembler::new(since),
        ready: VecDeque::new(),
        ended: Some(waiter),
        last_stdout: None,
        last_stderr: None,
        done: false,
    };
    stream::unfold(cursor, next_line)
        .map(|r| r.map(LogItem::from))
        .boxed()
}

fn frames(
    docker: &Docker,
    handle: &RunHandle,
    since: Option<DateTime<Utc>>,
    follow: bool,
) -> Frames {
    // Docker's `since` counts whole seconds and includes them; ask from a second earlier
    // and let the assembler drop what is not after `since`, to the nanosecond.
    let docker_since = since
        .map(|s| s.timestamp() - 1)
        .and_then(|s| i32::try_from(s.max(0)).ok())
        .unwrap_or(0);
    let options = LogsOptionsBuilder::new()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(docker_since)
        .build();
    docker
        .service_logs(&handle.backend_ref, Some(options))
        .boxed()
}

impl Cursor {
    /// Takes lines the reader has not had yet and remembers how far each stream got.
    fn take(&mut self, lines: Vec<LogLine>) {
        for line in lines {
            let last = match line.stream {
                LogStream::Stdout => &mut self.last_stdout,
                LogStream::Stderr => &mut self.last_stderr,
            };
            if last.is_some_and(|t| line.ts <= t) {
                continue;
            }
            *last = Some(line.ts);
            self.ready.push_back(line);
        }
    }

    /// The run has ended: drop the followed log (and any half line) and read it to its end.
    fn read_rest(&mut self) {
        self.ended = None;
        self.assembler = LineAssembler::new(self.since);
        self.frames = frames(&self.docker, &self.handle, self.since, false);
    }
}

async fn next_line(mut c: Cursor) -> Option<(Result<LogLine, BackendError>, Cursor)> {
    loop {
        if let Some(line) = c.ready.pop_front() {
            return Some((Ok(line), c));
        }
        if c.done {
            return None;
        }
        let frame = match c.ended.as_mut() {
            Some(ended) => tokio::select! {
                frame = c.frames.next() => frame,
                end = ended => {
                    if let Err(e) = end {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                    c.read_rest();
                    continue;
                }
            },
            None => c.frames.next().await,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(stream) = stream_of(&frame) {
                    let lines = c.assembler.push(stream, frame.as_ref());
                    c.take(lines);
                }
            }
            Some(Err(e)) => {
                c.done = true;
                let err = if is_not_found(&e) {
                    not_found(&c.handle)
                } else {
                    from_docker(e)
                };
                return Some((Err(err), c));
            }
            // The followed log ended on its own (daemon restart, service removed): read the
            // rest once the run has ended, or end with the reason it cannot.
            None => match c.ended.take() {
                Some(ended) => {
                    if let Err(e) = ended.await {
                        c.done = true;
                        return Some((Err(e), c));
                    }
                    c.read_rest();
                }
                None => {
                    c.done = true;
                    let lines = c.assembler.finish();
                    c.take(lines);
                }
            },
        }
    }
}
