//! `/api/v1/channels`: notification channels, their deliveries, and test alerts. Changing a
//! channel needs an admin token; reading, a read token. Channels serve every job, so a token
//! restricted to some jobs may list them but not change them or read their deliveries (which
//! tell of other jobs' runs).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use jobdock_types::{Channel, CreatedChannel, Delivery, NewChannel, Page, Problem};

use super::auth::{Admin, Installation, Read};
use super::error::ApiError;
use super::json::{ApiJson, MergePatch};
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::service::{alerts, channels};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module. The path names `{channel}`, not `{name}`: a channel is not a
/// job, so a token's job patterns do not apply to its name.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, patch, remove))
        .routes(routes!(deliveries))
        .routes(routes!(test))
}

/// Create a channel. A webhook's signing secret is in this answer only.
#[utoipa::path(post, operation_id = "createChannel", path = "/api/v1/channels", tag = "channels", request_body = NewChannel,
    responses((status = 201, body = CreatedChannel), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    ApiJson(new): ApiJson<NewChannel>,
) -> Result<impl IntoResponse, ApiError> {
    let created = channels::create(&s.ctx, &caller.actor, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A page of channels (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChannelPage {
    items: Vec<Channel>,
    next_cursor: Option<String>,
}

/// List channels, ordered by name.
#[utoipa::path(get, operation_id = "listChannels", path = "/api/v1/channels", tag = "channels", params(PageQuery),
    responses((status = 200, body = ChannelPage)))]
pub async fn list(
    _caller: Installation<Read>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Channel>>, ApiError> {
    Ok(Json(
        channels::list(&s.ctx, q.cursor.as_deref(), q.limit()?).await?,
    ))
}

/// One channel (its URL as scheme and host only).
#[utoipa::path(get, operation_id = "getChannel", path = "/api/v1/channels/{channel}", tag = "channels", params(("channel" = String, Path)),
    responses((status = 200, body = Channel), (status = 404, body = Problem)))]
pub async fn read(
    _caller: Installation<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(channels::get(&s.ctx, &name).await?))
}

/// Change a channel with a JSON merge patch (RFC 7396): `url`, `signing_secret`,
/// `description`, `subscribe`.
#[utoipa::path(patch, operation_id = "patchChannel", path = "/api/v1/channels/{channel}", tag = "channels", params(("channel" = String, Path)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Channel), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    MergePatch(patch, _): MergePatch<NewChannel>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(
        channels::patch(&s.ctx, &caller.actor, &name, patch).await?,
    ))
}

/// Delete a channel and its undelivered alerts. Refused while a job's `alerts` names it.
#[utoipa::path(delete, operation_id = "deleteChannel", path = "/api/v1/channels/{channel}", tag = "channels", params(("channel" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    channels::delete(&s.ctx, &caller.actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of deliveries (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeliveryPage {
    items: Vec<Delivery>,
    next_cursor: Option<String>,
}

/// The channel's alerts, newest first, each with every attempt at delivering it.
#[utoipa::path(get, operation_id = "listChannelDeliveries", path = "/api/v1/channels/{channel}/deliveries", tag = "channels",
    params(("channel" = String, Path), PageQuery),
    responses((status = 200, body = DeliveryPage), (status = 404, body = Problem)))]
pub async fn deliveries(
    _caller: Installation<Read>,
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let limit = q.limit()?;
    Ok(Json(
        alerts::deliveries(&s.ctx, &name, q.cursor.as_deref(), limit).await?,
    ))
}

/// Send a test alert through the channel: it is delivered, retried and recorded like any
/// other. Answers 202 with the pending delivery.
#[utoipa::path(post, operation_id = "testChannel", path = "/api/v1/channels/{channel}/test", tag = "channels", params(("channel" = String, Path)),
    responses((status = 202, body = Delivery), (status = 404, body = Problem)))]
pub async fn test(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let delivery = alerts::send_test(&s.ctx, &caller.actor, &name).await?;
    s.runner.alerts_due();
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}
