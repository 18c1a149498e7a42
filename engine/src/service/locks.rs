//! Named locks: listing them with their holders and waiters, and setting capacities.

use std::collections::BTreeSet;

use jobdock_types::{Lock, LockRun};
use serde_json::json;

use super::{Actor, Ctx, Result, ServiceError};
use crate::auth::Principal;
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
        other_holders: 0,
        other_waiters: 0,
    })
}

/// What `principal` may see of a lock: its own jobs' holders and waiters, the others as
/// counts. `None` when none of its jobs names or uses the lock.
fn seen_by(mut lock: Lock, principal: &Principal, named: &BTreeSet<String>) -> Option<Lock> {
    if principal.reaches_all_jobs() {
        return Some(lock);
    }
    let before = (lock.holders.len(), lock.waiters.len());
    lock.holders.retain(|r| principal.may_reach_job(&r.job));
    lock.waiters.retain(|r| principal.may_reach_job(&r.job));
    lock.other_holders = (before.0 - lock.holders.len()) as i64;
    lock.other_waiters = (before.1 - lock.waiters.len()) as i64;
    let own = named.contains(&lock.key) || !lock.holders.is_empty() || !lock.waiters.is_empty();
    own.then_some(lock)
}

/// The lock names of the jobs `principal` reaches.
async fn named_by_own_jobs(ctx: &Ctx, principal: &Principal) -> Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let jobs = ctx.store.jobs_after(after.as_deref(), 500).await?;
        for j in jobs.iter().filter(|j| principal.may_reach_job(&j.name)) {
            keys.extend(j.spec.lock_keys.iter().cloned());
        }
        match jobs.last() {
            Some(j) if jobs.len() == 500 => after = Some(j.name.clone()),
            _ => break,
        }
    }
    Ok(keys)
}

/// One lock as `principal` may see it; not found when none of its jobs names or uses it.
pub async fn read(ctx: &Ctx, key: &str, principal: &Principal) -> Result<Lock> {
    let lock = get(ctx, key).await?;
    let named = match principal.reaches_all_jobs() {
        true => BTreeSet::new(),
        false => named_by_own_jobs(ctx, principal).await?,
    };
    seen_by(lock, principal, &named)
        .ok_or_else(|| ServiceError::NotFound(format!("lock `{key}` does not exist")))
}

/// Every lock `principal` may see (see [`read`]): those with a set capacity, those named by
/// live jobs, those runs use.
pub async fn list(ctx: &Ctx, principal: &Principal) -> Result<Vec<Lock>> {
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
    let named = match principal.reaches_all_jobs() {
        true => BTreeSet::new(),
        false => named_by_own_jobs(ctx, principal).await?,
    };
    let mut locks = Vec::with_capacity(keys.len());
    for k in keys {
        locks.extend(seen_by(get(ctx, &k).await?, principal, &named));
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
