//! `GET /api/v1/runs/{id}/logs?tail=N`: the last lines of a run's log, for a failure's
//! message and an operator's task log; `jobdock logs --tail N`.

use jobdock_testkit::app::ADMIN_TOKEN;

use crate::{app, run_to_end, sh_job};

#[tokio::test]
async fn the_tail_is_the_last_lines_of_the_log() {
    let app = app(false).await;
    let c = app.admin();
    c.create_job(&sh_job(
        "tail-job",
        "i=1; while [ $i -le 50 ]; do echo line-$i; i=$((i+1)); done; exit 4",
    ))
    .await
    .unwrap();
    let run = run_to_end(&c, "tail-job").await;
    let numbers = |text: &str| -> Vec<u32> {
        text.lines()
            .filter_map(|l| l.rsplit_once("line-"))
            .map(|(_, rest)| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect()
    };
    assert_eq!(
        numbers(&c.logs_tail_text(&run.id, 5).await.unwrap()),
        [46, 47, 48, 49, 50]
    );
    assert_eq!(
        numbers(&c.logs_tail_text(&run.id, 500).await.unwrap()).len(),
        50
    );
    let followed = c
        .logs_response_tail(&run.id, "jsonl", true, Some(2))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(numbers(&followed), [49, 50], "{followed}");

    // With `after`, the tail is of the lines after it.
    let http = reqwest::Client::new();
    let both = http
        .get(format!(
            "{}/api/v1/runs/{}/logs?tail=5&after=48",
            app.url(),
            run.id
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(numbers(&both), [49, 50], "{both}");
    for query in ["tail=0", "tail=10001", "tail=x"] {
        let resp = http
            .get(format!("{}/api/v1/runs/{}/logs?{query}", app.url(), run.id))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422, "{query}");
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("tail"),
            "{query}: {problem}"
        );
    }

    let out = app.cli(&["logs", &run.id, "--tail", "3"], ADMIN_TOKEN, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(numbers(&stdout), [48, 49, 50], "{stdout}");
}
