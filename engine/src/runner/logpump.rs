//! Streams a run's output from its backend into the store: redacted, capped, in batches,
//! and resumable — after a restart it continues exactly after the last stored line.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobdock_backends::{Backend, BackendError, LogStream, RunHandle};

use super::redact::Redactor;
use crate::store::logs::{BatchTotals, LogMark, NewLine, StreamMark};
use crate::store::{Store, StoreError};

/// Lines buffered before a write.
const BATCH_LINES: usize = 500;
/// Longest a line waits in the buffer, so that followers see output promptly.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// Why a pump stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The backend's stream broke (e.g. the daemon went away).
    #[error("log stream broke: {0}")]
    Backend(#[from] BackendError),
    /// The store failed.
    #[error("could not store log lines: {0}")]
    Store(#[from] StoreError),
}

/// Where a run's stored log stands, read from the store before each (re)start.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// Bytes stored so far.
    pub bytes: i64,
    /// How far each stream is stored.
    pub mark: LogMark,
}

/// What one pump needs.
pub struct Pump<'a> {
    /// The store.
    pub store: &'a Store,
    /// The backend.
    pub backend: &'a Arc<dyn Backend>,
    /// The run's handle.
    pub handle: &'a RunHandle,
    /// The run's id.
    pub run_id: &'a str,
    /// The attempt.
    pub attempt: i64,
    /// Masks secret values.
    pub redactor: &'a Redactor,
    /// Most bytes stored per run.
    pub cap: i64,
}

/// A line read but not yet stored; `keep` is false for a line past the cap, which is
/// counted (and moves the position) but not stored.
struct Pending {
    line: NewLine,
    source: LogStream,
    keep: bool,
}

struct Buffer {
    pending: Vec<Pending>,
    /// The stored position after the lines written so far.
    mark: LogMark,
}

fn stream_mark(mark: &mut LogMark, stream: LogStream) -> &mut StreamMark {
    match stream {
        LogStream::Stdout => &mut mark.stdout,
        LogStream::Stderr => &mut mark.stderr,
    }
}

impl Pump<'_> {
    /// Copies the backend's log stream into the store until it ends.
    pub async fn run(&self, from: Position) -> Result<(), PumpError> {
        // Resume from just before the older of the two streams' marks (or from the start
        // when a stream has nothing stored yet), and drop what each stream already stored:
        // Docker can deliver one stream well ahead of the other, so each keeps its own mark.
        let since = match (from.mark.stdout.ts, from.mark.stderr.ts) {
            (Some(a), Some(b)) => Some(DateTime::<Utc>::from_timestamp_nanos(a.min(b) - 1)),
            _ => None,
        };
        let mut seen_at_mark = (0i64, 0i64);
        let mut stream = self.backend.logs(self.handle, since);
        let mut bytes = from.bytes;
        let mut buf = Buffer {
            pending: Vec::new(),
            mark: from.mark,
        };
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                Some(d) => tokio::select! {
                    n = stream.next() => n,
                    _ = tokio::time::sleep_until(d) => {
                        self.flush(&mut buf).await?;
                        deadline = None;
                        continue;
                    }
                },
                None => stream.next().await,
            };
            let Some(item) = next else { break };
            let l = item?;
            let ts = l.ts.timestamp_nanos_opt().unwrap_or(0);
            let (mark, seen) = match l.stream {
                LogStream::Stdout => (from.mark.stdout, &mut seen_at_mark.0),
                LogStream::Stderr => (from.mark.stderr, &mut seen_at_mark.1),
            };
            if mark.covers(ts, seen) {
                continue;
            }
            let line = self.redactor.redact(&l.line);
            let len = line.len() as i64;
            // Past the cap a line is counted, not stored.
            let keep = bytes + len <= self.cap;
            if keep {
                bytes += len;
            }
            buf.pending.push(Pending {
                line: NewLine {
                    attempt: self.attempt,
                    ts,
                    stream: l.stream.as_str(),
                    line,
                },
                source: l.stream,
                keep,
            });
            if buf.pending.len() >= BATCH_LINES {
                self.flush(&mut buf).await?;
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + BATCH_DELAY);
            }
        }
        self.flush(&mut buf).await?;
        Ok(())
    }

    /// Stores the buffered lines, ordered by time within the batch (stably, so each
    /// stream keeps its own order). Readers of the whole log get it ordered by time anyway;
    /// this keeps a follower's view close to that.
    async fn flush(&self, buf: &mut Buffer) -> Result<(), StoreError> {
        if buf.pending.is_empty() {
            return Ok(());
        }
        buf.pending.sort_by_key(|p| p.line.ts);
        let mut totals = BatchTotals::default();
        let mut lines = Vec::with_capacity(buf.pending.len());
        for p in buf.pending.drain(..) {
            stream_mark(&mut buf.mark, p.source).advance(p.line.ts);
            if p.keep {
                totals.bytes += p.line.line.len() as i64;
                lines.push(p.line);
            } else {
                totals.dropped += p.line.line.len() as i64;
            }
        }
        totals.mark = Some(buf.mark);
        self.store.append_logs(self.run_id, &lines, totals).await
    }
}
