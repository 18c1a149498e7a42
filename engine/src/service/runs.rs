//! Triggering, reading and cancelling runs. A trigger snapshots the job's definition, and
//! idempotency is decided by a unique index, so a retried HTTP call never starts a second run.

use std::time::Duration;

use jobdock_types::{
    FieldError, JobSpec, OnConflict, Page, Run, RunAttempt, RunEvent, RunStatus, Scope,
    TriggerRequest,
};
use serde_json::json;

use super::{idempotency, page, validate, Actor, Ctx, Result, ServiceError};
use crate::store::runs::{self, AttemptRow, NewRun, RunRow};
use crate::store::{self, from_ms, now_ms, StoreError};

/// Most runs of one job that may wait in the queue unless the job sets `max_queued`; past
/// it a trigger gets 429.
pub const QUEUE_CAP: i64 = 1000;

/// Who triggers, and with what rights.
#[derive(Debug, Clone)]
pub struct Trigger<'a> {
    /// For the audit log.
    pub actor: &'a Actor,
    /// The caller's scope (overrides are a privilege).
    pub scope: Scope,
    /// `api`, `schedule`, `rerun`.
    pub kind: &'a str,
    /// The `Idempotency-Key` header, if any.
    pub header_key: Option<String>,
    /// The engine's address as the caller reached it, for the links of a callback.
    pub base_url: Option<String>,
}

/// What a trigger did.
#[derive(Debug)]
pub enum Triggered {
    /// A new run (201).
    Created(Box<Run>),
    /// The run an earlier call with the same idempotency key created (200).
    Existing(Box<Run>),
}

/// Why a trigger was refused because of the job's limits.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `on_conflict: reject` and a slot is taken.
    #[error("{what} (on_conflict: reject)")]
    SlotTaken {
        /// Which slot, in words.
        what: String,
        /// A run that holds the slot.
        holder: String,
    },
    /// The job's queue is full.
    #[error("job `{job}`'s queue is full; try again later")]
    QueueFull {
        /// The job.
        job: String,
    },
}

fn check_overrides(
    job: &JobSpec,
    secrets: &[String],
    req: &TriggerRequest,
    scope: Scope,
) -> Result<()> {
    let mut errors = Vec::new();
    for k in req.env.keys() {
        if let Err(m) = validate::var_name(k) {
            errors.push(FieldError::new(format!("env.{k}"), m));
        } else if secrets.contains(k) {
            errors.push(FieldError::new(
                format!("env.{k}"),
                "is a secret of this job; a trigger may not override a secret",
            ));
        }
    }
    if let Some(cmd) = &req.command {
        if cmd.is_empty() {
            errors.push(FieldError::new("command", "must not be empty"));
        }
        if scope < Scope::Operator && !job.allow_command_override {
            return Err(ServiceError::Forbidden(
                "overriding the command needs an operator token, or a job with allow_command_override".into(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(errors))
    }
}

/// Triggers a run of job `name`.
pub async fn trigger(
    ctx: &Ctx,
    t: Trigger<'_>,
    name: &str,
    req: TriggerRequest,
) -> Result<Triggered, TriggerError> {
    let key = idempotency::key_of(&req, t.header_key.as_deref())?;
    let hash = idempotency::request_hash(&req);
    let callback = match &req.callback_uri {
        Some(uri) => Some(super::callbacks::prepare(ctx, uri).await?),
        None => None,
    };
    let callback = callback.as_ref().map(|p| NewCallback {
        prepared: p,
        base_url: t.base_url.as_deref().unwrap_or_default(),
    });
    let mut tx = ctx.store.begin_write().await.map_err(ServiceError::from)?;
    let job = store::jobs::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound(format!("job `{name}` does not exist")),
            e => e.into(),
        })?;
    // A repeated key wins over every other rule: it returns the run it created.
    if let Some(k) = &key {
        if let Some(existing) = runs::by_idempotency_key(&mut tx, &job.id, k)
            .await
            .map_err(ServiceError::from)?
        {
            drop(tx);
            return existing_for_key(ctx, existing, &hash, callback).await;
        }
    }
    // The secrets' names matter only to refuse an override of one.
    let secret_names = match req.env.is_empty() {
        true => Vec::new(),
        false => store::secrets::names(&mut tx, &job.id)
            .await
            .map_err(ServiceError::from)?,
    };
    check_overrides(&job.spec, &secret_names, &req, t.scope)?;

    let mut snapshot = job.spec.clone();
    snapshot.env.extend(req.env.clone());
    if let Some(cmd) = &req.command {
        snapshot.command = Some(cmd.clone());
    }
    let detail = json!({ "env_overrides": req.env.keys().collect::<Vec<_>>(),
                         "command_override": req.command.is_some(), "idempotency_key": key });
    let e = Enqueue {
        kind: t.kind,
        actor: t.actor,
        key: key.as_deref(),
        hash: Some(&hash),
        detail,
        callback,
    };
    enqueue(ctx, tx, &job, &snapshot, e).await
}

/// Triggers the run of a schedule's tick. The idempotency key names the tick, so replicas
/// firing the same tick create one run between them.
pub async fn trigger_scheduled(
    ctx: &Ctx,
    name: &str,
    tick: chrono::DateTime<chrono::Utc>,
) -> Result<Triggered, TriggerError> {
    let actor = Actor {
        token_name: Some("schedule".into()),
        ..Default::default()
    };
    let t = Trigger {
        actor: &actor,
        scope: Scope::Admin,
        kind: "schedule",
        header_key: Some(format!("schedule:{}", tick.to_rfc3339())),
        base_url: None,
    };
    trigger(ctx, t, name, TriggerRequest::default()).await
}

/// Starts a new run of a finished run's job with the definition that run had.
pub async fn rerun(ctx: &Ctx, actor: &Actor, id: &str) -> Result<Triggered, TriggerError> {
    let mut tx = ctx.store.begin_write().await.map_err(ServiceError::from)?;
    let original = runs::get(&mut tx, id).await.map_err(|e| match e {
        StoreError::NotFound => run_not_found(id),
        e => e.into(),
    })?;
    let job = store::jobs::get_for_update(&mut tx, &ctx.store, &original.job_name)
        .await
        .ok()
        .filter(|j| j.id == original.job_id)
        .ok_or_else(|| {
            ServiceError::NotFound(format!(
                "run {id}'s job `{}` has been deleted",
                original.job_name
            ))
        })?;
    let detail = json!({ "rerun_of": id });
    let e = Enqueue {
        kind: "rerun",
        actor,
        key: None,
        hash: None,
        detail,
        callback: None,
    };
    enqueue(ctx, tx, &job, &original.spec, e).await
}

/// How a run comes to be queued.
struct Enqueue<'a> {
    kind: &'a str,
    actor: &'a Actor,
    key: Option<&'a str>,
    hash: Option<&'a str>,
    detail: serde_json::Value,
    callback: Option<NewCallback<'a>>,
}

/// A checked callback to add to the run a trigger makes or finds.
#[derive(Clone, Copy)]
struct NewCallback<'a> {
    prepared: &'a super::callbacks::Prepared,
    base_url: &'a str,
}

/// The one gate every new run passes (trigger, schedule, re-run): the job's `on_conflict`
/// when a slot is taken, its queue cap, then the insert and its audit entry, in the caller's
/// transaction.
async fn enqueue(
    ctx: &Ctx,
    mut tx: store::Tx,
    job: &store::JobRow,
    snapshot: &JobSpec,
    e: Enqueue<'_>,
) -> Result<Triggered, TriggerError> {
    let name = job.name.as_str();
    let unfinished = runs::unfinished_of_job(&mut tx, &job.id)
        .await
        .map_err(ServiceError::from)?;
    let queued = unfinished.queued;
    let blocker = blocker(&mut tx, &job.spec, name, &unfinished)
        .await
        .map_err(ServiceError::from)?;
    let mut status = RunStatus::Queued;
    let mut reason = None;
    match (job.spec.on_conflict.unwrap_or_default(), blocker) {
        (OnConflict::Reject, Some((what, holder))) => {
            return Err(TriggerError::Refused(Refusal::SlotTaken { what, holder }))
        }
        (OnConflict::Skip, Some((what, holder))) => {
            status = RunStatus::Skipped;
            reason = Some(format!(
                "skipped: {what}; run {holder} holds the slot (on_conflict: skip)"
            ));
        }
        _ if queued >= job.spec.max_queued.unwrap_or(QUEUE_CAP) => {
            return Err(TriggerError::Refused(Refusal::QueueFull {
                job: name.into(),
            }))
        }
        _ => {}
    }
    let inserted = runs::insert(
        &mut tx,
        NewRun {
            job_id: &job.id,
            job_name: name,
            status,
            spec: snapshot,
            max_attempts: job.spec.retries.map(|r| r.max_attempts).unwrap_or(1),
            backend: job.spec.backend.map(|b| b.as_str()).unwrap_or("docker"),
            trigger_kind: e.kind,
            triggered_by: e.actor.token_name.as_deref(),
            idempotency_key: e.key,
            request_hash: e.hash,
            reason: reason.as_deref(),
        },
    )
    .await;
    let row = match inserted {
        Ok(row) => row,
        // Another request with the same key committed first: answer with its run.
        Err(StoreError::Conflict(_)) if e.key.is_some() => {
            drop(tx);
            let mut conn = ctx.store.begin_write().await.map_err(ServiceError::from)?;
            let existing = runs::by_idempotency_key(&mut conn, &job.id, e.key.unwrap_or_default())
                .await
                .map_err(ServiceError::from)?
                .ok_or_else(|| {
                    ServiceError::Conflict("idempotency key race; retry the call".into())
                })?;
            drop(conn);
            return existing_for_key(ctx, existing, e.hash.unwrap_or_default(), e.callback).await;
        }
        Err(err) => return Err(ServiceError::from(err).into()),
    };
    let mut detail = e.detail;
    detail["run_id"] = json!(row.id);
    detail["status"] = json!(row.status.as_str());
    detail["trigger"] = json!(e.kind);
    store::audit::record(&mut tx, e.actor.audit("run.trigger", name, detail))
        .await
        .map_err(ServiceError::from)?;
    if let Some(c) = e.callback {
        // A run skipped at trigger is final already: its callback is enqueued at once.
        super::callbacks::add(ctx, &mut tx, c.prepared, &row.id, c.base_url).await?;
    }
    tx.commit()
        .await
        .map_err(|err| ServiceError::from(StoreError::from(err)))?;
    ctx.metrics.run_triggered(name, e.kind);
    if row.status.is_final() {
        ctx.metrics.run_finished(name, row.status, None);
    }
    Ok(Triggered::Created(Box::new(to_api(&row, Vec::new()))))
}

/// Why a run of this job could not start now, with a run holding that slot: the job's
/// `max_parallel` is taken by unfinished runs, or one of its locks is full.
async fn blocker(
    tx: &mut store::Conn,
    spec: &JobSpec,
    name: &str,
    unfinished: &runs::Unfinished,
) -> Result<Option<(String, String)>, StoreError> {
    let max_parallel = spec.max_parallel.unwrap_or(1);
    if unfinished.count >= max_parallel {
        let what =
            format!("job `{name}` already has {max_parallel} run(s) queued, starting or running");
        return Ok(Some((what, unfinished.first.clone().unwrap_or_default())));
    }
    for key in &spec.lock_keys {
        let (held, capacity) = store::locks::lock_usage(tx, key).await?;
        if held >= capacity {
            let holder = store::locks::holding_lock(tx, key)
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            return Ok(Some((
                format!("lock `{key}` is full ({held} of {capacity} taken)"),
                holder,
            )));
        }
    }
    Ok(None)
}

async fn existing_for_key(
    ctx: &Ctx,
    existing: RunRow,
    hash: &str,
    callback: Option<NewCallback<'_>>,
) -> Result<Triggered, TriggerError> {
    if existing.request_hash.as_deref() != Some(hash) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            format!(
                "was used for run {} with a different body; use a new key for a different run",
                existing.id
            ),
        )
        .into());
    }
    // A replay may bring a new callback (Data Factory's retried Webhook activity does): it
    // is added, and called at once when the run has already ended.
    if let Some(c) = callback {
        let mut tx = ctx.store.begin_write().await.map_err(ServiceError::from)?;
        super::callbacks::add(ctx, &mut tx, c.prepared, &existing.id, c.base_url).await?;
        tx.commit()
            .await
            .map_err(|err| ServiceError::from(StoreError::from(err)))?;
    }
    Ok(Triggered::Existing(Box::new(get(ctx, &existing.id).await?)))
}

/// Errors of a trigger: the service's, or a refusal by the job's limits.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A service error.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Refused by the limits.
    #[error(transparent)]
    Refused(Refusal),
}

fn attempt_api(a: &AttemptRow) -> RunAttempt {
    RunAttempt {
        attempt: a.attempt,
        status: a.status,
        exit_code: a.exit_code,
        oom_killed: a.oom_killed,
        reason: a.reason.clone(),
        started_at: a.started_at.map(from_ms),
        finished_at: a.finished_at.map(from_ms),
    }
}

/// The API's view of a run.
pub fn to_api(r: &RunRow, attempts: Vec<AttemptRow>) -> Run {
    let end = r.finished_at.unwrap_or_else(now_ms);
    Run {
        id: r.id.clone(),
        job: r.job_name.clone(),
        status: r.status,
        attempt: r.attempt,
        max_attempts: r.max_attempts,
        exit_code: r.exit_code,
        oom_killed: r.oom_killed,
        reason: r.reason.clone(),
        trigger: r.trigger_kind.clone(),
        triggered_by: r.triggered_by.clone(),
        idempotency_key: r.idempotency_key.clone(),
        created_at: from_ms(r.created_at),
        started_at: r.started_at.map(from_ms),
        finished_at: r.finished_at.map(from_ms),
        next_attempt_at: r.next_attempt_at.map(from_ms),
        queue_ms: r.first_started_at.map(|s| s - r.created_at),
        duration_ms: r.started_at.map(|s| end.max(s) - s),
        attempts: attempts.iter().map(attempt_api).collect(),
        anomalies: Vec::new(),
        log_complete: r.log_complete,
        progress: r
            .progress
            .as_deref()
            .zip(r.progress_at)
            .map(|(text, at)| jobdock_types::RunProgress::parse(text, from_ms(at))),
        logs_url: None,
    }
}

fn run_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("run `{id}` does not exist"))
}

/// One run, with its attempts; an ended run from memory once read (see [`super::finished`]).
pub async fn get(ctx: &Ctx, id: &str) -> Result<Run> {
    if let Some(run) = ctx.finished.get(id) {
        return Ok(Run::clone(&run));
    }
    let (row, attempts, anomalies) = ctx.store.run_view(id).await.map_err(|e| match e {
        StoreError::NotFound => run_not_found(id),
        e => e.into(),
    })?;
    let mut run = to_api(&row, attempts);
    run.anomalies = anomalies;
    ctx.finished.keep(&run);
    Ok(run)
}

/// Most seconds a read may wait for a run to end.
pub const MAX_WAIT_SECONDS: u64 = 60;

/// A read of one run; with `wait_seconds` (at most [`MAX_WAIT_SECONDS`]), a long poll: the
/// answer comes as soon as the run has ended, or when the wait is over. A long poll listens
/// for the run's end before its first read, so an end in between is not missed and the run
/// is read twice, not three times (its status once more to close that gap).
pub struct Reading<'a> {
    ctx: &'a Ctx,
    id: &'a str,
    wait: Option<(Duration, super::watch::EndWait<'a>)>,
}

/// Starts a read of run `id`: [`Reading::now`] answers a poll, and [`Reading::at_end`] a
/// long poll once the caller may see the run.
pub fn reading<'a>(ctx: &'a Ctx, id: &'a str, wait_seconds: Option<u64>) -> Result<Reading<'a>> {
    check_wait(wait_seconds)?;
    let wait = wait_seconds
        .filter(|w| *w > 0)
        .map(|w| (Duration::from_secs(w), ctx.watch.listen(&ctx.store, id)));
    Ok(Reading { ctx, id, wait })
}

impl Reading<'_> {
    /// The run now.
    pub async fn now(&self) -> Result<Run> {
        get(self.ctx, self.id).await
    }

    /// `run` (as [`Reading::now`] read it) if it has ended or the read does not wait;
    /// otherwise the run once it has ended, or when the wait is over.
    pub async fn at_end(self, run: Run) -> Result<Run> {
        match self.wait {
            Some((wait, end)) if !run.status.is_final() => {
                end.wait(wait).await;
                get(self.ctx, self.id).await
            }
            _ => Ok(run),
        }
    }
}

/// Refuses a `wait_seconds` above [`MAX_WAIT_SECONDS`].
pub fn check_wait(wait_seconds: Option<u64>) -> Result<()> {
    match wait_seconds {
        Some(wait) if wait > MAX_WAIT_SECONDS => Err(ServiceError::invalid(
            "wait_seconds",
            format!("must be at most {MAX_WAIT_SECONDS}"),
        )),
        _ => Ok(()),
    }
}

/// A page of a run's timeline, oldest first; the cursor is the last event's id.
pub async fn events(
    ctx: &Ctx,
    id: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<RunEvent>> {
    let after = page::numeric_cursor(cursor)?;
    let items = ctx.store.events_after(id, after, limit as i64).await?;
    let next_cursor = match items.len() == limit {
        true => items.last().map(|e| e.id.to_string()),
        false => None,
    };
    Ok(Page { items, next_cursor })
}

/// The run's row (for authorisation by job name).
pub async fn row(ctx: &Ctx, id: &str) -> Result<RunRow> {
    ctx.store.run(id).await.map_err(|e| match e {
        StoreError::NotFound => run_not_found(id),
        e => e.into(),
    })
}

/// A page of runs, newest first, of the jobs `visible` lets through; the cursor is the last
/// run's position.
pub async fn list(
    ctx: &Ctx,
    job: Option<&str>,
    status: Option<RunStatus>,
    cursor: Option<&str>,
    limit: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<Page<Run>> {
    let cursor = page::numeric_cursor(cursor)?;
    let rows = page::visible(
        cursor,
        limit,
        |before, n| ctx.store.runs(job, status, before, n),
        |r: &RunRow| r.seq,
        |r| visible(&r.job_name),
    )
    .await?;
    let items = rows.items.iter().map(|r| to_api(r, Vec::new())).collect();
    with_anomalies(ctx, items, rows.next_cursor).await
}

/// A page of runs with their anomalies, read in one query.
async fn with_anomalies(ctx: &Ctx, mut items: Vec<Run>, next: Option<String>) -> Result<Page<Run>> {
    let ids: Vec<&str> = items.iter().map(|r| r.id.as_str()).collect();
    let mut found = ctx.store.anomalies_of_runs(&ids).await?;
    for run in &mut items {
        let (mine, rest) = found.into_iter().partition(|a| a.run_id == run.id);
        run.anomalies = mine;
        found = rest;
    }
    Ok(Page {
        items,
        next_cursor: next,
    })
}

/// Cancels a run: a queued run ends at once; a starting or running one is stopped by its
/// supervisor and ends `cancelled` once its container has really stopped.
pub async fn cancel(ctx: &Ctx, actor: &Actor, id: &str) -> Result<Run> {
    let mut tx = ctx.store.begin_write().await?;
    let run = runs::get(&mut tx, id).await.map_err(|e| match e {
        StoreError::NotFound => run_not_found(id),
        e => e.into(),
    })?;
    if run.status.is_final() {
        return Err(ServiceError::Conflict(format!(
            "run {id} has already ended ({})",
            run.status
        )));
    }
    let by = actor.token_name.as_deref().unwrap_or("the engine");
    let ended =
        runs::cancel_queued(&mut tx, id, &format!("cancelled by {by} before it started")).await?;
    if !ended {
        runs::request_cancel(&mut tx, id).await?;
    }
    store::audit::record(
        &mut tx,
        actor.audit("run.cancel", &run.job_name, json!({ "run_id": id })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    if ended {
        ctx.metrics
            .run_finished(&run.job_name, RunStatus::Cancelled, None);
        ctx.watch.ended(id);
    } else {
        ctx.cancels.requested(id);
    }
    get(ctx, id).await
}
