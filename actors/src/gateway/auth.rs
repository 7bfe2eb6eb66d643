//! Authentication (the `X-Auth-Token` header) and authorization (roles) for the API handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use nimbus_storage::records::Role;

use super::{ApiError, AppState, Service};
use crate::CloudError;
use crate::identity::{self, AuthContext};

/// The caller, established from a valid token. Handlers take it as an extractor.
pub struct Auth(pub AuthContext);

pub fn token_from(parts: &Parts) -> Result<&str, CloudError> {
    parts.headers.get("x-auth-token").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).ok_or_else(|| {
        CloudError::Unauthorized("The request you have made requires authentication: no X-Auth-Token header.".into())
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let service = match parts.uri.path() {
            p if p.starts_with("/identity") => Service::Identity,
            p if p.starts_with("/image") => Service::Image,
            p if p.starts_with("/network") => Service::Network,
            _ => Service::Compute,
        };
        let context = token_from(parts).and_then(|secret| identity::validate(&state.ctx.store, secret));
        context.map(Auth).map_err(|error| ApiError { service, error })
    }
}

impl Auth {
    /// Whether the caller sees network `n`: an admin every one; others the shared networks of the flat modes
    /// and their project's own.
    pub fn sees_network(&self, n: &nimbus_storage::records::Network) -> bool {
        self.is_admin()
            || n.project == Some(self.0.project)
            || (n.project.is_none() && n.mode != nimbus_storage::records::NetworkMode::Vlan)
    }

    /// Who asks the network manager for a floating-IP change: this project, with an admin's reach if admin.
    pub fn caller(&self) -> crate::network::floating::Caller {
        crate::network::floating::Caller { project: self.0.project, admin: self.is_admin() }
    }

    /// Refuses the request unless the caller has at least `role`; `action` names the policy, as Nova does.
    pub fn require(&self, role: Role, action: &str) -> Result<(), CloudError> {
        if self.0.has(role) {
            Ok(())
        } else {
            Err(CloudError::Forbidden(format!("Policy doesn't allow {action} to be performed.")))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.0.has(Role::Admin)
    }
}
