//! Errors as each OpenStack service writes them: the HTTP status of every [`CloudError`], the body shapes of
//! Identity, Compute, Image and Network, and JSON request-body parsing that answers 400.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_protocol::failure::chain;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::error::CloudError;

/// Which API an error belongs to; each writes its error body differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
}

impl Service {
    /// The service a path belongs to.
    pub fn of_path(path: &str) -> Service {
        match path {
            p if p.starts_with("/identity") => Service::Identity,
            p if p.starts_with("/image") => Service::Image,
            p if p.starts_with("/network") => Service::Network,
            _ => Service::Compute,
        }
    }
}

/// A [`CloudError`] on its way out of a handler of `service`.
#[derive(Debug)]
pub struct ApiError {
    pub service: Service,
    pub error: CloudError,
}

impl ApiError {
    pub fn compute(error: impl Into<CloudError>) -> ApiError {
        ApiError { service: Service::Compute, error: error.into() }
    }
    pub fn identity(error: impl Into<CloudError>) -> ApiError {
        ApiError { service: Service::Identity, error: error.into() }
    }
    pub fn image(error: impl Into<CloudError>) -> ApiError {
        ApiError { service: Service::Image, error: error.into() }
    }
    pub fn network(error: impl Into<CloudError>) -> ApiError {
        ApiError { service: Service::Network, error: error.into() }
    }
}

/// The HTTP status of an error of `service`.
fn status(error: &CloudError, service: Service) -> u16 {
    match error {
        CloudError::BadRequest(_) => 400,
        CloudError::Unauthorized(_) => 401,
        CloudError::Forbidden(_) => 403,
        CloudError::NotFound(_) => 404,
        CloudError::NotAcceptable(_) => 406,
        CloudError::Conflict(_) => 409,
        CloudError::UnsupportedMediaType(_) => 415,
        // Neutron answers 409 (OverQuota); Nova 403 since 2.1.
        CloudError::QuotaExceeded(_) if service == Service::Network => 409,
        CloudError::QuotaExceeded(_) => 403,
        CloudError::TooManyRequests { .. } => 429,
        CloudError::PayloadTooLarge(_) => 413,
        CloudError::RequestTimeout(_) => 408,
        CloudError::Busy { .. } | CloudError::Unavailable { .. } | CloudError::NotApplied(_) => 503,
        CloudError::Store(_) | CloudError::Internal(_) => 500,
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
        413 | 429 => "overLimit",
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
        CloudError::UnsupportedMediaType(_) => "UnsupportedMediaType",
        CloudError::QuotaExceeded(_) => "OverQuota",
        CloudError::NotAcceptable(_) => "NotAcceptable",
        CloudError::TooManyRequests { .. } => "TooManyRequests",
        CloudError::PayloadTooLarge(_) => "RequestEntityTooLarge",
        CloudError::RequestTimeout(_) => "RequestTimeout",
        CloudError::Busy { .. } | CloudError::Unavailable { .. } | CloudError::NotApplied(_) => "ServiceUnavailable",
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
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Identity's `{"error": {…}}`.
#[derive(Serialize)]
struct IdentityError<'a> {
    code: u16,
    title: &'a str,
    message: &'a str,
}

/// Compute's and Image's `{"<fault>": {…}}`.
#[derive(Serialize)]
struct ComputeFault<'a> {
    code: u16,
    message: &'a str,
}

/// Neutron's `{"NeutronError": {…}}`.
#[derive(Serialize)]
struct NeutronError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    detail: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(&self.error, self.service);
        let message = match &self.error {
            // Infrastructure failures: log the whole chain, tell the user what failed without internals.
            CloudError::Store(_)
            | CloudError::Internal(_)
            | CloudError::Unavailable { .. }
            | CloudError::NotApplied(_) => {
                let chain = chain(&self.error);
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
                let error = IdentityError { code: status, title: title(status), message: &message };
                serde_json::json!({ "error": error })
            }
            Service::Compute | Service::Image => {
                serde_json::json!({ compute_fault(status): ComputeFault { code: status, message: &message } })
            }
            Service::Network => {
                let error = NeutronError { kind: neutron_type(&self.error), message: &message, detail: "" };
                serde_json::json!({ "NeutronError": error })
            }
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if let CloudError::TooManyRequests { retry_after_secs, .. } | CloudError::Busy { retry_after_secs, .. } =
            &self.error
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
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

/// Parses an IPv4 address a request names; anything else is a 400.
pub fn parse_address(address: &str) -> Result<std::net::Ipv4Addr, CloudError> {
    address.parse().map_err(|_| CloudError::BadRequest(format!("{address} is not an IPv4 address.")))
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    let error = CloudError::NotFound(format!("The resource {} could not be found.", uri.path()));
    ApiError { service: Service::of_path(uri.path()), error }
}

pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::compute(CloudError::Internal("handler panicked".into())).into_response()
}
