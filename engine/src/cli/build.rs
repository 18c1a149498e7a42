//! `jobdock build` and `jobdock deploy`: a job's project (as `jobdock init` writes it) to an
//! image through the Docker engine's API, with the build's output shown as it comes, then
//! to a job.
//!
//! `job.yaml` is the job's definition with one difference: `secrets` lists the *names* of
//! the secrets the script needs, never values. `deploy` creates or replaces the job with
//! the image it built, leaves the stored secrets alone, and says which named ones are not
//! set yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bollard::auth::DockerCredentials;
use bollard::Docker;
use clap::Args;
use futures::StreamExt as _;
use jobdock_client::types::JobSpec;

use super::client::Connection;

/// What `build` needs.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project's directory (holding `Dockerfile` and `job.yaml`).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The image's reference; by default `<name>:<UTC time>` (with `--registry`,
    /// `<registry>/<name>:<UTC time>`), also tagged `latest`.
    #[arg(long, short = 't', value_name = "IMAGE")]
    tag: Option<String>,
    /// A registry (`host[:port][/namespace]`) to push the image to; its credentials come
    /// from `JOBDOCK_REGISTRY_USER` and `JOBDOCK_REGISTRY_PASSWORD`.
    #[arg(long, env = "JOBDOCK_REGISTRY", value_name = "REGISTRY")]
    registry: Option<String>,
    /// A build argument, `KEY=VALUE` (e.g. `BASE=jobdock/python:3.11`); repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
}

/// `jobdock deploy …`
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    conn: Connection,
}

/// The job file of a project, split into the job and the secret names it declares.
fn read_job_file(dir: &Path) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    let path = dir.join("job.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is {} a job's project?)",
            path.display(),
            dir.display()
        )
    })?;
    let mut job: serde_json::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let names = match job.as_object_mut().and_then(|o| o.remove("secrets")) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .context("job.yaml: `secrets` lists secret names (strings), never values")?,
        Some(_) => bail!(
            "job.yaml: `secrets` lists the names of the secrets the script needs; set their \
             values with `jobdock secrets set JOB NAME`, never in the file"
        ),
    };
    if job.get("name").and_then(|n| n.as_str()).is_none() {
        bail!("job.yaml has no `name`");
    }
    Ok((job, names))
}

/// The project's files as a tar archive, as the build's context: everything but what
/// `.dockerignore` leaves out.
fn context(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let ignore = Ignore::read(dir)?;
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if rel != "Dockerfile" && ignore.excludes(&rel) {
                continue;
            }
            if e.file_type()?.is_dir() {
                archive.append_dir(&rel, &path)?;
                stack.push(path);
            } else {
                archive
                    .append_path_with_name(&path, &rel)
                    .with_context(|| format!("cannot add {} to the build", path.display()))?;
            }
        }
    }
    Ok(archive.into_inner()?)
}

/// The patterns of a `.dockerignore`. Written here because no maintained crate implements
/// Docker's rules (moby/patternmatcher); this covers their common forms — globs with `*`,
/// `?` and `**`, a directory excluding what it holds, `!` re-including, the last match
/// winning — and errs towards sending a file rather than dropping one the build needs.
struct Ignore(Vec<(bool, glob::Pattern)>);

impl Ignore {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let Ok(text) = std::fs::read_to_string(dir.join(".dockerignore")) else {
            return Ok(Self(Vec::new()));
        };
        let mut rules = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let pattern = glob::Pattern::new(pattern.trim_end_matches('/'))
                .with_context(|| format!(".dockerignore: `{line}` is not a pattern"))?;
            rules.push((keep, pattern));
        }
        Ok(Self(rules))
    }

    fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (keep, pattern) in &self.0 {
            // A pattern matching a directory covers what is inside it.
            let mut prefix = String::new();
            let hit = rel.split('/').any(|part| {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                pattern.matches(&prefix)
            });
            if hit {
                excluded = !keep;
            }
        }
        excluded
    }
}

fn credentials() -> Option<DockerCredentials> {
    let username = std::env::var("JOBDOCK_REGISTRY_USER").ok()?;
    Some(DockerCredentials {
        username: Some(username),
        password: std::env::var("JOBDOCK_REGISTRY_PASSWORD").ok(),
        ..Default::default()
    })
}

/// Builds (and pushes, with a registry) the project's image; its reference.
async fn build_image(a: &BuildArgs, name: &str) -> anyhow::Result<String> {
    let docker = Docker::connect_with_defaults()
        .context("cannot reach the Docker engine (DOCKER_HOST or /var/run/docker.sock)")?
        .negotiate_version()
        .await
        .context("the Docker engine does not answer")?;
    let repo = match &a.registry {
        Some(r) => format!("{}/{name}", r.trim_end_matches('/')),
        None => name.to_string(),
    };
    let tag = a
        .tag
        .clone()
        .unwrap_or_else(|| format!("{repo}:{}", chrono::Utc::now().format("%Y%m%d%H%M%S")));
    let mut args = HashMap::new();
    for kv in &a.build_args {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--build-arg `{kv}` is not KEY=VALUE"))?;
        args.insert(k.to_string(), v.to_string());
    }
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&args)
        .build();
    let body = bollard::body_full(context(&a.dir)?.into());
    eprintln!("building {tag} from {}", a.dir.display());
    let mut stream = docker.build_image(options, None, Some(body));
    while let Some(item) = stream.next().await {
        let info = item.context("the build failed")?;
        if let Some(text) = info.stream {
            eprint!("{text}");
        }
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            bail!("the build failed: {e}");
        }
    }
    let latest = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(&repo)
        .tag("latest")
        .build();
    docker
        .tag_image(&tag, Some(latest))
        .await
        .context("cannot tag the image `latest`")?;
    if a.registry.is_some() {
        push(&docker, &tag).await?;
    }
    Ok(tag)
}

async fn push(docker: &Docker, tag: &str) -> anyhow::Result<()> {
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let options = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(version)
        .build();
    eprintln!("pushing {tag}");
    let mut stream = docker.push_image(repo, Some(options), credentials());
    while let Some(item) = stream.next().await {
        let info = item.context("the push failed")?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            bail!("the push failed: {e}");
        }
        if let Some(status) = &info.status {
            eprintln!("{status}");
        }
    }
    Ok(())
}

/// `jobdock build`
pub async fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let (job, _) = read_job_file(&a.dir)?;
    let name = job["name"].as_str().unwrap_or_default();
    let tag = build_image(&a, name).await?;
    println!("{tag}");
    Ok(ExitCode::SUCCESS)
}

/// `jobdock deploy`
pub async fn deploy(a: DeployArgs) -> anyhow::Result<ExitCode> {
    let c = a.conn.client()?;
    let (mut job, names) = read_job_file(&a.build.dir)?;
    let name = job["name"].as_str().unwrap_or_default().to_string();
    // The job file is checked before the build, so that a typo costs no build.
    serde_json::from_value::<JobSpec>(job.clone()).context("job.yaml is not a valid job")?;
    let tag = build_image(&a.build, &name).await?;
    job["image"] = serde_json::Value::String(tag.clone());
    let spec: JobSpec = serde_json::from_value(job).context("job.yaml is not a valid job")?;
    let saved = match c.get_job(&name).await {
        Ok(_) => c.replace_job(&spec).await?,
        Err(jobdock_client::Error::Api(p)) if p.status == 404 => c.create_job(&spec).await?,
        Err(e) => return Err(e.into()),
    };
    eprintln!("job {name} runs {tag}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !saved.secret_names.contains(n))
        .collect();
    for n in &missing {
        eprintln!("secret {n} is not set: jobdock secrets set {name} {n}");
    }
    println!("{tag}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(rules: &str) -> (tempfile::TempDir, Ignore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerignore"), rules).unwrap();
        let i = Ignore::read(dir.path()).unwrap();
        (dir, i)
    }

    #[test]
    fn dockerignore_excludes_globs_directories_and_re_includes() {
        let (_d, i) = ignore("# comment\n.git\n**/__pycache__\n*.log\ntests/\n!tests/keep.txt\n");
        for gone in [
            ".git",
            ".git/HEAD",
            "src/a/__pycache__/x.pyc",
            "build.log",
            "tests/t.py",
        ] {
            assert!(i.excludes(gone), "{gone} sent");
        }
        for kept in [
            "src/a/main.py",
            "Dockerfile",
            "logs/readme",
            "tests/keep.txt",
        ] {
            assert!(!i.excludes(kept), "{kept} left out");
        }
    }

    #[test]
    fn the_job_file_names_secrets_and_never_holds_values() {
        let dir = tempfile::tempdir().unwrap();
        let write = |t: &str| std::fs::write(dir.path().join("job.yaml"), t).unwrap();
        write("name: a\nimage: a:latest\nsecrets: [TOKEN, KEY]\n");
        let (job, names) = read_job_file(dir.path()).unwrap();
        assert_eq!(names, ["TOKEN", "KEY"]);
        assert!(job.get("secrets").is_none());
        write("name: a\nimage: a:latest\nsecrets:\n  TOKEN: s3cret\n");
        let err = read_job_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("never in the file"), "{err}");
        assert!(!err.contains("s3cret"));
    }
}
