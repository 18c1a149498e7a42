//! Which backends an engine has: detected (Docker, Swarm) or configured (Nomad); a job may
//! name only those, and `/readyz` reports each.

use jobdock_types::BackendName;

use crate::{app, builder, spec};

async fn readiness(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_may_name_only_a_backend_the_engine_has() {
    let app = app(false).await;
    let body = readiness(app.url()).await;
    assert_eq!(body["backends"]["docker"]["status"], "ok", "{body}");
    assert!(body["backends"].get("nomad").is_none(), "{body}");
    let mut s = spec("on-nomad");
    s.backend = Some(BackendName::Nomad);
    let err = app.admin().create_job(&s).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert!(
        err.to_string()
            .contains("backend: backend `nomad` is not configured"),
        "{err}"
    );
    assert_eq!(
        app.admin()
            .create_job(&spec("default-docker"))
            .await
            .unwrap()
            .backend,
        BackendName::Docker
    );
}

#[tokio::test]
async fn a_configured_nomad_counts_even_while_it_does_not_answer() {
    // Nothing listens on port 1: the backend is configured but down.
    let app = builder()
        .env("NOMAD_ADDR", "http://127.0.0.1:1")
        .start()
        .await;
    let body = readiness(app.url()).await;
    assert_eq!(
        body["status"], "ready",
        "a backend being down does not make the replica unready"
    );
    assert_eq!(body["backends"]["nomad"]["status"], "down", "{body}");
    let mut s = spec("on-nomad");
    s.backend = Some(BackendName::Nomad);
    assert_eq!(
        app.admin().create_job(&s).await.unwrap().backend,
        BackendName::Nomad
    );
}

#[tokio::test]
async fn a_job_on_swarm_runs_through_the_same_engine() {
    jobdock_testkit::swarm::ensure_swarm().expect("a one-node swarm");
    let app = app(false).await;
    let c = app.admin();
    let body = readiness(app.url()).await;
    assert_eq!(body["backends"]["swarm"]["status"], "ok", "{body}");
    // Only the backend differs from a Docker job.
    let mut s = crate::sh_job(
        "on-swarm",
        "echo from swarm; echo len=$(cat /run/secrets/TOKEN | wc -c); exit 4",
    );
    s.backend = Some(BackendName::Swarm);
    s.secrets = Some([("TOKEN".to_string(), "swarm-s3cret".to_string())].into());
    c.create_job(&s).await.unwrap();
    let run = crate::run_to_end(&c, "on-swarm").await;
    assert_eq!(run.status, jobdock_types::RunStatus::Failed, "{run:?}");
    assert_eq!(run.exit_code, Some(4));
    let text = c.logs_text(&run.id).await.unwrap();
    assert!(text.contains("stdout from swarm"), "{text}");
    assert!(
        text.contains("len=12"),
        "the secret arrived as a file: {text}"
    );
    // The service and its secrets are gone by the time the run is reported final.
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let label = format!("label=dev.jobdock.run-id={}", run.id);
    let services = docker(&["service", "ls", "-q", "--filter", &label]);
    let secrets = docker(&["secret", "ls", "-q", "--filter", &label]);
    assert!(
        services.trim().is_empty() && secrets.trim().is_empty(),
        "left after the final status: services {services:?}, secrets {secrets:?}"
    );
}

#[tokio::test]
async fn a_kubeconfig_configures_the_kubernetes_backend() {
    // A cluster that is not there: the backend is configured, and reported down.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{name: test, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: test, user: {token: not-a-real-token}}]\n\
         contexts: [{name: test, context: {cluster: test, user: test, namespace: runs}}]\n",
    )
    .unwrap();
    let app = builder()
        .env("KUBECONFIG", kubeconfig.to_str().unwrap())
        .start()
        .await;
    let body = readiness(app.url()).await;
    assert_eq!(body["backends"]["kubernetes"]["status"], "down", "{body}");
    let mut s = spec("on-kube");
    s.backend = Some(BackendName::Kubernetes);
    assert_eq!(
        app.admin().create_job(&s).await.unwrap().backend,
        BackendName::Kubernetes
    );
}
