//! Crash safety: `kill -9` of the engine while runs are in flight, then a restart.

use std::time::Duration;

use jobdock_types::RunStatus;

use crate::{app, builder, containers_of, sh_job, wait_for, wait_for_log};

#[tokio::test]
async fn after_kill_9_every_run_reaches_its_true_end_with_its_complete_log() {
    let mut app = app(false).await;
    let c = app.admin();
    // One run outlives the engine's absence; one ends while the engine is down.
    let long = "i=1; while [ $i -le 60 ]; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done; exit 7";
    c.create_job(&sh_job("survivor", long)).await.unwrap();
    c.create_job(&sh_job(
        "quick",
        "echo one; echo two; sleep 1; echo three; exit 0",
    ))
    .await
    .unwrap();
    let mut q = sh_job("waiting", "echo queued-run-ran");
    q.max_parallel = Some(1);
    c.create_job(&q).await.unwrap();
    let (long_run, _) = c
        .trigger("survivor", &Default::default(), None)
        .await
        .unwrap();
    let (quick_run, _) = c.trigger("quick", &Default::default(), None).await.unwrap();
    wait_for_log(&c, &long_run.id, "line 5", 60).await;
    wait_for_log(&c, &quick_run.id, "one", 60).await;

    app.kill9();
    // A trigger cannot reach a dead engine; runs keep going in Docker meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        containers_of(&long_run.id).len(),
        1,
        "the container kept running"
    );
    app.restart().unwrap();
    let c = app.admin();
    let (queued, _) = c
        .trigger("waiting", &Default::default(), None)
        .await
        .unwrap();

    let run = c
        .wait_until_final(&long_run.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        (run.status, run.exit_code),
        (RunStatus::Failed, Some(7)),
        "{run:?}"
    );
    let logs = c.logs(&long_run.id).await.unwrap();
    for (stream, word) in [("stdout", "line"), ("stderr", "err")] {
        let lines: Vec<&str> = logs
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line.as_str())
            .collect();
        let want: Vec<String> = (1..=60).map(|i| format!("{word} {i}")).collect();
        assert_eq!(
            lines, want,
            "every {stream} line exactly once, in order, across the restart"
        );
    }

    let run = c
        .wait_until_final(&quick_run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let lines: Vec<String> = c
        .logs(&quick_run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, vec!["one", "two", "three"]);

    assert_eq!(
        c.wait_until_final(&queued.id, Duration::from_secs(60))
            .await
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
    for id in [&long_run.id, &quick_run.id, &queued.id] {
        assert!(
            containers_of(id).is_empty(),
            "no container left behind for {id}"
        );
    }
    assert!(
        app.logs().contains("adopting run"),
        "the restarted engine adopted the runs"
    );
}

#[tokio::test]
async fn a_run_cancelled_while_its_engine_was_down_is_stopped_after_restart() {
    let mut app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("orphan", "echo up; sleep 300");
    s.stop_grace_seconds = Some(1);
    c.create_job(&s).await.unwrap();
    let (run, _) = c
        .trigger("orphan", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &run.id, 60, |r| r.status == RunStatus::Running).await;
    app.kill9();
    app.restart().unwrap();
    let c = app.admin();
    c.cancel_run(&run.id).await.unwrap();
    let done = c
        .wait_until_final(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
    assert!(containers_of(&run.id).is_empty());
}

/// An engine that stops after keeping an attempt's end and removing its container, but
/// before reporting the run final, records that end when it comes back — not `lost`.
#[tokio::test]
async fn an_end_kept_before_a_crash_is_recorded_after_the_restart() {
    let mut app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("kept", "echo working; sleep 300"))
        .await
        .unwrap();
    let (run, _) = c.trigger("kept", &Default::default(), None).await.unwrap();
    wait_for_log(&c, &run.id, "working", 60).await;
    app.kill9();

    // What the engine had done at the moment it stopped: the end kept on the attempt, the
    // container removed.
    let url = format!("sqlite://{}", app.data_dir().join("jobdock.db").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let kept = sqlx::query(
        "UPDATE run_attempts SET ended_as = 'failed', exit_code = 3, \
         reason = 'exited with code 3', finished_at = 1700000000000 \
         WHERE run_id = ? AND attempt = 1",
    )
    .bind(&run.id)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(kept.rows_affected(), 1);
    drop(db);
    for id in containers_of(&run.id) {
        std::process::Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .unwrap();
    }

    app.restart().unwrap();
    let c = app.admin();
    let ended = c
        .wait_until_final(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (ended.status, ended.exit_code),
        (RunStatus::Failed, Some(3)),
        "{ended:?}"
    );
    assert_eq!(
        ended.finished_at.map(|t| t.timestamp()),
        Some(1_700_000_000)
    );
}

/// The sweep removes the containers of this installation that no unfinished run owns — of an
/// ended run, of no run, of an earlier attempt — and leaves a running run's alone.
#[tokio::test]
async fn the_sweep_removes_containers_no_unfinished_run_owns() {
    // The shortest lease: the sweep comes every 1.5 s.
    let app = builder().arg("--lease-seconds").arg("3").start().await;
    let c = app.admin();
    c.create_job(&sh_job("sleeper", "echo up; sleep 120"))
        .await
        .unwrap();
    c.create_job(&sh_job("quick", "true")).await.unwrap();
    let (going, _) = c
        .trigger("sleeper", &Default::default(), None)
        .await
        .unwrap();
    wait_for_log(&c, &going.id, "up", 60).await;
    let (ended, _) = c.trigger("quick", &Default::default(), None).await.unwrap();
    let ended = c
        .wait_until_final(&ended.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Succeeded);

    let installation = app
        .installation_id()
        .expect("the engine logged its installation");
    let image = jobdock_testkit::images::busybox_image().expect("test image");
    let planted = |run_id: &str, attempt: &str| {
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--label"])
            .arg(format!("dev.jobdock.installation={installation}"))
            .arg("--label")
            .arg(format!("dev.jobdock.run-id={run_id}"))
            .arg("--label")
            .arg(format!("dev.jobdock.attempt={attempt}"))
            .args(["--label", "dev.jobdock.job=planted", &image, "sleep", "300"])
            .output()
            .expect("docker run");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let planted = [
        planted(&ended.id, "1"),
        planted("0190f5d2-0000-7000-8000-000000000000", "1"),
        planted(&going.id, "7"),
    ];
    let exists = |id: &str| {
        std::process::Command::new("docker")
            .args(["container", "inspect", id])
            .output()
            .expect("docker inspect")
            .status
            .success()
    };
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while planted.iter().any(|id| exists(id)) {
        if std::time::Instant::now() > until {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&planted)
                .output();
            panic!("the sweep left a planted container");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        containers_of(&going.id).len(),
        1,
        "the running run's container stays"
    );
    let run = c.get_run(&going.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);
    c.cancel_run(&going.id).await.unwrap();
}
