//! A typed client for Jobdock's HTTP API, used by the `jobdock` CLI and the end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jobdock_client::Error> {
//! let client = jobdock_client::Client::new("http://127.0.0.1:8080", "my-token")?;
//! for job in client.list_jobs(None).await?.items {
//!     println!("{}", job.name);
//! }
//! # Ok(()) }
//! ```

mod channels;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use jobdock_types as types;
use jobdock_types::*;

/// What can go wrong talking to Jobdock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem (any 4xx or 5xx).
    #[error("{0}")]
    Api(Box<Problem>),
    /// The service could not be reached, or the connection broke.
    #[error("could not reach Jobdock: {0}")]
    Transport(#[from] reqwest::Error),
    /// The base URL is not a URL.
    #[error("bad Jobdock URL `{0}`")]
    BadUrl(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer (HTTP {status}): {body}")]
    Unexpected {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

impl Error {
    /// The problem's HTTP status, when the API answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(p) => Some(p.status),
            Error::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A Jobdock API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the service at `base_url` (e.g. `http://127.0.0.1:8080`) using a bearer token.
    pub fn new(base_url: &str, token: &str) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadUrl(base_url.to_string()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("jobdock-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            base,
            token: token.to_string(),
            http,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`), authorised with the client's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, Error> {
        Self::decode(req.send().await?).await
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            let body = if bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(body).map_err(|_| unexpected(status, &bytes));
        }
        Err(match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => Error::Api(Box::new(p)),
            Err(_) => unexpected(status, &bytes),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(self.request(Method::GET, path)).await
    }

    async fn with_body<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.send(self.request(method, path).json(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(), Error> {
        let _: serde_json::Value = self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    // ---- jobs

    /// Register a job.
    pub async fn create_job(&self, spec: &JobSpec) -> Result<Job, Error> {
        self.with_body(Method::POST, "/api/v1/jobs", spec).await
    }

    /// One page of jobs, ordered by name.
    pub async fn list_jobs(&self, cursor: Option<&str>) -> Result<Page<Job>, Error> {
        self.get(&with_cursor("/api/v1/jobs", cursor)).await
    }

    /// Every job, following the pages.
    pub async fn all_jobs(&self) -> Result<Vec<Job>, Error> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_jobs(cursor.as_deref()).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// One job.
    pub async fn get_job(&self, name: &str) -> Result<Job, Error> {
        self.get(&format!("/api/v1/jobs/{}", seg(name))).await
    }

    /// Replace a job's definition (secrets are kept unless `spec.secrets` is set).
    pub async fn replace_job(&self, spec: &JobSpec) -> Result<Job, Error> {
        let path = format!("/api/v1/jobs/{}", seg(&spec.name));
        self.with_body(Method::PUT, &path, spec).await
    }

    /// Change some fields of a job with a JSON merge patch (RFC 7396).
    pub async fn patch_job(&self, name: &str, patch: &serde_json::Value) -> Result<Job, Error> {
        let req = self
            .request(Method::PATCH, &format!("/api/v1/jobs/{}", seg(name)))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send(req).await
    }

    /// A job's statistics: counts, median and p90 duration over its latest successful runs,
    /// and its latest runs' durations.
    pub async fn job_stats(&self, name: &str) -> Result<JobStats, Error> {
        self.get(&format!("/api/v1/jobs/{}/stats", seg(name))).await
    }

    /// Delete a job; with `force`, its active runs are cancelled first.
    pub async fn delete_job(&self, name: &str, force: bool) -> Result<(), Error> {
        let q = if force { "?force=true" } else { "" };
        self.delete(&format!("/api/v1/jobs/{}{q}", seg(name))).await
    }

    /// Set one secret of a job.
    pub async fn set_secret(&self, job: &str, key: &str, value: &str) -> Result<Job, Error> {
        let path = format!("/api/v1/jobs/{}/secrets/{}", seg(job), seg(key));
        let body = SecretValue {
            value: value.to_string(),
        };
        self.with_body(Method::PUT, &path, &body).await
    }

    /// Remove one secret of a job.
    pub async fn delete_secret(&self, job: &str, key: &str) -> Result<(), Error> {
        self.delete(&format!("/api/v1/jobs/{}/secrets/{}", seg(job), seg(key)))
            .await
    }

    // ---- runs

    /// Triggers a run. Returns the run and whether it was created now (`false`: an earlier
    /// call with the same idempotency key created it).
    pub async fn trigger(
        &self,
        job: &str,
        req: &TriggerRequest,
        idempotency_key: Option<&str>,
    ) -> Result<(Run, bool), Error> {
        let mut r = self
            .request(Method::POST, &format!("/api/v1/jobs/{}/runs", seg(job)))
            .json(req);
        if let Some(k) = idempotency_key {
            r = r.header("Idempotency-Key", k);
        }
        let resp = r.send().await?;
        let created = resp.status() == StatusCode::CREATED;
        let run = Self::decode(resp).await?;
        Ok((run, created))
    }

    /// One run.
    pub async fn get_run(&self, id: &str) -> Result<Run, Error> {
        self.get(&format!("/api/v1/runs/{}", seg(id))).await
    }

    /// The run's whole timeline, oldest first (every page of it).
    pub async fn run_events(&self, id: &str) -> Result<Vec<RunEvent>, Error> {
        let path = format!("/api/v1/runs/{}/events?limit=500", seg(id));
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}&cursor={}", seg(c)),
                None => path.clone(),
            };
            let page: Page<RunEvent> = self.get(&url).await?;
            events.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(events),
            }
        }
    }

    /// The run once it has ended, or as it stands after `wait_seconds` (at most 60): a long
    /// poll, not a sleep loop.
    pub async fn wait_run(&self, id: &str, wait_seconds: u64) -> Result<Run, Error> {
        self.get(&format!(
            "/api/v1/runs/{}?wait_seconds={wait_seconds}",
            seg(id)
        ))
        .await
    }

    /// Waits (with long polls) until the run has ended, for at most `timeout`.
    pub async fn wait_until_final(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<Run, Error> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let left = until
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            let run = self.wait_run(id, left.clamp(1, 60)).await?;
            if run.status.is_final() || std::time::Instant::now() >= until {
                return Ok(run);
            }
        }
    }

    /// One page of runs, newest first.
    pub async fn list_runs(
        &self,
        job: Option<&str>,
        status: Option<RunStatus>,
        cursor: Option<&str>,
    ) -> Result<Page<Run>, Error> {
        let mut q = Vec::new();
        if let Some(j) = job {
            q.push(format!("job={}", seg(j)));
        }
        if let Some(s) = status {
            q.push(format!("status={}", s.as_str()));
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={}", seg(c)));
        }
        let query = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        self.get(&format!("/api/v1/runs{query}")).await
    }

    /// Cancels a run.
    pub async fn cancel_run(&self, id: &str) -> Result<Run, Error> {
        let path = format!("/api/v1/runs/{}/cancel", seg(id));
        self.send(self.request(Method::POST, &path)).await
    }

    /// Starts a new run with the definition this run had.
    pub async fn rerun(&self, id: &str) -> Result<Run, Error> {
        let path = format!("/api/v1/runs/{}/rerun", seg(id));
        self.send(self.request(Method::POST, &path)).await
    }

    // ---- locks

    /// Every lock with its holders and waiters.
    pub async fn list_locks(&self) -> Result<Vec<Lock>, Error> {
        let page: Page<Lock> = self.get("/api/v1/locks").await?;
        Ok(page.items)
    }

    /// One lock with its holders and waiters.
    pub async fn get_lock(&self, key: &str) -> Result<Lock, Error> {
        self.get(&format!("/api/v1/locks/{}", seg(key))).await
    }

    /// Sets how many runs may hold a lock at once.
    pub async fn set_lock_capacity(&self, key: &str, capacity: i64) -> Result<Lock, Error> {
        let path = format!("/api/v1/locks/{}", seg(key));
        self.with_body(Method::PUT, &path, &LockCapacity { capacity })
            .await
    }

    /// A job's state between runs and its version (0 before any is written).
    pub async fn get_state(
        &self,
        job: &str,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, i64), Error> {
        let path = format!("/api/v1/jobs/{}/state", seg(job));
        let resp = self.request(Method::GET, &path).send().await?;
        let version = etag_version(&resp);
        Ok((Self::decode(resp).await?, version))
    }

    /// Replaces a job's state; with `if_version`, only if it is still at that version
    /// (412 otherwise). The new version.
    pub async fn put_state(
        &self,
        job: &str,
        state: &serde_json::Map<String, serde_json::Value>,
        if_version: Option<i64>,
    ) -> Result<i64, Error> {
        let path = format!("/api/v1/jobs/{}/state", seg(job));
        let mut req = self.request(Method::PUT, &path).json(state);
        if let Some(v) = if_version {
            req = req.header("if-match", format!("\"{v}\""));
        }
        let resp = req.send().await?;
        let version = etag_version(&resp);
        Self::decode::<serde_json::Value>(resp).await?;
        Ok(version)
    }

    /// One page of the versions of a job's state, newest first.
    pub async fn state_versions(
        &self,
        job: &str,
        cursor: Option<&str>,
    ) -> Result<Page<StateVersion>, Error> {
        let mut path = format!("/api/v1/jobs/{}/state/versions", seg(job));
        if let Some(c) = cursor {
            path.push_str(&format!("?cursor={}", seg(c)));
        }
        self.get(&path).await
    }

    /// Makes version `version`'s content the job's state again; the new version.
    pub async fn revert_state(&self, job: &str, version: i64) -> Result<i64, Error> {
        let path = format!("/api/v1/jobs/{}/state/revert", seg(job));
        let resp = self
            .request(Method::POST, &path)
            .json(&StateRevert { version })
            .send()
            .await?;
        let new = etag_version(&resp);
        Self::decode::<serde_json::Value>(resp).await?;
        Ok(new)
    }

    /// The run's whole log as text: `<RFC 3339 time> <stream> <line>` per line.
    pub async fn logs_text(&self, id: &str) -> Result<String, Error> {
        let resp = self.logs_response(id, "text", false).await?;
        Ok(resp.text().await?)
    }

    /// The last `n` lines of the run's log, as text.
    pub async fn logs_tail_text(&self, id: &str, n: u32) -> Result<String, Error> {
        let resp = self.logs_response_tail(id, "text", false, Some(n)).await?;
        Ok(resp.text().await?)
    }

    /// The run's whole log as entries.
    pub async fn logs(&self, id: &str) -> Result<Vec<LogEntry>, Error> {
        let text = self.logs_response(id, "jsonl", false).await?.text().await?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|_| Error::Unexpected {
                    status: 200,
                    body: l.chars().take(200).collect(),
                })
            })
            .collect()
    }

    /// The log as a streaming response (`format` `text` or `jsonl`); with `follow`, it stays
    /// open until the run ends.
    pub async fn logs_response(
        &self,
        id: &str,
        format: &str,
        follow: bool,
    ) -> Result<reqwest::Response, Error> {
        self.logs_response_tail(id, format, follow, None).await
    }

    /// As [`Client::logs_response`], with only the last `tail` lines (then the new ones,
    /// when following).
    pub async fn logs_response_tail(
        &self,
        id: &str,
        format: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<reqwest::Response, Error> {
        let mut path = format!(
            "/api/v1/runs/{}/logs?format={format}&follow={follow}",
            seg(id)
        );
        if let Some(n) = tail {
            path.push_str(&format!("&tail={n}"));
        }
        let resp = self.request(Method::GET, &path).send().await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Self::decode::<serde_json::Value>(resp)
                .await
                .err()
                .unwrap_or(Error::Unexpected {
                    status: 0,
                    body: String::new(),
                }))
        }
    }

    // ---- tokens and audit

    /// Create a token; the answer holds its value, shown only this once.
    pub async fn create_token(&self, new: &NewToken) -> Result<CreatedToken, Error> {
        self.with_body(Method::POST, "/api/v1/tokens", new).await
    }

    /// One page of tokens (never their values).
    pub async fn list_tokens(&self, cursor: Option<&str>) -> Result<Page<TokenInfo>, Error> {
        self.get(&with_cursor("/api/v1/tokens", cursor)).await
    }

    /// Revoke a token.
    pub async fn revoke_token(&self, id: &str) -> Result<(), Error> {
        self.delete(&format!("/api/v1/tokens/{}", seg(id))).await
    }

    /// One page of the audit log, newest first.
    pub async fn audit(&self, cursor: Option<&str>) -> Result<Page<AuditEntry>, Error> {
        self.get(&with_cursor("/api/v1/audit", cursor)).await
    }

    /// Anomalies newest first: `open` filters on whether they still call for attention.
    pub async fn anomalies(
        &self,
        open: Option<bool>,
        job: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Page<Anomaly>, Error> {
        let mut q = Vec::new();
        if let Some(o) = open {
            q.push(format!("open={o}"));
        }
        if let Some(j) = job {
            q.push(format!("job={}", seg(j)));
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={}", seg(c)));
        }
        let path = match q.is_empty() {
            true => "/api/v1/anomalies".to_owned(),
            false => format!("/api/v1/anomalies?{}", q.join("&")),
        };
        self.get(&path).await
    }

    /// Closes an anomaly: someone has looked at it.
    pub async fn close_anomaly(&self, id: i64, reason: Option<&str>) -> Result<Anomaly, Error> {
        let path = format!("/api/v1/anomalies/{id}/close");
        let body = serde_json::json!({ "reason": reason });
        self.send(self.request(Method::POST, &path).json(&body))
            .await
    }
}

fn with_cursor(path: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("{path}?cursor={}", seg(c)),
        None => path.to_string(),
    }
}

/// Percent-encodes one path segment or query value. Job names and ids are plain ASCII, but a
/// client must not let a stray `/` or `?` change which endpoint it calls.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unexpected(status: StatusCode, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body);
    Error::Unexpected {
        status: status.as_u16(),
        body: text.chars().take(500).collect(),
    }
}

/// The version an answer's `ETag` names (`"3"`), or 0.
fn etag_version(resp: &reqwest::Response) -> i64 {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("customer-a_1.x"), "customer-a_1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(matches!(
            Client::new("localhost:8080", "t"),
            Err(Error::BadUrl(_))
        ));
        assert_eq!(
            Client::new("http://h:1/", "t").unwrap().base_url(),
            "http://h:1"
        );
    }
}
