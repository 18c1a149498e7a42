//! State between runs: versions, `ETag`/`If-Match`, revert, who may write; and a run's own
//! token, whose writes count only when the run succeeds (or commits), on real containers.

use std::time::Duration;

use jobdock_client::types::{NewToken, RunStatus, Scope};
use jobdock_testkit::app::ADMIN_TOKEN;
use jobdock_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{app, both, containers_of, sh_job, wait_for};

/// One call to a state route with `token`; status, `ETag` and body.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", app.url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(m) = if_match {
        req = req.header("if-match", m);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, etag, body)
}

both!(state_is_versioned_guarded_and_reverted);

async fn state_is_versioned_guarded_and_reverted(pg: bool) {
    use reqwest::Method as M;
    let app = app(pg).await;
    let c = app.admin();
    c.create_job(&sh_job("orders", "true")).await.unwrap();
    let path = "/api/v1/jobs/orders/state";

    let (s, etag, body) = call(&app, M::GET, path, ADMIN_TOKEN, None, None).await;
    assert_eq!(
        (s, etag.as_deref(), &body),
        (StatusCode::OK, Some("\"0\""), &json!({}))
    );
    let (s, etag, _) = call(
        &app,
        M::PUT,
        path,
        ADMIN_TOKEN,
        Some(json!({"since": "2026-12-01"})),
        Some("\"0\""),
    )
    .await;
    assert_eq!((s, etag.as_deref()), (StatusCode::OK, Some("\"1\"")));
    // A writer that read version 0 is too late now.
    let (s, _, problem) = call(
        &app,
        M::PUT,
        path,
        ADMIN_TOKEN,
        Some(json!({"since": "x"})),
        Some("\"0\""),
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("version 1"),
        "{problem}"
    );
    let (s, etag, _) = call(
        &app,
        M::PUT,
        path,
        ADMIN_TOKEN,
        Some(json!({"since": "2026-12-02"})),
        Some("\"1\""),
    )
    .await;
    assert_eq!((s, etag.as_deref()), (StatusCode::OK, Some("\"2\"")));
    // Not an object, or no such job: clear refusals.
    let (s, _, _) = call(&app, M::PUT, path, ADMIN_TOKEN, Some(json!([1, 2])), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        &app,
        M::GET,
        "/api/v1/jobs/nope/state",
        ADMIN_TOKEN,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Versions newest first; a revert makes version 1's content current as version 3.
    let versions = c.state_versions("orders", None).await.unwrap().items;
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(versions[1].state["since"], "2026-12-01");
    assert_eq!(c.revert_state("orders", 1).await.unwrap(), 3);
    let (state, version) = c.get_state("orders").await.unwrap();
    assert_eq!((state["since"].as_str(), version), (Some("2026-12-01"), 3));
    let (s, _, problem) = call(
        &app,
        M::POST,
        &format!("{path}/revert"),
        ADMIN_TOKEN,
        Some(json!({"version": 99})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "version");

    // A read token reads; only an operator writes.
    let read = c
        .create_token(&NewToken {
            name: "viewer".into(),
            scope: Scope::Read,
            jobs: None,
        })
        .await
        .unwrap()
        .token;
    let (s, _, body) = call(&app, M::GET, path, &read, None, None).await;
    assert_eq!(
        (s, body["since"].as_str()),
        (StatusCode::OK, Some("2026-12-01"))
    );
    let (s, _, _) = call(&app, M::PUT, path, &read, Some(json!({})), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Writes and reverts are audited.
    let audit = c
        .request(reqwest::Method::GET, "/api/v1/audit?target=orders")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("state.write") && audit.contains("state.revert"),
        "{audit}"
    );

    // A job deleted and created again resumes from its bookmark.
    c.delete_job("orders", false).await.unwrap();
    c.create_job(&sh_job("orders", "true")).await.unwrap();
    let (state, version) = c.get_state("orders").await.unwrap();
    assert_eq!((state["since"].as_str(), version), (Some("2026-12-01"), 3));
}

/// The run token the engine gave the run's container (the test reads it as `docker inspect`
/// shows the container's environment).
async fn token_of_run(c: &jobdock_client::Client, run_id: &str) -> String {
    wait_for(c, run_id, 60, |r| r.status == RunStatus::Running).await;
    let container = containers_of(run_id).pop().expect("the run's container");
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Env}}", &container])
        .output()
        .unwrap();
    let env: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    env.iter()
        .find_map(|e| e.strip_prefix("JOBDOCK_RUN_TOKEN="))
        .expect("JOBDOCK_RUN_TOKEN in the container's environment")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_state_counts_only_when_it_succeeds_or_commits() {
    use reqwest::Method as M;
    let app = app(false).await;
    let c = app.admin();
    // The run waits for the test's go (a file it polls would need a volume; a sleep will do).
    let script = "echo token=$JOBDOCK_RUN_TOKEN; sleep 4; exit ${EXIT:-0}";
    c.create_job(&sh_job("incr", script)).await.unwrap();
    c.create_job(&sh_job("other", "true")).await.unwrap();
    let path = "/api/v1/jobs/incr/state";
    c.put_state(
        "incr",
        &json!({"id": 10}).as_object().unwrap().clone(),
        None,
    )
    .await
    .unwrap();

    // A run that succeeds: its write is held (the job still shows 10), then becomes the
    // job's state when it ends.
    let (run, _) = c.trigger("incr", &Default::default(), None).await.unwrap();
    let token = token_of_run(&c, &run.id).await;
    let (s, _, _) = call(&app, M::PUT, path, &token, Some(json!({"id": 20})), None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, _, mine) = call(&app, M::GET, path, &token, None, None).await;
    assert_eq!(mine["id"], 20, "the run reads what it set");
    assert_eq!(c.get_state("incr").await.unwrap().0["id"], 10);
    // Its token reaches nothing else: not another job's state, not the rest of the API.
    let (s, _, _) = call(&app, M::GET, "/api/v1/jobs/other/state", &token, None, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(&app, M::GET, "/api/v1/jobs", &token, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(
        &app,
        M::POST,
        &format!("{path}/revert"),
        &token,
        Some(json!({"version": 1})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let done = wait_for(&c, &run.id, 60, |r| r.status.is_final()).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    let (state, version) = c.get_state("incr").await.unwrap();
    assert_eq!((state["id"].as_i64(), version), (Some(20), 2));
    let v = &c.state_versions("incr", None).await.unwrap().items[0];
    assert_eq!(v.run_id.as_deref(), Some(run.id.as_str()));
    // Its token died with it; it never reached the log.
    let (s, _, _) = call(&app, M::GET, path, &token, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let log = c.logs_text(&run.id).await.unwrap();
    assert!(log.contains("token=") && !log.contains(&token), "{log}");

    // A run that fails: its write goes with it.
    let failing = jobdock_client::types::TriggerRequest {
        env: [("EXIT".to_string(), "3".to_string())].into(),
        ..Default::default()
    };
    let (run, _) = c.trigger("incr", &failing, None).await.unwrap();
    let token = token_of_run(&c, &run.id).await;
    let (s, _, _) = call(&app, M::PUT, path, &token, Some(json!({"id": 30})), None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let done = wait_for(&c, &run.id, 60, |r| r.status.is_final()).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(
        c.get_state("incr").await.unwrap(),
        (json!({"id": 20}).as_object().unwrap().clone(), 2)
    );

    // A failing run that committed keeps what it committed, not what it set after.
    let (run, _) = c.trigger("incr", &failing, None).await.unwrap();
    let token = token_of_run(&c, &run.id).await;
    call(&app, M::PUT, path, &token, Some(json!({"id": 40})), None).await;
    let (s, etag, _) = call(&app, M::POST, &format!("{path}/commit"), &token, None, None).await;
    assert_eq!((s, etag.as_deref()), (StatusCode::OK, Some("\"3\"")));
    assert_eq!(c.get_state("incr").await.unwrap().0["id"], 40);
    call(&app, M::PUT, path, &token, Some(json!({"id": 50})), None).await;
    wait_for(&c, &run.id, 60, |r| r.status.is_final()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get_state("incr").await.unwrap().0["id"], 40);
    // A person cannot commit: that is a run's word.
    let (s, _, _) = call(
        &app,
        M::POST,
        &format!("{path}/commit"),
        ADMIN_TOKEN,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_its_jobs_state_at_jobdock_url() {
    let app = app(false).await;
    let c = app.admin();
    c.put_state(
        "reach",
        &json!({"since": 7}).as_object().unwrap().clone(),
        None,
    )
    .await
    .unwrap_err(); // no such job yet
    let script = "echo url=$JOBDOCK_URL; \
        wget -q -O - --header \"Authorization: Bearer $JOBDOCK_RUN_TOKEN\" \
        \"$JOBDOCK_URL/api/v1/jobs/$JOBDOCK_JOB/state\"; echo; \
        wget -q -O - --header \"Authorization: Bearer $JOBDOCK_RUN_TOKEN\" \
        \"$JOBDOCK_URL/api/v1/jobs\" || echo other-routes-refused";
    c.create_job(&sh_job("reach", script)).await.unwrap();
    c.put_state(
        "reach",
        &json!({"since": 7}).as_object().unwrap().clone(),
        None,
    )
    .await
    .unwrap();
    let run = crate::run_to_end(&c, "reach").await;
    let log = c.logs_text(&run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert!(
        log.contains(r#"{"since":7}"#),
        "the container read its job's state: {log}"
    );
    assert!(log.contains("other-routes-refused"), "{log}");
    // The address runs get serves their routes only, even to an admin token.
    let url = log
        .lines()
        .find_map(|l| l.split("url=").nth(1))
        .expect("the run printed its JOBDOCK_URL")
        .trim()
        .to_string();
    assert!(url.starts_with("http://"), "{url}");
    let resp = reqwest::Client::new()
        .get(format!("{url}/api/v1/jobs"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A job without a network gets no URL.
    let mut offline = sh_job("offline", "echo url=${JOBDOCK_URL:-none}");
    offline.network = Some("none".into());
    c.create_job(&offline).await.unwrap();
    let run = crate::run_to_end(&c, "offline").await;
    let log = c.logs_text(&run.id).await.unwrap();
    assert!(log.contains("url=none"), "{log}");
}
