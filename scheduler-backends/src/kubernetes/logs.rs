//! A run's output, streamed from its pod with `follow` and `timestamps`.
//!
//! Kubernetes interleaves stdout and stderr into one stream and does not say which a line
//! came from, so every line is reported as [`LogStream::Stdout`]. Each line starts with the
//! kubelet's RFC 3339 time stamp, which drives `since` (exclusive) and resuming: a stream
//! that ends while the container still runs is reopened from the last line's time
//! (`sinceTime`, whole seconds) and lines at or before it are skipped; a line's stamp is
//! also its cursor, so the engine resumes after it. Lines written in the
//! same nanosecond as the last one read before a drop could be skipped; kubelet stamps make
//! that all but impossible.
//!
//! The kubelet serves what the container runtime recorded, record by record: a line the
//! runtime cut into pieces comes with a stamp before each piece (see [`join_pieces`]), and
//! the text is whatever bytes the container wrote (read as lossy UTF-8).
//!
//! The kubelet rotates a container's log file at `containerLogMaxSize` (10 Mi by default)
//! and serves only the current file: a read that resumes from a time before the current
//! file's first record has lost what lay between, and says so with a [`LogGap`] first. A
//! follower the kubelet moves on to the current file after a rotation skips any file
//! rotated in between; the API shows no trace of that, so it cannot be reported.

use std::borrow::Cow;

use chrono::{DateTime, DurationRound, Utc};
use futures::{AsyncBufReadExt, StreamExt};
use kube::api::LogParams;
use tokio::sync::mpsc;

use super::{errors, manifest, status, Kube};
use crate::{
    BackendError, LogFrom, LogGap, LogItem, LogLine, LogStream, LogStreamBox, RunHandle, TaskState,
};

/// The smallest piece containerd cuts a long line into; its `max_container_log_line_size`
/// is 16 KiB unless configured otherwise.
const MIN_PIECE: usize = 4096;

/// Splits `<RFC 3339 time> <text>`; `None` for a line without a stamp.
pub(crate) fn parse_line(raw: &[u8]) -> Option<(DateTime<Utc>, String)> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let (ts, text) = match raw.iter().position(|b| *b == b' ') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &[][..]),
    };
    let ts = DateTime::parse_from_rfc3339(std::str::from_utf8(ts).ok()?).ok()?;
    let text = String::from_utf8_lossy(&join_pieces(text)).into_owned();
    Some((ts.with_timezone(&Utc), text))
}

/// The length of the `<stamp> ` the kubelet puts before a record, if `s` starts with one.
fn stamp_len(s: &[u8]) -> Option<usize> {
    let space = s.iter().take(40).position(|b| *b == b' ')?;
    let stamp = std::str::from_utf8(&s[..space]).ok()?;
    let fixed = stamp.len() >= 30 && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.';
    (fixed && DateTime::parse_from_rfc3339(stamp).is_ok()).then_some(space + 1)
}

/// Rejoins a line the container runtime cut. containerd writes a line longer than its
/// `max_container_log_line_size` as records of exactly that size and a last one with the
/// rest, and the kubelet serves each record behind its own stamp, with no newline between
/// them: `<t1> <piece><t2> <piece><t3> <rest>`. A stamp is taken out where the first one
/// sits at a power-of-two offset of at least [`MIN_PIECE`] and where each later one sits
/// that many bytes further; a stamp anywhere else is the line's own text.
pub(crate) fn join_pieces(text: &[u8]) -> Cow<'_, [u8]> {
    let size = std::iter::successors(Some(MIN_PIECE), |s| s.checked_mul(2))
        .take_while(|s| *s < text.len())
        .find(|s| stamp_len(&text[*s..]).is_some());
    let Some(size) = size else {
        return Cow::Borrowed(text);
    };
    let mut joined = Vec::with_capacity(text.len());
    let mut rest = text;
    while rest.len() > size {
        let Some(stamp) = stamp_len(&rest[size..]) else {
            break;
        };
        joined.extend_from_slice(&rest[..size]);
        rest = &rest[size + stamp..];
    }
    joined.extend_from_slice(rest);
    Cow::Owned(joined)
}

/// Follows the run's pod output from `from` until the run ends: after the line whose
/// cursor (its stamp) `from` gives, else after `since`.
pub(crate) fn follow(kube: &Kube, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
    let (tx, rx) = mpsc::channel(256);
    let kube = kube.clone();
    let handle = handle.clone();
    let had = from
        .cursor(LogStream::Stdout)
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.with_timezone(&Utc));
    let start = match had {
        Some(line) => Start::After(line),
        None => Start::Since(from.since),
    };
    tokio::spawn(async move {
        if let Err(e) = pump(&kube, &handle, start, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
}

type Sender = mpsc::Sender<Result<LogItem, BackendError>>;

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// After the line stamped so, which the reader has: if the kubelet no longer serves
    /// it, what followed it may be gone, and the read says so.
    After(DateTime<Utc>),
    /// After this time (exclusive), or from the start; nothing is known to precede it.
    Since(Option<DateTime<Utc>>),
}

/// Reads the pod's log, reopening it after drops, until the container has terminated and
/// everything up to its end has been read.
async fn pump(
    kube: &Kube,
    handle: &RunHandle,
    start: Start,
    tx: &Sender,
) -> Result<(), BackendError> {
    let (mut cursor, had_line) = match start {
        Start::After(t) => (Some(t), true),
        Start::Since(t) => (t, false),
    };
    let mut read_any = false;
    // The start of the kubelet's current log file, once reported as the end of a gap.
    let mut told: Option<DateTime<Utc>> = None;
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
        // Only after a line the reader has does a later start of the file mean a loss.
        if let (Some(from), true) = (cursor, had_line || read_any) {
            if let Some(gap) = rotated_away(kube, &name, from, &mut told).await {
                if tx.send(Ok(LogItem::Gap(gap))).await.is_err() {
                    return Ok(());
                }
            }
        }
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

/// A gap when the kubelet's current log file begins after `from`: the files before it,
/// holding what was written between, are no longer served. Each file start is reported
/// once (in `told`).
async fn rotated_away(
    kube: &Kube,
    pod: &str,
    from: DateTime<Utc>,
    told: &mut Option<DateTime<Utc>>,
) -> Option<LogGap> {
    let lp = LogParams {
        container: Some(manifest::CONTAINER.into()),
        timestamps: true,
        limit_bytes: Some(256),
        ..LogParams::default()
    };
    let head = kube.pods.logs(pod, &lp).await.ok()?;
    let (first, _) = parse_line(head.lines().next()?.as_bytes())?;
    if first <= from || *told == Some(first) {
        return None;
    }
    *told = Some(first);
    Some(LogGap {
        after: Some(from),
        before: Some(first),
        missing_bytes: None,
        reason: "the kubelet rotated the container's log file (containerLogMaxSize) before \
                 the engine read it, and serves only the current file; what the container \
                 wrote between these times is missing"
            .into(),
    })
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
    let mut reader = Box::pin(reader);
    let mut raw = Vec::new();
    let mut sent = false;
    loop {
        raw.clear();
        let n = (reader.read_until(b'\n', &mut raw).await)
            .map_err(|e| Stop::Api(kube::Error::ReadEvents(e)))?;
        if n == 0 {
            break;
        }
        if follow && raw.last() != Some(&b'\n') {
            // Cut off in the middle of a line, or the container's last line without a
            // newline: read again once the container has ended, it comes whole.
            break;
        }
        let Some((ts, line)) = parse_line(&raw) else {
            continue;
        };
        if cursor.is_some_and(|c| ts <= c) {
            continue;
        }
        *cursor = Some(ts);
        // A line's stamp is where a read resumes after it.
        let line = LogLine {
            ts,
            stream: LogStream::Stdout,
            line,
            cursor: Some(ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        };
        tx.send(Ok(LogItem::Line(line)))
            .await
            .map_err(|_| Stop::Closed)?;
        sent = true;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-02T03:04:05.123456789Z";
    const T2: &str = "2026-01-02T03:04:05.223456789Z";

    #[test]
    fn parses_the_kubelet_stamp() {
        let (ts, text) = parse_line(format!("{T1} hello world\n").as_bytes()).unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-02T03:04:05.123456789+00:00");
        assert_eq!(text, "hello world");
        assert_eq!(parse_line(b"2026-01-02T03:04:05Z").unwrap().1, "");
        assert!(parse_line(b"no stamp").is_none());
    }

    #[test]
    fn joins_a_line_the_runtime_cut() {
        let (a, b) = ("a".repeat(16 * 1024), "b".repeat(16 * 1024));
        let raw = format!("{T1} {a}{T2} {b}{T2} tail\n");
        let (ts, text) = parse_line(raw.as_bytes()).unwrap();
        assert_eq!(ts, DateTime::parse_from_rfc3339(T1).unwrap());
        assert_eq!(text, format!("{a}{b}tail"));
    }

    #[test]
    fn joins_a_character_cut_in_two() {
        let mut raw = format!("{T1} {}", "a".repeat(4095)).into_bytes();
        let e = "é".as_bytes();
        raw.push(e[0]);
        raw.extend_from_slice(format!("{T2} ").as_bytes());
        raw.push(e[1]);
        let (_, text) = parse_line(&raw).unwrap();
        assert_eq!(text, format!("{}é", "a".repeat(4095)));
    }

    #[test]
    fn keeps_stamps_that_are_the_lines_own() {
        let own = format!("time={T2} level=info");
        assert_eq!(parse_line(format!("{T1} {own}").as_bytes()).unwrap().1, own);
        let padded = format!("{}{T2} x", "a".repeat(5000));
        assert_eq!(
            parse_line(format!("{T1} {padded}").as_bytes()).unwrap().1,
            padded
        );
        // Non-UTF-8 output is shown, not dropped.
        assert_eq!(
            parse_line(b"2026-01-02T03:04:05Z \xff!").unwrap().1,
            "\u{fffd}!"
        );
    }
}
