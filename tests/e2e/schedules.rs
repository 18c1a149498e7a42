//! Schedules on SQLite and PostgreSQL: one run per tick, pausing, next fire times, a missed
//! tick caught up once at start-up (never a burst), and several replicas firing together.

use std::collections::BTreeMap;
use std::time::Duration;

use jobdock_types::{Run, Schedule};
use serde_json::json;

use crate::{both, builder, sh_job};

fn every_two_seconds(name: &str) -> jobdock_types::JobSpec {
    let mut s = sh_job(name, "echo tick");
    s.max_parallel = Some(5);
    s.schedule = Some(Schedule {
        cron: "*/2 * * * * *".into(),
        timezone: "Europe/Amsterdam".into(),
        paused: false,
    });
    s
}

async fn scheduled(c: &jobdock_client::Client, job: &str) -> Vec<Run> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .list_runs(Some(job), None, cursor.as_deref())
            .await
            .unwrap();
        all.extend(page.items.into_iter().filter(|r| r.trigger == "schedule"));
        match page.next_cursor {
            Some(n) => cursor = Some(n),
            None => return all,
        }
    }
}

fn tick_of(run: &Run) -> chrono::DateTime<chrono::Utc> {
    let key = run
        .idempotency_key
        .as_deref()
        .expect("a scheduled run names its tick");
    chrono::DateTime::parse_from_rfc3339(key.strip_prefix("schedule:").expect("schedule key"))
        .expect("a time")
        .with_timezone(&chrono::Utc)
}

both!(
    a_schedule_fires_every_tick_once_and_can_be_paused,
    a_tick_missed_while_down_fires_once_at_start_up
);

async fn a_schedule_fires_every_tick_once_and_can_be_paused(pg: bool) {
    let app = builder().postgres(pg).start().await;
    let c = app.admin();
    c.create_job(&every_two_seconds("ticking")).await.unwrap();
    let job = c.get_job("ticking").await.unwrap();
    assert_eq!(job.next_fire_times.len(), 3);
    let gaps: Vec<i64> = job
        .next_fire_times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect();
    assert_eq!(gaps, vec![2, 2]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let runs = scheduled(&c, "ticking").await;
    assert!(runs.len() >= 2, "{} scheduled runs", runs.len());
    let mut per_tick = BTreeMap::new();
    for r in &runs {
        *per_tick.entry(tick_of(r)).or_insert(0) += 1;
        assert_eq!(tick_of(r).timestamp() % 2, 0, "ticks fall on even seconds");
    }
    assert!(
        per_tick.values().all(|n| *n == 1),
        "one run per tick: {per_tick:?}"
    );

    c.patch_job("ticking", &json!({"schedule": {"paused": true}}))
        .await
        .unwrap();
    assert!(c
        .get_job("ticking")
        .await
        .unwrap()
        .next_fire_times
        .is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = scheduled(&c, "ticking").await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        scheduled(&c, "ticking").await.len(),
        before,
        "a paused schedule fires nothing"
    );
    let (manual, _) = c
        .trigger("ticking", &Default::default(), None)
        .await
        .unwrap();
    assert_eq!(
        manual.trigger, "api",
        "a paused job can still be triggered by hand"
    );
    // Unpausing does not fire the ticks passed over while paused.
    c.patch_job("ticking", &json!({"schedule": {"paused": false}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = scheduled(&c, "ticking").await;
    let resumed = chrono::Utc::now() - chrono::Duration::seconds(2);
    assert!(after.iter().filter(|r| tick_of(r) < resumed).count() <= before + 1);
}

/// Sleeps until 300 ms past the next even second, so that a restart begins just after a tick.
async fn just_after_a_tick() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let next_even = (now.timestamp() / 2 + 1) * 2;
    let target = chrono::DateTime::from_timestamp(next_even, 300_000_000).unwrap();
    tokio::time::sleep((target - now).to_std().unwrap()).await;
    chrono::Utc::now()
}

/// The even seconds in (from, to): the ticks of a `*/2` schedule.
fn ticks_between(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Vec<i64> {
    (from.timestamp() + 1..=to.timestamp())
        .filter(|s| s % 2 == 0)
        .collect()
}

async fn a_tick_missed_while_down_fires_once_at_start_up(pg: bool) {
    let mut app = builder().postgres(pg).start().await;
    let c = app.admin();
    c.create_job(&every_two_seconds("catch-up")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.kill9();
    let down = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(6)).await; // three ticks pass
    let restart = just_after_a_tick().await;
    app.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let missed = ticks_between(down, restart);
    assert!(missed.len() >= 3, "{missed:?}");
    let fired: Vec<i64> = scheduled(&app.admin(), "catch-up")
        .await
        .iter()
        .map(|r| tick_of(r).timestamp())
        .filter(|t| missed.contains(t))
        .collect();
    assert_eq!(
        fired,
        vec![*missed.last().unwrap()],
        "only the latest missed tick, once"
    );

    // With no catch-up window, missed ticks are passed over; the schedule goes on.
    app.kill9();
    let down = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restart = just_after_a_tick().await;
    app.restart_with_env(&[("JOBDOCK_SCHEDULE_CATCHUP_SECONDS", "0")])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let missed = ticks_between(down, restart);
    let ticks: Vec<i64> = scheduled(&app.admin(), "catch-up")
        .await
        .iter()
        .map(|r| tick_of(r).timestamp())
        .collect();
    assert!(
        !ticks.iter().any(|t| missed.contains(t)),
        "{ticks:?} vs missed {missed:?}"
    );
    assert!(
        ticks.iter().any(|t| *t > restart.timestamp()),
        "the schedule goes on after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_database_fire_each_tick_once() {
    let first = builder().postgres(true).start().await;
    let second = builder().replica_of(&first).start().await;
    let c = first.admin();
    c.create_job(&every_two_seconds("shared-clock"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let runs = scheduled(&second.admin(), "shared-clock").await;
    let mut per_tick = BTreeMap::new();
    for r in &runs {
        *per_tick.entry(tick_of(r)).or_insert(0) += 1;
    }
    assert!(per_tick.len() >= 3, "{per_tick:?}");
    assert!(per_tick.values().all(|n| *n == 1), "{per_tick:?}");
    let fired: usize = [first.logs(), second.logs()]
        .iter()
        .map(|l| l.matches("schedule fired").count())
        .sum();
    assert_eq!(
        fired,
        runs.len(),
        "each tick's run was created by exactly one replica"
    );
}
