//! `CloudError`: the error every public operation returns; the gateway maps it to an HTTP status.

use nimbus_runtime::CallError;
use nimbus_storage::StoreError;

use crate::network::NetworkError;
use crate::quota::QuotaError;

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
    #[error("{0}")]
    QuotaExceeded(String),
    /// A component needed for the request did not answer in time; retrying later may work.
    #[error("{what}")]
    Unavailable {
        what: String,
        #[source]
        source: CallError,
    },
    /// The change is recorded, but the dataplane could not apply it yet; it retries on its own.
    #[error("the change is recorded, but the network host could not apply it yet (it keeps retrying): {0}")]
    NotApplied(String),
    #[error("storage failure")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl CloudError {
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> CloudError {
        CloudError::NotFound(format!("{kind} {id} could not be found."))
    }

    /// The HTTP status the gateway answers with.
    pub fn status(&self) -> u16 {
        match self {
            CloudError::BadRequest(_) => 400,
            CloudError::Unauthorized(_) => 401,
            CloudError::Forbidden(_) => 403,
            CloudError::NotFound(_) => 404,
            CloudError::NotAcceptable(_) => 406,
            CloudError::Conflict(_) => 409,
            // As Nova answers since 2.1; the network API answers 409 (Neutron's OverQuota).
            CloudError::QuotaExceeded(_) => 403,
            CloudError::Unavailable { .. } | CloudError::NotApplied(_) => 503,
            CloudError::Store(_) | CloudError::Internal(_) => 500,
        }
    }
}

impl From<NetworkError> for CloudError {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::InstanceGone(id) => CloudError::not_found("Instance", id),
            NetworkError::NotFound(m) => CloudError::NotFound(m),
            NetworkError::BadRequest(m) => CloudError::BadRequest(m),
            NetworkError::Conflict(m) | NetworkError::Exhausted(m) => CloudError::Conflict(m),
            NetworkError::QuotaExceeded(m) => CloudError::QuotaExceeded(m),
            NetworkError::Dataplane(m) => CloudError::NotApplied(m),
            NetworkError::Store(m) => CloudError::Internal(m),
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
