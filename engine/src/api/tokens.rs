//! `/api/v1/tokens`: API tokens, admin only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use jobdock_types::{CreatedToken, NewToken, Page, Problem, TokenInfo};

use super::auth::{Admin, Installation};
use super::error::ApiError;
use super::json::ApiJson;
use super::query::{ApiQuery, PageQuery};
use super::AppState;
use crate::service::tokens;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// Create a token. Its value is in this answer only.
#[utoipa::path(post, operation_id = "createToken", path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = Problem)))]
pub async fn create(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<impl IntoResponse, ApiError> {
    let created = tokens::create(&s.ctx, &caller.actor, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A page of tokens (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenPage {
    items: Vec<TokenInfo>,
    next_cursor: Option<String>,
}

/// List live tokens, never their values.
#[utoipa::path(get, operation_id = "listTokens", path = "/api/v1/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = TokenPage)))]
pub async fn list(
    _caller: Installation<Admin>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<TokenInfo>>, ApiError> {
    Ok(Json(
        tokens::list(&s.ctx, q.cursor.as_deref(), q.limit()?).await?,
    ))
}

/// Revoke a token.
#[utoipa::path(delete, operation_id = "revokeToken", path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke(
    Installation(caller): Installation<Admin>,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tokens::revoke(&s.ctx, &caller.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
