//! Streams a run's output from its backend into the store: redacted, capped, in batches,
//! and resumable — after a restart it continues exactly after the last stored line.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobdock_backends::{Backend, BackendError, RunHandle};

use super::redact::Redactor;
use crate::store::logs::{BatchTotals, NewLine};
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
    /// Timestamp (ns) of the last stored line.
    pub last_ts: Option<i64>,
    /// How many stored lines carry exactly `last_ts`.
    pub last_ts_n: i64,
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
    keep: bool,
}

struct Buffer {
    pending: Vec<Pending>,
    /// The stored position: highest timestamp and how many stored lines carry it.
    last: (Option<i64>, i64),
}

impl Pump<'_> {
    /// Copies the backend's log stream into the store until it ends.
    pub async fn run(&self, from: Position) -> Result<(), PumpError> {
        // Ask from just before the last stored timestamp and skip the lines already stored
        // with exactly that timestamp: two lines may share one, so a timestamp alone is not
        // a position.
        let since = from
            .last_ts
            .map(|ns| DateTime::<Utc>::from_timestamp_nanos(ns - 1));
        let mut to_skip = from.last_ts_n;
        let mut stream = self.backend.logs(self.handle, since);
        let mut bytes = from.bytes;
        let mut buf = Buffer {
            pending: Vec::new(),
            last: (from.last_ts, from.last_ts_n),
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
            if Some(ts) == from.last_ts && to_skip > 0 {
                to_skip -= 1;
                continue;
            }
            if from.last_ts.is_some_and(|t| ts < t) {
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
        let n = buf.pending.len();
        let mut totals = BatchTotals::default();
        let mut lines = Vec::with_capacity(n);
        for p in buf.pending.drain(..n) {
            let ts = p.line.ts;
            buf.last = match buf.last.0 {
                Some(t) if ts == t => (Some(t), buf.last.1 + 1),
                Some(t) if ts < t => buf.last,
                _ => (Some(ts), 1),
            };
            if p.keep {
                totals.bytes += p.line.line.len() as i64;
                lines.push(p.line);
            } else {
                totals.dropped += p.line.line.len() as i64;
            }
        }
        totals.last_ts = buf.last.0;
        totals.last_ts_n = buf.last.1;
        self.store.append_logs(self.run_id, &lines, totals).await
    }
}
