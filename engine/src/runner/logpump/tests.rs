//! The pump against a scripted backend and a real store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::TimeZone;
use futures::stream;
use jobdock_backends::{
    BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogGap, LogLine, LogStreamBox,
    TaskState,
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
    /// After its scripted items a read stays open with nothing more, as a quiet
    /// container's does, instead of ending.
    quiet_after: bool,
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
        if self.quiet_after {
            stream::iter(read).chain(stream::pending()).boxed()
        } else {
            stream::iter(read).boxed()
        }
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

/// A fresh store holding one run that has been claimed; the directory keeps it alive.
async fn store_with_run() -> (tempfile::TempDir, Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let run_id = run_row(&store).await;
    (dir, store, run_id)
}

/// The texts of the run's stored lines, in the order stored.
async fn stored_lines(store: &Store, run_id: &str) -> Vec<String> {
    let lines = store.logs(run_id, 0, 100_000).await.unwrap();
    lines.into_iter().map(|l| l.line).collect()
}

async fn pump_once(
    store: &Store,
    backend: &Arc<dyn Backend>,
    run_id: &str,
    attempt: i64,
) -> Result<(), PumpError> {
    pump_once_moved(store, backend, run_id, attempt, &AtomicI64::new(0)).await
}

/// [`pump_once`], telling `moved` when output was stored.
async fn pump_once_moved(
    store: &Store,
    backend: &Arc<dyn Backend>,
    run_id: &str,
    attempt: i64,
    moved: &AtomicI64,
) -> Result<(), PumpError> {
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
        moved,
    };
    let from = Position {
        bytes: now.log_bytes,
        mark: now.log_mark,
    };
    pump.run(from).await
}

/// A backend with cursors is resumed from the stored cursor of the same attempt, and
/// the lines it then gives are stored even when their stamps are older than the stored
/// mark (a restarted backend stamps anew): nothing lost, nothing twice.
#[tokio::test]
async fn resumes_from_stored_cursors_of_the_same_attempt() {
    let (_dir, store, run_id) = store_with_run().await;
    let scripted = Arc::new(Scripted::default());
    scripted.reads.lock().unwrap().extend([
        vec![line(10, "a", 2), line(20, "b", 4)],
        vec![line(5, "c", 6)],
        vec![line(1, "first of attempt 2", 19)],
    ]);
    let backend: Arc<dyn Backend> = scripted.clone();

    let moved = AtomicI64::new(0);
    let _ = pump_once_moved(&store, &backend, &run_id, 1, &moved).await;
    assert!(
        moved.load(Ordering::Relaxed) > 0,
        "the output moved: the anomaly check is told"
    );
    let _ = pump_once(&store, &backend, &run_id, 1).await;
    let _ = pump_once(&store, &backend, &run_id, 2).await;

    let asked = scripted.asked.lock().unwrap().clone();
    assert_eq!(
        asked[0].stdout, None,
        "a first read starts at the beginning"
    );
    assert_eq!(asked[1].stdout.as_deref(), Some("4"), "resumed after `b`");
    assert_eq!(asked[2].stdout, None, "a new attempt's log starts afresh");
    let stored = stored_lines(&store, &run_id).await;
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
    let (_dir, store, run_id) = store_with_run().await;
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
    let _ = pump_once(&store, &backend, &run_id, 1).await;

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
    let (_dir, store, run_id) = store_with_run().await;
    assert!(store.adopt(&run_id, "other", i64::MAX, true).await.unwrap());
    // One line, then a container that stays quiet: the refusal of the batch stops the
    // pump, however long the backend's stream stays open.
    let scripted = Arc::new(Scripted {
        quiet_after: true,
        ..Default::default()
    });
    scripted
        .reads
        .lock()
        .unwrap()
        .push_back(vec![line(1, "a", 2)]);
    let backend: Arc<dyn Backend> = scripted;
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        pump_once(&store, &backend, &run_id, 1),
    )
    .await
    .expect("a refused pump stops while its stream stays open");
    assert!(
        matches!(refused, Err(PumpError::Store(StoreError::Fenced))),
        "{refused:?}"
    );
    assert!(store.logs(&run_id, 0, 10).await.unwrap().is_empty());
}

/// Batches already read when the backend's stream breaks are still stored, in order, and
/// the stored position is after them: the resumed read starts there.
#[tokio::test]
async fn batches_read_before_a_broken_stream_are_stored() {
    let (_dir, store, run_id) = store_with_run().await;
    let scripted = Arc::new(Scripted::default());
    let mut read: Vec<_> = (1..=2_500u64)
        .map(|i| line(i as i64, &format!("line {i}"), i))
        .collect();
    read.push(Err(BackendError::Unavailable(
        "the daemon went away".into(),
    )));
    scripted.reads.lock().unwrap().push_back(read);
    let backend: Arc<dyn Backend> = scripted;
    let broke = pump_once(&store, &backend, &run_id, 1).await;
    assert!(matches!(broke, Err(PumpError::Backend(_))), "{broke:?}");
    let stored = stored_lines(&store, &run_id).await;
    let full_batch: Vec<_> = (1..=2_000).map(|i| format!("line {i}")).collect();
    assert_eq!(stored, full_batch, "the batch read whole before the break");
    let mark = store.run(&run_id).await.unwrap().log_mark;
    assert_eq!(mark.stdout.cursor.as_deref(), Some("2000"));
}
