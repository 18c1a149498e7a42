//! Client commands: each one call (or a few) to the engine's API through `jobdock-client`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use jobdock_client::types::{Job, JobSpec, NewToken, Scope, TokenInfo};
use jobdock_client::Client;

use super::output::{self, print, Format};

/// Where the engine is and how to talk to it; the same flags as every client command.
#[derive(Debug, Args)]
pub struct Connection {
    /// The engine's base URL.
    #[arg(
        long,
        global = true,
        env = "JOBDOCK_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API token (the raw value).
    #[arg(long, global = true, env = "JOBDOCK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Connection {
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = self
            .token
            .as_deref()
            .context("no API token: set JOBDOCK_TOKEN (or pass --token)")?;
        Ok(Client::new(&self.url, token)?)
    }
}

/// The connection, output format and subcommand of a client command.
#[derive(Debug, Args)]
pub struct ClientArgs<C: Subcommand> {
    #[command(flatten)]
    conn: Connection,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t)]
    pub(super) output: Format,
    #[command(subcommand)]
    pub(super) command: C,
}

impl<C: Subcommand> ClientArgs<C> {
    pub(super) fn client(&self) -> anyhow::Result<Client> {
        self.conn.client()
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Register a job from a YAML or JSON file (`-` for standard input).
    Create {
        /// The job file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Create the job, or replace it when it exists (secrets in the file replace stored ones;
    /// without `secrets` the stored ones stay).
    Apply {
        /// The job file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List jobs.
    List,
    /// Show one job.
    Get {
        /// The job's name.
        name: String,
        /// Print its definition as a job file that `jobs apply -f` takes back unchanged
        /// (secret values stay in the engine; the file lists their names in a comment).
        #[arg(long)]
        export: bool,
    },
    /// Run counts and durations of a job (median, p90, the latest runs).
    Stats {
        /// The job's name.
        name: String,
    },
    /// Pause a job's schedule: it fires nothing until resumed (triggers still work).
    Pause {
        /// The job's name.
        name: String,
    },
    /// Resume a job's paused schedule.
    Resume {
        /// The job's name.
        name: String,
    },
    /// Delete a job (its runs stay readable).
    Delete {
        /// The job's name.
        name: String,
        /// Cancel its active runs first.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a secret; the value is read from standard input or a hidden prompt, never argv.
    Set {
        /// The job's name.
        job: String,
        /// The secret's name, e.g. `API_TOKEN`.
        key: String,
    },
    /// Remove a secret.
    Delete {
        /// The job's name.
        job: String,
        /// The secret's name.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print its value (shown only once).
    Create {
        /// A name for people, e.g. `adf-prod`.
        #[arg(long)]
        name: String,
        /// admin, operator, trigger or read.
        #[arg(long)]
        scope: Scope,
        /// Restrict the token to jobs matching this pattern (repeatable), e.g. `customer-a-*`.
        #[arg(long = "job")]
        jobs: Vec<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token.
    Revoke {
        /// The token's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest entries.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn read_spec(file: &PathBuf) -> anyhow::Result<JobSpec> {
    Ok(read_spec_noting_pause(file)?.0)
}

/// A job file, and whether it says `schedule.paused` at all (left out, it reads as false).
fn read_spec_noting_pause(file: &PathBuf) -> anyhow::Result<(JobSpec, bool)> {
    let text = read_file(file)?;
    // YAML is a superset of JSON, so one parser reads both.
    let spec = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a valid job file", file.display()))?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let says_paused = value
        .get("schedule")
        .and_then(|s| s.get("paused"))
        .is_some();
    Ok((spec, says_paused))
}

/// A paused schedule stays paused when the applied file does not say `paused` itself:
/// applying a file must not start a schedule someone stopped.
fn keep_pause(stored: &Job, spec: &mut JobSpec, says_paused: bool) {
    let was_paused = stored.schedule.as_ref().is_some_and(|s| s.paused);
    if let (true, false, Some(schedule)) = (was_paused, says_paused, spec.schedule.as_mut()) {
        schedule.paused = true;
        eprintln!(
            "note: the schedule of {} stays paused (the file does not say `paused`)",
            spec.name
        );
    }
}

/// A job's definition as a job file: YAML with the defaults written out, and the names of
/// its secrets in a comment.
fn export(job: &Job) -> anyhow::Result<String> {
    let mut text = String::new();
    if !job.secret_names.is_empty() {
        text.push_str(&format!(
            "# secrets (values stay in the engine; set with `jobdock secrets set {} NAME`): {}\n",
            job.name,
            job.secret_names.join(", ")
        ));
    }
    text.push_str(&serde_yaml_ng::to_string(&job.to_spec())?);
    Ok(text)
}

/// Every item of a paged list, fetching page after page with `fetch(cursor)`.
pub(super) async fn every_page<T, F, Fut>(fetch: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(Option<String>) -> Fut,
    Fut:
        std::future::Future<Output = Result<jobdock_client::types::Page<T>, jobdock_client::Error>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(cursor).await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// A file's text, or standard input's for `-`.
pub(super) fn read_file(file: &PathBuf) -> anyhow::Result<String> {
    Ok(if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    })
}

fn job_rows(jobs: &[Job]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            vec![
                j.name.clone(),
                j.image.clone(),
                j.backend.as_str().to_string(),
                j.schedule
                    .as_ref()
                    .map(|s| match s.paused {
                        true => format!("{} (paused)", s.cron),
                        false => s.cron.clone(),
                    })
                    .unwrap_or_else(|| "-".into()),
                last_run(j),
                next_run(j),
                j.secret_names.len().to_string(),
            ]
        })
        .collect()
}

const JOB_HEADERS: &[&str] = &[
    "NAME", "IMAGE", "BACKEND", "SCHEDULE", "LAST", "NEXT", "SECRETS",
];

/// The job's latest run: its status and when it ended (or was triggered, while it goes on).
fn last_run(j: &Job) -> String {
    let Some(r) = &j.last_run else {
        return "-".into();
    };
    let at = r.finished_at.unwrap_or(r.created_at);
    format!("{} {}", r.status, super::output::ago(at))
}

/// When the job's schedule fires next, in its own time zone and from now.
fn next_run(j: &Job) -> String {
    let (Some(s), Some(next)) = (&j.schedule, j.next_fire_times.first()) else {
        return "-".into();
    };
    let local = match s.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => next
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => next.format("%Y-%m-%d %H:%M UTC").to_string(),
    };
    format!("{local} ({})", super::output::until(*next))
}

/// `jobdock jobs …`
pub async fn jobs(a: ClientArgs<JobsCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        JobsCommand::Create { file } => {
            let job = c.create_job(&read_spec(file)?).await?;
            print(
                a.output,
                &job,
                JOB_HEADERS,
                job_rows(std::slice::from_ref(&job)),
            );
        }
        JobsCommand::Apply { file } => {
            let (mut spec, says_paused) = read_spec_noting_pause(file)?;
            let job = match c.get_job(&spec.name).await {
                Ok(stored) => {
                    keep_pause(&stored, &mut spec, says_paused);
                    c.replace_job(&spec).await?
                }
                Err(e) if e.status() == Some(404) => c.create_job(&spec).await?,
                Err(e) => return Err(e.into()),
            };
            print(
                a.output,
                &job,
                JOB_HEADERS,
                job_rows(std::slice::from_ref(&job)),
            );
        }
        JobsCommand::List => {
            let all = c.all_jobs().await?;
            output::print_list(a.output, &all, JOB_HEADERS, job_rows(&all));
        }
        JobsCommand::Get { name, export: true } => {
            let job = c.get_job(name).await?;
            output::emit(&export(&job)?);
        }
        JobsCommand::Get {
            name,
            export: false,
        } => {
            let job = c.get_job(name).await?;
            match a.output {
                Format::Json => print(a.output, &job, &[], vec![]),
                Format::Table => output::emit(&serde_yaml_ng::to_string(&job)?),
            }
        }
        JobsCommand::Stats { name } => {
            let s = c.job_stats(name).await?;
            let ms = |v: Option<i64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
            let row = vec![
                s.job.clone(),
                s.count.to_string(),
                s.success_count.to_string(),
                ms(s.median_duration_ms),
                ms(s.p90_duration_ms),
                ms(s.median_start_latency_ms),
            ];
            let headers = ["JOB", "RUNS", "SUCCEEDED", "MEDIAN", "P90", "START LATENCY"];
            print(a.output, &s, &headers, vec![row]);
        }
        JobsCommand::Pause { name } | JobsCommand::Resume { name } => {
            let paused = matches!(a.command, JobsCommand::Pause { .. });
            let job = c.get_job(name).await?;
            if job.schedule.is_none() {
                bail!("job {name} has no schedule to pause or resume");
            }
            let patch = serde_json::json!({ "schedule": { "paused": paused } });
            let job = c.patch_job(name, &patch).await?;
            print(
                a.output,
                &job,
                JOB_HEADERS,
                job_rows(std::slice::from_ref(&job)),
            );
        }
        JobsCommand::Delete { name, force } => {
            c.delete_job(name, *force).await?;
            eprintln!("deleted job {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_secret_value(job: &str, key: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let v = rpassword::prompt_password(format!("value of {key} for {job} (hidden): "))?;
        return Ok(v);
    }
    let mut v = String::new();
    stdin.lock().read_to_string(&mut v)?;
    // `echo value | jobdock secrets set` adds a newline that is not part of the secret.
    if v.ends_with('\n') {
        v.pop();
        if v.ends_with('\r') {
            v.pop();
        }
    }
    if v.is_empty() {
        bail!("no value on standard input");
    }
    Ok(v)
}

/// `jobdock secrets …`
pub async fn secrets(a: ClientArgs<SecretsCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        SecretsCommand::Set { job, key } => {
            let value = read_secret_value(job, key)?;
            c.set_secret(job, key, &value).await?;
            eprintln!("set secret {key} of job {job}");
        }
        SecretsCommand::Delete { job, key } => {
            c.delete_secret(job, key).await?;
            eprintln!("removed secret {key} of job {job}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_rows(tokens: &[TokenInfo]) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.scope.as_str().to_string(),
                t.jobs
                    .as_ref()
                    .map(|j| j.join(","))
                    .unwrap_or_else(|| "*".into()),
                t.last_used_at
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

/// `jobdock tokens …`
pub async fn tokens(a: ClientArgs<TokensCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        TokensCommand::Create { name, scope, jobs } => {
            let new = NewToken {
                name: name.clone(),
                scope: *scope,
                jobs: (!jobs.is_empty()).then(|| jobs.clone()),
            };
            let t = c.create_token(&new).await?;
            match a.output {
                Format::Json => print(a.output, &t, &[], vec![]),
                Format::Table => {
                    eprintln!(
                        "created token {} ({}, scope {}); its value is shown only now:",
                        t.id,
                        t.name,
                        t.scope.as_str()
                    );
                    output::emit(&format!("{}\n", t.token));
                }
            }
        }
        TokensCommand::List => {
            let c = &c;
            let all =
                every_page(|cursor| async move { c.list_tokens(cursor.as_deref()).await }).await?;
            output::print_list(
                a.output,
                &all,
                &["ID", "NAME", "SCOPE", "JOBS", "LAST USED"],
                token_rows(&all),
            );
        }
        TokensCommand::Revoke { id } => {
            c.revoke_token(id).await?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jobdock audit …`
pub async fn audit(a: ClientArgs<AuditCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    let AuditCommand::List { limit } = &a.command;
    let mut items = Vec::new();
    let mut cursor = None;
    while items.len() < *limit {
        let page = c.audit(cursor.as_deref()).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    items.truncate(*limit);
    let rows = items
        .iter()
        .map(|e| {
            vec![
                e.at.to_rfc3339(),
                e.token_name.clone().unwrap_or_else(|| "-".into()),
                e.action.clone(),
                e.target.clone(),
            ]
        })
        .collect();
    output::print_list(a.output, &items, &["AT", "TOKEN", "ACTION", "TARGET"], rows);
    Ok(ExitCode::SUCCESS)
}
