//! Networks and subnets: fixed networks (with their one subnet), bare networks of the Network API (no subnet
//! yet) and floating pools (external networks, their range as their subnet).

use std::net::Ipv4Addr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ipnetwork::Ipv4Network;
use nimbus_storage::records::{BareNetwork, FloatingPool, Network, NetworkMode, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ApiResult, ListQuery, bad, create_requests, created_answer, list_answer, one_answer, only, update_request,
};
use crate::app::error::CloudError;
use crate::app::floating_ips;
use crate::app::networks::{self, AnyNetwork, NewNetwork, NewSubnet};
use crate::gateway::auth::Auth;
use crate::gateway::{ApiError, AppState};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network/v2.0/networks", get(list_networks).post(create_networks))
        .route("/network/v2.0/networks/{id}", get(show_network).put(update_network).delete(delete_network))
        .route("/network/v2.0/subnets", get(list_subnets).post(create_subnets))
        .route("/network/v2.0/subnets/{id}", get(show_subnet).put(update_subnet).delete(delete_subnet))
}

/// A network of the API: a fixed network, one without a subnet yet, or a floating pool.
pub(super) enum ApiNetwork {
    Fixed(Network),
    Bare(BareNetwork),
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
    subnets: Vec<String>,
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

const NETWORK_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "admin_state_up",
    "shared",
    "router:external",
    "subnets",
    "project_id",
    "tenant_id",
    "provider:network_type",
    "provider:segmentation_id",
    "provider:physical_network",
    "mtu",
    "availability_zones",
    "tags",
    "description",
    "port_security_enabled",
];

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

const SUBNET_FIELDS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "cidr",
    "ip_version",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "project_id",
    "tenant_id",
    "ipv6_address_mode",
    "ipv6_ra_mode",
    "subnetpool_id",
    "tags",
    "description",
];

/// The MTU shown for a network that was given none: Ethernet's.
const DEFAULT_MTU: u32 = 1500;

fn mode_type(mode: NetworkMode) -> &'static str {
    if mode == NetworkMode::Vlan { "vlan" } else { "flat" }
}

impl ApiNetwork {
    pub(super) fn id(&self) -> String {
        match self {
            ApiNetwork::Fixed(n) => n.id.to_string(),
            ApiNetwork::Bare(n) => n.id.to_string(),
            ApiNetwork::Pool(p) => p.id.to_string(),
        }
    }

    fn name(&self) -> &str {
        match self {
            ApiNetwork::Fixed(n) => &n.label,
            ApiNetwork::Bare(n) => &n.label,
            ApiNetwork::Pool(p) => &p.name,
        }
    }

    fn project(&self) -> String {
        let project = match self {
            ApiNetwork::Fixed(n) => n.project,
            ApiNetwork::Bare(n) => n.project,
            ApiNetwork::Pool(_) => None,
        };
        project.map(|p| p.to_string()).unwrap_or_default()
    }

    fn view(&self) -> NetworkView {
        let (external, shared, network_type, segmentation_id, subnets, mtu) = match self {
            ApiNetwork::Fixed(n) => (false, n.project.is_none(), mode_type(n.mode), n.vlan, vec![self.id()], n.mtu),
            ApiNetwork::Bare(n) => (false, n.project.is_none(), mode_type(n.mode), None, Vec::new(), n.mtu),
            ApiNetwork::Pool(_) => (true, true, "flat", None, vec![self.id()], None),
        };
        let project = self.project();
        NetworkView {
            id: self.id(),
            name: self.name().to_string(),
            status: "ACTIVE",
            admin_state_up: true,
            shared,
            external,
            subnets,
            tenant_id: project.clone(),
            project_id: project,
            network_type,
            segmentation_id,
            physical_network: None,
            mtu: mtu.unwrap_or(DEFAULT_MTU),
            availability_zones: ["nova"],
            tags: [],
            description: "",
            port_security_enabled: true,
        }
    }

    /// Its subnet; a bare network has none.
    fn subnet_view(&self) -> Option<SubnetView> {
        let range = |cidr: Ipv4Network, first: u32, last: u32| AllocationPool {
            start: Ipv4Addr::from(first.max(u32::from(cidr.network()) + 1)).to_string(),
            end: Ipv4Addr::from(last.min(u32::from(cidr.broadcast()).saturating_sub(1))).to_string(),
        };
        let (name, cidr, gateway, pool, dns, dhcp) = match self {
            ApiNetwork::Fixed(n) => {
                let dns = [n.dns1, n.dns2].into_iter().flatten().map(|a| a.to_string()).collect();
                let first = n.allowed_start.map_or(u32::from(n.cidr.network()) + 2, u32::from);
                let last = n.allowed_end.map_or(u32::from(n.cidr.broadcast()) - 1 - n.vpn_clients, u32::from);
                let name = if n.subnet_name.is_empty() { n.label.clone() } else { n.subnet_name.clone() };
                (name, n.cidr, Some(n.gateway), range(n.cidr, first, last), dns, n.mode.has_dhcp())
            }
            ApiNetwork::Bare(_) => return None,
            ApiNetwork::Pool(p) => {
                let pool = range(p.range, u32::from(p.range.network()) + 1, u32::from(p.range.broadcast()) - 1);
                (p.name.clone(), p.range, None, pool, Vec::new(), false)
            }
        };
        let project = self.project();
        Some(SubnetView {
            id: self.id(),
            name,
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
        })
    }
}

impl From<AnyNetwork> for ApiNetwork {
    fn from(n: AnyNetwork) -> ApiNetwork {
        match n {
            AnyNetwork::Subnetted(n) => ApiNetwork::Fixed(n),
            AnyNetwork::Bare(n) => ApiNetwork::Bare(n),
        }
    }
}

/// The networks the caller sees: every pool; shared fixed networks and its project's (all for an admin),
/// with or without their subnet.
fn api_networks(s: &AppState, auth: &Auth) -> Result<Vec<ApiNetwork>, ApiError> {
    let mut out: Vec<ApiNetwork> =
        networks::list(&s.app, &auth.ctx).map_err(ApiError::network)?.into_iter().map(ApiNetwork::Fixed).collect();
    out.extend(networks::list_bare(&s.app, &auth.ctx).map_err(ApiError::network)?.into_iter().map(ApiNetwork::Bare));
    out.extend(floating_ips::pools(&s.app).map_err(ApiError::network)?.into_iter().map(ApiNetwork::Pool));
    Ok(out)
}

pub(super) fn find_network(s: &AppState, auth: &Auth, id: &str) -> Result<ApiNetwork, ApiError> {
    api_networks(s, auth)?
        .into_iter()
        .find(|n| n.id() == id)
        .ok_or_else(|| ApiError::network(CloudError::NotFound(format!("Network {id} could not be found."))))
}

async fn list_networks(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), NETWORK_FIELDS)?;
    let views = api_networks(&s, &auth)?.iter().map(ApiNetwork::view).collect::<Vec<_>>();
    list_answer(&s, "networks", "/network/v2.0/networks", views, &q)
}

async fn show_network(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), NETWORK_FIELDS)?;
    Ok(one_answer("network", find_network(&s, &auth, &id)?.view(), &q))
}

/// A network create: what nimbus has (`admin_state_up`, port security, no external or provider fields) may
/// be restated; anything else is a 400, not dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNetwork {
    name: String,
    admin_state_up: Option<bool>,
    shared: Option<bool>,
    project_id: Option<String>,
    tenant_id: Option<String>,
    port_security_enabled: Option<bool>,
    description: Option<String>,
    #[serde(rename = "router:external")]
    external: Option<bool>,
    availability_zone_hints: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    mtu: Option<u32>,
}

async fn create_networks(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_network").map_err(ApiError::network)?;
    let (requests, bulk) = create_requests::<CreateNetwork>(&body, "network", "networks")?;
    let mut new = Vec::with_capacity(requests.len());
    for r in requests {
        only("admin_state_up", r.admin_state_up, true, "nimbus networks are always up.")?;
        only("port_security_enabled", r.port_security_enabled, true, "anti-spoofing is always on.")?;
        only("description", r.description, String::new(), "nimbus keeps no descriptions.")?;
        only(
            "router:external",
            r.external,
            false,
            "external networks are floating pools; an operator makes them with `nimbus floating create`.",
        )?;
        if r.availability_zone_hints.as_ref().is_some_and(|z| z.iter().any(|z| z != "nova")) {
            return Err(bad("availability_zone_hints: nimbus has the one zone \"nova\".".into()));
        }
        new.push(NewNetwork {
            name: r.name,
            shared: r.shared.unwrap_or(false),
            project: r.project_id.or(r.tenant_id),
            mtu: r.mtu,
        });
    }
    let created = networks::create_bare(&s.app, &auth.ctx, new).await.map_err(ApiError::network)?;
    let views = created.into_iter().map(|n| ApiNetwork::Bare(n).view()).collect();
    Ok(created_answer("network", "networks", views, bulk))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateNetwork {
    name: Option<String>,
    admin_state_up: Option<bool>,
    port_security_enabled: Option<bool>,
    description: Option<String>,
    #[serde(default, deserialize_with = "super::number_or_text")]
    mtu: Option<u32>,
}

/// The network a change names: a fixed or bare network the caller sees (pools belong to the operator).
fn changeable(s: &AppState, auth: &Auth, id: &str) -> Result<AnyNetwork, ApiError> {
    match find_network(s, auth, id)? {
        ApiNetwork::Pool(p) => Err(ApiError::network(CloudError::Forbidden(format!(
            "Network {} is a floating pool; the operator changes it with `nimbus floating`.",
            p.name
        )))),
        ApiNetwork::Fixed(_) | ApiNetwork::Bare(_) => {
            networks::get_any(&s.app, &auth.ctx, id).map_err(ApiError::network)
        }
    }
}

async fn update_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_network").map_err(ApiError::network)?;
    let network = changeable(&s, &auth, &id)?;
    let r: UpdateNetwork = update_request(&body, "network")?;
    if r.mtu.is_some() {
        return Err(bad("mtu is set when a network is created; its bridge and ports have it from then on.".into()));
    }
    only("admin_state_up", r.admin_state_up, true, "nimbus networks are always up.")?;
    only("port_security_enabled", r.port_security_enabled, true, "anti-spoofing is always on.")?;
    only("description", r.description, String::new(), "nimbus keeps no descriptions.")?;
    let network = match r.name {
        Some(name) => networks::rename(&s.app, &auth.ctx, &network, name).await.map_err(ApiError::network)?,
        None => network,
    };
    Ok(one_answer("network", ApiNetwork::from(network).view(), &ListQuery::default()))
}

async fn delete_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_network").map_err(ApiError::network)?;
    let network = changeable(&s, &auth, &id)?;
    networks::delete_any(&s.app, &auth.trace, &auth.ctx, &network).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_subnets(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), SUBNET_FIELDS)?;
    let views = api_networks(&s, &auth)?.iter().filter_map(ApiNetwork::subnet_view).collect::<Vec<_>>();
    list_answer(&s, "subnets", "/network/v2.0/subnets", views, &q)
}

fn find_subnet(s: &AppState, auth: &Auth, id: &str) -> Result<(ApiNetwork, SubnetView), ApiError> {
    let missing = || ApiError::network(CloudError::NotFound(format!("Subnet {id} could not be found.")));
    let network = find_network(s, auth, id).map_err(|_| missing())?;
    let view = network.subnet_view().ok_or_else(missing)?;
    Ok((network, view))
}

async fn show_subnet(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q = ListQuery::parse(query.as_deref(), SUBNET_FIELDS)?;
    Ok(one_answer("subnet", find_subnet(&s, &auth, &id)?.1, &q))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolRange {
    start: String,
    end: String,
}

/// A subnet create. A nimbus network's range is its subnet: IPv4, with a gateway, at most two DNS servers
/// and one allocation pool; what it cannot do is a 400.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubnet {
    network_id: String,
    cidr: Option<String>,
    ip_version: Value,
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    gateway_ip: Option<Value>,
    dns_nameservers: Option<Vec<String>>,
    enable_dhcp: Option<bool>,
    allocation_pools: Option<Vec<PoolRange>>,
    host_routes: Option<Vec<Value>>,
    description: Option<String>,
    project_id: Option<String>,
    tenant_id: Option<String>,
    ipv6_address_mode: Option<Value>,
    ipv6_ra_mode: Option<Value>,
    subnetpool_id: Option<Value>,
    use_default_subnet_pool: Option<bool>,
    prefixlen: Option<Value>,
    segment_id: Option<Value>,
    service_types: Option<Vec<String>>,
}

/// A field given as `null` is `Some(Value::Null)`, not absent (`gateway_ip: null` asks for no gateway).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn address(field: &str, text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse().map_err(|_| bad(format!("Invalid {field} {text:?}: an IPv4 address is expected.")))
}

fn new_subnet(auth: &Auth, r: CreateSubnet) -> Result<NewSubnet, ApiError> {
    if r.ip_version != 4 && r.ip_version != "4" {
        return Err(bad(format!("ip_version {} is not supported: nimbus networks are IPv4.", r.ip_version)));
    }
    for (field, value) in [
        ("ipv6_address_mode", &r.ipv6_address_mode),
        ("ipv6_ra_mode", &r.ipv6_ra_mode),
        ("subnetpool_id", &r.subnetpool_id),
        ("prefixlen", &r.prefixlen),
        ("segment_id", &r.segment_id),
    ] {
        if value.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad(format!("{field} is not supported: a nimbus subnet is an IPv4 range given as cidr.")));
        }
    }
    only("use_default_subnet_pool", r.use_default_subnet_pool, false, "nimbus has no subnet pools.")?;
    only("description", r.description, String::new(), "nimbus keeps no descriptions.")?;
    if r.host_routes.as_ref().is_some_and(|h| !h.is_empty()) || r.service_types.as_ref().is_some_and(|t| !t.is_empty())
    {
        return Err(bad("host_routes and service_types are not supported by nimbus networks.".into()));
    }
    if let Some(project) = r.project_id.or(r.tenant_id).filter(|p| *p != auth.ctx.project.to_string())
        && !auth.is_admin()
    {
        return Err(ApiError::network(CloudError::Forbidden(format!(
            "Only an admin may create a subnet for project {project}."
        ))));
    }
    let cidr_text = r.cidr.ok_or_else(|| bad("A subnet needs a cidr (nimbus has no subnet pools).".into()))?;
    let cidr: Ipv4Network =
        cidr_text.parse().map_err(|_| bad(format!("Invalid cidr {cidr_text:?}: an IPv4 range is expected.")))?;
    let gateway = match r.gateway_ip {
        None => None,
        Some(Value::Null) => {
            return Err(bad("gateway_ip null is not supported: a nimbus network always has a gateway.".into()));
        }
        Some(Value::String(g)) => Some(address("gateway_ip", &g)?),
        Some(other) => return Err(bad(format!("Invalid gateway_ip {other}."))),
    };
    let dns =
        r.dns_nameservers.unwrap_or_default().iter().map(|d| address("dns_nameserver", d)).collect::<Result<_, _>>()?;
    let pool = match r.allocation_pools.unwrap_or_default().as_slice() {
        [] => None,
        [one] => Some((address("allocation pool start", &one.start)?, address("allocation pool end", &one.end)?)),
        _ => return Err(bad("A nimbus subnet has one allocation pool.".into())),
    };
    if let Some((start, end)) = pool
        && u32::from(start) > u32::from(end)
    {
        return Err(bad(format!("The allocation pool {start}-{end} ends before it starts.")));
    }
    Ok(NewSubnet {
        network: r.network_id,
        name: r.name.unwrap_or_default(),
        cidr,
        gateway,
        dns,
        enable_dhcp: r.enable_dhcp.unwrap_or(true),
        pool,
    })
}

async fn create_subnets(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_subnet").map_err(ApiError::network)?;
    let (requests, bulk) = create_requests::<CreateSubnet>(&body, "subnet", "subnets")?;
    let new = requests.into_iter().map(|r| new_subnet(&auth, r)).collect::<Result<Vec<_>, _>>()?;
    let mut views = Vec::with_capacity(new.len());
    for subnet in new {
        let network =
            networks::create_subnet(&s.app, &auth.trace, &auth.ctx, subnet).await.map_err(ApiError::network)?;
        views.push(ApiNetwork::Fixed(network).subnet_view().expect("a fixed network has its subnet"));
    }
    Ok(created_answer("subnet", "subnets", views, bulk))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSubnet {
    name: Option<String>,
    description: Option<String>,
}

async fn update_subnet(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_subnet").map_err(ApiError::network)?;
    let (network, view) = find_subnet(&s, &auth, &id)?;
    let ApiNetwork::Fixed(network) = network else {
        return Err(ApiError::network(CloudError::Forbidden("A floating pool's range is the operator's.".into())));
    };
    let request: UpdateSubnet = update_request(&body, "subnet")?;
    only("description", request.description, String::new(), "nimbus keeps no descriptions.")?;
    let view = match request.name {
        Some(name) => {
            let renamed =
                networks::rename_subnet(&s.app, &auth.ctx, &network, name).await.map_err(ApiError::network)?;
            ApiNetwork::Fixed(renamed).subnet_view().expect("a fixed network has its subnet")
        }
        None => view,
    };
    Ok(one_answer("subnet", view, &ListQuery::default()))
}

async fn delete_subnet(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_subnet").map_err(ApiError::network)?;
    let ApiNetwork::Fixed(network) = find_subnet(&s, &auth, &id)?.0 else {
        return Err(ApiError::network(CloudError::Forbidden("A floating pool's range is the operator's.".into())));
    };
    networks::delete_subnet(&s.app, &auth.trace, &auth.ctx, &network).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_protocol::ids::NetworkId;

    #[test]
    fn the_known_fields_are_the_views_fields() {
        let bare = ApiNetwork::Bare(BareNetwork {
            id: NetworkId::generate(),
            label: "n".into(),
            mode: NetworkMode::Flat,
            project: None,
            created_at: 0,
            mtu: None,
        });
        super::super::assert_known_fields(bare.view(), NETWORK_FIELDS);
        let pool = ApiNetwork::Pool(FloatingPool {
            id: nimbus_protocol::ids::PoolId::generate(),
            name: "public".into(),
            range: "198.51.100.0/28".parse().unwrap(),
            interface: String::new(),
            created_at: 0,
        });
        super::super::assert_known_fields(pool.subnet_view().unwrap(), SUBNET_FIELDS);
    }
}
