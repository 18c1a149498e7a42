//! The Kubernetes backend against the API fake with no kubelet: the test moves pods and
//! Jobs along by hand, so that every Kubernetes behaviour (conditions, pod states, log drops,
//! Secrets, deletes) is checked on the requests the fake received.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use jobdock_backends::kubernetes::{KubernetesBackend, KubernetesConfig};
use jobdock_backends::{
    labels, Backend, BackendKind, Exit, LaunchSpec, LogLine, LogStream, Resources, RunHandle,
    Secret, SecretDelivery, TaskState,
};
use secrecy::SecretString;
use serde_json::Value;

use super::kube_fake::{self, FakeKube, Options};

/// Bound on anything the fake does at once: a hang fails the test instead of blocking it.
const BOUND: Duration = Duration::from_secs(20);

async fn setup(config: KubernetesConfig) -> Result<(FakeKube, KubernetesBackend)> {
    let fake = FakeKube::start(Options::default()).await?;
    let backend = KubernetesBackend::with_client(fake.client(), config)
        .with_poll_interval(Duration::from_millis(20));
    Ok((fake, backend))
}

fn spec(installation: &str) -> LaunchSpec {
    LaunchSpec {
        run_id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        job: "customer-a-orders".into(),
        installation_id: installation.into(),
        image: "registry.example.com/bi/orders:1.4".into(),
        command: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
        env: vec![("SOURCE".into(), "erp".into())],
        secrets: Vec::new(),
        secret_delivery: SecretDelivery::Env,
        resources: Resources::default(),
        network: None,
        user: None,
        labels: BTreeMap::new(),
        registry_auth: None,
        pull_policy: None,
        timeout: Some(Duration::from_secs(90)),
        log_driver: None,
    }
}

async fn wait(backend: &KubernetesBackend, handle: &RunHandle) -> Result<Exit> {
    Ok(tokio::time::timeout(BOUND, backend.wait(handle))
        .await
        .context("wait hung")??)
}

async fn logs(
    backend: &KubernetesBackend,
    handle: &RunHandle,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<LogLine>> {
    let collect = backend
        .logs(handle, &jobdock_backends::LogFrom::since(since))
        .collect::<Vec<_>>();
    let lines = tokio::time::timeout(BOUND, collect)
        .await
        .context("logs hung")?;
    lines
        .into_iter()
        .map(|item| match item? {
            jobdock_backends::LogItem::Line(l) => Ok(l),
            jobdock_backends::LogItem::Gap(g) => anyhow::bail!("unexpected gap: {g:?}"),
        })
        .collect()
}

fn requests(fake: &FakeKube, method: &str, path_part: &str) -> Vec<kube_fake::Seen> {
    fake.seen()
        .into_iter()
        .filter(|s| s.method == method && s.uri.contains(path_part))
        .collect()
}

#[tokio::test]
async fn a_job_that_succeeds_reports_exit_zero_and_stamped_lines() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    assert_eq!(backend.kind(), BackendKind::Kubernetes);
    let handle = backend.launch(&spec("inst")).await?;
    assert_eq!(handle.backend_ref, format!("jobdock-{}-1", handle.run_id));
    assert_eq!(
        backend.state(&handle).await?,
        TaskState::Pending { reason: None }
    );
    fake.run(&handle.backend_ref);
    assert!(matches!(
        backend.state(&handle).await?,
        TaskState::Running {
            started_at: Some(_)
        }
    ));
    for l in ["one", "two words", ""] {
        fake.write(&handle.backend_ref, l);
    }
    let stamps: Vec<_> = fake
        .world()
        .logs
        .values()
        .next()
        .unwrap()
        .iter()
        .map(|r| r.ts.clone())
        .collect();
    fake.finish(&handle.backend_ref, 0, "Completed");
    let exit = wait(&backend, &handle).await?;
    assert_eq!(exit.exit_code, Some(0));
    assert!(!exit.oom_killed && !exit.deadline_exceeded && exit.reason.is_none());
    assert!(exit.started_at.is_some() && exit.finished_at.is_some());
    let lines = logs(&backend, &handle, None).await?;
    let texts: Vec<_> = lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(texts, ["one", "two words", ""]);
    assert!(lines.iter().all(|l| l.stream == LogStream::Stdout));
    for (line, stamp) in lines.iter().zip(&stamps) {
        assert_eq!(line.ts, chrono::DateTime::parse_from_rfc3339(stamp)?);
    }
    // `since` is exclusive.
    let after = logs(&backend, &handle, Some(lines[0].ts)).await?;
    assert_eq!(
        after.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["two words", ""]
    );
    // After the end, the log is read once without `follow`.
    let log_req = &requests(&fake, "GET", "/log")[0];
    assert!(
        log_req.uri.contains("timestamps=true") && !log_req.uri.contains("follow"),
        "{}",
        log_req.uri
    );
    let health = backend.health().await;
    assert!(
        health.ok && health.detail.contains("v1.34.0-fake"),
        "{health:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_job_ends_the_wait_with_its_exit_code() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.run(&handle.backend_ref);
    let waiting = tokio::spawn({
        let (b, h) = (backend.clone(), handle.clone());
        async move { wait(&b, &h).await }
    });
    fake.finish(&handle.backend_ref, 3, "Error");
    let exit = waiting.await??;
    assert_eq!(exit.exit_code, Some(3));
    assert!(!exit.deadline_exceeded && !exit.oom_killed);
    Ok(())
}

#[tokio::test]
async fn deadline_exceeded_is_reported() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    let job = fake.world().jobs[&handle.backend_ref].clone();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 90);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    fake.run(&handle.backend_ref);
    // The kill comes first; only the Job's condition says it was the deadline.
    fake.exit(&handle.backend_ref, 137, "Error");
    fake.job_condition(&handle.backend_ref, "FailureTarget", "DeadlineExceeded");
    assert!(matches!(
        backend.state(&handle).await?,
        TaskState::Running { .. }
    ));
    fake.job_condition(&handle.backend_ref, "Failed", "DeadlineExceeded");
    let exit = wait(&backend, &handle).await?;
    assert!(exit.deadline_exceeded, "{exit:?}");
    assert_eq!(exit.exit_code, Some(137));
    Ok(())
}

#[tokio::test]
async fn oom_kill_is_reported() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig {
        default_memory_bytes: Some(64 << 20),
        ..Default::default()
    })
    .await?;
    let handle = backend.launch(&spec("inst")).await?;
    let job = fake.world().jobs[&handle.backend_ref].clone();
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "67108864"
    );
    fake.run(&handle.backend_ref);
    fake.finish(&handle.backend_ref, 137, "OOMKilled");
    let exit = wait(&backend, &handle).await?;
    assert!(exit.oom_killed && !exit.deadline_exceeded, "{exit:?}");
    assert_eq!(exit.exit_code, Some(137));
    Ok(())
}

#[tokio::test]
async fn image_pull_backoff_pends_then_ends_the_run() -> Result<()> {
    let (fake, patient) = setup(KubernetesConfig::default()).await?;
    let handle = patient.launch(&spec("inst")).await?;
    fake.wait_on(
        &handle.backend_ref,
        "ImagePullBackOff",
        "Back-off pulling image",
    );
    assert_eq!(
        patient.state(&handle).await?,
        TaskState::Pending {
            reason: Some("ImagePullBackOff: Back-off pulling image".into())
        }
    );
    let config = KubernetesConfig {
        pending_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let hasty = KubernetesBackend::with_client(fake.client(), config)
        .with_poll_interval(Duration::from_millis(20));
    let exit = wait(&hasty, &handle).await?;
    assert_eq!(exit.exit_code, None);
    let reason = exit.reason.context("no reason")?;
    assert!(
        reason.contains("ImagePullBackOff") && reason.contains("gave up"),
        "{reason}"
    );
    assert!(fake.world().jobs.is_empty(), "the Job was not deleted");
    assert_eq!(requests(&fake, "DELETE", "/jobs/").len(), 1);
    Ok(())
}

#[tokio::test]
async fn dropped_connections_are_reestablished() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.run(&handle.backend_ref);
    for i in 0..5 {
        fake.write(&handle.backend_ref, &format!("line {i}"));
    }
    {
        let mut w = fake.world();
        w.fail_reads = 4;
        w.cut_logs_after = Some(2);
    }
    let reading = tokio::spawn({
        let (b, h) = (backend.clone(), handle.clone());
        async move { logs(&b, &h, None).await }
    });
    let waiting = tokio::spawn({
        let (b, h) = (backend.clone(), handle.clone());
        async move { wait(&b, &h).await }
    });
    // Both are now past the failing reads and the cut log.
    while fake.world().fail_reads > 0 || requests(&fake, "GET", "/log").len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.write(&handle.backend_ref, "line 5");
    fake.finish(&handle.backend_ref, 0, "Completed");
    assert_eq!(waiting.await??.exit_code, Some(0));
    let lines = reading.await??;
    // Followed while running; the reconnection asked from the last line's second.
    // (Requests with `limitBytes` look at where the kubelet's current log file begins.)
    let log_reqs: Vec<_> = requests(&fake, "GET", "/log")
        .into_iter()
        .filter(|r| !r.uri.contains("limitBytes"))
        .collect();
    assert!(log_reqs[0].uri.contains("follow=true") && log_reqs[0].uri.contains("timestamps=true"));
    assert!(!log_reqs[0].uri.contains("sinceTime") && log_reqs[1].uri.contains("sinceTime="));
    let texts: Vec<_> = lines.iter().map(|l| l.line.clone()).collect();
    assert_eq!(
        texts,
        (0..6).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn secrets_live_in_a_secret_owned_by_the_job() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let value = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let mut s = spec("inst");
    s.secrets = vec![Secret {
        name: "ERP_PASSWORD".into(),
        value: SecretString::from(value.clone()),
    }];
    let handle = backend.launch(&s).await?;
    let seen = fake.seen();
    let job_post = seen
        .iter()
        .position(|r| r.method == "POST" && r.uri.contains("/jobs"))
        .context("no job POST")?;
    let secret_post = seen
        .iter()
        .position(|r| r.method == "POST" && r.uri.contains("/secrets"))
        .context("no secret POST")?;
    assert!(job_post < secret_post, "the Secret must come after the Job");
    let job_body = seen[job_post].body.clone().context("job body")?;
    assert!(
        !job_body.to_string().contains(&value),
        "secret value in the Job spec"
    );
    let container = &job_body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        handle.backend_ref.as_str()
    );
    let secret = seen[secret_post].body.clone().context("secret body")?;
    let job = fake.world().jobs[&handle.backend_ref].clone();
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (
            &Value::from("Job"),
            &Value::from(handle.backend_ref.as_str())
        )
    );
    assert_eq!(owner["uid"], job["metadata"]["uid"]);
    use base64::Engine as _;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ERP_PASSWORD"].as_str().context("data")?)?;
    assert_eq!(stored, value.as_bytes());
    // Deleting the Job takes the Secret with it.
    backend.cleanup(&handle).await?;
    assert!(fake.world().secrets.is_empty());

    // Files: a read-only volume at /run/secrets.
    s.run_id = uuid::Uuid::new_v4().to_string();
    s.secret_delivery = SecretDelivery::Files;
    let handle = backend.launch(&s).await?;
    let job = fake.world().jobs[&handle.backend_ref].clone();
    assert!(!job.to_string().contains(&value));
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        handle.backend_ref.as_str()
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/run/secrets"
    );
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
    Ok(())
}

#[tokio::test]
async fn labels_and_list_in_flight() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let mut s = spec("inst-a");
    s.labels.insert("example.com/team".into(), "bi".into());
    let handle = backend.launch(&s).await?;
    let _other = backend.launch(&spec("inst-b")).await?;
    let job = fake.world().jobs[&handle.backend_ref].clone();
    for l in [
        &job["metadata"]["labels"],
        &job["spec"]["template"]["metadata"]["labels"],
    ] {
        assert_eq!(l[labels::RUN_ID], handle.run_id.as_str());
        assert_eq!(l[labels::ATTEMPT], "1");
        assert_eq!(l[labels::JOB], "customer-a-orders");
        assert_eq!(l[labels::INSTALLATION], "inst-a");
        assert_eq!(l["example.com/team"], "bi");
    }
    let found = backend.list_in_flight("inst-a").await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].handle, handle);
    assert_eq!(found[0].job, "customer-a-orders");
    // A label the API server would refuse fails before anything is created.
    let mut bad = spec("inst-a");
    bad.labels.insert("bad key".into(), "v".into());
    assert!(backend.launch(&bad).await.is_err());
    assert_eq!(fake.world().jobs.len(), 2);
    Ok(())
}

#[tokio::test]
async fn launch_is_idempotent() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let s = spec("inst");
    let first = backend.launch(&s).await?;
    let again = backend.launch(&s).await?;
    assert_eq!(first, again);
    assert_eq!(fake.world().jobs.len(), 1);
    assert_eq!(fake.world().pods.len(), 1);
    // A Job of that name belonging to another run is not adopted.
    fake.world().jobs.get_mut(&first.backend_ref).unwrap()["metadata"]["labels"][labels::RUN_ID] =
        "someone-else".into();
    assert!(backend.launch(&s).await.is_err());
    Ok(())
}

/// Waits until the fake has seen a request matching `method` and `path_part`.
async fn seen_soon(fake: &FakeKube, method: &str, path_part: &str) -> Result<()> {
    tokio::time::timeout(BOUND, async {
        while requests(fake, method, path_part).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("no {method} {path_part}"))
}

#[tokio::test]
async fn stop_deletes_the_pod_and_keeps_it_until_cleanup() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.run(&handle.backend_ref);
    let stopping = tokio::spawn({
        let (b, h) = (backend.clone(), handle.clone());
        async move { b.stop(&h, Duration::from_secs(7)).await }
    });
    seen_soon(&fake, "DELETE", "/pods/").await?;
    let seen = fake.seen();
    let keep = seen
        .iter()
        .position(|r| r.method == "PATCH" && r.uri.contains("/pods/"))
        .context("no pod PATCH")?;
    let delete = seen
        .iter()
        .position(|r| r.method == "DELETE" && r.uri.contains("/pods/"))
        .context("no pod DELETE")?;
    assert!(keep < delete, "the finalizer must be on before the delete");
    assert_eq!(
        seen[keep].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let body = seen[keep].body.clone().context("patch body")?;
    assert_eq!(
        body["metadata"]["finalizers"],
        serde_json::json!(["dev.jobdock/keep-after-stop"])
    );
    let grace = &seen[delete].body.as_ref().context("pod delete body")?["gracePeriodSeconds"];
    assert_eq!(*grace, 7);
    // The kubelet stops the container within the grace, the Job controller fails the Job;
    // until then stop waits.
    assert!(!stopping.is_finished(), "stop returned while the pod ran");
    fake.finish(&handle.backend_ref, 143, "Error");
    tokio::time::timeout(BOUND, stopping).await???;
    assert!(
        requests(&fake, "DELETE", "/jobs/").is_empty(),
        "stop deleted the Job"
    );
    match backend.state(&handle).await? {
        TaskState::Exited(exit) => assert_eq!(exit.exit_code, Some(143)),
        other => panic!("state after stop: {other:?}"),
    }
    let pod = fake.world().pod_of(&handle.backend_ref);
    assert!(pod.is_some(), "the stopped pod went");

    // Cleanup lets it go, then deletes the Job; the garbage collector does the rest.
    backend.cleanup(&handle).await?;
    let release = requests(&fake, "PATCH", "/pods/")
        .pop()
        .context("no release")?;
    let body = release.body.context("release body")?;
    assert_eq!(
        body["metadata"]["$deleteFromPrimitiveList/finalizers"],
        serde_json::json!(["dev.jobdock/keep-after-stop"])
    );
    assert!(fake.world().pods.is_empty() && fake.world().jobs.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_kept_pod_whose_job_went_is_found_and_let_go() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.run(&handle.backend_ref);
    let stopping = tokio::spawn({
        let (b, h) = (backend.clone(), handle.clone());
        async move { b.stop(&h, Duration::from_secs(7)).await }
    });
    seen_soon(&fake, "DELETE", "/pods/").await?;
    fake.finish(&handle.backend_ref, 143, "Error");
    tokio::time::timeout(BOUND, stopping).await???;
    // The TTL controller deletes the finished Job before any cleanup: the kept pod holds it.
    let jobs = kube::Api::<k8s_openapi::api::batch::v1::Job>::default_namespaced(fake.client());
    jobs.delete(&handle.backend_ref, &kube::api::DeleteParams::foreground())
        .await?;
    assert_eq!(backend.state(&handle).await?, TaskState::NotFound);
    let found = backend.list_in_flight("inst").await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].handle, handle);
    assert_eq!(found[0].job, "customer-a-orders");
    backend.cleanup(&found[0].handle).await?;
    assert!(fake.world().pods.is_empty() && fake.world().jobs.is_empty());
    assert!(backend.list_in_flight("inst").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn stop_before_the_pod_exists_deletes_the_job() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.world().pods.clear();
    tokio::time::timeout(BOUND, backend.stop(&handle, Duration::from_secs(7))).await??;
    let delete = requests(&fake, "DELETE", "/jobs/")
        .pop()
        .context("no Job DELETE")?;
    assert_eq!(
        delete.body.context("body")?["propagationPolicy"],
        "Foreground"
    );
    assert_eq!(backend.state(&handle).await?, TaskState::NotFound);
    Ok(())
}

#[tokio::test]
async fn a_job_being_deleted_is_gone_for_the_backend() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    fake.run(&handle.backend_ref);
    backend.cleanup(&handle).await?;
    // Foreground deletion keeps the Job while its pod terminates...
    assert!(fake.world().jobs.contains_key(&handle.backend_ref));
    // ...but the run is gone for every method.
    assert_eq!(backend.state(&handle).await?, TaskState::NotFound);
    assert!(backend.list_in_flight("inst").await?.is_empty());
    assert!(matches!(
        wait(&backend, &handle).await,
        Err(e) if e.to_string().contains("not found")
    ));
    tokio::time::timeout(BOUND, backend.stop(&handle, Duration::from_secs(1))).await??;
    fake.exit(&handle.backend_ref, 143, "Error");
    assert!(fake.world().jobs.is_empty() && fake.world().pods.is_empty());
    Ok(())
}

#[tokio::test]
async fn cleanup_is_idempotent_and_unknown_runs_are_not_found() -> Result<()> {
    let (fake, backend) = setup(KubernetesConfig::default()).await?;
    let handle = backend.launch(&spec("inst")).await?;
    backend.cleanup(&handle).await?;
    backend.cleanup(&handle).await?;
    let deletes = requests(&fake, "DELETE", "/jobs/");
    assert_eq!(deletes.len(), 2);
    assert_eq!(
        deletes[0].body.as_ref().context("body")?["propagationPolicy"],
        "Foreground"
    );
    assert_eq!(backend.state(&handle).await?, TaskState::NotFound);
    assert!(backend.list_in_flight("inst").await?.is_empty());
    Ok(())
}
