//! The URLs the API hands out: absolute, built on `public_url` when it is set and on the
//! request otherwise, and signed for the one run they open, so that a caller that cannot
//! send a header (Data Factory re-polling a `Location`, a person clicking a failure's log
//! link) still gets through, read-only and only until the link expires.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::AppState;
use crate::crypto::KeyRing;
pub use crate::service::links::BaseUrl;

/// How the API builds the URLs it hands out; made by `config`.
#[derive(Debug, Clone, Default)]
pub struct LinkSettings {
    /// The engine's address as its users reach it, without a trailing slash.
    pub public_url: Option<String>,
    /// Build URLs from `X-Forwarded-Proto`/`X-Forwarded-Host` (behind a trusted proxy).
    pub trust_forwarded_headers: bool,
    /// The engine itself speaks HTTPS.
    pub tls: bool,
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(base_of(
            &state.links,
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
        )))
    }
}

fn base_of(s: &LinkSettings, headers: &HeaderMap, authority: Option<&str>) -> String {
    if let Some(url) = &s.public_url {
        return url.clone();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let forwarded = |name| header(name).filter(|_| s.trust_forwarded_headers);
    let scheme = match forwarded("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if s.tls => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| header(header::HOST.as_str()))
        .or(authority)
        .filter(|h| is_host(h))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// A host and optional port as a `Host` header may carry them; anything else (a path, a
/// user, spaces) is not used to build a link.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

/// What a signed link grants: reading the run `run_id`, through the routes below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRun {
    /// The run.
    pub run_id: String,
}

/// The run a signed link opens, if the request is a GET of one of a run's readable routes
/// (`/api/v1/runs/{id}`, `…/logs`, `…/outcome`) with a valid, unexpired signature. `None`
/// when the request carries no signature; an error (for a 401) when it carries a bad one.
pub fn signed_run(keys: &KeyRing, parts: &Parts) -> Result<Option<SignedRun>, &'static str> {
    let Some(query) = parts.uri.query() else {
        return Ok(None);
    };
    let mut exp = None;
    let mut sig = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => exp = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => {}
        }
    }
    let (Some(exp), Some(sig)) = (exp, sig) else {
        return Ok(None);
    };
    let path = parts.uri.path();
    let run_id = path
        .strip_prefix("/api/v1/runs/")
        .map(|rest| rest.trim_end_matches("/logs").trim_end_matches("/outcome"))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .filter(|_| parts.method == axum::http::Method::GET)
        .ok_or("a signed link opens only its run, its log and its outcome, for reading")?;
    let expires_at: i64 = exp.parse().map_err(|_| "the link's `exp` is not a time")?;
    if expires_at < chrono::Utc::now().timestamp() {
        return Err("the link has expired; read the run again for a fresh one");
    }
    if !keys.verify_link(run_id, expires_at, sig) {
        return Err("the link's signature does not match this run");
    }
    Ok(Some(SignedRun {
        run_id: run_id.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_base_is_the_public_url_or_the_request() {
        let public = LinkSettings {
            public_url: Some("https://jd.example.com".into()),
            ..Default::default()
        };
        let h = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "evil.example"),
        ]);
        assert_eq!(base_of(&public, &h, None), "https://jd.example.com");
        let plain = LinkSettings::default();
        assert_eq!(
            base_of(&plain, &h, None),
            "http://10.0.0.5:8080",
            "forwarded ignored"
        );
        let tls = LinkSettings {
            tls: true,
            ..Default::default()
        };
        assert_eq!(base_of(&tls, &h, None), "https://10.0.0.5:8080");
        let proxied = LinkSettings {
            trust_forwarded_headers: true,
            ..Default::default()
        };
        let h = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "jd.example.com, inner"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(base_of(&proxied, &h, None), "https://jd.example.com");
        let odd = headers(&[("host", "a.example/path?x")]);
        assert_eq!(base_of(&plain, &odd, None), "http://localhost");
        assert_eq!(
            base_of(&plain, &HeaderMap::new(), Some("h2.example:443")),
            "http://h2.example:443"
        );
    }

    fn parts(method: &str, uri: &str) -> Parts {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn a_signed_link_opens_its_run_for_reading_only() {
        let keys = KeyRing::parse(&KeyRing::generate_key().unwrap().into()).unwrap();
        let base = BaseUrl("http://h".into());
        for tail in ["", "/logs", "/outcome"] {
            let url = base.signed(&keys, "r1", tail);
            let p = parts("GET", url.strip_prefix("http://h").unwrap());
            assert_eq!(
                signed_run(&keys, &p),
                Ok(Some(SignedRun {
                    run_id: "r1".into()
                })),
                "{url}"
            );
        }
        let url = base.signed(&keys, "r1", "/logs");
        let query = url.split_once('?').unwrap().1;
        assert!(signed_run(
            &keys,
            &parts("GET", &format!("/api/v1/runs/r2/logs?{query}"))
        )
        .is_err());
        assert!(signed_run(
            &keys,
            &parts("POST", &format!("/api/v1/runs/r1/cancel?{query}"))
        )
        .is_err());
        assert!(signed_run(&keys, &parts("GET", &format!("/api/v1/jobs?{query}"))).is_err());
        let sig = query.split_once("&sig=").unwrap().1;
        let expired = format!("/api/v1/runs/r1?exp=1000&sig={sig}");
        assert!(signed_run(&keys, &parts("GET", &expired)).is_err());
        assert_eq!(
            signed_run(&keys, &parts("GET", "/api/v1/runs/r1?wait_seconds=5")),
            Ok(None)
        );
    }
}
