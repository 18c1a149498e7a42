//! The asynchronous request-reply pattern of Data Factory's Web activity, on real
//! containers: `Prefer: respond-async`, the outcome URL, signed links that work without a
//! header, and absolute URLs built on `public_url` or the request.

use std::time::Duration;

use jobdock_testkit::app::ADMIN_TOKEN;
use serde_json::{json, Value};

use crate::{app, builder, sh_job};

/// Polls a URL without any header, as Data Factory may, until it stops answering 202.
async fn poll_without_headers(url: &str) -> reqwest::Response {
    let http = reqwest::Client::new();
    for _ in 0..120 {
        let resp = http.get(url).send().await.unwrap();
        if resp.status() != 202 {
            return resp;
        }
        assert_eq!(resp.headers()["retry-after"], "10");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{url} stayed 202");
}

async fn trigger_async(
    app: &jobdock_testkit::TestApp,
    job: &str,
    body: Value,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/v1/jobs/{job}/runs", app.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("prefer", "respond-async")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_polled_to_its_outcome_without_headers() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("async-ok", "echo made-it; sleep 1"))
        .await
        .unwrap();
    c.create_job(&sh_job("async-bad", "echo broke >&2; sleep 1; exit 3"))
        .await
        .unwrap();

    // Success: 202 with a signed, absolute Location, then 200 with the run.
    let resp = trigger_async(&app, "async-ok", json!({"idempotency_key": "pipe-1"})).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["preference-applied"], "respond-async");
    assert_eq!(resp.headers()["retry-after"], "10");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = resp.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/api/v1/runs/{id}/outcome?exp=", app.url()))
            && location.contains("&sig="),
        "{location}"
    );
    // A replay while it runs answers 202 with the same place to poll.
    let again = trigger_async(&app, "async-ok", json!({"idempotency_key": "pipe-1"})).await;
    assert!(
        again.status() == 202 || again.status() == 200,
        "{}",
        again.status()
    );
    let done = poll_without_headers(&location).await;
    assert_eq!(done.status(), 200);
    let run: Value = done.json().await.unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    let logs_url = run["logs_url"].as_str().unwrap();
    assert!(logs_url.starts_with(app.url()), "{logs_url}");
    let log = reqwest::get(logs_url).await.unwrap().text().await.unwrap();
    assert!(log.contains("made-it"), "{log}");
    let tail = reqwest::get(format!("{logs_url}&tail=1")).await.unwrap();
    assert_eq!(
        tail.status(),
        200,
        "a signed link takes the log's own parameters"
    );
    // The replay after the end is the final answer.
    let replay = trigger_async(&app, "async-ok", json!({"idempotency_key": "pipe-1"})).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], id.as_str());

    // Failure: one 4xx whose problem carries what the caller's step reports.
    let resp = trigger_async(&app, "async-bad", json!({})).await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let failed = poll_without_headers(&location).await;
    assert_eq!(failed.status(), 424);
    assert_eq!(failed.headers()["content-type"], "application/problem+json");
    let p: Value = failed.json().await.unwrap();
    assert_eq!(p["run_status"], "failed", "{p}");
    assert_eq!(p["exit_code"], 3, "{p}");
    assert!(p["reason"].as_str().unwrap().contains('3'), "{p}");
    let bad_log = reqwest::get(p["logs_url"].as_str().unwrap()).await.unwrap();
    assert!(bad_log.text().await.unwrap().contains("broke"));

    // A signed link opens its own run, for reading, and nothing else.
    let other = run["logs_url"]
        .as_str()
        .unwrap()
        .replace(&id, p["run_id"].as_str().unwrap());
    assert_eq!(
        reqwest::get(&other).await.unwrap().status(),
        401,
        "another run"
    );
    let tampered = format!("{}x", location.trim_end_matches(|c: char| c != '='));
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 401);
    let query = location.split_once('?').unwrap().1;
    let cancel = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/runs/{}/cancel?{query}",
            app.url(),
            p["run_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 401, "a link never writes");
    let jobs = reqwest::get(format!("{}/api/v1/jobs?{query}", app.url()))
        .await
        .unwrap();
    assert_eq!(jobs.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_built_on_the_public_url_or_the_request_but_not_on_forwarded_headers() {
    let public = builder()
        .env("JOBDOCK_PUBLIC_URL", "https://jobdock.example.com/")
        .start()
        .await;
    public
        .admin()
        .create_job(&sh_job("linked", "true"))
        .await
        .unwrap();
    let resp = trigger_async(&public, "linked", json!({})).await;
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://jobdock.example.com/api/v1/runs/"),
        "{location}"
    );

    let plain = app(false).await;
    plain
        .admin()
        .create_job(&sh_job("linked", "true"))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs/linked/runs", plain.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/api/v1/runs/", plain.url())),
        "{location}"
    );
    let run: Value = resp.json().await.unwrap();
    assert!(
        run["logs_url"].as_str().unwrap().starts_with(plain.url()),
        "{run}"
    );

    let proxied = builder()
        .env("JOBDOCK_TRUST_FORWARDED_HEADERS", "true")
        .start()
        .await;
    proxied
        .admin()
        .create_job(&sh_job("linked", "true"))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs/linked/runs", proxied.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-host", "jobdock.example.net")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://jobdock.example.net/api/v1/runs/"),
        "{location}"
    );
}
