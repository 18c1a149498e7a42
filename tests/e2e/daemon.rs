//! The Docker daemon going away: runs are re-attached when it comes back within the
//! window, marked `lost` when it does not; the API keeps answering and `/readyz` says why.

use std::time::Duration;

use jobdock_testkit::docker_proxy::DockerProxy;
use jobdock_types::RunStatus;

use crate::{builder, containers_of, sh_job, wait_for, wait_for_log};

async fn docker_readiness(url: &str) -> String {
    let body: serde_json::Value = reqwest::get(format!("{url}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["status"], "ready",
        "a backend being down does not make the replica unready"
    );
    body["backends"]["docker"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_comes_back_within_the_window_is_reattached() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = DockerProxy::start(&dir.path().join("docker.sock"));
    let app = builder()
        .env("DOCKER_HOST", &proxy.docker_host())
        .arg("--backend-reattach-seconds")
        .arg("60")
        .start()
        .await;
    let c = app.admin();
    let script = "i=1; while [ $i -le 40 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    c.create_job(&sh_job("steady", script)).await.unwrap();
    let (run, _) = c
        .trigger("steady", &Default::default(), None)
        .await
        .unwrap();
    wait_for_log(&c, &run.id, "tick 3", 60).await;

    proxy.cut();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while docker_readiness(app.url()).await != "down" {
        assert!(
            std::time::Instant::now() < until,
            "/readyz never reported docker down"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        c.get_run(&run.id).await.unwrap().status,
        RunStatus::Running,
        "the API keeps answering"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.resume();

    let done = c
        .wait_until_final(&run.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    let lines: Vec<String> = c
        .logs(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    let want: Vec<String> = (1..=40).map(|i| format!("tick {i}")).collect();
    assert_eq!(lines, want, "the complete log, once, across the outage");
    assert_eq!(docker_readiness(app.url()).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_gone_longer_than_the_window_marks_runs_lost() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = DockerProxy::start(&dir.path().join("docker.sock"));
    let app = builder()
        .env("DOCKER_HOST", &proxy.docker_host())
        .arg("--backend-reattach-seconds")
        .arg("3")
        .arg("--lease-seconds")
        .arg("6")
        .start()
        .await;
    let c = app.admin();
    let mut s = sh_job("stranded", "sleep 60");
    s.stop_grace_seconds = Some(0);
    c.create_job(&s).await.unwrap();
    let (run, _) = c
        .trigger("stranded", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &run.id, 60, |r| r.status == RunStatus::Running).await;
    proxy.cut();
    let lost = c
        .wait_until_final(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(lost.status, RunStatus::Lost, "{lost:?}");
    assert!(
        lost.reason
            .as_deref()
            .unwrap_or_default()
            .contains("could not be reached"),
        "{lost:?}"
    );
    // Once the daemon is back, the engine removes what the lost run left behind.
    proxy.resume();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !containers_of(&run.id).is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "the lost run's container was never removed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
