//! One engine, two customers: a token restricted to one customer's jobs calls every GET
//! route of the OpenAPI document and never learns the other customer's jobs, runs, locks,
//! anomalies or alerts.

use std::time::Duration;

use jobdock_types::{NewChannel, NewToken, RunStatus, Scope};

use crate::{app, run_to_end, sh_job, wait_for};

/// What customer B has that customer A's token must never see.
struct Secrets {
    words: Vec<String>,
}

impl Secrets {
    fn leaked_in<'a>(&'a self, body: &str) -> Option<&'a str> {
        self.words
            .iter()
            .map(String::as_str)
            .find(|w| body.contains(w))
    }
}

#[tokio::test]
async fn a_restricted_token_sees_only_its_customer_on_every_get_route() {
    let app = app(false).await;
    let c = app.admin();

    // B holds the lock both customers share; A's run waits for it.
    let mut b = sh_job("customer-b-orders", "sleep 60");
    b.lock_keys = vec!["shared-api".into(), "customer-b-vault".into()];
    c.create_job(&b).await.unwrap();
    let mut a = sh_job("customer-a-orders", "echo a");
    a.lock_keys = vec!["shared-api".into()];
    c.create_job(&a).await.unwrap();
    c.create_job(&sh_job("customer-b-failing", "exit 1"))
        .await
        .unwrap();
    c.create_channel(&NewChannel {
        name: "ops".into(),
        kind: jobdock_types::ChannelKind::Webhook,
        url: "http://127.0.0.1:9/hook".into(),
        signing_secret: None,
        description: None,
        subscribe: Some(jobdock_types::ChannelSubscription {
            jobs: "*".into(),
            on: vec![jobdock_types::AlertKind::Failure],
        }),
    })
    .await
    .unwrap();

    let (b_run, _) = c
        .trigger("customer-b-orders", &Default::default(), None)
        .await
        .unwrap();
    wait_for(&c, &b_run.id, 60, |r| r.status == RunStatus::Running).await;
    let (a_run, _) = c
        .trigger("customer-a-orders", &Default::default(), None)
        .await
        .unwrap();
    let mut b_failed = Vec::new();
    for _ in 0..3 {
        b_failed.push(run_to_end(&c, "customer-b-failing").await.id);
    }
    let anomalies = c
        .anomalies(None, Some("customer-b-failing"), None)
        .await
        .unwrap();
    assert!(!anomalies.items.is_empty(), "B has an anomaly to hide");

    let secrets = Secrets {
        words: [
            "customer-b-orders",
            "customer-b-failing",
            "customer-b-vault",
            b_run.id.as_str(),
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(b_failed.iter().cloned())
        .collect(),
    };

    let doc = crate::openapi_doc(&app).await;
    let get_paths: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        .map(|(p, _)| p.clone())
        .collect();
    assert!(get_paths.len() >= 15, "{get_paths:?}");

    for scope in [Scope::Read, Scope::Operator] {
        let token = c
            .create_token(&NewToken {
                name: format!("customer-a-{}", scope.as_str()),
                scope,
                jobs: Some(vec!["customer-a-*".into()]),
            })
            .await
            .unwrap()
            .token;
        let http = reqwest::Client::new();
        for path in &get_paths {
            for (own, params) in [
                (
                    true,
                    [
                        ("{name}", "customer-a-orders"),
                        ("{id}", a_run.id.as_str()),
                        ("{key}", "shared-api"),
                        ("{channel}", "ops"),
                    ],
                ),
                (
                    false,
                    [
                        ("{name}", "customer-b-orders"),
                        ("{id}", b_run.id.as_str()),
                        ("{key}", "customer-b-vault"),
                        ("{channel}", "ops"),
                    ],
                ),
            ] {
                if !own && !path.contains('{') {
                    continue;
                }
                let mut url = path.clone();
                for (p, v) in params {
                    url = url.replace(p, v);
                }
                let resp = tokio::time::timeout(
                    Duration::from_secs(30),
                    http.get(format!("{}{url}", app.url()))
                        .bearer_auth(&token)
                        .send(),
                )
                .await
                .expect("answered in time")
                .unwrap();
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                assert!(status < 500, "{scope:?} GET {url}: {status} {body}");
                if own {
                    if let Some(w) = secrets.leaked_in(&body) {
                        panic!("{scope:?} GET {url} ({status}) names `{w}`: {body}");
                    }
                } else {
                    assert!(
                        status == 403 || status == 404,
                        "{scope:?} GET {url}: another customer's object answered {status}: {body}"
                    );
                }
            }
        }
    }

    // What A does see of the shared lock: its own waiter, and that someone else holds it.
    let lock = c.get_lock("shared-api").await.unwrap();
    assert_eq!(lock.holders.len(), 1, "{lock:?}");
    let restricted = c
        .create_token(&NewToken {
            name: "customer-a-view".into(),
            scope: Scope::Read,
            jobs: Some(vec!["customer-a-*".into()]),
        })
        .await
        .unwrap()
        .token;
    let seen = app
        .client(&restricted)
        .get_lock("shared-api")
        .await
        .unwrap();
    assert!(
        seen.holders.is_empty() && seen.other_holders == 1,
        "{seen:?}"
    );
    assert_eq!(seen.waiters.len(), 1, "{seen:?}");
    assert_eq!(seen.waiters[0].run_id, a_run.id);
    c.cancel_run(&b_run.id).await.unwrap();
}
