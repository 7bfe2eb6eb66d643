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
use ipnetwork::Ipv4Network;
use nimbus_storage::records::{FloatingIp, FloatingPool, Instance, Interface, Network, NetworkMode, Role};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::views::VersionDoc;
use super::{ApiError, AppState};
use crate::app::error::CloudError;
use crate::app::floating_ips::{self, FloatingView};
use crate::app::{networks, servers};

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

async fn versions(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        versions: [VersionDoc; 1],
    }
    let version = VersionDoc::plain("v2.0", "CURRENT", format!("{}/network/v2.0/", s.base_url));
    Json(Body { versions: [version] }).into_response()
}

/// Whether a list filter `key` (if given) asks for exactly `value`.
fn matches(filters: &HashMap<String, String>, key: &str, value: &str) -> bool {
    filters.get(key).is_none_or(|want| want == value)
}

/// A network of the API: a fixed network or a floating pool.
enum ApiNetwork {
    Fixed(Network),
    Pool(FloatingPool),
}

#[derive(Serialize)]
struct NetworkView {
    id: String,
    name: String,
    status: &'static str,
    admin_state_up: bool,
    shared: bool,
    #[serde(rename = "router:external")]
    external: bool,
    subnets: [String; 1],
    project_id: String,
    tenant_id: String,
    #[serde(rename = "provider:network_type")]
    network_type: &'static str,
    #[serde(rename = "provider:segmentation_id")]
    segmentation_id: Option<u16>,
    #[serde(rename = "provider:physical_network")]
    physical_network: Option<String>,
    mtu: u32,
    availability_zones: [&'static str; 1],
    tags: [String; 0],
    description: &'static str,
    port_security_enabled: bool,
}

#[derive(Serialize)]
struct AllocationPool {
    start: String,
    end: String,
}

#[derive(Serialize)]
struct SubnetView {
    id: String,
    name: String,
    network_id: String,
    cidr: String,
    ip_version: u8,
    gateway_ip: Option<String>,
    allocation_pools: [AllocationPool; 1],
    dns_nameservers: Vec<String>,
    host_routes: [String; 0],
    enable_dhcp: bool,
    project_id: String,
    tenant_id: String,
    ipv6_address_mode: Option<String>,
    ipv6_ra_mode: Option<String>,
    subnetpool_id: Option<String>,
    tags: [String; 0],
    description: &'static str,
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

    fn project(&self) -> String {
        match self {
            ApiNetwork::Fixed(n) => n.project.map(|p| p.to_string()).unwrap_or_default(),
            ApiNetwork::Pool(_) => String::new(),
        }
    }

    fn view(&self) -> NetworkView {
        let (external, shared, network_type, segmentation_id) = match self {
            ApiNetwork::Fixed(n) => {
                (false, n.project.is_none(), if n.mode == NetworkMode::Vlan { "vlan" } else { "flat" }, n.vlan)
            }
            ApiNetwork::Pool(_) => (true, true, "flat", None),
        };
        let project = self.project();
        NetworkView {
            id: self.id(),
            name: self.name().to_string(),
            status: "ACTIVE",
            admin_state_up: true,
            shared,
            external,
            subnets: [self.id()],
            tenant_id: project.clone(),
            project_id: project,
            network_type,
            segmentation_id,
            physical_network: None,
            mtu: 1500,
            availability_zones: ["nova"],
            tags: [],
            description: "",
            port_security_enabled: true,
        }
    }

    fn subnet_view(&self) -> SubnetView {
        let range = |cidr: Ipv4Network, skip: u32, keep: u32| AllocationPool {
            start: Ipv4Addr::from(u32::from(cidr.network()) + skip).to_string(),
            end: Ipv4Addr::from(u32::from(cidr.broadcast()).saturating_sub(keep)).to_string(),
        };
        let (cidr, gateway, pool, dns, dhcp) = match self {
            ApiNetwork::Fixed(n) => {
                let dns = [n.dns1, n.dns2].into_iter().flatten().map(|a| a.to_string()).collect();
                (n.cidr, Some(n.gateway), range(n.cidr, 2, 1 + n.vpn_clients), dns, n.mode.has_dhcp())
            }
            ApiNetwork::Pool(p) => (p.range, None, range(p.range, 1, 1), Vec::new(), false),
        };
        let project = self.project();
        SubnetView {
            id: self.id(),
            name: self.name().to_string(),
            network_id: self.id(),
            cidr: cidr.to_string(),
            ip_version: 4,
            gateway_ip: gateway.map(|g| g.to_string()),
            allocation_pools: [pool],
            dns_nameservers: dns,
            host_routes: [],
            enable_dhcp: dhcp,
            tenant_id: project.clone(),
            project_id: project,
            ipv6_address_mode: None,
            ipv6_ra_mode: None,
            subnetpool_id: None,
            tags: [],
            description: "",
        }
    }
}

/// The networks the caller sees: every pool; shared fixed networks and its project's (all for an admin).
fn api_networks(s: &AppState, auth: &Auth) -> Result<Vec<ApiNetwork>, ApiError> {
    let mut out: Vec<ApiNetwork> =
        networks::list(&s.app, &auth.ctx).map_err(ApiError::network)?.into_iter().map(ApiNetwork::Fixed).collect();
    out.extend(floating_ips::pools(&s.app).map_err(ApiError::network)?.into_iter().map(ApiNetwork::Pool));
    Ok(out)
}

async fn list_networks(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let views: Vec<NetworkView> = api_networks(&s, &auth)?
        .iter()
        .map(ApiNetwork::view)
        .filter(|v| {
            matches(&f, "name", &v.name)
                && matches(&f, "id", &v.id)
                && matches(&f, "router:external", if v.external { "true" } else { "false" })
        })
        .collect();
    #[derive(Serialize)]
    struct Body {
        networks: Vec<NetworkView>,
    }
    Ok(Json(Body { networks: views }).into_response())
}

fn find_network(s: &AppState, auth: &Auth, id: &str) -> Result<ApiNetwork, ApiError> {
    api_networks(s, auth)?
        .into_iter()
        .find(|n| n.id() == id)
        .ok_or_else(|| ApiError::network(CloudError::NotFound(format!("Network {id} could not be found."))))
}

async fn show_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    #[derive(Serialize)]
    struct Body {
        network: NetworkView,
    }
    Ok(Json(Body { network: find_network(&s, &auth, &id)?.view() }).into_response())
}

async fn list_subnets(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let views: Vec<SubnetView> = api_networks(&s, &auth)?
        .iter()
        .map(ApiNetwork::subnet_view)
        .filter(|v| matches(&f, "network_id", &v.network_id) && matches(&f, "name", &v.name))
        .collect();
    #[derive(Serialize)]
    struct Body {
        subnets: Vec<SubnetView>,
    }
    Ok(Json(Body { subnets: views }).into_response())
}

async fn show_subnet(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    #[derive(Serialize)]
    struct Body {
        subnet: SubnetView,
    }
    Ok(Json(Body { subnet: find_network(&s, &auth, &id)?.subnet_view() }).into_response())
}

#[derive(Serialize)]
struct FixedIpRef {
    subnet_id: String,
    ip_address: String,
}

#[derive(Serialize)]
struct PortView {
    id: String,
    name: &'static str,
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
    security_groups: Vec<String>,
    allowed_address_pairs: [String; 0],
    tags: [String; 0],
    description: &'static str,
    port_security_enabled: bool,
}

fn port_view(instance: &Instance, interface: &Interface) -> PortView {
    let project = instance.project.to_string();
    PortView {
        id: interface.id.to_string(),
        name: "",
        network_id: interface.network.to_string(),
        mac_address: interface.mac.clone(),
        device_id: instance.id.to_string(),
        device_owner: "compute:nova",
        fixed_ips: [FixedIpRef { subnet_id: interface.network.to_string(), ip_address: interface.address.to_string() }],
        status: "ACTIVE",
        admin_state_up: true,
        tenant_id: project.clone(),
        project_id: project,
        host_id: instance.host.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
        security_groups: instance.security_groups.iter().map(|g| g.to_string()).collect(),
        allowed_address_pairs: [],
        tags: [],
        description: "",
        port_security_enabled: true,
    }
}

async fn list_ports(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let instances = servers::visible(&s.app, &auth.ctx).map_err(ApiError::network)?;
    let views: Vec<PortView> = instances
        .iter()
        .flat_map(|instance| instance.interfaces.iter().map(move |interface| port_view(instance, interface)))
        .filter(|v| {
            matches(&f, "device_id", &v.device_id)
                && matches(&f, "network_id", &v.network_id)
                && matches(&f, "mac_address", &v.mac_address)
                && matches(&f, "id", &v.id)
        })
        .collect();
    #[derive(Serialize)]
    struct Body {
        ports: Vec<PortView>,
    }
    Ok(Json(Body { ports: views }).into_response())
}

/// The instance and interface behind a port id the caller may see.
fn find_port(s: &AppState, auth: &Auth, id: &str) -> Result<(Instance, Interface), ApiError> {
    for instance in servers::visible(&s.app, &auth.ctx).map_err(ApiError::network)? {
        if let Some(interface) = instance.interfaces.iter().find(|i| i.id.to_string() == id).cloned() {
            return Ok((instance, interface));
        }
    }
    Err(ApiError::network(CloudError::NotFound(format!("Port {id} could not be found."))))
}

async fn show_port(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let (instance, interface) = find_port(&s, &auth, &id)?;
    #[derive(Serialize)]
    struct Body {
        port: PortView,
    }
    Ok(Json(Body { port: port_view(&instance, &interface) }).into_response())
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

async fn list_floating(State(s): State<AppState>, auth: Auth, Query(f): Filters) -> ApiResult {
    let ips = floating_ips::list_views(&s.app, auth.caller()).map_err(ApiError::network)?;
    let views: Vec<FloatingIpView> = ips
        .iter()
        .map(floating_view)
        .filter(|v| {
            matches(&f, "floating_ip_address", &v.floating_ip_address)
                && matches(&f, "floating_network_id", &v.floating_network_id)
                && matches(&f, "project_id", &v.project_id)
                && matches(&f, "fixed_ip_address", v.fixed_ip_address.as_deref().unwrap_or_default())
                && f.get("port_id").is_none_or(|p| v.port_id.as_deref() == Some(p.as_str()))
        })
        .collect();
    #[derive(Serialize)]
    struct Body {
        floatingips: Vec<FloatingIpView>,
    }
    Ok(Json(Body { floatingips: views }).into_response())
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
        ApiNetwork::Fixed(n) => {
            return Err(ApiError::network(CloudError::BadRequest(format!(
                "Network {} is not an external network; floating IPs come from external networks.",
                n.label
            ))));
        }
    };
    // The port is checked before an address is allocated, so a port the caller may not use costs nothing.
    let port = match request.floatingip.port_id.as_deref() {
        Some(port) => Some(find_port(&s, &auth, port)?.0),
        None => None,
    };
    let ip = match port {
        Some(instance) => {
            floating_ips::allocate_associated(&s.app, &auth.trace, auth.caller(), Some(pool.name), instance.id).await
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
            let instance = find_port(&s, &auth, port)?.0;
            floating_ips::associate(&s.app, trace, caller, ip.address, instance.id).await
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
