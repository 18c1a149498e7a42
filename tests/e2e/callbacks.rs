//! Callbacks (Data Factory's Webhook activity): a trigger's `callBackUri` is POSTed the run's
//! outcome once the run is final, on real containers — for runs that succeed, fail, are
//! skipped at trigger or cancelled while queued; replays add targets; the URI is sealed at
//! rest and re-sealed by a key rotation; a receiver that refuses is not retried, one that
//! fails is, across a restart; and the engine's own network is refused.

use std::time::Duration;

use jobdock_testkit::app::ADMIN_TOKEN;
use jobdock_testkit::webhook::{Received, Receiver};
use jobdock_testkit::{TestApp, TestAppBuilder};
use jobdock_types::OnConflict;
use serde_json::{json, Value};

use crate::{both, builder, sh_job};

/// An engine that may call back to 127.0.0.1 and retries after 200 ms.
fn engine() -> TestAppBuilder {
    builder()
        .arg("--alert-retry-base-ms")
        .arg("200")
        .env("JOBDOCK_CALLBACK_ALLOWED_HOSTS", "127.0.0.1")
}

/// Triggers `job` with `body` as Data Factory's Webhook activity does; status and body.
async fn trigger(app: &TestApp, job: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs/{job}/runs", app.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The callback that reached `path` (with its query) on the receiver.
fn to<'a>(got: &'a [Received], path: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.path == path).collect()
}

/// Every byte the engine keeps on disk, as text, to look for a plain value in it.
fn stored_bytes(app: &TestApp) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(app.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

both!(callbacks_carry_the_outcome_of_runs_that_succeed_and_fail);

async fn callbacks_carry_the_outcome_of_runs_that_succeed_and_fail(pg: bool) {
    let receiver = Receiver::start(&[]).await;
    let app = engine().postgres(pg).start().await;
    let c = app.admin();
    c.create_job(&sh_job("cb-ok", "echo made-it"))
        .await
        .unwrap();
    c.create_job(&sh_job("cb-bad", "echo broke >&2; exit 3"))
        .await
        .unwrap();
    let ok_uri = receiver.url("/cb/ok?callbackToken=tok-4f1e9a");
    let bad_uri = receiver.url("/cb/bad?callbackToken=tok-77aa01");
    let (status, ok_run) = trigger(&app, "cb-ok", json!({ "callBackUri": ok_uri })).await;
    assert_eq!(status, 201, "{ok_run}");
    assert!(
        !ok_run.to_string().contains("tok-4f1e9a"),
        "the URI is not echoed: {ok_run}"
    );
    let (status, bad_run) = trigger(
        &app,
        "cb-bad",
        json!({ "callBackUri": bad_uri, "idempotency_key": "pipe-1" }),
    )
    .await;
    assert_eq!(status, 201, "{bad_run}");

    let got = receiver.wait_for(2, 90).await;
    let ok = to(&got, "/cb/ok?callbackToken=tok-4f1e9a");
    assert_eq!(ok.len(), 1, "{got:?}");
    let body = ok[0].json();
    assert_eq!(body["StatusCode"], "200", "{body}");
    assert!(body.get("Error").is_none(), "{body}");
    assert_eq!(body["Output"]["id"], ok_run["id"]);
    assert_eq!(body["Output"]["status"], "succeeded");
    assert_eq!(ok[0].header("content-type"), Some("application/json"));
    assert!(ok[0].header("x-jobdock-delivery").is_some());
    // The links in a callback are absolute and signed: they open without a header.
    let logs_url = body["Output"]["logs_url"].as_str().unwrap();
    assert!(logs_url.starts_with(app.url()), "{logs_url}");
    let log = reqwest::get(logs_url).await.unwrap().text().await.unwrap();
    assert!(log.contains("made-it"), "{log}");

    let bad = to(&got, "/cb/bad?callbackToken=tok-77aa01");
    assert_eq!(bad.len(), 1, "{got:?}");
    let body = bad[0].json();
    assert_eq!(body["StatusCode"], "424", "{body}");
    assert_eq!(body["Output"]["status"], "failed");
    assert_eq!(body["Output"]["exit_code"], 3);
    assert_eq!(body["Error"]["ErrorCode"], "jobdock_run_failed");
    let message = body["Error"]["Message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.contains(body["Output"]["logs_url"].as_str().unwrap()),
        "{message}"
    );

    // Nothing more comes: each callback is sent once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2);
    // The URIs are sealed at rest (the embedded store's files hold no plain copy).
    if !pg {
        let stored = stored_bytes(&app);
        assert!(stored.contains("cb-ok"), "the store files were read");
        assert!(!stored.contains("tok-4f1e9a") && !stored.contains("tok-77aa01"));
    }
    assert!(
        !app.logs().contains("tok-4f1e9a"),
        "a callback URI was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_adds_its_callback_which_an_ended_run_calls_at_once() {
    let receiver = Receiver::start(&[]).await;
    let app = engine().start().await;
    app.admin()
        .create_job(&sh_job("cb-replay", "echo hi"))
        .await
        .unwrap();
    let first = json!({ "idempotency_key": "act-1", "env": {"A": "1"},
                        "callBackUri": receiver.url("/first") });
    let (status, run) = trigger(&app, "cb-replay", first).await;
    assert_eq!(status, 201);
    receiver.wait_for(1, 90).await;

    // Data Factory retries the activity: same key and body, a new callback URI. The run has
    // ended, so the new target is called at once; the first is not called again.
    let second = json!({ "idempotency_key": "act-1", "env": {"A": "1"},
                         "callBackUri": receiver.url("/second") });
    let (status, again) = trigger(&app, "cb-replay", second.clone()).await;
    assert_eq!((status, &again["id"]), (200, &run["id"]));
    let got = receiver.wait_for(2, 30).await;
    assert_eq!(got[1].path, "/second");
    assert_eq!(got[1].json()["Output"]["id"], run["id"]);
    // The same URI again adds nothing; another body under the key is still refused.
    let (status, _) = trigger(&app, "cb-replay", second).await;
    assert_eq!(status, 200);
    let other = json!({ "idempotency_key": "act-1", "env": {"A": "2"},
                        "callBackUri": receiver.url("/third") });
    let (status, problem) = trigger(&app, "cb-replay", other).await;
    assert_eq!(status, 422, "{problem}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/first", "/second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_skipped_at_trigger_or_cancelled_while_queued_call_back() {
    let receiver = Receiver::start(&[]).await;
    let app = engine().start().await;
    let c = app.admin();
    let mut skip = sh_job("cb-skip", "sleep 60");
    skip.on_conflict = Some(OnConflict::Skip);
    c.create_job(&skip).await.unwrap();
    c.create_job(&sh_job("cb-queue", "sleep 60")).await.unwrap();

    let (_, holder) = trigger(&app, "cb-skip", json!({})).await;
    let (status, skipped) = trigger(
        &app,
        "cb-skip",
        json!({ "callBackUri": receiver.url("/skipped") }),
    )
    .await;
    assert_eq!((status, skipped["status"].as_str()), (201, Some("skipped")));
    let got = receiver.wait_for(1, 30).await;
    let body = got[0].json();
    assert_eq!(body["StatusCode"], "424");
    assert_eq!(body["Error"]["ErrorCode"], "jobdock_run_skipped");
    assert_eq!(body["Output"]["id"], skipped["id"]);

    let (_, running) = trigger(&app, "cb-queue", json!({})).await;
    let (_, queued) = trigger(
        &app,
        "cb-queue",
        json!({ "callBackUri": receiver.url("/cancelled") }),
    )
    .await;
    assert_eq!(queued["status"], "queued");
    c.cancel_run(queued["id"].as_str().unwrap()).await.unwrap();
    let got = receiver.wait_for(2, 30).await;
    let body = got[1].json();
    assert_eq!(got[1].path, "/cancelled");
    assert_eq!(body["Error"]["ErrorCode"], "jobdock_run_cancelled");
    assert_eq!(body["Output"]["id"], queued["id"]);

    for r in [&holder, &running] {
        c.cancel_run(r["id"].as_str().unwrap()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_into_the_engines_own_network_are_refused() {
    // No allowed hosts: the default policy.
    let app = builder().start().await;
    app.admin()
        .create_job(&sh_job("cb-ssrf", "echo hi"))
        .await
        .unwrap();
    for uri in [
        "http://127.0.0.1:9/cb",
        "https://127.0.0.1/cb",
        "https://localhost/cb",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/cb",
        "https://[::1]/cb",
        "https://[::ffff:127.0.0.1]/cb",
        "http://93.184.215.14/cb",
        "file:///etc/passwd",
        "not a uri",
    ] {
        let (status, problem) = trigger(&app, "cb-ssrf", json!({ "callBackUri": uri })).await;
        assert_eq!(status, 422, "{uri}: {problem}");
        assert_eq!(
            problem["errors"][0]["field"], "callBackUri",
            "{uri}: {problem}"
        );
    }
    let runs = app.admin().list_runs(None, None, None).await.unwrap();
    assert!(runs.items.is_empty(), "a refused trigger started a run");
}

both!(a_refusing_receiver_is_given_up_and_a_failing_one_retried_across_a_restart);

async fn a_refusing_receiver_is_given_up_and_a_failing_one_retried_across_a_restart(pg: bool) {
    let gone = Receiver::start(&[404]).await;
    let down = Receiver::start(&[503]).await;
    // A slow retry: the engine is killed between the failed attempt and the next.
    let mut app = builder()
        .postgres(pg)
        .arg("--alert-retry-base-ms")
        .arg("3000")
        .env("JOBDOCK_CALLBACK_ALLOWED_HOSTS", "127.0.0.1")
        .start()
        .await;
    app.admin()
        .create_job(&sh_job("cb-retry", "echo hi"))
        .await
        .unwrap();
    trigger(
        &app,
        "cb-retry",
        json!({ "callBackUri": gone.url("/gone") }),
    )
    .await;
    trigger(
        &app,
        "cb-retry",
        json!({ "callBackUri": down.url("/down") }),
    )
    .await;
    gone.wait_for(1, 90).await;
    let first = down.wait_for(1, 90).await[0].clone();

    app.kill9();
    down.answer(&[200]);
    app.restart().unwrap();
    let got = down.wait_for(2, 60).await;
    assert_eq!(
        got[1].header("x-jobdock-delivery"),
        first.header("x-jobdock-delivery"),
        "the retry is the same delivery"
    );
    assert_eq!(got[1].json()["StatusCode"], "200");
    // 404: the receiver does not want it; it is not sent again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(gone.received().len(), 1);
    assert_eq!(down.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reseals_callbacks() {
    let key = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
            .args(["keys", "generate"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (old, new) = (key(), key());
    let receiver = Receiver::start(&[503]).await;
    let mut app = builder()
        .arg("--alert-retry-base-ms")
        .arg("2000")
        .env("JOBDOCK_CALLBACK_ALLOWED_HOSTS", "127.0.0.1")
        .env("JOBDOCK_MASTER_KEY", &old)
        .start()
        .await;
    app.admin()
        .create_job(&sh_job("cb-rot", "echo hi"))
        .await
        .unwrap();
    trigger(
        &app,
        "cb-rot",
        json!({ "callBackUri": receiver.url("/rot") }),
    )
    .await;
    receiver.wait_for(1, 90).await;
    app.kill9();
    let out = app
        .offline_command()
        .args(["keys", "rotate"])
        .env("JOBDOCK_MASTER_KEY", format!("{new},{old}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("re-sealed 1 secret value(s)"), "{text}");
    // The new key alone opens the callback, which is then delivered.
    receiver.answer(&[200]);
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", &new)])
        .unwrap();
    let got = receiver.wait_for(2, 60).await;
    assert_eq!(got[1].json()["StatusCode"], "200");
}
