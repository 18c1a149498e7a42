//! Runs on the real Docker daemon: exit codes, OOM, timeouts, cancel, secrets, logs,
//! idempotency, overrides, retries.

use std::collections::BTreeMap;
use std::time::Duration;

use jobdock_types::{
    NewToken, Resources, Retries, RunStatus, Scope, SecretDelivery, TriggerRequest,
};
use serde_json::json;

use crate::{app, containers_of, run_to_end, sh_job, wait_for, wait_for_log};

#[tokio::test]
async fn success_and_failure_report_exit_codes_and_logs() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("ok-job", "echo to-stdout; echo to-stderr >&2; echo run=$JOBDOCK_RUN_ID job=$JOBDOCK_JOB attempt=$JOBDOCK_ATTEMPT"))
        .await
        .unwrap();
    let run = run_to_end(&c, "ok-job").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.attempts.len(), 1);
    assert!(run.started_at.is_some() && run.finished_at.is_some());
    assert!(run.queue_ms.is_some() && run.duration_ms.is_some());
    let logs = c.logs(&run.id).await.unwrap();
    let lines: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| (l.stream.as_str(), l.line.as_str()))
        .collect();
    assert!(lines.contains(&("stdout", "to-stdout")), "{lines:?}");
    assert!(lines.contains(&("stderr", "to-stderr")), "{lines:?}");
    let ident = format!("run={} job=ok-job attempt=1", run.id);
    assert!(lines.contains(&("stdout", ident.as_str())), "{lines:?}");
    let text = c.logs_text(&run.id).await.unwrap();
    let first = text.lines().find(|l| l.ends_with("to-stdout")).unwrap();
    let (ts, rest) = first.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{first}");
    assert_eq!(rest, "stdout to-stdout");
    assert!(
        containers_of(&run.id).is_empty(),
        "the container is removed once the run is stored"
    );

    c.create_job(&sh_job("failing-job", "echo about to fail; exit 3"))
        .await
        .unwrap();
    let run = run_to_end(&c, "failing-job").await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.reason.as_deref(), Some("exited with code 3"));
    assert!(!run.oom_killed);
}

#[tokio::test]
async fn an_oom_kill_is_reported_as_such() {
    let app = app(false).await;
    let c = app.admin();
    // Alive a moment before it runs out of memory: a container killed within milliseconds
    // of its start can die before containerd watches its cgroup for OOM events, and then
    // nothing reports the OOM kill (seen under load). Real scripts take longer to start.
    let mut s = sh_job(
        "hungry",
        "sleep 1; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    s.resources = Some(Resources {
        cpus: Some(0.5),
        memory_mb: Some(16),
    });
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "hungry").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(run.oom_killed, "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .unwrap_or_default()
            .contains("out of memory"),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_timeout_stops_the_container_and_ends_timed_out() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("slowpoke", "echo started; sleep 300");
    s.timeout_seconds = Some(2);
    s.stop_grace_seconds = Some(1);
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "slowpoke").await;
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .unwrap_or_default()
            .contains("timeout of 2 s"),
        "{run:?}"
    );
    let took = run.duration_ms.unwrap();
    assert!((2000..60_000).contains(&took), "stopped after {took} ms");
    assert!(containers_of(&run.id).is_empty());
    assert!(c.logs_text(&run.id).await.unwrap().contains("started"));
}

#[tokio::test]
async fn cancel_ends_queued_runs_at_once_and_running_runs_once_stopped() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job(
        "sleeper",
        "trap 'echo got TERM; exit 143' TERM; echo up; sleep 300 & wait",
    );
    s.stop_grace_seconds = Some(5);
    c.create_job(&s).await.unwrap();
    let (first, _) = c
        .trigger("sleeper", &Default::default(), None)
        .await
        .unwrap();
    let (second, _) = c
        .trigger("sleeper", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &first.id, 60, |r| r.status == RunStatus::Running).await;
    assert_eq!(
        c.get_run(&second.id).await.unwrap().status,
        RunStatus::Queued,
        "max_parallel 1 holds it back"
    );

    let cancelled = c.cancel_run(&second.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(cancelled.started_at.is_none());

    // A running run is reported cancelled only once its container has stopped.
    wait_for_log(&c, &first.id, "up", 30).await;
    let during = c.cancel_run(&first.id).await.unwrap();
    assert!(!during.status.is_final() || during.status == RunStatus::Cancelled);
    let run = c
        .wait_until_final(&first.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    assert_eq!(
        run.exit_code,
        Some(143),
        "the process got SIGTERM first: {run:?}"
    );
    assert!(c.logs_text(&first.id).await.unwrap().contains("got TERM"));
    assert!(containers_of(&first.id).is_empty());
    assert_eq!(
        c.cancel_run(&first.id).await.unwrap_err().status(),
        Some(409)
    );
    let actions: Vec<String> = c
        .audit(None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"run.cancel".to_string()) && actions.contains(&"run.trigger".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_container_but_never_the_stored_log_or_labels() {
    let app = app(false).await;
    let c = app.admin();
    let value = "pa55-w0rd-xyz";
    let mut s = sh_job("secretive", "echo env=$PW; echo len=${#PW}");
    s.secrets = Some([("PW".to_string(), value.to_string())].into());
    s.labels.insert("team".into(), "bi".into());
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "secretive").await;
    let text = c.logs_text(&run.id).await.unwrap();
    assert!(text.contains("env=***"), "{text}");
    assert!(
        text.contains(&format!("len={}", value.len())),
        "the value was delivered: {text}"
    );
    assert!(!text.contains(value));

    let mut f = sh_job(
        "secret-files",
        "echo file=$(cat /run/secrets/PW); echo reversed=$(cat /run/secrets/PW | rev); echo in-env=$(env | grep -c '^PW=')",
    );
    f.secrets = Some([("PW".to_string(), value.to_string())].into());
    f.secret_delivery = Some(SecretDelivery::Files);
    c.create_job(&f).await.unwrap();
    let run = run_to_end(&c, "secret-files").await;
    let text = c.logs_text(&run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?} {text}");
    assert!(text.contains("file=***"), "{text}");
    let reversed: String = value.chars().rev().collect();
    assert!(
        text.contains(&format!("reversed={reversed}")),
        "the file held the value: {text}"
    );
    assert!(text.contains("in-env=0"), "not in the environment: {text}");

    // Labels of a running container hold no secret value.
    let mut l = sh_job("secret-labels", "sleep 30");
    l.secrets = Some([("PW".to_string(), value.to_string())].into());
    c.create_job(&l).await.unwrap();
    let (run, _) = c
        .trigger("secret-labels", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &run.id, 60, |r| r.status == RunStatus::Running).await;
    let ids = containers_of(&run.id);
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}", &ids[0]])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&out.stdout);
    assert!(
        labels.contains(&run.id) && labels.contains("secret-labels"),
        "{labels}"
    );
    assert!(!labels.contains(value), "{labels}");
    c.cancel_run(&run.id).await.unwrap();
    for path in [
        "/api/v1/runs",
        &format!("/api/v1/runs/{}", run.id),
        "/api/v1/audit",
    ] {
        let body = c
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(value), "{path}");
    }
    assert!(!app.logs().contains(value), "the engine logged a secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_trigger_never_starts_a_second_run() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("idem", "sleep 2")).await.unwrap();
    let req = TriggerRequest {
        env: BTreeMap::from([("DAY".into(), "2026-11-21".into())]),
        ..Default::default()
    };
    let (first, created) = c.trigger("idem", &req, Some("adf-run-42")).await.unwrap();
    assert!(created);
    let (again, created) = c.trigger("idem", &req, Some("adf-run-42")).await.unwrap();
    assert!(!created, "a repeated key answers 200");
    assert_eq!(again.id, first.id);
    // The key in the body counts the same as the header.
    let body_key = TriggerRequest {
        idempotency_key: Some("adf-run-42".into()),
        ..req.clone()
    };
    assert_eq!(
        c.trigger("idem", &body_key, None).await.unwrap().0.id,
        first.id
    );
    // The same key with another body is refused.
    let other = TriggerRequest {
        env: BTreeMap::from([("DAY".into(), "2026-11-22".into())]),
        ..Default::default()
    };
    let err = c
        .trigger("idem", &other, Some("adf-run-42"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));

    // A key past 255 characters (a Data Factory run id and a long ForEach item) is kept as
    // its digest, and still finds its run; one past 4096 is refused.
    let long = format!("{}-{}", "adf-run-43", "item".repeat(100));
    let (by_long, created) = c.trigger("idem", &req, Some(&long)).await.unwrap();
    assert!(created);
    let digest = by_long.idempotency_key.as_deref().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let (again, created) = c.trigger("idem", &req, Some(&long)).await.unwrap();
    assert_eq!((again.id.as_str(), created), (by_long.id.as_str(), false));
    let err = c
        .trigger("idem", &req, Some(&"k".repeat(4097)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    c.cancel_run(&by_long.id).await.unwrap();

    // Twenty concurrent calls with one new key create exactly one run.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.trigger("idem", &Default::default(), Some("burst")).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for call in calls {
        let (run, new) = call.await.unwrap().unwrap();
        ids.insert(run.id);
        created += new as usize;
    }
    assert_eq!((ids.len(), created), (1, 1));
    let all = c.list_runs(Some("idem"), None, None).await.unwrap().items;
    assert_eq!(all.len(), 3, "one run per key: {all:?}");

    // A repeated key wins over on_conflict: reject.
    c.patch_job("idem", &json!({"on_conflict": "reject"}))
        .await
        .unwrap();
    let (again, created) = c
        .trigger("idem", &Default::default(), Some("burst"))
        .await
        .unwrap();
    assert!(!created);
    assert!(ids.contains(&again.id));
}

#[tokio::test]
async fn overrides_are_a_privilege() {
    let app = app(false).await;
    let admin = app.admin();
    let mut s = sh_job("override-me", "echo greeting=$GREETING");
    s.env.insert("GREETING".into(), "hello".into());
    s.secrets = Some([("TOKEN".to_string(), "t0ken-value".to_string())].into());
    admin.create_job(&s).await.unwrap();
    let trigger_token = admin
        .create_token(&NewToken {
            name: "pipeline".into(),
            scope: Scope::Trigger,
            jobs: None,
        })
        .await
        .unwrap()
        .token;
    let pipeline = app.client(&trigger_token);
    let env = |k: &str, v: &str| TriggerRequest {
        env: BTreeMap::from([(k.into(), v.into())]),
        ..Default::default()
    };

    let (run, _) = pipeline
        .trigger("override-me", &env("GREETING", "hoi"), None)
        .await
        .unwrap();
    let run = pipeline
        .wait_until_final(&run.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(pipeline
        .logs_text(&run.id)
        .await
        .unwrap()
        .contains("greeting=hoi"));
    assert_eq!(
        pipeline
            .trigger("override-me", &env("TOKEN", "x"), None)
            .await
            .unwrap_err()
            .status(),
        Some(422)
    );
    assert_eq!(
        pipeline
            .trigger("override-me", &env("JOBDOCK_RUN_ID", "x"), None)
            .await
            .unwrap_err()
            .status(),
        Some(422)
    );
    let cmd = TriggerRequest {
        command: Some(vec!["sh".into(), "-c".into(), "echo other".into()]),
        ..Default::default()
    };
    assert_eq!(
        pipeline
            .trigger("override-me", &cmd, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let (run, _) = admin.trigger("override-me", &cmd, None).await.unwrap();
    admin
        .wait_until_final(&run.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(admin.logs_text(&run.id).await.unwrap().contains("other"));
    admin
        .patch_job("override-me", &json!({"allow_command_override": true}))
        .await
        .unwrap();
    pipeline.trigger("override-me", &cmd, None).await.unwrap();
}

#[tokio::test]
async fn failed_attempts_are_retried_and_each_is_visible() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job(
        "flaky",
        "echo attempt $JOBDOCK_ATTEMPT; [ \"$JOBDOCK_ATTEMPT\" -ge 2 ] && exit 0; exit 1",
    );
    s.retries = Some(Retries {
        max_attempts: 3,
        backoff_seconds: 1,
    });
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "flaky").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.attempt, 2);
    assert_eq!(run.attempts.len(), 2);
    assert_eq!(run.attempts[0].status, RunStatus::Failed);
    assert_eq!(run.attempts[0].exit_code, Some(1));
    assert_eq!(run.attempts[1].status, RunStatus::Succeeded);
    let logs = c.logs(&run.id).await.unwrap();
    let seen: Vec<(i64, &str)> = logs.iter().map(|l| (l.attempt, l.line.as_str())).collect();
    assert_eq!(seen, vec![(1, "attempt 1"), (2, "attempt 2")]);

    let mut s = sh_job("hopeless", "exit 9");
    s.retries = Some(Retries {
        max_attempts: 3,
        backoff_seconds: 0,
    });
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "hopeless").await;
    assert_eq!(
        (run.status, run.attempt, run.exit_code),
        (RunStatus::Failed, 3, Some(9))
    );
    assert!(run
        .attempts
        .iter()
        .all(|a| a.status == RunStatus::Failed && a.exit_code == Some(9)));

    // Timeouts are retried only when retry_on says so.
    let mut s = sh_job("slow-retry", "sleep 60");
    s.timeout_seconds = Some(1);
    s.stop_grace_seconds = Some(0);
    s.retries = Some(Retries {
        max_attempts: 2,
        backoff_seconds: 0,
    });
    c.create_job(&s).await.unwrap();
    let run = run_to_end(&c, "slow-retry").await;
    assert_eq!((run.status, run.attempt), (RunStatus::TimedOut, 1));
    c.patch_job("slow-retry", &json!({"retry_on": ["timed_out"]}))
        .await
        .unwrap();
    let run = run_to_end(&c, "slow-retry").await;
    assert_eq!((run.status, run.attempt), (RunStatus::TimedOut, 2));
}

#[tokio::test]
async fn a_chatty_container_keeps_every_line_in_order() {
    let app = app(false).await;
    let c = app.admin();
    let n = 10_000;
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done"
    );
    c.create_job(&sh_job("chatty", &script)).await.unwrap();
    let run = run_to_end(&c, "chatty").await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let logs = c.logs(&run.id).await.unwrap();
    assert_eq!(logs.len(), 2 * n, "every line stored once");
    for (stream, prefix) in [("stdout", "out"), ("stderr", "err")] {
        let got: Vec<&str> = logs
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line.as_str())
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("{prefix} {i}")).collect();
        assert_eq!(got, want, "{stream} complete and in order");
    }
    assert!(
        logs.windows(2).all(|w| w[0].ts <= w[1].ts),
        "interleaved in time order"
    );
}

#[tokio::test]
async fn logs_can_be_followed_as_text_or_server_sent_events() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job(
        "ticker",
        "for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done",
    ))
    .await
    .unwrap();
    let (run, _) = c
        .trigger("ticker", &Default::default(), None)
        .await
        .unwrap();
    let followed = c
        .logs_response(&run.id, "text", true)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ticks: Vec<&str> = followed
        .lines()
        .map(|l| l.rsplit_once("stdout ").unwrap().1)
        .collect();
    assert_eq!(
        ticks,
        vec!["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]
    );
    assert!(
        c.get_run(&run.id).await.unwrap().status.is_final(),
        "the follow ends with the run"
    );

    let sse = c
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{}/logs?follow=true", run.id),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let body = sse.text().await.unwrap();
    assert!(
        body.contains("event: log") && body.contains("tick 5"),
        "{body}"
    );
    assert!(body.contains("event: end\ndata: succeeded"), "{body}");
}

#[tokio::test]
async fn a_run_keeps_the_definition_it_was_triggered_with() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("snap", "echo colour=$COLOUR; sleep 1");
    s.env.insert("COLOUR".into(), "blue".into());
    c.create_job(&s).await.unwrap();
    let (first, _) = c.trigger("snap", &Default::default(), None).await.unwrap();
    let (queued, _) = c.trigger("snap", &Default::default(), None).await.unwrap();
    c.patch_job("snap", &json!({"env": {"COLOUR": "red"}}))
        .await
        .unwrap();
    let (later, _) = c.trigger("snap", &Default::default(), None).await.unwrap();
    for (id, want) in [
        (&first.id, "colour=blue"),
        (&queued.id, "colour=blue"),
        (&later.id, "colour=red"),
    ] {
        let run = c
            .wait_until_final(id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert!(
            c.logs_text(id).await.unwrap().contains(want),
            "{id}: {want}"
        );
    }
}

#[tokio::test]
async fn deleting_a_job_with_active_runs_needs_force() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("busy", "sleep 300");
    s.stop_grace_seconds = Some(0);
    c.create_job(&s).await.unwrap();
    let (run, _) = c.trigger("busy", &Default::default(), None).await.unwrap();
    let err = c.delete_job("busy", false).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains(&run.id), "{err}");
    c.delete_job("busy", true).await.unwrap();
    let run = c
        .wait_until_final(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(
        c.get_run(&run.id).await.unwrap().job,
        "busy",
        "the run stays readable"
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_run_with_a_reason_that_says_so() {
    let app = app(false).await;
    let c = app.admin();
    // Nothing listens on port 1 of this machine: the pull fails at once, without leaving it.
    let mut s = sh_job("no-image", "true");
    s.image = "127.0.0.1:1/jobdock/missing:1".into();
    c.create_job(&s)
        .await
        .expect("creating a job never contacts a registry");
    let run = run_to_end(&c, "no-image").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .unwrap_or_default()
            .contains("could not pull image 127.0.0.1:1/jobdock/missing:1"),
        "{run:?}"
    );
    assert!(run.started_at.is_none() || run.exit_code.is_none());
}
