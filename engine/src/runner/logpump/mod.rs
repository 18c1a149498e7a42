//! Streams a run's output from its backend into the store: redacted, capped, in batches,
//! and resumable — after a restart it continues exactly after the last stored line.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobdock_backends::{Backend, BackendError, LogFrom, LogItem, LogStream, RunHandle};
use tokio::sync::mpsc;

use super::redact::Redactor;
use crate::store::logs::{LogMark, NewLine, StreamMark};
use crate::store::{Store, StoreError};

mod batch;
#[cfg(test)]
mod tests;

use batch::{gap_notice, Batch, Buffer, Pending};

/// Longest a line waits in the buffer, so that followers see output promptly.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// Batches read but not yet stored: one, so that the next batch is read while one is
/// written (they took turns before; with the other changes of that step, 1 GiB of output
/// was stored in 46 s instead of 166 s). Deeper would only hold more memory: a store slower
/// than the container holds the container back either way.
const QUEUED_BATCHES: usize = 1;
/// A script reports progress with a line starting so; it goes to the run's timeline too.
pub const PROGRESS_MARKER: &str = "::jobdock::progress ";

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
#[derive(Debug, Clone)]
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
    /// This replica's lease owner id: batches are written only while it holds the run.
    pub owner: &'a str,
    /// When the run's output last moved (ms), for the anomaly check: set as each batch of
    /// the container's output is stored.
    pub moved: &'a std::sync::atomic::AtomicI64,
}

/// Why reading stopped early.
enum Stop {
    /// The backend's stream broke.
    Backend(BackendError),
    /// The writer stopped (the store failed); it reports why.
    WriterGone,
}

impl From<BackendError> for Stop {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

impl Pump<'_> {
    /// Copies the backend's log stream into the store until it ends. One side reads and
    /// batches, the other writes the batches in order; it returns once both are done.
    pub async fn run(&self, from: Position) -> Result<(), PumpError> {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let (read, written) = tokio::join!(self.read(from, tx), self.write(rx));
        // A store error first: it is why reading stopped. Batches read before a backend
        // error are still written, so a resumed read starts after them.
        written?;
        match read {
            Ok(()) | Err(Stop::WriterGone) => Ok(()),
            Err(Stop::Backend(e)) => Err(e.into()),
        }
    }

    /// Stores batches as they come, in order, until the reader is done.
    async fn write(&self, mut rx: mpsc::Receiver<Batch>) -> Result<(), StoreError> {
        while let Some(b) = rx.recv().await {
            let output = b.totals.mark.is_some();
            self.store
                .append_logs(self.run_id, &b.lines, b.totals)
                .await?;
            if output {
                self.moved
                    .store(crate::store::now_ms(), std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn read(&self, from: Position, tx: mpsc::Sender<Batch>) -> Result<(), Stop> {
        // Resume from just before the older of the two streams' marks (or from the start
        // when a stream has nothing stored yet), and drop what each stream already stored:
        // Docker can deliver one stream well ahead of the other, so each keeps its own mark.
        // A backend giving cursors resumes each stream exactly after its cursor instead.
        let since = match (from.mark.stdout.ts, from.mark.stderr.ts) {
            (Some(a), Some(b)) => Some(DateTime::<Utc>::from_timestamp_nanos(a.min(b) - 1)),
            _ => None,
        };
        let same_attempt = from.mark.cursor_attempt == Some(self.attempt);
        let cursor = |m: &StreamMark| m.cursor.clone().filter(|_| same_attempt);
        let resume = LogFrom {
            since,
            stdout: cursor(&from.mark.stdout),
            stderr: cursor(&from.mark.stderr),
        };
        let mut seen_at_mark = (0i64, 0i64);
        let mut stream = self.backend.logs(self.handle, &resume);
        let mut bytes = from.bytes;
        let mut buf = Buffer::new(from.mark.clone());
        // When the oldest buffered line is due to be written. One timer, reset as lines
        // come, and polled only while the stream has nothing ready (`biased`): a chatty
        // stream then costs no timer or channel registration per line.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed = false;
        loop {
            let next = tokio::select! {
                biased;
                n = stream.next() => n,
                () = &mut timer, if armed => {
                    self.send(&tx, &mut buf, false).await?;
                    armed = false;
                    continue;
                }
                // The writer stopped: nothing read from now on could be stored.
                _ = tx.closed() => return Err(Stop::WriterGone),
            };
            let Some(item) = next else { break };
            let l = match item? {
                LogItem::Line(l) => l,
                LogItem::Gap(gap) => {
                    // The notice takes the gap's place in the log; the lines before it are
                    // stored first so that it lands after them.
                    self.send(&tx, &mut buf, false).await?;
                    buf.gap = Some(gap.reason.clone());
                    buf.push(gap_notice(&gap, self.attempt));
                    self.send(&tx, &mut buf, false).await?;
                    armed = false;
                    continue;
                }
            };
            let ts = l.ts.timestamp_nanos_opt().unwrap_or(0);
            let (mark, seen) = match l.stream {
                LogStream::Stdout => (&from.mark.stdout, &mut seen_at_mark.0),
                LogStream::Stderr => (&from.mark.stderr, &mut seen_at_mark.1),
            };
            // A line with a cursor comes after the one we resumed from: never a repeat.
            if l.cursor.is_none() && mark.covers(ts, seen) {
                continue;
            }
            // A stream's lines are stored in the order they came, and a whole log is read in
            // time order: a line is never given a time before its predecessor's. Stamps can
            // run backwards where sources meet — an attachment stamps a line when the engine
            // reads it, the daemon's files when the daemon wrote it — so a line read from the
            // files after a restart may carry an older time than the last one attached.
            let latest = &mut buf.latest[usize::from(l.stream == LogStream::Stderr)];
            let ts = ts.max(*latest);
            *latest = ts;
            let line = self.redactor.redact(l.line);
            if let Some(text) = line.strip_prefix(PROGRESS_MARKER) {
                let text: String = text.trim().chars().take(500).collect();
                buf.latest_progress = Some((text.clone(), l.ts.timestamp_millis()));
                buf.progress = Some(text);
            }
            let len = line.len() as i64;
            // Past the cap a line is counted, not stored.
            let keep = bytes + len <= self.cap;
            if keep {
                bytes += len;
            }
            let full = buf.push(Pending {
                line: NewLine {
                    attempt: self.attempt,
                    ts,
                    stream: l.stream.as_str(),
                    line,
                },
                source: l.stream,
                cursor: l.cursor,
                keep,
                notice: false,
            });
            if full {
                self.send(&tx, &mut buf, false).await?;
                armed = false;
            } else if !armed {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + BATCH_DELAY);
                armed = true;
            }
        }
        // The end of the stream: the last progress report is recorded however soon after
        // the one before it came.
        self.send(&tx, &mut buf, true).await
    }

    /// Queues the buffered lines for the writer, waiting while it is a batch behind.
    async fn send(
        &self,
        tx: &mpsc::Sender<Batch>,
        buf: &mut Buffer,
        last: bool,
    ) -> Result<(), Stop> {
        match buf.take(self.attempt, self.owner, last) {
            Some(batch) => tx.send(batch).await.map_err(|_| Stop::WriterGone),
            None => Ok(()),
        }
    }
}
