//! Errors as every endpoint returns them: a status and one stable JSON shape,
//! `{"code": "...", "message": "...", "details": [{"field": "...", "message": "..."}]}`.
//! `details` lists the fields at fault of a validation error and is empty otherwise.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A field of a request that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// Stable machine-readable code: `invalid_parameter`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `store_unavailable`, `internal`.
    pub code: &'static str,
    /// What a person reads.
    pub message: String,
    /// The fields at fault.
    pub details: Vec<FieldError>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a [FieldError],
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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

impl From<kuant_store::SqlError> for ApiError {
    fn from(e: kuant_store::SqlError) -> Self {
        Self::store(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { code: self.code, message: &self.message, details: &self.details };
        (self.status, axum::Json(body)).into_response()
    }
}
