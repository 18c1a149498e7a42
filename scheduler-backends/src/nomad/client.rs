//! A small typed client for the parts of Nomad's HTTP API the backend uses.
//!
//! Every request carries the token (`X-Nomad-Token`) and the namespace and region as query
//! parameters; every answer that is not a success becomes a [`NomadError`] that keeps the
//! HTTP status, so callers can tell a 404 from a 500.

use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::errors::NomadError;

/// How one request reaches Nomad: address, token, namespace and region.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    address: String,
    token: Option<SecretString>,
    namespace: Option<String>,
    region: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Escapes one path segment (a job id, a variable path part) for a URL.
pub(crate) fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for the agent at `address` (e.g. `http://127.0.0.1:4646`).
    pub(crate) fn new(
        address: &str,
        token: Option<SecretString>,
        namespace: Option<String>,
        region: Option<String>,
    ) -> Result<Self, NomadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(NomadError::Transport)?;
        Ok(Self {
            http,
            address: address.trim_end_matches('/').to_owned(),
            token,
            namespace,
            region,
        })
    }

    /// The agent's address, for messages.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The namespace jobs and variables live in, when one is configured.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// A request to `path` (starting with `/v1/`) with the token, namespace and region set.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.address));
        if let Some(token) = &self.token {
            req = req.header("X-Nomad-Token", token.expose_secret());
        }
        if let Some(ns) = &self.namespace {
            req = req.query(&[("namespace", ns)]);
        }
        if let Some(region) = &self.region {
            req = req.query(&[("region", region)]);
        }
        req
    }

    /// Sends `req` and turns a non-success answer into an error with Nomad's words.
    pub(crate) async fn send(req: RequestBuilder) -> Result<Response, NomadError> {
        let resp = req.send().await.map_err(NomadError::Transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(NomadError::Status {
            status: status.as_u16(),
            message: body.trim().to_owned(),
        })
    }

    /// `GET path` decoded as JSON.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, NomadError> {
        let resp = Self::send(self.request(Method::GET, path).query(query)).await?;
        resp.json().await.map_err(NomadError::Decode)
    }

    /// `method path` with a JSON body; the answer's body is ignored.
    pub(crate) async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), NomadError> {
        Self::send(self.request(method, path).json(body)).await?;
        Ok(())
    }

    /// `DELETE path`; a 404 (already gone) counts as done.
    pub(crate) async fn delete(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(), NomadError> {
        match Self::send(self.request(Method::DELETE, path).query(query)).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_slashes_and_spaces() {
        assert_eq!(escape("jobdock-abc-1"), "jobdock-abc-1");
        assert_eq!(escape("parent/dispatch-1 x"), "parent%2Fdispatch-1%20x");
    }
}
