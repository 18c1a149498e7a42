//! What an alert looks like on the wire, and one attempt at sending it.
//!
//! A webhook gets a JSON body signed with `X-Jobdock-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">`: receivers check the HMAC with the channel's signing secret
//! and refuse old timestamps, so a captured request cannot be replayed later. Every request
//! carries `X-Jobdock-Delivery: <alert id>`, the same on each retry, for receivers to dedupe.
//! A Slack channel gets `{"text": …}`. Nothing here logs or returns the URL: it may be a
//! credential.

use std::time::{Duration, Instant};

use jobdock_types::ChannelKind;
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::store::alerts::outbox::{AttemptResult, OutboxRow};
use crate::store::{from_ms, now_ms};

/// Longest part of a refusing receiver's answer kept with the attempt.
const ANSWER_SNIPPET: usize = 200;

/// A request ready to send: its body and the headers beyond `Content-Type`.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The link to the run in the API, when the engine knows its public address.
fn run_url(alert: &OutboxRow, public_url: Option<&str>) -> Option<String> {
    let base = public_url?.trim_end_matches('/');
    Some(format!("{base}/api/v1/runs/{}", alert.run_id.as_deref()?))
}

/// The request for `alert` on a channel of `kind`, signed at `now_s` (Unix seconds) when a
/// signing secret is given.
pub(super) fn request(
    alert: &OutboxRow,
    kind: ChannelKind,
    signing_secret: Option<&SecretString>,
    public_url: Option<&str>,
    now_s: i64,
) -> Outgoing {
    let link = run_url(alert, public_url);
    let body = match kind {
        ChannelKind::Webhook => {
            let mut b = json!({
                "id": alert.id,
                "event": alert.event,
                "job": alert.job_name,
                "run_id": alert.run_id,
                "summary": alert.summary,
                "details": alert.details,
                "occurred_at": from_ms(alert.occurred_at),
            });
            if let Some(link) = &link {
                b["run_url"] = json!(link);
            }
            b
        }
        ChannelKind::Slack => json!({ "text": slack_text(alert, link.as_deref()) }),
    };
    let body = serde_json::to_vec(&body).expect("JSON values serialise");
    let mut headers = vec![
        ("x-jobdock-delivery", alert.id.clone()),
        ("x-jobdock-event", alert.event.clone()),
    ];
    if let Some(secret) = signing_secret {
        headers.push(("x-jobdock-signature", signature(secret, now_s, &body)));
    }
    Outgoing { body, headers }
}

/// `t=<now_s>,v1=<hex HMAC-SHA256 of "<now_s>.<body>">`.
pub(super) fn signature(secret: &SecretString, now_s: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{now_s}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={now_s},v1={hex}")
}

/// One line for people: an emoji for the event, the summary, and a link to the run.
fn slack_text(alert: &OutboxRow, link: Option<&str>) -> String {
    let mark = match alert.event.as_str() {
        "failure" => ":red_circle:",
        "timeout" => ":hourglass:",
        "anomaly" => ":warning:",
        "recovery" => ":large_green_circle:",
        "success" => ":white_check_mark:",
        _ => ":bell:",
    };
    // Slack reads `&`, `<` and `>` as markup.
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut text = format!("{mark} *{}* {}", alert.event, escape(&alert.summary));
    if let Some(link) = link {
        text.push_str(&format!("\n<{link}|Open the run>"));
    }
    text
}

/// Sends one request and says how it went. Never fails: an error is an attempt's outcome.
pub(super) async fn send(
    http: &reqwest::Client,
    url: &SecretString,
    out: Outgoing,
    timeout: Duration,
) -> AttemptResult {
    let at = now_ms();
    let started = Instant::now();
    let mut req = http
        .post(url.expose_secret())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(out.body);
    for (name, value) in out.headers {
        req = req.header(name, value);
    }
    let (http_status, error) = match req.send().await {
        Ok(mut resp) => {
            let status = resp.status();
            if status.is_success() {
                (Some(status.as_u16()), None)
            } else {
                let answer = snippet(&mut resp).await;
                let error = match answer.trim() {
                    "" => format!("HTTP {}", status.as_u16()),
                    a => format!("HTTP {}: {a}", status.as_u16()),
                };
                (Some(status.as_u16()), Some(error))
            }
        }
        Err(e) => (None, Some(describe(e, timeout))),
    };
    AttemptResult {
        at,
        http_status,
        error,
        duration_ms: started.elapsed().as_millis() as i64,
    }
}

/// The start of a refusing receiver's answer (Slack says why in it, e.g. `invalid_token`).
async fn snippet(resp: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_SNIPPET {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    bytes.truncate(ANSWER_SNIPPET);
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

/// An error in words, without the URL (reqwest's own message names it).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobdock_types::DeliveryStatus;

    fn alert() -> OutboxRow {
        OutboxRow {
            seq: 1,
            id: "a1".into(),
            channel_id: Some("c".into()),
            callback_id: None,
            event: "failure".into(),
            job_name: Some("orders".into()),
            run_id: Some("r1".into()),
            occurred_at: 1_700_000_000_000,
            summary: "run r1 of orders failed <badly> & loudly".into(),
            details: json!({ "exit_code": 3 }),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: None,
            claimed_by: None,
            claimed_until: None,
            delivered_at: None,
        }
    }

    fn hex(tag: hmac::Tag) -> String {
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_signature_is_an_hmac_of_the_time_and_the_body() {
        // RFC 4231 test case 2, to know that the HMAC is SHA-256's.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            hex(hmac::sign(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(&SecretString::from("Jefe"), 1_700_000_000, b"{\"a\":1}");
        let want = hex(hmac::sign(&key, b"1700000000.{\"a\":1}"));
        assert_eq!(sig, format!("t=1700000000,v1={want}"));
    }

    #[test]
    fn webhooks_get_the_alert_as_json_signed_and_slack_gets_text() {
        let secret = SecretString::from("s3cret-s3cret-s3cret");
        let out = request(
            &alert(),
            ChannelKind::Webhook,
            Some(&secret),
            Some("https://jd.example.com/"),
            1_700_000_123,
        );
        let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["id"], "a1");
        assert_eq!(body["event"], "failure");
        assert_eq!(body["run_url"], "https://jd.example.com/api/v1/runs/r1");
        assert_eq!(body["occurred_at"], "2023-11-14T22:13:20Z");
        assert_eq!(body["details"]["exit_code"], 3);
        let sig = &out
            .headers
            .iter()
            .find(|(n, _)| *n == "x-jobdock-signature")
            .unwrap()
            .1;
        assert_eq!(sig, &signature(&secret, 1_700_000_123, &out.body));
        assert!(out.headers.contains(&("x-jobdock-delivery", "a1".into())));

        let plain = request(&alert(), ChannelKind::Webhook, Some(&secret), None, 1);
        let body: serde_json::Value = serde_json::from_slice(&plain.body).unwrap();
        assert!(
            body.get("run_url").is_none(),
            "no link without a public URL"
        );

        let slack = request(
            &alert(),
            ChannelKind::Slack,
            None,
            Some("https://jd.example.com"),
            1,
        );
        let body: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
        assert_eq!(
            body["text"],
            ":red_circle: *failure* run r1 of orders failed &lt;badly&gt; &amp; loudly\n\
             <https://jd.example.com/api/v1/runs/r1|Open the run>"
        );
        assert!(slack
            .headers
            .iter()
            .all(|(n, _)| *n != "x-jobdock-signature"));
    }
}
