//! A run's output, streamed from its pod with `follow` and `timestamps`.
//!
//! Kubernetes interleaves stdout and stderr into one stream and does not say which a line
//! came from, so every line is reported as [`LogStream::Stdout`]. Each line starts with the
//! kubelet's RFC 3339 time stamp, which drives `since` (exclusive) and resuming: a stream
//! that ends while the container still runs is reopened from the last line's time
//! (`sinceTime`, whole seconds) and lines at or before it are skipped. Lines written in the
//! same nanosecond as the last one read before a drop could be skipped; kubelet stamps make
//! that all but impossible.

use chrono::{DateTime, DurationRound, Utc};
use futures::{AsyncBufReadExt, StreamExt};
use kube::api::LogParams;
use tokio::sync::mpsc;

use super::{errors, manifest, status, Kube};
use crate::{BackendError, LogLine, LogStream, LogStreamBox, RunHandle, TaskState};

/// Splits `<RFC 3339 time> <text>`; `None` for a line without a stamp.
pub(crate) fn parse_line(raw: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = raw.strip_suffix('\n').unwrap_or(raw);
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let (ts, text) = raw.split_once(' ').unwrap_or((raw, ""));
    let ts = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    Some((ts, text.to_owned()))
}

/// Follows the run's pod output from `since` (exclusive) until the run ends.
pub(crate) fn follow(
    kube: &Kube,
    handle: &RunHandle,
    since: Option<DateTime<Utc>>,
) -> LogStreamBox {
    let (tx, rx) = mpsc::channel(256);
    let kube = kube.clone();
    let handle = handle.clone();
    tokio::spawn(async move {
        if let Err(e) = pump(&kube, &handle, since, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
}

type Sender = mpsc::Sender<Result<LogLine, BackendError>>;

/// Reads the pod's log, reopening it after drops, until the container has terminated and
/// everything up to its end has been read.
async fn pump(
    kube: &Kube,
    handle: &RunHandle,
    mut cursor: Option<DateTime<Utc>>,
    tx: &Sender,
) -> Result<(), BackendError> {
    let mut read_any = false;
    loop {
        let state = match status::state(kube, handle).await {
            Ok(s) => s,
            Err(BackendError::Unavailable(_)) => {
                tokio::time::sleep(kube.poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let pod = match status::pod_of(&kube.pods, &handle.backend_ref).await {
            Ok(p) => p,
            Err(e) if errors::is_transient(&e) => {
                tokio::time::sleep(kube.poll).await;
                continue;
            }
            Err(e) => return Err(errors::from_kube(e)),
        };
        let ended = matches!(state, TaskState::Exited(_) | TaskState::NotFound);
        let Some(pod) = pod else {
            if state == TaskState::NotFound && !read_any {
                return Err(errors::not_found(handle));
            }
            if ended {
                return Ok(());
            }
            tokio::time::sleep(kube.poll).await;
            continue;
        };
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == manifest::CONTAINER))
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
        if !started {
            if ended {
                return Ok(());
            }
            tokio::time::sleep(kube.poll).await;
            continue;
        }
        let terminated = status::terminated(&pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        match read(kube, &name, &mut cursor, !terminated, tx).await {
            Ok(more) => read_any |= more,
            Err(Stop::Closed) => return Ok(()),
            Err(Stop::Api(e)) if errors::code(&e) == Some(404) => {
                return if read_any {
                    Ok(())
                } else {
                    Err(errors::not_found(handle))
                };
            }
            Err(Stop::Api(e)) => {
                tracing::debug!(error = %e, "log stream broke; reopening");
                tokio::time::sleep(kube.poll).await;
            }
        }
        if terminated {
            return Ok(());
        }
    }
}

enum Stop {
    /// The reader went away.
    Closed,
    Api(kube::Error),
}

/// One log request from `cursor`; returns whether it sent any line.
async fn read(
    kube: &Kube,
    pod: &str,
    cursor: &mut Option<DateTime<Utc>>,
    follow: bool,
    tx: &Sender,
) -> Result<bool, Stop> {
    let since_time = cursor.map(|c| {
        // Whole seconds, rounded down: kube rounds to the nearest, which could skip lines.
        let floor = c.duration_trunc(chrono::Duration::seconds(1)).unwrap_or(c);
        k8s_openapi::jiff::Timestamp::from_second(floor.timestamp()).unwrap_or_default()
    });
    let lp = LogParams {
        container: Some(manifest::CONTAINER.into()),
        follow,
        timestamps: true,
        since_time,
        ..LogParams::default()
    };
    let reader = kube.pods.log_stream(pod, &lp).await.map_err(Stop::Api)?;
    let mut lines = Box::pin(reader).lines();
    let mut sent = false;
    while let Some(raw) = lines.next().await {
        let raw = match raw {
            Ok(r) => r,
            Err(e) => return Err(Stop::Api(kube::Error::ReadEvents(e))),
        };
        let Some((ts, line)) = parse_line(&raw) else {
            continue;
        };
        if cursor.is_some_and(|c| ts <= c) {
            continue;
        }
        *cursor = Some(ts);
        let line = LogLine {
            ts,
            stream: LogStream::Stdout,
            line,
            cursor: None,
        };
        tx.send(Ok(line)).await.map_err(|_| Stop::Closed)?;
        sent = true;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_stamp() {
        let (ts, text) = parse_line("2026-01-02T03:04:05.123456789Z hello world\n").unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-02T03:04:05.123456789+00:00");
        assert_eq!(text, "hello world");
        assert_eq!(parse_line("2026-01-02T03:04:05Z").unwrap().1, "");
        assert!(parse_line("no stamp").is_none());
    }
}
