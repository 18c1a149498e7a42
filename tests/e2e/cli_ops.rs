//! The operator's command-line verbs, each against a running engine: channels, anomalies,
//! locks, a run's timeline and re-run, job statistics, pausing and resuming a schedule.

use std::process::Output;
use std::time::Duration;

use jobdock_testkit::app::ADMIN_TOKEN;
use jobdock_testkit::TestApp;
use jobdock_types::{RunStatus, Schedule};

use crate::{app, run_to_end, sh_job};

fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let o: Output = app.cli(args, ADMIN_TOKEN, stdin);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "jobdock {args:?}: {out}\n{err}");
    (out, err)
}

#[tokio::test]
async fn channels_from_the_command_line() {
    let app = app(false).await;
    let file = "name: ops-hook\nkind: webhook\nurl: http://127.0.0.1:9/hook\n";
    let (out, err) = cli(&app, &["channels", "create", "-f", "-"], Some(file));
    assert!(out.starts_with("NAME") && out.contains("ops-hook"), "{out}");
    assert!(err.contains("signing secret is shown only now"), "{err}");
    let (out, _) = cli(&app, &["channels", "list"], None);
    assert!(
        out.contains("ops-hook") && out.contains("http://127.0.0.1"),
        "{out}"
    );
    assert!(
        !out.contains("/hook"),
        "the URL's path is a credential: {out}"
    );
    let (out, _) = cli(&app, &["channels", "test", "ops-hook"], None);
    assert!(out.contains("test"), "{out}");
    let (out, _) = cli(&app, &["channels", "deliveries", "ops-hook"], None);
    assert!(out.starts_with("ID") && out.contains("test"), "{out}");
    let (_, err) = cli(&app, &["channels", "delete", "ops-hook"], None);
    assert!(err.contains("deleted channel ops-hook"), "{err}");
    let (out, _) = cli(&app, &["channels", "list", "-o", "json"], None);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page, serde_json::json!({"items": [], "next_cursor": null}));
}

#[tokio::test]
async fn locks_timelines_reruns_stats_and_schedules_from_the_command_line() {
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("ops-locked", "echo locked");
    job.lock_keys = vec!["ops-shared".into()];
    job.schedule = Some(Schedule {
        cron: "@daily".into(),
        timezone: "UTC".into(),
        paused: false,
    });
    c.create_job(&job).await.unwrap();
    let run = run_to_end(&c, "ops-locked").await;
    assert_eq!(run.status, RunStatus::Succeeded);

    let (out, _) = cli(&app, &["locks", "list"], None);
    assert!(
        out.starts_with("KEY") && out.contains("ops-shared"),
        "{out}"
    );
    let (out, _) = cli(&app, &["locks", "set", "ops-shared", "3"], None);
    assert!(out.contains("ops-shared  3"), "{out}");

    let (out, _) = cli(&app, &["runs", "events", &run.id], None);
    for kind in ["queued", "claimed", "started", "finished"] {
        assert!(out.contains(kind), "{kind} missing: {out}");
    }
    let (out, _) = cli(&app, &["runs", "rerun", &run.id, "-o", "json"], None);
    let again: jobdock_types::Run = serde_json::from_str(&out).unwrap();
    assert_ne!(again.id, run.id);
    c.wait_until_final(&again.id, Duration::from_secs(60))
        .await
        .unwrap();

    let (out, _) = cli(&app, &["jobs", "stats", "ops-locked"], None);
    assert!(
        out.starts_with("JOB") && out.contains("ops-locked  2"),
        "{out}"
    );

    let (out, _) = cli(&app, &["jobs", "pause", "ops-locked"], None);
    assert!(out.contains("@daily (paused)"), "{out}");
    assert!(
        c.get_job("ops-locked")
            .await
            .unwrap()
            .schedule
            .unwrap()
            .paused
    );
    let (out, _) = cli(&app, &["jobs", "resume", "ops-locked"], None);
    assert!(out.contains("@daily") && !out.contains("paused"), "{out}");
}

#[tokio::test]
async fn anomalies_from_the_command_line() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("ops-failing", "exit 1"))
        .await
        .unwrap();
    for _ in 0..3 {
        run_to_end(&c, "ops-failing").await;
    }
    let (out, _) = cli(
        &app,
        &[
            "anomalies",
            "list",
            "--job",
            "ops-failing",
            "--open",
            "true",
        ],
        None,
    );
    let line = out
        .lines()
        .find(|l| l.contains("failure_streak"))
        .unwrap_or_else(|| panic!("no failure_streak: {out}"));
    let id = line.split_whitespace().next().unwrap();
    let (out, _) = cli(
        &app,
        &["anomalies", "close", id, "--reason", "looked at it"],
        None,
    );
    assert!(out.contains("false"), "closed: {out}");
}

#[tokio::test]
async fn job_state_from_the_command_line() {
    let app = app(false).await;
    app.admin()
        .create_job(&sh_job("orders", "true"))
        .await
        .unwrap();
    let (out, err) = cli(&app, &["state", "get", "orders"], None);
    assert_eq!((out.trim(), err.trim()), ("{}", "version 0"));
    let (_, err) = cli(
        &app,
        &["state", "set", "orders", "-f", "-"],
        Some(r#"{"since": "2026-12-01"}"#),
    );
    assert!(err.contains("version 1"), "{err}");
    // A stale --if-version is refused with the engine's words, and changes nothing.
    let o = app.cli(
        &["state", "set", "orders", "-f", "-", "--if-version", "0"],
        ADMIN_TOKEN,
        Some(r#"{"since": "x"}"#),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("version 1"));
    cli(
        &app,
        &["state", "set", "orders", "-f", "-"],
        Some(r#"{"since": "2026-12-02"}"#),
    );
    let (out, _) = cli(&app, &["state", "versions", "orders"], None);
    assert!(
        out.contains("VERSION") && out.contains("2026-12-01"),
        "{out}"
    );
    let (_, err) = cli(&app, &["state", "revert", "orders", "1"], None);
    assert!(err.contains("as version 3"), "{err}");
    let (out, _) = cli(&app, &["state", "get", "orders"], None);
    let state: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["since"], "2026-12-01");
    let o = app.cli(
        &["state", "set", "orders", "-f", "-"],
        ADMIN_TOKEN,
        Some("[1]"),
    );
    assert!(!o.status.success(), "a list is not a state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_builds_the_project_and_makes_the_job_leaving_secrets_alone() {
    let app = app(false).await;
    let base = jobdock_testkit::images::busybox_image().unwrap();
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::write(
        p.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nARG FLAVOUR=plain\nCOPY app.sh /app.sh\n\
         RUN echo \"built $FLAVOUR\" > /built.txt\nCMD [\"sh\", \"/app.sh\"]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("app.sh"),
        "cat /built.txt; echo token-set=${TOKEN:+yes}\n",
    )
    .unwrap();
    std::fs::write(p.join("secret-notes.txt"), "left out of the build").unwrap();
    std::fs::write(p.join(".dockerignore"), "*.txt\n").unwrap();
    std::fs::write(
        p.join("job.yaml"),
        "name: deployed\nimage: deployed:latest\nsecrets: [TOKEN]\n",
    )
    .unwrap();
    let dir = p.to_str().unwrap();
    let base_arg = format!("BASE={base}");
    let deploy = |flavour: &str| {
        let flavour = format!("FLAVOUR={flavour}");
        app.cli(
            &[
                "deploy",
                dir,
                "--build-arg",
                &base_arg,
                "--build-arg",
                &flavour,
            ],
            ADMIN_TOKEN,
            None,
        )
    };
    let o = deploy("first");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("secret TOKEN is not set"), "{err}");
    let first = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(first.starts_with("deployed:"), "{first}");
    let c = app.admin();
    assert_eq!(c.get_job("deployed").await.unwrap().image, first);
    c.set_secret("deployed", "TOKEN", "t0k3n-value")
        .await
        .unwrap();

    // A second deploy changes the image and keeps the secret.
    std::thread::sleep(Duration::from_millis(1100)); // a new tag (it has the second)
    let o = deploy("second");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("is not set"), "{err}");
    let job = c.get_job("deployed").await.unwrap();
    assert_ne!(job.image, first);
    assert_eq!(job.secret_names, ["TOKEN"]);
    let run = run_to_end(&c, "deployed").await;
    let log = c.logs_text(&run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert!(
        log.contains("built second") && log.contains("token-set=yes"),
        "{log}"
    );

    // The ignored file never reached the build context.
    let o = std::process::Command::new("docker")
        .args(["run", "--rm", &job.image, "ls", "/"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("secret-notes"));
    // A broken Dockerfile fails the command with the builder's words.
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nRUN false\n").unwrap();
    let o = deploy("third");
    assert!(!o.status.success());
    for tag in [first, job.image] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", &tag])
            .output();
    }
}
