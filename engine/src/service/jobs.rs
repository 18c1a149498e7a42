//! Registering, changing and deleting jobs and their secrets. Each change is validated in
//! full, stored in one transaction together with its audit entry, and never contacts a
//! backend or a registry.

use std::collections::BTreeMap;

use jobdock_types::{Job, JobSpec, OnConflict, Page};
use secrecy::SecretString;
use serde_json::json;

use super::{validate, Actor, Ctx, Result, ServiceError};
use crate::store::{self, from_ms, JobRow, NewJob, StoreError};

/// Seconds between SIGTERM and SIGKILL when a job sets none.
pub const DEFAULT_STOP_GRACE_SECONDS: i64 = 10;

/// Fills in the defaults, so that what is stored (and shown) is what will run.
fn normalise(mut spec: JobSpec, ctx: &Ctx) -> JobSpec {
    spec.backend.get_or_insert(ctx.default_backend);
    spec.max_parallel.get_or_insert(1);
    spec.on_conflict.get_or_insert(OnConflict::Queue);
    spec
}

fn check(spec: &JobSpec, ctx: &Ctx) -> Result<()> {
    validate::job_spec(spec, &ctx.backends).map_err(ServiceError::Invalid)
}

/// The API's view of a stored job.
pub fn to_api(row: &JobRow, secret_names: Vec<String>) -> Job {
    let s = &row.spec;
    Job {
        name: row.name.clone(),
        image: s.image.clone(),
        command: s.command.clone(),
        env: s.env.clone(),
        secret_names,
        backend: s.backend.unwrap_or(jobdock_types::BackendName::Docker),
        resources: s.resources.unwrap_or_default(),
        timeout_seconds: s.timeout_seconds,
        max_parallel: s.max_parallel.unwrap_or(1),
        max_queued: s.max_queued.unwrap_or(crate::service::runs::QUEUE_CAP),
        lock_keys: s.lock_keys.clone(),
        on_conflict: s.on_conflict.unwrap_or_default(),
        schedule: s.schedule.clone(),
        next_fire_times: next_fire_times(s.schedule.as_ref()),
        retries: s.retries,
        expected_duration_seconds: s.expected_duration_seconds,
        monitoring: s.monitoring.unwrap_or_default(),
        allow_command_override: s.allow_command_override,
        stop_grace_seconds: s.stop_grace_seconds.unwrap_or(DEFAULT_STOP_GRACE_SECONDS),
        retry_on: s.retry_on.clone(),
        secret_delivery: s.secret_delivery.unwrap_or_default(),
        network: s.network.clone(),
        log_driver: s.log_driver.clone(),
        registry: s.registry.clone(),
        pull_policy: s.pull_policy,
        labels: s.labels.clone(),
        description: s.description.clone(),
        alerts: s.alerts.clone(),
        created_at: row.created(),
        updated_at: row.updated(),
        last_run: None,
    }
}

/// The next three times a schedule fires.
fn next_fire_times(
    schedule: Option<&jobdock_types::Schedule>,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    let Some(s) = schedule.filter(|s| !s.paused) else {
        return Vec::new();
    };
    match (
        crate::schedule::parse_cron(&s.cron),
        crate::schedule::parse_timezone(&s.timezone),
    ) {
        (Ok(cron), Ok(tz)) => crate::schedule::next_fire_times(&cron, tz, chrono::Utc::now(), 3),
        _ => Vec::new(),
    }
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("job `{name}` does not exist"))
}

fn job_err(name: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| match e {
        StoreError::NotFound => not_found(name),
        StoreError::Conflict(_) => ServiceError::Conflict(format!("job `{name}` already exists")),
        e => e.into(),
    }
}

fn seal_all(
    ctx: &Ctx,
    job: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<Vec<store::SealedSecret>> {
    secrets
        .iter()
        .map(|(k, v)| Ok(ctx.keys.seal(job, k, v)?))
        .collect()
}

async fn view(ctx: &Ctx, row: &JobRow) -> Result<Job> {
    let mut job = to_api(row, ctx.store.secret_names(&row.id).await?);
    job.last_run = ctx
        .store
        .last_run_of(&row.name)
        .await?
        .map(|r| jobdock_types::LastRun {
            id: r.id,
            status: r.status,
            created_at: from_ms(r.created_at_ms),
            finished_at: r.finished_at_ms.map(from_ms),
        });
    Ok(job)
}

/// Registers a new job.
pub async fn create(ctx: &Ctx, actor: &Actor, spec: JobSpec) -> Result<Job> {
    let spec = normalise(spec, ctx);
    check(&spec, ctx)?;
    let sealed = seal_all(
        ctx,
        &spec.name,
        spec.secrets.as_ref().unwrap_or(&BTreeMap::new()),
    )?;
    let mut tx = ctx.store.begin_write().await?;
    super::alerts::check_subscriptions(&mut tx, ctx, &spec).await?;
    let row = store::jobs::insert(&mut tx, NewJob { spec: &spec })
        .await
        .map_err(job_err(&spec.name))?;
    store::secrets::replace_all(&mut tx, &row.id, &sealed).await?;
    let names: Vec<&String> = spec.secrets.iter().flat_map(|s| s.keys()).collect();
    store::audit::record(
        &mut tx,
        actor.audit(
            "job.create",
            &row.name,
            json!({ "image": spec.image, "secret_names": names }),
        ),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    view(ctx, &row).await
}

/// One job.
pub async fn get(ctx: &Ctx, name: &str) -> Result<Job> {
    let row = ctx.store.job(name).await.map_err(job_err(name))?;
    view(ctx, &row).await
}

/// A page of jobs ordered by name, keeping only those `visible` lets through.
pub async fn list(
    ctx: &Ctx,
    cursor: Option<&str>,
    limit: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<Page<Job>> {
    let mut after = cursor.map(str::to_string);
    let mut items = Vec::new();
    // A token restricted to some jobs sees a filtered list; keep reading until the page is
    // full or the table ends, so that a page is never short while more jobs follow.
    loop {
        let batch = ctx
            .store
            .jobs_after(after.as_deref(), limit as i64 + 1)
            .await?;
        let exhausted = batch.len() <= limit;
        for row in &batch {
            if items.len() == limit {
                return Ok(Page {
                    next_cursor: items.last().map(|j: &Job| j.name.clone()),
                    items,
                });
            }
            after = Some(row.name.clone());
            if visible(&row.name) {
                items.push(view(ctx, row).await?);
            }
        }
        if exhausted {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
    }
}

/// Replaces a job's definition. Without `secrets` the stored secrets stay.
pub async fn replace(ctx: &Ctx, actor: &Actor, name: &str, spec: JobSpec) -> Result<Job> {
    if spec.name != name {
        return Err(ServiceError::invalid(
            "name",
            format!("must be `{name}`, the job in the path; a job cannot be renamed"),
        ));
    }
    write(ctx, actor, name, "job.replace", |_| Ok(spec)).await
}

/// Changes a job with a JSON merge patch (RFC 7396). `"secrets"` in the patch replaces the
/// whole set (`null` removes them all).
pub async fn patch(ctx: &Ctx, actor: &Actor, name: &str, patch: serde_json::Value) -> Result<Job> {
    if !patch.is_object() {
        return Err(ServiceError::invalid(
            "",
            "a merge patch must be a JSON object",
        ));
    }
    write(ctx, actor, name, "job.patch", |current| {
        let mut doc = serde_json::to_value(current).expect("a JobSpec serialises");
        json_patch::merge(&mut doc, &patch);
        let secrets_given = patch.get("secrets").is_some();
        if patch.get("secrets").is_some_and(|s| s.is_null()) {
            doc["secrets"] = json!({});
        }
        let mut spec: JobSpec = crate::json::from_value(doc).map_err(ServiceError::Invalid)?;
        if !secrets_given {
            spec.secrets = None;
        }
        if spec.name != name {
            return Err(ServiceError::invalid("name", "a job cannot be renamed"));
        }
        Ok(spec)
    })
    .await
}

/// The shared path of `replace` and `patch`: read under lock, compute, validate, store.
async fn write(
    ctx: &Ctx,
    actor: &Actor,
    name: &str,
    action: &str,
    next: impl FnOnce(&JobSpec) -> Result<JobSpec>,
) -> Result<Job> {
    let mut tx = ctx.store.begin_write().await?;
    let current = store::jobs::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(job_err(name))?;
    let spec = normalise(next(&current.spec)?, ctx);
    check(&spec, ctx)?;
    super::alerts::check_subscriptions(&mut tx, ctx, &spec).await?;
    let row = store::jobs::update(&mut tx, &current.id, &spec).await?;
    let mut detail = json!({ "image": spec.image });
    if let Some(secrets) = &spec.secrets {
        let sealed = seal_all(ctx, name, secrets)?;
        store::secrets::replace_all(&mut tx, &row.id, &sealed).await?;
        detail["secret_names"] = json!(secrets.keys().collect::<Vec<_>>());
    }
    store::audit::record(&mut tx, actor.audit(action, name, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    view(ctx, &row).await
}

/// Deletes a job. Its runs stay readable under the job's name; a later job of the same name
/// starts a history of its own. While runs are queued, starting or running the delete is
/// refused, unless `force`, which cancels them first (running ones stop as any cancel does).
pub async fn delete(ctx: &Ctx, actor: &Actor, name: &str, force: bool) -> Result<()> {
    let mut tx = ctx.store.begin_write().await?;
    let row = store::jobs::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(job_err(name))?;
    let active = store::runs::unfinished_for_job(&mut tx, &row.id).await?;
    if !active.is_empty() && !force {
        let ids: Vec<&str> = active.iter().map(|r| r.id.as_str()).collect();
        return Err(ServiceError::Conflict(format!(
            "job `{name}` has {} unfinished run(s) ({}); cancel them, or delete with ?force=true",
            ids.len(),
            ids.join(", ")
        )));
    }
    let mut cancelled_queued = Vec::new();
    for run in &active {
        let reason = format!("cancelled: job `{name}` was deleted");
        if store::runs::cancel_queued(&mut tx, &run.id, &reason).await? {
            cancelled_queued.push(run.id.as_str());
        } else {
            store::runs::request_cancel(&mut tx, &run.id).await?;
        }
    }
    let requested: Vec<&str> = active
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !cancelled_queued.contains(id))
        .collect();
    store::jobs::soft_delete(&mut tx, &row.id).await?;
    let cancelled: Vec<&str> = active.iter().map(|r| r.id.as_str()).collect();
    let detail = json!({ "force": force, "cancelled_runs": cancelled });
    store::audit::record(&mut tx, actor.audit("job.delete", name, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    for id in cancelled_queued {
        ctx.metrics
            .run_finished(name, jobdock_types::RunStatus::Cancelled, None);
        ctx.watch.ended(id);
    }
    for id in requested {
        ctx.cancels.requested(id);
    }
    Ok(())
}

/// Sets one secret of a job.
pub async fn set_secret(
    ctx: &Ctx,
    actor: &Actor,
    name: &str,
    key: &str,
    value: &str,
) -> Result<Job> {
    validate::var_name(key).map_err(|m| ServiceError::invalid("key", m))?;
    if value.contains('\0') {
        return Err(ServiceError::invalid(
            "value",
            "must not contain a NUL character",
        ));
    }
    let mut tx = ctx.store.begin_write().await?;
    let row = store::jobs::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(job_err(name))?;
    if row.spec.env.contains_key(key) {
        return Err(ServiceError::invalid(
            "key",
            format!("`{key}` is a plain variable of this job (env); a name is one or the other"),
        ));
    }
    store::secrets::put(&mut tx, &row.id, &ctx.keys.seal(name, key, value)?).await?;
    store::jobs::touch(&mut tx, &row.id).await?;
    store::audit::record(
        &mut tx,
        actor.audit("secret.set", name, json!({ "key": key })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    get(ctx, name).await
}

/// Removes one secret of a job.
pub async fn delete_secret(ctx: &Ctx, actor: &Actor, name: &str, key: &str) -> Result<()> {
    let mut tx = ctx.store.begin_write().await?;
    let row = store::jobs::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(job_err(name))?;
    if !store::secrets::delete(&mut tx, &row.id, key).await? {
        return Err(ServiceError::NotFound(format!(
            "job `{name}` has no secret `{key}`"
        )));
    }
    store::jobs::touch(&mut tx, &row.id).await?;
    store::audit::record(
        &mut tx,
        actor.audit("secret.delete", name, json!({ "key": key })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// The plain values of a job's secrets, for handing to a run.
pub async fn open_secrets_of(
    ctx: &Ctx,
    job_id: &str,
    job_name: &str,
) -> Result<Vec<(String, SecretString)>> {
    let sealed = ctx.store.secrets(job_id).await?;
    sealed
        .iter()
        .map(|s| Ok((s.key.clone(), ctx.keys.open(job_name, s)?)))
        .collect()
}
