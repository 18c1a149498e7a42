//! Master keys: loading the ring at start, proving it opens what is stored, and re-sealing
//! every value under a new key.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::Actor;
use crate::crypto::{CryptoError, KeyRing};
use crate::store::{self, Store, StoreError};

/// Where the secrets' master keys come from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given directly (flag, variable or file setting).
    Inline(SecretString),
    /// A file the operator manages.
    File(PathBuf),
    /// `<data-dir>/master.key`, created on first start.
    DataDirFile(PathBuf),
}

/// How the ring was obtained, for the one-time start-up message.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Configured by the operator.
    Configured,
    /// Read from `<data-dir>/master.key`.
    DataDirFile,
    /// `<data-dir>/master.key` was just created.
    Created,
}

/// Why the engine cannot use its keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key is configured where the engine may not create one (PostgreSQL: every replica
    /// must share the key, so it cannot live in one replica's data directory).
    #[error(
        "no master key is configured. With PostgreSQL, set JOBDOCK_MASTER_KEY (or \
         --master-key-file) to the same key on every replica; `jobdock keys generate` makes one"
    )]
    NotConfigured,
    /// Sealed values exist but no key was configured.
    #[error(
        "the database holds secrets sealed with master key(s) {ids}, but no master key is \
         configured and {file} does not exist. Set JOBDOCK_MASTER_KEY or --master-key-file to \
         the key that sealed them; nothing was changed"
    )]
    Missing {
        /// Ids of the keys that sealed stored values.
        ids: String,
        /// The data-directory key file that was looked for.
        file: String,
    },
    /// Sealed values exist that no configured key opens.
    #[error(
        "the configured master key(s) cannot open the stored secrets: {0}. Configure the key \
         that sealed them (a key ring may list several, newest first); nothing was changed"
    )]
    Wrong(String),
    /// A key is malformed or its file unreadable.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loads the ring and checks that it opens one stored value of every sealing key.
/// Creates `<data-dir>/master.key` only when nothing sealed exists yet and `may_create`.
pub async fn load(
    store: &Store,
    source: &MasterKeySource,
    may_create: bool,
) -> Result<(KeyRing, KeyOrigin), KeyError> {
    let mut samples = store.sealing_key_samples().await?;
    for (channel_id, sealed) in store.channel_sealing_key_samples().await? {
        samples.push((super::channels::sealing_context(&channel_id), sealed));
    }
    samples.extend(super::callbacks::sealing_samples(store).await?);
    let (ring, origin) = match source {
        MasterKeySource::Inline(k) => (KeyRing::parse(k)?, KeyOrigin::Configured),
        MasterKeySource::File(p) => (KeyRing::read_file(p)?, KeyOrigin::Configured),
        MasterKeySource::DataDirFile(p) if p.exists() => {
            (KeyRing::read_file(p)?, KeyOrigin::DataDirFile)
        }
        MasterKeySource::DataDirFile(p) => {
            if samples.is_empty() && !may_create {
                return Err(KeyError::NotConfigured);
            }
            if !samples.is_empty() {
                let ids: Vec<&str> = samples.iter().map(|(_, s)| s.key_id.as_str()).collect();
                return Err(KeyError::Missing {
                    ids: ids.join(", "),
                    file: p.display().to_string(),
                });
            }
            (KeyRing::create_file(p)?, KeyOrigin::Created)
        }
    };
    for (context, sealed) in &samples {
        ring.open(context, sealed)
            .map_err(|e| KeyError::Wrong(e.to_string()))?;
    }
    Ok((ring, origin))
}

/// Re-seals every stored value that is not sealed under the ring's first key, in one
/// transaction. Returns how many values were re-sealed.
pub async fn rotate(store: &Store, ring: &KeyRing) -> Result<usize, KeyError> {
    let mut tx = store.begin_write().await?;
    let stale = store::secrets::not_sealed_with(&mut tx, ring.primary_id()).await?;
    for (job_id, job_name, sealed) in &stale {
        let plain = ring.open(job_name, sealed)?;
        let resealed = ring.seal(job_name, &sealed.key, plain.expose_secret())?;
        store::secrets::put(&mut tx, job_id, &resealed).await?;
    }
    let channels = super::channels::reseal(&mut tx, ring).await?;
    let callbacks = super::callbacks::reseal(&mut tx, ring).await?;
    let resealed = stale.len() + channels + callbacks;
    store::audit::record(
        &mut tx,
        Actor::default().audit(
            "keys.rotate",
            ring.primary_id(),
            json!({ "resealed": resealed }),
        ),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(resealed)
}
