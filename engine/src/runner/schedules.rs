//! Schedules: every replica watches the cron schedules, and a tick becomes a trigger whose
//! idempotency key names the tick, so that when several replicas fire the same tick the
//! database keeps exactly one run. A tick missed while the engine was down fires once at
//! start-up if it is younger than the catch-up window; older ones are passed over, and a
//! burst of missed ticks never fires more than the latest.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::Runner;
use crate::schedule::{parse_cron, parse_timezone};
use crate::service::runs::{self as svc, TriggerError};
use crate::store::from_ms;

/// How often schedules are re-read from the store (jobs change, other replicas fire).
const REFRESH: Duration = Duration::from_secs(5);

/// After the first pass, a tick this late is the loop's own lateness (a busy machine), not
/// a tick missed while the engine was down: it still fires.
const LATENESS: Duration = Duration::from_secs(5);

struct Entry {
    job_id: String,
    name: String,
    /// When the job was last changed: ticks before it never fire.
    since: i64,
    cron: Cron,
    tz: Tz,
    paused: bool,
}

impl Runner {
    pub(super) async fn schedule_loop(&self) {
        let mut entries: Vec<Entry> = Vec::new();
        let mut ticks: HashMap<String, i64> = HashMap::new();
        let mut refreshed: Option<tokio::time::Instant> = None;
        let mut window = self.inner.config.schedule_catchup;
        loop {
            let changed = self
                .inner
                .jobs_changed
                .swap(false, std::sync::atomic::Ordering::AcqRel);
            if changed || refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
                match self.read_schedules().await {
                    Ok((e, t)) => {
                        entries = e;
                        ticks = t;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read schedules"),
                }
                refreshed = Some(tokio::time::Instant::now());
            }
            let now = Utc::now();
            for e in &entries {
                self.visit(e, &mut ticks, now, window).await;
            }
            window = self.inner.config.schedule_catchup.max(LATENESS);
            // Wake at the next second, when a 6-field schedule may tick.
            let to_next_second = 1000 - (now.timestamp_subsec_millis() as u64).min(999);
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(to_next_second)) => {}
            }
        }
    }

    async fn read_schedules(
        &self,
    ) -> Result<(Vec<Entry>, HashMap<String, i64>), crate::store::StoreError> {
        let store = &self.inner.ctx.store;
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let jobs = store.jobs_after(after.as_deref(), 500).await?;
            for j in &jobs {
                let Some(s) = &j.spec.schedule else { continue };
                match (parse_cron(&s.cron), parse_timezone(&s.timezone)) {
                    (Ok(cron), Ok(tz)) => entries.push(Entry {
                        job_id: j.id.clone(),
                        name: j.name.clone(),
                        since: j.updated_at,
                        cron,
                        tz,
                        paused: s.paused,
                    }),
                    _ => tracing::warn!(job = %j.name, "skipping an unreadable schedule"),
                }
            }
            match jobs.last() {
                Some(j) if jobs.len() == 500 => after = Some(j.name.clone()),
                _ => break,
            }
        }
        Ok((entries, store.schedule_ticks().await?))
    }

    /// Fires the latest tick due for a job, if any.
    async fn visit(
        &self,
        e: &Entry,
        ticks: &mut HashMap<String, i64>,
        now: DateTime<Utc>,
        window: Duration,
    ) {
        let store = &self.inner.ctx.store;
        let now_ms = now.timestamp_millis();
        if e.paused {
            // Ticks passed over while paused never fire: keep the mark at now.
            if ticks.get(&e.job_id).is_none_or(|t| now_ms - t >= 1000)
                && store.advance_schedule(&e.job_id, now_ms).await.is_ok()
            {
                ticks.insert(e.job_id.clone(), now_ms);
            }
            return;
        }
        // A schedule counts from when it was set: earlier ticks never fire.
        let last = match ticks.get(&e.job_id) {
            Some(t) => (*t).max(e.since),
            None => e.since,
        };
        // Ticks older than the catch-up window are passed over, never fired.
        let horizon = now_ms - window.as_millis() as i64;
        let Some(tick) = latest_due(&e.cron, e.tz, from_ms(last.max(horizon)), now) else {
            if last < horizon {
                let _ = store.advance_schedule(&e.job_id, horizon).await;
                ticks.insert(e.job_id.clone(), horizon);
            }
            return;
        };
        self.fire(e, tick).await;
        let t = tick.timestamp_millis();
        if let Err(err) = store.advance_schedule(&e.job_id, t).await {
            tracing::warn!(job = %e.name, error = %err, "could not record the schedule's tick");
        }
        ticks.insert(e.job_id.clone(), t);
    }

    async fn fire(&self, e: &Entry, tick: DateTime<Utc>) {
        match svc::trigger_scheduled(&self.inner.ctx, &e.name, tick).await {
            Ok(svc::Triggered::Created(run)) => {
                tracing::info!(job = %e.name, run_id = %run.id, tick = %tick, status = %run.status, "schedule fired");
                self.wake();
            }
            Ok(svc::Triggered::Existing(_)) => {}
            Err(TriggerError::Refused(r)) => {
                tracing::info!(job = %e.name, tick = %tick, "scheduled run refused: {r}")
            }
            Err(TriggerError::Service(err)) => {
                tracing::warn!(job = %e.name, error = %err, "schedule could not trigger")
            }
        }
    }
}

/// The latest tick after `last` and at or before `now`.
fn latest_due(
    cron: &Cron,
    tz: Tz,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    cron.iter_after(last.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= now)
        .last()
}
