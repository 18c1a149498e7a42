//! The fake `GET /v1/client/fs/logs/:alloc`: the task's log file as a stream of JSON
//! frames `{File, Offset, Data}` with base64 data, `{}` heartbeats while idle, and (when
//! configured) a first connection that breaks after a few frames.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::Shared;

/// Where a log connection is.
struct Conn {
    s: Arc<Shared>,
    alloc_id: String,
    file: PathBuf,
    name: String,
    offset: u64,
    frames: usize,
    break_after: Option<usize>,
    idle: u32,
    started: bool,
}

pub(crate) async fn serve(
    State(s): State<Arc<Shared>>,
    Path(alloc_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let task = q.get("task").cloned().unwrap_or_default();
    let kind = q.get("type").cloned().unwrap_or_default();
    let offset = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let (dir, break_after) = {
        let mut inner = s.lock();
        let Some(alloc) = inner.allocs.get(&alloc_id) else {
            return (StatusCode::NOT_FOUND, "unknown allocation").into_response();
        };
        let dir = alloc.dir.clone();
        let first = inner.dropped.insert((alloc_id.clone(), kind.clone()));
        (dir, s.options.drop_logs_after_frames.filter(|_| first))
    };
    let name = format!("alloc/logs/{task}.{kind}.0");
    let conn = Conn {
        file: dir.join(&name),
        s,
        alloc_id,
        name,
        offset,
        frames: 0,
        break_after,
        idle: 0,
        started: false,
    };
    Body::from_stream(futures::stream::unfold(conn, next_frame)).into_response()
}

fn read_at(path: &PathBuf, offset: u64, max: usize) -> Vec<u8> {
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
        let data = read_at(&c.file, c.offset, c.s.options.frame_bytes);
        if !data.is_empty() {
            let frame = json!({ "File": c.name, "Offset": c.offset,
                                "Data": base64::engine::general_purpose::STANDARD.encode(&data) });
            c.offset += data.len() as u64;
            c.frames += 1;
            c.idle = 0;
            return Some((Ok(Bytes::from(frame.to_string())), c));
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
