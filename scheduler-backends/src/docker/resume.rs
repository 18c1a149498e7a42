//! Catching up with a container the engine was not attached to (after an engine restart,
//! or a broken connection): what it wrote meanwhile comes from its log driver's files,
//! the rest from a new attachment.
//!
//! The switch from the files to the attachment must neither lose nor repeat a line, so a
//! running container is attached to and then paused: what it wrote before the pause is
//! drained from the attachment (the files have it too), the files are read to their end
//! while it cannot write, and it goes on with the attachment continuing where they end. Lines are matched against what the
//! engine stored by their ordinals, which mean the same in the files as long as the driver
//! still holds the container's first record (the cursor's anchor). When it does not — it
//! rotated the start away, or it cannot be read back at all — the stream says so with a
//! [`LogGap`] at the place, and lines are matched by time instead.

use std::time::Duration;

use bollard::models::ContainerStateStatusEnum as Status;
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::attach::{
    attach, driver_files, index, pipe, reader, Anchor, Attachments, Closed, Emitter, Frames,
};
use super::cursor::DockerCursor;
use super::errors::{for_handle, is_not_found, status_of};
use super::logs::{split_timestamp, stream_of, LineAssembler};
use crate::{LogFrom, LogGap, LogStream, LogStreamBox, RunHandle};

/// How long a paused container's last output is given to reach the driver's files before
/// they are read: the daemon copies it from the container's pipe on its own time.
const SETTLE: Duration = Duration::from_millis(100);

/// How long the attachment of a paused container must stay silent before all it wrote
/// before the pause is taken to have arrived.
const QUIET: Duration = Duration::from_millis(100);

/// Where the engine's stored copy of each stream ends, read from a [`LogFrom`].
#[derive(Debug, Clone, Copy, Default)]
struct Stored {
    /// Lines stored, stdout and stderr.
    ordinals: [u64; 2],
    /// When the last stored line of each stream was written (ns).
    ts_ns: [Option<i64>; 2],
    /// The container's first record, as the cursors remember it.
    anchor: Option<i64>,
    /// Nothing was ever stored and no position was asked for: the whole log is wanted.
    from_start: bool,
}

impl Stored {
    fn of(from: &LogFrom) -> Self {
        let parse = |c: Option<&str>| c.and_then(|c| c.parse::<DockerCursor>().ok());
        let (out, err) = (parse(from.stdout.as_deref()), parse(from.stderr.as_deref()));
        Self {
            ordinals: [out.map_or(0, |c| c.ordinal), err.map_or(0, |c| c.ordinal)],
            ts_ns: [out.map(|c| c.ts_ns), err.map(|c| c.ts_ns)],
            anchor: out
                .and_then(|c| c.anchor_ns)
                .or(err.and_then(|c| c.anchor_ns)),
            from_start: out.is_none() && err.is_none() && from.since.is_none(),
        }
    }
}

/// [`crate::Backend::logs`] for a container without a live attachment: the driver's files
/// from the stored position, then (while it runs) a new attachment.
pub(crate) fn resume(
    docker: &Docker,
    registry: &Attachments,
    handle: &RunHandle,
    from: &LogFrom,
) -> LogStreamBox {
    let (tx, rx) = pipe();
    let stored = Stored::of(from);
    // Read from the start, the first record the files hold anchors the ordinals handed out.
    let anchor = match (stored.from_start, stored.anchor) {
        (true, _) => Anchor::Unknown,
        (false, Some(a)) => Anchor::Known(a),
        (false, None) => Anchor::Absent,
    };
    let mut emitter = Emitter::new(
        tx,
        stored.ordinals,
        anchor,
        docker,
        &handle.backend_ref,
        registry.clone(),
    );
    let (docker, handle) = (docker.clone(), handle.clone());
    tokio::spawn(async move {
        if let Err(e) = catch_up(&docker, &handle, stored, &mut emitter).await {
            emitter.fail(e).await;
        }
    });
    reader(rx)
}

async fn catch_up(
    docker: &Docker,
    handle: &RunHandle,
    stored: Stored,
    emitter: &mut Emitter,
) -> Result<(), crate::BackendError> {
    let id = handle.backend_ref.as_str();
    let state = match docker.inspect_container(id, None).await {
        Ok(info) => info.state.unwrap_or_default(),
        Err(e) => return Err(for_handle(e, handle)),
    };
    // Docker attaches only to an unpaused container: one left paused by an engine that
    // stopped in the middle of this goes on first.
    if state.status == Some(Status::PAUSED) {
        unpause(docker, id).await;
    }
    let running = matches!(state.status, Some(Status::RUNNING) | Some(Status::PAUSED));
    let mut attached = match running {
        true => Some(attach(docker, id).await?),
        false => None,
    };
    let (paused, drained) = match &mut attached {
        Some(frames) => hold(docker, id, frames).await,
        None => (false, Drained::default()),
    };
    let mut read = read_files(docker, id, stored, emitter).await;
    // The daemon writes the driver's files on its own time, after the attachment had the
    // output: until the files end where the attachment did before the pause, what they lack
    // is read again (by ordinal, so nothing twice).
    let mut wait = Duration::from_millis(50);
    for _ in 0..30 {
        let Ok(held) = &read else { break };
        let anchored = emitter.anchor_ns().is_some() || stored.from_start;
        if !paused || drained.reached_by(held) || !anchored {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
        let more = Stored {
            ordinals: emitter.ordinals(),
            ts_ns: stored.ts_ns,
            anchor: emitter.anchor_ns(),
            from_start: false,
        };
        // The files are read from their start again: their partial last line, if any, too.
        emitter.assembler = LineAssembler::new(None);
        read = read_files(docker, id, more, emitter).await;
    }
    if paused {
        unpause(docker, id).await;
    }
    if read.is_err() {
        return Ok(());
    }
    match attached {
        Some(frames) => {
            let _ = emitter.forward(frames).await;
        }
        None => {
            let rest = emitter.assembler.finish();
            let _ = emitter.lines(rest).await;
        }
    }
    Ok(())
}

/// Pauses the container, attached as `frames`, and lets what it wrote before the pause
/// drain: that output also reached the driver's files, which [`read_files`] reads next, so
/// it is dropped here and `frames` goes on exactly where the files end. Whether it paused
/// (a container that ended meanwhile does not).
async fn hold(docker: &Docker, id: &str, frames: &mut Frames) -> (bool, Drained) {
    let paused = match docker.pause_container(id).await {
        Ok(()) => true,
        Err(e) => {
            if status_of(&e) != Some(409) {
                tracing::warn!(container = %id, error = %e, "could not pause the container");
            }
            false
        }
    };
    tokio::time::sleep(SETTLE).await;
    // Until the attachment has been quiet a while (or ended with the container).
    let mut drained = Drained::default();
    while let Ok(Some(frame)) = tokio::time::timeout(QUIET, frames.next()).await {
        if let Ok(frame) = frame {
            if let Some(stream) = stream_of(&frame) {
                drained.push(stream, frame.as_ref());
            }
        }
    }
    (paused, drained)
}

/// The most a stream's end is compared by, in bytes.
const COMPARED: usize = 4096;

/// The end of what each stream wrote, as the attachment had it before the pause; and, as
/// [`read_files`] returns it, the end of what the driver's files hold of each stream.
#[derive(Debug, Default)]
struct Drained([Vec<u8>; 2]);

impl Drained {
    fn push(&mut self, stream: LogStream, bytes: &[u8]) {
        let buf = &mut self.0[index(stream)];
        buf.extend_from_slice(bytes);
        if buf.len() > 2 * COMPARED {
            buf.drain(..buf.len() - COMPARED);
        }
    }

    /// Whether `files` (what the driver's files hold) end with what the attachment had last
    /// of each stream: then the files hold everything written before the pause.
    fn reached_by(&self, files: &Drained) -> bool {
        self.0.iter().zip(&files.0).all(|(attached, held)| {
            let last = &attached[attached.len().saturating_sub(COMPARED)..];
            held.ends_with(last)
        })
    }
}

async fn unpause(docker: &Docker, id: &str) {
    if let Err(e) = docker.unpause_container(id).await {
        if status_of(&e) != Some(409) && !is_not_found(&e) {
            tracing::warn!(container = %id, error = %e, "could not unpause the container");
        }
    }
}

/// How lines read from the driver's files are matched against the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matching {
    /// By ordinal: the files still begin with the container's first record.
    Ordinal,
    /// By time: the files no longer begin at the start, so ordinals say nothing.
    Time,
}

/// Hands out what the driver's files hold after the stored position, reporting a gap where
/// they no longer reach back to it. The reader is gone when this returns `Err`.
async fn read_files(
    docker: &Docker,
    id: &str,
    stored: Stored,
    emitter: &mut Emitter,
) -> Result<Drained, Closed> {
    let mut held = Drained::default();
    let mut frames = driver_files(docker, id);
    // Where the stored copy ends, as far as time tells: the older of the two streams.
    let stored_until = stored.ts_ns.iter().flatten().min().copied();
    let mut matching = None;
    let mut seen = [0u64; 2];
    let mut gap_due = false;
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                emitter.gap(unreadable_gap(stored_until, &e)).await?;
                return Ok(held);
            }
        };
        let Some(stream) = stream_of(&frame) else {
            continue;
        };
        let Some((ts, text)) = split_timestamp(frame.as_ref()) else {
            continue;
        };
        held.push(stream, text);
        let first_ns = ts.timestamp_nanos_opt();
        let matching = *matching.get_or_insert_with(|| {
            if stored.from_start || (stored.anchor.is_some() && stored.anchor == first_ns) {
                Matching::Ordinal
            } else {
                // The files begin after the stored copy ends: what lay between is gone.
                gap_due = match (stored_until, first_ns) {
                    (Some(until), Some(first)) => first > until,
                    _ => true,
                };
                Matching::Time
            }
        });
        let lines = emitter.assembler.push_at(stream, ts, text);
        let mut fresh = Vec::with_capacity(lines.len());
        for line in lines {
            let i = index(line.stream);
            seen[i] += 1;
            let stored_already = match matching {
                Matching::Ordinal => seen[i] <= stored.ordinals[i],
                Matching::Time => {
                    let ns = line.ts.timestamp_nanos_opt().unwrap_or(0);
                    stored.ts_ns[i].is_some_and(|t| ns <= t)
                }
            };
            if !stored_already {
                fresh.push(line);
            }
        }
        if gap_due {
            if let Some(first) = fresh.first() {
                gap_due = false;
                emitter.gap(rotated_gap(stored_until, first.ts)).await?;
            }
        }
        emitter.lines(fresh).await?;
    }
    Ok(held)
}

fn at(ns: Option<i64>) -> Option<DateTime<Utc>> {
    ns.map(DateTime::from_timestamp_nanos)
}

fn rotated_gap(after_ns: Option<i64>, before: DateTime<Utc>) -> LogGap {
    LogGap {
        after: at(after_ns),
        before: Some(before),
        missing_bytes: None,
        reason: "the daemon's log driver had rotated away output that the engine had not read \
                 while it was not attached to the container; what the container wrote between \
                 these times is missing"
            .into(),
    }
}

/// A driver that cannot be read back (`none`, `syslog`, `fluentd`, ...): whatever the
/// container wrote while the engine was not attached is lost to it.
fn unreadable_gap(after_ns: Option<i64>, err: &bollard::errors::Error) -> LogGap {
    let words = match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    LogGap {
        after: at(after_ns),
        before: Some(Utc::now()),
        missing_bytes: None,
        reason: format!(
            "the container's log driver cannot be read back ({words}); what the container \
             wrote while the engine was not attached to it is missing"
        ),
    }
}
