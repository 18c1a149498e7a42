//! A container's output as containerd keeps it: one record per line, stamped when written;
//! a line longer than `max_container_log_line_size` (16 KiB by default) cut into partial
//! records of exactly that size, each stamped; a last line without a newline kept as a
//! partial record once the stream closes; `\r\n` taken as a newline.
//!
//! containerd reads each stream in a goroutine of its own, at once: what a process wrote to
//! one stream before it exited is recorded before the other stream's closing record. The
//! readers here share a runtime, so each waits for the other to drain before it records a
//! last line without a newline.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Barrier;

use super::super::{Cluster, LogRecord};

/// containerd's default `max_container_log_line_size`.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Copies one stream of the pod's container into its log until the stream closes; `drained`
/// is passed by every stream's reader once its stream has closed.
pub(crate) async fn record(
    cluster: Arc<Cluster>,
    pod: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
    drained: Arc<Barrier>,
) {
    let mut reader = BufReader::with_capacity(4096, pipe);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let newline = buf.iter().position(|b| *b == b'\n');
        let take = newline.unwrap_or(buf.len());
        line.extend_from_slice(&buf[..take]);
        reader.consume(take + usize::from(newline.is_some()));
        while line.len() > MAX_LINE {
            let rest = line.split_off(MAX_LINE);
            push(
                &cluster,
                &pod,
                stream,
                std::mem::replace(&mut line, rest),
                true,
            );
        }
        if newline.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            push(&cluster, &pod, stream, std::mem::take(&mut line), false);
        }
    }
    drained.wait().await;
    if !line.is_empty() {
        push(&cluster, &pod, stream, line, true);
    }
}

fn push(cluster: &Cluster, pod: &str, stream: &'static str, text: Vec<u8>, partial: bool) {
    let mut w = cluster.lock();
    if !w.pods.contains_key(pod) {
        return;
    }
    let ts = w.stamp();
    let max = w.container_log_max_size;
    let records = w.logs.entry(pod.to_owned()).or_default();
    let mut file = records.last().map_or(0, |r| r.file);
    if let Some(max) = max {
        let size: usize = records
            .iter()
            .rev()
            .take_while(|r| r.file == file)
            .map(|r| r.ts.len() + r.text.len() + 10)
            .sum();
        if size >= max {
            file += 1;
        }
    }
    records.push(LogRecord {
        ts,
        stream,
        text,
        partial,
        file,
    });
}
