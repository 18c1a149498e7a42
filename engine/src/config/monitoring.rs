//! Settings of metrics and retention, resolved from `serve`'s flags and the settings file.

use clap::Args;

use super::{ConfigError, FileSettings};
use crate::runner::RetentionConfig;
use crate::store::retention::MIN_AGE_DAYS;

/// Flags of `jobdock serve` about metrics and retention.
#[derive(Debug, Clone, Args)]
pub struct MonitoringArgs {
    /// Serve `GET /metrics` without a token (by default it needs any token that may read).
    /// [file: metrics_public]
    #[arg(long, env = "JOBDOCK_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Final runs and their logs are pruned this many days after they finished; at least 7.
    /// [file: retention_days] [default: 30]
    #[arg(long, env = "JOBDOCK_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<i64>,

    /// Of each job's runs the newest this many are kept; older final ones are pruned once
    /// they are 7 days old. [file: retention_max_runs_per_job] [default: 1000]
    #[arg(long, env = "JOBDOCK_RETENTION_MAX_RUNS_PER_JOB", value_name = "N")]
    pub retention_max_runs_per_job: Option<i64>,
}

/// Whether `/metrics` needs no token.
pub(super) fn metrics_public(args: &MonitoringArgs, file: &FileSettings) -> bool {
    args.metrics_public || file.metrics_public.unwrap_or(false)
}

/// The retention settings, checked.
pub(super) fn retention_config(
    args: &MonitoringArgs,
    file: &FileSettings,
) -> Result<RetentionConfig, ConfigError> {
    let mut c = RetentionConfig::default();
    if let Some(days) = args.retention_days.or(file.retention_days) {
        if days < MIN_AGE_DAYS {
            return Err(ConfigError(format!(
                "retention_days must be at least {MIN_AGE_DAYS} (got {days}): runs hold the \
                 idempotency keys that stop a retried trigger from starting a second run"
            )));
        }
        c.policy.days = days;
    }
    if let Some(n) = args
        .retention_max_runs_per_job
        .or(file.retention_max_runs_per_job)
    {
        if n < 1 {
            return Err(ConfigError(format!(
                "retention_max_runs_per_job must be at least 1 (got {n})"
            )));
        }
        c.policy.max_runs_per_job = n;
    }
    Ok(c)
}
