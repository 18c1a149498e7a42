//! `jobdock state …`: a job's state between runs — read it, set it, list its versions and
//! revert to one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use jobdock_client::types::StateVersion;

use super::client::{every_page, read_file, ClientArgs};
use super::output::{self, ago, clip, emit};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print a job's state (JSON; `{}` before any is written). Its version goes to standard
    /// error.
    Get {
        /// The job.
        job: String,
    },
    /// Replace a job's state with a JSON object from a file (`-` for standard input).
    Set {
        /// The job.
        job: String,
        /// The file holding the new state.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only if the state is still at this version (as `state get` printed it).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<i64>,
    },
    /// The versions of a job's state, newest first (the newest 100 are kept).
    Versions {
        /// The job.
        job: String,
    },
    /// Make an earlier version's content the job's state again (as a new version).
    Revert {
        /// The job.
        job: String,
        /// The version to go back to.
        #[arg(value_name = "VERSION")]
        to: i64,
    },
}

const VERSION_HEADERS: &[&str] = &["VERSION", "CREATED", "BY", "RUN", "STATE"];

fn version_rows(versions: &[StateVersion]) -> Vec<Vec<String>> {
    versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                ago(v.created_at),
                v.created_by.clone().unwrap_or_else(|| "-".into()),
                v.run_id.clone().unwrap_or_else(|| "-".into()),
                clip(&serde_json::Value::Object(v.state.clone()).to_string(), 60),
            ]
        })
        .collect()
}

/// `jobdock state …`
pub async fn state(a: ClientArgs<StateCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        StateCommand::Get { job } => {
            let (state, version) = c.get_state(job).await?;
            let json = serde_json::to_string_pretty(&state).expect("JSON values serialise");
            eprintln!("version {version}");
            emit(&format!("{json}\n"));
        }
        StateCommand::Set {
            job,
            file,
            if_version,
        } => {
            let text = read_file(file)?;
            let state: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("{} does not hold a JSON object", file.display()))?;
            let version = c.put_state(job, &state, *if_version).await?;
            eprintln!("job {job}'s state is now version {version}");
        }
        StateCommand::Versions { job } => {
            let all = every_page(|cursor| {
                let c = c.clone();
                let job = job.clone();
                async move { c.state_versions(&job, cursor.as_deref()).await }
            })
            .await?;
            output::print_list(a.output, &all, VERSION_HEADERS, version_rows(&all));
        }
        StateCommand::Revert { job, to } => {
            let new = c.revert_state(job, *to).await?;
            eprintln!("job {job}'s state is version {to}'s again, as version {new}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
