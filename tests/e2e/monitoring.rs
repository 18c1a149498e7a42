//! Monitoring: every run's timeline.

use std::time::Duration;

use jobdock_types::{RunEventKind, RunStatus};

use crate::{app, sh_job, wait_for_log};

/// A run that waits for a lock held by another job's run, reports progress, fails and is
/// retried tells all of it in its timeline, in order, with the lock it waited for.
#[tokio::test]
async fn a_runs_timeline_tells_what_happened_to_it_in_order() {
    let app = app(false).await;
    let c = app.admin();
    let mut holder = sh_job("holder", "echo holding; sleep 2");
    holder.lock_keys = vec!["erp-api".into()];
    c.create_job(&holder).await.unwrap();
    let mut waiter = sh_job(
        "waiter",
        "echo '::jobdock::progress loaded 10 rows'; echo done >&2; exit 3",
    );
    waiter.lock_keys = vec!["erp-api".into()];
    waiter.retries = Some(jobdock_types::Retries {
        max_attempts: 2,
        backoff_seconds: 0,
    });
    c.create_job(&waiter).await.unwrap();

    let (first, _) = c
        .trigger("holder", &Default::default(), None)
        .await
        .unwrap();
    wait_for_log(&c, &first.id, "holding", 60).await;
    let (run, _) = c
        .trigger("waiter", &Default::default(), None)
        .await
        .unwrap();
    let ended = c
        .wait_until_final(&run.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Failed, "{ended:?}");

    let events = c.run_events(&run.id).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.attempt, e.kind)).collect();
    use RunEventKind::*;
    let mut want = vec![
        (1, Queued),
        (1, Waiting),
        (1, Claimed),
        (1, Launched),
        (1, Started),
    ];
    let first_attempt_end = kinds.iter().position(|k| *k == (1, RetryScheduled));
    assert!(first_attempt_end.is_some(), "{kinds:?}");
    // Output and progress come between the start and the end, in the order the pump stored them.
    for k in [FirstOutput, Progress] {
        assert!(kinds.contains(&(1, k)), "no {k:?} in {kinds:?}");
    }
    want.retain(|w| kinds.contains(w));
    let in_order: Vec<_> = kinds.iter().filter(|k| want.contains(k)).cloned().collect();
    assert_eq!(in_order, want, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&(2, Finished)), "{kinds:?}");
    assert!(kinds.contains(&(2, Started)), "{kinds:?}");

    let waiting = events.iter().find(|e| e.kind == Waiting).unwrap();
    assert!(
        waiting.message.contains("lock `erp-api`"),
        "{}",
        waiting.message
    );
    let claimed = events.iter().find(|e| e.kind == Claimed).unwrap();
    let waited = claimed.detail["waited_ms"].as_i64().unwrap();
    assert!(waited >= 500, "claimed after {waited} ms: {claimed:?}");
    let progress = events.iter().find(|e| e.kind == Progress).unwrap();
    assert_eq!(progress.message, "loaded 10 rows");
    let finished = events.last().unwrap();
    assert_eq!(finished.detail["status"], "failed");
    assert_eq!(finished.detail["exit_code"], 3);
    assert!(
        events.windows(2).all(|w| w[0].at <= w[1].at),
        "times go forward: {events:?}"
    );
}

/// The timeline of a run is read like the run: 404 for an unknown one.
#[tokio::test]
async fn an_unknown_runs_timeline_is_404() {
    let app = app(false).await;
    let err = app.admin().run_events("no-such-run").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

/// The timeline answers the page shape of every list: `{items, next_cursor}`, in pages.
#[tokio::test]
async fn a_runs_timeline_comes_in_pages() {
    let app = crate::app(false).await;
    let c = app.admin();
    c.create_job(&crate::sh_job("paged", "echo hi"))
        .await
        .unwrap();
    let run = crate::run_to_end(&c, "paged").await;
    let all = c.run_events(&run.id).await.unwrap();
    assert!(all.len() >= 4, "{all:?}");
    let http = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let mut url = format!("{}/api/v1/runs/{}/events?limit=2", app.url(), run.id);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(jobdock_testkit::app::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(items.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(paged, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_progress_shows_on_the_run() {
    let app = app(false).await;
    let c = app.admin();
    let script = "echo '::jobdock::progress 40/100 loading orders'; sleep 3; \
                  echo '::jobdock::progress 100/100 done'";
    c.create_job(&sh_job("progress", script)).await.unwrap();
    let (run, _) = c
        .trigger("progress", &Default::default(), None)
        .await
        .unwrap();
    let during = crate::wait_for(&c, &run.id, 60, |r| r.progress.is_some()).await;
    let p = during.progress.unwrap();
    assert_eq!(
        (p.done, p.total, p.message.as_str()),
        (Some(40), Some(100), "loading orders")
    );
    assert!(
        !during.status.is_final(),
        "seen while it runs: {:?}",
        during.status
    );
    let done = c
        .wait_until_final(&run.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let p = done.progress.unwrap();
    assert_eq!(
        (p.done, p.total, p.message.as_str()),
        (Some(100), Some(100), "done")
    );
}
