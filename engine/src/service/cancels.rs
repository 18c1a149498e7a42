//! Cancel requests on their way to the supervisors of running runs.
//!
//! A supervisor waits here for a cancel of its run instead of asking the store about it every
//! second, which with hundreds of runs going was hundreds of statements a second to learn
//! that nothing changed. It is told at once when the cancel was asked for on this replica,
//! and within a second when on another: the runner asks the store, in one statement for all
//! the runs this replica supervises, which of them have a cancel asked for (see
//! `Runner::cancel_loop`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The runs whose supervisors wait for a cancel, on this replica.
#[derive(Debug, Default)]
pub struct CancelBoard {
    runs: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A supervisor's place on the board; leaving it (dropping) stops waiting.
#[derive(Debug)]
pub struct CancelWatch {
    board: Arc<CancelBoard>,
    id: String,
    notify: Arc<Notify>,
}

impl CancelBoard {
    /// Waits for cancels of run `id` (one supervisor per run on a replica).
    pub fn watch(self: &Arc<Self>, id: &str) -> CancelWatch {
        let notify = Arc::new(Notify::new());
        self.runs
            .lock()
            .expect("cancel board lock")
            .insert(id.to_owned(), notify.clone());
        CancelWatch {
            board: self.clone(),
            id: id.to_owned(),
            notify,
        }
    }

    /// A cancel of run `id` was asked for: its supervisor, if it is here, is told (now, or
    /// when it next waits).
    pub fn requested(&self, id: &str) {
        if let Some(notify) = self.runs.lock().expect("cancel board lock").get(id) {
            notify.notify_one();
        }
    }

    /// Whether any supervisor waits.
    pub fn is_empty(&self) -> bool {
        self.runs.lock().expect("cancel board lock").is_empty()
    }
}

impl CancelWatch {
    /// Returns once a cancel of the run was asked for (or may have been: the caller checks).
    pub async fn requested(&self) {
        self.notify.notified().await
    }
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        let mut runs = self.board.runs.lock().expect("cancel board lock");
        if runs
            .get(&self.id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            runs.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_request_reaches_the_watcher_of_that_run_even_before_it_waits() {
        let board = Arc::new(CancelBoard::default());
        let (a, b) = (board.watch("a"), board.watch("b"));
        board.requested("a");
        board.requested("nobody");
        tokio::time::timeout(Duration::from_secs(10), a.requested())
            .await
            .expect("told before it waited, woken when it does");
        let not_b = tokio::time::timeout(Duration::from_millis(200), b.requested()).await;
        assert!(not_b.is_err(), "no cancel of b was asked for");
        drop(a);
        drop(b);
        assert!(board.is_empty());
    }
}
