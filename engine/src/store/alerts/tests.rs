//! Alert store tests, each on embedded SQLite and on PostgreSQL: which channels an event
//! reaches, the events of a run's end, the outbox lease, and the record of attempts.

use std::collections::BTreeSet;

use jobdock_types::{AlertSubscription, ChannelKind, ChannelSubscription, JobSpec, RunStatus};
use serde_json::json;

use super::channels::{self, ChannelFields};
use super::outbox::{AttemptResult, Next, Target};
use super::*;
use crate::store::runs::{self, NewRun, Outcome};
use crate::store::tests::{both, store};
use crate::store::{jobs, NewJob, Store, StoreError};

both!(
    events_reach_the_channels_that_want_them_once,
    run_ends_raise_failure_timeout_success_and_recovery,
    two_claimers_never_take_the_same_alert,
    an_expired_lease_is_taken_over_and_its_old_holder_changes_nothing,
    attempts_are_kept_and_retries_come_when_due,
    a_broken_outbox_never_fails_a_run_end,
    deliveries_page_newest_first,
    channels_are_unique_and_know_their_subscribers,
    old_settled_alerts_are_pruned_and_pending_ones_stay,
);

use AlertKind::{Anomaly, Failure, Recovery, Success, Timeout};

async fn add_channel(s: &Store, name: &str, wide: Option<(&str, &[AlertKind])>) -> String {
    let subscribe = wide.map(|(jobs, on)| ChannelSubscription {
        jobs: jobs.into(),
        on: on.to_vec(),
    });
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = s.begin_write().await.unwrap();
    let fields = ChannelFields {
        kind: ChannelKind::Webhook,
        url_shown: "https://example.com/…",
        description: None,
        subscribe: subscribe.as_ref(),
    };
    channels::insert(&mut tx, &id, name, &fields).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn add_job(s: &Store, name: &str, alerts: &[(&str, &[AlertKind])]) -> crate::store::JobRow {
    let spec = JobSpec {
        name: name.into(),
        image: "img".into(),
        alerts: alerts
            .iter()
            .map(|(channel, on)| AlertSubscription {
                channel: channel.to_string(),
                on: on.to_vec(),
            })
            .collect(),
        ..Default::default()
    };
    let mut tx = s.begin_write().await.unwrap();
    let row = jobs::insert(&mut tx, NewJob { spec: &spec }).await.unwrap();
    tx.commit().await.unwrap();
    row
}

fn event(kind: AlertKind, job: &str, run_id: &str) -> AlertEvent {
    AlertEvent {
        kind,
        job: job.into(),
        run_id: run_id.into(),
        occurred_at_ms: 1_700_000_000_000,
        summary: format!("{job} {kind}"),
        details: json!({ "exit_code": 3 }),
    }
}

async fn enqueue(s: &Store, e: &AlertEvent) -> usize {
    let mut tx = s.begin_write().await.unwrap();
    let n = enqueue_alerts(&mut tx, e).await.unwrap();
    tx.commit().await.unwrap();
    n
}

/// `channel:event` of every alert of a run, sorted.
async fn told(s: &Store, run_id: &str) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT c.name, o.event FROM alert_outbox o JOIN alert_channels c ON c.id = o.channel_id \
         WHERE o.run_id = $1 ORDER BY c.name, o.event",
    )
    .bind(run_id)
    .fetch_all(&mut s.read().await.unwrap())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let (c, e): (String, String) = (r.get("name"), r.get("event"));
            format!("{c}:{e}")
        })
        .collect()
}

async fn events_reach_the_channels_that_want_them_once(pg: bool) {
    let (s, _g) = store(pg).await;
    add_channel(&s, "named", None).await;
    add_channel(&s, "team", Some(("cust-*", &[Failure, Success]))).await;
    add_channel(&s, "others", Some(("other-*", &[Failure]))).await;
    add_channel(&s, "wins", None).await;
    add_job(
        &s,
        "cust-a",
        &[
            ("named", &[Failure]),
            ("wins", &[Success]),
            ("team", &[Failure]),
        ],
    )
    .await;

    assert_eq!(enqueue(&s, &event(Failure, "cust-a", "r1")).await, 2);
    assert_eq!(
        told(&s, "r1").await,
        ["named:failure", "team:failure"],
        "team once, though named twice"
    );
    assert_eq!(enqueue(&s, &event(Success, "cust-a", "r2")).await, 2);
    assert_eq!(told(&s, "r2").await, ["team:success", "wins:success"]);
    assert_eq!(enqueue(&s, &event(Anomaly, "cust-a", "r3")).await, 0);
    // A job without a definition (deleted, or another engineer's event) still reaches the
    // channels whose pattern covers it.
    assert_eq!(enqueue(&s, &event(Failure, "cust-gone", "r4")).await, 1);
    assert_eq!(told(&s, "r4").await, ["team:failure"]);

    let ch = s.channel("named").await.unwrap();
    let stored = s.deliveries(&ch.id, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let a = &stored[0];
    assert_eq!(
        (a.event.as_str(), a.job_name.as_deref(), a.run_id.as_deref()),
        ("failure", Some("cust-a"), Some("r1"))
    );
    assert_eq!(a.summary, "cust-a failure");
    assert_eq!(a.details, json!({ "exit_code": 3 }));
    assert_eq!(a.occurred_at, 1_700_000_000_000);
    assert_eq!(
        (a.status, a.attempts),
        (jobdock_types::DeliveryStatus::Pending, 0)
    );
}

/// Runs one run of `job` to `to` and returns its id.
async fn end_run(
    s: &Store,
    job: &crate::store::JobRow,
    to: RunStatus,
    exit_code: Option<i64>,
) -> String {
    let mut tx = s.begin_write().await.unwrap();
    let run = runs::insert(&mut tx, NewRun::queued(job, &job.spec))
        .await
        .unwrap();
    assert!(
        runs::mark_starting(&mut tx, &run.id, "me", now_ms() + 60_000)
            .await
            .unwrap()
    );
    let now = now_ms();
    let o = Outcome {
        exit_code,
        reason: Some("because".into()),
        started_at: Some(now - 252_000),
        finished_at: Some(now),
        ..Default::default()
    };
    assert!(runs::finish(&mut tx, &run.id, 1, to, &o, true)
        .await
        .unwrap()
        .is_some());
    tx.commit().await.unwrap();
    run.id
}

async fn run_ends_raise_failure_timeout_success_and_recovery(pg: bool) {
    let (s, _g) = store(pg).await;
    add_channel(
        &s,
        "ops",
        Some(("*", &[Failure, Timeout, Recovery, Success])),
    )
    .await;
    add_channel(&s, "recov", None).await;
    add_channel(&s, "wins", None).await;
    let job = add_job(&s, "sync", &[("wins", &[Success]), ("recov", &[Recovery])]).await;

    let first = end_run(&s, &job, RunStatus::Succeeded, Some(0)).await;
    assert_eq!(
        told(&s, &first).await,
        ["ops:success", "wins:success"],
        "no recovery without a past"
    );
    let failed = end_run(&s, &job, RunStatus::Failed, Some(3)).await;
    assert_eq!(told(&s, &failed).await, ["ops:failure"]);
    let summary: String = sqlx::query("SELECT summary FROM alert_outbox WHERE run_id = $1")
        .bind(&failed)
        .fetch_one(&mut s.read().await.unwrap())
        .await
        .unwrap()
        .get("summary");
    assert_eq!(
        summary,
        format!("run {failed} of sync failed with exit code 3 after 4m12s")
    );
    let cancelled = end_run(&s, &job, RunStatus::Cancelled, None).await;
    assert!(told(&s, &cancelled).await.is_empty());
    // The cancelled run does not count: the previous finished run failed.
    let back = end_run(&s, &job, RunStatus::Succeeded, Some(0)).await;
    assert_eq!(
        told(&s, &back).await,
        ["ops:recovery", "recov:recovery", "wins:success"],
        "a channel wanting both hears recovery once"
    );
    let again = end_run(&s, &job, RunStatus::Succeeded, Some(0)).await;
    assert_eq!(told(&s, &again).await, ["ops:success", "wins:success"]);
    let slow = end_run(&s, &job, RunStatus::TimedOut, None).await;
    assert_eq!(told(&s, &slow).await, ["ops:timeout"]);
    let lost = end_run(&s, &job, RunStatus::Lost, None).await;
    assert_eq!(told(&s, &lost).await, ["ops:failure"]);
    let after_lost = end_run(&s, &job, RunStatus::Succeeded, Some(0)).await;
    let details: String = sqlx::query(
        "SELECT details FROM alert_outbox WHERE run_id = $1 AND event = 'recovery' LIMIT 1",
    )
    .bind(&after_lost)
    .fetch_one(&mut s.read().await.unwrap())
    .await
    .unwrap()
    .get("details");
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["previous_status"], "lost");
    assert_eq!(details["duration_ms"], 252_000);
}

async fn insert_alerts(s: &Store, channel_id: &str, n: usize) -> Vec<String> {
    let mut tx = s.begin_write().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let a = NewAlert {
            channel_id,
            event: "test",
            job: None,
            run_id: None,
            occurred_at: now_ms(),
            summary: &format!("alert {i}"),
            details: &json!({}),
            due_at: now_ms() - 1,
        };
        ids.push(outbox::insert(&mut tx, &a).await.unwrap());
    }
    tx.commit().await.unwrap();
    ids
}

async fn two_claimers_never_take_the_same_alert(pg: bool) {
    let (s, _g) = store(pg).await;
    let ch = add_channel(&s, "ops", None).await;
    let all: BTreeSet<String> = insert_alerts(&s, &ch, 60).await.into_iter().collect();
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let owner = format!("replica-{i}");
                let mut mine = Vec::new();
                // 20 claims of 3 take all 60; a claimer that gets more is handed taken rows.
                for _ in 0..25 {
                    let got = s.claim_alerts(&owner, now_ms() + 60_000, 3).await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    for c in got {
                        assert_eq!(c.alert.claimed_by.as_deref(), Some(owner.as_str()));
                        assert!(
                            matches!(&c.target, Target::Channel { name, .. } if name == "ops"),
                            "{:?}",
                            c.target
                        );
                        mine.push(c.alert.id);
                    }
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id.clone()), "alert {id} was claimed twice");
        }
    }
    assert_eq!(seen, all, "every alert claimed by exactly one claimer");
    assert!(
        s.claim_alerts("late", now_ms() + 60_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "leased alerts are not handed out again"
    );
}

async fn an_expired_lease_is_taken_over_and_its_old_holder_changes_nothing(pg: bool) {
    let (s, _g) = store(pg).await;
    let ch = add_channel(&s, "ops", None).await;
    let id = insert_alerts(&s, &ch, 1).await.remove(0);
    let a = s.claim_alerts("a", now_ms() + 150, 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert!(s
        .claim_alerts("b", now_ms() + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let b = s.claim_alerts("b", now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(b.len(), 1, "a lease that ran out is taken over");
    let result = AttemptResult {
        at: now_ms(),
        http_status: Some(200),
        error: None,
        duration_ms: 5,
    };
    assert!(
        !s.record_alert_attempt(&id, "a", &result, Next::Delivered)
            .await
            .unwrap(),
        "the old holder's outcome does not change the alert"
    );
    assert_eq!(
        s.alert(&id).await.unwrap().status,
        jobdock_types::DeliveryStatus::Pending
    );
    assert!(s
        .record_alert_attempt(&id, "b", &result, Next::Delivered)
        .await
        .unwrap());
    let done = s.alert(&id).await.unwrap();
    assert_eq!(done.status, jobdock_types::DeliveryStatus::Delivered);
    assert_eq!(
        (done.claimed_by, done.delivered_at),
        (None, Some(result.at))
    );
    assert_eq!(
        s.delivery_attempts(&[id]).await.unwrap().len(),
        2,
        "both attempts happened"
    );
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(s
        .claim_alerts("c", now_ms() + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn attempts_are_kept_and_retries_come_when_due(pg: bool) {
    let (s, _g) = store(pg).await;
    let ch = add_channel(&s, "ops", None).await;
    let id = insert_alerts(&s, &ch, 1).await.remove(0);
    let failed = |status: Option<u16>, error: &str| AttemptResult {
        at: now_ms(),
        http_status: status,
        error: Some(error.into()),
        duration_ms: 12,
    };
    assert_eq!(
        s.claim_alerts("me", now_ms() + 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let later = now_ms() + 60_000;
    let r = failed(Some(500), "HTTP 500");
    assert!(s
        .record_alert_attempt(&id, "me", &r, Next::RetryAt(later))
        .await
        .unwrap());
    let a = s.alert(&id).await.unwrap();
    assert_eq!(
        (a.status, a.attempts, a.next_attempt_at),
        (jobdock_types::DeliveryStatus::Pending, 1, Some(later))
    );
    assert!(
        s.claim_alerts("me", now_ms() + 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    sqlx::query("UPDATE alert_outbox SET next_attempt_at = $1")
        .bind(now_ms() - 1)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
    let again = s.claim_alerts("me", now_ms() + 60_000, 10).await.unwrap();
    assert_eq!(again[0].alert.attempts, 1);
    let r = failed(None, "connection refused");
    assert!(s
        .record_alert_attempt(&id, "me", &r, Next::Failed)
        .await
        .unwrap());
    assert_eq!(
        s.alert(&id).await.unwrap().status,
        jobdock_types::DeliveryStatus::Failed
    );
    assert!(s
        .claim_alerts("me", now_ms() + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let attempts = s.delivery_attempts(&[id]).await.unwrap();
    let seen: Vec<(i64, Option<i64>, Option<&str>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.http_status, a.error.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Some(500), Some("HTTP 500")),
            (2, None, Some("connection refused"))
        ]
    );
}

async fn a_broken_outbox_never_fails_a_run_end(pg: bool) {
    let (s, _g) = store(pg).await;
    add_channel(&s, "ops", Some(("*", &[Failure]))).await;
    let job = add_job(&s, "sync", &[]).await;
    for t in ["alert_attempts", "alert_outbox"] {
        sqlx::query(&format!("DROP TABLE {t}"))
            .execute(&mut s.write_alone().await.unwrap())
            .await
            .unwrap();
    }
    let id = end_run(&s, &job, RunStatus::Failed, Some(1)).await;
    assert_eq!(
        s.status_of(&id).await.unwrap(),
        Some(RunStatus::Failed),
        "the run ended all the same"
    );
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(
        enqueue_alerts(&mut tx, &event(Failure, "sync", &id))
            .await
            .unwrap(),
        0
    );
    jobs::touch(&mut tx, &job.id).await.unwrap();
    tx.commit()
        .await
        .expect("the caller's transaction is still usable");
}

async fn deliveries_page_newest_first(pg: bool) {
    let (s, _g) = store(pg).await;
    let ch = add_channel(&s, "ops", None).await;
    let other = add_channel(&s, "other", None).await;
    let ids = insert_alerts(&s, &ch, 5).await;
    insert_alerts(&s, &other, 2).await;
    let first = s.deliveries(&ch, None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [&ids[4], &ids[3]]
    );
    let rest = s.deliveries(&ch, Some(first[1].seq), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [&ids[2], &ids[1], &ids[0]]
    );
}

async fn channels_are_unique_and_know_their_subscribers(pg: bool) {
    let (s, _g) = store(pg).await;
    let id = add_channel(&s, "ops", Some(("cust-*", &[Failure]))).await;
    let mut tx = s.begin_write().await.unwrap();
    let fields = ChannelFields {
        kind: ChannelKind::Slack,
        url_shown: "https://hooks.slack.com/…",
        description: Some("team"),
        subscribe: None,
    };
    let dup = channels::insert(&mut tx, "other-id", "ops", &fields).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    drop(tx);
    add_job(&s, "a", &[("ops", &[Failure])]).await;
    add_job(&s, "b", &[("opsx", &[Failure])]).await;
    add_job(&s, "c", &[]).await;
    let sealed = crate::store::SealedSecret {
        key: "url".into(),
        key_id: "k1".into(),
        nonce: vec![1; 12],
        ciphertext: vec![0, 255, 7],
    };
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(
        channels::subscribing_jobs(&mut tx, "ops").await.unwrap(),
        ["a"]
    );
    assert!(channels::exists_for_share(&mut tx, &s, "ops")
        .await
        .unwrap());
    assert!(!channels::exists_for_share(&mut tx, &s, "opsx")
        .await
        .unwrap());
    channels::put_sealed(&mut tx, &id, &sealed).await.unwrap();
    let changed = channels::update(&mut tx, &id, &fields).await.unwrap();
    assert_eq!(
        (changed.kind, changed.subscribe),
        (ChannelKind::Slack, None)
    );
    assert_eq!(
        channels::not_sealed_with(&mut tx, "k2").await.unwrap(),
        [(id.clone(), sealed.clone())]
    );
    tx.commit().await.unwrap();
    assert_eq!(
        s.channel_sealed(&id).await.unwrap(),
        std::slice::from_ref(&sealed)
    );
    assert_eq!(
        s.channel_sealing_key_samples().await.unwrap(),
        [(id.clone(), sealed)]
    );
    insert_alerts(&s, &id, 2).await;
    let mut tx = s.begin_write().await.unwrap();
    channels::delete(&mut tx, &id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(s.channel("ops").await, Err(StoreError::NotFound)));
    assert!(
        s.deliveries(&id, None, 10).await.unwrap().is_empty(),
        "its alerts went with it"
    );
}

async fn old_settled_alerts_are_pruned_and_pending_ones_stay(pg: bool) {
    let (s, _g) = store(pg).await;
    let ch = add_channel(&s, "ops", None).await;
    let ids = insert_alerts(&s, &ch, 3).await;
    assert_eq!(
        s.claim_alerts("me", now_ms() + 60_000, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let done = AttemptResult {
        at: now_ms(),
        http_status: Some(200),
        error: None,
        duration_ms: 5,
    };
    for id in &ids[..2] {
        assert!(s
            .record_alert_attempt(id, "me", &done, Next::Delivered)
            .await
            .unwrap());
    }
    let prune = |before: i64| {
        let s = s.clone();
        async move {
            let mut tx = s.begin_write().await.unwrap();
            let n = outbox::prune(&mut tx, before, 1).await.unwrap();
            tx.commit().await.unwrap();
            n
        }
    };
    assert_eq!(prune(now_ms() - 60_000).await, 0, "younger than the cut");
    assert_eq!(prune(now_ms() + 1).await, 1, "in batches of the limit");
    assert_eq!(prune(now_ms() + 1).await, 1);
    assert_eq!(prune(now_ms() + 1).await, 0, "the pending one stays");
    assert!(s.alert(&ids[2]).await.is_ok());
    assert!(s.alert(&ids[0]).await.is_err());
    assert!(s.delivery_attempts(&ids[..2]).await.unwrap().is_empty());
}
