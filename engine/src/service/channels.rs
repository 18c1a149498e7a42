//! Notification channels: creating, reading, changing and deleting them. A channel's URL (a
//! Slack webhook URL is a credential) and a webhook's signing secret are sealed with the
//! master keys, bound to the channel's id; the API shows the URL's scheme and host only, and
//! the signing secret once, when it is created. Neither reaches a log or the audit log.

use base64::Engine as _;
use jobdock_types::{
    Channel, ChannelKind, ChannelSubscription, CreatedChannel, FieldError, NewChannel, Page,
};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{validate, Actor, Ctx, Result, ServiceError};
use crate::store::alerts::channels::{self, ChannelFields, ChannelRow};
use crate::store::{self, from_ms, StoreError};

/// Names of a channel's sealed values.
const URL: &str = "url";
const SIGNING_SECRET: &str = "signing_secret";

/// Prefix of generated signing secrets, so that people and secret scanners recognise them.
const SECRET_PREFIX: &str = "jdwh_";

const MAX_URL: usize = 2048;

/// What a channel's URL may be, as the API document declares it: `http` or `https`, a host
/// name or IPv4 address (after optional user information), a port, and a path of printable
/// ASCII (percent-encode the rest). No IPv6 literal.
pub const URL_PATTERN: &str = "^https?://([A-Za-z0-9._~%!$&'()*+,;=:-]+@)?[A-Za-z0-9.-]+(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?([/?#][!-~]*)?$";

static URL_SHAPE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(URL_PATTERN).expect("a valid pattern"));
const MAX_DESCRIPTION: usize = 4096;

/// What the master key binds a channel's sealed values to (never a job name: those have no `:`).
pub fn sealing_context(channel_id: &str) -> String {
    format!("channel:{channel_id}")
}

/// A channel's opened values, for sending.
pub struct Opened {
    /// The whole URL.
    pub url: SecretString,
    /// The webhook's signing secret.
    pub signing_secret: Option<SecretString>,
}

/// Opens the sealed values of a channel.
pub async fn open(ctx: &Ctx, channel_id: &str) -> Result<Opened> {
    let context = sealing_context(channel_id);
    let mut url = None;
    let mut signing_secret = None;
    for sealed in ctx.store.channel_sealed(channel_id).await? {
        let value = ctx.keys.open(&context, &sealed)?;
        match sealed.key.as_str() {
            URL => url = Some(value),
            SIGNING_SECRET => signing_secret = Some(value),
            _ => {}
        }
    }
    let url =
        url.ok_or_else(|| StoreError::Corrupt(format!("channel {channel_id} has no sealed URL")))?;
    Ok(Opened {
        url,
        signing_secret,
    })
}

/// The API's view of a stored channel.
pub fn to_api(row: &ChannelRow) -> Channel {
    Channel {
        name: row.name.clone(),
        kind: row.kind,
        url: row.url_shown.clone(),
        signed: row.kind == ChannelKind::Webhook,
        description: row.description.clone(),
        subscribe: row.subscribe.clone(),
        created_at: from_ms(row.created_at),
        updated_at: from_ms(row.updated_at),
    }
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("channel `{name}` does not exist"))
}

fn channel_err(name: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| match e {
        StoreError::NotFound => not_found(name),
        StoreError::Conflict(_) => {
            ServiceError::Conflict(format!("channel `{name}` already exists"))
        }
        e => e.into(),
    }
}

/// Checks a channel's URL; its scheme and host as shown to people (`https://host/…`).
pub fn check_url(url: &str) -> Result<String, String> {
    if url.is_empty() || url.len() > MAX_URL {
        return Err(format!("must be 1 to {MAX_URL} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if !URL_SHAPE.is_match(url) {
        return Err(
            "must be an http:// or https:// URL of a host name or address, an optional \
             port and a path of printable ASCII, e.g. `https://hooks.example.com/jobdock`"
                .into(),
        );
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("is not a URL ({e}); e.g. `https://hooks.example.com/jobdock`"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("must name a host")?;
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{}://{host}{port}/…", parsed.scheme()))
}

fn check_secret(secret: &str) -> Result<(), String> {
    if !(16..=256).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 16 to 256 printable ASCII characters without spaces".into());
    }
    Ok(())
}

/// Checks a channel-wide subscription; its errors are named under `field`.
fn check_subscription(s: &ChannelSubscription, field: &str, errors: &mut Vec<FieldError>) {
    if let Err(m) = crate::auth::validate_pattern(&s.jobs) {
        errors.push(FieldError::new(format!("{field}.jobs"), m));
    }
    check_events(&s.on, &format!("{field}.on"), errors);
}

/// Checks a list of events: at least one, none twice.
pub fn check_events(on: &[jobdock_types::AlertKind], field: &str, errors: &mut Vec<FieldError>) {
    if on.is_empty() {
        errors.push(FieldError::new(
            field,
            "must name at least one event: failure, timeout, anomaly, recovery, success",
        ));
    }
    for (i, kind) in on.iter().enumerate() {
        if on[..i].contains(kind) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("`{kind}` is named twice"),
            ));
        }
    }
}

fn check_description(d: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(d) = d {
        if d.contains('\0') || d.len() > MAX_DESCRIPTION {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION} bytes, without NUL characters"),
            ));
        }
    }
}

/// A fresh signing secret.
fn generate_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| crate::crypto::CryptoError::Random)?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Checks a whole new channel, naming every bad field; the URL as shown.
fn check_new(new: &NewChannel) -> Result<String> {
    let mut errors = Vec::new();
    if let Err(m) = validate::job_name(&new.name) {
        errors.push(FieldError::new("name", m));
    }
    let shown = check_url(&new.url).map_err(|m| errors.push(FieldError::new("url", m)));
    match (&new.signing_secret, new.kind) {
        (Some(_), ChannelKind::Slack) => errors.push(FieldError::new(
            "signing_secret",
            "only webhook channels sign their requests; leave it out for Slack",
        )),
        (Some(s), ChannelKind::Webhook) => {
            if let Err(m) = check_secret(s) {
                errors.push(FieldError::new("signing_secret", m));
            }
        }
        (None, _) => {}
    }
    check_description(new.description.as_deref(), &mut errors);
    if let Some(s) = &new.subscribe {
        check_subscription(s, "subscribe", &mut errors);
    }
    match shown {
        Ok(shown) if errors.is_empty() => Ok(shown),
        _ => Err(ServiceError::Invalid(errors)),
    }
}

/// Creates a channel. A webhook's signing secret (generated when not given) is in the answer
/// and nowhere else.
pub async fn create(ctx: &Ctx, actor: &Actor, new: NewChannel) -> Result<CreatedChannel> {
    let shown = check_new(&new)?;
    let secret = match (new.kind, new.signing_secret.clone()) {
        (ChannelKind::Webhook, Some(s)) => Some(s),
        (ChannelKind::Webhook, None) => Some(generate_secret()?),
        (ChannelKind::Slack, _) => None,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let context = sealing_context(&id);
    let mut sealed = vec![ctx.keys.seal(&context, URL, &new.url)?];
    if let Some(s) = &secret {
        sealed.push(ctx.keys.seal(&context, SIGNING_SECRET, s)?);
    }
    let fields = ChannelFields {
        kind: new.kind,
        url_shown: &shown,
        description: new.description.as_deref(),
        subscribe: new.subscribe.as_ref(),
    };
    let mut tx = ctx.store.begin_write().await?;
    let row = channels::insert(&mut tx, &id, &new.name, &fields)
        .await
        .map_err(channel_err(&new.name))?;
    for s in &sealed {
        channels::put_sealed(&mut tx, &id, s).await?;
    }
    let detail = json!({
        "kind": new.kind.as_str(),
        "url": shown,
        "subscribe": new.subscribe,
        "signing_secret_generated": new.kind == ChannelKind::Webhook && new.signing_secret.is_none(),
    });
    store::audit::record(&mut tx, actor.audit("channel.create", &row.name, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(CreatedChannel {
        channel: to_api(&row),
        signing_secret: secret,
    })
}

/// One channel.
pub async fn get(ctx: &Ctx, name: &str) -> Result<Channel> {
    let row = ctx.store.channel(name).await.map_err(channel_err(name))?;
    Ok(to_api(&row))
}

/// A page of channels ordered by name.
pub async fn list(ctx: &Ctx, cursor: Option<&str>, limit: usize) -> Result<Page<Channel>> {
    let rows = ctx.store.channels_after(cursor, limit as i64 + 1).await?;
    let more = rows.len() > limit;
    let items: Vec<Channel> = rows.iter().take(limit).map(to_api).collect();
    Ok(Page {
        next_cursor: if more {
            items.last().map(|c| c.name.clone())
        } else {
            None
        },
        items,
    })
}

/// A channel after a merge patch: what the patch may change, and nothing else.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Patched {
    name: String,
    kind: ChannelKind,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    subscribe: Option<ChannelSubscription>,
}

/// Applies `patch` (RFC 7396) to the channel's changeable fields, refusing what cannot change.
fn apply(current: &ChannelRow, patch: &serde_json::Value) -> Result<Patched> {
    for field in ["url", "signing_secret"] {
        if patch.get(field).is_some_and(|v| v.is_null()) {
            return Err(ServiceError::invalid(
                field,
                "cannot be removed; give a new value instead",
            ));
        }
    }
    let mut doc = json!({
        "name": current.name,
        "kind": current.kind,
        "description": current.description,
        "subscribe": current.subscribe,
    });
    json_patch::merge(&mut doc, patch);
    let p: Patched = crate::json::from_value(doc).map_err(ServiceError::Invalid)?;
    if p.name != current.name {
        return Err(ServiceError::invalid("name", "a channel cannot be renamed"));
    }
    if p.kind != current.kind {
        return Err(ServiceError::invalid(
            "kind",
            "a channel's kind cannot change; create another channel",
        ));
    }
    Ok(p)
}

/// Changes a channel with a JSON merge patch (RFC 7396): `url`, `signing_secret` (webhooks),
/// `description`, `subscribe` (`null` removes it).
pub async fn patch(
    ctx: &Ctx,
    actor: &Actor,
    name: &str,
    patch: serde_json::Value,
) -> Result<Channel> {
    let Some(fields) = patch.as_object() else {
        return Err(ServiceError::invalid(
            "",
            "a merge patch must be a JSON object",
        ));
    };
    let changed: Vec<&String> = fields.keys().collect();
    let mut tx = ctx.store.begin_write().await?;
    let current = channels::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(channel_err(name))?;
    let p = apply(&current, &patch)?;
    let mut errors = Vec::new();
    let shown = match &p.url {
        Some(url) => match check_url(url) {
            Ok(shown) => shown,
            Err(m) => {
                errors.push(FieldError::new("url", m));
                String::new()
            }
        },
        None => current.url_shown.clone(),
    };
    if let Some(s) = &p.signing_secret {
        let check = match current.kind {
            ChannelKind::Webhook => check_secret(s),
            ChannelKind::Slack => Err("only webhook channels sign their requests".into()),
        };
        if let Err(m) = check {
            errors.push(FieldError::new("signing_secret", m));
        }
    }
    check_description(p.description.as_deref(), &mut errors);
    if let Some(s) = &p.subscribe {
        check_subscription(s, "subscribe", &mut errors);
    }
    if !errors.is_empty() {
        return Err(ServiceError::Invalid(errors));
    }
    let context = sealing_context(&current.id);
    if let Some(url) = &p.url {
        channels::put_sealed(&mut tx, &current.id, &ctx.keys.seal(&context, URL, url)?).await?;
    }
    if let Some(s) = &p.signing_secret {
        let sealed = ctx.keys.seal(&context, SIGNING_SECRET, s)?;
        channels::put_sealed(&mut tx, &current.id, &sealed).await?;
    }
    let fields = ChannelFields {
        kind: current.kind,
        url_shown: &shown,
        description: p.description.as_deref(),
        subscribe: p.subscribe.as_ref(),
    };
    let row = channels::update(&mut tx, &current.id, &fields).await?;
    let detail = json!({ "changed": changed, "url": shown, "subscribe": p.subscribe });
    store::audit::record(&mut tx, actor.audit("channel.patch", name, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(to_api(&row))
}

/// Deletes a channel with its undelivered alerts and their record. Refused while a job's
/// `alerts` names it.
pub async fn delete(ctx: &Ctx, actor: &Actor, name: &str) -> Result<()> {
    let mut tx = ctx.store.begin_write().await?;
    let row = channels::get_for_update(&mut tx, &ctx.store, name)
        .await
        .map_err(channel_err(name))?;
    let jobs = channels::subscribing_jobs(&mut tx, name).await?;
    if !jobs.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "channel `{name}` is named in the alerts of job(s) {}; remove it from them first",
            jobs.join(", ")
        )));
    }
    channels::delete(&mut tx, &row.id).await?;
    let detail = json!({ "kind": row.kind.as_str(), "url": row.url_shown });
    store::audit::record(&mut tx, actor.audit("channel.delete", name, detail)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Re-seals every channel value not sealed under the ring's first key, on the caller's
/// transaction (a key rotation); how many.
pub async fn reseal(
    conn: &mut store::Conn,
    ring: &crate::crypto::KeyRing,
) -> Result<usize, crate::service::keys::KeyError> {
    let stale = channels::not_sealed_with(conn, ring.primary_id()).await?;
    for (channel_id, sealed) in &stale {
        let context = sealing_context(channel_id);
        let plain = ring.open(&context, sealed)?;
        let resealed = ring.seal(&context, &sealed.key, plain.expose_secret())?;
        channels::put_sealed(conn, channel_id, &resealed).await?;
    }
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_their_scheme_and_host_only() {
        assert_eq!(
            check_url("https://hooks.slack.com/services/T0/B0/XyZsecret").unwrap(),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            check_url("http://127.0.0.1:4567/hook?token=abc").unwrap(),
            "http://127.0.0.1:4567/…"
        );
        assert_eq!(
            check_url("https://user:pw@example.com/x").unwrap(),
            "https://example.com/…"
        );
        for bad in [
            "",
            "not a url",
            "ftp://example.com/x",
            "hooks.slack.com/x",
            "https://",
            "https://exa mple.com/",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_secrets_are_long_random_and_distinct() {
        let a = generate_secret().unwrap();
        assert!(a.starts_with(SECRET_PREFIX) && a.len() >= 40, "{a}");
        assert!(check_secret(&a).is_ok());
        assert_ne!(a, generate_secret().unwrap());
        assert!(check_secret("short").is_err());
        assert!(check_secret("sixteen chars with spaces").is_err());
    }
}
