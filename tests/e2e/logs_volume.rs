//! A run's log under volume, through the real engine: every line stored, in order and once,
//! whatever the daemon's log driver rotates; after a `kill -9` of the engine, the log goes
//! on where it was, and what the driver no longer held is marked in the log and on the run.

use std::time::Duration;

use jobdock_types::{LogDriver, LogEntry, RunEventKind, RunStatus};

use crate::{app, sh_job, wait_for_log};

/// `n` numbered lines of about 100 bytes on stdout from `from` on, and every tenth number
/// on stderr too.
fn numbered(from: u64, to: u64) -> String {
    format!(
        "awk 'BEGIN {{ pad = sprintf(\"%88s\", \"\"); gsub(/ /, \"x\", pad); \
         for (i = {from}; i <= {to}; i++) {{ printf \"out %07d %s\\n\", i, pad; \
         if (i % 10 == 0) printf \"err %07d\\n\", i > \"/dev/stderr\" }} }}'"
    )
}

fn rotating_at_1m() -> LogDriver {
    LogDriver {
        name: "json-file".into(),
        options: [
            ("max-size".to_string(), "1m".to_string()),
            ("max-file".to_string(), "2".to_string()),
        ]
        .into(),
    }
}

/// Triggers `job`, kills the engine with SIGKILL once the log holds `marker`, restarts it
/// `away_secs` later, and returns the run once it has ended.
async fn killed_mid_run(
    app: &mut jobdock_testkit::TestApp,
    job: &str,
    marker: &str,
    away_secs: u64,
) -> jobdock_types::Run {
    let c = app.admin();
    let (run, _) = c.trigger(job, &Default::default(), None).await.unwrap();
    wait_for_log(&c, &run.id, marker, 120).await;
    app.kill9();
    tokio::time::sleep(Duration::from_secs(away_secs)).await;
    app.restart().unwrap();
    app.admin()
        .wait_until_final(&run.id, Duration::from_secs(300))
        .await
        .unwrap()
}

/// Each stream's numbers in log order, and the engine's own lines.
fn read(log: &[LogEntry]) -> (Vec<u64>, Vec<u64>, Vec<String>) {
    let (mut out, mut err, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for l in log {
        let n = || l.line[4..11].parse::<u64>().expect("a numbered line");
        match l.stream.as_str() {
            "stdout" => out.push(n()),
            "stderr" => err.push(n()),
            _ => notes.push(l.line.clone()),
        }
    }
    (out, err, notes)
}

fn exactly(got: &[u64], from: u64, to: u64, step: u64, what: &str) {
    let want: Vec<u64> = (from..=to).filter(|i| i % step == 0).collect();
    if got != want.as_slice() {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        let around = |v: &[u64]| {
            let i = at.unwrap_or(v.len().min(got.len()));
            v[i.saturating_sub(3)..(i + 5).min(v.len())].to_vec()
        };
        panic!(
            "{what}: {} lines where {} were expected, first difference at {at:?}: \
             got {:?}, expected {:?}",
            got.len(),
            want.len(),
            around(got),
            around(&want)
        );
    }
}

/// 600,000 lines (about 60 MB) plus 60,000 on stderr from a container whose driver keeps
/// 2 MB: the run's log holds every one of them, and says it is complete.
#[tokio::test]
async fn a_chatty_run_keeps_every_line_whatever_the_driver_rotates() {
    const N: u64 = 600_000;
    let app = app(false).await;
    let c = app.admin();
    let mut job = sh_job("chatty", &numbered(1, N));
    job.log_driver = Some(rotating_at_1m());
    c.create_job(&job).await.unwrap();
    let (run, _) = c
        .trigger("chatty", &Default::default(), None)
        .await
        .unwrap();
    let run = c
        .wait_until_final(&run.id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert!(run.log_complete, "{run:?}");
    let (out, err, notes) = read(&c.logs(&run.id).await.unwrap());
    exactly(&out, 1, N, 1, "stdout");
    exactly(&err, 1, N, 10, "stderr");
    assert!(notes.is_empty(), "{notes:?}");
}

/// The engine is killed in the middle of a run and comes back while the driver still holds
/// everything since the container started: the log continues exactly, with no gap.
#[tokio::test]
async fn after_kill_9_the_log_continues_exactly_while_the_driver_kept_it() {
    let mut app = app(false).await;
    let c = app.admin();
    let script = format!(
        "{}; sleep 2; {}",
        numbered(1, 20_000),
        numbered(20_001, 60_000)
    );
    c.create_job(&sh_job("survivor", &script)).await.unwrap();
    let run = killed_mid_run(&mut app, "survivor", "out 0020000", 3).await;
    let c = app.admin();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert!(run.log_complete, "{run:?}");
    let (out, err, notes) = read(&c.logs(&run.id).await.unwrap());
    exactly(&out, 1, 60_000, 1, "stdout");
    exactly(&err, 1, 60_000, 10, "stderr");
    assert!(notes.is_empty(), "{notes:?}");
}

/// The engine is killed in the middle of a run whose container then writes far more than
/// its driver keeps: after the restart the log says, at the place of the gap, that output
/// is missing; the run says its log is not complete and its timeline has a `log_gap`
/// event; no line is stored twice, and everything the driver still held is stored.
#[tokio::test]
async fn after_kill_9_output_the_driver_rotated_away_is_a_visible_gap() {
    const N: u64 = 300_000;
    let mut app = app(false).await;
    let c = app.admin();
    let script = format!("{}; sleep 2; {}", numbered(1, 5_000), numbered(5_001, N));
    let mut job = sh_job("forgetful", &script);
    job.log_driver = Some(rotating_at_1m());
    c.create_job(&job).await.unwrap();
    // Away long enough for the container to write its 30 MB alone and end.
    let run = killed_mid_run(&mut app, "forgetful", "out 0005000", 8).await;
    let c = app.admin();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert!(!run.log_complete, "the gap shows on the run: {run:?}");

    let log = c.logs(&run.id).await.unwrap();
    let notice = log
        .iter()
        .position(|l| l.stream == "jobdock")
        .expect("a notice marks the gap");
    assert!(
        log[notice].line.starts_with("output missing here between ")
            && log[notice].line.contains("rotated away"),
        "{}",
        log[notice].line
    );
    let (before, _, _) = read(&log[..notice]);
    let (after, err_after, notes) = read(&log[notice + 1..]);
    assert!(notes.is_empty(), "one notice: {notes:?}");
    exactly(
        &before,
        1,
        *before.last().unwrap(),
        1,
        "stdout before the gap",
    );
    let resumed = *after.first().expect("lines after the gap");
    assert!(
        resumed > before.last().copied().unwrap() + 1,
        "lines really are missing between {before:?} and {resumed}",
        before = before.last()
    );
    exactly(&after, resumed, N, 1, "stdout after the gap");
    // The driver may keep no stderr at all: busybox awk writes it in 4 KiB bursts, and
    // the kept megabytes can fall between two of them.
    if let Some(&err_from) = err_after.first() {
        exactly(&err_after, err_from, N, 10, "stderr after the gap");
    }

    let events = c.run_events(&run.id).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == RunEventKind::LogGap),
        "{events:?}"
    );
}
