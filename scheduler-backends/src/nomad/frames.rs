//! Nomad's framed log stream and the lines inside it.
//!
//! `GET /v1/client/fs/logs/:alloc` answers a sequence of JSON objects `{File, Offset,
//! Data}` (base64 data; `{}` is a heartbeat). [`FrameReader`] cuts complete objects out of
//! the bytes as they arrive; [`Lines`] reassembles lines across frames for one stream.
//!
//! Logmon rotates a stream into files `<task>.<stream>.<n>` and removes the oldest, and a
//! read's `offset` counts from the oldest file still kept, so a byte's lasting address is
//! its file and its offset in that file. A line's cursor carries both beside the byte count
//! this backend keeps (`<bytes>@<file>:<offset>`); a cursor of an older engine is the count
//! alone.

use base64::Engine;
use chrono::{DateTime, Utc};

use super::api::StreamFrame;
use super::stamps::Ledger;
use crate::docker::MAX_LINE_BYTES;
use crate::{LogLine, LogStream};

/// The data of one frame and where it lies: the log file's index and the offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Logmon's index of the file, from the frame's `File` (`alloc/logs/run.stdout.3`).
    pub file: Option<u64>,
    /// Where in that file the data starts.
    pub offset: u64,
    /// The output.
    pub data: Vec<u8>,
}

/// A byte's lasting address in one stream's log: logmon's file index and the offset in it.
pub(crate) type FilePos = (u64, u64);

/// A stream's position as a cursor keeps it: the bytes this backend counted, and where
/// the next byte lies in the log files when that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// Bytes of the stream read from its start.
    pub bytes: u64,
    /// The file and offset of the next byte.
    pub file: Option<FilePos>,
}

impl Place {
    /// Reads a cursor: `<bytes>@<file>:<offset>`, or `<bytes>` alone.
    pub(crate) fn parse(cursor: &str) -> Option<Self> {
        let (bytes, file) = match cursor.split_once('@') {
            Some((bytes, file)) => (bytes, Some(file)),
            None => (cursor, None),
        };
        let file = match file {
            Some(f) => {
                let (i, o) = f.split_once(':')?;
                Some((i.parse().ok()?, o.parse().ok()?))
            }
            None => None,
        };
        Some(Self {
            bytes: bytes.parse().ok()?,
            file,
        })
    }

    fn cursor(self) -> String {
        match self.file {
            Some((i, o)) => format!("{}@{i}:{o}", self.bytes),
            None => self.bytes.to_string(),
        }
    }
}

/// Buffers the body's bytes and hands out the data of each complete frame.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Adds `bytes` and returns the frames now complete (heartbeats skipped).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(&self.buf).into_iter::<StreamFrame>();
        let mut consumed = 0;
        loop {
            match de.next() {
                Some(Ok(frame)) => {
                    consumed = de.byte_offset();
                    if frame.data.is_empty() {
                        continue;
                    }
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(frame.data.as_bytes())
                        .map_err(|e| format!("log frame of {} is not base64: {e}", frame.file))?;
                    let file = frame.file.rsplit('.').next().and_then(|n| n.parse().ok());
                    frames.push(Frame {
                        file,
                        offset: frame.offset.max(0) as u64,
                        data,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(format!("log stream is not framed JSON: {e}")),
                None => break,
            }
        }
        self.buf.drain(..consumed);
        Ok(frames)
    }

    /// Drops a frame cut short by a broken connection; the next one starts afresh.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
    }
}

/// Reassembles one stream's lines; bytes are numbered from the start of the log, so a line
/// is stamped with the time its first byte arrived (from the [`Ledger`]).
#[derive(Debug)]
pub(crate) struct Lines {
    stream: LogStream,
    /// Lines stamped at or before this are dropped (the resume point, exclusive).
    since: Option<DateTime<Utc>>,
    /// The bytes of the line begun but not ended.
    open: Vec<u8>,
    /// The offset of the open line's first byte.
    line_start: u64,
    /// The file of the bytes being read, and its offset minus ours (file offset = ours +
    /// the difference), when the frames say.
    file: Option<(u64, i128)>,
}

impl Lines {
    /// An assembler for `stream` whose bytes start at `offset`, dropping lines stamped at
    /// or before `since`.
    pub(crate) fn new(stream: LogStream, offset: u64, since: Option<DateTime<Utc>>) -> Self {
        Self {
            stream,
            since,
            open: Vec::new(),
            line_start: offset,
            file: None,
        }
    }

    /// Says that the bytes pushed next, from our `offset` on, lie in file `index` from
    /// `file_offset` on.
    pub(crate) fn in_file(&mut self, index: u64, file_offset: u64, offset: u64) {
        self.file = Some((index, i128::from(file_offset) - i128::from(offset)));
    }

    /// Takes the bytes of one frame, which start at `offset`, and returns the lines they end.
    pub(crate) fn push(&mut self, data: &[u8], offset: u64, ledger: &Ledger) -> Vec<LogLine> {
        let mut lines = Vec::new();
        let mut rest = data;
        let mut at = offset;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            self.open.extend_from_slice(&rest[..nl]);
            at += nl as u64 + 1;
            self.emit(&mut lines, ledger, at);
            self.line_start = at;
            rest = &rest[nl + 1..];
        }
        self.open.extend_from_slice(rest);
        if self.open.len() >= MAX_LINE_BYTES {
            // A process writing without newlines must not make us buffer without bound.
            let end = at + rest.len() as u64;
            self.emit(&mut lines, ledger, end);
            self.line_start = end;
        }
        lines
    }

    /// The last line, when the output ended without a newline.
    pub(crate) fn finish(&mut self, ledger: &Ledger) -> Vec<LogLine> {
        let mut lines = Vec::new();
        if !self.open.is_empty() {
            let end = self.line_start + self.open.len() as u64;
            self.emit(&mut lines, ledger, end);
        }
        lines
    }

    /// Hands out the open line, which ends just before the byte at `end` (its cursor).
    fn emit(&mut self, lines: &mut Vec<LogLine>, ledger: &Ledger, end: u64) {
        let bytes = std::mem::take(&mut self.open);
        let ts = ledger.time_at(self.line_start).unwrap_or_else(Utc::now);
        if self.since.is_some_and(|since| ts <= since) {
            return;
        }
        let line = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let place = Place {
            bytes: end,
            file: self
                .file
                .map(|(i, diff)| (i, (i128::from(end) + diff).max(0) as u64)),
        };
        lines.push(LogLine {
            ts,
            stream: self.stream,
            line,
            cursor: Some(place.cursor()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn frame(data: &str) -> String {
        format!(
            "{{\"File\":\"alloc/logs/run.stdout.0\",\"Offset\":0,\"Data\":\"{}\"}}",
            STANDARD.encode(data)
        )
    }

    #[test]
    fn cuts_frames_across_chunks_and_skips_heartbeats() {
        let mut r = FrameReader::default();
        let body = format!("{{}}{}\n{}", frame("ab"), frame("c\n"));
        let (head, tail) = body.split_at(body.len() / 2 + 3);
        let mut got = r.push(head.as_bytes()).unwrap();
        got.extend(r.push(tail.as_bytes()).unwrap());
        let data: Vec<_> = got.iter().map(|f| f.data.clone()).collect();
        assert_eq!(data, [b"ab".to_vec(), b"c\n".to_vec()]);
        assert_eq!((got[0].file, got[0].offset), (Some(0), 0));
        assert!(r.push(b"{\"Data\": 5}").is_err());
    }

    #[test]
    fn joins_a_line_split_across_frames_and_dates_it_when_it_began() {
        let t0 = Utc::now();
        let mut ledger = Ledger::default();
        ledger.record(0, 4, t0);
        let mut l2 = Lines::new(LogStream::Stdout, 0, None);
        assert!(l2.push(b"a\nhe", 0, &ledger).len() == 1);
        ledger.record(4, 4, t0 + chrono::Duration::seconds(1));
        let got = l2.push(b"llo\n", 4, &ledger);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].line, "hello");
        assert_eq!(
            got[0].cursor.as_deref(),
            Some("8"),
            "resumes after its newline"
        );
        assert_eq!(
            got[0].ts,
            t0 + chrono::Duration::nanoseconds(2),
            "stamped when its first byte came"
        );
        ledger.record(8, 4, t0 + chrono::Duration::seconds(2));
        assert!(l2.push(b"last", 8, &ledger).is_empty());
        let end = l2.finish(&ledger);
        assert_eq!(end[0].line, "last");
        assert_eq!(end[0].cursor.as_deref(), Some("12"));
        assert_eq!(end[0].ts, t0 + chrono::Duration::seconds(2));
        assert!(l2.finish(&ledger).is_empty());
    }

    #[test]
    fn since_drops_lines_stamped_at_or_before_it() {
        let t0 = Utc::now();
        let mut ledger = Ledger::default();
        ledger.record(0, 2, t0);
        ledger.record(2, 2, t0 + chrono::Duration::seconds(1));
        let mut lines = Lines::new(LogStream::Stderr, 0, Some(t0));
        let got = lines.push(b"a\nb\n", 0, &ledger);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].line, "b");
        assert_eq!(got[0].stream, LogStream::Stderr);
    }

    #[test]
    fn cursors_name_the_file_and_offset_where_the_frames_say() {
        let mut ledger = Ledger::default();
        ledger.record(0, 8, Utc::now());
        let mut lines = Lines::new(LogStream::Stdout, 0, None);
        lines.in_file(3, 100, 0);
        let got = lines.push(
            b"ab
cd
", 0, &ledger,
        );
        let cursors: Vec<_> = got.iter().map(|l| l.cursor.clone().unwrap()).collect();
        assert_eq!(cursors, ["3@3:103", "6@3:106"]);
        for c in &cursors {
            assert_eq!(
                Place::parse(c).map(|p| p.cursor()).as_deref(),
                Some(c.as_str())
            );
        }
        assert_eq!(
            Place::parse("42"),
            Some(Place {
                bytes: 42,
                file: None
            }),
            "an older engine's cursor"
        );
        assert_eq!(Place::parse("4@x:1"), None);
    }

    #[test]
    fn a_resumed_assembler_counts_from_its_cursor() {
        let mut ledger = Ledger::default();
        ledger.record(40, 6, Utc::now());
        let mut lines = Lines::new(LogStream::Stdout, 40, None);
        let got = lines.push(b"x\nyz\n", 40, &ledger);
        let cursors: Vec<_> = got.iter().map(|l| l.cursor.as_deref()).collect();
        assert_eq!(cursors, [Some("42"), Some("45")]);
    }
}
