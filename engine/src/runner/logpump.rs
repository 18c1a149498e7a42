//! Streams a run's output from its backend into the store: redacted, capped, in batches,
//! and resumable — after a restart it continues exactly after the last stored line.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobdock_backends::{Backend, BackendError, LogFrom, LogGap, LogItem, LogStream, RunHandle};

use super::redact::Redactor;
use crate::store::logs::{BatchTotals, LogMark, NewLine, StreamMark};
use crate::store::{Store, StoreError};

/// Lines buffered before a write.
const BATCH_LINES: usize = 500;
/// Longest a line waits in the buffer, so that followers see output promptly.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// A script reports progress with a line starting so; it goes to the run's timeline too.
pub const PROGRESS_MARKER: &str = "::jobdock::progress ";
/// At most one progress event per this long: a script may report in a tight loop.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
}

/// A line read but not yet stored; `keep` is false for a line past the cap, which is
/// counted (and moves the position) but not stored.
struct Pending {
    line: NewLine,
    source: LogStream,
    cursor: Option<String>,
    keep: bool,
    /// The engine's own line (a gap's notice): it moves no stream's mark.
    notice: bool,
}

struct Buffer {
    pending: Vec<Pending>,
    /// Why output is missing, when the backend reported a gap since the last write.
    gap: Option<String>,
    /// The latest progress report not recorded yet, and when one last was.
    progress: Option<String>,
    progress_at: Option<tokio::time::Instant>,
    /// The latest progress report and its time, for the run itself (every batch).
    latest_progress: Option<(String, i64)>,
    /// The stored position after the lines written so far.
    mark: LogMark,
    /// The latest time given to a line of each stream (stdout, stderr), stored or pending.
    latest: [i64; 2],
}

/// The line that marks a gap in the log: what is missing, between when, and why.
fn gap_notice(gap: &LogGap, attempt: i64) -> Pending {
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

impl Pump<'_> {
    /// Copies the backend's log stream into the store until it ends.
    pub async fn run(&self, from: Position) -> Result<(), PumpError> {
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
        let mut buf = Buffer {
            pending: Vec::new(),
            gap: None,
            progress: None,
            progress_at: None,
            latest_progress: None,
            mark: from.mark.clone(),
            latest: [from.mark.stdout.ts, from.mark.stderr.ts].map(|t| t.unwrap_or(i64::MIN)),
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
            let l = match item? {
                LogItem::Line(l) => l,
                LogItem::Gap(gap) => {
                    // The notice takes the gap's place in the log; the lines before it are
                    // stored first so that it lands after them.
                    self.flush(&mut buf).await?;
                    buf.gap = Some(gap.reason.clone());
                    buf.pending.push(gap_notice(&gap, self.attempt));
                    self.flush(&mut buf).await?;
                    deadline = None;
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
            let line = self.redactor.redact(&l.line);
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
            buf.pending.push(Pending {
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
            if buf.pending.len() >= BATCH_LINES {
                self.flush(&mut buf).await?;
                deadline = None;
            } else if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + BATCH_DELAY);
            }
        }
        self.flush_all(&mut buf).await?;
        Ok(())
    }

    /// Stores the buffered lines, ordered by time within the batch (stably, so each
    /// stream keeps its own order). Readers of the whole log get it ordered by time anyway;
    /// this keeps a follower's view close to that.
    async fn flush(&self, buf: &mut Buffer) -> Result<(), StoreError> {
        self.write(buf, false).await
    }

    /// [`Self::flush`] at the end of the stream: the last progress report is recorded
    /// however soon after the one before it came.
    async fn flush_all(&self, buf: &mut Buffer) -> Result<(), StoreError> {
        self.write(buf, true).await
    }

    async fn write(&self, buf: &mut Buffer, last: bool) -> Result<(), StoreError> {
        if buf.pending.is_empty() && !(last && buf.progress.is_some()) {
            return Ok(());
        }
        let mut totals = BatchTotals::default();
        let mut lines = Vec::with_capacity(buf.pending.len());
        // Cursors in arrival order (each stream's own lines arrive in order) before the sort.
        for p in &mut buf.pending {
            if let Some(c) = p.cursor.take() {
                stream_mark(&mut buf.mark, p.source).cursor = Some(c);
                buf.mark.cursor_attempt = Some(self.attempt);
            }
        }
        buf.pending.sort_by_key(|p| p.line.ts);
        for p in buf.pending.drain(..) {
            if !p.notice {
                stream_mark(&mut buf.mark, p.source).advance(p.line.ts);
            }
            if p.keep {
                totals.bytes += p.line.line.len() as i64;
                lines.push(p.line);
            } else {
                totals.dropped += p.line.line.len() as i64;
            }
        }
        totals.mark = Some(buf.mark.clone());
        totals.owner = Some(self.owner.to_owned());
        totals.gap = buf.gap.take();
        totals.latest_progress = buf.latest_progress.take();
        let due = last
            || buf
                .progress_at
                .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due && buf.progress.is_some() {
            totals.progress = buf.progress.take();
            buf.progress_at = Some(tokio::time::Instant::now());
        }
        self.store.append_logs(self.run_id, &lines, totals).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::TimeZone;
    use futures::stream;
    use jobdock_backends::{
        BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogLine, LogStreamBox, TaskState,
    };
    use jobdock_types::{JobSpec, RunStatus};

    use super::*;
    use crate::store::{jobs, runs, NewJob};

    /// A backend whose `logs` answers scripted reads, in turn, and records what each read
    /// was asked to resume from.
    #[derive(Default)]
    struct Scripted {
        reads: Mutex<VecDeque<Vec<Result<LogItem, BackendError>>>>,
        asked: Mutex<Vec<LogFrom>>,
    }

    #[async_trait]
    impl Backend for Scripted {
        fn kind(&self) -> BackendKind {
            BackendKind::Nomad
        }
        async fn health(&self) -> BackendHealth {
            unreachable!()
        }
        async fn launch(&self, _: &LaunchSpec) -> Result<RunHandle, BackendError> {
            unreachable!()
        }
        async fn state(&self, _: &RunHandle) -> Result<TaskState, BackendError> {
            unreachable!()
        }
        fn logs(&self, _: &RunHandle, from: &LogFrom) -> LogStreamBox {
            self.asked.lock().unwrap().push(from.clone());
            let read = self.reads.lock().unwrap().pop_front().unwrap_or_default();
            stream::iter(read).boxed()
        }
        async fn wait(&self, _: &RunHandle) -> Result<Exit, BackendError> {
            unreachable!()
        }
        async fn stop(&self, _: &RunHandle, _: Duration) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn cleanup(&self, _: &RunHandle) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn list_in_flight(&self, _: &str) -> Result<Vec<InFlight>, BackendError> {
            unreachable!()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn line(secs: i64, text: &str, cursor: u64) -> Result<LogItem, BackendError> {
        Ok(LogItem::Line(LogLine {
            ts: at(secs),
            stream: LogStream::Stdout,
            line: text.into(),
            cursor: Some(cursor.to_string()),
        }))
    }

    async fn run_row(store: &Store) -> String {
        let spec = JobSpec {
            name: "j".into(),
            image: "img".into(),
            ..Default::default()
        };
        let mut tx = store.begin_write().await.unwrap();
        let job = jobs::insert(&mut tx, NewJob { spec: &spec }).await.unwrap();
        let new = runs::NewRun {
            job_id: &job.id,
            job_name: "j",
            status: RunStatus::Queued,
            spec: &spec,
            max_attempts: 1,
            backend: "nomad",
            trigger_kind: "api",
            triggered_by: None,
            idempotency_key: None,
            request_hash: None,
            reason: None,
        };
        let run = runs::insert(&mut tx, new).await.unwrap();
        assert!(runs::mark_starting(&mut tx, &run.id, "me", i64::MAX)
            .await
            .unwrap());
        tx.commit().await.unwrap();
        run.id
    }

    async fn pump_once(store: &Store, backend: &Arc<dyn Backend>, run_id: &str, attempt: i64) {
        let now = store.run(run_id).await.unwrap();
        let handle = RunHandle {
            run_id: run_id.into(),
            attempt: attempt as u32,
            backend_ref: "r".into(),
        };
        let pump = Pump {
            store,
            backend,
            handle: &handle,
            run_id,
            attempt,
            redactor: &Redactor::new(&[]),
            cap: 1 << 20,
            owner: "me",
        };
        let from = Position {
            bytes: now.log_bytes,
            mark: now.log_mark,
        };
        let _ = pump.run(from).await;
    }

    /// A backend with cursors is resumed from the stored cursor of the same attempt, and
    /// the lines it then gives are stored even when their stamps are older than the stored
    /// mark (a restarted backend stamps anew): nothing lost, nothing twice.
    #[tokio::test]
    async fn resumes_from_stored_cursors_of_the_same_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let run_id = run_row(&store).await;
        let scripted = Arc::new(Scripted::default());
        scripted.reads.lock().unwrap().extend([
            vec![line(10, "a", 2), line(20, "b", 4)],
            vec![line(5, "c", 6)],
            vec![line(1, "first of attempt 2", 19)],
        ]);
        let backend: Arc<dyn Backend> = scripted.clone();

        pump_once(&store, &backend, &run_id, 1).await;
        pump_once(&store, &backend, &run_id, 1).await;
        pump_once(&store, &backend, &run_id, 2).await;

        let asked = scripted.asked.lock().unwrap().clone();
        assert_eq!(
            asked[0].stdout, None,
            "a first read starts at the beginning"
        );
        assert_eq!(asked[1].stdout.as_deref(), Some("4"), "resumed after `b`");
        assert_eq!(asked[2].stdout, None, "a new attempt's log starts afresh");
        let stored: Vec<_> = store
            .logs(&run_id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(stored, ["a", "b", "c", "first of attempt 2"]);
        // Read by time, the stream keeps the order it came in: a line never sorts before
        // its predecessor because its stamp is older.
        let by_time: Vec<_> = store
            .logs_by_time(&run_id, None, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.line, l.ts))
            .collect();
        let ns = |secs| at(secs).timestamp_nanos_opt().unwrap();
        assert_eq!(
            by_time,
            [
                ("a".to_string(), ns(10)),
                ("b".to_string(), ns(20)),
                ("c".to_string(), ns(20)),
                ("first of attempt 2".to_string(), ns(20)),
            ]
        );
        let mark = store.run(&run_id).await.unwrap().log_mark;
        assert_eq!(mark.stdout.cursor.as_deref(), Some("19"));
        assert_eq!(mark.cursor_attempt, Some(2));
    }

    /// A gap the backend reports lands in the log at its place, between the lines around it,
    /// says what is missing and why, and marks the run's log incomplete with a timeline event.
    #[tokio::test]
    async fn a_gap_is_stored_at_its_place_and_marks_the_log_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let run_id = run_row(&store).await;
        assert!(store.run(&run_id).await.unwrap().log_complete);
        let gap = LogGap {
            after: Some(at(10)),
            before: Some(at(20)),
            missing_bytes: None,
            reason: "the driver rotated it away".into(),
        };
        let scripted = Arc::new(Scripted::default());
        scripted.reads.lock().unwrap().push_back(vec![
            line(10, "before", 1),
            Ok(LogItem::Gap(gap)),
            line(20, "after", 2),
        ]);
        let backend: Arc<dyn Backend> = scripted;
        pump_once(&store, &backend, &run_id, 1).await;

        let stored = store.logs_by_time(&run_id, None, 0, 10).await.unwrap();
        let texts: Vec<_> = stored
            .iter()
            .map(|l| (l.stream.as_str(), l.line.as_str()))
            .collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert_eq!(texts[0], ("stdout", "before"));
        assert_eq!(texts[1].0, "jobdock");
        assert!(
            texts[1]
                .1
                .starts_with("output missing here between 2023-11-14T22:13:30.000Z and")
                && texts[1].1.ends_with(": the driver rotated it away"),
            "{}",
            texts[1].1
        );
        assert_eq!(texts[2], ("stdout", "after"));
        let run = store.run(&run_id).await.unwrap();
        assert!(!run.log_complete);
        assert_eq!(run.log_mark.stdout.cursor.as_deref(), Some("2"));
        let events = store.events(&run_id).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.kind == jobdock_types::RunEventKind::LogGap
                    && e.message == "the driver rotated it away"),
            "{events:?}"
        );
    }

    /// Once another replica has adopted the run, this one's batches are refused: two
    /// supervisors never both store a line.
    #[tokio::test]
    async fn a_pump_whose_lease_moved_on_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let run_id = run_row(&store).await;
        assert!(store.adopt(&run_id, "other", i64::MAX, true).await.unwrap());
        let scripted = Arc::new(Scripted::default());
        scripted
            .reads
            .lock()
            .unwrap()
            .push_back(vec![line(1, "a", 2)]);
        let backend: Arc<dyn Backend> = scripted;
        let now = store.run(&run_id).await.unwrap();
        let handle = RunHandle {
            run_id: run_id.clone(),
            attempt: 1,
            backend_ref: "r".into(),
        };
        let pump = Pump {
            store: &store,
            backend: &backend,
            handle: &handle,
            run_id: &run_id,
            attempt: 1,
            redactor: &Redactor::new(&[]),
            cap: 1 << 20,
            owner: "me",
        };
        let from = Position {
            bytes: now.log_bytes,
            mark: now.log_mark,
        };
        let refused = pump.run(from).await;
        assert!(
            matches!(refused, Err(PumpError::Store(StoreError::Fenced))),
            "{refused:?}"
        );
        assert!(store.logs(&run_id, 0, 10).await.unwrap().is_empty());
    }
}
