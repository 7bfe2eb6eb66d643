//! Floating IPs: a project's addresses from the external networks (the floating pools), associated with a
//! port of one of its instances.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use nimbus_storage::records::{FloatingIp, Role};
use serde::{Deserialize, Serialize};

use super::networks::{ApiNetwork, find_network};
use super::{ApiResult, ListQuery, list_answer};
use crate::app::error::CloudError;
use crate::app::floating_ips::{self, FloatingView};
use crate::app::ports;
use crate::gateway::auth::Auth;
use crate::gateway::errors::parse_json;
use crate::gateway::{ApiError, AppState};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network/v2.0/floatingips", get(list_floating).post(create_floating))
        .route("/network/v2.0/floatingips/{id}", get(show_floating).put(update_floating).delete(delete_floating))
}

#[derive(Serialize)]
struct FloatingIpView {
    id: String,
    floating_ip_address: String,
    fixed_ip_address: Option<String>,
    port_id: Option<String>,
    floating_network_id: String,
    project_id: String,
    tenant_id: String,
    status: &'static str,
    router_id: Option<String>,
    description: &'static str,
    tags: [String; 0],
    port_details: Option<String>,
}

/// The port of the instance a floating IP is associated with is found through the instance's interfaces.
fn floating_view(view: &FloatingView) -> FloatingIpView {
    let ip = &view.ip;
    let port = view.instance.as_ref().and_then(|instance| {
        instance.interfaces.iter().find(|f| f.floating.contains(&ip.address)).map(|f| f.id.to_string())
    });
    let project = ip.project.map(|p| p.to_string()).unwrap_or_default();
    FloatingIpView {
        id: ip.id.to_string(),
        floating_ip_address: ip.address.to_string(),
        fixed_ip_address: ip.fixed_address.map(|a| a.to_string()),
        port_id: port,
        floating_network_id: view.pool.as_ref().map(|p| p.id.to_string()).unwrap_or_default(),
        tenant_id: project.clone(),
        project_id: project,
        status: if ip.instance.is_some() { "ACTIVE" } else { "DOWN" },
        router_id: None,
        description: "",
        tags: [],
        port_details: None,
    }
}

#[derive(Serialize)]
struct FloatingBody {
    floatingip: FloatingIpView,
}

const FLOATING_FIELDS: &[&str] = &[
    "id",
    "floating_ip_address",
    "fixed_ip_address",
    "port_id",
    "floating_network_id",
    "project_id",
    "tenant_id",
    "status",
    "router_id",
    "description",
    "tags",
    "port_details",
];

async fn list_floating(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), FLOATING_FIELDS)?;
    let ips = floating_ips::list_views(&s.app, auth.caller()).map_err(ApiError::network)?;
    let views: Vec<FloatingIpView> = ips.iter().map(floating_view).collect();
    list_answer(&s, "floatingips", "/network/v2.0/floatingips", views, &q)
}

async fn show_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let ip = floating_ips::find(&s.app, auth.caller(), &id).map_err(ApiError::network)?;
    Ok(Json(FloatingBody { floatingip: floating_answer(&s, &auth, ip)? }).into_response())
}

#[derive(Deserialize)]
struct FloatingRequestBody<T> {
    floatingip: T,
}

#[derive(Deserialize)]
struct NewFloating {
    floating_network_id: String,
    port_id: Option<String>,
}

/// The answer for an address the caller holds.
fn floating_answer(s: &AppState, auth: &Auth, ip: FloatingIp) -> Result<FloatingIpView, ApiError> {
    Ok(floating_view(&floating_ips::view(&s.app, auth.caller(), ip).map_err(ApiError::network)?))
}

async fn create_floating(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_floatingip").map_err(ApiError::network)?;
    let request: FloatingRequestBody<NewFloating> = parse_json(&body).map_err(ApiError::network)?;
    let pool = match find_network(&s, &auth, &request.floatingip.floating_network_id)? {
        ApiNetwork::Pool(p) => p,
        other => {
            return Err(ApiError::network(CloudError::BadRequest(format!(
                "Network {} is not an external network; floating IPs come from external networks.",
                other.id()
            ))));
        }
    };
    // The port is checked before an address is allocated, so a port the caller may not use costs nothing.
    let port = match request.floatingip.port_id.as_deref() {
        Some(port) => Some(port_instance(&s, &auth, port)?),
        None => None,
    };
    let ip = match port {
        Some(instance) => {
            floating_ips::allocate_associated(&s.app, &auth.trace, auth.caller(), Some(pool.name), instance).await
        }
        None => floating_ips::allocate(&s.app, auth.caller(), Some(pool.name)).await,
    }
    .map_err(ApiError::network)?;
    let view = floating_answer(&s, &auth, ip)?;
    Ok((StatusCode::CREATED, Json(FloatingBody { floatingip: view })).into_response())
}

#[derive(Deserialize)]
struct UpdateFloating {
    port_id: Option<String>,
}

async fn update_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_floatingip").map_err(ApiError::network)?;
    let ip = floating_ips::find(&s.app, auth.caller(), &id).map_err(ApiError::network)?;
    let request: FloatingRequestBody<UpdateFloating> = parse_json(&body).map_err(ApiError::network)?;
    let (caller, trace) = (auth.caller(), &auth.trace);
    // A port associates the address with its instance; none (`null`) disassociates it.
    let ip = match request.floatingip.port_id.as_deref() {
        Some(port) => {
            let instance = port_instance(&s, &auth, port)?;
            floating_ips::associate(&s.app, trace, caller, ip.address, instance).await
        }
        None => floating_ips::disassociate(&s.app, trace, caller, ip.address, None).await,
    }
    .map_err(ApiError::network)?;
    Ok(Json(FloatingBody { floatingip: floating_answer(&s, &auth, ip)? }).into_response())
}

async fn delete_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_floatingip").map_err(ApiError::network)?;
    let ip = floating_ips::find(&s.app, auth.caller(), &id).map_err(ApiError::network)?;
    // Neutron releases an associated address in one go.
    floating_ips::release(&s.app, &auth.trace, auth.caller(), ip.address).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The instance that has the port a floating IP is to go to; a port no instance has cannot take one.
fn port_instance(s: &AppState, auth: &Auth, id: &str) -> Result<nimbus_protocol::ids::InstanceId, ApiError> {
    let port = ports::get(&s.app, &auth.ctx, id).map_err(ApiError::network)?;
    port.device.ok_or_else(|| {
        ApiError::network(CloudError::Conflict(format!(
            "Port {id} is on no server; a floating IP is associated with a port a server has."
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_fields_are_the_views_fields() {
        let view = FloatingIpView {
            id: String::new(),
            floating_ip_address: String::new(),
            fixed_ip_address: None,
            port_id: None,
            floating_network_id: String::new(),
            project_id: String::new(),
            tenant_id: String::new(),
            status: "DOWN",
            router_id: None,
            description: "",
            tags: [],
            port_details: None,
        };
        super::super::assert_known_fields(view, FLOATING_FIELDS);
    }
}
