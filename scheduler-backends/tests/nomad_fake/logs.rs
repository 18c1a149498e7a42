//! The fake's logs: logmon's rotating files `alloc/logs/<task>.<stream>.<n>`, `GET
//! /v1/client/fs/ls/:alloc` listing them, and `GET /v1/client/fs/logs/:alloc` streaming
//! them as JSON frames `{File, Offset, Data}` (base64 data, `{}` heartbeats while idle) as
//! Nomad does: `origin=start&offset=N` counts N bytes from the start of the oldest file
//! still kept (Nomad's `findClosest`), a follower moves on to the next file kept once its
//! file ends, and (when configured) a first connection breaks after a few frames.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Shared;

/// Copies one of the task's streams into its log files, rotating as logmon does: a new
/// file once the current one holds `rotation.0` bytes, keeping the newest `rotation.1`.
pub(crate) async fn logmon(
    mut pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    dir: PathBuf,
    kind: &'static str,
    rotation: (u64, u64),
) -> std::io::Result<()> {
    let (max_bytes, max_files) = rotation;
    let name = |n: u64| dir.join(format!("run.{kind}.{n}"));
    let mut index = 0;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(name(index))
        .await?;
    let mut written = 0u64;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return file.flush().await;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if written >= max_bytes {
                file.flush().await?;
                index += 1;
                file = tokio::fs::File::create(name(index)).await?;
                written = 0;
                if index >= max_files {
                    let _ = tokio::fs::remove_file(name(index - max_files)).await;
                }
            }
            let take = chunk.len().min((max_bytes - written) as usize);
            file.write_all(&chunk[..take]).await?;
            written += take as u64;
            chunk = &chunk[take..];
        }
    }
}

/// The kept files of one stream, `(index, size)`, oldest first.
fn kept(logs: &FsPath, task: &str, kind: &str) -> Vec<(u64, u64)> {
    let prefix = format!("{task}.{kind}.");
    let mut files: Vec<(u64, u64)> = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((index, e.metadata().ok()?.len()))
        })
        .collect();
    files.sort();
    files
}

/// `GET /v1/client/fs/ls/:alloc?path=`: the directory's entries as Nomad lists them.
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Path(alloc_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(dir) = s.lock().allocs.get(&alloc_id).map(|a| a.dir.clone()) else {
        return (StatusCode::NOT_FOUND, "unknown allocation").into_response();
    };
    let path = q.get("path").map(String::as_str).unwrap_or("/");
    let entries: Vec<Value> = std::fs::read_dir(dir.join(path.trim_start_matches('/')))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(
                json!({ "Name": e.file_name().to_string_lossy(), "IsDir": meta.is_dir(),
                         "Size": meta.len(), "FileMode": "-rw-r--r--" }),
            )
        })
        .collect();
    Json(entries).into_response()
}

/// Where a log connection is.
struct Conn {
    s: Arc<Shared>,
    alloc_id: String,
    logs: PathBuf,
    task: String,
    kind: String,
    /// The file being read, and where in it.
    index: u64,
    offset: u64,
    frames: usize,
    break_after: Option<usize>,
    idle: u32,
    started: bool,
}

impl Conn {
    fn name(&self) -> String {
        format!("{}.{}.{}", self.task, self.kind, self.index)
    }

    /// The next file kept after the current one, once the current one is read.
    fn next_file(&self) -> Option<u64> {
        kept(&self.logs, &self.task, &self.kind)
            .into_iter()
            .map(|(i, _)| i)
            .find(|i| *i > self.index)
    }
}

pub(crate) async fn serve(
    State(s): State<Arc<Shared>>,
    Path(alloc_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let task = q.get("task").cloned().unwrap_or_default();
    let kind = q.get("type").cloned().unwrap_or_default();
    let offset: u64 = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let (dir, break_after) = {
        let mut inner = s.lock();
        let Some(alloc) = inner.allocs.get(&alloc_id) else {
            return (StatusCode::NOT_FOUND, "unknown allocation").into_response();
        };
        let dir = alloc.dir.clone();
        let first = inner.dropped.insert((alloc_id.clone(), kind.clone()));
        (dir, s.options.drop_logs_after_frames.filter(|_| first))
    };
    let logs = dir.join("alloc/logs");
    // Nomad's findClosest: the offset counts from the start of the oldest file kept.
    let files = kept(&logs, &task, &kind);
    let Some(&(first, _)) = files.first() else {
        return (StatusCode::NOT_FOUND, "log entry not found").into_response();
    };
    let (mut index, mut offset) = (first, offset);
    for (i, &(n, size)) in files.iter().enumerate() {
        index = n;
        if offset <= size || i == files.len() - 1 {
            offset = offset.min(size);
            break;
        }
        offset -= size;
    }
    let conn = Conn {
        s,
        alloc_id,
        logs,
        task,
        kind,
        index,
        offset,
        frames: 0,
        break_after,
        idle: 0,
        started: false,
    };
    Body::from_stream(futures::stream::unfold(conn, next_frame)).into_response()
}

fn read_at(path: &FsPath, offset: u64, max: usize) -> Vec<u8> {
    let mut buf = vec![0; max];
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let n = f.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

async fn next_frame(mut c: Conn) -> Option<(Result<Bytes, std::io::Error>, Conn)> {
    if !c.started {
        c.started = true;
        return Some((Ok(Bytes::from_static(b"{}")), c));
    }
    loop {
        if c.break_after == Some(c.frames) {
            // Idle first, so that the frames sent so far are flushed before the break.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let err =
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fake drops the stream");
            c.break_after = None;
            c.frames = usize::MAX;
            return Some((Err(err), c));
        }
        if c.frames == usize::MAX {
            return None;
        }
        // Read the terminal flag first: output written before the end is in the file then.
        let terminal =
            c.s.lock()
                .allocs
                .get(&c.alloc_id)
                .is_none_or(|a| a.task["State"] == "dead");
        // Looked for before the read: once logmon has begun the next file, the current one
        // is complete, and this read gets the rest of it.
        let next = c.next_file();
        let data = read_at(&c.logs.join(c.name()), c.offset, c.s.options.frame_bytes);
        if !data.is_empty() {
            let file = format!("alloc/logs/{}", c.name());
            let frame = json!({ "File": file, "Offset": c.offset,
                                "Data": base64::engine::general_purpose::STANDARD.encode(&data) });
            c.offset += data.len() as u64;
            c.frames += 1;
            c.idle = 0;
            return Some((Ok(Bytes::from(frame.to_string())), c));
        }
        // The file is read to its end (or rotated away): on to the next one kept.
        if let Some(next) = next {
            (c.index, c.offset) = (next, 0);
            continue;
        }
        if terminal {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.idle += 1;
        if c.idle.is_multiple_of(5) {
            return Some((Ok(Bytes::from_static(b"{}")), c));
        }
    }
}
