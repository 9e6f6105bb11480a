//! The one mapping from failures to HTTP: `{"error","message"}` with a 4xx for the caller's
//! mistakes; storage failures become an opaque 500 and are logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::IdError;
use crate::store::{ReadError, WriteError};

/// What a 503 asks the caller to wait before trying again.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every refusal (it is also the document's `ErrorBody` schema).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody<'a> {
    /// A machine-readable code, e.g. `invalid_request`, `invalid_transition`, `not_found`.
    error: &'a str,
    /// What was wrong, for a person.
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn malformed(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 2 MB",
        )
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 503 `store_unavailable`: nothing was written, and the same call may succeed later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let message = e.to_string();
        match e {
            WriteError::NotFound(_) => ApiError::not_found(message),
            WriteError::OperationConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "operation_conflict", message)
            }
            WriteError::EventIdReused(_) => {
                ApiError::new(StatusCode::CONFLICT, "event_id_reused", message)
            }
            WriteError::DecisionIdReused(_) => {
                ApiError::new(StatusCode::CONFLICT, "decision_id_reused", message)
            }
            WriteError::Refused(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", message)
            }
            WriteError::Missing(_) => ApiError::not_found(message),
            WriteError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            WriteError::Unavailable(_) => ApiError::unavailable(message),
            WriteError::Internal(_) => ApiError::internal(message),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            ReadError::Internal(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Long enough for a disk to be freed or a database to fail over, short enough
            // that a client's retry soon finds the store back.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_cannot_take_writes_is_a_503_store_unavailable_with_retry_after() {
        let response = ApiError::from(WriteError::Unavailable("no space left on device".into()))
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS))
        );
        let error = ApiError::from(WriteError::Unavailable("x".into()));
        assert_eq!(error.code, "store_unavailable");
    }

    #[test]
    fn other_errors_carry_no_retry_after() {
        let response = ApiError::from(WriteError::NotFound("tg".into())).into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .is_none());
    }
}
