//! Runs that have ended, kept in memory for the status polls that Data Factory and Airflow
//! send all day.
//!
//! A run that has reached its final status no longer changes: its outcome, attempts, log
//! flags and progress are written before or with its end, and so are the end-of-run
//! anomalies (in the same transaction). A poll of an ended run is therefore answered from
//! here, without a round trip to the database. What can still happen to an ended run is its
//! removal by retention, days later: this replica forgets what it prunes, and an entry lives
//! at most [`TTL`], which bounds how long a removal by another replica goes unnoticed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use jobdock_types::Run;

/// Most runs kept (a few KiB each at most).
const CAPACITY: usize = 4096;

/// Longest an entry is used.
const TTL: Duration = Duration::from_secs(60);

/// Ended runs, least recently read dropped first.
#[derive(Debug)]
pub struct FinishedRuns {
    runs: Mutex<LruCache<String, (Instant, Arc<Run>)>>,
}

impl Default for FinishedRuns {
    fn default() -> Self {
        Self {
            runs: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl FinishedRuns {
    /// The ended run `id`, when it was read in the last [`TTL`].
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        let mut runs = self.runs.lock().expect("finished runs lock");
        match runs.get(id) {
            Some((at, run)) if at.elapsed() < TTL => Some(run.clone()),
            Some(_) => {
                runs.remove(id);
                None
            }
            None => None,
        }
    }

    /// Keeps `run` if it has ended.
    pub fn keep(&self, run: &Run) {
        if run.status.is_final() {
            let mut runs = self.runs.lock().expect("finished runs lock");
            runs.insert(run.id.clone(), (Instant::now(), Arc::new(run.clone())));
        }
    }

    /// Forgets every run (after retention removed some).
    pub fn forget_all(&self) {
        self.runs.lock().expect("finished runs lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jobdock_types::RunStatus;

    fn run(id: &str, status: RunStatus) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": id, "job": "j", "status": status, "attempt": 1, "max_attempts": 1,
            "oom_killed": false, "trigger": "api", "created_at": "2026-12-05T00:00:00Z",
            "attempts": []
        }))
        .unwrap()
    }

    #[test]
    fn only_ended_runs_are_kept_until_forgotten() {
        let cache = FinishedRuns::default();
        cache.keep(&run("a", RunStatus::Succeeded));
        cache.keep(&run("b", RunStatus::Running));
        cache.keep(&run("c", RunStatus::Queued));
        assert_eq!(cache.get("a").unwrap().status, RunStatus::Succeeded);
        assert!(cache.get("b").is_none(), "a running run changes");
        assert!(cache.get("c").is_none(), "a queued run changes");
        cache.forget_all();
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn the_least_recently_read_go_first() {
        let cache = FinishedRuns::default();
        for i in 0..CAPACITY {
            cache.keep(&run(&format!("r{i}"), RunStatus::Failed));
        }
        assert!(cache.get("r0").is_some(), "read: now the most recent");
        cache.keep(&run("new", RunStatus::Failed));
        assert!(cache.get("r0").is_some());
        assert!(cache.get("r1").is_none(), "the least recently read went");
        assert!(cache.get("new").is_some());
    }
}
