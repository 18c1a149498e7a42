//! A job's statistics, from the `run_stats` rows that outlive pruned runs.

use jobdock_types::{JobStats, RunStatEntry};

use super::{Ctx, Result, ServiceError};
use crate::store::stats::RunStat;
use crate::store::{from_ms, StoreError};

/// Successful runs the medians and percentiles are taken over.
pub const BASELINE_RUNS: i64 = 20;
/// Latest runs listed.
pub const RECENT_RUNS: i64 = 20;

/// The statistics of live job `name`.
pub async fn job(ctx: &Ctx, name: &str) -> Result<JobStats> {
    ctx.store.job(name).await.map_err(|e| match e {
        StoreError::NotFound => ServiceError::NotFound(format!("job `{name}` does not exist")),
        e => e.into(),
    })?;
    let rows = ctx
        .store
        .job_stats(name, BASELINE_RUNS, RECENT_RUNS)
        .await?;
    let durations: Vec<i64> = rows
        .recent_successes
        .iter()
        .filter_map(|r| r.duration_ms)
        .collect();
    let latencies: Vec<i64> = rows
        .recent_successes
        .iter()
        .filter_map(|r| r.start_latency_ms)
        .collect();
    Ok(JobStats {
        job: name.to_string(),
        count: rows.count,
        success_count: rows.successes,
        baseline_runs: rows.recent_successes.len() as i64,
        median_duration_ms: percentile(&durations, 50),
        p90_duration_ms: percentile(&durations, 90),
        median_start_latency_ms: percentile(&latencies, 50),
        recent: rows.recent.iter().map(entry).collect(),
    })
}

fn entry(r: &RunStat) -> RunStatEntry {
    RunStatEntry {
        run_id: r.run_id.clone(),
        status: r.status,
        finished_at: from_ms(r.finished_at),
        duration_ms: r.duration_ms,
        start_latency_ms: r.start_latency_ms,
    }
}

/// The `p`th percentile by nearest rank: the smallest value with at least `p`% of the values
/// at or below it. `None` for no values.
pub fn percentile(values: &[i64], p: usize) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[4, 1, 3, 2], 50), Some(2));
        assert_eq!(percentile(&[5, 1, 3], 50), Some(3));
        let v: Vec<i64> = (1..=20).rev().collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 90), Some(18));
        assert_eq!(percentile(&v, 100), Some(20));
    }
}
