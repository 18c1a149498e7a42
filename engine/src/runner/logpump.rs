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

struct Batch {
    lines: Vec<NewLine>,
    totals: BatchTotals,
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
        let mut last = (from.last_ts, from.last_ts_n);
        let mut batch = Batch {
            lines: Vec::new(),
            totals: BatchTotals::default(),
        };
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                Some(d) => tokio::select! {
                    n = stream.next() => n,
                    _ = tokio::time::sleep_until(d) => {
                        self.flush(&mut batch, last).await?;
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
            last = if Some(ts) == last.0 {
                (last.0, last.1 + 1)
            } else {
                (Some(ts), 1)
            };
            let line = self.redactor.redact(&l.line);
            let len = line.len() as i64;
            if bytes + len > self.cap {
                // Past the cap the line is counted, not stored; the position still moves so
                // that a restart does not store what was dropped before.
                batch.totals.dropped += len;
            } else {
                bytes += len;
                batch.totals.bytes += len;
                batch.lines.push(NewLine {
                    attempt: self.attempt,
                    ts,
                    stream: l.stream.as_str(),
                    line,
                });
            }
            if batch.lines.len() >= BATCH_LINES {
                self.flush(&mut batch, last).await?;
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + BATCH_DELAY);
            }
        }
        self.flush(&mut batch, last).await?;
        Ok(())
    }

    async fn flush(&self, batch: &mut Batch, last: (Option<i64>, i64)) -> Result<(), StoreError> {
        if batch.lines.is_empty() && batch.totals.dropped == 0 {
            return Ok(());
        }
        batch.totals.last_ts = last.0;
        batch.totals.last_ts_n = last.1;
        self.store
            .append_logs(self.run_id, &batch.lines, batch.totals)
            .await?;
        batch.lines.clear();
        batch.totals = BatchTotals::default();
        Ok(())
    }
}
