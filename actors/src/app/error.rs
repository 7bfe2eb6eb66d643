//! `CloudError`: the error every operation of the application layer returns. Only the gateway turns it into
//! an HTTP status and an OpenStack error body.

use nimbus_protocol::failure::Failure;
use nimbus_protocol::network::NetworkError;
use nimbus_storage::StoreError;

use crate::app::quota::QuotaError;

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Conflict(String),
    /// The body is of a media type the route does not take (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    QuotaExceeded(String),
    /// The request body is over the limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// The caller must slow down (429, with Retry-After).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    /// nimbus is at a limit it keeps to stay up (503, with Retry-After); retrying soon may work.
    #[error("{message}")]
    Busy { message: String, retry_after_secs: u64 },
    /// A component needed for the request did not answer in time; retrying later may work.
    #[error("{what}")]
    Unavailable {
        what: String,
        #[source]
        source: Failure,
    },
    /// The change is recorded, but the dataplane could not apply it yet; it retries on its own.
    #[error("the change is recorded, but the network host could not apply it yet (it keeps retrying)")]
    NotApplied(#[source] Failure),
    #[error("storage failure")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl CloudError {
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> CloudError {
        CloudError::NotFound(format!("{kind} {id} could not be found."))
    }
}

impl From<NetworkError> for CloudError {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::NoAnswer(_) => {
                CloudError::Unavailable { what: "The network manager did not answer".into(), source: Failure::of(&e) }
            }
            // What the network side was doing and why it failed, without the layer that says it failed.
            NetworkError::Dataplane(e) => CloudError::NotApplied(Failure::of(&e)),
            NetworkError::VlanUnavailable { .. } => CloudError::NotApplied(Failure::of(&e)),
            NetworkError::Store(_) => CloudError::Internal(nimbus_protocol::failure::chain(&e)),
        }
    }
}

impl From<QuotaError> for CloudError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Store(e) => CloudError::Store(e),
            exceeded => CloudError::QuotaExceeded(exceeded.to_string()),
        }
    }
}
