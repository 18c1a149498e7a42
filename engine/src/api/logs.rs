//! `GET /api/v1/runs/{id}/logs`: the whole log as text or JSON lines, streamed from the
//! store (so any replica serves it), optionally followed until the run ends — as a plain
//! stream or as server-sent events.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::StreamExt;
use jobdock_types::{LogEntry, Problem};
use serde::Deserialize;

use super::auth::{Caller, Read};
use super::error::ApiError;
use super::query::ApiQuery;
use super::AppState;
use crate::service::logs::{self as log, Chunk};
use crate::service::runs as svc;
use crate::store::logs::LogRow;
use utoipa_axum::{router::OpenApiRouter, routes};

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
    /// A signed link's expiry (Unix seconds), from a run's `logs_url`. Read by the
    /// authentication, before the handler.
    #[allow(dead_code)]
    exp: Option<i64>,
    /// A signed link's signature.
    #[allow(dead_code)]
    sig: Option<String>,
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
    security(("bearer" = []), ("basic" = []), ("signed_link" = [])),
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
    let start = log::Start {
        after: q.after,
        tail: q.tail,
        follow: q.follow,
    };
    let lines = log::lines(&s.ctx, id, start).await?;
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
