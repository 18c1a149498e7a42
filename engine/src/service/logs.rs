//! A run's log read from the store, so that any replica serves it: whole, in time order, or
//! followed in the order the lines arrive until the run ends.

use std::time::Duration;

use futures::stream::{self, Stream};

use super::{Ctx, Result, ServiceError};
use crate::store::logs::LogRow;
use crate::store::{Store, StoreError};

/// Lines read from the store per step.
const PAGE: i64 = 2000;
/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// What a log read yields, step by step.
pub enum Chunk {
    /// The next lines.
    Lines(Vec<LogRow>),
    /// The end of the log, with the run's status then (empty if the run is gone).
    End(String),
}

struct Cursor {
    store: Store,
    run_id: String,
    after: i64,
    /// Position in time order, for a whole read.
    at: Option<(i64, i64)>,
    follow: bool,
    ended: bool,
}

impl Cursor {
    /// A whole read is in time order; a follower gets lines in the order they were stored,
    /// so that it can resume after a line number.
    async fn page(&mut self) -> Result<Vec<LogRow>, StoreError> {
        if self.follow {
            let rows = self.store.logs(&self.run_id, self.after, PAGE).await?;
            if let Some(last) = rows.last() {
                self.after = last.line_no;
            }
            Ok(rows)
        } else {
            let rows = self
                .store
                .logs_by_time(&self.run_id, self.at, self.after, PAGE)
                .await?;
            if let Some(last) = rows.last() {
                self.at = Some((last.ts, last.line_no));
            }
            Ok(rows)
        }
    }
}

/// Where a read of a log starts, and whether it follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    /// Only lines after this line number (to resume a follow).
    pub after: i64,
    /// Only the last this many lines (1 to [`MAX_TAIL`]): of the whole log in time order, or,
    /// when following, the last stored before the new ones follow.
    pub tail: Option<i64>,
    /// Go on with new lines until the run ends.
    pub follow: bool,
}

/// Most lines a tail may ask for.
pub const MAX_TAIL: i64 = 10_000;

/// A run's log from `start`, in pages of lines; when following, waits for more until the run
/// is final and every line has been sent. The status is read before the lines: a final
/// status means the log is complete, so an empty page after it is the true end.
pub async fn lines(ctx: &Ctx, run_id: String, start: Start) -> Result<impl Stream<Item = Chunk>> {
    // Where reading starts: after a line number, and (for a whole read, in time order) after
    // a position in time.
    let (after, at) = match start.tail {
        None => (start.after, None),
        Some(n) if !(1..=MAX_TAIL).contains(&n) => {
            return Err(ServiceError::invalid(
                "tail",
                format!("must be between 1 and {MAX_TAIL}"),
            ))
        }
        Some(n) => match ctx.store.tail_start(&run_id, n, !start.follow).await? {
            None => (start.after, None),
            Some((_, line_no)) if start.follow => (start.after.max(line_no), None),
            Some(at) => (start.after, Some(at)),
        },
    };
    let start = Cursor {
        store: ctx.store.clone(),
        run_id,
        after,
        at,
        follow: start.follow,
        ended: false,
    };
    Ok(stream::unfold(start, |mut c| async move {
        if c.ended {
            return None;
        }
        loop {
            let status = c.store.status_of(&c.run_id).await.ok().flatten();
            let rows = match c.page().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "reading log lines failed");
                    return None;
                }
            };
            if !rows.is_empty() {
                return Some((Chunk::Lines(rows), c));
            }
            let done = status.is_none_or(|s| s.is_final());
            if done || !c.follow {
                c.ended = true;
                let s = status.map(|s| s.as_str().to_string()).unwrap_or_default();
                return Some((Chunk::End(s), c));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }))
}
