//! The one HTTP error type: it logs the cause and answers with a generic body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_store::StoreError;
use keygate_vault::VaultError;

/// An error answered to an HTTP client. The body is `{"error": code, "message": text}`;
/// `message` never holds secret material or internal detail.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required (Authorization: Bearer …)",
        )
    }

    /// Logs `cause` and answers 500 without it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// An audited operation refused because its audit entry could not be written (S23):
    /// says so, so an operator looks at the audit store rather than at the secret.
    pub fn audit_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "audit entry could not be written; operation refused");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit entry for this operation could not be written, so it was refused; try again later",
        )
    }

    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a dependency of keygate is unavailable; try again later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::admin::api::ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use StatusCode as S;
        match &e {
            VaultError::Sealed(reason) => {
                tracing::warn!(%reason, "secret operation refused: vault sealed");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "sealed",
                    "the vault is sealed: keygate started without its master key (or with the wrong one); secret operations are unavailable until it restarts with the right key",
                )
            }
            VaultError::NotFound => ApiError::new(S::NOT_FOUND, "not_found", e.to_string()),
            VaultError::Deleted => ApiError::new(S::NOT_FOUND, "deleted", e.to_string()),
            VaultError::NoSuchVersion(_) => {
                ApiError::new(S::NOT_FOUND, "no_such_version", e.to_string())
            }
            VaultError::Destroyed(_) => ApiError::new(S::GONE, "destroyed", e.to_string()),
            VaultError::Conflict { .. } => ApiError::new(S::CONFLICT, "conflict", e.to_string()),
            VaultError::InvalidName(_) | VaultError::Empty | VaultError::Invalid(_) => {
                ApiError::bad_request(e.to_string())
            }
            VaultError::TooLarge { .. } => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            VaultError::KeyRotated => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "key_rotated", e.to_string())
            }
            VaultError::Store(inner) => ApiError::from_store(inner),
            VaultError::Tampered(_) | VaultError::MasterKey(_) => ApiError::internal(&e),
        }
    }
}

impl ApiError {
    /// The one mapping of a store error to an answer: what the caller can act on gets its
    /// own status (a missing row 404, a taken name or a lost check-and-set 409); a store
    /// that cannot answer (or answers with corrupt data) is a 503. The message never holds the
    /// store's detail beyond what the variant says.
    fn from_store(e: &StoreError) -> Self {
        use StatusCode as S;
        match e {
            StoreError::NotFound => ApiError::new(S::NOT_FOUND, "not_found", "not found"),
            StoreError::Duplicate(what) => {
                ApiError::new(S::CONFLICT, "exists", format!("{what} already exists"))
            }
            StoreError::AlreadyInitialized => ApiError::new(S::CONFLICT, "exists", e.to_string()),
            StoreError::Conflict { .. } => ApiError::new(S::CONFLICT, "conflict", e.to_string()),
            StoreError::AuditUnavailable(_) => ApiError::audit_unavailable(e),
            StoreError::KeyMismatch
            | StoreError::Corrupt(_)
            | StoreError::BadUrl(_)
            | StoreError::Database(_)
            | StoreError::Migrate(_) => ApiError::unavailable(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_store(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_error_has_its_status() {
        let cases = [
            (StoreError::NotFound, StatusCode::NOT_FOUND, "not_found"),
            (
                StoreError::Duplicate("user a".into()),
                StatusCode::CONFLICT,
                "exists",
            ),
            (
                StoreError::AlreadyInitialized,
                StatusCode::CONFLICT,
                "exists",
            ),
            (
                StoreError::Conflict { current: 3 },
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                StoreError::AuditUnavailable(Box::new(StoreError::Corrupt("x".into()))),
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
            ),
            (
                StoreError::Corrupt("row 7".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                StoreError::KeyMismatch,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
        ];
        for (e, status, code) in cases {
            let what = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code), (status, code), "{what}");
        }
        // Through the vault, the same mapping.
        let api = ApiError::from(VaultError::Store(StoreError::Duplicate("user a".into())));
        assert_eq!(api.status, StatusCode::CONFLICT);
    }
}
