//! The runs this replica supervises, as its anomaly check reads them: from memory, kept by
//! their supervisors, so that a check pass reads nothing of the runs going. Read from the
//! store, each pass read every starting and running run's row: 300 rows every two seconds
//! with 300 running, whatever had changed. Runs supervised on another replica are checked
//! there; a run whose supervisor is gone is checked again once it is adopted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use jobdock_types::RunStatus;

use crate::store::anomalies::ActiveRun;
use crate::store::runs::RunRow;

/// The runs supervised here. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(super) struct LiveRuns(Arc<Mutex<HashMap<String, Live>>>);

#[derive(Debug)]
struct Live {
    run: ActiveRun,
    /// When its output last moved (ms; 0 for not yet), set by its log pump.
    output: Arc<AtomicI64>,
}

/// A run's place among the live runs, for as long as its supervisor holds it.
#[derive(Debug)]
pub(super) struct Watched {
    runs: LiveRuns,
    id: String,
    attempt: i64,
    /// When the run's output last moved (ms; 0 for not yet): its log pump sets it.
    pub output: Arc<AtomicI64>,
}

impl LiveRuns {
    /// Adds `run`, whose output last moved at `last_output_at` (for a run adopted while it
    /// runs), until the returned guard is dropped.
    pub fn watch(&self, run: &RunRow, last_output_at: Option<i64>) -> Watched {
        let active = ActiveRun {
            id: run.id.clone(),
            seq: run.seq,
            attempt: run.attempt,
            job_id: run.job_id.clone(),
            job: run.job_name.clone(),
            status: run.status,
            created_at: run.created_at,
            started_at: run.started_at,
            last_output_at,
        };
        self.add(active)
    }

    fn add(&self, run: ActiveRun) -> Watched {
        let output = Arc::new(AtomicI64::new(run.last_output_at.unwrap_or(0)));
        let (id, attempt) = (run.id.clone(), run.attempt);
        let live = Live {
            run,
            output: output.clone(),
        };
        self.lock().insert(id.clone(), live);
        Watched {
            runs: self.clone(),
            id,
            attempt,
            output,
        }
    }

    /// The runs supervised here now, as the check reads them.
    pub fn snapshot(&self) -> Vec<ActiveRun> {
        self.lock()
            .values()
            .map(|l| {
                let at = l.output.load(Ordering::Relaxed);
                ActiveRun {
                    last_output_at: (at > 0).then_some(at),
                    ..l.run.clone()
                }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A panic while holding this lock leaves the map whole: every change is one call.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Watched {
    /// The run's container started at `started_at` (ms): it is running.
    pub fn running(&self, started_at: i64) {
        if let Some(l) = self.runs.lock().get_mut(&self.id) {
            l.run.status = RunStatus::Running;
            l.run.started_at = Some(started_at);
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut runs = self.runs.lock();
        // Only this attempt's entry: the next attempt's supervisor may have added its own.
        if runs
            .get(&self.id)
            .is_some_and(|l| l.run.attempt == self.attempt)
        {
            runs.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, attempt: i64, status: RunStatus, output: Option<i64>) -> ActiveRun {
        ActiveRun {
            id: id.into(),
            seq: 1,
            attempt,
            job_id: "j".into(),
            job: "nightly".into(),
            status,
            created_at: 1_000,
            started_at: None,
            last_output_at: output,
        }
    }

    #[test]
    fn a_run_is_watched_while_its_supervisor_holds_it() {
        let live = LiveRuns::default();
        let a = live.add(run("a", 1, RunStatus::Starting, None));
        let b = live.add(run("b", 1, RunStatus::Running, Some(5_000)));
        let mut got = live.snapshot();
        got.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(got[0].status, RunStatus::Starting);
        assert_eq!(got[0].last_output_at, None);
        assert_eq!(
            got[1].last_output_at,
            Some(5_000),
            "adopted: its stored time"
        );

        a.running(2_000);
        a.output.store(3_000, Ordering::Relaxed);
        let got = live.snapshot();
        let a_now = got.iter().find(|r| r.id == "a").unwrap();
        assert_eq!(
            (a_now.status, a_now.started_at),
            (RunStatus::Running, Some(2_000))
        );
        assert_eq!(a_now.last_output_at, Some(3_000));

        drop(a);
        let ids: Vec<String> = live.snapshot().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["b"]);
        // An earlier attempt's guard leaves the next attempt's entry alone.
        let next = live.add(run("b", 2, RunStatus::Starting, None));
        drop(b);
        assert_eq!(live.snapshot().len(), 1);
        drop(next);
        assert!(live.snapshot().is_empty());
    }
}
