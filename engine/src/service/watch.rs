//! Long polls (`GET /api/v1/runs/{id}?wait_seconds=`) wait here for their run to end.
//!
//! Data Factory and Airflow hold many long polls open at once; none of them asks the store
//! about its run while it waits. A waiter is woken by [`RunWatch::ended`], which this
//! replica calls when it ends a run and which [`hear_ends`] calls when PostgreSQL tells of a
//! run that any replica ended (see `store::notify`). One watcher task, running only while
//! somebody waits, asks about every waited-for run in a single statement as a safety net:
//! every few seconds while every end is heard, a few times a second while it may not be
//! (PostgreSQL's listening connection is down), and at once after that connection was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::notify::Heard;
use crate::store::{Dialect, Store};

/// How often the watcher looks at the waited-for runs while ends on other replicas may go
/// unheard (the longest a waiter then waits past its run's end).
const UNHEARD: Duration = Duration::from_millis(250);

/// How often it looks while every end is heard: a safety net for runs removed from the store
/// (retention) and for ends that no notice reached.
const SAFETY_NET: Duration = Duration::from_secs(5);

/// How long a lost listening connection waits before it is made again.
const LISTEN_RETRY: Duration = Duration::from_secs(5);

/// Most runs asked about in one statement.
const CHUNK: usize = 500;

/// The runs being waited for, and whether the watcher task runs.
#[derive(Debug)]
pub struct RunWatch {
    inner: Mutex<Inner>,
    /// Whether every end of a run reaches [`RunWatch::ended`]: true on SQLite (one engine,
    /// whose own ends always do), and on PostgreSQL while [`hear_ends`] listens.
    hears_every_end: AtomicBool,
    /// Makes the watcher look at once.
    look_now: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per run: how many wait, and what wakes them.
    waiting: HashMap<String, (usize, Arc<Notify>)>,
    watcher_running: bool,
}

/// A long poll listening for its run's end, from [`RunWatch::listen`].
pub struct EndWait<'a> {
    _registration: Registration<'a>,
    ended: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
}

impl EndWait<'_> {
    /// Waits until the run has ended (or may have: a waiter woken early only reads the run
    /// again), or `wait` is over.
    pub async fn wait(mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.ended.as_mut()).await;
    }
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
    /// The watch of an engine on `dialect`: on PostgreSQL, ends on other replicas count as
    /// heard only once [`hear_ends`] listens.
    pub fn new(dialect: Dialect) -> Self {
        Self {
            inner: Mutex::default(),
            hears_every_end: AtomicBool::new(dialect == Dialect::Sqlite),
            look_now: Notify::new(),
        }
    }

    /// Waits until run `id` has ended (or is gone), or `wait` is over: listening, then
    /// looking at the run's status, as a long poll does with its read (the tests' waiter).
    #[cfg(test)]
    pub async fn wait_for_end(
        self: &Arc<Self>,
        store: &Store,
        id: &str,
        wait: Duration,
    ) -> crate::store::Result<()> {
        // Listening before looking, so that no end slips in between.
        let end = self.listen(store, id);
        if store.status_of(id).await?.is_none_or(|s| s.is_final()) {
            return Ok(());
        }
        end.wait(wait).await;
        Ok(())
    }

    /// Starts listening for the end of run `id`. A caller that reads the run after this and
    /// finds it going waits with [`EndWait::wait`]: an end between the two is not missed.
    pub fn listen(self: &Arc<Self>, store: &Store, id: &str) -> EndWait<'_> {
        let (registration, notify) = self.register(store, id);
        let mut ended = Box::pin(notify.notified_owned());
        ended.as_mut().enable();
        EndWait {
            _registration: registration,
            ended,
        }
    }

    /// Run `id` has ended (or may have: a waiter woken early only reads the run again):
    /// wakes its waiters.
    pub fn ended(&self, id: &str) {
        let inner = self.inner.lock().expect("run watch lock");
        if let Some((_, notify)) = inner.waiting.get(id) {
            notify.notify_waiters();
        }
    }

    fn register(self: &Arc<Self>, store: &Store, id: &str) -> (Registration<'_>, Arc<Notify>) {
        let mut inner = self.inner.lock().expect("run watch lock");
        let entry = inner
            .waiting
            .entry(id.to_owned())
            .or_insert_with(|| (0, Arc::new(Notify::new())));
        entry.0 += 1;
        let notify = entry.1.clone();
        if !inner.watcher_running {
            inner.watcher_running = true;
            tokio::spawn(watcher(self.clone(), store.clone()));
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

    fn set_hears_every_end(&self, hears: bool) {
        self.hears_every_end.store(hears, Ordering::Relaxed);
        if !hears {
            // Whatever ended meanwhile went unheard.
            self.look_now.notify_one();
        }
    }

    /// How many runs are waited for (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().expect("run watch lock").waiting.len()
    }
}

/// Asks about every waited-for run in one statement per [`CHUNK`] and wakes the waiters of
/// those that ended; again after [`SAFETY_NET`] or [`UNHEARD`], or when told to look now.
/// Ends when nobody waits.
async fn watcher(watch: Arc<RunWatch>, store: Store) {
    loop {
        let look_now = watch.look_now.notified();
        tokio::pin!(look_now);
        look_now.as_mut().enable();
        let Some(ids) = watch.waited_for() else {
            return;
        };
        for chunk in ids.chunks(CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match store.unfinished_of(&refs).await {
                Ok(unfinished) => {
                    for id in chunk.iter().filter(|id| !unfinished.contains(*id)) {
                        watch.ended(id);
                    }
                }
                // The store is away a moment: the waiters wait on, and time out at worst.
                Err(e) => tracing::debug!(error = %e, "could not look at waited-for runs"),
            }
        }
        let pause = match watch.hears_every_end.load(Ordering::Relaxed) {
            true => SAFETY_NET,
            false => UNHEARD,
        };
        tokio::select! {
            _ = look_now => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Hears the ends of runs on every replica, for as long as the engine runs, and wakes their
/// waiters here. Returns at once on SQLite, which has no other replicas.
pub async fn hear_ends(watch: Arc<RunWatch>, store: Store) {
    loop {
        match store.listen_for_run_ends().await {
            Ok(None) => return,
            Ok(Some(mut ends)) => {
                watch.set_hears_every_end(true);
                // Ends before the listening began were not heard.
                watch.look_now.notify_one();
                loop {
                    match ends.next().await {
                        Ok(Heard::Ended(id)) => watch.ended(&id),
                        Ok(Heard::Reconnected) => watch.look_now.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the connection that hears the ends of runs; long polls fall back to looking a few times a second");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the ends of runs; long polls fall back to looking a few times a second")
            }
        }
        watch.set_hears_every_end(false);
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jobdock_testkit::postgres::TestDb;
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

    async fn cancel(store: &Store, id: &str) {
        let mut tx = store.begin_write().await.unwrap();
        assert!(runs::cancel_queued(&mut tx, id, "test").await.unwrap());
        tx.commit().await.unwrap();
    }

    /// A waiter on `id` (for at most 60 s) in a task of its own; the task answers how long
    /// it waited.
    fn waiter(watch: &Arc<RunWatch>, store: &Store, id: &str) -> tokio::task::JoinHandle<Duration> {
        let (watch, store, id) = (watch.clone(), store.clone(), id.to_owned());
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            watch
                .wait_for_end(&store, &id, Duration::from_secs(60))
                .await
                .unwrap();
            t0.elapsed()
        })
    }

    /// Waiters on two runs, on a watch that does not hear every end (PostgreSQL before its
    /// listener is connected): the one whose run ends, told by nobody, is woken by the
    /// watcher's look at the store; the other waits on; and once nobody waits, the watcher
    /// stops.
    #[tokio::test]
    async fn the_watcher_wakes_the_waiters_of_runs_that_ended_unheard_and_stops_when_none_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let (a, b) = two_queued_runs(&store).await;
        let watch = Arc::new(RunWatch::new(Dialect::Postgres));
        let (wa, wb) = (waiter(&watch, &store, &a), waiter(&watch, &store, &b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(watch.len(), 2);
        cancel(&store, &a).await;
        let woken = tokio::time::timeout(Duration::from_secs(30), wa)
            .await
            .expect("woken by the watcher, long before its 60 s")
            .unwrap();
        assert!(woken < Duration::from_secs(30), "{woken:?}");
        assert!(!wb.is_finished(), "the other run has not ended");
        wb.abort();
        let _ = wb.await;
        tokio::time::sleep(UNHEARD * 3).await;
        assert_eq!(watch.len(), 0);
        assert!(!watch.inner.lock().unwrap().watcher_running);
    }

    /// On SQLite every end is heard: the watcher looks only every few seconds, and a waiter
    /// is woken by [`RunWatch::ended`] (which the engine calls once it ended a run), not by
    /// a look at the store.
    #[tokio::test]
    async fn a_waiter_is_woken_by_the_end_it_is_told_of() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let (a, b) = two_queued_runs(&store).await;
        let watch = Arc::new(RunWatch::new(Dialect::Sqlite));
        let (wa, wb) = (waiter(&watch, &store, &a), waiter(&watch, &store, &b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The store still says queued: only being told can wake it.
        watch.ended(&a);
        let woken = tokio::time::timeout(Duration::from_secs(30), wa)
            .await
            .expect("woken when told, long before its 60 s")
            .unwrap();
        assert!(woken < Duration::from_secs(30), "{woken:?}");
        assert!(!wb.is_finished(), "nobody told of the other run");
        wb.abort();
        let _ = wb.await;
    }

    /// A long poll listens before it reads its run: an end told between the read and the
    /// wait still wakes it.
    #[tokio::test]
    async fn an_end_between_listening_and_waiting_is_not_missed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let (a, _) = two_queued_runs(&store).await;
        let watch = Arc::new(RunWatch::new(Dialect::Sqlite));
        let end = watch.listen(&store, &a);
        watch.ended(&a);
        tokio::time::timeout(Duration::from_secs(10), end.wait(Duration::from_secs(60)))
            .await
            .expect("woken by the end told before the wait began");
        assert_eq!(watch.len(), 0, "the waiter left");
    }

    /// Two replicas on one PostgreSQL database: a run that replica B ends wakes a waiter on
    /// replica A through the notice A hears, well before A's next look at the store.
    #[tokio::test]
    async fn on_postgres_an_end_on_another_replica_is_heard() {
        let db = TestDb::create().await;
        let (a_store, b_store) = (
            Store::connect(&db.url).await.unwrap(),
            Store::connect(&db.url).await.unwrap(),
        );
        let (run, other) = two_queued_runs(&a_store).await;
        let watch = Arc::new(RunWatch::new(Dialect::Postgres));
        let hearing = tokio::spawn(hear_ends(watch.clone(), a_store.clone()));
        for _ in 0..300 {
            if watch.hears_every_end.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(watch.hears_every_end.load(Ordering::Relaxed), "listening");
        let (w, w_other) = (
            waiter(&watch, &a_store, &run),
            waiter(&watch, &a_store, &other),
        );
        // Past the looks at the store that a new waiter and a new listener cause.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel(&b_store, &run).await;
        let woken = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("woken, long before its 60 s")
            .unwrap();
        assert!(
            woken < SAFETY_NET - Duration::from_millis(500),
            "woken by the notice, not by the look every {SAFETY_NET:?}: {woken:?}"
        );
        assert!(!w_other.is_finished(), "the other run has not ended");
        w_other.abort();
        hearing.abort();
    }
}
