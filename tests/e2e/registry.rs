//! Private images through a real registry (Debian's `docker-registry`, htpasswd
//! authentication): `jobdock deploy` pushes to it, runs pull with their job's own
//! credentials on Docker and on Swarm, and — by default — a job whose credentials (or their
//! absence) could not pull an image never runs it from the host's cache, however another
//! job put it there. A job that chose `if_not_present` does.

use jobdock_testkit::app::ADMIN_TOKEN;
use jobdock_testkit::registry::Registry;
use jobdock_types::{BackendName, JobSpec, PullPolicy, RegistryAuth, Run, RunStatus};

use crate::{app, run_to_end};

const SECRET: &str = "REGISTRY_PASSWORD";

/// A job printing a line from `image`, pulling with `password` (none: no credentials).
fn job(name: &str, image: &str, reg: &Registry, password: Option<&str>) -> JobSpec {
    JobSpec {
        name: name.into(),
        image: image.into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo ran-the-private-image".into(),
        ]),
        registry: password.map(|_| RegistryAuth {
            server: reg.host.clone(),
            username: reg.username.clone(),
            password_secret: SECRET.into(),
        }),
        secrets: password.map(|p| [(SECRET.to_string(), p.to_string())].into()),
        ..Default::default()
    }
}

fn refused_pull(run: &Run, image: &str) {
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let reason = run.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("could not pull image {image}")),
        "{run:?}"
    );
    assert!(run.exit_code.is_none(), "it never ran: {run:?}");
}

async fn ran(c: &jobdock_client::Client, run: &Run) {
    let log = c.logs_text(&run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?} {log}");
    assert!(log.contains("ran-the-private-image"), "{log}");
}

fn cached(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_pushes_and_only_jobs_with_the_credentials_run_the_image() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let reg = Registry::start("bi-team", &password).unwrap();
    let app = app(false).await;
    let base = jobdock_testkit::images::busybox_image().unwrap();

    // `jobdock deploy --registry` builds, pushes with the CLI's credentials, and registers
    // the job with the pushed reference; the job pulls with its own.
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::write(
        p.join("Dockerfile"),
        format!("FROM {base}\nCMD [\"echo\", \"ran-the-private-image\"]\n"),
    )
    .unwrap();
    std::fs::write(
        p.join("job.yaml"),
        format!(
            "name: private\nimage: private:latest\nsecrets: [{SECRET}]\n\
             registry: {{server: '{}', username: bi-team, password_secret: {SECRET}}}\n",
            reg.host
        ),
    )
    .unwrap();
    let to = format!("{}/team", reg.host);
    let o = app.cli_with_env(
        &["deploy", p.to_str().unwrap(), "--registry", &to],
        ADMIN_TOKEN,
        None,
        &[
            ("JOBDOCK_REGISTRY_USER", "bi-team"),
            ("JOBDOCK_REGISTRY_PASSWORD", &password),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}\n{}", reg.log());
    let image = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(image.starts_with(&format!("{to}/private:")), "{image}");
    assert!(
        err.contains(&format!("secret {SECRET} is not set")),
        "{err}"
    );

    // The registry has it: an anonymous pull is refused, an authenticated one is not.
    std::process::Command::new("docker")
        .args(["image", "rm", &image])
        .output()
        .unwrap();
    assert!(!cached(&image));
    let c = app.admin();
    c.set_secret("private", SECRET, &password).await.unwrap();
    let run = run_to_end(&c, "private").await;
    ran(&c, &run).await;
    assert!(cached(&image), "pulled from the registry");

    // The image is on the host now. A job without credentials, or with a wrong password,
    // names it: refused by the registry, so it does not run.
    c.create_job(&job("no-credentials", &image, &reg, None))
        .await
        .unwrap();
    refused_pull(&run_to_end(&c, "no-credentials").await, &image);
    c.create_job(&job("wrong-password", &image, &reg, Some("guess")))
        .await
        .unwrap();
    refused_pull(&run_to_end(&c, "wrong-password").await, &image);
    // `always` says so explicitly, and the job with the key goes on pulling.
    let mut always = job("always", &image, &reg, Some(&password));
    always.pull_policy = Some(PullPolicy::Always);
    c.create_job(&always).await.unwrap();
    ran(&c, &run_to_end(&c, "always").await).await;

    // A job that chose `if_not_present` runs what the host has, as it asked.
    let mut trusting = job("if-not-present", &image, &reg, None);
    trusting.pull_policy = Some(PullPolicy::IfNotPresent);
    c.create_job(&trusting).await.unwrap();
    ran(&c, &run_to_end(&c, "if-not-present").await).await;
    assert_eq!(
        c.get_job("if-not-present").await.unwrap().pull_policy,
        Some(PullPolicy::IfNotPresent)
    );

    // The password shows nowhere: not in the job, not in the engine's log.
    let shown = serde_json::to_string(&c.get_job("private").await.unwrap()).unwrap();
    assert!(!shown.contains(&password), "{shown}");
    assert!(!app.logs().contains(&password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_swarm_a_cached_private_image_runs_only_for_the_jobs_credentials() {
    jobdock_testkit::swarm::ensure_swarm().expect("a one-node swarm");
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let reg = Registry::start("bi-team", &password).unwrap();
    let base = jobdock_testkit::images::busybox_image().unwrap();
    let image = reg.push(&base, "team/swarm-private:1").unwrap();
    assert!(!cached(&image));
    let app = app(false).await;
    let c = app.admin();
    let on_swarm = |mut s: JobSpec| {
        s.backend = Some(BackendName::Swarm);
        s
    };

    c.create_job(&on_swarm(job("with-key", &image, &reg, Some(&password))))
        .await
        .unwrap();
    ran(&c, &run_to_end(&c, "with-key").await).await;
    assert!(cached(&image), "the swarm's node pulled it");

    // Swarm's own nodes would fall back to the cached image when their pull fails; the
    // engine's pull with the job's credentials comes first.
    c.create_job(&on_swarm(job("no-credentials", &image, &reg, None)))
        .await
        .unwrap();
    refused_pull(&run_to_end(&c, "no-credentials").await, &image);
    c.create_job(&on_swarm(job(
        "wrong-password",
        &image,
        &reg,
        Some("guess"),
    )))
    .await
    .unwrap();
    refused_pull(&run_to_end(&c, "wrong-password").await, &image);

    let mut trusting = on_swarm(job("if-not-present", &image, &reg, None));
    trusting.pull_policy = Some(PullPolicy::IfNotPresent);
    c.create_job(&trusting).await.unwrap();
    ran(&c, &run_to_end(&c, "if-not-present").await).await;
    assert!(!app.logs().contains(&password));
}
