//! What a trigger does when its run cannot start now, and the per-run log cap.

use std::time::Duration;

use jobdock_types::{OnConflict, RunStatus};

use crate::{app, both, builder, run_to_end, sh_job};

both!(on_conflict_reject_names_the_holder_and_skip_records_a_skipped_run);

async fn on_conflict_reject_names_the_holder_and_skip_records_a_skipped_run(pg: bool) {
    let app = app(pg).await;
    let c = app.admin();
    let mut s = sh_job("exclusive", "sleep 300");
    s.on_conflict = Some(OnConflict::Reject);
    s.stop_grace_seconds = Some(0);
    c.create_job(&s).await.unwrap();
    let (holder, _) = c
        .trigger("exclusive", &Default::default(), None)
        .await
        .unwrap();
    let resp = c
        .request(reqwest::Method::POST, "/api/v1/jobs/exclusive/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let p: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(p["run_id"], holder.id.as_str(), "{p}");

    let mut s = sh_job("skippy", "sleep 300");
    s.on_conflict = Some(OnConflict::Skip);
    s.stop_grace_seconds = Some(0);
    c.create_job(&s).await.unwrap();
    let (running, _) = c
        .trigger("skippy", &Default::default(), None)
        .await
        .unwrap();
    let (skipped, created) = c
        .trigger("skippy", &Default::default(), None)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(skipped.status, RunStatus::Skipped);
    assert!(skipped.reason.unwrap().contains(&running.id));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.get_run(&skipped.id).await.unwrap().status,
        RunStatus::Skipped,
        "it never starts"
    );
    for id in [&holder.id, &running.id] {
        c.cancel_run(id).await.unwrap();
    }
}

#[tokio::test]
async fn a_runaway_log_is_capped_and_says_how_much_was_dropped() {
    let app = builder().arg("--log-cap-mb").arg("1").start().await;
    let c = app.admin();
    // About 2.4 MiB of output: 30,000 lines of 80 characters.
    let script = "i=0; while [ $i -lt 30000 ]; do printf '%080d\\n' $i; i=$((i+1)); done";
    c.create_job(&sh_job("noisy", script)).await.unwrap();
    let run = run_to_end(&c, "noisy").await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let logs = c.logs(&run.id).await.unwrap();
    let stored: usize = logs
        .iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.line.len())
        .sum();
    assert!(stored <= 1024 * 1024, "stored {stored} bytes past the cap");
    assert!(stored > 1000 * 1024, "stored only {stored} bytes");
    let last = logs.last().unwrap();
    assert_eq!(last.stream, "jobdock");
    assert!(last.line.contains("log capped at 1 MiB"), "{}", last.line);
    let first_dropped = logs.iter().filter(|l| l.stream == "stdout").count();
    assert_eq!(
        logs[first_dropped - 1].line,
        format!("{:080}", first_dropped - 1),
        "a prefix, in order"
    );
}
