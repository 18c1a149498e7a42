//! End-to-end tests: each starts the real `jobdock` binary on a free port with a fresh data
//! directory (and, for the PostgreSQL variants, a fresh database) and drives it over HTTP
//! through `jobdock-client`, or through the CLI.

mod alerts;
mod alerts_api;
mod anomalies;
mod async_runs;
mod auth;
mod backends;
mod callbacks;
mod cli;
mod cli_ops;
mod cli_runs;
mod daemon;
mod jobs;
mod logs_tail;
mod logs_volume;
mod metrics;
mod monitoring;
mod parallelism;
mod recovery;
mod registry;
mod replicas;
mod retention;
mod runs;
mod runs_limits;
mod schedules;
mod secrets;
mod service;
mod state;
mod tenancy;

use jobdock_testkit::TestApp;

/// Starts an engine on SQLite, or on PostgreSQL when `pg`.
pub async fn app(pg: bool) -> TestApp {
    TestApp::builder(env!("CARGO_BIN_EXE_jobdock"))
        .postgres(pg)
        .start()
        .await
}

/// A builder for an engine with extra settings.
pub fn builder() -> jobdock_testkit::TestAppBuilder {
    TestApp::builder(env!("CARGO_BIN_EXE_jobdock"))
}

/// Declares a test that runs on SQLite and on PostgreSQL: `both!(name);` for an
/// `async fn name(pg: bool)` in scope.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(true).await
            }
        }
    )*};
}

/// A minimal job definition.
pub fn spec(name: &str) -> jobdock_types::JobSpec {
    jobdock_types::JobSpec {
        name: name.into(),
        image: "busybox:1".into(),
        ..Default::default()
    }
}

/// A job running `script` with `sh -c` in the local busybox test image.
pub fn sh_job(name: &str, script: &str) -> jobdock_types::JobSpec {
    jobdock_types::JobSpec {
        name: name.into(),
        image: jobdock_testkit::images::busybox_image().expect("test image"),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// Triggers a run of `job` and waits (up to two minutes) until it has ended.
pub async fn run_to_end(c: &jobdock_client::Client, job: &str) -> jobdock_types::Run {
    let (run, created) = c
        .trigger(job, &Default::default(), None)
        .await
        .expect("trigger");
    assert!(created);
    c.wait_until_final(&run.id, std::time::Duration::from_secs(120))
        .await
        .expect("wait")
}

/// Waits until `check` holds for the run, polling; panics after `secs` seconds.
pub async fn wait_for(
    c: &jobdock_client::Client,
    id: &str,
    secs: u64,
    check: impl Fn(&jobdock_types::Run) -> bool,
) -> jobdock_types::Run {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let run = c.get_run(id).await.expect("get run");
        if check(&run) {
            return run;
        }
        assert!(
            std::time::Instant::now() < until,
            "condition not reached: {run:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Containers of this run that Docker still has.
pub fn containers_of(run_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.jobdock.run-id={run_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The OpenAPI document the engine serves.
pub async fn openapi_doc(app: &TestApp) -> serde_json::Value {
    reqwest::get(format!("{}/api/v1/openapi.json", app.url()))
        .await
        .expect("the document")
        .json()
        .await
        .expect("JSON")
}

/// Waits until the run's stored log holds `needle`; panics after `secs` seconds.
pub async fn wait_for_log(c: &jobdock_client::Client, id: &str, needle: &str, secs: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !c.logs_text(id).await.expect("logs").contains(needle) {
        assert!(
            std::time::Instant::now() < until,
            "`{needle}` never appeared in run {id}'s log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The (start, end) of each run, from the `start` and `end` lines its container wrote.
pub async fn intervals(c: &jobdock_client::Client, ids: &[String]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for id in ids {
        let logs = c.logs(id).await.expect("logs");
        let at = |word: &str| {
            logs.iter()
                .find(|l| l.line == word)
                .map(|l| l.ts.timestamp_nanos_opt().unwrap_or_default())
        };
        if let (Some(s), Some(e)) = (at("start"), at("end")) {
            out.push((s, e));
        }
    }
    out
}

/// The most intervals that overlap at any moment.
pub fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|(s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // At equal times an end comes before a start: touching is not overlapping.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}
