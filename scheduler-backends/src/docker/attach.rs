//! A container's output read from its own streams, attached before it starts, as `docker
//! run` does.
//!
//! The log driver's files are no way to read a chatty container live: the daemon rotates
//! them away faster than any reader can keep up (600,000 lines through a follow of a
//! `json-file` driver rotating at 10 MB arrived with three lines in four missing). An
//! attached stream holds the container back instead: Docker writes its output to every
//! attached reader before the container may write more, so nothing is lost while the
//! engine reads, whatever the driver keeps — even `none` or `syslog`, which cannot be read
//! back at all. Attaching only lasts as long as the engine's connection, so the driver's
//! files serve to catch up after a restart ([`super::resume`]).
//!
//! [`launch`](super::launch) attaches between create and start and leaves the attachment in
//! the [`Attachments`] registry; the first [`crate::Backend::logs`] of the attempt takes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{AttachContainerOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::cursor::DockerCursor;
use super::errors::from_docker;
use super::logs::{split_timestamp, stream_of, LineAssembler};
use crate::{BackendError, LogGap, LogItem, LogLine, LogStream, LogStreamBox};

/// Items, and bytes of output, buffered between the attached connection and the engine's
/// reader: enough to smooth out a store write, small enough that a container waits rather
/// than the engine buffering without bound (lines can be a megabyte long).
const BUFFERED_ITEMS: usize = 1024;
const BUFFERED_BYTES: usize = 4 << 20;

/// Items on their way to the reader (the lines of one frame travel together: one message
/// and one wake-up per frame, not per line), holding their share of the byte budget until
/// taken.
type Held = (Vec<Result<LogItem, BackendError>>, OwnedSemaphorePermit);

/// The writing end of the buffer between a container's output and its reader.
pub(crate) struct Outlet {
    tx: mpsc::Sender<Held>,
    budget: Arc<Semaphore>,
}

/// A buffer bounded in items and bytes: its writing end, and the reader's stream.
pub(crate) fn pipe() -> (Outlet, mpsc::Receiver<Held>) {
    let (tx, rx) = mpsc::channel(BUFFERED_ITEMS);
    let budget = Arc::new(Semaphore::new(BUFFERED_BYTES));
    (Outlet { tx, budget }, rx)
}

/// The reader's side of [`pipe`]: a message gives back its bytes when it is taken.
pub(crate) fn reader(rx: mpsc::Receiver<Held>) -> LogStreamBox {
    ReceiverStream::new(rx)
        .flat_map(|(items, _bytes)| futures::stream::iter(items))
        .boxed()
}

/// How long an attachment made at launch waits to be taken by a reader. Until then the
/// container is held back once the buffer is full; past it the attachment is dropped and
/// a later reader catches up from the driver's files.
const TAKE_WITHIN: Duration = Duration::from_secs(60);

/// A container's output frames, as bollard reads them off an attached connection.
pub(crate) type Frames = BoxStream<'static, Result<LogOutput, bollard::errors::Error>>;

/// Attaches to both output streams of container `id`, from now on.
pub(crate) async fn attach(docker: &Docker, id: &str) -> Result<Frames, BackendError> {
    let options = AttachContainerOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(from_docker)?;
    Ok(attached.output)
}

/// What became of a container's attachment.
enum Entry {
    /// Made at launch and not taken yet: the reader's end of its output, and the line
    /// counts once the container's output has ended (all of it is then in the buffer).
    Waiting {
        rx: mpsc::Receiver<Held>,
        ended: Option<[u64; 2]>,
    },
    /// Read to its end: how many lines each stream had, so that asking again from there
    /// finds nothing more rather than reading the driver's files for nothing.
    Done { stdout: u64, stderr: u64 },
}

/// The attachments of this backend's containers, by container id. In memory: after an
/// engine restart there are none, and readers catch up from the driver's files.
#[derive(Clone, Default)]
pub(crate) struct Attachments(Arc<Mutex<HashMap<String, Entry>>>);

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "Attachments({n})")
    }
}

/// What a reader of a container's output finds in the registry.
pub(crate) enum Found {
    /// The attachment made at launch: everything from the container's start.
    Live(LogStreamBox),
    /// The attachment was read to its end with these line counts.
    Done { stdout: u64, stderr: u64 },
    /// Nothing: read the driver's files.
    Nothing,
}

impl Attachments {
    /// Starts reading `frames` (attached before container `id` started) into a buffer that
    /// the attempt's first reader takes with [`Self::take`].
    pub(crate) fn start_live(&self, docker: &Docker, id: &str, frames: Frames) {
        let (tx, rx) = pipe();
        self.lock()
            .insert(id.to_owned(), Entry::Waiting { rx, ended: None });
        let mut emitter = Emitter::new(tx, [0, 0], Anchor::Unknown, docker, id, self.clone());
        tokio::spawn(async move {
            let _ = emitter.forward(frames).await;
        });
        // Nobody came for it: let the container go on without holding it back.
        let (registry, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(TAKE_WITHIN).await;
            let mut map = registry.lock();
            if matches!(map.get(&id), Some(Entry::Waiting { .. })) {
                tracing::warn!(container = %id, "nobody read the container's attached output; detaching");
                map.remove(&id);
            }
        });
    }

    /// The attachment of container `id`, taken by its first reader.
    pub(crate) fn take(&self, id: &str) -> Found {
        let mut map = self.lock();
        match map.remove(id) {
            Some(Entry::Waiting { rx, ended }) => {
                if let Some([stdout, stderr]) = ended {
                    map.insert(id.to_owned(), Entry::Done { stdout, stderr });
                }
                Found::Live(reader(rx))
            }
            Some(Entry::Done { stdout, stderr }) => {
                map.insert(id.to_owned(), Entry::Done { stdout, stderr });
                Found::Done { stdout, stderr }
            }
            None => Found::Nothing,
        }
    }

    /// Forgets container `id` (it has been removed).
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The attachment of container `id` delivered everything: `counts` lines in all.
    fn done(&self, id: &str, counts: [u64; 2]) {
        let mut map = self.lock();
        if let Some(Entry::Waiting { ended, .. }) = map.get_mut(id) {
            *ended = Some(counts);
            return;
        }
        let [stdout, stderr] = counts;
        map.insert(id.to_owned(), Entry::Done { stdout, stderr });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the map leaves it usable: every entry is whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the container's first output record (the anchor of ordinals) is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// Not looked up yet: it is, with the first line.
    Unknown,
    /// The driver's timestamp (ns) of the container's first record.
    Known(i64),
    /// Cannot be known (a driver that cannot be read back, or it was rotated away).
    Absent,
}

impl Anchor {
    fn ns(self) -> Option<i64> {
        match self {
            Self::Known(a) => Some(a),
            _ => None,
        }
    }
}

/// The reader's side of a container's output: reassembles lines, numbers them per stream,
/// and hands them out with their cursors.
pub(crate) struct Emitter {
    tx: Outlet,
    pub(crate) assembler: LineAssembler,
    /// Lines handed out so far, stdout and stderr.
    ordinals: [u64; 2],
    anchor: Anchor,
    docker: Docker,
    id: String,
    registry: Attachments,
}

/// The reader went away; stop.
pub(crate) struct Closed;

/// The place of `stream` in the per-stream arrays: stdout 0, stderr 1.
pub(crate) fn index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl Emitter {
    pub(crate) fn new(
        tx: Outlet,
        ordinals: [u64; 2],
        anchor: Anchor,
        docker: &Docker,
        id: &str,
        registry: Attachments,
    ) -> Self {
        Self {
            tx,
            assembler: LineAssembler::new(None),
            ordinals,
            anchor,
            docker: docker.clone(),
            id: id.to_owned(),
            registry,
        }
    }

    /// Lines handed out so far, stdout and stderr.
    pub(crate) fn ordinals(&self) -> [u64; 2] {
        self.ordinals
    }

    /// The driver's timestamp of the container's first record, once known.
    pub(crate) fn anchor_ns(&self) -> Option<i64> {
        self.anchor.ns()
    }

    /// Hands out `lines`, numbering each in its stream.
    pub(crate) async fn lines(&mut self, lines: Vec<LogLine>) -> Result<(), Closed> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.anchor == Anchor::Unknown {
            self.anchor = find_anchor(&self.docker, &self.id, &lines[0]).await;
        }
        let mut bytes = 0;
        let items = lines
            .into_iter()
            .map(|mut line| {
                let i = index(line.stream);
                self.ordinals[i] += 1;
                let cursor = DockerCursor {
                    ordinal: self.ordinals[i],
                    ts_ns: line.ts.timestamp_nanos_opt().unwrap_or(0),
                    anchor_ns: self.anchor.ns(),
                };
                line.cursor = Some(cursor.encode());
                bytes += line.line.len();
                Ok(LogItem::Line(line))
            })
            .collect();
        self.send(items, bytes).await
    }

    /// Reports output that cannot be delivered, at this place.
    pub(crate) async fn gap(&mut self, gap: LogGap) -> Result<(), Closed> {
        self.send(vec![Ok(LogItem::Gap(gap))], 0).await
    }

    /// Hands out an error; the reader resumes from its stored position.
    pub(crate) async fn fail(&mut self, err: BackendError) {
        let _ = self.send(vec![Err(err)], 0).await;
    }

    /// Queues `items`, of `bytes` of output, once the buffer has room for them.
    async fn send(
        &self,
        items: Vec<Result<LogItem, BackendError>>,
        bytes: usize,
    ) -> Result<(), Closed> {
        let permits = bytes.clamp(1, BUFFERED_BYTES) as u32;
        let held = Arc::clone(&self.tx.budget)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Closed)?;
        self.tx.tx.send((items, held)).await.map_err(|_| Closed)
    }

    /// Copies an attached connection's frames until the container's output ends, stamping
    /// each piece when it arrives. A clean end is remembered in the registry; a connection
    /// that ends while the container still runs (a daemon going away, a proxy between)
    /// is an error, and the reader resumes from what it stored.
    pub(crate) async fn forward(&mut self, mut frames: Frames) -> Result<(), Closed> {
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(frame) => {
                    let Some(stream) = stream_of(&frame) else {
                        continue;
                    };
                    let lines = self.assembler.push_at(stream, Utc::now(), frame.as_ref());
                    self.lines(lines).await?;
                }
                Err(e) => {
                    self.fail(from_docker(e)).await;
                    return Err(Closed);
                }
            }
        }
        if let Err(e) = self.ended().await {
            self.fail(e).await;
            return Err(Closed);
        }
        let rest = self.assembler.finish();
        self.lines(rest).await?;
        self.registry.done(&self.id, self.ordinals);
        Ok(())
    }

    /// Whether the container has really ended, now that its attachment has.
    async fn ended(&self) -> Result<(), BackendError> {
        use bollard::models::ContainerStateStatusEnum as Status;
        let info = match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info,
            // Removed: nothing more can come.
            Err(e) if super::errors::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(from_docker(e)),
        };
        let status = info.state.and_then(|s| s.status);
        match status {
            Some(Status::RUNNING | Status::PAUSED | Status::RESTARTING) => {
                Err(BackendError::Unavailable(format!(
                    "the attachment to container {} ended while it still runs",
                    self.id
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The driver's timestamp of the container's first output record: the anchor that lets a
/// later reader match ordinals against the driver's files. The files are known to begin at
/// the container's start when their first record of `first`'s stream is `first` (the first
/// line the attachment delivered). The daemon copies stdout and stderr on their own, to the
/// attachment and to the files, so the first record of the files may be of the other
/// stream: it is the anchor all the same.
///
/// The daemon writes the files on its own time, after the attachment has the output — on a
/// loaded machine seconds after — so the records are looked for until they are there, for
/// up to about ten seconds. (Without the anchor a later reader can match lines only by time,
/// which loses the ones written while the engine lagged.)
async fn find_anchor(docker: &Docker, id: &str, first: &LogLine) -> Anchor {
    let mut wait = Duration::from_millis(25);
    for _ in 0..40 {
        match first_records(docker, id, first.stream).await {
            Ok(Some((anchor, text))) => {
                let text = text.strip_suffix(b"\n").unwrap_or(&text);
                let same = first.line.as_bytes().starts_with(text);
                return match (same, anchor.timestamp_nanos_opt()) {
                    (true, Some(ns)) => Anchor::Known(ns),
                    _ => Anchor::Absent,
                };
            }
            Ok(None) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(400));
            }
            // A driver that cannot be read back (`none`, `syslog`, ...): nothing to match.
            Err(_) => return Anchor::Absent,
        }
    }
    Anchor::Absent
}

/// The timestamp of the first record the container's log driver holds, and the text of its
/// first record of `stream`; `None` until it holds one of `stream`.
async fn first_records(
    docker: &Docker,
    id: &str,
    stream: LogStream,
) -> Result<Option<(DateTime<Utc>, Vec<u8>)>, bollard::errors::Error> {
    let mut frames = driver_files(docker, id);
    let mut anchor = None;
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        let Some(of) = stream_of(&frame) else {
            continue;
        };
        if let Some((ts, text)) = split_timestamp(frame.as_ref()) {
            let anchor = *anchor.get_or_insert(ts);
            if of == stream {
                return Ok(Some((anchor, text.to_vec())));
            }
        }
    }
    Ok(None)
}

/// Everything the container's log driver holds now, timestamped, without following.
pub(crate) fn driver_files(docker: &Docker, id: &str) -> Frames {
    let options = LogsOptionsBuilder::new()
        .follow(false)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    docker.logs(id, Some(options)).boxed()
}
