//! A container's output as a stream of whole lines.
//!
//! Docker sends frames, each a timestamp and a piece of output: a long line comes in 16 KiB
//! pieces, each with its own timestamp. [`LineAssembler`] puts the pieces back together per
//! stream, so that every [`LogLine`] is exactly one line of output.

use std::collections::VecDeque;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::errors::for_handle;
use crate::{BackendError, LogItem, LogLine, LogStream, LogStreamBox, RunHandle};

/// A line longer than this is handed out in pieces of this size, so that a process writing
/// without newlines cannot make the engine buffer without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The longest timestamp prefix Docker writes (`2006-01-02T15:04:05.000000000Z` plus slack
/// for an offset).
const MAX_TIMESTAMP_LEN: usize = 40;

/// A line begun in an earlier frame.
#[derive(Debug)]
struct Partial {
    ts: DateTime<Utc>,
    bytes: Vec<u8>,
}

/// Reassembles Docker's timestamped frames into lines, keeping stdout and stderr apart.
#[derive(Debug, Default)]
pub(crate) struct LineAssembler {
    /// Lines written at or before this are dropped (the resume point, exclusive).
    since: Option<DateTime<Utc>>,
    stdout: Option<Partial>,
    stderr: Option<Partial>,
}

impl LineAssembler {
    /// An assembler that drops lines written at or before `since`.
    pub(crate) fn new(since: Option<DateTime<Utc>>) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    /// Takes one timestamped frame of `stream` (as the logs API gives them) and returns the
    /// lines it completes, in order.
    pub(crate) fn push(&mut self, stream: LogStream, frame: &[u8]) -> Vec<LogLine> {
        let (ts, rest) = match split_timestamp(frame) {
            Some(parts) => parts,
            // Docker always prefixes when asked to; should it not, keep the text anyway.
            None => (Utc::now(), frame),
        };
        self.push_at(stream, ts, rest)
    }

    /// Takes a piece of `stream`'s output written at `ts` (an attached stream's frames carry
    /// no stamp of their own) and returns the lines it completes, in order.
    pub(crate) fn push_at(
        &mut self,
        stream: LogStream,
        ts: DateTime<Utc>,
        mut rest: &[u8],
    ) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (ts, bytes) = match self.partial(stream).take() {
                Some(mut p) => {
                    p.bytes.extend_from_slice(&rest[..nl]);
                    (p.ts, p.bytes)
                }
                None => (ts, rest[..nl].to_vec()),
            };
            self.emit(&mut lines, stream, ts, bytes);
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() {
            self.hold(&mut lines, stream, ts, rest);
        }
        lines
    }

    /// The lines still open when the output ended (a last line without newline).
    pub(crate) fn finish(&mut self) -> Vec<LogLine> {
        let mut open: Vec<(LogStream, Partial)> = [
            (LogStream::Stdout, self.stdout.take()),
            (LogStream::Stderr, self.stderr.take()),
        ]
        .into_iter()
        .filter_map(|(s, p)| p.map(|p| (s, p)))
        .collect();
        open.sort_by_key(|(_, p)| p.ts);
        let mut lines = Vec::new();
        for (stream, p) in open {
            self.emit(&mut lines, stream, p.ts, p.bytes);
        }
        lines
    }

    fn partial(&mut self, stream: LogStream) -> &mut Option<Partial> {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }

    /// Keeps the unterminated end of a frame, handing out a piece once it is too long.
    fn hold(&mut self, lines: &mut Vec<LogLine>, stream: LogStream, ts: DateTime<Utc>, b: &[u8]) {
        let partial = self.partial(stream).get_or_insert_with(|| Partial {
            ts,
            bytes: Vec::new(),
        });
        partial.bytes.extend_from_slice(b);
        if partial.bytes.len() >= MAX_LINE_BYTES {
            if let Some(p) = self.partial(stream).take() {
                self.emit(lines, stream, p.ts, p.bytes);
            }
        }
    }

    fn emit(&self, lines: &mut Vec<LogLine>, stream: LogStream, ts: DateTime<Utc>, b: Vec<u8>) {
        if self.since.is_some_and(|since| ts <= since) {
            return;
        }
        let line = String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        lines.push(LogLine {
            ts,
            stream,
            line,
            cursor: None,
        });
    }
}

/// Splits `2024-05-01T10:00:00.123456789Z rest` into the time and the rest.
pub(crate) fn split_timestamp(frame: &[u8]) -> Option<(DateTime<Utc>, &[u8])> {
    let head = &frame[..frame.len().min(MAX_TIMESTAMP_LEN)];
    let space = head.iter().position(|b| *b == b' ')?;
    let text = std::str::from_utf8(&frame[..space]).ok()?;
    let ts = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    Some((ts, &frame[space + 1..]))
}

/// Which of our streams a frame belongs to; stdin echoes are not output.
pub(crate) fn stream_of(frame: &LogOutput) -> Option<LogStream> {
    match frame {
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => Some(LogStream::Stdout),
        LogOutput::StdErr { .. } => Some(LogStream::Stderr),
        LogOutput::StdIn { .. } => None,
    }
}

/// Where the log stream is: frames still to read, lines ready to hand out.
struct Cursor {
    frames: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    assembler: LineAssembler,
    ready: VecDeque<LogLine>,
    handle: RunHandle,
    done: bool,
}

/// Follows the container's output through its log driver from `since` until it ends: the
/// way to read a container the engine never attached to, by time alone (a log position
/// stored before the engine attached to its containers). The driver's files can rotate away
/// lines faster than they are read, which [`super::attach`] avoids.
pub(crate) fn follow(
    docker: &Docker,
    handle: &RunHandle,
    since: Option<DateTime<Utc>>,
) -> LogStreamBox {
    // Docker's `since` counts whole seconds and includes them; ask from a second earlier
    // and drop what is not after `since` ourselves, to the nanosecond.
    let docker_since = since
        .map(|s| s.timestamp() - 1)
        .and_then(|s| i32::try_from(s.max(0)).ok())
        .unwrap_or(0);
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(docker_since)
        .build();
    let cursor = Cursor {
        frames: docker.logs(&handle.backend_ref, Some(options)).boxed(),
        assembler: LineAssembler::new(since),
        ready: VecDeque::new(),
        handle: handle.clone(),
        done: false,
    };
    stream::unfold(cursor, next_line).boxed()
}

async fn next_line(mut c: Cursor) -> Option<(Result<LogItem, BackendError>, Cursor)> {
    loop {
        if let Some(line) = c.ready.pop_front() {
            return Some((Ok(line.into()), c));
        }
        if c.done {
            return None;
        }
        match c.frames.next().await {
            Some(Ok(frame)) => {
                if let Some(stream) = stream_of(&frame) {
                    c.ready.extend(c.assembler.push(stream, frame.as_ref()));
                }
            }
            Some(Err(e)) => {
                c.done = true;
                let err = for_handle(e, &c.handle);
                return Some((Err(err), c));
            }
            None => {
                c.done = true;
                c.ready.extend(c.assembler.finish());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2024-05-01T10:00:00.000000001Z";
    const T2: &str = "2024-05-01T10:00:00.000000002Z";
    const T3: &str = "2024-05-01T10:00:01.000000003Z";

    fn frame(ts: &str, text: &str) -> Vec<u8> {
        format!("{ts} {text}").into_bytes()
    }

    fn texts(lines: &[LogLine]) -> Vec<(&str, LogStream)> {
        lines.iter().map(|l| (l.line.as_str(), l.stream)).collect()
    }

    #[test]
    fn one_line_per_frame() {
        let mut a = LineAssembler::new(None);
        let lines = a.push(LogStream::Stdout, &frame(T1, "hello\n"));
        assert_eq!(texts(&lines), [("hello", LogStream::Stdout)]);
        assert_eq!(lines[0].ts.timestamp_subsec_nanos(), 1);
        assert!(a.finish().is_empty());
    }

    #[test]
    fn joins_pieces_of_a_long_line_per_stream() {
        let mut a = LineAssembler::new(None);
        assert!(a.push(LogStream::Stdout, &frame(T1, "abc")).is_empty());
        // A stderr line in between must not interrupt the stdout line.
        let err = a.push(LogStream::Stderr, &frame(T2, "oops\n"));
        assert_eq!(texts(&err), [("oops", LogStream::Stderr)]);
        let out = a.push(LogStream::Stdout, &frame(T3, "def\n"));
        assert_eq!(texts(&out), [("abcdef", LogStream::Stdout)]);
        // The line is dated when it began.
        assert_eq!(out[0].ts.timestamp_subsec_nanos(), 1);
    }

    #[test]
    fn splits_a_frame_holding_several_lines() {
        let mut a = LineAssembler::new(None);
        let lines = a.push(LogStream::Stdout, &frame(T1, "a\n\nb\nc"));
        assert_eq!(
            texts(&lines),
            [
                ("a", LogStream::Stdout),
                ("", LogStream::Stdout),
                ("b", LogStream::Stdout)
            ]
        );
        let rest = a.finish();
        assert_eq!(texts(&rest), [("c", LogStream::Stdout)]);
    }

    #[test]
    fn finishes_open_lines_in_time_order() {
        let mut a = LineAssembler::new(None);
        a.push(LogStream::Stderr, &frame(T2, "late"));
        a.push(LogStream::Stdout, &frame(T3, "later"));
        a.push(LogStream::Stdout, &frame(T1, "ignored-ts"));
        let lines = a.finish();
        assert_eq!(
            texts(&lines),
            [
                ("late", LogStream::Stderr),
                ("laterignored-ts", LogStream::Stdout)
            ]
        );
    }

    #[test]
    fn since_is_exclusive_to_the_nanosecond() {
        let since = DateTime::parse_from_rfc3339(T2)
            .unwrap()
            .with_timezone(&Utc);
        let mut a = LineAssembler::new(Some(since));
        assert!(a.push(LogStream::Stdout, &frame(T1, "old\n")).is_empty());
        assert!(a.push(LogStream::Stdout, &frame(T2, "seen\n")).is_empty());
        let lines = a.push(LogStream::Stdout, &frame(T3, "new\n"));
        assert_eq!(texts(&lines), [("new", LogStream::Stdout)]);
    }

    #[test]
    fn keeps_a_multibyte_character_split_across_frames() {
        let mut a = LineAssembler::new(None);
        let euro = "\u{20ac}".as_bytes();
        let mut first = format!("{T1} ").into_bytes();
        first.extend_from_slice(&euro[..1]);
        let mut second = format!("{T2} ").into_bytes();
        second.extend_from_slice(&euro[1..]);
        second.push(b'\n');
        assert!(a.push(LogStream::Stdout, &first).is_empty());
        let lines = a.push(LogStream::Stdout, &second);
        assert_eq!(lines[0].line, "\u{20ac}");
    }

    #[test]
    fn bounds_a_line_without_newline() {
        let mut a = LineAssembler::new(None);
        let chunk = "x".repeat(MAX_LINE_BYTES / 2);
        assert!(a.push(LogStream::Stdout, &frame(T1, &chunk)).is_empty());
        let lines = a.push(LogStream::Stdout, &frame(T2, &chunk));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line.len(), MAX_LINE_BYTES);
    }

    #[test]
    fn keeps_text_without_a_timestamp() {
        let mut a = LineAssembler::new(None);
        let lines = a.push(LogStream::Stdout, b"no-timestamp here\n");
        assert_eq!(texts(&lines), [("no-timestamp here", LogStream::Stdout)]);
    }
}
