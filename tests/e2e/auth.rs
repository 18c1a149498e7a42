//! API tokens: authentication, scopes, job restrictions, revocation, bootstrap.

use jobdock_types::{NewToken, Scope};
use reqwest::Method;

use crate::{app, builder, spec};

async fn token(app: &jobdock_testkit::TestApp, scope: Scope, jobs: Option<Vec<&str>>) -> String {
    let new = NewToken {
        name: format!("{}-token", scope.as_str()),
        scope,
        jobs: jobs.map(|j| j.into_iter().map(String::from).collect()),
    };
    app.admin().create_token(&new).await.unwrap().token
}

#[tokio::test]
async fn calls_without_a_valid_token_get_401() {
    let app = app(false).await;
    let http = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = http.get(format!("{}/api/v1/jobs", app.url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    // The token is also the password of HTTP Basic, with any user name, and keeps its
    // scope and job patterns there.
    let restricted = token(&app, Scope::Read, Some(vec!["cust-a-*"])).await;
    app.admin().create_job(&spec("cust-a-x")).await.unwrap();
    app.admin().create_job(&spec("cust-b-x")).await.unwrap();
    let basic = |path: &str, password: &str| {
        http.get(format!("{}{path}", app.url()))
            .basic_auth("adf", Some(password))
            .send()
    };
    assert_eq!(
        basic("/api/v1/jobs/cust-a-x", &restricted)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        basic("/api/v1/jobs/cust-b-x", &restricted)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        basic("/api/v1/jobs", "not-a-token").await.unwrap().status(),
        401
    );
    let anyone = http
        .get(format!("{}/api/v1/jobs/cust-a-x", app.url()))
        .basic_auth("", Some(&restricted))
        .send()
        .await
        .unwrap();
    assert_eq!(anyone.status(), 200, "an empty user name is fine");
    // Health and readiness need no token.
    assert_eq!(
        http.get(format!("{}/healthz", app.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/readyz", app.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn scopes_are_checked_before_the_body_is_read() {
    let app = app(false).await;
    let read = app.client(&token(&app, Scope::Read, None).await);
    let trigger = app.client(&token(&app, Scope::Trigger, None).await);
    let operator = app.client(&token(&app, Scope::Operator, None).await);

    // A forbidden call gets 403 whatever its body, even one that is not JSON at all.
    for body in ["not json", r#"{"name":"x","image":"y"}"#, ""] {
        let resp = read
            .request(Method::POST, "/api/v1/jobs")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "body {body:?}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", app.url()))
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert_eq!(
        trigger.create_job(&spec("t")).await.unwrap_err().status(),
        Some(403)
    );
    operator.create_job(&spec("ops")).await.unwrap();
    assert_eq!(read.get_job("ops").await.unwrap().name, "ops");
    assert_eq!(trigger.all_jobs().await.unwrap().len(), 1);
    assert_eq!(
        operator
            .set_secret("ops", "K", "v")
            .await
            .unwrap()
            .secret_names,
        vec!["K"]
    );
    assert_eq!(
        read.set_secret("ops", "K", "v").await.unwrap_err().status(),
        Some(403)
    );
    // Tokens and the audit log are for admins.
    let new = NewToken {
        name: "x".into(),
        scope: Scope::Read,
        jobs: None,
    };
    assert_eq!(
        operator.create_token(&new).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(operator.audit(None).await.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn a_token_restricted_to_some_jobs_reaches_only_those() {
    let app = app(false).await;
    let admin = app.admin();
    for name in ["customer-a-orders", "customer-a-stock", "customer-b-orders"] {
        admin.create_job(&spec(name)).await.unwrap();
    }
    let a = app.client(&token(&app, Scope::Operator, Some(vec!["customer-a-*"])).await);
    let names: Vec<String> = a
        .all_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, vec!["customer-a-orders", "customer-a-stock"]);
    assert_eq!(
        a.get_job("customer-b-orders").await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        a.delete_job("customer-b-orders", false)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        a.create_job(&spec("customer-b-new"))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    a.create_job(&spec("customer-a-new")).await.unwrap();
    a.set_secret("customer-a-new", "K", "v").await.unwrap();
    let bad = NewToken {
        name: "x".into(),
        scope: Scope::Read,
        jobs: Some(vec!["Customer A".into()]),
    };
    let err = admin.create_token(&bad).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
}

#[tokio::test]
async fn tokens_are_listed_without_values_and_revocation_takes_effect() {
    let app = app(false).await;
    let admin = app.admin();
    let created = admin
        .create_token(&NewToken {
            name: "adf-prod".into(),
            scope: Scope::Trigger,
            jobs: None,
        })
        .await
        .unwrap();
    assert!(created.token.len() >= 32, "at least 128 bits");
    let c = app.client(&created.token);
    c.all_jobs().await.unwrap();
    let listed = admin
        .request(Method::GET, "/api/v1/tokens")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("adf-prod"));
    assert!(!listed.contains(&created.token), "token value listed");
    admin.revoke_token(&created.id).await.unwrap();
    assert_eq!(c.all_jobs().await.unwrap_err().status(), Some(401));
    assert_eq!(
        admin.revoke_token(&created.id).await.unwrap_err().status(),
        Some(404)
    );
    let actions: Vec<String> = admin
        .audit(None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"token.create".into()) && actions.contains(&"token.revoke".into()));
}

#[tokio::test]
async fn the_bootstrap_token_survives_restarts_and_a_generated_one_is_printed_once() {
    let mut app = app(false).await;
    app.admin().create_job(&spec("kept")).await.unwrap();
    app.restart().unwrap();
    assert_eq!(app.admin().get_job("kept").await.unwrap().name, "kept");

    // With no JOBDOCK_ADMIN_TOKEN on a fresh store, a token is generated and printed once.
    let generated = builder().env("JOBDOCK_ADMIN_TOKEN", "").start().await;
    let out = generated.stdout();
    let token = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("jd_"))
        .unwrap_or_else(|| panic!("no token printed: {out}"));
    assert_eq!(generated.client(token).all_jobs().await.unwrap().len(), 0);
    assert!(
        !generated.logs().contains(token),
        "the token must not be logged"
    );
}

/// Admin access can be recovered where the database is: a `JOBDOCK_ADMIN_TOKEN` that no
/// longer counts (tokens exist already) says so in the log, and `jobdock recover-admin`
/// makes a working admin token, printed once and audited.
#[tokio::test]
async fn a_lost_admin_token_is_recovered_offline() {
    let mut app = app(false).await;
    let forgotten = "a-token-nobody-stored-0123456789";
    app.restart_with_env(&[("JOBDOCK_ADMIN_TOKEN", forgotten)])
        .unwrap();
    assert!(
        app.logs().contains("JOBDOCK_ADMIN_TOKEN is ignored"),
        "{}",
        app.logs()
    );
    let refused = app.client(forgotten).list_tokens(None).await;
    assert!(refused.is_err(), "an ignored token must not work");

    let out = app.offline_command().arg("recover-admin").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(recovered.len() >= 40, "{recovered:?}");
    let c = app.client(&recovered);
    let tokens = c
        .list_tokens(None)
        .await
        .expect("the recovered token is an admin");
    assert!(tokens
        .items
        .iter()
        .any(|t| t.name.starts_with("recovered-admin-")));
    let audit = c.audit(None).await.unwrap();
    assert!(audit.items.iter().any(|e| e.action == "token.recover"));
}
