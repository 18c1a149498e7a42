//! `jobdock run`, `runs` and `logs` from the command line, against a real engine running
//! containers on the real Docker daemon.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jobdock_testkit::app::ADMIN_TOKEN;
use jobdock_testkit::TestApp;
use jobdock_types::{Run, RunStatus};

use crate::{app, sh_job};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The CLI's exit code; panics (with its output) when a signal ended it.
fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}", text(o)))
}

fn cli(app: &TestApp, args: &[&str]) -> Output {
    app.cli(args, ADMIN_TOKEN, None)
}

#[tokio::test]
async fn run_wait_exits_with_the_containers_exit_code() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job("clirun-fails", "echo hi; exit 3"))
        .await
        .unwrap();
    c.create_job(&sh_job("clirun-passes", "echo fine"))
        .await
        .unwrap();

    let o = cli(&app, &["run", "clirun-fails", "--wait"]);
    let (out, err) = text(&o);
    assert_eq!(code(&o), 3, "{out}\n{err}");
    assert!(out.starts_with("ID"), "{out}");
    assert!(
        out.contains("clirun-fails") && out.contains("failed"),
        "{out}"
    );
    // A failure says why, with the last lines of its log.
    assert!(
        err.contains("failed (exit code 3)") && err.contains("last 1 line(s) of its log:"),
        "{err}"
    );
    assert!(err.contains(" stdout hi"), "{err}");
    // The list says why, and when, for people.
    let (list, _) = text(&cli(&app, &["runs", "list", "--job", "clirun-fails"]));
    assert!(list.lines().next().unwrap().ends_with("REASON"), "{list}");
    assert!(
        list.contains("exited with code 3") && list.contains("s ago"),
        "{list}"
    );

    let o = cli(&app, &["run", "clirun-passes", "--wait", "-o", "json"]);
    let (out, err) = text(&o);
    assert_eq!(code(&o), 0, "{out}\n{err}");
    let run: Run = serde_json::from_str(&out).expect("the final run as JSON");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.exit_code, Some(0));

    // Without --wait the run is printed as triggered and the command succeeds at once,
    // whatever the run will do.
    let o = cli(&app, &["run", "clirun-fails", "-o", "json"]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    let run: Run = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(run.job, "clirun-fails");
    let run = c
        .wait_until_final(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.exit_code, Some(3));

    // API errors show the problem, not raw JSON.
    let o = cli(&app, &["run", "clirun-missing", "--wait"]);
    let (_, err) = text(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("Not Found") && !err.contains("{\""), "{err}");
}

#[tokio::test]
async fn follow_streams_the_log_and_run_env_reaches_the_container() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job(
        "clirun-lines",
        "for i in 1 2 3 4 5; do echo line-$i; done; echo greeting=$GREETING",
    ))
    .await
    .unwrap();

    let o = cli(
        &app,
        &["run", "clirun-lines", "--follow", "--env", "GREETING=hello"],
    );
    let (out, err) = text(&o);
    assert_eq!(code(&o), 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.ends_with(&format!(" stdout {needle}")))
            .unwrap_or_else(|| panic!("{needle} not printed: {out}"))
    };
    let positions: Vec<usize> = (1..=5).map(|i| at(&format!("line-{i}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
    at("greeting=hello");
    assert!(err.contains("succeeded"), "{err}");

    // An --env without `=` is refused before anything is triggered.
    let o = cli(&app, &["run", "clirun-lines", "--env", "GREETING"]);
    assert_ne!(code(&o), 0);
    assert!(text(&o).1.contains("KEY=VALUE"), "{:?}", text(&o));

    // The run is listed, shown, and its log printed as `<RFC 3339> <stream> <line>`.
    let page = c.list_runs(Some("clirun-lines"), None, None).await.unwrap();
    assert_eq!(page.items.len(), 1, "{:?}", page.items);
    let id = page.items[0].id.clone();
    let o = cli(&app, &["runs", "list", "--job", "clirun-lines"]);
    let (out, _) = text(&o);
    assert!(out.starts_with("ID"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("run {id} not listed: {out}"));
    assert!(
        row.contains("clirun-lines") && row.contains("succeeded"),
        "{row}"
    );

    let o = cli(&app, &["runs", "get", &id, "-o", "json"]);
    let run: Run = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((run.id.as_str(), run.exit_code), (id.as_str(), Some(0)));
    let o = cli(&app, &["runs", "get", &id]);
    assert!(text(&o).0.contains("status: succeeded"), "{:?}", text(&o));

    let o = cli(&app, &["logs", &id]);
    let (out, err) = text(&o);
    assert_eq!(code(&o), 0, "{err}");
    let first = out
        .lines()
        .find(|l| l.ends_with("line-1"))
        .unwrap_or_else(|| panic!("no line-1: {out}"));
    let (ts, rest) = first.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{first}");
    assert_eq!(rest, "stdout line-1");
    assert!(out.contains(" stdout greeting=hello\n"), "{out}");

    let o = cli(&app, &["logs", &id, "--jsonl"]);
    let entries: Vec<serde_json::Value> = text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries[0]["line"], "line-1", "{entries:?}");
}

/// Starts `jobdock <args>` against the app without waiting for it.
fn spawn_cli(app: &TestApp, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(args)
        .env("JOBDOCK_URL", app.url())
        .env("JOBDOCK_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jobdock CLI starts")
}

#[tokio::test]
async fn runs_cancel_stops_a_run_that_run_wait_is_waiting_for() {
    let app = app(false).await;
    let c = app.admin();
    let mut s = sh_job("clirun-sleeper", "echo up; sleep 300");
    s.stop_grace_seconds = Some(1);
    c.create_job(&s).await.unwrap();

    let waiter = spawn_cli(&app, &["run", "clirun-sleeper", "--wait"]);
    // The run the waiter triggered, once its container runs.
    let until = Instant::now() + Duration::from_secs(120);
    let id = loop {
        let page = c
            .list_runs(Some("clirun-sleeper"), None, None)
            .await
            .unwrap();
        if let Some(r) = page.items.first() {
            if r.status == RunStatus::Running {
                break r.id.clone();
            }
            assert!(!r.status.is_final(), "ended before the cancel: {r:?}");
        }
        assert!(Instant::now() < until, "no running run: {:?}", page.items);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let o = cli(&app, &["runs", "cancel", &id]);
    assert_eq!(code(&o), 0, "{:?}", text(&o));
    assert!(text(&o).0.contains(&id), "{:?}", text(&o));
    let run = c
        .wait_until_final(&id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");

    let o = tokio::task::spawn_blocking(move || waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(code(&o), 130, "{out}\n{err}");
    assert!(out.contains("cancelled"), "{out}");
}

/// `logs` of a run that never started says why it is empty; `run --wait` of a queued run
/// says what it waits for.
#[tokio::test]
async fn an_empty_log_and_a_queued_run_say_why() {
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("clirun-blocked", "sleep 30");
    job.max_parallel = Some(1);
    c.create_job(&job).await.unwrap();
    let (first, _) = c
        .trigger("clirun-blocked", &Default::default(), None)
        .await
        .unwrap();
    crate::wait_for(&c, &first.id, 60, |r| r.status == RunStatus::Running).await;
    let (queued, _) = c
        .trigger("clirun-blocked", &Default::default(), None)
        .await
        .unwrap();
    c.cancel_run(&queued.id).await.unwrap();
    let o = cli(&app, &["logs", &queued.id]);
    let (out, err) = text(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("has no output: it ended `cancelled` before its container started"),
        "{err}"
    );

    let waiter = spawn_cli(&app, &["run", "clirun-blocked", "--wait"]);
    // It waits behind the first run; then both are cancelled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.cancel_run(&first.id).await.unwrap();
    let runs = c
        .list_runs(Some("clirun-blocked"), None, None)
        .await
        .unwrap();
    for r in runs.items.iter().filter(|r| !r.status.is_final()) {
        let _ = c.cancel_run(&r.id).await;
    }
    let out = waiter.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queued: waiting for a slot of job `clirun-blocked` (max_parallel 1)")
            || err.contains("queued: waiting behind an earlier run of job `clirun-blocked`"),
        "{err}"
    );
}
