//! The lines a pump has read and not yet handed to the store, and how they become a batch:
//! ordered by time, the streams' marks moved over them, and past the cap only counted.

use chrono::{DateTime, Utc};
use jobdock_backends::{LogGap, LogStream};

use crate::store::logs::{BatchTotals, LogMark, NewLine, StreamMark};

/// Lines buffered before a batch is written...
const BATCH_LINES: usize = 2_000;
/// ...or bytes of them, whichever comes first (lines can be a megabyte long).
const BATCH_BYTES: usize = 1 << 20;
/// At most one progress event per this long: a script may report in a tight loop.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A line read but not yet stored; `keep` is false for a line past the cap, which is
/// counted (and moves the position) but not stored.
pub(super) struct Pending {
    pub line: NewLine,
    pub source: LogStream,
    pub cursor: Option<String>,
    pub keep: bool,
    /// The engine's own line (a gap's notice): it moves no stream's mark.
    pub notice: bool,
}

/// A batch on its way to the store.
pub(super) struct Batch {
    pub lines: Vec<NewLine>,
    pub totals: BatchTotals,
}

pub(super) struct Buffer {
    pending: Vec<Pending>,
    /// Bytes of the pending lines.
    bytes: usize,
    /// Why output is missing, when the backend reported a gap since the last batch.
    pub gap: Option<String>,
    /// The latest progress report not recorded yet, and when one last was.
    pub progress: Option<String>,
    progress_at: Option<tokio::time::Instant>,
    /// The latest progress report and its time, for the run itself (every batch).
    pub latest_progress: Option<(String, i64)>,
    /// The stored position after the lines batched so far.
    mark: LogMark,
    /// The latest time given to a line of each stream (stdout, stderr), stored or pending.
    pub latest: [i64; 2],
}

impl Buffer {
    /// An empty buffer whose lines follow `mark`.
    pub fn new(mark: LogMark) -> Self {
        Self {
            pending: Vec::new(),
            bytes: 0,
            gap: None,
            progress: None,
            progress_at: None,
            latest_progress: None,
            latest: [mark.stdout.ts, mark.stderr.ts].map(|t| t.unwrap_or(i64::MIN)),
            mark,
        }
    }

    /// Adds a line; true when the buffer is full and should be written.
    pub fn push(&mut self, p: Pending) -> bool {
        self.bytes += p.line.line.len();
        self.pending.push(p);
        self.pending.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    /// The buffered lines as a batch, ordered by time within it (stably, so each stream
    /// keeps its own order): readers of the whole log get it ordered by time anyway, and
    /// this keeps a follower's view close to that. `None` when there is nothing to write;
    /// `last` (the end of the stream) records the last progress report however soon after
    /// the one before it came.
    pub fn take(&mut self, attempt: i64, owner: &str, last: bool) -> Option<Batch> {
        if self.pending.is_empty() && !(last && self.progress.is_some()) {
            return None;
        }
        let mut totals = BatchTotals::default();
        let mut lines = Vec::with_capacity(self.pending.len());
        // Cursors in arrival order (each stream's own lines arrive in order) before the sort.
        for p in &mut self.pending {
            if let Some(c) = p.cursor.take() {
                stream_mark(&mut self.mark, p.source).cursor = Some(c);
                self.mark.cursor_attempt = Some(attempt);
            }
        }
        self.pending.sort_by_key(|p| p.line.ts);
        for p in self.pending.drain(..) {
            if !p.notice {
                stream_mark(&mut self.mark, p.source).advance(p.line.ts);
            }
            if p.keep {
                totals.bytes += p.line.line.len() as i64;
                lines.push(p.line);
            } else {
                totals.dropped += p.line.line.len() as i64;
            }
        }
        self.bytes = 0;
        totals.mark = Some(self.mark.clone());
        totals.owner = Some(owner.to_owned());
        totals.gap = self.gap.take();
        totals.latest_progress = self.latest_progress.take();
        let due = last
            || self
                .progress_at
                .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due && self.progress.is_some() {
            totals.progress = self.progress.take();
            self.progress_at = Some(tokio::time::Instant::now());
        }
        Some(Batch { lines, totals })
    }
}

/// The line that marks a gap in the log: what is missing, between when, and why.
pub(super) fn gap_notice(gap: &LogGap, attempt: i64) -> Pending {
    let when = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let span = match (when(gap.after), when(gap.before)) {
        (Some(a), Some(b)) => format!(" between {a} and {b}"),
        (Some(a), None) => format!(" after {a}"),
        (None, Some(b)) => format!(" before {b}"),
        (None, None) => String::new(),
    };
    let size = gap
        .missing_bytes
        .map(|b| format!(" ({b} bytes)"))
        .unwrap_or_default();
    let ts = gap.before.or(gap.after).unwrap_or_else(Utc::now);
    Pending {
        line: NewLine {
            attempt,
            ts: ts.timestamp_nanos_opt().unwrap_or(0),
            stream: "jobdock",
            line: format!("output missing here{span}{size}: {}", gap.reason),
        },
        source: LogStream::Stdout,
        cursor: None,
        keep: true,
        notice: true,
    }
}

fn stream_mark(mark: &mut LogMark, stream: LogStream) -> &mut StreamMark {
    match stream {
        LogStream::Stdout => &mut mark.stdout,
        LogStream::Stderr => &mut mark.stderr,
    }
}
