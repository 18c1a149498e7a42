//! Named locks: listing them with their holders and waiters, and setting capacities.

use std::collections::BTreeSet;

use jobdock_types::{Lock, LockRun};
use serde_json::json;

use super::{Actor, Ctx, Result, ServiceError};
use crate::store::{self, StoreError};

fn api(r: store::locks::LockRun) -> LockRun {
    LockRun {
        run_id: r.run_id,
        job: r.job,
        created_at: r.created_at,
    }
}

/// One lock, whether or not its capacity was ever set.
pub async fn get(ctx: &Ctx, key: &str) -> Result<Lock> {
    super::validate::lock_key(key).map_err(|m| ServiceError::invalid("key", m))?;
    let capacity = ctx
        .store
        .lock_capacities()
        .await?
        .into_iter()
        .find(|(k, _)| k == key)
        .map_or(1, |(_, c)| c);
    Ok(Lock {
        key: key.to_string(),
        capacity,
        holders: ctx
            .store
            .lock_runs(key, false)
            .await?
            .into_iter()
            .map(api)
            .collect(),
        waiters: ctx
            .store
            .lock_runs(key, true)
            .await?
            .into_iter()
            .map(api)
            .collect(),
    })
}

/// Every lock: those with a set capacity, those named by live jobs, those runs use.
pub async fn list(ctx: &Ctx) -> Result<Vec<Lock>> {
    let mut keys: BTreeSet<String> = ctx
        .store
        .lock_capacities()
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.extend(ctx.store.keys_in_use().await?);
    let mut after: Option<String> = None;
    loop {
        let jobs = ctx.store.jobs_after(after.as_deref(), 500).await?;
        for j in &jobs {
            keys.extend(j.spec.lock_keys.iter().cloned());
        }
        match jobs.last() {
            Some(j) if jobs.len() == 500 => after = Some(j.name.clone()),
            _ => break,
        }
    }
    let mut locks = Vec::with_capacity(keys.len());
    for k in keys {
        locks.push(get(ctx, &k).await?);
    }
    Ok(locks)
}

/// Sets a lock's capacity.
pub async fn set_capacity(ctx: &Ctx, actor: &Actor, key: &str, capacity: i64) -> Result<Lock> {
    super::validate::lock_key(key).map_err(|m| ServiceError::invalid("key", m))?;
    if !(1..=10_000).contains(&capacity) {
        return Err(ServiceError::invalid(
            "capacity",
            "must be between 1 and 10000",
        ));
    }
    let mut tx = ctx.store.begin_write().await?;
    store::locks::set_capacity(&mut tx, key, capacity).await?;
    store::audit::record(
        &mut tx,
        actor.audit("lock.set", key, json!({ "capacity": capacity })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    get(ctx, key).await
}
