//! Run logs, stored as they arrive so that they outlive the container and any replica can
//! serve them. Each batch is appended in one transaction together with the run's log
//! position, so a restart resumes exactly after the last stored line.

use std::fmt::Write as _;

use sqlx::Row;

use jobdock_types::RunEventKind;

use super::events::{self, NewEvent};
use super::{Dialect, Result, Store};

/// Most lines in one insert statement.
const CHUNK_LINES: usize = 256;

/// How many of `left` lines the next insert takes: a whole chunk, else the largest power of
/// two that fits. Every insert then has one of nine lengths, so a connection prepares each
/// once and reuses it (sqlx caches prepared statements by their text), whatever the batches'
/// lengths.
fn chunk_len(left: usize) -> usize {
    if left >= CHUNK_LINES {
        CHUNK_LINES
    } else {
        1 << left.ilog2()
    }
}

/// `INSERT INTO run_logs … VALUES (…), (…)` for `rows` lines. SQLite's parameters are
/// anonymous (`?`): sqlx binds a numbered one (`$7`) by asking SQLite for each parameter's
/// name, which SQLite finds by walking the list of all of them, so a 1,536-parameter insert
/// spent most of a chatty run's engine time there (60 % of it, measured with `perf`).
fn insert_lines_sql(dialect: Dialect, rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 32);
    sql.push_str("INSERT INTO run_logs (run_id, line_no, attempt, ts, stream, line) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        match dialect {
            Dialect::Sqlite => sql.push_str("(?, ?, ?, ?, ?, ?)"),
            Dialect::Postgres => {
                let b = i * 6;
                let _ = write!(
                    sql,
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                );
            }
        }
    }
    sql
}

/// One line to store.
#[derive(Debug, Clone)]
pub struct NewLine {
    /// The attempt that wrote it.
    pub attempt: i64,
    /// Container timestamp, ns since the epoch.
    pub ts: i64,
    /// `stdout`, `stderr` or `jobdock`.
    pub stream: &'static str,
    /// The line (already redacted).
    pub line: String,
}

/// A stored line.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// Position in the run's log, from 1.
    pub line_no: i64,
    /// The attempt that wrote it.
    pub attempt: i64,
    /// Container timestamp, ns.
    pub ts: i64,
    /// Stream.
    pub stream: String,
    /// The line.
    pub line: String,
}

/// How far one stream's output is stored: its highest timestamp (ns), how many stored
/// lines carry exactly that timestamp (two lines may share one), and the backend's cursor
/// after the last line when the backend gives cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMark {
    /// Highest timestamp stored.
    pub ts: Option<i64>,
    /// Stored lines with exactly `ts`.
    pub n: i64,
    /// The backend's cursor after the last stored line (of attempt `LogMark::cursor_attempt`).
    pub cursor: Option<String>,
}

impl StreamMark {
    /// Moves the mark over a line with timestamp `ts` (a stream's own lines come in order).
    pub fn advance(&mut self, ts: i64) {
        match self.ts {
            Some(t) if ts == t => self.n += 1,
            Some(t) if ts < t => {}
            _ => {
                self.ts = Some(ts);
                self.n = 1;
            }
        }
    }

    /// Whether a line with timestamp `ts` is already stored, consuming one of the `n` lines
    /// at the mark's own timestamp.
    pub fn covers(&self, ts: i64, seen_at_mark: &mut i64) -> bool {
        match self.ts {
            Some(t) if ts < t => true,
            Some(t) if ts == t && *seen_at_mark < self.n => {
                *seen_at_mark += 1;
                true
            }
            _ => false,
        }
    }
}

/// How far a run's log is stored, per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMark {
    /// Standard output.
    pub stdout: StreamMark,
    /// Standard error.
    pub stderr: StreamMark,
    /// The attempt the streams' cursors belong to.
    pub cursor_attempt: Option<i64>,
}

/// What a batch adds to the run's counters, and the mark after it.
#[derive(Debug, Clone, Default)]
pub struct BatchTotals {
    /// Bytes of the stored lines.
    pub bytes: i64,
    /// Bytes dropped past the cap.
    pub dropped: i64,
    /// The mark after this batch; `None` leaves it (for the engine's own notices).
    pub mark: Option<LogMark>,
    /// The last progress the script reported in this batch (`::jobdock::progress <text>`),
    /// for the run's timeline (at most one every few seconds).
    pub progress: Option<String>,
    /// The latest progress in this batch and when it came (Unix ms), shown on the run.
    pub latest_progress: Option<(String, i64)>,
    /// Why output is missing, when a backend reported a gap in this batch: the run's log is
    /// then no longer complete, and its timeline says so.
    pub gap: Option<String>,
    /// The lease owner the batch is written for: when the run's lease has moved to another
    /// replica (which adopted it), the batch is refused with [`super::StoreError::Fenced`],
    /// so that two supervisors never both store the same output.
    pub owner: Option<String>,
}

impl Store {
    /// Appends lines after the run's current last line, and moves its position.
    pub async fn append_logs(
        &self,
        run_id: &str,
        lines: &[NewLine],
        totals: BatchTotals,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT log_lines, attempt, lease_owner FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(owner) = &totals.owner {
            if row.try_get::<Option<String>, _>("lease_owner")?.as_ref() != Some(owner) {
                return Err(super::StoreError::Fenced);
            }
        }
        let first: i64 = row.try_get::<i64, _>("log_lines")? + 1;
        let attempt: i64 = row.try_get("attempt")?;
        if first == 1 {
            if let Some(l) = lines.iter().find(|l| l.stream != "jobdock") {
                let event = NewEvent::new(
                    run_id,
                    l.attempt,
                    RunEventKind::FirstOutput,
                    format!("first output, on {}", l.stream),
                );
                events::record(&mut tx, event).await?;
            }
        }
        if let Some(why) = &totals.gap {
            let event = NewEvent::new(run_id, attempt, RunEventKind::LogGap, why.clone());
            events::record(&mut tx, event).await?;
            sqlx::query("UPDATE runs SET log_complete = 0 WHERE id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((text, at)) = &totals.latest_progress {
            sqlx::query("UPDATE runs SET progress = $1, progress_at = $2 WHERE id = $3")
                .bind(text)
                .bind(at)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(text) = &totals.progress {
            let event = NewEvent::new(run_id, attempt, RunEventKind::Progress, text.clone());
            events::record(&mut tx, event).await?;
        }
        // Multi-row inserts in chunks: one statement per line would make a chatty run slow.
        let dialect = self.dialect();
        let mut no = first;
        let mut rest = lines;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
            let sql = insert_lines_sql(dialect, chunk.len());
            let mut q = sqlx::query(&sql);
            for l in chunk {
                q = q
                    .bind(run_id)
                    .bind(no)
                    .bind(l.attempt)
                    .bind(l.ts)
                    .bind(l.stream)
                    .bind(&l.line);
                no += 1;
            }
            q.execute(&mut *tx).await?;
            rest = tail;
        }
        sqlx::query(
            "UPDATE runs SET log_lines = log_lines + $1, log_bytes = log_bytes + $2, \
             log_dropped = log_dropped + $3 WHERE id = $4",
        )
        .bind(lines.len() as i64)
        .bind(totals.bytes)
        .bind(totals.dropped)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if let Some(m) = totals.mark {
            // A batch from the container (not an engine notice): its output moved.
            sqlx::query(
                "UPDATE runs SET last_out_ts = $1, last_out_n = $2, last_err_ts = $3, \
                 last_err_n = $4, log_out_cursor = $5, log_err_cursor = $6, \
                 log_cursor_attempt = $7, last_output_at = $8 WHERE id = $9",
            )
            .bind(m.stdout.ts)
            .bind(m.stdout.n)
            .bind(m.stderr.ts)
            .bind(m.stderr.n)
            .bind(m.stdout.cursor)
            .bind(m.stderr.cursor)
            .bind(m.cursor_attempt)
            .bind(super::now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lines in time order (line number breaking ties), after the line at `after` (a
    /// `(ts, line_no)` position) and with a line number above `min_line_no`.
    pub async fn logs_by_time(
        &self,
        run_id: &str,
        after: Option<(i64, i64)>,
        min_line_no: i64,
        limit: i64,
    ) -> Result<Vec<LogRow>> {
        let (ts, no) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows = sqlx::query(
            "SELECT line_no, attempt, ts, stream, line FROM run_logs \
             WHERE run_id = $1 AND (ts > $2 OR (ts = $2 AND line_no > $3)) AND line_no > $4 \
             ORDER BY ts, line_no LIMIT $5",
        )
        .bind(run_id)
        .bind(ts)
        .bind(no)
        .bind(min_line_no)
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode_line).collect()
    }

    /// Where to start reading to get a log's last `n` lines: the position of the line just
    /// before them, in time order (for a whole read) or in the order stored (for a follow).
    /// `None` when the log has at most `n` lines.
    pub async fn tail_start(
        &self,
        run_id: &str,
        n: i64,
        by_time: bool,
    ) -> Result<Option<(i64, i64)>> {
        let sql = if by_time {
            "SELECT ts, line_no FROM run_logs WHERE run_id = $1 \
             ORDER BY ts DESC, line_no DESC LIMIT 1 OFFSET $2"
        } else {
            "SELECT ts, line_no FROM run_logs WHERE run_id = $1 \
             ORDER BY line_no DESC LIMIT 1 OFFSET $2"
        };
        let row = sqlx::query(sql)
            .bind(run_id)
            .bind(n)
            .fetch_optional(&mut self.read().await?)
            .await?;
        row.map(|r| Ok((r.try_get("ts")?, r.try_get("line_no")?)))
            .transpose()
    }

    /// Lines after `after_line_no`, at most `limit`.
    pub async fn logs(&self, run_id: &str, after_line_no: i64, limit: i64) -> Result<Vec<LogRow>> {
        let rows = sqlx::query(
            "SELECT line_no, attempt, ts, stream, line FROM run_logs \
             WHERE run_id = $1 AND line_no > $2 ORDER BY line_no LIMIT $3",
        )
        .bind(run_id)
        .bind(after_line_no)
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode_line).collect()
    }
}

fn decode_line(r: &sqlx::any::AnyRow) -> Result<LogRow> {
    Ok(LogRow {
        line_no: r.try_get("line_no")?,
        attempt: r.try_get("attempt")?,
        ts: r.try_get("ts")?,
        stream: r.try_get("stream")?,
        line: r.try_get("line")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Whatever the batches' lengths, inserts come in nine lengths (so nine prepared
    /// statements), cover the batch exactly, and a long batch is cut into whole chunks.
    #[test]
    fn inserts_come_in_nine_lengths() {
        let mut lengths = BTreeSet::new();
        for n in 1..=3_000usize {
            let (mut left, mut inserts) = (n, 0);
            while left > 0 {
                let len = chunk_len(left);
                assert!(len >= 1 && len <= left, "{n}: {len} of {left}");
                lengths.insert(len);
                left -= len;
                inserts += 1;
            }
            assert!(inserts <= n / CHUNK_LINES + 8, "{n} lines took {inserts}");
        }
        assert_eq!(lengths.len(), 9, "{lengths:?}");
        assert_eq!(
            insert_lines_sql(Dialect::Sqlite, 2).matches('?').count(),
            12
        );
        assert!(insert_lines_sql(Dialect::Postgres, 2).ends_with("($7, $8, $9, $10, $11, $12)"));
    }
}
