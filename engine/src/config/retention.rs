//! The settings of retention, built from the layered values.

use super::layers::Layers;
use super::ConfigError;
use crate::runner::RetentionConfig;
use crate::store::retention::MIN_AGE_DAYS;

/// The retention settings, checked.
pub(super) fn retention_config(l: &Layers) -> Result<RetentionConfig, ConfigError> {
    let v = &l.values;
    let mut c = RetentionConfig::default();
    if let Some(days) = v.retention_days {
        if days < MIN_AGE_DAYS {
            return Err(l.invalid(
                "retention_days",
                format!(
                    "retention_days must be at least {MIN_AGE_DAYS} (got {days}): runs hold the \
                     idempotency keys that stop a retried trigger from starting a second run"
                ),
            ));
        }
        c.policy.days = days;
    }
    if let Some(n) = v.retention_max_runs_per_job {
        if n < 1 {
            return Err(l.invalid(
                "retention_max_runs_per_job",
                format!("retention_max_runs_per_job must be at least 1 (got {n})"),
            ));
        }
        c.policy.max_runs_per_job = n;
    }
    Ok(c)
}
