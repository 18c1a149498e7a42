//! Anomalies with real containers: learned from a job's runs, raised while a run still
//! runs or when it ends, listed across jobs, and closed by the next clean success.

use std::time::Duration;

use jobdock_client::Client;
use jobdock_testkit::webhook::Receiver;
use jobdock_types::{
    AlertKind, AlertSubscription, Anomaly, AnomalyKind, Monitoring, Run, RunStatus,
};
use serde_json::json;

use crate::{app, run_to_end, sh_job};

/// Polls the run until it carries an anomaly of `kind`; panics after `secs` seconds.
async fn anomaly_on(c: &Client, run_id: &str, kind: AnomalyKind, secs: u64) -> (Run, Anomaly) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let run = c.get_run(run_id).await.unwrap();
        if let Some(a) = run.anomalies.iter().find(|a| a.kind == kind).cloned() {
            return (run, a);
        }
        assert!(
            std::time::Instant::now() < until,
            "no {kind} on run {run_id} within {secs} s: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kinds(run: &Run) -> Vec<AnomalyKind> {
    run.anomalies.iter().map(|a| a.kind).collect()
}

/// After five runs of about a second, a run that sleeps much longer is `long_running`
/// while it still runs — and a local webhook receiver gets a correctly signed alert of it —
/// and a success that exits at once is `unusually_fast`; `/metrics` counts both.
#[tokio::test]
async fn a_jobs_usual_duration_is_learned_and_departures_from_it_are_raised() {
    let receiver = Receiver::start(&[]).await;
    let app = crate::alerts::engine().start().await;
    let c = app.admin();
    let channel = c
        .create_channel(&crate::alerts::webhook("oncall", &receiver.url("/hook")))
        .await
        .unwrap();
    let secret = channel.signing_secret.expect("a generated signing secret");
    let mut job = sh_job("nightly-load", "sleep 1");
    job.monitoring = Some(Monitoring {
        long_running_min_extra_seconds: 2,
        ..Monitoring::default()
    });
    job.alerts = vec![AlertSubscription {
        channel: "oncall".into(),
        on: vec![AlertKind::Anomaly],
    }];
    c.create_job(&job).await.unwrap();
    for _ in 0..5 {
        let run = run_to_end(&c, "nightly-load").await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert!(run.anomalies.is_empty(), "{run:?}");
    }

    c.patch_job(
        "nightly-load",
        &json!({"command": ["sh", "-c", "echo loading; sleep 120"]}),
    )
    .await
    .unwrap();
    let (long, _) = c
        .trigger("nightly-load", &Default::default(), None)
        .await
        .unwrap();
    let (run, a) = anomaly_on(&c, &long.id, AnomalyKind::LongRunning, 60).await;
    assert_eq!(run.status, RunStatus::Running, "raised while it still runs");
    assert!(a.open);
    assert!(
        a.message.contains("usually takes 1.") && a.message.contains("last 5 successful runs"),
        "says what was expected: {}",
        a.message
    );
    let expected = a.expected.unwrap();
    assert!((1.0..2.0).contains(&expected), "{a:?}");
    let open = c.anomalies(Some(true), None, None).await.unwrap();
    assert!(open.items.iter().any(|x| x.id == a.id), "{open:?}");
    let events = c.run_events(&long.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == jobdock_types::RunEventKind::Anomaly
                && e.detail["kind"] == "long_running"),
        "{events:?}"
    );

    // The alert reaches the receiver while the run still runs, signed.
    let got = receiver.wait_for(1, 60).await;
    crate::alerts::verify(&secret, &got[0]);
    let body = got[0].json();
    assert_eq!(body["event"], "anomaly", "{body}");
    assert_eq!(body["run_id"], long.id.as_str(), "{body}");
    assert!(
        body["summary"].as_str().unwrap().contains("long_running"),
        "{body}"
    );
    assert_eq!(
        c.get_run(&long.id).await.unwrap().status,
        RunStatus::Running,
        "alerted before the run ended"
    );

    // Its end closes it.
    c.cancel_run(&long.id).await.unwrap();
    let ended = c
        .wait_until_final(&long.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    assert!(!ended.anomalies[0].open, "{ended:?}");
    assert_eq!(kinds(&ended), [AnomalyKind::LongRunning], "raised once");

    c.patch_job("nightly-load", &json!({"command": ["true"]}))
        .await
        .unwrap();
    let fast = run_to_end(&c, "nightly-load").await;
    assert_eq!(fast.status, RunStatus::Succeeded);
    assert_eq!(kinds(&fast), [AnomalyKind::UnusuallyFast], "{fast:?}");
    assert!(
        fast.anomalies[0].message.contains("succeeded in 0."),
        "{}",
        fast.anomalies[0].message
    );
    let metrics = crate::metrics::scrape(&app).await;
    for kind in ["long_running", "unusually_fast"] {
        assert_eq!(
            metrics.value("jobdock_anomalies_total", &[("kind", kind)]),
            Some(1.0),
            "{kind}"
        );
    }
    receiver.wait_for(2, 60).await;
    let kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            r.json()["details"]["anomaly"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["long_running", "unusually_fast"], "one alert each");
}

/// A run that writes nothing for longer than its job allows is `stalled`; one that writes
/// heartbeat lines is not.
#[tokio::test]
async fn a_silent_run_is_stalled_and_a_heartbeat_keeps_a_run_from_it() {
    let app = app(false).await;
    let c = app.admin();
    let quiet_for_two = Some(Monitoring {
        stall_after_seconds: Some(2),
        ..Monitoring::default()
    });
    let mut silent = sh_job("silent", "echo started; sleep 120");
    silent.monitoring = quiet_for_two;
    c.create_job(&silent).await.unwrap();
    let mut beating = sh_job(
        "beating",
        "while true; do echo ::jobdock::heartbeat; sleep 0.5; done",
    );
    beating.monitoring = quiet_for_two;
    c.create_job(&beating).await.unwrap();

    let (beat, _) = c
        .trigger("beating", &Default::default(), None)
        .await
        .unwrap();
    let (quiet, _) = c
        .trigger("silent", &Default::default(), None)
        .await
        .unwrap();
    let (run, a) = anomaly_on(&c, &quiet.id, AnomalyKind::Stalled, 60).await;
    assert_eq!(run.status, RunStatus::Running);
    assert!(a.message.contains("no output for"), "{}", a.message);
    // The silent run needed more than 2 s to be noticed; the beating one ran as long.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let beat_now = c.get_run(&beat.id).await.unwrap();
    assert_eq!(beat_now.status, RunStatus::Running);
    assert!(beat_now.anomalies.is_empty(), "{beat_now:?}");
    let metrics = crate::metrics::scrape(&app).await;
    assert_eq!(
        metrics.value("jobdock_anomalies_total", &[("kind", "stalled")]),
        Some(1.0)
    );
    for id in [&beat.id, &quiet.id] {
        c.cancel_run(id).await.unwrap();
    }
}

/// Failures in a row raise one `failure_streak`; a timeout raises `timed_out`; the next
/// clean success closes them, and the list of open anomalies is empty again.
#[tokio::test]
async fn failures_in_a_row_and_timeouts_are_raised_and_a_success_closes_them() {
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("flaky", "echo nope; exit 1");
    job.monitoring = Some(Monitoring {
        failure_streak: 2,
        ..Monitoring::default()
    });
    c.create_job(&job).await.unwrap();
    let first = run_to_end(&c, "flaky").await;
    assert!(first.anomalies.is_empty(), "{first:?}");
    let second = run_to_end(&c, "flaky").await;
    assert_eq!(kinds(&second), [AnomalyKind::FailureStreak], "{second:?}");
    assert!(second.anomalies[0].message.contains("2 runs"));
    let third = run_to_end(&c, "flaky").await;
    assert!(
        third.anomalies.is_empty(),
        "raised once per streak: {third:?}"
    );

    c.patch_job(
        "flaky",
        &json!({"command": ["sh", "-c", "sleep 30"], "timeout_seconds": 1}),
    )
    .await
    .unwrap();
    let slow = run_to_end(&c, "flaky").await;
    assert_eq!(slow.status, RunStatus::TimedOut);
    assert_eq!(kinds(&slow), [AnomalyKind::TimedOut], "{slow:?}");
    let open = c.anomalies(Some(true), Some("flaky"), None).await.unwrap();
    assert_eq!(open.items.len(), 2, "{open:?}");

    c.patch_job(
        "flaky",
        &json!({"command": ["true"], "timeout_seconds": null}),
    )
    .await
    .unwrap();
    let fine = run_to_end(&c, "flaky").await;
    assert_eq!(fine.status, RunStatus::Succeeded);
    let open = c.anomalies(Some(true), Some("flaky"), None).await.unwrap();
    assert!(
        open.items.is_empty(),
        "a clean success closes them: {open:?}"
    );
    let closed = c.anomalies(Some(false), Some("flaky"), None).await.unwrap();
    assert_eq!(closed.items.len(), 2);
    assert!(closed.items[0]
        .closed_reason
        .as_deref()
        .unwrap()
        .contains("succeeded"));
}

/// Bad monitoring settings are refused naming the field; a bad filter too.
#[tokio::test]
async fn bad_monitoring_settings_and_filters_name_the_field() {
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("tuned", "true");
    job.monitoring = Some(Monitoring {
        unusually_fast_ratio: 2.0,
        min_samples: 0,
        ..Monitoring::default()
    });
    let err = c.create_job(&job).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    let text = format!("{err:?}");
    for field in ["monitoring.unusually_fast_ratio", "monitoring.min_samples"] {
        assert!(text.contains(field), "{field} not named: {text}");
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/anomalies?kind=slow", app.url()))
        .bearer_auth(jobdock_testkit::app::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "kind", "{body}");
}

/// A run that waits far longer than the job's runs usually take to start — here behind a
/// lock another job holds — is `slow_start` while it still waits.
#[tokio::test]
async fn a_run_waiting_far_longer_than_usual_to_start_is_a_slow_start() {
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("orders", "echo ok");
    job.lock_keys = vec!["erp".into()];
    job.monitoring = Some(Monitoring {
        slow_start_min_extra_seconds: 2,
        ..Monitoring::default()
    });
    c.create_job(&job).await.unwrap();
    let mut holder = sh_job("invoices", "echo holding; sleep 120");
    holder.lock_keys = vec!["erp".into()];
    c.create_job(&holder).await.unwrap();
    for _ in 0..5 {
        assert_eq!(run_to_end(&c, "orders").await.status, RunStatus::Succeeded);
    }

    let (held, _) = c
        .trigger("invoices", &Default::default(), None)
        .await
        .unwrap();
    crate::wait_for_log(&c, &held.id, "holding", 60).await;
    let (waiting, _) = c
        .trigger("orders", &Default::default(), None)
        .await
        .unwrap();
    let (run, a) = anomaly_on(&c, &waiting.id, AnomalyKind::SlowStart, 60).await;
    assert_eq!(run.status, RunStatus::Queued, "raised while it still waits");
    assert!(a.message.contains("not running"), "{}", a.message);
    c.cancel_run(&held.id).await.unwrap();
    let ended = c
        .wait_until_final(&waiting.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Succeeded);
    assert!(
        !ended.anomalies[0].open,
        "closed by the run's end: {ended:?}"
    );
}
