//! Monitoring that every job gets without writing any: anomalies noticed on runs — while
//! they run (`long_running`, `slow_start`, `stalled`, checked by the runner every few
//! seconds) and when they end (`unusually_fast`, `oom_killed`, `timed_out`,
//! `failure_streak`, decided in the transaction that records the end). The rules
//! themselves are in [`rules`]; "usual" is learned from the job's recent successes.

pub mod rules;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jobdock_types::{Anomaly, AnomalyKind, Monitoring, RunStatus};

use crate::store::anomalies::{self, ActiveRun, NewAnomaly};
use crate::store::runs::{Outcome, RunRow};
use crate::store::{now_ms, Conn, Store, StoreError};
use rules::{Finding, Usual};

/// Successes "usual" is learned from.
const HISTORY: i64 = 20;

async fn usual_of(
    conn: &mut Conn,
    job: &str,
    except_run: &str,
    m: &Monitoring,
) -> Result<Option<Usual>, StoreError> {
    let (took, latency) = anomalies::recent_successes(conn, job, except_run, HISTORY).await?;
    Ok(Usual::learn(&took, &latency, m.min_samples))
}

async fn raise(
    conn: &mut Conn,
    run_id: &str,
    attempt: i64,
    job: &str,
    f: Finding,
) -> Result<Option<Anomaly>, StoreError> {
    let a = NewAnomaly {
        run_id,
        attempt,
        job,
        kind: f.kind,
        message: f.message,
        expected: f.expected,
        observed: f.observed,
    };
    anomalies::raise(conn, a).await
}

/// Decides the end-of-run anomalies of a run that has just reached `status`, in the
/// transaction that recorded it; returns those raised.
pub async fn after_finish(
    conn: &mut Conn,
    run: &RunRow,
    status: RunStatus,
    outcome: &Outcome,
) -> Result<Vec<Anomaly>, StoreError> {
    let m = run.spec.monitoring.unwrap_or_default();
    let job = run.job_name.as_str();
    anomalies::close_for_run(conn, &run.id, &format!("the run ended {status}")).await?;
    let finished = outcome.finished_at.unwrap_or_else(now_ms);
    let took = outcome.started_at.or(run.started_at).map(|s| finished - s);
    let mut findings = Vec::new();
    match status {
        RunStatus::Succeeded => {
            let usual = usual_of(conn, job, &run.id, &m).await?;
            let expected = run.spec.expected_duration_seconds;
            if let Some(f) =
                took.and_then(|t| rules::unusually_fast(&m, expected, usual.as_ref(), t))
            {
                findings.push(f);
            } else {
                anomalies::close_for_job(conn, job, &run.id, "a later run succeeded normally")
                    .await?;
            }
        }
        RunStatus::Failed | RunStatus::TimedOut | RunStatus::Lost => {
            if status == RunStatus::TimedOut {
                findings.push(rules::timed_out(run.spec.timeout_seconds, took));
            }
            if outcome.oom_killed {
                let mb = run.spec.resources.and_then(|r| r.memory_mb);
                findings.push(rules::oom_killed(mb));
            }
            let streak = anomalies::failures_in_a_row(conn, job, m.failure_streak + 1).await?;
            findings.extend(rules::failure_streak(&m, streak));
        }
        _ => {}
    }
    let mut raised = Vec::new();
    for f in findings {
        raised.extend(raise(conn, &run.id, run.attempt, job, f).await?);
    }
    Ok(raised)
}

/// What the periodic check keeps between its passes, so that a pass reads only the columns
/// of the active runs that move and does more only for what changed: a run's monitoring
/// settings are read once (its definition is a snapshot), a job's baseline again only once
/// one of its runs has ended, the runs queued behind a job's first only while that one has
/// waited too long (and each of them once), and an anomaly found raised is not looked up
/// again.
#[derive(Debug, Default)]
pub struct ActiveCheck {
    /// Each watched run's monitoring settings and expected duration (seconds).
    settings: HashMap<String, (Monitoring, Option<i64>)>,
    /// The job of each run starting or running here at the last pass.
    job_of: HashMap<String, String>,
    /// Each job's recent successes (durations, start latencies) and when they were read.
    /// Only a run's end adds one, so a job's are read again once a run of it has stopped
    /// running here, and after [`BASELINE_AGE`] for the runs that ended elsewhere or began
    /// and ended between two passes. Reading them for every job on every pass cost a
    /// statement per job every two seconds.
    baselines: HashMap<String, Baseline>,
    /// By job id, while the job's first queued run has waited too long: how far behind it
    /// the queue has been looked at. Runs queue in the order they were triggered, so the
    /// runs that waited too long are the first ones; each stays over its limit while it
    /// waits, so none is read twice.
    slow_upto: HashMap<String, i64>,
    /// Anomalies known to be raised (every pass would find them again).
    raised: HashSet<(String, AnomalyKind)>,
}

/// A job's recent successes as the periodic check last read them.
#[derive(Debug)]
struct Baseline {
    read_at: std::time::Instant,
    took: Vec<i64>,
    latency: Vec<i64>,
}

/// How old a job's baseline may grow while none of its runs is seen to end.
const BASELINE_AGE: Duration = Duration::from_secs(60);

/// Definitions read per statement, for runs new to the check.
const SETTINGS_BATCH: usize = 200;

/// Most runs behind a job's first that one pass looks at; the rest, on the next passes.
const BEHIND_BATCH: i64 = 500;

impl ActiveCheck {
    /// Checks the running runs `going` (those this replica supervises, from memory) for
    /// `long_running` and `stalled`, and them and the runs waiting to start for
    /// `slow_start`; returns the anomalies this pass raised. `stall_after` is the engine's
    /// default.
    ///
    /// A pass reads each job's first queued run; the runs queued behind a job's first only
    /// when that one has waited too long (a later run of the job was triggered after it, and
    /// has waited less). The caveat: the runs behind are looked at when the first has
    /// waited longer than its own settings allow, so a run triggered after its job's
    /// monitoring settings changed may be judged by its own later than it could be, at the
    /// latest once it is first in its job's queue.
    pub async fn pass(
        &mut self,
        store: &Store,
        going: Vec<ActiveRun>,
        stall_after: Duration,
    ) -> Result<Vec<Anomaly>, StoreError> {
        let now = now_ms();
        let mut watched = going;
        watched.extend(store.first_queued_runs().await?);
        self.forget_ended(&watched);
        self.learn_settings(store, &watched).await?;
        let behind = self.waited_too_long_behind(store, &watched, now).await?;
        self.learn_settings(store, &behind).await?;
        watched.extend(behind);
        let ids: HashSet<&str> = watched.iter().map(|r| r.id.as_str()).collect();
        self.settings.retain(|id, _| ids.contains(id.as_str()));
        self.raised.retain(|(id, _)| ids.contains(id.as_str()));

        let mut raised = Vec::new();
        for run in &watched {
            // A run whose definition could not be read (deleted meanwhile) is left alone.
            let Some(&(m, expected)) = self.settings.get(&run.id) else {
                continue;
            };
            let usual = self.usual(store, &run.job, &m).await?;
            let u = usual.as_ref();
            let mut findings = Vec::new();
            match (run.status, run.started_at) {
                (RunStatus::Running, Some(started)) => {
                    findings.extend(rules::long_running(&m, expected, u, now - started));
                    let stall = m
                        .stall_after_seconds
                        .unwrap_or(stall_after.as_secs() as i64);
                    let quiet = now - run.last_output_at.unwrap_or(started).max(started);
                    findings.extend(rules::stalled(stall, quiet));
                }
                // Only a first attempt: a retry waits for its backoff by design.
                (RunStatus::Queued | RunStatus::Starting, _) if run.attempt == 1 => {
                    findings.extend(rules::slow_start(&m, u, now - run.created_at));
                }
                _ => {}
            }
            for f in findings {
                let key = (run.id.clone(), f.kind);
                if self.raised.contains(&key) {
                    continue;
                }
                // Raised by an earlier pass (or another replica): a read, not a write.
                if store.has_anomaly(&run.id, f.kind).await? {
                    self.raised.insert(key);
                    continue;
                }
                let a = NewAnomaly {
                    run_id: &run.id,
                    attempt: run.attempt,
                    job: &run.job,
                    kind: f.kind,
                    message: f.message,
                    expected: f.expected,
                    observed: f.observed,
                };
                raised.extend(store.raise_anomaly(a).await?);
                self.raised.insert(key);
            }
        }
        Ok(raised)
    }

    /// Forgets the baselines of the jobs of runs that stopped running since the last pass
    /// (an end may have added a success), and those too old.
    fn forget_ended(&mut self, watched: &[ActiveRun]) {
        let going: HashMap<&str, &str> = watched
            .iter()
            .filter(|r| r.status != RunStatus::Queued)
            .map(|r| (r.id.as_str(), r.job.as_str()))
            .collect();
        for (id, job) in self.job_of.drain() {
            if !going.contains_key(id.as_str()) {
                self.baselines.remove(&job);
            }
        }
        self.job_of = going
            .iter()
            .map(|(id, job)| (id.to_string(), job.to_string()))
            .collect();
        let jobs: HashSet<&str> = watched.iter().map(|r| r.job.as_str()).collect();
        self.baselines
            .retain(|job, b| jobs.contains(job.as_str()) && b.read_at.elapsed() < BASELINE_AGE);
    }

    /// Reads the monitoring settings of the runs new to the check.
    async fn learn_settings(
        &mut self,
        store: &Store,
        runs: &[ActiveRun],
    ) -> Result<(), StoreError> {
        let new: Vec<&str> = runs
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !self.settings.contains_key(*id))
            .collect();
        for batch in new.chunks(SETTINGS_BATCH) {
            for (id, m, expected) in store.monitoring_of(batch).await? {
                self.settings.insert(id, (m, expected));
            }
        }
        Ok(())
    }

    /// The runs queued behind each job's first queued run that has waited too long, and
    /// have waited too long as well, not looked at by an earlier pass.
    async fn waited_too_long_behind(
        &mut self,
        store: &Store,
        watched: &[ActiveRun],
        now: i64,
    ) -> Result<Vec<ActiveRun>, StoreError> {
        let mut behind = Vec::new();
        let mut slow_jobs = HashSet::new();
        for first in watched.iter().filter(|r| r.status == RunStatus::Queued) {
            let Some(&(m, _)) = self.settings.get(&first.id) else {
                continue;
            };
            let usual = self.usual(store, &first.job, &m).await?;
            let Some(after) = rules::slow_start_after(&m, usual.as_ref()) else {
                continue;
            };
            if now - first.created_at <= after {
                continue;
            }
            slow_jobs.insert(first.job_id.clone());
            let from = self.slow_upto.get(&first.job_id).copied();
            let from = from.unwrap_or(first.seq).max(first.seq);
            let more = store
                .queued_waiting_since(&first.job_id, from, now - after - 1, BEHIND_BATCH)
                .await?;
            if let Some(last) = more.last() {
                self.slow_upto.insert(first.job_id.clone(), last.seq);
            }
            behind.extend(more);
        }
        self.slow_upto.retain(|job, _| slow_jobs.contains(job));
        Ok(behind)
    }

    /// What is usual for `job`, from its baseline (read when the check has none).
    async fn usual(
        &mut self,
        store: &Store,
        job: &str,
        m: &Monitoring,
    ) -> Result<Option<Usual>, StoreError> {
        if !self.baselines.contains_key(job) {
            let (took, latency) = store.recent_successes(job, HISTORY).await?;
            let read_at = std::time::Instant::now();
            let b = Baseline {
                read_at,
                took,
                latency,
            };
            self.baselines.insert(job.to_owned(), b);
        }
        let b = &self.baselines[job];
        Ok(Usual::learn(&b.took, &b.latency, m.min_samples))
    }
}

#[cfg(test)]
mod tests;
