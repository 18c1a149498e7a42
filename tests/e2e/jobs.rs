//! Registering, reading, changing and deleting jobs.

use jobdock_types::{JobSpec, OnConflict, Resources};
use serde_json::json;

use crate::{app, both, spec};

both!(
    create_read_replace_patch_delete,
    listing_pages_through_every_job,
    deleted_names_are_free_again
);

async fn create_read_replace_patch_delete(pg: bool) {
    let app = app(pg).await;
    let c = app.admin();
    let mut s = spec("orders-sync");
    s.env.insert("SOURCE".into(), "erp".into());
    s.secrets = Some([("API_TOKEN".to_string(), "tok-1".to_string())].into());
    s.resources = Some(Resources {
        cpus: Some(0.5),
        memory_mb: Some(256),
    });
    s.lock_keys = vec!["erp-api".into()];
    let job = c.create_job(&s).await.unwrap();
    assert_eq!(job.name, "orders-sync");
    assert_eq!(job.max_parallel, 1, "default max_parallel");
    assert_eq!(job.on_conflict, OnConflict::Queue);
    assert_eq!(job.backend.as_str(), "docker");
    assert_eq!(job.secret_names, vec!["API_TOKEN"]);
    assert_eq!(job.resources.memory_mb, Some(256));

    let dup = c.create_job(&s).await.unwrap_err();
    assert_eq!(dup.status(), Some(409));

    // PUT without secrets keeps them; other fields are replaced (env dropped here).
    let mut replacement = spec("orders-sync");
    replacement.max_parallel = Some(2);
    let job = c.replace_job(&replacement).await.unwrap();
    assert_eq!(job.secret_names, vec!["API_TOKEN"]);
    assert!(job.env.is_empty());
    assert_eq!(job.max_parallel, 2);

    // PATCH is a JSON merge patch; `secrets` replaces the whole set.
    let job = c
        .patch_job(
            "orders-sync",
            &json!({"env": {"A": "1"}, "timeout_seconds": 60, "secrets": {"NEW": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(job.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(job.timeout_seconds, Some(60));
    assert_eq!(job.max_parallel, 2, "untouched by the patch");
    assert_eq!(job.secret_names, vec!["NEW"]);
    let job = c
        .patch_job("orders-sync", &json!({"timeout_seconds": null}))
        .await
        .unwrap();
    assert_eq!(job.timeout_seconds, None);
    assert_eq!(
        job.secret_names,
        vec!["NEW"],
        "a patch without secrets keeps them"
    );

    let bad = c
        .patch_job("orders-sync", &json!({"max_parallel": 0}))
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(422));
    assert_eq!(
        c.get_job("orders-sync").await.unwrap().max_parallel,
        2,
        "a refused patch changes nothing"
    );

    c.delete_job("orders-sync", false).await.unwrap();
    assert_eq!(
        c.get_job("orders-sync").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        c.delete_job("orders-sync", false)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    let audit = c.audit(None).await.unwrap().items;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in ["job.create", "job.replace", "job.patch", "job.delete"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    assert!(audit
        .iter()
        .filter(|e| e.action.starts_with("job."))
        .all(|e| e.token_name.as_deref() == Some("bootstrap-admin") && e.target == "orders-sync"));
}

async fn listing_pages_through_every_job(pg: bool) {
    let app = app(pg).await;
    let c = app.admin();
    for i in 0..7 {
        c.create_job(&spec(&format!("job-{i}"))).await.unwrap();
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cur) => format!("/api/v1/jobs?limit=3&cursor={cur}"),
            None => "/api/v1/jobs?limit=3".into(),
        };
        let page: serde_json::Value = c
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for j in page["items"].as_array().unwrap() {
            names.push(j["name"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.into()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7).map(|i| format!("job-{i}")).collect::<Vec<_>>()
    );
}

async fn deleted_names_are_free_again(pg: bool) {
    let app = app(pg).await;
    let c = app.admin();
    let mut first = spec("reused");
    first.description = Some("first".into());
    c.create_job(&first).await.unwrap();
    c.delete_job("reused", false).await.unwrap();
    let second = c.create_job(&spec("reused")).await.unwrap();
    assert_eq!(
        second.description, None,
        "a new job, not the old one revived"
    );
}

#[tokio::test]
async fn bad_input_gets_problems_naming_the_field() {
    let app = app(false).await;
    let c = app.admin();
    let post = |body: &str, ctype: &str| {
        c.request(reqwest::Method::POST, "/api/v1/jobs")
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
    };
    let check = |resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert!(resp.headers().contains_key("x-request-id"));
        let p: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(p["status"], status);
        assert!(p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:jobdock:problem:"));
        p
    };
    let p = check(
        post(
            r#"{"name":"a","image":"b","colour":"red"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "colour");
    let p = check(
        post(
            r#"{"name":"a","image":"b","resources":{"memory_mb":"lots"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "resources.memory_mb");
    let p = check(
        post(
            r#"{"name":"Bad_Name","image":"","max_parallel":0,"env":{"JOBDOCK_X":"1"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["name", "image", "env.JOBDOCK_X", "max_parallel"]
    );
    check(post(r#"{"name":"#, "application/json").await.unwrap(), 422).await;
    check(
        post(r#"{"name":"a","image":"b"}"#, "text/plain")
            .await
            .unwrap(),
        415,
    )
    .await;
    let p = check(
        post(
            r#"{"name":"a","image":"b","schedule":{"cron":"0 0 * *"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "schedule.cron");
    let resp = c
        .request(reqwest::Method::GET, "/api/v1/jobs?limit=0")
        .send()
        .await
        .unwrap();
    let p = check(resp, 422).await;
    assert_eq!(p["errors"][0]["field"], "limit");
    let resp = c
        .request(reqwest::Method::GET, "/api/v1/nothing-here")
        .send()
        .await
        .unwrap();
    check(resp, 404).await;
    let resp = c
        .request(reqwest::Method::DELETE, "/api/v1/jobs")
        .send()
        .await
        .unwrap();
    check(resp, 405).await;
    let mut renamed = spec("other");
    renamed.name = "other".into();
    c.create_job(&spec("keep")).await.unwrap();
    let resp = c
        .request(reqwest::Method::PUT, "/api/v1/jobs/keep")
        .json(&renamed)
        .send()
        .await
        .unwrap();
    let p = check(resp, 422).await;
    assert_eq!(p["errors"][0]["field"], "name");
    assert!(
        c.all_jobs().await.unwrap().iter().all(|j| j.name == "keep"),
        "nothing stored by bad requests"
    );
    // Last: the engine closes the connection after refusing an unread body.
    let huge = format!(
        r#"{{"name":"a","image":"b","description":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    check(post(&huge, "application/json").await.unwrap(), 413).await;
}

#[tokio::test]
async fn many_concurrent_writes_on_sqlite_never_fail() {
    let app = app(false).await;
    let c = app.admin();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut s: JobSpec = spec(&format!("concurrent-{i}"));
                s.secrets = Some([("K".to_string(), format!("v{i}"))].into());
                c.create_job(&s).await?;
                c.set_secret(&s.name, "K2", "x").await?;
                c.patch_job(&s.name, &json!({"description": "changed"}))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("no write fails under concurrency");
    }
    assert_eq!(c.all_jobs().await.unwrap().len(), 60);
    assert!(!app.logs().contains("database is locked"));
}
