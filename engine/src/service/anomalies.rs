//! Anomalies seen from the API: a page of them across jobs, newest first, and closing one by
//! hand once someone has looked at it.

use jobdock_types::{Anomaly, AnomalyKind, Page};
use serde_json::json;

use super::{page, Actor, Ctx, Result, ServiceError};
use crate::store::anomalies::AnomalyFilter;

/// Which anomalies a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// Only open (`Some(true)`) or closed (`Some(false)`) ones.
    pub open: Option<bool>,
    /// Only of this job.
    pub job: Option<&'a str>,
    /// Only of this kind.
    pub kind: Option<AnomalyKind>,
}

/// A page of anomalies, newest first, of the jobs `visible` lets through.
pub async fn list(
    ctx: &Ctx,
    filter: Filter<'_>,
    cursor: Option<&str>,
    limit: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<Page<Anomaly>> {
    let cursor = page::numeric_cursor(cursor)?;
    let fetch = |before_id, n| {
        let f = AnomalyFilter {
            open: filter.open,
            job: filter.job,
            kind: filter.kind,
            before_id,
        };
        ctx.store.anomalies(f, n)
    };
    page::visible(
        cursor,
        limit,
        fetch,
        |a: &Anomaly| a.id,
        |a| visible(&a.job),
    )
    .await
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("anomaly `{id}` does not exist"))
}

/// The anomaly of this id, as a path names it.
pub async fn get(ctx: &Ctx, id: &str) -> Result<Anomaly> {
    let n: i64 = id.parse().map_err(|_| not_found(id))?;
    ctx.store.anomaly(n).await?.ok_or_else(|| not_found(id))
}

/// Closes an anomaly by hand, with the reason on record (by default, who closed it).
pub async fn close(
    ctx: &Ctx,
    actor: &Actor,
    anomaly: &Anomaly,
    reason: Option<String>,
) -> Result<Anomaly> {
    let reason = reason
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.chars().take(500).collect())
        .unwrap_or_else(|| {
            let by = actor.token_name.as_deref().unwrap_or("a token");
            format!("closed by {by}")
        });
    let detail =
        json!({ "kind": anomaly.kind.as_str(), "run_id": anomaly.run_id, "reason": reason });
    let target = format!("anomaly/{}", anomaly.id);
    let audit = actor.audit("anomaly.close", &target, detail);
    ctx.store
        .close_anomaly(anomaly.id, &reason, audit)
        .await?
        .ok_or_else(|| not_found(&anomaly.id.to_string()))
}
