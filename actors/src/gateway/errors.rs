//! Error bodies as each OpenStack service writes them, and JSON request-body parsing that answers 400.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::CloudError;

/// Which API an error belongs to; each writes its error body differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
}

/// A [`CloudError`] on its way out of a handler of `service`.
#[derive(Debug)]
pub struct ApiError {
    pub service: Service,
    pub error: CloudError,
}

impl ApiError {
    pub fn compute(error: CloudError) -> ApiError {
        ApiError { service: Service::Compute, error }
    }
    pub fn identity(error: CloudError) -> ApiError {
        ApiError { service: Service::Identity, error }
    }
    pub fn image(error: CloudError) -> ApiError {
        ApiError { service: Service::Image, error }
    }
}

fn compute_fault(status: u16) -> &'static str {
    match status {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        406 => "notAcceptable",
        409 => "conflictingRequest",
        413 => "overLimit",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn neutron_type(error: &CloudError) -> &'static str {
    match error {
        CloudError::BadRequest(_) => "BadRequest",
        CloudError::Unauthorized(_) => "NotAuthorized",
        CloudError::Forbidden(_) => "PolicyNotAuthorized",
        CloudError::NotFound(_) => "NotFound",
        CloudError::Conflict(_) => "Conflict",
        CloudError::QuotaExceeded(_) => "OverQuota",
        CloudError::NotAcceptable(_) => "NotAcceptable",
        CloudError::Unavailable { .. } | CloudError::NotApplied(_) => "ServiceUnavailable",
        CloudError::Store(_) | CloudError::Internal(_) => "InternalServerError",
    }
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match (&self.error, self.service) {
            (CloudError::QuotaExceeded(_), Service::Network) => 409,
            (error, _) => error.status(),
        };
        let message = match &self.error {
            // Infrastructure failures: log the whole chain, tell the user what failed without internals.
            CloudError::Store(_)
            | CloudError::Internal(_)
            | CloudError::Unavailable { .. }
            | CloudError::NotApplied(_) => {
                let mut chain = self.error.to_string();
                let mut source = std::error::Error::source(&self.error);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::error!(status, cause = %chain, "request failed");
                if status == 503 {
                    format!("{chain}. Please try again later.")
                } else {
                    "The server has either erred or is incapable of performing the requested operation.".to_string()
                }
            }
            other => other.to_string(),
        };
        let body = match self.service {
            Service::Identity => {
                json!({"error": {"code": status, "title": title(status), "message": message}})
            }
            Service::Compute | Service::Image => {
                json!({compute_fault(status): {"code": status, "message": message}})
            }
            Service::Network => {
                json!({"NeutronError": {"type": neutron_type(&self.error), "message": message, "detail": ""}})
            }
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

/// Parses a JSON request body; malformed JSON or a wrong shape is a 400 that says what is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, CloudError> {
    if body.is_empty() {
        return Err(CloudError::BadRequest("The request body is empty; a JSON object is expected.".into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what =
            if e.is_syntax() || e.is_eof() { "Malformed request body" } else { "Invalid input for the request body" };
        CloudError::BadRequest(format!("{what}: {e}"))
    })
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    let service = if uri.path().starts_with("/identity") {
        Service::Identity
    } else if uri.path().starts_with("/image") {
        Service::Image
    } else if uri.path().starts_with("/network") {
        Service::Network
    } else {
        Service::Compute
    };
    ApiError { service, error: CloudError::NotFound(format!("The resource {} could not be found.", uri.path())) }
}

pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::compute(CloudError::Internal("handler panicked".into())).into_response()
}
