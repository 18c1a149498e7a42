//! A service's output as a stream of whole lines that ends when the run ends.
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
use crate::docker::errors::{from_docker, is_not_found};
use crate::docker::logs::{stream_of, LineAssembler};
use crate::{BackendError, Exit, LogItem, LogLine, LogStream, LogStreamBox, RunHandle};

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

/// [`crate::Backend::logs`]: follows the service's output until the run ends.
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
