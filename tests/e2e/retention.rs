//! Retention on a real engine: with a per-job count of 2, the oldest runs of a job (and their
//! logs) are pruned once they are past the 7-day floor, while the job's statistics still
//! count every run.

use std::time::Duration;

use jobdock_testkit::TestApp;
use jobdock_types::RunStatus;
use sqlx::Connection as _;

use crate::{builder, run_to_end, sh_job};

const DAY_MS: i64 = 86_400_000;

/// Moves every run of the app's database `by_ms` into the past, as if it had run then. The
/// engine never prunes a run younger than 7 days, so a test cannot wait for that.
async fn backdate_all_runs(app: &TestApp, by_ms: i64) {
    sqlx::any::install_default_drivers();
    let url = match app.db() {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", app.data_dir().join("jobdock.db").display()),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE runs SET created_at = created_at - $1, started_at = started_at - $1, \
         first_started_at = first_started_at - $1, finished_at = finished_at - $1",
    )
    .bind(by_ms)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

async fn beyond_the_count_the_oldest_runs_go_and_statistics_stay(pg: bool) {
    let mut app = builder()
        .postgres(pg)
        .arg("--retention-max-runs-per-job")
        .arg("2")
        .start()
        .await;
    let c = app.admin();
    c.create_job(&sh_job("kept-short", "echo line-of-$JOBDOCK_RUN_ID"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let run = run_to_end(&c, "kept-short").await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        ids.push(run.id);
    }
    let before = c.job_stats("kept-short").await.unwrap();
    assert_eq!((before.count, before.success_count), (4, 4));

    // Eight days later, the engine starts again; retention runs at start.
    app.kill9();
    backdate_all_runs(&app, 8 * DAY_MS).await;
    app.restart().unwrap();
    let c = app.admin();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while c.get_run(&ids[1]).await.is_ok() {
        assert!(
            std::time::Instant::now() < until,
            "the oldest runs were never pruned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for old in &ids[..2] {
        assert_eq!(c.get_run(old).await.unwrap_err().status(), Some(404));
        assert_eq!(c.logs_text(old).await.unwrap_err().status(), Some(404));
    }
    for kept in &ids[2..] {
        assert_eq!(c.get_run(kept).await.unwrap().status, RunStatus::Succeeded);
        let log = c.logs_text(kept).await.unwrap();
        assert!(log.contains(&format!("line-of-{kept}")), "{log}");
    }
    let listed = c.list_runs(Some("kept-short"), None, None).await.unwrap();
    assert_eq!(listed.items.len(), 2);

    let stats = c.job_stats("kept-short").await.unwrap();
    assert_eq!((stats.count, stats.success_count), (4, 4), "{stats:?}");
    assert_eq!(stats.baseline_runs, 4);
    assert!(stats.median_duration_ms.is_some() && stats.p90_duration_ms.is_some());
    assert!(stats.median_start_latency_ms.is_some());
    let recent: Vec<&str> = stats.recent.iter().map(|r| r.run_id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(recent, newest_first, "pruned runs keep their statistics");
}

crate::both!(beyond_the_count_the_oldest_runs_go_and_statistics_stay);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_an_unknown_job_are_404_and_a_short_retention_is_refused() {
    let app = crate::app(false).await;
    let c = app.admin();
    assert_eq!(c.job_stats("nope").await.unwrap_err().status(), Some(404));
    assert_eq!(
        c.job_stats("Not A Name/../x").await.unwrap_err().status(),
        Some(404)
    );
    c.create_job(&sh_job("never-ran", "true")).await.unwrap();
    let s = c.job_stats("never-ran").await.unwrap();
    assert_eq!((s.count, s.success_count, s.baseline_runs), (0, 0, 0));
    assert_eq!(s.median_duration_ms, None);
    assert!(s.recent.is_empty());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(["serve", "--retention-days", "3", "--listen", "127.0.0.1:0"])
        .env("JOBDOCK_DATA_DIR", app.data_dir())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention_days must be at least 7"), "{err}");
}
