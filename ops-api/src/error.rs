//! Errors as every endpoint returns them: a status and one stable JSON shape,
//! `{"code": "...", "message": "...", "details": [{"field": "...", "message": "..."}]}`.
//! `details` lists the fields at fault of a validation error and is empty otherwise.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// A field of a request that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FieldError {
    /// The query parameter or body field (a JSON path for nested ones).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code: `invalid_parameter`, `malformed_body`, `invalid_body`,
    /// `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`,
    /// `not_available`, `cluster_unavailable`, `store_unavailable`, `internal`.
    pub code: &'static str,
    /// What a person reads.
    pub message: String,
    /// The fields at fault.
    pub details: Vec<FieldError>,
}

/// The body of every error response.
#[derive(Serialize, JsonSchema)]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code (see [`ApiError::code`]).
    pub code: &'a str,
    /// What a person reads.
    pub message: &'a str,
    /// The fields at fault (a validation error), else empty.
    pub details: &'a [FieldError],
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new() }
    }

    /// 400 for bad fields.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        Self {
            message: format!("invalid request: {}", fields.join(", ")),
            details,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", "")
        }
    }

    /// 400 for one bad field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError { field: field.to_owned(), message: message.into() }])
    }

    /// 400: a request body that is not JSON; `message` says where it breaks.
    pub fn malformed_body(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: vec![FieldError { field: "body".into(), message: message.clone() }],
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("the body is not valid JSON: {message}"),
            )
        }
    }

    /// 422: a body that is JSON but not a valid object; `details` names each field at fault.
    pub fn invalid_body(details: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        Self {
            message: format!("invalid body: {}", fields.join(", ")),
            details,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "")
        }
    }

    /// 409: the thing exists already or is busy.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 501: what this server cannot do in the mode it runs in.
    pub fn not_available(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_available", message)
    }

    /// 502: the Kubernetes API server failed or refused. The cause goes to the log; `message`
    /// says what to check.
    pub fn cluster(message: impl Into<String>, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "Kubernetes API request failed");
        Self::new(StatusCode::BAD_GATEWAY, "cluster_unavailable", message)
    }

    /// 401: no or an unknown token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a token whose role is not enough.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed here")
    }

    /// 503: the store failed. The cause goes to the log, not to the client.
    pub fn store(error: &kuant_store::SqlError) -> Self {
        tracing::error!(%error, "store query failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot answer now; try again",
        )
    }

    /// 500. The cause goes to the log, not to the client.
    pub fn internal(cause: &str) -> Self {
        tracing::error!(cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

/// Reads a JSON request body into `T`: 400 `malformed_body` when it is not JSON, 422
/// `invalid_body` naming the field when it does not fit `T` (an unknown field, a wrong type).
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "malformed_body", e.body_text()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::malformed_body(e.to_string()))?;
    serde_path_to_error::deserialize(&value).map_err(|e| {
        // The path names an unknown field too (serde_path_to_error tracks the key it refused).
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        ApiError::invalid_body(vec![FieldError { field, message }])
    })
}

impl From<kuant_store::SqlError> for ApiError {
    fn from(e: kuant_store::SqlError) -> Self {
        Self::store(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code, message: &self.message, details: &self.details };
        (self.status, axum::Json(body)).into_response()
    }
}
