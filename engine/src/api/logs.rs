//! `GET /api/v1/runs/{id}/logs`: the whole log as text or JSON lines, streamed from the
//! store (so any replica serves it), optionally followed until the run ends — as a plain
//! stream or as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{self, Stream, StreamExt};
use jobdock_types::{LogEntry, Problem};
use serde::Deserialize;

use super::auth::{Caller, Read};
use super::error::ApiError;
use super::query::ApiQuery;
use super::AppState;
use crate::service::runs as svc;
use crate::store::logs::LogRow;
use crate::store::Store;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Lines read from the store per step.
const PAGE: i64 = 2000;
/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// Query of the log endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// `text` (default): `<RFC 3339 time> <stream> <line>`; `jsonl`: one JSON object per line.
    #[param(value_type = Option<LogFormatParam>, inline)]
    format: Option<String>,
    /// Keep the answer open and stream new lines until the run ends.
    #[serde(default)]
    follow: bool,
    /// Only lines after this line number (the `id` of the last server-sent event), to resume
    /// a follow. A whole read is ordered by time; a follow, by arrival.
    #[serde(default)]
    after: i64,
    /// Only the last this many lines (1 to 10000): of the whole log in time order, or, with
    /// `follow`, the last stored before the new ones follow. With `after`, of the lines
    /// after it.
    #[param(minimum = 1, maximum = 10000)]
    tail: Option<i64>,
}

/// The values of `format`, for the OpenAPI document (the handler reads the text itself, to
/// name the parameter in its error).
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum LogFormatParam {
    Text,
    Jsonl,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Jsonl,
}

/// A run's log: stdout and stderr interleaved in the order written.
#[utoipa::path(get, operation_id = "getRunLogs", path = "/api/v1/runs/{id}/logs", tag = "runs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, description = "The log: `text/plain` (`format=text`), `application/jsonl` (`format=jsonl`), or server-sent events when the request accepts `text/event-stream`",
        content((String = "text/plain"), (String = "application/jsonl"), (String = "text/event-stream"))),
        (status = 404, body = Problem)))]
pub async fn logs(
    caller: Caller<Read>,
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = svc::row(&s.ctx, &id).await?;
    caller.check_job(&run.job_name)?;
    let format = match q.format.as_deref() {
        None | Some("text") => Format::Text,
        Some("jsonl") => Format::Jsonl,
        Some(_) => return Err(ApiError::invalid("format", "must be `text` or `jsonl`")),
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // Where reading starts: after a line number, and (for a whole read, in time order) after
    // a position in time.
    let (after, at) = match q.tail {
        None => (q.after, None),
        Some(n) if !(1..=10_000).contains(&n) => {
            return Err(ApiError::invalid("tail", "must be between 1 and 10000"))
        }
        Some(n) => match s.ctx.store.tail_start(&id, n, !q.follow).await? {
            None => (q.after, None),
            Some((_, line_no)) if q.follow => (q.after.max(line_no), None),
            Some(at) => (q.after, Some(at)),
        },
    };
    let lines = line_stream(s.ctx.store.clone(), id, after, at, q.follow);
    if sse {
        let events = lines.map(move |batch| {
            Ok::<_, Infallible>(match batch {
                Chunk::Lines(rows) => {
                    let data: Vec<String> = rows.iter().map(jsonl).collect();
                    Event::default()
                        .id(rows
                            .last()
                            .map(|r| r.line_no)
                            .unwrap_or_default()
                            .to_string())
                        .event("log")
                        .data(data.join("\n"))
                }
                Chunk::End(status) => Event::default().event("end").data(status),
            })
        });
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let body = lines.filter_map(move |batch| async move {
        match batch {
            Chunk::Lines(rows) => {
                let mut out = String::new();
                for r in &rows {
                    match format {
                        Format::Text => out.push_str(&text(r)),
                        Format::Jsonl => out.push_str(&jsonl(r)),
                    }
                    out.push('\n');
                }
                Some(Ok::<_, Infallible>(out))
            }
            Chunk::End(_) => None,
        }
    });
    let ctype = match format {
        Format::Text => "text/plain; charset=utf-8",
        Format::Jsonl => "application/jsonl",
    };
    let mut resp = Body::from_stream(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}

fn ts(ns: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(ns)
}

fn text(r: &LogRow) -> String {
    format!(
        "{} {} {}",
        ts(r.ts).to_rfc3339_opts(SecondsFormat::Nanos, true),
        r.stream,
        r.line
    )
}

fn jsonl(r: &LogRow) -> String {
    let e = LogEntry {
        ts: ts(r.ts),
        stream: r.stream.clone(),
        line: r.line.clone(),
        attempt: r.attempt,
    };
    serde_json::to_string(&e).expect("a log entry serialises")
}

enum Chunk {
    Lines(Vec<LogRow>),
    End(String),
}

struct Cursor {
    store: Store,
    run_id: String,
    after: i64,
    /// Position in time order, for a whole read.
    at: Option<(i64, i64)>,
    follow: bool,
    ended: bool,
}

impl Cursor {
    /// A whole read is in time order; a follower gets lines in the order they were stored,
    /// so that it can resume after a line number.
    async fn page(&mut self) -> Result<Vec<LogRow>, crate::store::StoreError> {
        if self.follow {
            let rows = self.store.logs(&self.run_id, self.after, PAGE).await?;
            if let Some(last) = rows.last() {
                self.after = last.line_no;
            }
            Ok(rows)
        } else {
            let rows = self
                .store
                .logs_by_time(&self.run_id, self.at, self.after, PAGE)
                .await?;
            if let Some(last) = rows.last() {
                self.at = Some((last.ts, last.line_no));
            }
            Ok(rows)
        }
    }
}

/// Pages of lines; when following, waits for more until the run is final and every line
/// has been sent. The status is read before the lines: a final status means the log is
/// complete, so an empty page after it is the true end.
fn line_stream(
    store: Store,
    run_id: String,
    after: i64,
    at: Option<(i64, i64)>,
    follow: bool,
) -> impl Stream<Item = Chunk> {
    let start = Cursor {
        store,
        run_id,
        after,
        at,
        follow,
        ended: false,
    };
    stream::unfold(start, |mut c| async move {
        if c.ended {
            return None;
        }
        loop {
            let status = c.store.status_of(&c.run_id).await.ok().flatten();
            let rows = match c.page().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "reading log lines failed");
                    return None;
                }
            };
            if !rows.is_empty() {
                return Some((Chunk::Lines(rows), c));
            }
            let done = status.is_none_or(|s| s.is_final());
            if done || !c.follow {
                c.ended = true;
                let s = status.map(|s| s.as_str().to_string()).unwrap_or_default();
                return Some((Chunk::End(s), c));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    })
}
