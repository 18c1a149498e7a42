//! Alerts end to end: a job's runs raise alerts that reach a local receiver, signed (the
//! signature is checked here, independently of the engine), retried when refused, delivered
//! after a restart, and sent once by several replicas. The API's own rules (bad input,
//! secrets never shown) are in `alerts_api.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobdock_client::Client;
use jobdock_testkit::webhook::{Received, Receiver};
use jobdock_testkit::TestAppBuilder;
use jobdock_types::{
    AlertKind, AlertSubscription, ChannelKind, ChannelSubscription, Delivery, DeliveryStatus,
    NewChannel, RunStatus, TriggerRequest,
};

use crate::{both, builder, run_to_end, sh_job};

/// An engine that retries alerts after 200 ms instead of 10 s.
pub fn engine() -> TestAppBuilder {
    builder().arg("--alert-retry-base-ms").arg("200")
}

/// A webhook channel posting to `url`, with a generated signing secret.
pub fn webhook(name: &str, url: &str) -> NewChannel {
    NewChannel {
        name: name.into(),
        kind: ChannelKind::Webhook,
        url: url.into(),
        signing_secret: None,
        description: None,
        subscribe: None,
    }
}

fn subscribed(channel: &str, on: &[AlertKind]) -> Vec<AlertSubscription> {
    vec![AlertSubscription {
        channel: channel.into(),
        on: on.to_vec(),
    }]
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Checks a request as a receiver should: `X-Jobdock-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256 of "<t>.<body>">` with the channel's secret, and `t` close to now.
pub fn verify(secret: &str, r: &Received) {
    let header = r
        .header("x-jobdock-signature")
        .expect("the request is signed");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature header {header}"));
    let t: u64 = t.parse().expect("t is Unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(t) <= 60, "signed at {t}, now is {now}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    ring::hmac::verify(&key, &signed, &unhex(v1)).expect("the HMAC matches the body");
    signed.push(b' ');
    assert!(
        ring::hmac::verify(&key, &signed, &unhex(v1)).is_err(),
        "a changed body fails the check"
    );
    assert_eq!(
        r.header("x-jobdock-delivery"),
        r.json()["id"].as_str(),
        "the delivery id is the alert's id"
    );
}

/// Waits until the channel's delivery `id` is no longer pending.
pub async fn settled(c: &Client, channel: &str, id: &str, secs: u64) -> Delivery {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let page = c.deliveries(channel, None).await.expect("deliveries");
        let d = page.items.into_iter().find(|d| d.id == id);
        if let Some(d) = d.filter(|d| d.status != DeliveryStatus::Pending) {
            return d;
        }
        assert!(
            std::time::Instant::now() < until,
            "delivery {id} still pending"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

both!(failure_then_recovery_reach_the_webhook_signed_and_once);

async fn failure_then_recovery_reach_the_webhook_signed_and_once(pg: bool) {
    let receiver = Receiver::start(&[]).await;
    let app = engine().postgres(pg).start().await;
    let c = app.admin();
    let created = c
        .create_channel(&webhook("ops", &receiver.url("/hooks/T0-secret-path")))
        .await
        .unwrap();
    let secret = created.signing_secret.expect("a generated signing secret");
    let mut job = sh_job("flaky", "exit ${CODE:-0}");
    job.alerts = subscribed("ops", &[AlertKind::Failure, AlertKind::Recovery]);
    c.create_job(&job).await.unwrap();

    let failing = TriggerRequest {
        env: [("CODE".to_string(), "3".to_string())].into(),
        ..Default::default()
    };
    let (first, _) = c.trigger("flaky", &failing, None).await.unwrap();
    let first = c
        .wait_until_final(&first.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        (first.status, first.exit_code),
        (RunStatus::Failed, Some(3))
    );
    let second = run_to_end(&c, "flaky").await;
    assert_eq!(second.status, RunStatus::Succeeded);
    let third = run_to_end(&c, "flaky").await;
    assert_eq!(
        third.status,
        RunStatus::Succeeded,
        "neither a failure nor a recovery"
    );

    receiver.wait_for(2, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    assert_eq!(
        got.len(),
        2,
        "exactly one failure and one recovery: {got:#?}"
    );
    let of = |event: &str| {
        got.iter()
            .find(|r| r.json()["event"] == event)
            .unwrap_or_else(|| panic!("no {event} alert in {got:#?}"))
    };
    let (failure, recovery) = (of("failure"), of("recovery"));
    for (r, run) in [(failure, &first), (recovery, &second)] {
        verify(&secret, r);
        assert_eq!(r.path, "/hooks/T0-secret-path");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["job"], "flaky");
        assert_eq!(body["run_id"], run.id.as_str());
        let at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(body["occurred_at"].clone()).unwrap();
        assert_eq!(Some(at), run.finished_at, "occurred when the run ended");
    }
    let summary = failure.json()["summary"].as_str().unwrap().to_string();
    assert!(
        summary.starts_with(&format!(
            "run {} of flaky failed with exit code 3 after ",
            first.id
        )),
        "{summary}"
    );
    assert_eq!(failure.json()["details"]["exit_code"], 3);
    let summary = recovery.json()["summary"].as_str().unwrap().to_string();
    assert!(summary.ends_with("; the previous run failed"), "{summary}");

    // Both visible, newest first, each delivered at its first attempt.
    let deliveries = c.deliveries("ops", None).await.unwrap().items;
    let events: Vec<&str> = deliveries.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(events, ["recovery", "failure"]);
    for d in &deliveries {
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].http_status, Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_alert_is_retried_and_every_attempt_is_visible() {
    let receiver = Receiver::start(&[500, 200]).await;
    let app = engine().start().await;
    let c = app.admin();
    let secret = c
        .create_channel(&webhook("ops", &receiver.url("/hook")))
        .await
        .unwrap()
        .signing_secret
        .unwrap();
    let pending = c.test_channel("ops").await.unwrap();
    assert_eq!(
        (pending.event.as_str(), pending.status),
        ("test", DeliveryStatus::Pending)
    );

    let got = receiver.wait_for(2, 30).await;
    for r in &got {
        verify(&secret, r);
        assert_eq!(r.header("x-jobdock-delivery"), Some(pending.id.as_str()));
    }
    let d = settled(&c, "ops", &pending.id, 30).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    let seen: Vec<(i64, Option<u16>)> = d
        .attempts
        .iter()
        .map(|a| (a.attempt, a.http_status))
        .collect();
    assert_eq!(seen, [(1, Some(500)), (2, Some(200))]);
    assert!(d.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("HTTP 500"));
    assert_eq!(d.attempts[1].error, None);
    let gap = d.attempts[1].at - d.attempts[0].at;
    assert!(
        gap >= chrono::Duration::milliseconds(200),
        "retried after the backoff, not at once: {gap}"
    );
    assert_eq!(receiver.received().len(), 2, "nothing sent after delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_keeps_failing_is_given_up_after_its_attempts() {
    let receiver = Receiver::start(&[503]).await;
    let app = engine().arg("--alert-max-attempts").arg("3").start().await;
    let c = app.admin();
    c.create_channel(&webhook("ops", &receiver.url("/hook")))
        .await
        .unwrap();
    // Nothing listens here: the attempts fail without an answer.
    c.create_channel(&webhook("gone", "http://127.0.0.1:9/hook"))
        .await
        .unwrap();
    let refused = c.test_channel("ops").await.unwrap();
    let unreachable = c.test_channel("gone").await.unwrap();
    let d = settled(&c, "ops", &refused.id, 60).await;
    assert_eq!((d.status, d.attempts.len()), (DeliveryStatus::Failed, 3));
    assert_eq!(receiver.received().len(), 3);
    let d = settled(&c, "gone", &unreachable.id, 60).await;
    assert_eq!((d.status, d.attempts.len()), (DeliveryStatus::Failed, 3));
    let error = d.attempts[0].error.as_deref().unwrap();
    assert_eq!(d.attempts[0].http_status, None);
    assert!(error.to_lowercase().contains("connect"), "{error}");
    assert!(
        !error.contains("/hook"),
        "the URL stays out of errors: {error}"
    );
}

both!(an_undelivered_alert_is_delivered_after_a_restart);

async fn an_undelivered_alert_is_delivered_after_a_restart(pg: bool) {
    let receiver = Receiver::start(&[500]).await;
    // A slow retry: the engine is killed between the failed attempt and the next.
    let mut app = builder()
        .postgres(pg)
        .arg("--alert-retry-base-ms")
        .arg("4000")
        .start()
        .await;
    let c = app.admin();
    let secret = c
        .create_channel(&webhook("ops", &receiver.url("/hook")))
        .await
        .unwrap()
        .signing_secret
        .unwrap();
    let mut job = sh_job("nightly", "exit 1");
    job.alerts = subscribed("ops", &[AlertKind::Failure]);
    c.create_job(&job).await.unwrap();
    let run = run_to_end(&c, "nightly").await;
    assert_eq!(run.status, RunStatus::Failed);
    receiver.wait_for(1, 60).await;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while c.deliveries("ops", None).await.unwrap().items[0]
        .attempts
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < until,
            "the first attempt is never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    app.kill9();
    receiver.answer(&[200]);
    app.restart().unwrap();
    let c = app.admin();
    let got = receiver.wait_for(2, 60).await;
    verify(&secret, &got[1]);
    assert_eq!(got[1].json()["run_id"], run.id.as_str());
    let id = got[1].json()["id"].as_str().unwrap().to_string();
    let d = settled(&c, "ops", &id, 30).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(
        d.attempts.iter().map(|a| a.http_status).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_channels_get_text_for_the_jobs_they_cover() {
    let receiver = Receiver::start(&[]).await;
    let app = engine()
        .arg("--public-url")
        .arg("https://jobdock.example.test/")
        .start()
        .await;
    let c = app.admin();
    let channel = NewChannel {
        name: "team-slack".into(),
        kind: ChannelKind::Slack,
        url: receiver.url("/services/T000/B000/XXXX"),
        signing_secret: None,
        description: Some("#data-team".into()),
        subscribe: Some(ChannelSubscription {
            jobs: "report-*".into(),
            on: vec![AlertKind::Success, AlertKind::Timeout],
        }),
    };
    let created = c.create_channel(&channel).await.unwrap();
    assert_eq!(
        created.signing_secret, None,
        "Slack requests are not signed"
    );
    c.create_job(&sh_job("report-daily", "echo done"))
        .await
        .unwrap();
    let mut slow = sh_job("report-slow", "sleep 30");
    slow.timeout_seconds = Some(1);
    slow.stop_grace_seconds = Some(1);
    c.create_job(&slow).await.unwrap();
    c.create_job(&sh_job("other-daily", "echo done"))
        .await
        .unwrap();

    let ok = run_to_end(&c, "report-daily").await;
    assert_eq!(ok.status, RunStatus::Succeeded);
    assert_eq!(
        run_to_end(&c, "other-daily").await.status,
        RunStatus::Succeeded
    );
    let late = run_to_end(&c, "report-slow").await;
    assert_eq!(late.status, RunStatus::TimedOut);

    receiver.wait_for(2, 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "other-daily is not covered: {got:#?}");
    let texts: Vec<String> = got
        .iter()
        .map(|r| {
            assert!(r.header("x-jobdock-signature").is_none());
            assert_eq!(r.path, "/services/T000/B000/XXXX");
            let body = r.json();
            assert_eq!(body.as_object().unwrap().len(), 1, "only `text`: {body}");
            body["text"].as_str().unwrap().to_string()
        })
        .collect();
    let success = texts.iter().find(|t| t.contains("report-daily")).unwrap();
    assert_eq!(
        success,
        &format!(
            ":white_check_mark: *success* run {} of report-daily succeeded after {}\n\
             <https://jobdock.example.test/api/v1/runs/{}|Open the run>",
            ok.id,
            success
                .split(" after ")
                .nth(1)
                .unwrap()
                .split('\n')
                .next()
                .unwrap(),
            ok.id
        )
    );
    let timeout = texts.iter().find(|t| t.contains("report-slow")).unwrap();
    assert!(
        timeout.starts_with(":hourglass: *timeout* ") && timeout.contains("timed out after"),
        "{timeout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_replicas_send_each_alert_once() {
    let receiver = Receiver::start(&[]).await;
    let first = engine().postgres(true).start().await;
    let second = engine().replica_of(&first).start().await;
    let clients = [first.admin(), second.admin()];
    clients[0]
        .create_channel(&webhook("ops", &receiver.url("/hook")))
        .await
        .unwrap();
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let c = clients[i % 2].clone();
            tokio::spawn(async move { c.test_channel("ops").await.unwrap().id })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for s in sends {
        ids.insert(s.await.unwrap());
    }
    receiver.wait_for(40, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-jobdock-delivery").unwrap().to_string())
        .collect();
    assert_eq!(got.len(), 40, "each alert sent once, not once per replica");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), ids);
    let mut cursor = None;
    let mut delivered = 0;
    loop {
        let page = clients[1]
            .deliveries("ops", cursor.as_deref())
            .await
            .unwrap();
        for d in &page.items {
            assert_eq!((d.status, d.attempts.len()), (DeliveryStatus::Delivered, 1));
            delivered += 1;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(delivered, 40);
}
