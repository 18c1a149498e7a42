//! Errors as `application/problem+json` (RFC 9457).

use serde::{Deserialize, Serialize};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer. Validation errors list every bad field in `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request's id, also in the `x-request-id` header; quote it when asking for help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The fields that are wrong, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For a 409 caused by a run holding a slot: that run's id. For the outcome of a run
    /// that did not succeed (424): the run's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// For the outcome of a run that did not succeed (424): its final status (`failed`,
    /// `timed_out`, `cancelled`, `lost`, `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_status: Option<crate::RunStatus>,
    /// For the outcome of a run that did not succeed: its exit code, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// For the outcome of a run that did not succeed: why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For the outcome of a run that did not succeed: where its log is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field's path, e.g. `resources.memory_mb` or `env.MY-VAR`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.title)?;
        // A single field error's summary is the detail: say it once.
        let repeats = |d: &str| matches!(self.errors.as_slice(), [e] if d == e.message || d == format!("{}: {}", e.field, e.message));
        if let Some(d) = self.detail.as_deref().filter(|d| !repeats(d)) {
            write!(f, ": {d}")?;
        }
        for e in &self.errors {
            write!(f, "\n  {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(detail: &str, errors: Vec<FieldError>) -> Problem {
        Problem {
            type_: "about:blank".into(),
            title: "Unprocessable Entity".into(),
            status: 422,
            detail: Some(detail.into()),
            request_id: None,
            errors,
            run_id: None,
            run_status: None,
            exit_code: None,
            reason: None,
            logs_url: None,
        }
    }

    #[test]
    fn a_single_field_error_is_said_once() {
        let one = problem(
            "image: must not be empty",
            vec![FieldError::new("image", "must not be empty")],
        );
        assert_eq!(
            one.to_string(),
            "Unprocessable Entity\n  image: must not be empty"
        );
        let two = problem(
            "2 fields are invalid",
            vec![FieldError::new("a", "x"), FieldError::new("b", "y")],
        );
        assert_eq!(
            two.to_string(),
            "Unprocessable Entity: 2 fields are invalid\n  a: x\n  b: y"
        );
    }
}
