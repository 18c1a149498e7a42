//! The `jobdock` command line as a client of a running engine.

use crate::app;

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn jobs_secrets_and_tokens_from_the_command_line() {
    let app = app(false).await;
    let admin = jobdock_testkit::app::ADMIN_TOKEN;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(
        &file,
        "name: cli-job\nimage: busybox:1\ncommand: [sh, -c, 'echo hi']\nenv:\n  SOURCE: erp\nschedule:\n  cron: '0 6 * * 1-5'\n  timezone: Europe/Amsterdam\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = app.cli(&["jobs", "create", "-f", f], admin, None);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = app.cli(&["jobs", "list"], admin, None);
    let (out, _) = text(&o);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("cli-job") && out.contains("0 6 * * 1-5"),
        "{out}"
    );
    let o = app.cli(&["jobs", "list", "--output", "json"], admin, None);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Exactly the API's page shape, every page read.
    assert_eq!(listed["items"][0]["env"]["SOURCE"], "erp");
    assert!(listed["next_cursor"].is_null(), "{listed}");

    // Secrets come from standard input, never from argv.
    let o = app.cli(
        &["secrets", "set", "cli-job", "API_KEY"],
        admin,
        Some("from-stdin-123\n"),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        app.admin().get_job("cli-job").await.unwrap().secret_names,
        vec!["API_KEY"]
    );

    // `apply` replaces an existing job.
    std::fs::write(&file, "name: cli-job\nimage: busybox:2\n").unwrap();
    assert!(app
        .cli(&["jobs", "apply", "-f", f], admin, None)
        .status
        .success());
    let job = app.admin().get_job("cli-job").await.unwrap();
    assert_eq!(job.image, "busybox:2");
    assert_eq!(
        job.secret_names,
        vec!["API_KEY"],
        "apply without secrets keeps them"
    );

    // Tokens: the value is printed once and works.
    let o = app.cli(
        &[
            "tokens", "create", "--scope", "read", "--name", "bi-read", "--job", "cli-*",
        ],
        admin,
        None,
    );
    let (out, _) = text(&o);
    let token = out.trim();
    assert!(token.starts_with("jd_"), "{out}");
    let o = app.cli(&["jobs", "get", "cli-job", "-o", "json"], token, None);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = app.cli(&["tokens", "list"], admin, None);
    let (out, _) = text(&o);
    assert!(
        out.contains("bi-read") && out.contains("cli-*") && !out.contains(token),
        "{out}"
    );

    // API errors are shown as the problem's title and detail, with a non-zero exit.
    std::fs::write(&file, "name: Bad Name\nimage: x\n").unwrap();
    let o = app.cli(&["jobs", "create", "-f", f], admin, None);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("Unprocessable Entity") && err.contains("name:"),
        "{err}"
    );
    assert!(!err.contains("{\""), "raw JSON shown: {err}");
    let o = app.cli(&["jobs", "get", "cli-job"], "wrong-token", None);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("Unauthorized"), "{err}");

    let o = app.cli(&["jobs", "delete", "cli-job"], admin, None);
    assert!(o.status.success());
    let o = app.cli(&["audit", "list"], admin, None);
    let (out, _) = text(&o);
    assert!(
        out.contains("job.delete") && out.contains("secret.set"),
        "{out}"
    );
}

#[test]
fn serve_help_documents_every_setting() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for s in [
        "--listen",
        "JOBDOCK_LISTEN",
        "--data-dir",
        "JOBDOCK_DATA_DIR",
        "DATABASE_URL",
        "JOBDOCK_MASTER_KEY",
        "--master-key-file",
        "--tls-cert",
        "--tls-key",
        "JOBDOCK_LOG_FORMAT",
        "JOBDOCK_ADMIN_TOKEN",
        "--config",
        "jobdock.toml",
    ] {
        assert!(help.contains(s), "{s} not in serve --help");
    }
}

/// A reader that goes away (`jobdock … | head`) ends the command quietly: exit 0, no panic.
#[tokio::test]
async fn a_closed_pipe_ends_a_listing_quietly() {
    let app = crate::app(false).await;
    for i in 0..3 {
        app.admin()
            .create_job(&crate::spec(&format!("piped-{i}")))
            .await
            .unwrap();
    }
    for args in [&["jobs", "list"][..], &["jobs", "list", "-o", "json"]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
            .args(args)
            .env("JOBDOCK_URL", app.url())
            .env("JOBDOCK_TOKEN", jobdock_testkit::app::ADMIN_TOKEN)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end closes before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `jobs get --export` writes a job file that `jobs apply` takes back unchanged, secrets
/// kept; and applying a file that does not say `paused` leaves a paused schedule paused.
#[tokio::test]
async fn an_exported_job_applies_back_unchanged_and_a_pause_survives_apply() {
    let app = app(false).await;
    let admin = jobdock_testkit::app::ADMIN_TOKEN;
    let mut spec = crate::spec("exported");
    spec.secrets = Some([("API_KEY".to_string(), "s3cr3t-value".to_string())].into());
    spec.schedule = Some(jobdock_types::Schedule {
        cron: "0 6 * * 1-5".into(),
        timezone: "Europe/Amsterdam".into(),
        paused: true,
    });
    spec.env = [("SOURCE".to_string(), "erp".to_string())].into();
    app.admin().create_job(&spec).await.unwrap();

    let o = app.cli(&["jobs", "get", "exported", "--export"], admin, None);
    let (exported, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(exported.starts_with("# secrets"), "{exported}");
    assert!(!exported.contains("s3cr3t-value"), "{exported}");
    let o = app.cli(&["jobs", "apply", "-f", "-"], admin, Some(&exported));
    assert!(o.status.success(), "{:?}", text(&o));
    let o = app.cli(&["jobs", "get", "exported", "--export"], admin, None);
    assert_eq!(text(&o).0, exported, "applied back unchanged");
    let job = app.admin().get_job("exported").await.unwrap();
    assert_eq!(job.secret_names, ["API_KEY"], "the stored secret stays");

    let bare = "name: exported\nimage: busybox:1\nschedule:\n  cron: '0 7 * * *'\n";
    let o = app.cli(&["jobs", "apply", "-f", "-"], admin, Some(bare));
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("stays paused"), "{err}");
    let job = app.admin().get_job("exported").await.unwrap();
    let schedule = job.schedule.unwrap();
    assert!(
        schedule.paused && schedule.cron == "0 7 * * *",
        "{schedule:?}"
    );

    // The table says which schedules are paused, and when the others fire next, in their
    // own time zone.
    let mut running = crate::spec("scheduled");
    running.schedule = Some(jobdock_types::Schedule {
        cron: "0 6 * * *".into(),
        timezone: "Europe/Amsterdam".into(),
        paused: false,
    });
    app.admin().create_job(&running).await.unwrap();
    let (table, _) = text(&app.cli(&["jobs", "list"], admin, None));
    assert!(table.lines().next().unwrap().contains("NEXT"), "{table}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    assert!(line("exported").contains("0 7 * * * (paused)"), "{table}");
    let next = line("scheduled");
    assert!(
        next.contains(" 06:00 CE") && next.contains("(in "),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("LAST"), "{table}");

    // ... and how each job's latest run went.
    let failing = crate::sh_job("last-run-shown", "exit 3");
    app.admin().create_job(&failing).await.unwrap();
    let (run, _) = app
        .admin()
        .trigger("last-run-shown", &Default::default(), None)
        .await
        .unwrap();
    let ended = app
        .admin()
        .wait_until_final(&run.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ended.status, jobdock_types::RunStatus::Failed);
    let job = app.admin().get_job("last-run-shown").await.unwrap();
    let last = job.last_run.expect("the job's latest run");
    assert_eq!(
        (last.id.as_str(), last.status),
        (run.id.as_str(), ended.status)
    );
    let (table, _) = text(&app.cli(&["jobs", "list"], admin, None));
    let shown = table
        .lines()
        .find(|l| l.starts_with("last-run-shown"))
        .unwrap();
    assert!(
        shown.contains("failed ") && shown.contains(" ago"),
        "{table}"
    );
    assert!(line("scheduled").contains(" - "), "never ran: {table}");
}
