//! The service as a whole: health, readiness, the OpenAPI document, TLS, shutdown.

use crate::{app, builder};

#[tokio::test]
async fn readiness_names_every_check() {
    let app = app(false).await;
    let resp = reqwest::get(format!("{}/readyz", app.url())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["status"], "ok");
    assert!(body["backends"].is_object());
}

#[tokio::test]
async fn readiness_fails_when_postgres_goes_away() {
    let app = builder().postgres(true).start().await;
    let url = format!("{}/readyz", app.url());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    // Terminate the engine's connections and forbid new ones to its database.
    let db = app
        .db()
        .unwrap()
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let admin = jobdock_testkit::postgres::admin_url();
    let sql = format!(
        "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
    );
    let out = std::process::Command::new("psql")
        .arg(&admin)
        .arg("-c")
        .arg(&sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["database"]["status"], "down");
    assert_eq!(
        reqwest::get(format!("{}/healthz", app.url()))
            .await
            .unwrap()
            .status(),
        200
    );
    let restore = format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true;");
    std::process::Command::new("psql")
        .arg(&admin)
        .arg("-c")
        .arg(&restore)
        .output()
        .unwrap();
}

/// The document is derived from the router (each handler is registered with its entry), so
/// every route has one; here every operation it lists is answered by a route of its own: none
/// falls through to "no such endpoint" or a 405.
#[tokio::test]
async fn the_openapi_document_covers_every_endpoint() {
    let app = app(false).await;
    let doc = crate::openapi_doc(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let http = reqwest::Client::new();
    let mut operations = 0;
    for (path, item) in paths {
        // Placeholders that no object has: a handler answers 404, 422 or its own error.
        let concrete = path
            .replace("{name}", "no-such-job")
            .replace("{key}", "no-such-key")
            .replace("{channel}", "no-such-channel")
            .replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = http
                .request(m, format!("{}{concrete}", app.url()))
                .bearer_auth(jobdock_testkit::app::ADMIN_TOKEN);
            if matches!(method.as_str(), "post" | "put" | "patch") {
                req = req.header("content-type", "application/json").body("{}");
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path}: {body}"
            );
        }
    }
    assert!(operations >= 30, "{operations} operations");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "JobSpec",
        "Job",
        "Problem",
        "FieldError",
        "NewToken",
        "CreatedToken",
        "AuditEntry",
        "JobStats",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
}

#[tokio::test]
async fn the_service_terminates_tls_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let (ca, cert, key) = (d("ca.pem"), d("cert.pem"), d("key.pem"));
    let openssl = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &d("ca.key"),
        "-out",
        &ca,
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key,
        "-out",
        &d("req.csr"),
    ]);
    std::fs::write(
        d("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d("req.csr"),
        "-CA",
        &ca,
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &d("ext.cnf"),
        "-out",
        &cert,
    ]);
    let app = builder()
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .start()
        .await;
    let https = app.url().replace("http://", "https://");
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let resp = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP on the TLS port gets no answer it could mistake for the API.
    assert!(reqwest::get(format!("{}/healthz", app.url()))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut app = app(false).await;
    assert!(app.terminate(), "exit status 0 after SIGTERM");
    assert!(app.logs().contains("shutting down"));
}

/// Runs `jobdock serve` with `app`'s data directory and `listen`, expecting it to refuse:
/// its stderr, or a panic if it is still running after 30 s.
fn second_engine(app: &jobdock_testkit::TestApp, listen: &str) -> String {
    let mut child = app
        .offline_command()
        .args(["serve", "--listen", listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second engine");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the second engine kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A second engine started by mistake on the same data directory refuses before it touches
/// anything — on another port because the database is locked, on the same port because it
/// cannot listen — and the running engine goes on storing its run's log to the end.
#[tokio::test]
async fn a_second_engine_on_the_same_data_directory_refuses_at_once() {
    let app = crate::app(false).await;
    let c = app.admin();
    let script = "i=1; while [ $i -le 30 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    c.create_job(&crate::sh_job("steady", script))
        .await
        .unwrap();
    let (run, _) = c
        .trigger("steady", &Default::default(), None)
        .await
        .unwrap();
    crate::wait_for_log(&c, &run.id, "tick 2", 60).await;

    let locked = second_engine(&app, "127.0.0.1:0");
    assert!(
        locked.contains("another engine is using the database"),
        "{locked}"
    );
    assert!(
        !locked.contains("adopting"),
        "it touched the runs: {locked}"
    );
    let same_port = app.url().trim_start_matches("http://").to_owned();
    let taken = second_engine(&app, &same_port);
    assert!(taken.contains("cannot listen on"), "{taken}");

    let done = c
        .wait_until_final(&run.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, jobdock_types::RunStatus::Succeeded, "{done:?}");
    let lines: Vec<String> = c
        .logs(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    let want: Vec<String> = (1..=30).map(|i| format!("tick {i}")).collect();
    assert_eq!(lines, want);
}
