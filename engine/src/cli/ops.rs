//! The operator's commands: alert channels (`channels`), anomalies (`anomalies`) and named
//! locks (`locks`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use jobdock_client::types::{Anomaly, Channel, Delivery, Lock, NewChannel};

use super::client::{every_page, read_file, ClientArgs};
use super::output::{self, ago, clip, print, Format};

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Create a channel from a YAML or JSON file (`-` for standard input): `name`, `kind`
    /// (webhook or slack), `url`, optional `signing_secret`, `description`, `subscribe`.
    /// A webhook's signing secret is printed once.
    Create {
        /// The channel file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List channels (URLs as scheme and host only).
    List,
    /// Delete a channel with its undelivered alerts.
    Delete {
        /// The channel's name.
        name: String,
    },
    /// Send a test alert through a channel.
    Test {
        /// The channel's name.
        name: String,
    },
    /// A channel's alerts, newest first, with how each delivery went.
    Deliveries {
        /// The channel's name.
        name: String,
    },
}

const CHANNEL_HEADERS: &[&str] = &["NAME", "KIND", "URL", "SIGNED", "SUBSCRIBES", "CREATED"];

fn channel_rows(channels: &[Channel]) -> Vec<Vec<String>> {
    channels
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                format!("{:?}", c.kind).to_lowercase(),
                c.url.clone(),
                c.signed.to_string(),
                c.subscribe
                    .as_ref()
                    .map(|s| s.jobs.clone())
                    .unwrap_or_else(|| "-".into()),
                ago(c.created_at),
            ]
        })
        .collect()
}

const DELIVERY_HEADERS: &[&str] = &["ID", "EVENT", "JOB", "STATUS", "ATTEMPTS", "AT", "LAST"];

fn delivery_rows(deliveries: &[Delivery]) -> Vec<Vec<String>> {
    deliveries
        .iter()
        .map(|d| {
            let last = d.attempts.last().map(|a| match (a.http_status, &a.error) {
                (_, Some(e)) => clip(e, 50),
                (Some(s), None) => format!("HTTP {s}"),
                (None, None) => "-".into(),
            });
            vec![
                d.id.clone(),
                d.event.clone(),
                d.job.clone().unwrap_or_else(|| "-".into()),
                format!("{:?}", d.status).to_lowercase(),
                d.attempts.len().to_string(),
                ago(d.occurred_at),
                last.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

/// `jobdock channels …`
pub async fn channels(a: ClientArgs<ChannelsCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        ChannelsCommand::Create { file } => {
            let text = read_file(file)?;
            let new: NewChannel = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{} is not a valid channel file", file.display()))?;
            let created = c.create_channel(&new).await?;
            match a.output {
                Format::Json => print(a.output, &created, &[], vec![]),
                Format::Table => {
                    let rows = channel_rows(std::slice::from_ref(&created.channel));
                    output::emit(&output::table(CHANNEL_HEADERS, &rows));
                    if let Some(secret) = &created.signing_secret {
                        eprintln!("its signing secret is shown only now:");
                        output::emit(&format!("{secret}\n"));
                    }
                }
            }
        }
        ChannelsCommand::List => {
            let c = &c;
            let all = every_page(|cursor| async move { c.list_channels(cursor.as_deref()).await })
                .await?;
            output::print_list(a.output, &all, CHANNEL_HEADERS, channel_rows(&all));
        }
        ChannelsCommand::Delete { name } => {
            c.delete_channel(name).await?;
            eprintln!("deleted channel {name}");
        }
        ChannelsCommand::Test { name } => {
            let d = c.test_channel(name).await?;
            print(
                a.output,
                &d,
                DELIVERY_HEADERS,
                delivery_rows(std::slice::from_ref(&d)),
            );
            eprintln!("sent a test alert through {name}; `jobdock channels deliveries {name}` shows how it went");
        }
        ChannelsCommand::Deliveries { name } => {
            let page = c.deliveries(name, None).await?;
            print(
                a.output,
                &page,
                DELIVERY_HEADERS,
                delivery_rows(&page.items),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum AnomaliesCommand {
    /// Anomalies, newest first.
    List {
        /// Only those still open (or, with `--open=false`, only closed ones).
        #[arg(long)]
        open: Option<bool>,
        /// Only those of this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Close an anomaly someone has looked at.
    Close {
        /// The anomaly's id.
        id: i64,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

const ANOMALY_HEADERS: &[&str] = &["ID", "KIND", "JOB", "RUN", "OPEN", "RAISED", "MESSAGE"];

fn anomaly_rows(anomalies: &[Anomaly]) -> Vec<Vec<String>> {
    anomalies
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                x.kind.as_str().to_string(),
                x.job.clone(),
                x.run_id.clone(),
                x.open.to_string(),
                ago(x.raised_at),
                clip(&x.message, 80),
            ]
        })
        .collect()
}

/// `jobdock anomalies …`
pub async fn anomalies(a: ClientArgs<AnomaliesCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        AnomaliesCommand::List { open, job } => {
            let page = c.anomalies(*open, job.as_deref(), None).await?;
            print(a.output, &page, ANOMALY_HEADERS, anomaly_rows(&page.items));
        }
        AnomaliesCommand::Close { id, reason } => {
            let x = c.close_anomaly(*id, reason.as_deref()).await?;
            print(
                a.output,
                &x,
                ANOMALY_HEADERS,
                anomaly_rows(std::slice::from_ref(&x)),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Named locks with their holders and waiters.
    List,
    /// Set how many runs may hold a lock at once.
    Set {
        /// The lock's key.
        key: String,
        /// Runs that may hold it at once.
        capacity: i64,
    },
}

const LOCK_HEADERS: &[&str] = &["KEY", "CAPACITY", "HELD BY", "WAITING"];

fn lock_rows(locks: &[Lock]) -> Vec<Vec<String>> {
    let runs = |r: &[jobdock_client::types::LockRun]| match r.is_empty() {
        true => "-".to_string(),
        false => r
            .iter()
            .map(|x| format!("{} ({})", x.run_id, x.job))
            .collect::<Vec<_>>()
            .join(", "),
    };
    locks
        .iter()
        .map(|l| {
            vec![
                l.key.clone(),
                l.capacity.to_string(),
                runs(&l.holders),
                runs(&l.waiters),
            ]
        })
        .collect()
}

/// `jobdock locks …`
pub async fn locks(a: ClientArgs<LocksCommand>) -> anyhow::Result<ExitCode> {
    let c = a.client()?;
    match &a.command {
        LocksCommand::List => {
            let all = c.list_locks().await?;
            output::print_list(a.output, &all, LOCK_HEADERS, lock_rows(&all));
        }
        LocksCommand::Set { key, capacity } => {
            let l = c.set_lock_capacity(key, *capacity).await?;
            print(
                a.output,
                &l,
                LOCK_HEADERS,
                lock_rows(std::slice::from_ref(&l)),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
