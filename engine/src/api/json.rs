//! JSON bodies whose errors name the field: `resources.memory_mb: invalid type: string "x",
//! expected i64` rather than a bare parse error (read by [`crate::json`]).

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use jobdock_types::FieldError;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::json::{from_slice, from_value};

/// A JSON body, deserialised with the path of any bad field, and checked against the schema
/// the OpenAPI document declares for `T` ([`super::shape`]).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + utoipa::ToSchema> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = read_object(req, state).await?;
        let mistyped = super::shape::type_errors(&T::name(), &value);
        // serde's errors first: they name the field and suggest the nearest known one.
        let body = from_value(value).map_err(ApiError::Invalid)?;
        if !mistyped.is_empty() {
            return Err(ApiError::Invalid(mistyped));
        }
        Ok(ApiJson(body))
    }
}

/// A JSON merge patch (RFC 7396) of a `T`, read by the service against what it patches; its
/// JSON types are checked against the document's `<T>Patch` schema ([`super::rules`]).
#[derive(Debug, Clone)]
pub struct MergePatch<T>(pub serde_json::Value, pub PhantomData<T>);

impl<S: Send + Sync, T: utoipa::ToSchema> FromRequest<S> for MergePatch<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = read_object(req, state).await?;
        let mistyped = super::shape::type_errors(&format!("{}Patch", T::name()), &value);
        if !mistyped.is_empty() {
            return Err(ApiError::Invalid(mistyped));
        }
        Ok(MergePatch(value, PhantomData))
    }
}

/// The body as a JSON object, its integral floats made integers.
async fn read_object<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<serde_json::Value, ApiError> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m == "application/json" || m.ends_with("+json")
        });
    if json_type != Some(true) {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON, sent with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    // Every body of the API is an object; serde would also read a struct from an array of
    // its fields in order (`["a", "read"]` as a token), which no client means.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    let mut value: serde_json::Value = from_slice(&bytes).map_err(ApiError::Invalid)?;
    super::shape::integral_floats_as_integers(&mut value);
    Ok(value)
}

/// An optional JSON body: an empty body (with or without a content type) is `T::default()`.
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default + utoipa::ToSchema> FromRequest<S>
    for OptionalJson<T>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = req.headers().contains_key(header::CONTENT_TYPE);
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length == Some(0) || (!declared && length.is_none()) {
            return Ok(Self(T::default()));
        }
        ApiJson::from_request(req, state)
            .await
            .map(|ApiJson(v)| Self(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(text: &str) -> Result<jobdock_types::NewToken, ApiError> {
        let req = axum::http::Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(text.to_owned()))
            .unwrap();
        ApiJson::from_request(req, &()).await.map(|ApiJson(v)| v)
    }

    /// serde reads a struct from an array of its fields too; the API takes objects only.
    #[tokio::test]
    async fn an_array_is_not_an_object() {
        for text in [r#"["a", "read"]"#, " []", "\"x\"", "42"] {
            match body_of(text).await {
                Err(ApiError::Invalid(errors)) => {
                    assert_eq!(errors[0].field, "body", "{text}");
                    assert_eq!(errors[0].message, "must be a JSON object");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let ok = body_of(r#" {"name": "a", "scope": "read"}"#).await.unwrap();
        assert_eq!(ok.name, "a");
    }
}
