//! Network v2.0 (the Neutron subset the modern clients need), over the same model as the nova-network era
//! endpoints: fixed networks and floating pools as networks (pools are `router:external`), one subnet per
//! network (it shares the network's id), instance interfaces as ports, and floating IPs.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_runtime::Wire;
use nimbus_storage::records::{FloatingIp, FloatingPool, Instance, Interface, Network, NetworkMode, Role};
use nimbus_storage::schema::{FLOATING_POOLS, INSTANCES, INSTANCES_BY_PROJECT, NETWORKS};
use nimbus_storage::{Reads, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::errors::parse_json;
use super::nova_network_api::owned_floating;
use super::{ApiError, AppState, Service, call_network};
use crate::CloudError;
use crate::network::NetworkMsg;
use crate::network::floating::{self, FloatingOutcome, FloatingRequest};

type ApiResult = Result<Response, ApiError>;
type Filters = Query<HashMap<String, String>>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network", get(versions))
        .route("/network/", get(versions))
        .route("/network/v2.0/networks", get(list_networks))
        .route("/network/v2.0/networks/{id}", get(show_network))
        .route("/network/v2.0/subnets", get(list_subnets))
        .route("/network/v2.0/subnets/{id}", get(show_subnet))
        .route("/network/v2.0/ports", get(list_ports))
        .route("/network/v2.0/ports/{id}", get(show_port))
        .route("/network/v2.0/floatingips", get(list_floating).post(create_floating))
        .route("/network/v2.0/floatingips/{id}", get(show_floating).put(update_floating).delete(delete_floating))
}

/// Neutron writes its errors as `{"NeutronError": {"type", "message", "detail"}}`, with 409 for quota.
fn neutron(error: impl Into<CloudError>) -> ApiError {
    ApiError { service: Service::Network, error: error.into() }
}

async fn versions(State(s): State<AppState>) -> Response {
    let v = json!({"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{}/network/v2.0/", s.base_url)}]});
    Json(json!({"versions": [v]})).into_response()
}

/// A network of the API: a fixed network or a floating pool.
enum ApiNetwork {
    Fixed(Network),
    Pool(FloatingPool),
}

impl ApiNetwork {
    fn id(&self) -> String {
        match self {
            ApiNetwork::Fixed(n) => n.id.to_string(),
            ApiNetwork::Pool(p) => p.id.to_string(),
        }
    }

    fn name(&self) -> &str {
        match self {
            ApiNetwork::Fixed(n) => &n.label,
            ApiNetwork::Pool(p) => &p.name,
        }
    }

    fn view(&self) -> Value {
        let (id, name) = (self.id(), self.name().to_string());
        let (external, shared, project, kind, segment) = match self {
            ApiNetwork::Fixed(n) => (
                false,
                n.project.is_none(),
                n.project.map(|p| p.to_string()).unwrap_or_default(),
                if n.mode == NetworkMode::Vlan { "vlan" } else { "flat" },
                n.vlan,
            ),
            ApiNetwork::Pool(_) => (true, true, String::new(), "flat", None),
        };
        json!({
            "id": id, "name": name, "status": "ACTIVE", "admin_state_up": true, "shared": shared,
            "router:external": external, "subnets": [self.id()], "project_id": project, "tenant_id": project,
            "provider:network_type": kind, "provider:segmentation_id": segment, "provider:physical_network": null,
            "mtu": 1500, "availability_zones": ["nova"], "tags": [], "description": "", "port_security_enabled": true,
        })
    }

    fn subnet_view(&self) -> Value {
        let id = self.id();
        let (cidr, gateway, first, last, dns, dhcp, project) = match self {
            ApiNetwork::Fixed(n) => {
                let first = Ipv4Addr::from(u32::from(n.cidr.network()) + 2);
                let last = Ipv4Addr::from(u32::from(n.cidr.broadcast()).saturating_sub(1 + n.vpn_clients));
                let dns: Vec<String> = [n.dns1, n.dns2].into_iter().flatten().map(|a| a.to_string()).collect();
                let project = n.project.map(|p| p.to_string()).unwrap_or_default();
                (n.cidr, Some(n.gateway), first, last, dns, n.mode.has_dhcp(), project)
            }
            ApiNetwork::Pool(p) => {
                let first = Ipv4Addr::from(u32::from(p.range.network()) + 1);
                let last = Ipv4Addr::from(u32::from(p.range.broadcast()).saturating_sub(1));
                (p.range, None, first, last, Vec::new(), false, String::new())
            }
        };
        json!({
            "id": id, "name": self.name(), "network_id": id, "cidr": cidr.to_string(), "ip_version": 4,
            "gateway_ip": gateway.map(|g| g.to_string()),
            "allocation_pools": [{"start": first.to_string(), "end": last.to_string()}],
            "dns_nameservers": dns, "host_routes": [], "enable_dhcp": dhcp, "project_id": project, "tenant_id": project,
            "ipv6_address_mode": null, "ipv6_ra_mode": null, "subnetpool_id": null, "tags": [], "description": "",
        })
    }
}

/// The networks the caller sees: every pool; shared fixed networks and its project's (all for an admin).
fn networks(s: &AppState, auth: &Auth) -> Result<Vec<ApiNetwork>, ApiError> {
    let (fixed, pools) =
        s.ctx.store.read(|r| Ok::<_, StoreError>((r.scan(&NETWORKS)?, r.scan(&FLOATING_POOLS)?))).map_err(neutron)?;
    let mut out: Vec<ApiNetwork> =
        fixed.into_iter().map(|(_, n)| n).filter(|n| auth.sees_network(n)).map(ApiNetwork::Fixed).collect();
    out.extend(pools.into_iter().map(|(_, p)| ApiNetwork::Pool(p)));
    Ok(out)
}

fn matches(filters: &HashMap<String, String>, key: &str, value: &str) -> bool {
    filters.get(key).is_none_or(|want| want == value)
}

async fn list_networks(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let views: Vec<Value> = networks(&s, &auth)?
        .into_iter()
        .map(|n| n.view())
        .filter(|v| {
            matches(&f, "name", v["name"].as_str().unwrap_or_default())
                && matches(&f, "id", v["id"].as_str().unwrap_or_default())
                && matches(&f, "router:external", &v["router:external"].to_string().to_ascii_lowercase())
        })
        .collect();
    Ok(Json(json!({"networks": views})).into_response())
}

fn find_network(s: &AppState, auth: &Auth, id: &str) -> Result<ApiNetwork, ApiError> {
    networks(s, auth)?
        .into_iter()
        .find(|n| n.id() == id)
        .ok_or_else(|| neutron(CloudError::NotFound(format!("Network {id} could not be found."))))
}

async fn show_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    Ok(Json(json!({"network": find_network(&s, &auth, &id)?.view()})).into_response())
}

async fn list_subnets(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let views: Vec<Value> = networks(&s, &auth)?
        .iter()
        .map(ApiNetwork::subnet_view)
        .filter(|v| matches(&f, "network_id", v["network_id"].as_str().unwrap_or_default()))
        .filter(|v| matches(&f, "name", v["name"].as_str().unwrap_or_default()))
        .collect();
    Ok(Json(json!({"subnets": views})).into_response())
}

async fn show_subnet(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    Ok(Json(json!({"subnet": find_network(&s, &auth, &id)?.subnet_view()})).into_response())
}

fn port_view(instance: &Instance, interface: &Interface) -> Value {
    let project = instance.project.to_string();
    json!({
        "id": interface.id.to_string(), "name": "", "network_id": interface.network.to_string(),
        "mac_address": interface.mac, "device_id": instance.id.to_string(), "device_owner": "compute:nova",
        "fixed_ips": [{"subnet_id": interface.network.to_string(), "ip_address": interface.address.to_string()}],
        "status": "ACTIVE", "admin_state_up": true, "project_id": project, "tenant_id": project,
        "binding:host_id": instance.host.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
        "security_groups": [], "allowed_address_pairs": [], "tags": [], "description": "",
        "port_security_enabled": true,
    })
}

/// The instances whose ports the caller sees: its project's (all for an admin).
fn instances(s: &AppState, auth: &Auth) -> Result<Vec<Instance>, ApiError> {
    s.ctx
        .store
        .read(|r| {
            if auth.is_admin() {
                return Ok(r.scan(&INSTANCES)?.into_iter().map(|(_, i)| i).collect());
            }
            let mut out = Vec::new();
            for id in r.index_get(&INSTANCES_BY_PROJECT, &auth.0.project)? {
                out.extend(r.get(&INSTANCES, &id)?);
            }
            Ok::<_, StoreError>(out)
        })
        .map_err(neutron)
}

async fn list_ports(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let mut views = Vec::new();
    for instance in instances(&s, &auth)? {
        for interface in &instance.interfaces {
            let v = port_view(&instance, interface);
            if ["device_id", "network_id", "mac_address", "id"]
                .iter()
                .all(|k| matches(&f, k, v[*k].as_str().unwrap_or_default()))
            {
                views.push(v);
            }
        }
    }
    Ok(Json(json!({"ports": views})).into_response())
}

/// The instance and interface behind a port id the caller may see.
fn find_port(s: &AppState, auth: &Auth, id: &str) -> Result<(Instance, Interface), ApiError> {
    for instance in instances(s, auth)? {
        if let Some(interface) = instance.interfaces.iter().find(|i| i.id.to_string() == id).cloned() {
            return Ok((instance, interface));
        }
    }
    Err(neutron(CloudError::NotFound(format!("Port {id} could not be found."))))
}

async fn show_port(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let (instance, interface) = find_port(&s, &auth, &id)?;
    Ok(Json(json!({"port": port_view(&instance, &interface)})).into_response())
}

/// The port of the instance a floating IP is associated with, found through the instance's interfaces.
fn floating_view(ip: &FloatingIp, pool: Option<&FloatingPool>, instance: Option<&Instance>) -> Value {
    let pool_id = pool.map(|p| p.id.to_string()).unwrap_or_default();
    let port = instance.and_then(|instance| {
        instance.interfaces.iter().find(|f| f.floating.contains(&ip.address)).map(|f| f.id.to_string())
    });
    let project = ip.project.map(|p| p.to_string()).unwrap_or_default();
    json!({
        "id": ip.id.to_string(), "floating_ip_address": ip.address.to_string(),
        "fixed_ip_address": ip.fixed_address.map(|a| a.to_string()), "port_id": port,
        "floating_network_id": pool_id, "project_id": project, "tenant_id": project,
        "status": if ip.instance.is_some() { "ACTIVE" } else { "DOWN" },
        "router_id": null, "description": "", "tags": [], "port_details": null,
    })
}

/// The views of `ips`, with only their own pool and instance read (in one snapshot).
fn floating_views(s: &AppState, auth: &Auth, ips: &[FloatingIp]) -> Result<Vec<Value>, ApiError> {
    s.ctx
        .store
        .read(|r| {
            ips.iter()
                .map(|ip| {
                    let pool = r.get(&FLOATING_POOLS, &ip.pool)?;
                    let instance = match ip.instance {
                        Some(id) => r.get(&INSTANCES, &id)?.filter(|i| auth.is_admin() || i.project == auth.0.project),
                        None => None,
                    };
                    Ok(floating_view(ip, pool.as_ref(), instance.as_ref()))
                })
                .collect::<Result<Vec<Value>, StoreError>>()
        })
        .map_err(neutron)
}

async fn list_floating(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let caller = auth.caller();
    let ips = s.ctx.store.read(|r| floating::list(r, caller)).map_err(neutron)?;
    let views: Vec<Value> = floating_views(&s, &auth, &ips)?
        .into_iter()
        .filter(|v| {
            ["floating_ip_address", "floating_network_id", "project_id", "fixed_ip_address"]
                .iter()
                .all(|k| matches(&f, k, v[*k].as_str().unwrap_or_default()))
                && f.get("port_id").is_none_or(|p| v["port_id"].as_str() == Some(p.as_str()))
        })
        .collect();
    Ok(Json(json!({"floatingips": views})).into_response())
}

async fn show_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let ip = owned_floating(&s, &auth, &id).map_err(neutron)?;
    let view = floating_views(&s, &auth, &[ip])?.remove(0);
    Ok(Json(json!({"floatingip": view})).into_response())
}

#[derive(Deserialize)]
struct FloatingBody<T> {
    floatingip: T,
}

#[derive(Deserialize)]
struct NewFloating {
    floating_network_id: String,
    port_id: Option<String>,
}

async fn associate(s: &AppState, auth: &Auth, ip: &FloatingIp, port: Option<&str>) -> Result<FloatingIp, ApiError> {
    let caller = auth.caller();
    let request = match port {
        Some(port) => {
            let (instance, _) = find_port(s, auth, port)?;
            FloatingRequest::Associate { caller, address: ip.address, instance: instance.id }
        }
        None => FloatingRequest::Disassociate { caller, address: ip.address },
    };
    match call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(neutron)? {
        FloatingOutcome::Ip(ip) => Ok(ip),
        FloatingOutcome::Pool(_) => unreachable!("an address operation answers with an address"),
    }
}

async fn create_floating(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_floatingip").map_err(neutron)?;
    let request: FloatingBody<NewFloating> = parse_json(&body).map_err(neutron)?;
    let pool = match find_network(&s, &auth, &request.floatingip.floating_network_id)? {
        ApiNetwork::Pool(p) => p,
        ApiNetwork::Fixed(n) => {
            return Err(neutron(CloudError::BadRequest(format!(
                "Network {} is not an external network; floating IPs come from external networks.",
                n.label
            ))));
        }
    };
    let caller = auth.caller();
    let request_ip = FloatingRequest::Allocate { caller, pool: Some(pool.name) };
    let FloatingOutcome::Ip(mut ip) =
        call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request_ip), r)).await.map_err(neutron)?
    else {
        unreachable!("allocate answers with an address")
    };
    if let Some(port) = request.floatingip.port_id.as_deref() {
        ip = associate(&s, &auth, &ip, Some(port)).await?;
    }
    let view = floating_views(&s, &auth, &[ip])?.remove(0);
    Ok((StatusCode::CREATED, Json(json!({"floatingip": view}))).into_response())
}

#[derive(Deserialize)]
struct UpdateFloating {
    port_id: Option<String>,
}

async fn update_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_floatingip").map_err(neutron)?;
    let ip = owned_floating(&s, &auth, &id).map_err(neutron)?;
    let request: FloatingBody<UpdateFloating> = parse_json(&body).map_err(neutron)?;
    let ip = associate(&s, &auth, &ip, request.floatingip.port_id.as_deref()).await?;
    let view = floating_views(&s, &auth, &[ip])?.remove(0);
    Ok(Json(json!({"floatingip": view})).into_response())
}

async fn delete_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_floatingip").map_err(neutron)?;
    let ip = owned_floating(&s, &auth, &id).map_err(neutron)?;
    // Neutron releases an associated address in one go.
    if ip.instance.is_some() {
        associate(&s, &auth, &ip, None).await?;
    }
    let caller = auth.caller();
    let request = FloatingRequest::Release { caller, address: ip.address };
    call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(neutron)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
