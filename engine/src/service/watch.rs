//! Long polls (`GET /api/v1/runs/{id}?wait_seconds=`) wait here for their run to end.
//!
//! Data Factory and Airflow hold many long polls open at once. Instead of each waiter asking
//! the store about its run four times a second, one watcher task asks about every run that
//! somebody waits for in a single statement — at once when this replica ends a run, and a
//! few times a second for the runs that other replicas end — and wakes the waiters of the
//! runs that have ended. The watcher runs only while somebody waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{Result, Store};

/// How often the watcher looks at the waited-for runs without being told a run ended (the
/// longest a waiter on a run that another replica ends waits past that end).
const EVERY: Duration = Duration::from_millis(250);

/// Most runs asked about in one statement.
const CHUNK: usize = 500;

/// The runs being waited for, and whether the watcher task runs.
#[derive(Debug, Default)]
pub struct RunWatch {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per run: how many wait, and what wakes them.
    waiting: HashMap<String, (usize, Arc<Notify>)>,
    watcher_running: bool,
}

/// A waiter's place; leaving it (dropping) stops waiting.
struct Registration<'a> {
    watch: &'a RunWatch,
    id: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut inner = self.watch.inner.lock().expect("run watch lock");
        if let Some((count, _)) = inner.waiting.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                inner.waiting.remove(&self.id);
            }
        }
    }
}

impl RunWatch {
    /// Waits until run `id` has ended (or is gone), or `wait` is over. `run_ended` is
    /// notified whenever this replica ends a run.
    pub async fn wait_for_end(
        self: &Arc<Self>,
        store: &Store,
        run_ended: &Arc<Notify>,
        id: &str,
        wait: Duration,
    ) -> Result<()> {
        let (registration, notify) = self.register(store, run_ended, id);
        // Listening before looking, so that no end slips in between.
        let ended = notify.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if store.status_of(id).await?.is_none_or(|s| s.is_final()) {
            return Ok(());
        }
        let _ = tokio::time::timeout(wait, ended).await;
        drop(registration);
        Ok(())
    }

    fn register(
        self: &Arc<Self>,
        store: &Store,
        run_ended: &Arc<Notify>,
        id: &str,
    ) -> (Registration<'_>, Arc<Notify>) {
        let mut inner = self.inner.lock().expect("run watch lock");
        let entry = inner
            .waiting
            .entry(id.to_owned())
            .or_insert_with(|| (0, Arc::new(Notify::new())));
        entry.0 += 1;
        let notify = entry.1.clone();
        if !inner.watcher_running {
            inner.watcher_running = true;
            tokio::spawn(watcher(self.clone(), store.clone(), run_ended.clone()));
        }
        let registration = Registration {
            watch: self,
            id: id.to_owned(),
        };
        (registration, notify)
    }

    /// The runs waited for now; `None` (and the watcher marked stopped) when there are none.
    fn waited_for(&self) -> Option<Vec<String>> {
        let mut inner = self.inner.lock().expect("run watch lock");
        if inner.waiting.is_empty() {
            inner.watcher_running = false;
            return None;
        }
        Some(inner.waiting.keys().cloned().collect())
    }

    fn wake(&self, id: &str) {
        let inner = self.inner.lock().expect("run watch lock");
        if let Some((_, notify)) = inner.waiting.get(id) {
            notify.notify_waiters();
        }
    }

    /// How many runs are waited for (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().expect("run watch lock").waiting.len()
    }
}

/// Asks about every waited-for run in one statement per [`CHUNK`], wakes the waiters of
/// those that ended; again when this replica ends a run, or after [`EVERY`]. Ends when
/// nobody waits.
async fn watcher(watch: Arc<RunWatch>, store: Store, run_ended: Arc<Notify>) {
    loop {
        // Listening before looking, as the waiters do.
        let ended = run_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let Some(ids) = watch.waited_for() else {
            return;
        };
        for chunk in ids.chunks(CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match store.unfinished_of(&refs).await {
                Ok(unfinished) => {
                    for id in chunk.iter().filter(|id| !unfinished.contains(*id)) {
                        watch.wake(id);
                    }
                }
                // The store is away a moment: the waiters wait on, and time out at worst.
                Err(e) => tracing::debug!(error = %e, "could not look at waited-for runs"),
            }
        }
        tokio::select! {
            _ = ended => {}
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jobdock_types::JobSpec;

    use crate::store::{jobs, runs, NewJob};

    async fn two_queued_runs(store: &Store) -> (String, String) {
        let spec = JobSpec {
            name: "j".into(),
            image: "img".into(),
            ..Default::default()
        };
        let mut tx = store.begin_write().await.unwrap();
        let job = jobs::insert(&mut tx, NewJob { spec: &spec }).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let new = runs::NewRun::queued(&job, &spec);
            ids.push(runs::insert(&mut tx, new).await.unwrap().id);
        }
        tx.commit().await.unwrap();
        (ids.remove(0), ids.remove(0))
    }

    /// Waiters on two runs: the one whose run ends (told by nobody, as when another
    /// replica ends it) is woken by the watcher; the other waits out its time; and once
    /// nobody waits, the watcher stops.
    #[tokio::test]
    async fn one_watcher_wakes_the_waiters_of_ended_runs_and_stops_when_none_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let (a, b) = two_queued_runs(&store).await;
        let watch = Arc::new(RunWatch::default());
        let run_ended = Arc::new(Notify::new());
        let wait = |id: String| {
            let (watch, store, run_ended) = (watch.clone(), store.clone(), run_ended.clone());
            tokio::spawn(async move {
                let t0 = tokio::time::Instant::now();
                watch
                    .wait_for_end(&store, &run_ended, &id, Duration::from_secs(30))
                    .await
                    .unwrap();
                t0.elapsed()
            })
        };
        let (wa, wb) = (wait(a.clone()), wait(b.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(watch.len(), 2);
        let mut tx = store.begin_write().await.unwrap();
        assert!(runs::cancel_queued(&mut tx, &a, "test").await.unwrap());
        tx.commit().await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(5), wa)
            .await
            .expect("woken by the watcher, long before its 30 s")
            .unwrap();
        assert!(woken < Duration::from_secs(5), "{woken:?}");
        assert!(!wb.is_finished(), "the other run has not ended");
        wb.abort();
        let _ = wb.await;
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(watch.len(), 0);
        assert!(!watch.inner.lock().unwrap().watcher_running);
    }
}
