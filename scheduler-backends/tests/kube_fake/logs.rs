//! The fake `GET .../pods/{name}/log`, serving a pod's log records as the kubelet does: one
//! stream for stdout and stderr, each record prefixed with its RFC 3339 stamp when
//! `timestamps=true`, a newline only after a whole line (a line the runtime cut comes as
//! pieces, each with its own stamp), records before `sinceTime` skipped, and with
//! `follow=true` the connection held open until the container has ended.
//!
//! Like the kubelet, it reads only the container's current log file: a new connection
//! starts at the current file's first record, and a follower that reaches the end of a file
//! that has been rotated goes on with the file that is current then, skipping any rotated
//! in between. `limitBytes` cuts the answer after that many bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset};

use super::routes::status;
use super::Cluster;

/// Where one log connection is.
struct Reader {
    cluster: Arc<Cluster>,
    pod: String,
    /// The next record to look at.
    next: usize,
    /// Records sent so far.
    sent: usize,
    since: Option<DateTime<FixedOffset>>,
    timestamps: bool,
    follow: bool,
    /// Break the connection after this many records.
    cut: Option<usize>,
    /// The log file being read; the current one when the connection opens.
    file: Option<u64>,
    /// Bytes the answer may still hold (`limitBytes`).
    limit: Option<usize>,
}

/// Why the log cannot be read, as the API server says it.
fn refusal(cluster: &Cluster, pod: &str, q: &HashMap<String, String>) -> Option<Response> {
    let w = cluster.lock();
    let Some(p) = w.pods.get(pod) else {
        return Some(status(
            404,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
        ));
    };
    let containers = p["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(name) = q.get("container") {
        if !containers.iter().any(|c| c["name"] == name.as_str()) {
            let why = format!("container {name} is not valid for pod {pod}");
            return Some(status(400, "BadRequest", &why));
        }
    }
    let state = &p["status"]["containerStatuses"][0]["state"];
    if state["running"].is_null() && state["terminated"].is_null() {
        let reason = state["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        let name = containers
            .first()
            .and_then(|c| c["name"].as_str())
            .unwrap_or_default();
        let why = format!("container \"{name}\" in pod \"{pod}\" is waiting to start: {reason}");
        return Some(status(400, "BadRequest", &why));
    }
    None
}

pub(crate) async fn serve(
    State(cluster): State<Arc<Cluster>>,
    Path((_ns, pod)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&cluster, &pod, &q) {
        return refused;
    }
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true");
    let cut = cluster.lock().cut_logs_after.take();
    let reader = Reader {
        since: q
            .get("sinceTime")
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
        timestamps: flag("timestamps"),
        follow: flag("follow"),
        cluster,
        pod,
        next: 0,
        sent: 0,
        cut,
        file: None,
        limit: q.get("limitBytes").and_then(|l| l.parse().ok()),
    };
    let stream = futures::stream::unfold(reader, |mut r| async move {
        let chunk = r.next_chunk().await?;
        Some((Ok::<_, std::io::Error>(chunk), r))
    });
    Body::from_stream(stream).into_response()
}

impl Reader {
    /// The records written since the last chunk; `None` once the log is over (or cut).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.cut.is_some_and(|c| self.sent >= c) {
                return None;
            }
            let (chunk, ended) = self.take();
            if !chunk.is_empty() {
                return Some(Bytes::from(chunk));
            }
            if ended || !self.follow || self.limit == Some(0) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Renders the records not sent yet; also says whether the container has ended, read
    /// under the same lock so that no record written before its end is missed.
    fn take(&mut self) -> (Vec<u8>, bool) {
        let cluster = self.cluster.clone();
        let w = cluster.lock();
        let mut out = Vec::new();
        let records = w.logs.get(&self.pod).map(Vec::as_slice).unwrap_or_default();
        let current = records.last().map_or(0, |r| r.file);
        let reading = *self.file.get_or_insert(current);
        for rec in records.iter().skip(self.next) {
            if self.cut.is_some_and(|c| self.sent >= c) || self.limit == Some(0) {
                break;
            }
            self.next += 1;
            if rec.file > reading {
                // The file read is over and rotated: on with the current one.
                self.file = Some(current);
            }
            if Some(rec.file) != self.file {
                continue;
            }
            let at = DateTime::parse_from_rfc3339(&rec.ts).ok();
            if self.since.is_some_and(|s| at.is_some_and(|at| at < s)) {
                continue;
            }
            let start = out.len();
            if self.timestamps {
                out.extend_from_slice(rec.ts.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&rec.text);
            if !rec.partial {
                out.push(b'\n');
            }
            self.sent += 1;
            if let Some(limit) = &mut self.limit {
                let keep = (out.len() - start).min(*limit);
                out.truncate(start + keep);
                *limit -= keep;
            }
        }
        let ended = w
            .pods
            .get(&self.pod)
            .is_none_or(|p| !p["status"]["containerStatuses"][0]["state"]["terminated"].is_null());
        (out, ended)
    }
}
