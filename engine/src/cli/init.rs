//! `jobdock init NAME`: writes a new job's project from a template embedded in the binary,
//! so that it works from any directory with the binary alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use include_dir::{include_dir, Dir};

static PYTHON_JOB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates/python-job");
static SINGER_JOB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates/singer-job");

/// `jobdock init …`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The job's name (`[a-z0-9-]`, as a job name); the project is written to `./NAME`.
    name: String,
    /// The kind of project.
    #[arg(long, value_enum, default_value_t)]
    template: Template,
    /// Write the project here instead of `./NAME`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The project templates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// A Python script on Jobdock's base image, with the SDK.
    #[default]
    Python,
    /// A Singer tap piped into a Singer target (`tap | target`), run by the SDK's
    /// `jobdock.singer`, with the job's state as the tap's `--state`.
    Singer,
}

impl Template {
    fn dir(self) -> &'static Dir<'static> {
        match self {
            Self::Python => &PYTHON_JOB,
            Self::Singer => &SINGER_JOB,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Python => "Python",
            Self::Singer => "Singer pipeline",
        }
    }
}

/// What `jobdock init` prints after writing a project: the next commands.
fn next_steps(template: Template, dir: &Path, name: &str, files: usize) -> String {
    let configure = match template {
        Template::Python => String::new(),
        Template::Singer => format!(
            "    # first: the tap and target in tap-requirements.txt and \
             target-requirements.txt,\n    \
             # their settings (TAP, TAP_CONFIG, TAP_SECRETS, TARGET, TARGET_CONFIG) in \
             {dir}/job.yaml\n",
            dir = dir.display()
        ),
    };
    format!(
        "wrote {files} files to {dir}: a {kind} job named {name}. Next:\n\n\
         {configure}    \
         cd {dir} && jobdock deploy\n    \
         jobdock secrets set {name} SOURCE_TOKEN   # once: the {what}'s secret\n    \
         jobdock run {name} --follow\n\n\
         (deploy builds on jobdock/python:3.11; templates/base-image/build in Jobdock's \
         repository makes it)",
        dir = dir.display(),
        kind = template.kind(),
        what = match template {
            Template::Python => "script",
            Template::Singer => "tap",
        },
    )
}

/// The template's placeholders and their values. Plain replacement: the templates hold two
/// placeholders and no logic, which a template engine would only obscure.
fn fill(text: &str, name: &str, module: &str) -> String {
    text.replace("{{name}}", name).replace("{{module}}", module)
}

/// Writes every file of `dir` under `to`, placeholders filled in paths and contents.
fn write(dir: &Dir<'_>, to: &Path, name: &str, module: &str) -> anyhow::Result<usize> {
    let mut written = 0;
    for file in dir.files() {
        let path = to.join(fill(&file.path().to_string_lossy(), name, module));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let contents = match file.contents_utf8() {
            Some(text) => fill(text, name, module).into_bytes(),
            None => file.contents().to_vec(),
        };
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    for sub in dir.dirs() {
        written += write(sub, to, name, module)?;
    }
    Ok(written)
}

/// `jobdock init NAME`
pub fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    if let Err(why) = crate::service::validate::job_name(&a.name) {
        bail!("`{}` cannot be a job's name: {why}", a.name);
    }
    let to = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    if to.exists() && std::fs::read_dir(&to)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another name or --dir",
            to.display()
        );
    }
    let module = a.name.replace('-', "_");
    let n = write(a.template.dir(), &to, &a.name, &module)?;
    eprintln!("{}", next_steps(a.template, &to, &a.name, n));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_is_written_with_its_names_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("orders-sync");
        let n = write(&PYTHON_JOB, &to, "orders-sync", "orders_sync").unwrap();
        assert!(n >= 8, "{n} files");
        let main = std::fs::read_to_string(to.join("src/orders_sync/main.py")).unwrap();
        assert!(
            main.contains("orders-sync") && !main.contains("{{"),
            "{main}"
        );
        let job = std::fs::read_to_string(to.join("job.yaml")).unwrap();
        assert!(job.contains("name: orders-sync"), "{job}");
        assert!(to.join(".dockerignore").exists() && to.join("wheels").is_dir());
        let docker = std::fs::read_to_string(to.join("Dockerfile")).unwrap();
        assert!(docker.contains("orders_sync.main"), "{docker}");
    }

    #[test]
    fn a_singer_project_is_written_with_its_names_filled() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("crm-sync");
        let n = write(&SINGER_JOB, &to, "crm-sync", "crm_sync").unwrap();
        assert!(n >= 6, "{n} files");
        let job = std::fs::read_to_string(to.join("job.yaml")).unwrap();
        assert!(
            job.contains("name: crm-sync") && !job.contains("{{"),
            "{job}"
        );
        for key in [
            "TAP:",
            "TARGET:",
            "TAP_CONFIG:",
            "TAP_SECRETS:",
            "TARGET_CONFIG:",
        ] {
            assert!(job.contains(key), "{key} in {job}");
        }
        let docker = std::fs::read_to_string(to.join("Dockerfile")).unwrap();
        assert!(
            docker.contains("jobdock.singer") && docker.contains("--no-index"),
            "{docker}"
        );
        assert!(to.join("tap-requirements.txt").exists() && to.join("wheels").is_dir());
        assert!(to.join(".dockerignore").exists());
    }

    #[test]
    fn the_hint_names_the_template_and_its_next_steps() {
        let python = next_steps(Template::Python, Path::new("orders-sync"), "orders-sync", 9);
        assert!(
            python.contains("a Python job named orders-sync"),
            "{python}"
        );
        assert!(!python.contains("TAP_CONFIG"), "{python}");
        let singer = next_steps(Template::Singer, Path::new("crm-sync"), "crm-sync", 7);
        assert!(
            singer.contains("a Singer pipeline job named crm-sync"),
            "{singer}"
        );
        assert!(
            singer.contains("crm-sync/job.yaml") && singer.contains("TAP_CONFIG"),
            "{singer}"
        );
        assert!(
            singer.contains("jobdock secrets set crm-sync SOURCE_TOKEN"),
            "{singer}"
        );
    }
}
