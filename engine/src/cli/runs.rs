//! Run commands: `run` triggers a run (and may wait for it or follow its log), `runs` lists,
//! shows and cancels runs, `logs` prints a run's log. `run --wait` ends with an exit code
//! derived from the run (see [`exit_code`]), so a shell script can use it like the job itself.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use jobdock_client::types::{Run, RunEventKind, RunStatus, TriggerRequest};

use anyhow::Context as _;
use jobdock_client::Client;

use super::client::Connection;
use super::output::{self, print, Format};

/// How `run --wait` and `run --follow` report the run's end; shown by `jobdock run --help`.
const EXIT_CODES: &str = "\
Exit codes with --wait or --follow:
  0        the run succeeded
  1-255    the run failed with this exit code (the container's own)
  124      the run timed out (as timeout(1) does)
  130      the run was cancelled (as after Ctrl-C)
  2        the run failed without an exit code, was lost or was skipped
Errors of the command itself (bad arguments, API errors) exit 1 or 2, as for every command.";

/// `jobdock run JOB …`
#[derive(Debug, Args)]
#[command(after_long_help = EXIT_CODES)]
pub struct RunArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
    /// The job's name.
    job: String,
    /// An environment variable for this run, `KEY=VALUE` (repeatable). Visible in `ps` on
    /// this machine: pass secrets with `jobdock secrets set`, not here.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The command to run instead of the job's, one argument per flag (repeatable), e.g.
    /// `--command sh --command -c --command 'echo hi'`.
    #[arg(long = "command", value_name = "ARG", allow_hyphen_values = true)]
    command: Vec<String>,
    /// A retried trigger with the same key returns the first run instead of starting another.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait until the run ends, print it and exit with its exit code. Ctrl-C stops waiting,
    /// not the run.
    #[arg(long)]
    wait: bool,
    /// Print the run's log as it is written, then exit like `--wait`. Standard output carries
    /// only the log; the final status goes to standard error.
    #[arg(long)]
    follow: bool,
}

/// `jobdock runs …`
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t)]
    output: Format,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs in this status (queued, starting, running, succeeded, failed,
        /// timed_out, cancelled, lost, skipped).
        #[arg(long)]
        status: Option<RunStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one run with its attempts.
    Get {
        /// The run's id.
        run: String,
    },
    /// Cancel a queued or running run; a running one ends `cancelled` once its container
    /// has stopped.
    Cancel {
        /// The run's id.
        run: String,
    },
    /// What happened to a run, in order: queued, waited (for what), started, progress,
    /// anomalies, retries, finished.
    Events {
        /// The run's id.
        run: String,
    },
    /// Start a new run with the definition this run had.
    Rerun {
        /// The run's id.
        run: String,
    },
}

/// `jobdock logs RUN …`
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    conn: Connection,
    /// The run's id.
    run: String,
    /// Keep printing new lines until the run ends.
    #[arg(long, short)]
    follow: bool,
    /// One JSON object per line (`ts`, `stream`, `line`, `attempt`) instead of
    /// `<time> <stream> <line>`.
    #[arg(long)]
    jsonl: bool,
    /// Only the last N lines (with --follow: then the new ones).
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    tail: Option<u32>,
}

/// Parses `KEY=VALUE`; the value may itself hold `=`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(format!("`{s}` has no name before `=`")),
        None => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// The process exit code that reports how a (final) run ended; see [`EXIT_CODES`].
pub fn exit_code(run: &Run) -> u8 {
    match run.status {
        RunStatus::Succeeded => 0,
        RunStatus::Failed => match run.exit_code {
            Some(c) if c != 0 => c.clamp(1, 255) as u8,
            _ => 2,
        },
        RunStatus::TimedOut => 124,
        RunStatus::Cancelled => 130,
        RunStatus::Lost | RunStatus::Skipped => 2,
        // Not final: callers only ask once the run has ended.
        RunStatus::Queued | RunStatus::Starting | RunStatus::Running => 2,
    }
}

const RUN_HEADERS: &[&str] = &["ID", "JOB", "STATUS", "ATTEMPT", "PROGRESS"];
const LIST_HEADERS: &[&str] = &[
    "ID", "JOB", "STATUS", "ATTEMPT", "EXIT", "CREATED", "DURATION", "REASON",
];

fn attempt(r: &Run) -> String {
    format!("{}/{}", r.attempt, r.max_attempts)
}

fn run_rows(r: &Run) -> Vec<Vec<String>> {
    vec![vec![
        r.id.clone(),
        r.job.clone(),
        r.status.as_str().to_string(),
        attempt(r),
        progress(r).unwrap_or_else(|| "-".into()),
    ]]
}

/// The run's latest progress for people: `40/100 loading orders`.
fn progress(r: &Run) -> Option<String> {
    let p = r.progress.as_ref()?;
    let counts = match (p.done, p.total) {
        (Some(d), Some(t)) => format!("{d}/{t} "),
        (Some(d), None) => format!("{d} "),
        _ => String::new(),
    };
    Some(format!("{counts}{}", p.message).trim().to_string())
}

fn list_rows(runs: &[Run]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.job.clone(),
                r.status.as_str().to_string(),
                attempt(r),
                r.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                output::ago(r.created_at),
                duration(r.duration_ms),
                r.reason
                    .as_deref()
                    .map(|why| output::clip(why, 60))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h07m`.
fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let s = ms / 1000;
    if ms < 1_000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// One line on how the run ended, for standard error.
fn summary(r: &Run) -> String {
    let mut s = format!("run {} of job {} {}", r.id, r.job, r.status.as_str());
    if let Some(c) = r.exit_code {
        s.push_str(&format!(" (exit code {c})"));
    }
    if let Some(reason) = &r.reason {
        s.push_str(&format!(": {reason}"));
    }
    if let Some(p) = progress(r) {
        s.push_str(&format!(" (last progress: {p})"));
    }
    s
}

/// Lines of the log shown after a run that failed.
const TAIL_LINES: u32 = 20;

/// For a run still queued, what it waits for, as its timeline says once the dispatcher has
/// looked at it (within a few seconds; a run that starts meanwhile waits for nothing).
async fn say_what_it_waits_for(c: &Client, run: &Run) {
    for _ in 0..10 {
        match c.get_run(&run.id).await {
            Ok(now) if now.status == RunStatus::Queued => {}
            _ => return,
        }
        let events = c.run_events(&run.id).await.unwrap_or_default();
        if let Some(w) = events
            .iter()
            .rev()
            .find(|e| e.kind == RunEventKind::Waiting)
        {
            eprintln!("queued: {}", w.message);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// The last lines of a run's log, on standard error, after a failure's summary; or why
/// there are none.
async fn print_tail(c: &Client, run: &Run) {
    let Ok(log) = c.logs_tail_text(&run.id, TAIL_LINES).await else {
        return;
    };
    let lines: Vec<&str> = log.lines().collect();
    if lines.is_empty() {
        eprintln!("{}", why_no_output(run));
        return;
    }
    eprintln!("last {} line(s) of its log:", lines.len());
    for l in &lines {
        eprintln!("  {l}");
    }
}

/// Why a run has no log, in words.
fn why_no_output(run: &Run) -> String {
    match (run.started_at, run.status.is_final()) {
        (None, true) => format!(
            "run {} has no output: it ended `{}` before its container started{}",
            run.id,
            run.status.as_str(),
            run.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        (None, false) => format!(
            "run {} has no output yet: it is `{}` and its container has not started",
            run.id,
            run.status.as_str()
        ),
        (Some(_), _) => format!("run {} wrote no output", run.id),
    }
}

/// Long-polls until the run has ended; no deadline, as runs may take hours.
async fn wait_final(c: &Client, id: &str) -> anyhow::Result<Run> {
    loop {
        let run = c.wait_run(id, 60).await?;
        if run.status.is_final() {
            return Ok(run);
        }
    }
}

/// Copies the log to standard output chunk by chunk as the engine sends it; whether there
/// was any. A closed standard output (`| head`) ends the copy quietly.
async fn copy_log(
    c: &Client,
    id: &str,
    format: &str,
    follow: bool,
    tail: Option<u32>,
) -> anyhow::Result<bool> {
    let mut resp = c.logs_response_tail(id, format, follow, tail).await?;
    let mut wrote = false;
    while let Some(chunk) = resp.chunk().await.context("the log stream broke")? {
        wrote |= !chunk.is_empty();
        let mut out = std::io::stdout().lock();
        match out.write_all(&chunk).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(true),
            Err(e) => return Err(e).context("cannot write to standard output"),
        }
    }
    Ok(wrote)
}

/// `jobdock run …`
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let c = a.conn.client()?;
    let req = TriggerRequest {
        env: a.env.into_iter().collect(),
        command: (!a.command.is_empty()).then_some(a.command),
        idempotency_key: None,
        callback_uri: None,
    };
    let (run, created) = c
        .trigger(&a.job, &req, a.idempotency_key.as_deref())
        .await?;
    if !created {
        eprintln!(
            "run {} was already triggered with this idempotency key",
            run.id
        );
    }
    if a.follow {
        eprintln!("run {} of job {}:", run.id, run.job);
        say_what_it_waits_for(&c, &run).await;
        copy_log(&c, &run.id, "text", true, None).await?;
        let run = wait_final(&c, &run.id).await?;
        eprintln!("{}", summary(&run));
        return Ok(ExitCode::from(exit_code(&run)));
    }
    if a.wait {
        eprintln!("waiting for run {} of job {}", run.id, run.job);
        say_what_it_waits_for(&c, &run).await;
        let run = wait_final(&c, &run.id).await?;
        print(a.output, &run, RUN_HEADERS, run_rows(&run));
        if run.status != RunStatus::Succeeded {
            eprintln!("{}", summary(&run));
            print_tail(&c, &run).await;
        }
        return Ok(ExitCode::from(exit_code(&run)));
    }
    print(a.output, &run, RUN_HEADERS, run_rows(&run));
    Ok(ExitCode::SUCCESS)
}

/// `jobdock runs …`
pub async fn runs(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let c = a.conn.client()?;
    match &a.command {
        RunsCommand::List { job, status, limit } => {
            let mut items = Vec::new();
            let mut cursor = None;
            while items.len() < *limit {
                let page = c
                    .list_runs(job.as_deref(), *status, cursor.as_deref())
                    .await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            items.truncate(*limit);
            output::print_list(a.output, &items, LIST_HEADERS, list_rows(&items));
        }
        RunsCommand::Get { run } => {
            let run = c.get_run(run).await?;
            match a.output {
                Format::Json => print(a.output, &run, &[], vec![]),
                Format::Table => output::emit(&serde_yaml_ng::to_string(&run)?),
            }
        }
        RunsCommand::Events { run } => {
            let events = c.run_events(run).await?;
            let rows = events
                .iter()
                .map(|e| {
                    vec![
                        e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        e.attempt.to_string(),
                        e.kind.as_str().to_string(),
                        e.message.clone(),
                    ]
                })
                .collect();
            output::print_list(a.output, &events, &["AT", "ATTEMPT", "EVENT", "WHAT"], rows);
        }
        RunsCommand::Rerun { run } => {
            let new = c.rerun(run).await?;
            print(a.output, &new, RUN_HEADERS, run_rows(&new));
        }
        RunsCommand::Cancel { run } => {
            let run = c.cancel_run(run).await?;
            print(a.output, &run, RUN_HEADERS, run_rows(&run));
            if !run.status.is_final() {
                eprintln!(
                    "cancelling run {}: it ends `cancelled` once its container has stopped",
                    run.id
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jobdock logs …`
pub async fn logs(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let c = a.conn.client()?;
    let format = if a.jsonl { "jsonl" } else { "text" };
    let wrote = copy_log(&c, &a.run, format, a.follow, a.tail).await?;
    if !wrote {
        let run = c.get_run(&a.run).await?;
        eprintln!("{}", why_no_output(&run));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, exit: Option<i64>) -> Run {
        Run {
            id: "r1".into(),
            job: "j".into(),
            status,
            attempt: 1,
            max_attempts: 1,
            exit_code: exit,
            oom_killed: false,
            reason: None,
            trigger: "api".into(),
            triggered_by: None,
            idempotency_key: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            next_attempt_at: None,
            queue_ms: None,
            duration_ms: None,
            attempts: vec![],
            anomalies: vec![],
            log_complete: true,
            progress: None,
            logs_url: None,
        }
    }

    #[test]
    fn exit_codes_follow_the_run() {
        assert_eq!(exit_code(&run(RunStatus::Succeeded, Some(0))), 0);
        assert_eq!(exit_code(&run(RunStatus::Failed, Some(3))), 3);
        assert_eq!(exit_code(&run(RunStatus::Failed, Some(137))), 137);
        assert_eq!(exit_code(&run(RunStatus::Failed, Some(300))), 255);
        assert_eq!(exit_code(&run(RunStatus::Failed, Some(-1))), 1);
        assert_eq!(exit_code(&run(RunStatus::Failed, None)), 2);
        assert_eq!(exit_code(&run(RunStatus::Failed, Some(0))), 2);
        assert_eq!(exit_code(&run(RunStatus::TimedOut, Some(137))), 124);
        assert_eq!(exit_code(&run(RunStatus::Cancelled, None)), 130);
        assert_eq!(exit_code(&run(RunStatus::Lost, None)), 2);
        assert_eq!(exit_code(&run(RunStatus::Skipped, None)), 2);
    }

    #[test]
    fn env_flags_need_a_name_and_an_equals_sign() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("A").is_err());
        assert!(parse_env("=b").is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(850)), "850ms");
        assert_eq!(duration(Some(12_345)), "12.3s");
        assert_eq!(duration(Some(245_000)), "4m05s");
        assert_eq!(duration(Some(7_620_000)), "2h07m");
    }
}
