//! The state a job keeps between runs, as Singer taps keep bookmarks.
//!
//! People (operator and admin tokens) write and revert a job's state at once. A run writes
//! with its own token, and its writes are held apart: they become the job's state when the
//! run succeeds, or when the script commits them, so that a failed incremental load never
//! moves the bookmark. Every version is kept up to [`KEEP_VERSIONS`]; writes, commits and
//! reverts are audited. State belongs to the job's name: a job deleted and created again
//! under the same name resumes from its bookmark (write `{}` to start over).

use jobdock_types::{Page, StateVersion};
use serde_json::{json, Map, Value};

use super::{Actor, Ctx, Result, ServiceError};
pub use crate::store::state::KEEP_VERSIONS;
use crate::store::state::{self, VersionRow};
use crate::store::{self, from_ms, StoreError};

/// Largest state accepted, serialised.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;

/// Who reads or writes state.
#[derive(Debug, Clone, Copy)]
pub enum Writer<'a> {
    /// A token's holder: writes are current at once.
    Person(&'a Actor),
    /// A running run, by its own token: writes are held until it succeeds or commits.
    Run(&'a str),
}

/// A job's state and its version (0: none written yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// The state.
    pub state: Map<String, Value>,
    /// Its version, the `ETag`.
    pub version: i64,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The job's state is now this version.
    Current(i64),
    /// A run's write, held until the run succeeds or commits.
    Held,
}

async fn check_job(ctx: &Ctx, job: &str) -> Result<()> {
    match ctx.store.job(job).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
            "job `{job}` does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn parse(text: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(text)
        .map_err(|e| ServiceError::from(StoreError::Corrupt(format!("stored state: {e}"))))
}

/// The job's current state; for a run, what it holds if it has set any.
pub async fn get(ctx: &Ctx, job: &str, who: Writer<'_>) -> Result<Current> {
    check_job(ctx, job).await?;
    let mut conn = ctx.store.read().await?;
    let current = state::current(&mut conn, job).await?;
    let version = current.as_ref().map_or(0, |v| v.version);
    if let Writer::Run(run_id) = who {
        if let Some(held) = state::held(&mut conn, run_id).await? {
            return Ok(Current {
                state: parse(&held)?,
                version,
            });
        }
    }
    Ok(Current {
        state: current
            .map(|v| parse(&v.state))
            .transpose()?
            .unwrap_or_default(),
        version,
    })
}

/// Writes the job's state: current at once for a person (when `if_match`, the version the
/// caller read, still holds), held for a run.
pub async fn put(
    ctx: &Ctx,
    job: &str,
    who: Writer<'_>,
    new: &Map<String, Value>,
    if_match: Option<i64>,
) -> Result<Written> {
    check_job(ctx, job).await?;
    let text = serde_json::to_string(new).expect("JSON values serialise");
    if text.len() > MAX_STATE_BYTES {
        return Err(ServiceError::invalid(
            "state",
            format!(
                "is {} bytes; at most {MAX_STATE_BYTES} are kept",
                text.len()
            ),
        ));
    }
    let mut tx = ctx.store.begin_write().await?;
    match who {
        Writer::Run(run_id) => {
            if let Some(expected) = if_match {
                let now = state::current(&mut tx, job).await?.map_or(0, |v| v.version);
                if now != expected {
                    return Err(stale(job, expected, now));
                }
            }
            state::hold(&mut tx, run_id, &text).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(Written::Held)
        }
        Writer::Person(actor) => {
            let by = actor.token_name.as_deref();
            let version = match state::write(&mut tx, job, &text, if_match, None, by).await {
                Ok(Ok(v)) => v,
                Ok(Err(now)) => return Err(stale(job, if_match.unwrap_or_default(), now)),
                Err(StoreError::Conflict(_)) => return Err(raced(job)),
                Err(e) => return Err(e.into()),
            };
            let detail = json!({ "version": version, "bytes": text.len() });
            store::audit::record(&mut tx, actor.audit("state.write", job, detail)).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(Written::Current(version))
        }
    }
}

/// Makes what run `run_id` holds the job's state now (a script checkpointing a long load);
/// the job's version after.
pub async fn commit(ctx: &Ctx, job: &str, run_id: &str) -> Result<i64> {
    let mut tx = ctx.store.begin_write().await?;
    let version = match state::commit_held(&mut tx, job, run_id).await {
        Ok(Some(v)) => v,
        Ok(None) => state::current(&mut tx, job).await?.map_or(0, |v| v.version),
        Err(StoreError::Conflict(_)) => return Err(raced(job)),
        Err(e) => return Err(e.into()),
    };
    let actor = Actor {
        token_name: Some(format!("run {run_id}")),
        ..Default::default()
    };
    let detail = json!({ "version": version, "run_id": run_id });
    store::audit::record(&mut tx, actor.audit("state.commit", job, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(version)
}

/// Makes version `version`'s content current again, as a new version.
pub async fn revert(ctx: &Ctx, actor: &Actor, job: &str, version: i64) -> Result<Current> {
    check_job(ctx, job).await?;
    let mut tx = ctx.store.begin_write().await?;
    let old = match state::version(&mut tx, job, version).await {
        Ok(v) => v,
        Err(StoreError::NotFound) => {
            return Err(ServiceError::invalid(
                "version",
                format!(
                    "job `{job}` has no state version {version} (the newest {KEEP_VERSIONS} \
                     are kept)"
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let by = actor.token_name.as_deref();
    let new = match state::write(&mut tx, job, &old.state, None, None, by).await {
        Ok(Ok(v)) => v,
        Ok(Err(_)) | Err(StoreError::Conflict(_)) => return Err(raced(job)),
        Err(e) => return Err(e.into()),
    };
    let detail = json!({ "version": new, "reverted_to": version });
    store::audit::record(&mut tx, actor.audit("state.revert", job, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Current {
        state: parse(&old.state)?,
        version: new,
    })
}

/// A page of the job's versions, newest first.
pub async fn versions(
    ctx: &Ctx,
    job: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<StateVersion>> {
    check_job(ctx, job).await?;
    let before = super::page::numeric_cursor(cursor)?;
    let mut conn = ctx.store.read().await?;
    let rows = state::versions(&mut conn, job, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<StateVersion> = rows
        .into_iter()
        .take(limit as usize)
        .map(api)
        .collect::<Result<_>>()?;
    let next_cursor = more
        .then(|| items.last().map(|v| v.version.to_string()))
        .flatten();
    Ok(Page { items, next_cursor })
}

fn api(v: VersionRow) -> Result<StateVersion> {
    Ok(StateVersion {
        version: v.version,
        state: parse(&v.state)?,
        created_at: from_ms(v.created_at),
        run_id: v.run_id,
        created_by: v.created_by,
    })
}

fn stale(job: &str, expected: i64, now: i64) -> ServiceError {
    ServiceError::PreconditionFailed(format!(
        "job `{job}`'s state is at version {now}, not {expected}: another writer got there \
         first; read it again and retry"
    ))
}

fn raced(job: &str) -> ServiceError {
    ServiceError::PreconditionFailed(format!(
        "job `{job}`'s state was written by another caller at the same moment; read it again \
         and retry"
    ))
}
