//! The API's errors and the one place that maps them to HTTP statuses.

use baton_chain::store::StoreError;

use crate::bodies::{ErrorBody, ErrorDetail};
use lambda_http::{Body, Response};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {message}")]
    InvalidJson {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{message}")]
    InvalidRequest { message: String, details: Value },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// No valid identity: the token's claims do not name a tenant.
    #[error("{0}")]
    Unauthorized(String),
    /// No identity at all where the headers carry it (`AuthMode=header`): no bearer challenge.
    #[error("{0}")]
    NoIdentity(String),
    /// The caller is not the operator; operator routes answer this, and nothing else.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// `allowed`: the path's methods, for the `Allow` header.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    /// A dependency failed. The cause is logged with the request's id; the answer says only
    /// that (it would show the operator's resources and the store's internals).
    #[error("the service could not complete the request: {0}")]
    Unavailable(String),
    /// A quota refuses the request: `429` with `Retry-After` when waiting helps, `409` when
    /// something must be removed first.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        details: Value,
        retry_after_s: Option<u64>,
    },
    /// A request refused for the state of what it names, with its own code.
    #[error("{message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
        details: Value,
    },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, details: Value) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            details,
        }
    }

    fn status(&self) -> u16 {
        match self {
            ApiError::InvalidJson { .. } | ApiError::InvalidRequest { .. } => 400,
            ApiError::Unauthorized(_) | ApiError::NoIdentity(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Unavailable(_) => 503,
            ApiError::Refused { status, .. } => *status,
            ApiError::QuotaExceeded { retry_after_s, .. } => match retry_after_s {
                Some(_) => 429,
                None => 409,
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized(_) | ApiError::NoIdentity(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Refused { code, .. } => code,
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::InvalidJson { line, column, .. } => json!({ "line": line, "column": column }),
            ApiError::InvalidRequest { details, .. } => details.clone(),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::Refused { details, .. } | ApiError::QuotaExceeded { details, .. } => {
                details.clone()
            }
            _ => json!({}),
        }
    }

    /// The answer to `request_id`'s request.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let (message, details) = match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(%cause, request_id, "request failed on a dependency");
                (
                    format!(
                        "the service could not complete the request; it may be sent again \
                         (request id {request_id})"
                    ),
                    json!({ "request_id": request_id }),
                )
            }
            _ => (self.to_string(), self.details()),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message,
                details,
            },
        };
        let mut response = json_response(self.status(), &body);
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            // RFC 9110: a 405 lists the methods the resource has.
            if let Ok(allow) = http::HeaderValue::from_str(allowed) {
                response.headers_mut().insert(http::header::ALLOW, allow);
            }
        }
        if let ApiError::QuotaExceeded {
            retry_after_s: Some(seconds),
            ..
        } = &self
        {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(*seconds));
        }
        if let ApiError::Unauthorized(_) = self {
            // RFC 6750: the client should present a bearer token.
            let challenge = http::HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }

    /// Parse errors from serde: syntax errors are bad JSON, the rest are bad fields.
    pub fn from_json(err: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson {
                message: err.to_string(),
                line: err.line(),
                column: err.column(),
            },
            Category::Data => ApiError::invalid(
                err.to_string(),
                json!({ "line": err.line(), "column": err.column() }),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::AlreadyExists(what) => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// A control's steps after its write (tasks cancelled, held, released, sent): the store or the
/// queue failed; what was done stands, and the sweep carries on the rest.
impl From<baton_chain::error::ChainError> for ApiError {
    fn from(err: baton_chain::error::ChainError) -> Self {
        ApiError::Unavailable(err.to_string())
    }
}

/// A JSON answer: `body` is one of the types in `bodies` (or a `Value`).
pub fn json_response(status: u16, body: &impl serde::Serialize) -> Response<Body> {
    // Serializing these types cannot fail: no map has non-string keys.
    let text = serde_json::to_string(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(text.clone()))
        .unwrap_or_else(|_| Response::new(Body::Text(text)))
}
