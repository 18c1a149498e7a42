//! `GET /metrics` reflects real runs on Docker: finished runs by job and status, histograms,
//! runs in flight, anomalies, API requests by route template; it needs a token unless public;
//! and with two replicas on PostgreSQL each run is counted by exactly one of them.

use std::time::Duration;

use jobdock_testkit::metrics::Exposition;
use jobdock_testkit::TestApp;
use jobdock_types::{NewToken, RunStatus, Scope};

use crate::{app, builder, run_to_end, sh_job, wait_for};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` with an optional bearer token: status, content type, body.
async fn scrape_raw(app: &TestApp, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", app.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, resp.text().await.expect("body"))
}

/// The admin's view of the app's metrics.
pub async fn scrape(app: &TestApp) -> Exposition {
    let (status, _, body) = scrape_raw(app, Some(jobdock_testkit::app::ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_requests_show_in_the_metrics() {
    let app = app(false).await;
    let c = app.admin();
    let mut ok = sh_job("metrics-ok", "echo fine");
    ok.lock_keys = vec!["metrics-target".into()];
    c.create_job(&ok).await.unwrap();
    c.create_job(&sh_job("metrics-bad", "exit 3"))
        .await
        .unwrap();
    let good = run_to_end(&c, "metrics-ok").await;
    assert_eq!(good.status, RunStatus::Succeeded, "{good:?}");
    let bad = run_to_end(&c, "metrics-bad").await;
    assert_eq!(bad.status, RunStatus::Failed, "{bad:?}");
    // A request to a route with a parameter, and one to no route at all.
    c.get_run(&good.id).await.unwrap();
    let http = reqwest::Client::new();
    let nowhere = http
        .get(format!("{}/no/such/{}", app.url(), good.id))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);

    let (status, content_type, text) =
        scrape_raw(&app, Some(jobdock_testkit::app::ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, OPENMETRICS);
    assert!(text.ends_with("# EOF\n"));
    assert!(
        !text.contains(&good.id),
        "no series is labelled with a run id"
    );
    let m = Exposition::parse(&text);
    let finished = "jobdock_runs_finished_total";
    assert_eq!(
        m.value(finished, &[("job", "metrics-ok"), ("status", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(finished, &[("job", "metrics-bad"), ("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(m.sum(finished, &[]), 2.0);
    assert_eq!(
        m.value(
            "jobdock_runs_triggered_total",
            &[("job", "metrics-ok"), ("trigger", "api")]
        ),
        Some(1.0)
    );
    for (name, labels) in [
        ("jobdock_run_duration_seconds_count", ("job", "metrics-ok")),
        ("jobdock_run_duration_seconds_count", ("job", "metrics-bad")),
        (
            "jobdock_run_queue_wait_seconds_count",
            ("job", "metrics-ok"),
        ),
        (
            "jobdock_lock_wait_seconds_count",
            ("lock", "metrics-target"),
        ),
    ] {
        assert_eq!(m.value(name, &[labels]), Some(1.0), "{name} {labels:?}");
    }
    assert_eq!(
        m.value(
            "jobdock_run_duration_seconds_bucket",
            &[("job", "metrics-ok"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("jobdock_runs_in_flight", &[("backend", "docker")]),
        Some(0.0)
    );
    assert_eq!(m.sum("jobdock_build_info", &[]), 1.0, "build info is there");
    let requests = "jobdock_http_request_duration_seconds_count";
    assert!(
        m.sum(
            requests,
            &[
                ("method", "GET"),
                ("route", "/api/v1/runs/{id}"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert_eq!(
        m.value(
            requests,
            &[
                ("method", "POST"),
                ("route", "/api/v1/jobs/{name}/runs"),
                ("status", "201")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.value(
            requests,
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_is_in_flight_and_a_cancel_is_counted_once() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("metrics-sleeper", "sleep 60"))
        .await
        .unwrap();
    let (running, _) = c
        .trigger("metrics-sleeper", &Default::default(), None)
        .await
        .unwrap();
    // A second run waits behind the first (max_parallel 1) and is cancelled while queued.
    let (queued, _) = c
        .trigger("metrics-sleeper", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &running.id, 60, |r| r.status == RunStatus::Running).await;
    let m = scrape(&app).await;
    assert_eq!(
        m.value("jobdock_runs_in_flight", &[("backend", "docker")]),
        Some(1.0)
    );
    assert_eq!(
        c.cancel_run(&queued.id).await.unwrap().status,
        RunStatus::Cancelled
    );
    c.cancel_run(&running.id).await.unwrap();
    let ended = c
        .wait_until_final(&running.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    let m = scrape(&app).await;
    assert_eq!(
        m.value(
            "jobdock_runs_finished_total",
            &[("job", "metrics-sleeper"), ("status", "cancelled")]
        ),
        Some(2.0),
        "the queued run by the API, the running one by its supervisor"
    );
    assert_eq!(
        m.value("jobdock_runs_in_flight", &[("backend", "docker")]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_read_token_unless_public() {
    let app = app(false).await;
    let (status, content_type, body) = scrape_raw(&app, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(content_type.starts_with("application/problem+json"));
    let (status, _, _) = scrape_raw(&app, Some("not-a-token")).await;
    assert_eq!(status, 401);
    let new = NewToken {
        name: "prometheus".into(),
        scope: Scope::Read,
        jobs: Some(vec!["customer-a-*".into()]),
    };
    // Metrics carry every job's series: a token restricted to some jobs is refused.
    let restricted = app.admin().create_token(&new).await.unwrap().token;
    let (status, _, body) = scrape_raw(&app, Some(&restricted)).await;
    assert_eq!(status, 403, "{body}");
    let new = NewToken {
        name: "prometheus-all".into(),
        scope: Scope::Read,
        jobs: None,
    };
    let read = app.admin().create_token(&new).await.unwrap().token;
    let (status, content_type, _) = scrape_raw(&app, Some(&read)).await;
    assert_eq!((status, content_type.as_str()), (200, OPENMETRICS));

    let open = builder().arg("--metrics-public").start().await;
    let (status, _, body) = scrape_raw(&open, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("jobdock_build_info"));
    let other = open.client("").get_job("x").await.unwrap_err();
    assert_eq!(other.status(), Some(401), "only /metrics is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_count_each_run_exactly_once() {
    let first = builder().postgres(true).start().await;
    let second = builder().replica_of(&first).start().await;
    let c = first.admin();
    let mut s = sh_job("metrics-shared", "echo hi");
    s.max_parallel = Some(4);
    s.max_queued = Some(100);
    c.create_job(&s).await.unwrap();
    const N: usize = 16;
    let triggers: Vec<_> = (0..N)
        .map(|i| {
            let c = [&first, &second][i % 2].admin();
            tokio::spawn(async move {
                c.trigger("metrics-shared", &Default::default(), None)
                    .await
                    .expect("trigger")
                    .0
                    .id
            })
        })
        .collect();
    for t in triggers {
        let id = t.await.unwrap();
        let run = c
            .wait_until_final(&id, Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    let (a, b) = (scrape(&first).await, scrape(&second).await);
    let finished = |m: &Exposition| m.sum("jobdock_runs_finished_total", &[]);
    assert_eq!(
        finished(&a) + finished(&b),
        N as f64,
        "first {} + second {}",
        finished(&a),
        finished(&b)
    );
    let triggered = |m: &Exposition| m.sum("jobdock_runs_triggered_total", &[]);
    assert_eq!(triggered(&a) + triggered(&b), N as f64);
    let durations = |m: &Exposition| m.sum("jobdock_run_duration_seconds_count", &[]);
    assert_eq!(durations(&a) + durations(&b), N as f64);
    let claims = |m: &Exposition| m.sum("jobdock_run_queue_wait_seconds_count", &[]);
    assert_eq!(claims(&a) + claims(&b), N as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomaly_raised_at_a_runs_end_is_counted() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("metrics-slowpoke", "sleep 30");
    s.timeout_seconds = Some(1);
    s.stop_grace_seconds = Some(1);
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "metrics-slowpoke").await;
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    let m = scrape(&app).await;
    assert_eq!(
        m.value("jobdock_anomalies_total", &[("kind", "timed_out")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "jobdock_runs_finished_total",
            &[("job", "metrics-slowpoke"), ("status", "timed_out")]
        ),
        Some(1.0)
    );
}
