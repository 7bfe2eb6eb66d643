//! Ports: every instance interface, and the ports made here for a server create to take.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::records::Role;
use serde::{Deserialize, Serialize};

use super::{
    ApiResult, ListQuery, bad, create_requests, created_answer, list_answer, one_answer, only, update_request,
};
use crate::app::error::CloudError;
use crate::app::ports::{self, NewPort, PortInfo};
use crate::gateway::auth::Auth;
use crate::gateway::{ApiError, AppState};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network/v2.0/ports", get(list_ports).post(create_ports))
        .route("/network/v2.0/ports/{id}", get(show_port).put(update_port).delete(delete_port))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedIpRef {
    #[serde(default)]
    subnet_id: String,
    #[serde(default)]
    ip_address: String,
}

#[derive(Serialize)]
struct PortView {
    id: String,
    name: String,
    network_id: String,
    mac_address: String,
    device_id: String,
    device_owner: &'static str,
    fixed_ips: [FixedIpRef; 1],
    status: &'static str,
    admin_state_up: bool,
    project_id: String,
    tenant_id: String,
    #[serde(rename = "binding:host_id")]
    host_id: String,
    #[serde(rename = "binding:vnic_type")]
    vnic_type: &'static str,
    security_groups: Vec<String>,
    allowed_address_pairs: [String; 0],
    tags: [String; 0],
    description: &'static str,
    port_security_enabled: bool,
}

const PORT_FIELDS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "mac_address",
    "device_id",
    "device_owner",
    "fixed_ips",
    "status",
    "admin_state_up",
    "project_id",
    "tenant_id",
    "binding:host_id",
    "binding:vnic_type",
    "security_groups",
    "allowed_address_pairs",
    "tags",
    "description",
    "port_security_enabled",
];

/// The port as the API shows it: a port no instance has is `DOWN`, with no device.
fn port_view(port: &PortInfo) -> PortView {
    let project = port.project.to_string();
    PortView {
        id: port.id.to_string(),
        name: port.name.clone(),
        network_id: port.network.to_string(),
        mac_address: port.mac.clone(),
        device_id: port.device.map(|d| d.to_string()).unwrap_or_default(),
        device_owner: if port.device.is_some() { "compute:nova" } else { "" },
        fixed_ips: [FixedIpRef { subnet_id: port.network.to_string(), ip_address: port.address.to_string() }],
        status: if port.device.is_some() { "ACTIVE" } else { "DOWN" },
        admin_state_up: true,
        tenant_id: project.clone(),
        project_id: project,
        host_id: port.host.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
        vnic_type: "normal",
        security_groups: port.security_groups.iter().map(|g| g.to_string()).collect(),
        allowed_address_pairs: [],
        tags: [],
        description: "",
        port_security_enabled: true,
    }
}

async fn list_ports(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), PORT_FIELDS)?;
    let views = ports::list(&s.app, &auth.ctx).map_err(ApiError::network)?.iter().map(port_view).collect::<Vec<_>>();
    list_answer(&s, "ports", "/network/v2.0/ports", views, &q)
}

async fn show_port(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), PORT_FIELDS)?;
    let port = ports::get(&s.app, &auth.ctx, &id).map_err(ApiError::network)?;
    Ok(one_answer("port", port_view(&port), &q))
}

/// A port create: on a network with its subnet, with one fixed IP asked for at most. A port gets the
/// security groups and the host of the instance that takes it, and nimbus picks its MAC, so those fields
/// are a 400.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePort {
    network_id: String,
    name: Option<String>,
    fixed_ips: Option<Vec<FixedIpRef>>,
    admin_state_up: Option<bool>,
    port_security_enabled: Option<bool>,
    description: Option<String>,
    project_id: Option<String>,
    tenant_id: Option<String>,
    device_id: Option<String>,
    device_owner: Option<String>,
    #[serde(rename = "binding:vnic_type")]
    vnic_type: Option<String>,
}

fn new_port(r: CreatePort) -> Result<NewPort, ApiError> {
    only("admin_state_up", r.admin_state_up, true, "nimbus ports are always up.")?;
    only("port_security_enabled", r.port_security_enabled, true, "anti-spoofing is always on.")?;
    only("description", r.description, String::new(), "nimbus keeps no descriptions.")?;
    only("binding:vnic_type", r.vnic_type, "normal".to_string(), "nimbus ports are veth pairs.")?;
    if r.device_id.is_some_and(|d| !d.is_empty()) || r.device_owner.is_some_and(|d| !d.is_empty()) {
        return Err(bad("device_id and device_owner are set by a server create that takes the port.".into()));
    }
    let address = match r.fixed_ips.unwrap_or_default().as_slice() {
        [] => None,
        [one] => {
            if !one.subnet_id.is_empty() && one.subnet_id != r.network_id {
                return Err(bad(format!(
                    "Subnet {} is not the subnet of network {} (a nimbus network has one, with its id).",
                    one.subnet_id, r.network_id
                )));
            }
            (!one.ip_address.is_empty())
                .then(|| one.ip_address.parse().map_err(|_| bad(format!("Invalid ip_address {:?}.", one.ip_address))))
                .transpose()?
        }
        _ => return Err(bad("A nimbus port has one fixed IP.".into())),
    };
    Ok(NewPort {
        network: r.network_id,
        name: r.name.unwrap_or_default(),
        address,
        project: r.project_id.or(r.tenant_id),
    })
}

async fn create_ports(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_port").map_err(ApiError::network)?;
    let (requests, bulk) = create_requests::<CreatePort>(&body, "port", "ports")?;
    let new = requests.into_iter().map(new_port).collect::<Result<Vec<_>, _>>()?;
    let created = ports::create(&s.app, &auth.trace, &auth.ctx, new).await.map_err(ApiError::network)?;
    Ok(created_answer("port", "ports", created.iter().map(port_view).collect(), bulk))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePort {
    name: Option<String>,
    admin_state_up: Option<bool>,
    port_security_enabled: Option<bool>,
    description: Option<String>,
}

async fn update_port(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_port").map_err(ApiError::network)?;
    let port = ports::get(&s.app, &auth.ctx, &id).map_err(ApiError::network)?;
    let r: UpdatePort = update_request(&body, "port")?;
    only("admin_state_up", r.admin_state_up, true, "nimbus ports are always up.")?;
    only("port_security_enabled", r.port_security_enabled, true, "anti-spoofing is always on.")?;
    only("description", r.description, String::new(), "nimbus keeps no descriptions.")?;
    let port = match r.name {
        Some(name) => ports::rename(&s.app, &port, name).await.map_err(ApiError::network)?,
        None => port,
    };
    Ok(one_answer("port", port_view(&port), &ListQuery::default()))
}

async fn delete_port(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response, ApiError> {
    auth.require(Role::Member, "delete_port").map_err(ApiError::network)?;
    let port = ports::get(&s.app, &auth.ctx, &id).map_err(ApiError::network)?;
    if !port.standalone {
        return Err(ApiError::network(CloudError::Conflict(format!(
            "Port {id} is an interface nova made for server {}; it goes with the server.",
            port.device.map(|d| d.to_string()).unwrap_or_default()
        ))));
    }
    ports::delete(&s.app, &auth.trace, &port).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_fields_are_the_views_fields() {
        let port = PortInfo {
            id: nimbus_protocol::ids::PortId::generate(),
            name: String::new(),
            project: nimbus_protocol::ids::ProjectId::generate(),
            network: nimbus_protocol::ids::NetworkId::generate(),
            mac: "fa:16:3e:00:00:01".into(),
            address: "10.0.0.5".parse().unwrap(),
            device: None,
            host: None,
            security_groups: Vec::new(),
            standalone: true,
        };
        super::super::assert_known_fields(port_view(&port), PORT_FIELDS);
    }
}
