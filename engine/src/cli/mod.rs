//! The `jobdock` command line: `serve` and the offline `keys` commands run the engine; every
//! other command is a client of a running engine's API (`JOBDOCK_URL`, `JOBDOCK_TOKEN`).

mod build;
mod client;
mod init;
mod ops;
mod output;
mod runs;
mod state;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{ServeArgs, Settings, StoreArgs, StoreSettings};

/// Jobdock: run containerised data syncs on demand, safely.
#[derive(Debug, Parser)]
#[command(name = "jobdock", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the service.
    Serve(Box<ServeArgs>),
    /// Manage the master keys that seal secrets (works on the database directly).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Make a new admin token directly in the database, when every admin token is lost.
    ///
    /// Run it where the engine's data directory (or `DATABASE_URL`) is; the token is printed
    /// once and the audit log records the recovery.
    RecoverAdmin(StoreArgs),
    /// Write a new job's project (script, tests, Dockerfile, job.yaml) to `./NAME`.
    Init(init::InitArgs),
    /// Build a job's project (from `jobdock init`) into an image through the Docker engine.
    Build(build::BuildArgs),
    /// Build a job's project, push its image when a registry is given, and create or update
    /// the job from its job.yaml (stored secrets stay as they are).
    Deploy(build::DeployArgs),
    /// Register, list, show and delete jobs.
    Jobs(client::ClientArgs<client::JobsCommand>),
    /// Set and remove job secrets.
    Secrets(client::ClientArgs<client::SecretsCommand>),
    /// Create, list and revoke API tokens.
    Tokens(client::ClientArgs<client::TokensCommand>),
    /// Show the audit log.
    Audit(client::ClientArgs<client::AuditCommand>),
    /// Create, list, test and delete alert channels, and see their deliveries.
    Channels(client::ClientArgs<ops::ChannelsCommand>),
    /// List anomalies and close them.
    Anomalies(client::ClientArgs<ops::AnomaliesCommand>),
    /// List named locks with their holders and waiters, and set their capacity.
    Locks(client::ClientArgs<ops::LocksCommand>),
    /// A job's state between runs: read, set, list versions, revert.
    State(client::ClientArgs<state::StateCommand>),
    /// Trigger a run of a job; with `--wait` or `--follow`, exit with its exit code.
    Run(runs::RunArgs),
    /// List, show and cancel runs.
    Runs(runs::RunsArgs),
    /// Print a run's log; with `-f`, follow it until the run ends.
    Logs(runs::LogsArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a fresh random master key (base64 of 32 bytes).
    Generate,
    /// Re-seal every secret under the first key of the configured ring.
    ///
    /// Put the new key first and the old ones after it (`JOBDOCK_MASTER_KEY=new,old`), run
    /// this once, then drop the old keys from every replica's configuration.
    Rotate(StoreArgs),
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    // As `Cli::parse()` does, keeping the matches: they tell a flag from its variable.
    let matches = Cli::command().get_matches();
    let cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, invoked(&matches)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The matches of the (sub)command that was invoked, e.g. of `keys rotate`.
fn invoked(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => invoked(sub),
        None => matches,
    }
}

async fn run(command: Command, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let settings = Settings::from_args(&args, matches)?;
            crate::telemetry::init(settings.log_format, &settings.log);
            crate::startup::serve(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Generate) => {
            output::emit(&format!("{}\n", crate::crypto::KeyRing::generate_key()?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate(args)) => {
            let settings = StoreSettings::from_args(&args, matches)?;
            let store = crate::startup::open_store(&settings).await?;
            let (ring, _) = crate::service::keys::load(&store, &settings.master_key, false).await?;
            let n = crate::service::keys::rotate(&store, &ring).await?;
            output::emit(&format!(
                "re-sealed {n} secret value(s) under master key {}\n",
                ring.primary_id()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::RecoverAdmin(args) => {
            let settings = StoreSettings::from_args(&args, matches)?;
            let store = crate::startup::open_store(&settings).await?;
            let t = crate::service::tokens::recover_admin(&store).await?;
            store.close().await;
            eprintln!(
                "created admin token {} ({}); its value is shown only now:",
                t.id, t.name
            );
            output::emit(&format!("{}\n", t.token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(a) => init::init(a),
        Command::Build(a) => build::build(a).await,
        Command::Deploy(a) => build::deploy(a).await,
        Command::Jobs(a) => client::jobs(a).await,
        Command::Secrets(a) => client::secrets(a).await,
        Command::Tokens(a) => client::tokens(a).await,
        Command::Audit(a) => client::audit(a).await,
        Command::Channels(a) => ops::channels(a).await,
        Command::Anomalies(a) => ops::anomalies(a).await,
        Command::Locks(a) => ops::locks(a).await,
        Command::State(a) => state::state(a).await,
        Command::Run(a) => runs::run(a).await,
        Command::Runs(a) => runs::runs(a).await,
        Command::Logs(a) => runs::logs(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition only when that command is parsed; this checks
    /// every subcommand at once (two arguments of one name panic at run time otherwise).
    #[test]
    fn every_command_is_well_formed() {
        Cli::command().debug_assert();
    }
}
