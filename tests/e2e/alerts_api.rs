//! The channels API: bad input gets a problem naming the field, scopes hold, a channel's URL
//! path and signing secret never come back (nor reach the log, the audit log or the database
//! in plain text), and changes and deletes keep jobs' subscriptions whole.

use jobdock_client::Client;
use jobdock_testkit::webhook::Receiver;
use jobdock_types::{AlertKind, ChannelKind, NewChannel, NewToken, Scope};
use serde_json::{json, Value};

use crate::alerts::{engine, settled, verify, webhook};
use crate::{app, both, spec};

/// Sends `body` to `path` and checks the answer is a problem with `status`; the problem.
async fn problem(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut req = c.request(method.clone(), path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), status, "{method} {path}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

fn fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems_naming_the_field() {
    let app = app(false).await;
    let c = app.admin();
    let post = reqwest::Method::POST;
    let bad = |body: Value| problem(&c, post.clone(), "/api/v1/channels", Some(body), 422);
    let ok_url = "https://hooks.example.com/x";
    let p = bad(json!({"name": "ops", "kind": "email", "url": ok_url})).await;
    assert_eq!(fields(&p), ["kind"]);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("webhook"),
        "{p}"
    );
    for url in ["ftp://example.com/x", "not a url", "", "https://"] {
        let p = bad(json!({"name": "ops", "kind": "webhook", "url": url})).await;
        assert_eq!(fields(&p), ["url"], "{url:?}: {p}");
    }
    assert_eq!(
        fields(&bad(json!({"name": "ops", "kind": "webhook"})).await),
        ["url"]
    );
    let p = bad(json!({"name": "Bad Name", "kind": "slack", "url": ok_url, "signing_secret": "0123456789abcdef",
                       "subscribe": {"jobs": "Cust?", "on": []}}))
    .await;
    assert_eq!(
        fields(&p),
        ["name", "signing_secret", "subscribe.jobs", "subscribe.on"]
    );
    let p =
        bad(json!({"name": "ops", "kind": "webhook", "url": ok_url, "signing_secret": "short"}))
            .await;
    assert_eq!(fields(&p), ["signing_secret"]);
    let p = bad(json!({"name": "ops", "kind": "webhook", "url": ok_url, "subscribe": {"jobs": "*", "on": ["failure", "boom"]}})).await;
    assert_eq!(fields(&p), ["subscribe.on[1]"]);
    let p = bad(json!({"name": "ops", "kind": "webhook", "url": ok_url, "colour": "red"})).await;
    assert_eq!(fields(&p), ["colour"]);

    c.create_channel(&webhook("ops", ok_url)).await.unwrap();
    let dup = c.create_channel(&webhook("ops", ok_url)).await.unwrap_err();
    assert_eq!(dup.status(), Some(409));

    // A job's subscriptions: the channel must exist, the events must be known.
    let job = |alerts: Value| {
        let mut j = serde_json::to_value(spec("orders")).unwrap();
        j["alerts"] = alerts;
        j
    };
    let jobs = "/api/v1/jobs";
    let p = problem(
        &c,
        post.clone(),
        jobs,
        Some(job(json!([{"channel": "nope", "on": ["failure"]}]))),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["alerts[0].channel"]);
    assert!(p["detail"].as_str().unwrap().contains("nope"), "{p}");
    let p = problem(
        &c,
        post.clone(),
        jobs,
        Some(job(json!([{"channel": "ops", "on": ["explode"]}]))),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["alerts[0].on[0]"]);
    let p = problem(
        &c,
        post.clone(),
        jobs,
        Some(job(
            json!([{"channel": "ops", "on": []}, {"channel": "ops", "on": ["success"]}]),
        )),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["alerts[0].on", "alerts[1].channel"]);
    c.create_job(&spec("orders")).await.unwrap();
    let p = problem(&c, reqwest::Method::PATCH, "/api/v1/jobs/orders",
                    Some(json!({"alerts": [{"channel": "ops", "on": ["failure"]}, {"channel": "missing", "on": ["failure"]}]})), 422).await;
    assert_eq!(fields(&p), ["alerts[1].channel"]);
    assert!(
        c.get_job("orders").await.unwrap().alerts.is_empty(),
        "a refused patch changes nothing"
    );

    // Changes: only what may change.
    let path = "/api/v1/channels/ops";
    let patch = reqwest::Method::PATCH;
    for (body, field) in [
        (json!({"kind": "slack"}), "kind"),
        (json!({"name": "other"}), "name"),
        (json!({"url": null}), "url"),
        (json!({"url": "gopher://x"}), "url"),
        (json!({"signing_secret": null}), "signing_secret"),
        (json!({"subscribe": {"jobs": "*"}}), "subscribe.on"),
        (json!({"colour": 1}), "colour"),
    ] {
        let p = problem(&c, patch.clone(), path, Some(body.clone()), 422).await;
        assert_eq!(fields(&p), [field], "{body}: {p}");
    }
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/channels/nope"),
        (reqwest::Method::DELETE, "/api/v1/channels/nope"),
        (reqwest::Method::GET, "/api/v1/channels/nope/deliveries"),
        (reqwest::Method::POST, "/api/v1/channels/nope/test"),
    ] {
        problem(&c, method, path, None, 404).await;
    }
    let p = problem(
        &c,
        reqwest::Method::GET,
        "/api/v1/channels/ops/deliveries?cursor=abc",
        None,
        422,
    )
    .await;
    assert_eq!(fields(&p), ["cursor"]);
    assert!(
        !app.logs().contains("\"level\":\"ERROR\""),
        "no bad input is an engine error"
    );
}

async fn token(c: &Client, scope: Scope, jobs: Option<Vec<&str>>) -> Client {
    let t = c
        .create_token(&NewToken {
            name: format!("{}-token", scope.as_str()),
            scope,
            jobs: jobs.map(|j| j.into_iter().map(String::from).collect()),
        })
        .await
        .unwrap();
    Client::new(c.base_url(), &t.token).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_channels_readers_list_them() {
    let app = app(false).await;
    let admin = app.admin();
    let url = "https://hooks.example.com/x";
    let read = token(&admin, Scope::Read, None).await;
    let operator = token(&admin, Scope::Operator, None).await;
    let narrow = token(&admin, Scope::Admin, Some(vec!["cust-a-*"])).await;
    assert_eq!(
        operator
            .create_channel(&webhook("ops", url))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        narrow
            .create_channel(&webhook("ops", url))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    admin.create_channel(&webhook("ops", url)).await.unwrap();
    assert_eq!(read.list_channels(None).await.unwrap().items.len(), 1);
    assert_eq!(
        read.get_channel("ops").await.unwrap().kind,
        ChannelKind::Webhook
    );
    assert_eq!(read.deliveries("ops", None).await.unwrap().items.len(), 0);
    assert_eq!(
        narrow.deliveries("ops", None).await.unwrap_err().status(),
        Some(403),
        "other jobs' runs"
    );
    assert_eq!(
        read.test_channel("ops").await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        operator
            .patch_channel("ops", &json!({"description": "x"}))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        operator.delete_channel("ops").await.unwrap_err().status(),
        Some(403)
    );
    let anonymous = Client::new(app.url(), "nope").unwrap();
    assert_eq!(
        anonymous.list_channels(None).await.unwrap_err().status(),
        Some(401)
    );

    // An operator subscribes jobs; the channel cannot go while one does.
    let mut job = spec("orders");
    job.alerts = vec![jobdock_types::AlertSubscription {
        channel: "ops".into(),
        on: vec![AlertKind::Failure],
    }];
    let created = operator.create_job(&job).await.unwrap();
    assert_eq!(created.alerts, job.alerts);
    let err = admin.delete_channel("ops").await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("orders"), "{err}");
    let patched = operator
        .patch_job("orders", &json!({"alerts": null}))
        .await
        .unwrap();
    assert!(
        patched.alerts.is_empty(),
        "a merge patch removes the subscriptions"
    );
    admin.delete_channel("ops").await.unwrap();
    assert_eq!(
        read.get_channel("ops").await.unwrap_err().status(),
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
    for a in ["channel.create", "channel.delete"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

both!(a_channels_url_path_and_signing_secret_never_come_back);

const GIVEN_SECRET: &str = "given-signing-secret-0123456789";

async fn a_channels_url_path_and_signing_secret_never_come_back(pg: bool) {
    let receiver = Receiver::start(&[]).await;
    let app = engine().postgres(pg).start().await;
    let c = app.admin();
    let mut hook = webhook("ops", &receiver.url("/services/T000/B000/XXXXsecretpath"));
    hook.signing_secret = Some(GIVEN_SECRET.into());
    hook.description = Some("the data team".into());
    let created = c.create_channel(&hook).await.unwrap();
    assert_eq!(
        created.signing_secret.as_deref(),
        Some(GIVEN_SECRET),
        "shown once, at creation"
    );
    let host = receiver.url("/…");
    assert_eq!(created.channel.url, host, "scheme and host only");
    assert!(created.channel.signed);
    let generated = c
        .create_channel(&webhook(
            "gen",
            "https://hooks.example.com/gen/Zsecretgenpath",
        ))
        .await
        .unwrap()
        .signing_secret
        .unwrap();
    let slack = NewChannel {
        name: "slack".into(),
        kind: ChannelKind::Slack,
        url: "https://hooks.slack.com/services/T1/B1/slacksecrettoken".into(),
        signing_secret: None,
        description: None,
        subscribe: None,
    };
    assert_eq!(
        c.create_channel(&slack).await.unwrap().channel.url,
        "https://hooks.slack.com/…"
    );

    // A change of URL and secret is used by the next delivery.
    let changed = c
        .patch_channel(
            "ops",
            &json!({"url": receiver.url("/services/T000/B000/YYYYsecretpath2"),
                    "signing_secret": format!("{GIVEN_SECRET}-2"), "description": null}),
        )
        .await
        .unwrap();
    assert_eq!(
        (changed.url.as_str(), changed.description.as_deref()),
        (host.as_str(), None)
    );
    let sent = c.test_channel("ops").await.unwrap();
    let got = receiver.wait_for(1, 30).await;
    assert_eq!(got[0].path, "/services/T000/B000/YYYYsecretpath2");
    verify(&format!("{GIVEN_SECRET}-2"), &got[0]);
    settled(&c, "ops", &sent.id, 30).await;

    let secrets = [
        "XXXXsecretpath",
        "YYYYsecretpath2",
        "Zsecretgenpath",
        "slacksecrettoken",
        GIVEN_SECRET,
        generated.as_str(),
    ];
    for path in [
        "/api/v1/channels",
        "/api/v1/channels/ops",
        "/api/v1/channels/gen",
        "/api/v1/channels/slack",
        "/api/v1/channels/ops/deliveries",
        "/api/v1/audit",
    ] {
        let resp = c.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.text().await.unwrap();
        for s in secrets {
            assert!(!body.contains(s), "{path} shows `{s}`: {body}");
        }
    }
    let logs = app.logs();
    assert!(logs.contains("alert delivered"), "the delivery is logged");
    for s in secrets {
        assert!(!logs.contains(s), "the engine logged `{s}`");
    }
    let raw = match app.db() {
        Some(db) => db.dump(),
        None => {
            let mut all = Vec::new();
            for f in ["jobdock.db", "jobdock.db-wal"] {
                if let Ok(bytes) = std::fs::read(app.data_dir().join(f)) {
                    all.extend(bytes);
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
    };
    assert!(
        raw.contains("hooks.slack.com"),
        "the database holds the channels"
    );
    for s in secrets {
        assert!(!raw.contains(s), "`{s}` is stored in plain text");
    }
}

#[tokio::test]
async fn the_openapi_document_covers_the_channels() {
    let app = app(false).await;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", app.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/channels", &["get", "post"][..]),
        ("/api/v1/channels/{channel}", &["get", "patch", "delete"]),
        ("/api/v1/channels/{channel}/deliveries", &["get"]),
        ("/api/v1/channels/{channel}/test", &["post"]),
    ] {
        let p = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        for m in methods {
            assert!(p.get(*m).is_some(), "{m} {path} missing");
        }
    }
    let schemas = &doc["components"]["schemas"];
    for s in [
        "NewChannel",
        "Channel",
        "Delivery",
        "AlertSubscription",
        "AlertKind",
    ] {
        assert!(schemas.get(s).is_some(), "schema {s} missing");
    }
    let created = schemas["CreatedChannel"].to_string();
    assert!(
        created.contains("signing_secret") && created.contains("Channel"),
        "{created}"
    );
    assert!(schemas["JobSpec"]["properties"].get("alerts").is_some());
}

fn generated_key() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reseals_channels_and_a_wrong_key_stops_the_engine() {
    let (old, new) = (generated_key(), generated_key());
    let receiver = Receiver::start(&[]).await;
    let mut app = engine().env("JOBDOCK_MASTER_KEY", &old).start().await;
    let secret = app
        .admin()
        .create_channel(&webhook("ops", &receiver.url("/hook")))
        .await
        .unwrap()
        .signing_secret
        .unwrap();
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", &format!("{new},{old}"))])
        .unwrap();
    let out = app
        .offline_command()
        .args(["keys", "rotate"])
        .env("JOBDOCK_MASTER_KEY", format!("{new},{old}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("re-sealed 2 secret value(s)"),
        "URL and signing secret: {text}"
    );

    // The new key alone opens the channel: its alerts still go out, signed as before.
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", &new)])
        .unwrap();
    let c = app.admin();
    let sent = c.test_channel("ops").await.unwrap();
    verify(&secret, &receiver.wait_for(1, 30).await[0]);
    assert_eq!(
        settled(&c, "ops", &sent.id, 30).await.status,
        jobdock_types::DeliveryStatus::Delivered
    );
    let err = app
        .restart_with_env(&[("JOBDOCK_MASTER_KEY", &old)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open"), "{err}");
}
