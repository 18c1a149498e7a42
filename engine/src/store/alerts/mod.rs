//! Alerts in the store: notification channels, the outbox of alerts waiting to be delivered,
//! and the one place that turns an event into outbox rows. An alert is enqueued inside the
//! transaction of the change that caused it, so it exists exactly when that change commits
//! and survives any restart until it is delivered or given up.

pub mod channels;
pub mod outbox;
mod run_end;

use std::collections::BTreeSet;

use jobdock_types::AlertSubscription;
use sqlx::Row;

use crate::store::Conn;

use super::{now_ms, Result};

pub use jobdock_types::AlertKind;
pub use outbox::NewAlert;

/// Something that happened to a job, as its channels are told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// What happened.
    pub kind: AlertKind,
    /// The job's name.
    pub job: String,
    /// The run it happened to.
    pub run_id: String,
    /// When, Unix ms.
    pub occurred_at_ms: i64,
    /// In words, e.g. "run 0190… of customer-a-orders failed with exit code 3 after 4m12s".
    pub summary: String,
    /// More, for machines (exit code, durations, …).
    pub details: serde_json::Value,
}

/// Enqueues `event` for every channel that wants it — those the job's `alerts` name for this
/// kind, and those whose channel-wide subscription matches the job — one row per channel.
/// Returns how many rows were enqueued.
///
/// Runs on `conn` only, inside the caller's transaction: taking a second pooled connection
/// inside a write transaction deadlocks on SQLite. The work happens under a savepoint, so an
/// alert that cannot be enqueued (it is logged) never fails the caller's change; only an error
/// that leaves the transaction itself unusable is returned.
pub async fn enqueue_alerts(conn: &mut Conn, event: &AlertEvent) -> Result<usize> {
    conn.savepoint().await?;
    match enqueue_for(&mut *conn, event, &BTreeSet::new()).await {
        Ok(told) => {
            conn.release_savepoint().await?;
            Ok(told.len())
        }
        Err(e) => {
            conn.rollback_to_savepoint().await?;
            tracing::error!(job = %event.job, run_id = %event.run_id, event = %event.kind,
                error = %e, "could not enqueue an alert; the change goes on without it");
            Ok(0)
        }
    }
}

/// Enqueues the alerts of a run that has just reached its final status (failure, timeout,
/// success, recovery), on `conn` inside the transaction that moved it there. Without a
/// channel nobody is told: the caller asks first (`runs::EndNeeds`) and skips this. Like
/// [`enqueue_alerts`], a failure here is logged and never fails the run's end.
pub async fn enqueue_run_end(conn: &mut Conn, run_id: &str) -> Result<usize> {
    conn.savepoint().await?;
    match run_end::enqueue(&mut *conn, run_id).await {
        Ok(n) => {
            conn.release_savepoint().await?;
            Ok(n)
        }
        Err(e) => {
            conn.rollback_to_savepoint().await?;
            tracing::error!(run_id, error = %e, "could not enqueue the run's alerts; the run ends without them");
            Ok(0)
        }
    }
}

/// Inserts `event` for each channel that wants it and is not in `skip`; the ids of the
/// channels told.
async fn enqueue_for(
    conn: &mut Conn,
    event: &AlertEvent,
    skip: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let mut told = BTreeSet::new();
    for channel_id in subscribed_channels(conn, &event.job, event.kind).await? {
        if skip.contains(&channel_id) {
            continue;
        }
        outbox::insert(
            conn,
            &NewAlert {
                channel_id: &channel_id,
                event: event.kind.as_str(),
                job: Some(&event.job),
                run_id: Some(&event.run_id),
                occurred_at: event.occurred_at_ms,
                summary: &event.summary,
                details: &event.details,
                due_at: now_ms(),
            },
        )
        .await?;
        told.insert(channel_id);
    }
    Ok(told)
}

/// The ids of the channels told about `kind` for `job`: named by the job's current
/// definition, or covering it with a channel-wide subscription. Each channel once.
pub async fn subscribed_channels(
    conn: &mut Conn,
    job: &str,
    kind: AlertKind,
) -> Result<Vec<String>> {
    let named: BTreeSet<String> = job_subscriptions(conn, job)
        .await?
        .into_iter()
        .filter(|s| s.on.contains(&kind))
        .map(|s| s.channel)
        .collect();
    let mut ids = Vec::new();
    for ch in channels::all(conn).await? {
        let wide = ch.subscribe.as_ref().is_some_and(|s| {
            s.on.contains(&kind) && glob::Pattern::new(&s.jobs).is_ok_and(|p| p.matches(job))
        });
        if wide || named.contains(&ch.name) {
            ids.push(ch.id);
        }
    }
    Ok(ids)
}

/// The `alerts` of the live job called `job` (none when it is gone). Read leniently: a
/// definition that does not parse alerts nobody rather than failing the caller.
async fn job_subscriptions(conn: &mut Conn, job: &str) -> Result<Vec<AlertSubscription>> {
    #[derive(serde::Deserialize)]
    struct Alerts {
        #[serde(default)]
        alerts: Vec<AlertSubscription>,
    }
    let row = sqlx::query("SELECT spec FROM jobs WHERE name = $1 AND deleted_at IS NULL")
        .bind(job)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    let spec: String = row.try_get("spec")?;
    match serde_json::from_str::<Alerts>(&spec) {
        Ok(a) => Ok(a.alerts),
        Err(e) => {
            tracing::warn!(job, error = %e, "the job's alert subscriptions do not parse; ignoring them");
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests;
