//! Authentication (the `X-Auth-Token` header) and authorization (roles) for the API handlers, and the request
//! id every handler passes on.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::Role;

use super::errors::{ApiError, Service};
use super::{AppState, RequestId};
use crate::app::error::CloudError;
use crate::app::floating_ips::Caller;
use crate::app::identity::{self, AuthContext};
use crate::app::servers;

/// The caller, established from a valid token, and the request it makes. Handlers take it as an extractor.
pub struct Auth {
    pub ctx: AuthContext,
    /// The request id, for everything the request causes.
    pub trace: Trace,
}

pub fn token_from(parts: &Parts) -> Result<&str, CloudError> {
    parts.headers.get("x-auth-token").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).ok_or_else(|| {
        CloudError::Unauthorized("The request you have made requires authentication: no X-Auth-Token header.".into())
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let service = Service::of_path(parts.uri.path());
        let ctx = token_from(parts).and_then(|secret| identity::authenticate(&state.app, secret));
        let ctx = ctx.map_err(|error| ApiError { service, error })?;
        let trace = parts.extensions.get::<RequestId>().map(|id| Trace::request(&id.0)).unwrap_or_default();
        Ok(Auth { ctx, trace })
    }
}

impl Auth {
    /// Who asks the floating-IP operations: this project, with an admin's reach if admin.
    pub fn caller(&self) -> Caller {
        servers::caller(&self.ctx)
    }

    /// Refuses the request unless the caller has at least `role`; `action` names the policy, as Nova does.
    pub fn require(&self, role: Role, action: &str) -> Result<(), CloudError> {
        if self.ctx.has(role) {
            Ok(())
        } else {
            Err(CloudError::Forbidden(format!("Policy doesn't allow {action} to be performed.")))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.ctx.has(Role::Admin)
    }
}
