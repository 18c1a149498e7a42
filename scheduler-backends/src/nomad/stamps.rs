//! Time stamps for Nomad's log lines, which carry none.
//!
//! A line is stamped with the time its first byte was first received by this backend, plus
//! one nanosecond per byte it comes after in the same frame: a frame holding many lines
//! (say, a log read after the run ended) still gives each line a distinct, increasing
//! stamp, so that `since` can fall between any two lines. The stamps of every log read so far are remembered per job and stream (one mark per frame,
//! not per line), so that reading a log again, after a dropped connection or for a `since`
//! resume, gives each line the stamp it had the first time and `since` filtering is exact.
//! The memory is this process's only: after an engine restart a log is re-read from the
//! start and its lines get new stamps (see the module docs of `logs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::LogStream;

/// When the bytes of one log (one stream of one job) were first received.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// `(offset, time)`: the bytes from `offset` up to the next mark arrived at `time`; the
    /// byte `offset + k` is stamped `time + k` nanoseconds.
    marks: Vec<(u64, DateTime<Utc>)>,
    /// One past the last byte received so far.
    end: u64,
}

impl Ledger {
    /// Records that the bytes `[offset, offset + len)` have been received `now`; bytes seen
    /// before keep their time. Times never go backwards, whatever the clock does.
    pub(crate) fn record(&mut self, offset: u64, len: u64, now: DateTime<Utc>) {
        if offset + len <= self.end {
            return;
        }
        let from = offset.max(self.end);
        let ts = self
            .marks
            .last()
            .map_or(now, |(o, last)| now.max(*last + nanos(from - o)));
        self.marks.push((from, ts));
        self.end = offset + len;
    }

    /// The time the byte at `offset` was first received.
    pub(crate) fn time_at(&self, offset: u64) -> Option<DateTime<Utc>> {
        let i = self.marks.partition_point(|(o, _)| *o <= offset);
        let (from, ts) = self.marks.get(i.checked_sub(1)?)?;
        Some(*ts + nanos(offset - from))
    }
}

fn nanos(n: u64) -> chrono::Duration {
    chrono::Duration::nanoseconds(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The ledgers of every log this backend has read, shared by its log streams.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledgers {
    inner: Arc<Mutex<HashMap<(String, LogStream), Ledger>>>,
}

impl Ledgers {
    /// Runs `f` on the ledger of `job_id`'s `stream`, creating it if needed.
    pub(crate) fn with<T>(
        &self,
        job_id: &str,
        stream: LogStream,
        f: impl FnOnce(&mut Ledger) -> T,
    ) -> T {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(map.entry((job_id.to_owned(), stream)).or_default())
    }

    /// Forgets a job's stamps (its logs are gone with it).
    pub(crate) fn forget(&self, job_id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|(id, _), _| id != job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn rereads_keep_their_first_stamp() {
        let t0 = Utc::now();
        let mut l = Ledger::default();
        l.record(0, 10, t0);
        l.record(10, 5, t0 + Duration::seconds(1));
        // Read again later: the old bytes keep their time, only the new ones are new.
        l.record(0, 20, t0 + Duration::seconds(9));
        assert_eq!(l.time_at(3), Some(t0 + Duration::nanoseconds(3)));
        assert_eq!(
            l.time_at(12),
            Some(t0 + Duration::seconds(1) + Duration::nanoseconds(2))
        );
        assert_eq!(
            l.time_at(17),
            Some(t0 + Duration::seconds(9) + Duration::nanoseconds(2))
        );
    }

    #[test]
    fn never_goes_back_in_time() {
        let t0 = Utc::now();
        let mut l = Ledger::default();
        l.record(0, 1, t0);
        l.record(1, 1, t0 - Duration::seconds(5));
        assert_eq!(l.time_at(1), Some(t0 + Duration::nanoseconds(1)));
        assert!(l.time_at(0) < l.time_at(1));
    }
}
