//! A run's output: stdout and stderr followed as two of Nomad's framed log streams,
//! merged as they arrive.
//!
//! Nomad's log lines carry no timestamps: each line is stamped with the time its first
//! byte reached this backend (see `stamps`), so a stamp is "received at", which trails
//! "written at" by the stream's latency. Each line also carries its cursor, the byte offset
//! after it; a read given a stream's cursor starts there (`origin=start&offset=`), which is
//! how the engine resumes exactly, even after a restart that lost the stamps. Without a
//! cursor, `since` drops lines stamped at or before it (exact within one process, whose
//! stamps are remembered). A connection that breaks is resumed from the byte offset
//! reached, so nothing is lost or repeated.
//!
//! Logmon rotates the output into numbered files and removes the oldest (a task's `logs {
//! max_files, max_file_size }`). Each frame says which file and where in it, so a reader
//! that falls behind by more than the kept files sees the jump and reports a [`LogGap`]
//! there (with the bytes missing when they are in one file), and a resumed read whose
//! file has been removed reports one before the first byte it gets.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use reqwest::Method;

use super::api::AllocFileInfo;
use super::client::{escape, Client};
use super::errors::{from_nomad, NomadError};
use super::frames::{FilePos, Frame, FrameReader, Lines, Place};
use super::jobspec::TASK;
use super::stamps::Ledgers;
use super::status::current;
use crate::{BackendError, LogFrom, LogGap, LogItem, LogStream, LogStreamBox, RunHandle};

/// How many times in a row a broken log connection is opened again before giving up.
const MAX_RECONNECTS: u32 = 10;

/// How long to wait for the allocation to appear or the task to start between two looks.
const START_POLL: Duration = Duration::from_millis(200);

/// One stream's follower.
struct Follower {
    client: Client,
    handle: RunHandle,
    stream: LogStream,
    ledgers: Ledgers,
    alloc_id: Option<String>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    reader: FrameReader,
    lines: Lines,
    /// Bytes of the log consumed so far: where a new connection resumes when `pos` is not
    /// known (a cursor of an older engine).
    offset: u64,
    /// The file and offset of the next byte, once known.
    pos: Option<FilePos>,
    ready: VecDeque<LogItem>,
    failures: u32,
    done: bool,
}

/// [`crate::Backend::logs`].
pub(crate) fn follow(
    client: &Client,
    ledgers: &Ledgers,
    handle: &RunHandle,
    from: &LogFrom,
) -> LogStreamBox {
    let one = |stream| {
        // A stream with a cursor resumes at that byte; `since` then plays no part.
        let (place, since) = match from.cursor(stream).and_then(Place::parse) {
            Some(place) => (place, None),
            None => (
                Place {
                    bytes: 0,
                    file: None,
                },
                from.since,
            ),
        };
        let offset = place.bytes;
        let f = Follower {
            client: client.clone(),
            handle: handle.clone(),
            stream,
            ledgers: ledgers.clone(),
            alloc_id: None,
            body: None,
            reader: FrameReader::default(),
            lines: Lines::new(stream, offset, since),
            offset,
            pos: place.file,
            ready: VecDeque::new(),
            failures: 0,
            done: false,
        };
        stream::unfold(f, next_line).boxed()
    };
    stream::select(one(LogStream::Stdout), one(LogStream::Stderr)).boxed()
}

/// What one step of a follower came to.
enum Step {
    /// Keep going.
    More,
    /// The stream failed for good.
    Fail(BackendError),
}

async fn next_line(mut f: Follower) -> Option<(Result<LogItem, BackendError>, Follower)> {
    loop {
        if let Some(line) = f.ready.pop_front() {
            return Some((Ok(line), f));
        }
        if f.done {
            return None;
        }
        let step = if f.alloc_id.is_none() {
            f.find_alloc().await
        } else if f.body.is_none() {
            f.connect().await
        } else {
            f.read().await
        };
        if let Step::Fail(e) = step {
            f.done = true;
            return Some((Err(e), f));
        }
    }
}

impl Follower {
    /// Waits until the task has an allocation it started in; ends the stream if it ended
    /// without ever starting (nothing was written).
    async fn find_alloc(&mut self) -> Step {
        match current(&self.client, &self.handle).await {
            Ok(Some(alloc)) => {
                let started = alloc
                    .task_states
                    .as_ref()
                    .and_then(|t| t.get(TASK))
                    .and_then(|t| super::api::parse_time(t.started_at.as_deref()))
                    .is_some();
                if started {
                    self.alloc_id = Some(alloc.id);
                } else if alloc.is_terminal() {
                    self.done = true;
                } else {
                    tokio::time::sleep(START_POLL).await;
                }
                Step::More
            }
            Ok(None) => {
                tokio::time::sleep(START_POLL).await;
                Step::More
            }
            Err(e) => Step::Fail(e),
        }
    }

    /// Where Nomad's `offset` (counted from the oldest file kept) finds our next byte; a
    /// gap first when that byte's file has been removed.
    async fn start_offset(&mut self, alloc: &str) -> Result<u64, NomadError> {
        let Some((index, offset)) = self.pos else {
            return Ok(self.offset);
        };
        let path = format!("/v1/client/fs/ls/{}", escape(alloc));
        let files: Vec<AllocFileInfo> = self.client.get(&path, &[("path", "alloc/logs")]).await?;
        let prefix = format!("{TASK}.{}.", self.stream.as_str());
        let mut kept: Vec<(u64, u64)> = files
            .iter()
            .filter_map(|f| Some((f.name.strip_prefix(&prefix)?.parse().ok()?, f.size)))
            .collect();
        kept.sort_unstable();
        match kept.first() {
            Some(&(oldest, _)) if oldest > index => {
                let gap = rotated(self.stream, index, Some(oldest), None);
                self.gap(gap);
                Ok(0)
            }
            _ => Ok(kept
                .iter()
                .filter(|(i, _)| *i < index)
                .map(|(_, size)| size)
                .sum::<u64>()
                + offset),
        }
    }

    /// Reports a gap: the line begun before it ends there, and nothing is matched against
    /// the file position any more until the frames give a new one.
    fn gap(&mut self, gap: LogGap) {
        let open = self
            .ledgers
            .with(&self.handle.backend_ref, self.stream, |l| {
                self.lines.finish(l)
            });
        self.ready.extend(open.into_iter().map(LogItem::Line));
        self.ready.push_back(LogItem::Gap(gap));
        self.pos = None;
    }

    /// Opens the log from where we are.
    async fn connect(&mut self) -> Step {
        let alloc = self.alloc_id.clone().unwrap_or_default();
        let offset = match self.start_offset(&alloc).await {
            Ok(offset) => offset.to_string(),
            Err(e @ NomadError::Transport(_)) => return self.retry(from_nomad(e)).await,
            Err(e) => return Step::Fail(from_nomad(e)),
        };
        let req = self
            .client
            .request(
                Method::GET,
                &format!("/v1/client/fs/logs/{}", escape(&alloc)),
            )
            .query(&[
                ("task", TASK),
                ("type", self.stream.as_str()),
                ("follow", "true"),
                ("origin", "start"),
                ("offset", offset.as_str()),
            ]);
        match Client::send(req).await {
            Ok(resp) => {
                self.body = Some(resp.bytes_stream().boxed());
                Step::More
            }
            Err(e @ NomadError::Transport(_)) => self.retry(from_nomad(e)).await,
            Err(e) => Step::Fail(from_nomad(e)),
        }
    }

    /// Reads the next chunk of the body and turns its frames into lines.
    async fn read(&mut self) -> Step {
        let chunk = match self.body.as_mut().map(|b| b.next()) {
            Some(next) => next.await,
            None => None,
        };
        match chunk {
            Some(Ok(bytes)) => self.take(&bytes),
            Some(Err(e)) => {
                tracing::debug!(error = %e, offset = self.offset, "log connection broke; resuming");
                self.body = None;
                self.reader.reset();
                self.retry(from_nomad(NomadError::Transport(e))).await
            }
            None => self.ended().await,
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Step {
        let frames = match self.reader.push(bytes) {
            Ok(frames) => frames,
            Err(message) => {
                return Step::Fail(BackendError::Api {
                    status: None,
                    message,
                    source: None,
                })
            }
        };
        self.failures = 0;
        let now = Utc::now();
        for frame in frames {
            let Some(data) = self.place(frame) else {
                continue;
            };
            let (offset, len) = (self.offset, data.len() as u64);
            let lines = self
                .ledgers
                .with(&self.handle.backend_ref, self.stream, |ledger| {
                    ledger.record(offset, len, now);
                    self.lines.push(&data, offset, ledger)
                });
            self.ready.extend(lines.into_iter().map(LogItem::Line));
            self.offset += len;
        }
        Step::More
    }

    /// Checks that a frame goes on where the last one ended, in the same file or at the
    /// start of the next: bytes read again (a connection resumed early) are dropped, a jump
    /// is a gap. Returns the bytes to take, and tells the assembler where they lie.
    fn place(&mut self, frame: Frame) -> Option<Vec<u8>> {
        let Frame {
            file,
            mut offset,
            mut data,
        } = frame;
        if let (None, 0, Some(file)) = (self.pos, self.offset, file) {
            // The first bytes of a read from the start: logmon removed the files before it.
            if file > 0 || offset > 0 {
                let missing = (file == 0).then_some(offset);
                self.gap(rotated(self.stream, 0, Some(file), missing));
            }
        }
        if let (Some((index, at)), Some(file)) = (self.pos, file) {
            let follows = (file == index && offset == at) || (file == index + 1 && offset == 0);
            if file == index && offset < at {
                let had = (at - offset) as usize;
                if had >= data.len() {
                    return None;
                }
                data.drain(..had);
                offset = at;
            } else if !follows {
                let missing = (file == index).then(|| offset - at);
                self.gap(rotated(self.stream, index, Some(file), missing));
            }
        }
        if let Some(file) = file {
            self.lines.in_file(file, offset, self.offset);
            self.pos = Some((file, offset + data.len() as u64));
        }
        Some(data)
    }

    /// Nomad closes a follow stream once the task is dead; if it closed early, reconnect.
    async fn ended(&mut self) -> Step {
        self.body = None;
        self.reader.reset();
        match current(&self.client, &self.handle).await {
            Ok(Some(alloc)) if !alloc.is_terminal() => {
                tokio::time::sleep(START_POLL).await;
                Step::More
            }
            Ok(_) | Err(BackendError::NotFound(_)) => {
                self.done = true;
                let last = self
                    .ledgers
                    .with(&self.handle.backend_ref, self.stream, |l| {
                        self.lines.finish(l)
                    });
                self.ready.extend(last.into_iter().map(LogItem::Line));
                Step::More
            }
            Err(e) => self.retry(e).await,
        }
    }

    /// Waits a little before the next connection, unless it has failed too often.
    async fn retry(&mut self, err: BackendError) -> Step {
        self.failures += 1;
        if self.failures > MAX_RECONNECTS {
            return Step::Fail(err);
        }
        let backoff = Duration::from_millis(100 * u64::from(self.failures.min(20)));
        tokio::time::sleep(backoff).await;
        Step::More
    }
}

/// Output logmon removed before the engine read it: from file `from` (the rest of it) up to
/// file `to` (exclusive; `None` = unknown).
fn rotated(stream: LogStream, from: u64, to: Option<u64>, missing: Option<u64>) -> LogGap {
    let files = match to {
        Some(to) if to > from + 1 => format!(
            "log files {from} to {} of {stream}",
            to - 1,
            stream = stream.as_str()
        ),
        _ => format!("log file {from} of {}", stream.as_str()),
    };
    LogGap {
        after: None,
        before: Some(Utc::now()),
        missing_bytes: missing,
        reason: format!(
            "Nomad rotated away {files} before the engine read it (the task keeps `max_files` \
             files of `max_file_size`)"
        ),
    }
}
