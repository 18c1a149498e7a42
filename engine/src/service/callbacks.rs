//! Callbacks: a trigger's `callBackUri` (Data Factory's Webhook activity adds one to the body
//! it sends) makes the engine POST the run's outcome there once the run is final.
//!
//! The URI is checked against the callback policy (`egress`), sealed with the master keys
//! (it often carries a credential) and kept with the engine's address as the caller reached
//! it, for the links in the callback. The runner sends it through the alert outbox.

use jobdock_types::{Run, RunStatus};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::links::BaseUrl;
use super::{Ctx, Result, ServiceError};
use crate::store::callbacks::{self, CallbackRow, NewCallback, URI};
use crate::store::{self, StoreError};

/// The field a refused URI is reported under, as Data Factory names it.
pub const FIELD: &str = "callBackUri";

/// Longest callback URI accepted.
const MAX_URI: usize = 4096;

/// What the master key binds a callback's URI to (never a job name: those have no `:`).
pub fn sealing_context(callback_id: &str) -> String {
    format!("callback:{callback_id}")
}

/// A checked and sealed callback, ready to add to a run.
#[derive(Debug, Clone)]
pub struct Prepared {
    id: String,
    digest: String,
    shown: String,
    sealed: store::secrets::SealedSecret,
}

/// Checks `uri` against the callback policy and seals it; a refusal names `callBackUri`.
pub async fn prepare(ctx: &Ctx, uri: &str) -> Result<Prepared> {
    if uri.len() > MAX_URI {
        return Err(ServiceError::invalid(
            FIELD,
            format!("must be at most {MAX_URI} characters"),
        ));
    }
    let url = ctx
        .callbacks
        .check(uri)
        .await
        .map_err(|m| ServiceError::invalid(FIELD, m))?;
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = ctx.keys.seal(&sealing_context(&id), URI, url.as_str())?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(Prepared {
        id,
        digest: crate::crypto::sha256_hex(url.as_str().as_bytes()),
        shown: format!(
            "{}://{}{port}/…",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        sealed,
    })
}

/// Adds a prepared callback to run `run_id` on the caller's transaction; it is enqueued at
/// once when the run has already ended. Adding the same URI twice changes nothing.
pub async fn add(
    ctx: &Ctx,
    conn: &mut store::Conn,
    p: &Prepared,
    run_id: &str,
    base_url: &str,
) -> Result<bool> {
    let c = NewCallback {
        id: &p.id,
        run_id,
        uri_digest: &p.digest,
        uri_shown: &p.shown,
        base_url,
        sealed: &p.sealed,
    };
    Ok(callbacks::add(conn, ctx.store.dialect(), &c).await?)
}

/// What the runner sends for one callback: where, and the body.
pub struct Outgoing {
    /// The URI.
    pub uri: SecretString,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Opens callback `id` and builds the body its run's outcome makes.
pub async fn outgoing(ctx: &Ctx, id: &str) -> Result<Outgoing> {
    let row = ctx.store.callback(id).await?;
    let uri = ctx.keys.open(&sealing_context(&row.id), &row.sealed)?;
    let run = super::runs::get(ctx, &row.run_id).await?;
    let run = BaseUrl(row.base_url.clone()).run(&ctx.keys, run);
    let body = serde_json::to_vec(&body(&run)).expect("JSON values serialise");
    Ok(Outgoing { uri, body })
}

/// The body Data Factory's Webhook activity reads with `reportStatusOnCallBack`: the run as
/// `Output`; `StatusCode` "200" for a run that succeeded, else "424" (the status the outcome
/// URL answers such a run with) and an `Error` saying why, which fails the activity.
pub fn body(run: &Run) -> serde_json::Value {
    if run.status == RunStatus::Succeeded {
        return json!({ "Output": run, "StatusCode": "200" });
    }
    let mut message = format!("run {} of job {} {}", run.id, run.job, run.status);
    if let Some(code) = run.exit_code {
        message.push_str(&format!(" with exit code {code}"));
    }
    if let Some(reason) = &run.reason {
        message.push_str(&format!(": {reason}"));
    }
    if let Some(url) = &run.logs_url {
        message.push_str(&format!(". Logs: {url}"));
    }
    json!({
        "Output": run,
        "Error": { "ErrorCode": format!("jobdock_run_{}", run.status), "Message": message },
        "StatusCode": "424",
    })
}

/// Re-seals every callback URI not sealed under the ring's first key, on the caller's
/// transaction (a key rotation); how many.
pub async fn reseal(
    conn: &mut store::Conn,
    ring: &crate::crypto::KeyRing,
) -> Result<usize, super::keys::KeyError> {
    let stale = callbacks::not_sealed_with(conn, ring.primary_id()).await?;
    for c in &stale {
        let context = sealing_context(&c.id);
        let plain = ring.open(&context, &c.sealed)?;
        let resealed = ring.seal(&context, URI, plain.expose_secret())?;
        callbacks::put_sealed(conn, &c.id, &resealed).await?;
    }
    Ok(stale.len())
}

/// One sealed callback URI per master key, with its context, for the start-up check.
pub async fn sealing_samples(
    s: &store::Store,
) -> Result<Vec<(String, store::secrets::SealedSecret)>, StoreError> {
    Ok(s.callback_sealing_key_samples()
        .await?
        .into_iter()
        .map(|c: CallbackRow| (sealing_context(&c.id), c.sealed))
        .collect())
}
