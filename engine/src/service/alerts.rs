//! Alerts seen from the API: the record of a channel's deliveries, a test alert, and the check
//! that the channels a job's `alerts` name exist.

use jobdock_types::{Delivery, DeliveryAttempt, FieldError, JobSpec, Page};
use serde_json::json;

use super::{Actor, Ctx, Result, ServiceError};
use crate::store::alerts::channels;
use crate::store::alerts::outbox::{self, AttemptRow, NewAlert, OutboxRow};
use crate::store::{self, from_ms, now_ms, StoreError};

/// Checks that every channel a job's `alerts` names exists, on the caller's transaction (where
/// the database can, the channels stay share-locked until it ends, so none is deleted
/// meanwhile).
pub async fn check_subscriptions(conn: &mut store::Conn, ctx: &Ctx, spec: &JobSpec) -> Result<()> {
    let mut errors = Vec::new();
    for (i, s) in spec.alerts.iter().enumerate() {
        if !channels::exists_for_share(conn, &ctx.store, &s.channel).await? {
            errors.push(FieldError::new(
                format!("alerts[{i}].channel"),
                format!(
                    "no channel `{}` exists; create it with POST /api/v1/channels",
                    s.channel
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(errors))
    }
}

fn api(a: &OutboxRow, attempts: &[AttemptRow]) -> Delivery {
    Delivery {
        id: a.id.clone(),
        event: a.event.clone(),
        job: a.job_name.clone(),
        run_id: a.run_id.clone(),
        summary: a.summary.clone(),
        status: a.status,
        occurred_at: from_ms(a.occurred_at),
        next_attempt_at: a.next_attempt_at.map(from_ms),
        delivered_at: a.delivered_at.map(from_ms),
        attempts: attempts
            .iter()
            .filter(|t| t.outbox_id == a.id)
            .map(|t| DeliveryAttempt {
                attempt: t.attempt,
                at: from_ms(t.at),
                http_status: t.http_status.and_then(|s| u16::try_from(s).ok()),
                error: t.error.clone(),
                duration_ms: t.duration_ms,
            })
            .collect(),
    }
}

async fn channel_id(ctx: &Ctx, name: &str) -> Result<String> {
    match ctx.store.channel(name).await {
        Ok(c) => Ok(c.id),
        Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
            "channel `{name}` does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A page of a channel's deliveries, newest first; the cursor is the last one's position.
pub async fn deliveries(
    ctx: &Ctx,
    channel: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<Delivery>> {
    let cursor = super::page::numeric_cursor(cursor)?;
    let id = channel_id(ctx, channel).await?;
    let mut rows = ctx.store.deliveries(&id, cursor, limit as i64 + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let attempts = ctx.store.delivery_attempts(&ids).await?;
    Ok(Page {
        next_cursor: more
            .then(|| rows.last().map(|r| r.seq.to_string()))
            .flatten(),
        items: rows.iter().map(|r| api(r, &attempts)).collect(),
    })
}

/// One delivery with its attempts.
pub async fn delivery(ctx: &Ctx, id: &str) -> Result<Delivery> {
    let row = ctx.store.alert(id).await?;
    let attempts = ctx
        .store
        .delivery_attempts(std::slice::from_ref(&row.id))
        .await?;
    Ok(api(&row, &attempts))
}

/// Enqueues a test alert for one channel; it is delivered (and retried) like any other.
pub async fn send_test(ctx: &Ctx, actor: &Actor, channel: &str) -> Result<Delivery> {
    let mut tx = ctx.store.begin_write().await?;
    let row = channels::get_for_update(&mut tx, &ctx.store, channel)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ServiceError::NotFound(format!("channel `{channel}` does not exist"))
            }
            e => e.into(),
        })?;
    let by = actor.token_name.as_deref().unwrap_or("the engine");
    let summary = format!("test alert for channel {channel}, sent by {by}");
    let now = now_ms();
    let id = outbox::insert(
        &mut tx,
        &NewAlert {
            channel_id: &row.id,
            event: "test",
            job: None,
            run_id: None,
            occurred_at: now,
            summary: &summary,
            details: &json!({ "test": true }),
            due_at: now,
        },
    )
    .await?;
    store::audit::record(
        &mut tx,
        actor.audit("channel.test", channel, json!({ "delivery_id": id })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    delivery(ctx, &id).await
}
