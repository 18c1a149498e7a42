//! Authentication and authorisation of API calls, as extractors that run before the body is
//! read: a call that is not allowed gets 401 or 403 whatever its body.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use jobdock_types::Scope;

use super::error::ApiError;
use super::AppState;
use crate::auth::{hash_token, hashes_match, Principal};
use crate::service::Actor;

/// The scope an endpoint needs, as a type.
pub trait NeedScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

macro_rules! scope_marker {
    ($($name:ident => $scope:expr),* $(,)?) => {$(
        #[doc = concat!("Needs the `", stringify!($name), "` scope or more.")]
        #[derive(Debug)]
        pub struct $name;
        impl NeedScope for $name {
            const SCOPE: Scope = $scope;
        }
    )*};
}

scope_marker!(Read => Scope::Read, Trigger => Scope::Trigger, Operator => Scope::Operator, Admin => Scope::Admin);

/// An authenticated caller whose token has at least scope `S`, and who may reach the job
/// named in the path (if the path names one).
#[derive(Debug)]
pub struct Caller<S: NeedScope> {
    /// Who calls.
    pub principal: Principal,
    /// For the audit log.
    pub actor: Actor,
    _scope: PhantomData<S>,
}

impl<S: NeedScope> Caller<S> {
    /// Refuses unless the caller's token reaches job `name`.
    pub fn check_job(&self, name: &str) -> Result<(), ApiError> {
        if self.principal.may_reach_job(name) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token is restricted to other jobs and cannot reach job `{name}`"
            )))
        }
    }
}

impl<S: NeedScope> FromRequestParts<AppState> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(parts, state).await?;
        if !principal.has_scope(S::SCOPE) {
            return Err(ApiError::Forbidden(format!(
                "this endpoint needs a token with scope `{}` or higher; this one has `{}`",
                S::SCOPE.as_str(),
                principal.scope.as_str()
            )));
        }
        let actor = Actor {
            token_id: Some(principal.token_id.clone()),
            token_name: Some(principal.token_name.clone()),
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let caller = Self {
            principal,
            actor,
            _scope: PhantomData,
        };
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await {
            if let Some((_, name)) = params.iter().find(|(k, _)| *k == "name") {
                caller.check_job(name)?;
            }
        }
        Ok(caller)
    }
}

/// A caller with scope `S` whose token reaches every job: the extractor of the endpoints
/// that cover the whole installation (alert channels and their deliveries, metrics, tokens,
/// the audit log, lock capacities). A token restricted to some jobs is refused with 403, so
/// that one customer's token never sees another's jobs, runs or alerts there.
#[derive(Debug)]
pub struct Installation<S: NeedScope>(pub Caller<S>);

impl<S: NeedScope> FromRequestParts<AppState> for Installation<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::<S>::from_request_parts(parts, state).await?;
        if !caller.principal.reaches_all_jobs() {
            return Err(ApiError::Forbidden(
                "this endpoint covers every job of the installation; this token is restricted \
                 to some jobs"
                    .into(),
            ));
        }
        Ok(Self(caller))
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(p) = parts.extensions.get::<Principal>() {
        return Ok(p.clone());
    }
    if !parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        match super::links::signed_run(&state.ctx.keys, parts) {
            Ok(Some(signed)) => return signed_link_principal(state, &signed.run_id).await,
            Ok(None) => {}
            Err(why) => return Err(ApiError::Unauthorized(why)),
        }
    }
    let header =
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "this endpoint needs `Authorization: Bearer <token>` (or Basic, the token as the \
             password)",
            ))?;
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_or_basic)
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`, or `Basic` with the token as \
             the password",
        ))?;
    let token = token.as_str();
    if token.starts_with(crate::crypto::RUN_TOKEN_PREFIX) {
        return Err(ApiError::Unauthorized(
            "a run token reaches only its own job's state (/api/v1/jobs/{name}/state)",
        ));
    }
    let hash = hash_token(token);
    let tokens = &state.ctx.tokens;
    let token = match tokens.get(&hash) {
        Some(cached) => cached,
        None => {
            let row = state
                .ctx
                .store
                .token_by_hash(&hash)
                .await?
                .filter(|row| hashes_match(&row.token_hash, &hash))
                .ok_or(ApiError::Unauthorized("the token is unknown or revoked"))?;
            let principal = Principal::from_row(&row).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("token {} has a corrupt scope", row.id))
            })?;
            tokens.put(hash.clone(), principal, row.last_used_at)
        }
    };
    // Record the use at most once a minute, so that reads stay reads.
    let now = crate::store::now_ms();
    if token.last_used_at.is_none_or(|t| now - t > 60_000) {
        tokens.used(&hash, now);
        let store = state.ctx.store.clone();
        let id = token.principal.token_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.token_used(&id).await {
                tracing::debug!(error = %e, "could not record token use");
            }
        });
    }
    let principal = token.principal;
    Ok(principal)
}

/// Whoever holds a signed link: may read the one run it names (the routes are checked by
/// [`super::links::signed_run`]), so as a principal: read-only, restricted to the run's job.
async fn signed_link_principal(state: &AppState, run_id: &str) -> Result<Principal, ApiError> {
    let run = state.ctx.store.run(run_id).await?;
    let job = glob::Pattern::new(&glob::Pattern::escape(&run.job_name))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("job name as a pattern: {e}")))?;
    Ok(Principal {
        token_id: "signed-link".into(),
        token_name: format!("signed link to run {run_id}"),
        scope: Scope::Read,
        jobs: Some(vec![job]),
    })
}

/// The token of an `Authorization` header: `Bearer <token>`, or HTTP Basic with the token as
/// the password and any user name, for callers that cannot send a bearer header (Data
/// Factory's Webhook activity and linked services offer Basic only).
pub(super) fn bearer_or_basic(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        pair.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    Some(token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::bearer_or_basic as token_of;

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer  abc ").as_deref(), Some("abc"));
        // "adf:jd_secret" and ":jd_secret": the user name is anything, even empty.
        assert_eq!(
            token_of("Basic YWRmOmpkX3NlY3JldA==").as_deref(),
            Some("jd_secret")
        );
        assert_eq!(
            token_of("basic OmpkX3NlY3JldA==").as_deref(),
            Some("jd_secret")
        );
        // "adf:" has no password; "adf" has no colon; not base64; another scheme.
        for bad in [
            "Basic YWRmOg==",
            "Basic YWRm",
            "Basic !!!",
            "Digest abc",
            "Bearer ",
            "abc",
        ] {
            assert_eq!(token_of(bad), None, "{bad}");
        }
    }
}
