//! Creating, listing and revoking API tokens, and the first admin token.

use jobdock_types::{CreatedToken, NewToken, Page, Scope, TokenInfo};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{Actor, Ctx, Result, ServiceError};
use crate::auth::{generate_token, hash_token, validate_pattern};
use crate::store::{self, from_ms, NewTokenRow, StoreError, TokenRow};

fn info(row: &TokenRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        scope: row
            .scope
            .parse()
            .map_err(|e: String| StoreError::Corrupt(e))?,
        jobs: row.jobs.clone(),
        created_at: from_ms(row.created_at),
        last_used_at: row.last_used_at.map(from_ms),
    })
}

/// Creates a token; its value is in the answer and nowhere else.
pub async fn create(ctx: &Ctx, actor: &Actor, new: NewToken) -> Result<CreatedToken> {
    let mut errors = Vec::new();
    if new.name.trim().is_empty() || new.name.chars().count() > 100 {
        errors.push(jobdock_types::FieldError::new(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    if let Some(patterns) = &new.jobs {
        if patterns.is_empty() {
            errors.push(jobdock_types::FieldError::new(
                "jobs",
                "must list at least one pattern (leave it out for every job)",
            ));
        }
        for (i, p) in patterns.iter().enumerate() {
            if let Err(m) = validate_pattern(p) {
                errors.push(jobdock_types::FieldError::new(format!("jobs[{i}]"), m));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ServiceError::Invalid(errors));
    }
    let token = generate_token();
    let mut tx = ctx.store.begin_write().await?;
    let row = store::tokens::insert(
        &mut tx,
        NewTokenRow {
            name: &new.name,
            scope: new.scope.as_str(),
            jobs: new.jobs.as_deref(),
            token_hash: &hash_token(&token),
        },
    )
    .await?;
    store::audit::record(
        &mut tx,
        actor.audit(
            "token.create",
            &row.id,
            json!({ "name": row.name, "scope": row.scope, "jobs": row.jobs }),
        ),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(CreatedToken {
        id: row.id,
        name: row.name,
        scope: new.scope,
        jobs: row.jobs,
        token,
    })
}

/// A page of live tokens, oldest first.
pub async fn list(ctx: &Ctx, cursor: Option<&str>, limit: usize) -> Result<Page<TokenInfo>> {
    let rows = ctx.store.tokens_after(cursor, limit as i64 + 1).await?;
    let more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(info)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page {
        next_cursor: if more {
            items.last().map(|t| t.id.clone())
        } else {
            None
        },
        items,
    })
}

/// Revokes a token; from then on it gets 401.
pub async fn revoke(ctx: &Ctx, actor: &Actor, id: &str) -> Result<()> {
    let mut tx = ctx.store.begin_write().await?;
    let row = store::tokens::revoke(&mut tx, id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("token `{id}` does not exist")))?;
    store::audit::record(
        &mut tx,
        actor.audit("token.revoke", id, json!({ "name": row.name })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    // At once on this replica; the others trust what they verified for a moment more.
    ctx.tokens.clear();
    Ok(())
}

/// What bootstrapping did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Tokens existed already; nothing was done.
    AlreadyDone,
    /// The configured token was stored as the first admin token.
    FromConfig,
    /// A token was generated; it must be shown to the operator once.
    Generated(String),
}

/// Creates the first admin token when no token exists yet: the configured value (verbatim,
/// whatever its format) or a generated one. Atomic across replicas starting together.
pub async fn bootstrap(ctx: &Ctx, configured: Option<&SecretString>) -> Result<Bootstrap> {
    let mut tx = ctx.store.begin_write().await?;
    if store::tokens::any_exists(&mut tx).await? {
        return Ok(Bootstrap::AlreadyDone);
    }
    let (value, outcome) = match configured {
        Some(v) => (v.expose_secret().to_string(), Bootstrap::FromConfig),
        None => {
            let t = generate_token();
            (t.clone(), Bootstrap::Generated(t))
        }
    };
    let inserted = store::tokens::insert(
        &mut tx,
        NewTokenRow {
            name: "bootstrap-admin",
            scope: Scope::Admin.as_str(),
            jobs: None,
            token_hash: &hash_token(&value),
        },
    )
    .await;
    match inserted {
        Ok(row) => {
            store::audit::record(
                &mut tx,
                Actor::default().audit("token.bootstrap", &row.id, json!({ "name": row.name })),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(outcome)
        }
        // Another replica bootstrapped the same configured token a moment earlier.
        Err(StoreError::Conflict(_)) => Ok(Bootstrap::AlreadyDone),
        Err(e) => Err(e.into()),
    }
}

/// Makes a new admin token directly in the store, for an operator who has lost every admin
/// token (`jobdock recover-admin`, run where the database is). The value is returned once;
/// the audit log records the recovery.
pub async fn recover_admin(store: &store::Store) -> Result<CreatedToken> {
    let value = generate_token();
    let name = format!(
        "recovered-admin-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let mut tx = store.begin_write().await?;
    let row = store::tokens::insert(
        &mut tx,
        NewTokenRow {
            name: &name,
            scope: Scope::Admin.as_str(),
            jobs: None,
            token_hash: &hash_token(&value),
        },
    )
    .await?;
    store::audit::record(
        &mut tx,
        Actor::default().audit("token.recover", &row.id, json!({ "name": row.name })),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(CreatedToken {
        id: row.id.clone(),
        name: row.name.clone(),
        scope: Scope::Admin,
        jobs: None,
        token: value,
    })
}

/// Whether `token` is one of the stored tokens (revoked ones included).
pub async fn is_known(store: &store::Store, token: &SecretString) -> Result<bool> {
    Ok(store
        .token_by_hash(&hash_token(token.expose_secret()))
        .await?
        .is_some())
}
