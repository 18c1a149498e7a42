//! Cases on what a run receives and what the scheduler records: environment, secrets as
//! variables and as files, labels. A secret value must never show in labels or names, and in
//! file mode not in anything the scheduler stores.

use anyhow::{ensure, Context, Result};
use jobdock_backends::{labels, LaunchSpec, LogStream, RunHandle, Secret, SecretDelivery};
use secrecy::SecretString;

use super::{texts, unique_value, Ctx};

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        name: name.into(),
        value: SecretString::from(value.to_owned()),
    }
}

/// Fails if `value` shows in the run's labels or names.
async fn ensure_not_in_metadata(ctx: &Ctx, handle: &RunHandle, value: &str) -> Result<()> {
    let labels = ctx.inspector.labels(handle).await?;
    let leak = labels
        .iter()
        .find(|(k, v)| k.contains(value) || v.contains(value));
    ensure!(leak.is_none(), "secret in label {leak:?}");
    let names = ctx.inspector.names(handle).await?;
    ensure!(!names.is_empty(), "the inspector found no name");
    ensure!(
        names.iter().all(|n| !n.contains(value)),
        "secret in names {names:?}"
    );
    ensure!(!handle.backend_ref.contains(value), "secret in handle");
    Ok(())
}

/// Plain variables and secrets delivered as variables reach the process.
pub async fn env_and_env_secrets_are_delivered(ctx: Ctx) -> Result<()> {
    let token = unique_value("token");
    let mut spec = ctx.spec("echo \"greeting=$GREETING\"; echo \"token=$TOKEN\"");
    spec.env = vec![("GREETING".into(), "hello world".into())];
    spec.secrets = vec![secret("TOKEN", &token)];
    spec.secret_delivery = SecretDelivery::Env;
    let (handle, exit, lines) = ctx.run_to_end(&spec).await?;
    ensure!(exit.exit_code == Some(0), "exit {exit:?}");
    let out = texts(&lines, LogStream::Stdout);
    let want = ["greeting=hello world".to_owned(), format!("token={token}")];
    ensure!(out == want, "output {out:?}");
    ensure_not_in_metadata(&ctx, &handle, &token).await
}

/// The script of the file-secret runs: read both files, try to overwrite one, show env.
const READ_SECRETS: &str = "cat /run/secrets/TOKEN; echo; cat /run/secrets/DB_PASSWORD; echo; \
     if (echo x > /run/secrets/TOKEN) 2>/dev/null; then echo writable; else echo read-only; fi; \
     env";

fn file_spec(ctx: &Ctx, token: &str, password: &str, user: Option<&str>) -> LaunchSpec {
    let mut spec = ctx.spec(READ_SECRETS);
    spec.secrets = vec![secret("TOKEN", token), secret("DB_PASSWORD", password)];
    spec.secret_delivery = SecretDelivery::Files;
    spec.user = user.map(str::to_owned);
    spec
}

/// Secrets delivered as files are readable (by root and by an unprivileged user), not
/// writable, absent from the environment, and in nothing the scheduler stores.
pub async fn file_secrets_are_delivered_privately(ctx: Ctx) -> Result<()> {
    for user in [None, Some("65534:65534")] {
        let (token, password) = (unique_value("token"), unique_value("password"));
        let spec = file_spec(&ctx, &token, &password, user);
        let (handle, exit, lines) = ctx.run_to_end(&spec).await?;
        ensure!(
            exit.exit_code == Some(0),
            "user {user:?}: exit {exit:?}, {lines:?}"
        );
        let out = texts(&lines, LogStream::Stdout);
        ensure!(out.len() >= 3, "user {user:?}: output {out:?}");
        ensure!(
            out[..3] == [token.as_str(), password.as_str(), "read-only"],
            "user {user:?}: {out:?}"
        );
        let env = &out[3..];
        ensure!(
            env.iter()
                .all(|l| !l.contains(&token) && !l.contains(&password)),
            "secret in the environment"
        );
        let described = ctx.inspector.describe(&handle).await?;
        ensure!(
            !described.contains(&token),
            "token in the scheduler's description"
        );
        ensure!(
            !described.contains(&password),
            "password in the scheduler's description"
        );
        ensure_not_in_metadata(&ctx, &handle, &token).await?;
        ctx.backend.cleanup(&handle).await?;
    }
    Ok(())
}

/// The run carries the identity labels and the job definition's own labels.
pub async fn identity_labels_are_set(ctx: Ctx) -> Result<()> {
    let mut spec = ctx.spec("exit 0");
    spec.labels.insert("team".into(), "data".into());
    let handle = ctx.backend.launch(&spec).await?;
    let found = ctx.inspector.labels(&handle).await?;
    for (key, value) in spec.identity_labels() {
        let got = found
            .get(&key)
            .with_context(|| format!("label {key} missing"))?;
        ensure!(*got == value, "label {key} = {got:?}, want {value:?}");
    }
    ensure!(found.get(labels::INSTALLATION) == Some(&ctx.installation_id));
    ensure!(found.get("team").map(String::as_str) == Some("data"));
    ctx.wait(&handle).await?;
    Ok(())
}
