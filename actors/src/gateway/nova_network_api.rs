//! The nova-network era compute endpoints: `os-networks`, `os-floating-ip-pools`, `os-floating-ips`,
//! `os-fixed-ips`, and the `os-quota-sets` that limit them. Same model as the Network v2.0 API
//! (`network_api`); only the shapes differ.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_protocol::ids::ProjectId;
use nimbus_storage::records::{FloatingIp, Network, NetworkMode, Quota, Role, Usage};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Auth;
use super::errors::{parse_address, parse_json};
use super::microversion::Microversion;
use super::{ApiError, AppState};
use crate::app::error::CloudError;
use crate::app::floating_ips::{self, Caller};
use crate::app::quota::{self, QuotaChanges};
use crate::app::servers::MAX_METADATA_ITEMS;
use crate::app::{fixed_ips, identity, networks, security_groups};
use crate::network_plan::NetworkRequest;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/compute/v2.1/os-networks", get(list_networks).post(create_network))
        .route("/compute/v2.1/os-networks/add", post(add_network))
        .route("/compute/v2.1/os-networks/{id}", get(show_network).delete(delete_network))
        .route("/compute/v2.1/os-networks/{id}/action", post(network_action))
        .route("/compute/v2.1/os-floating-ip-pools", get(list_pools))
        .route("/compute/v2.1/os-floating-ips-bulk", post(create_pool))
        .route("/compute/v2.1/os-floating-ips", get(list_floating).post(allocate_floating))
        .route("/compute/v2.1/os-floating-ips/{id}", get(show_floating).delete(release_floating))
        .route("/compute/v2.1/os-fixed-ips/{address}", get(show_fixed))
        .route("/compute/v2.1/os-fixed-ips/{address}/action", post(fixed_action))
        .route("/compute/v2.1/os-quota-sets/{project}", get(show_quota).put(update_quota))
        .route("/compute/v2.1/os-quota-sets/{project}/detail", get(show_quota_detail))
}

/// What only an admin sees of a network.
#[derive(Serialize)]
struct NetworkAdminView<'a> {
    bridge: &'a str,
    bridge_interface: Option<&'a str>,
    vlan: Option<u16>,
    dhcp_server: Option<String>,
    dhcp_start: Option<String>,
    vpn_private_address: Option<String>,
    vpn_public_address: Option<String>,
    vpn_public_port: Option<u16>,
    project_id: Option<String>,
    multi_host: bool,
    mode: &'static str,
    host: Option<String>,
    injected: bool,
    mtu: Option<u32>,
}

#[derive(Serialize)]
struct NetworkView<'a> {
    id: String,
    label: &'a str,
    cidr: String,
    netmask: String,
    gateway: String,
    broadcast: String,
    dns1: Option<String>,
    dns2: Option<String>,
    cidr_v6: Option<String>,
    gateway_v6: Option<String>,
    netmask_v6: Option<String>,
    #[serde(flatten)]
    admin: Option<NetworkAdminView<'a>>,
}

fn network_view(n: &Network, admin: bool) -> NetworkView<'_> {
    NetworkView {
        id: n.id.to_string(),
        label: &n.label,
        cidr: n.cidr.to_string(),
        netmask: n.cidr.mask().to_string(),
        gateway: n.gateway.to_string(),
        broadcast: n.cidr.broadcast().to_string(),
        dns1: n.dns1.map(|a| a.to_string()),
        dns2: n.dns2.map(|a| a.to_string()),
        cidr_v6: None,
        gateway_v6: None,
        netmask_v6: None,
        admin: admin.then(|| NetworkAdminView {
            bridge: &n.bridge,
            bridge_interface: n.bridge_interface.as_deref(),
            vlan: n.vlan,
            dhcp_server: n.dhcp_server.map(|a| a.to_string()),
            dhcp_start: None,
            vpn_private_address: n.vpn.as_ref().map(|v| v.private_address.to_string()),
            vpn_public_address: n.vpn.as_ref().and_then(|v| v.public_address).map(|a| a.to_string()),
            vpn_public_port: n.vpn.as_ref().map(|v| v.public_port),
            project_id: n.project.map(|p| p.to_string()),
            multi_host: n.multi_host,
            mode: n.mode.name(),
            host: None,
            injected: n.mode == NetworkMode::Flat,
            mtu: n.mtu,
        }),
    }
}

async fn list_networks(State(s): State<AppState>, auth: Auth) -> ApiResult {
    let all = networks::list(&s.app, &auth.ctx).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        networks: Vec<NetworkView<'a>>,
    }
    Ok(Json(Body { networks: all.iter().map(|n| network_view(n, auth.is_admin())).collect() }).into_response())
}

#[derive(Serialize)]
struct NetworkBody<'a> {
    network: NetworkView<'a>,
}

async fn show_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let network = networks::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    Ok(Json(NetworkBody { network: network_view(&network, auth.is_admin()) }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNetwork {
    network: NewNetwork,
}

/// What an `os-networks` create may ask for; a field nimbus does not apply (`cidr_v6`, `priority`, …) is a
/// 400, never dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNetwork {
    label: String,
    cidr: String,
    #[serde(default)]
    mode: Option<String>,
    num_networks: Option<u32>,
    network_size: Option<u32>,
    vlan_start: Option<u32>,
    vpn_start: Option<u32>,
    gateway: Option<Ipv4Addr>,
    bridge: Option<String>,
    bridge_interface: Option<String>,
    dns1: Option<Ipv4Addr>,
    dns2: Option<Ipv4Addr>,
    #[serde(default)]
    multi_host: bool,
    allowed_start: Option<Ipv4Addr>,
    allowed_end: Option<Ipv4Addr>,
    project_id: Option<String>,
    vpn_public_address: Option<Ipv4Addr>,
    mtu: Option<u32>,
}

/// The admin's network request in the planner's terms.
fn network_request(new: NewNetwork) -> Result<(NetworkRequest, Option<String>), CloudError> {
    let bad = CloudError::BadRequest;
    let cidr = new.cidr.parse().map_err(|_| bad(format!("{} is not an IPv4 CIDR.", new.cidr)))?;
    let mode = match new.mode.as_deref() {
        None => NetworkMode::Flat,
        Some(m) => {
            NetworkMode::from_name(m).ok_or_else(|| bad(format!("Unknown mode {m:?}; use flat, flat_dhcp or vlan.")))?
        }
    };
    let mut request = NetworkRequest::new(&new.label, mode, cidr);
    request.num_networks = new.num_networks.unwrap_or(request.num_networks);
    request.network_size = new.network_size.unwrap_or(request.network_size);
    request.vlan_start = new.vlan_start.unwrap_or(request.vlan_start);
    request.vpn_start = new.vpn_start.unwrap_or(request.vpn_start);
    request.gateway = new.gateway;
    request.bridge = new.bridge;
    request.bridge_interface = new.bridge_interface;
    request.dns1 = new.dns1;
    request.dns2 = new.dns2;
    request.multi_host = new.multi_host;
    request.allowed_start = new.allowed_start;
    request.allowed_end = new.allowed_end;
    request.vpn_public_address = new.vpn_public_address;
    request.mtu = new.mtu;
    Ok((request, new.project_id))
}

async fn create_network(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:create").map_err(ApiError::compute)?;
    let request: CreateNetwork = parse_json(&body).map_err(ApiError::compute)?;
    let (request, project) = network_request(request.network).map_err(ApiError::compute)?;
    let created =
        networks::create(&s.app, &auth.trace, request, project.as_deref()).await.map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        network: Option<NetworkView<'a>>,
        networks: Vec<NetworkView<'a>>,
    }
    let body = Body {
        network: created.first().map(|n| network_view(n, true)),
        networks: created.iter().map(|n| network_view(n, true)).collect(),
    };
    Ok(Json(body).into_response())
}

async fn delete_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:delete").map_err(ApiError::compute)?;
    let network = networks::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    networks::delete(&s.app, &auth.trace, network.id).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
struct AddNetwork {
    id: Option<String>,
}

/// `POST /os-networks/add {"id": …}`: binds the network to the caller's project (nova's associate).
async fn add_network(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:add").map_err(ApiError::compute)?;
    let request: AddNetwork = parse_json(&body).map_err(ApiError::compute)?;
    let id =
        request.id.ok_or_else(|| ApiError::compute(CloudError::BadRequest("The network id is required.".into())))?;
    let network = networks::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    let project = auth.ctx.project.to_string();
    networks::set_project(&s.app, &auth.trace, network.id, Some(&project)).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum NetworkAction {
    Disassociate(IgnoredAny),
    DisassociateProject(IgnoredAny),
    AssociateProject(String),
}

async fn network_action(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:associate").map_err(ApiError::compute)?;
    let network = networks::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    let project = match parse_json::<NetworkAction>(&body).map_err(ApiError::compute)? {
        NetworkAction::Disassociate(_) | NetworkAction::DisassociateProject(_) => None,
        NetworkAction::AssociateProject(p) => Some(p),
    };
    networks::set_project(&s.app, &auth.trace, network.id, project.as_deref()).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_pools(State(s): State<AppState>, _auth: Auth) -> ApiResult {
    let pools = floating_ips::pools(&s.app).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct PoolName<'a> {
        name: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        floating_ip_pools: Vec<PoolName<'a>>,
    }
    Ok(Json(Body { floating_ip_pools: pools.iter().map(|p| PoolName { name: &p.name }).collect() }).into_response())
}

#[derive(Deserialize)]
struct BulkCreate {
    floating_ips_bulk_create: NewPool,
}

#[derive(Deserialize)]
struct NewPool {
    ip_range: String,
    pool: Option<String>,
    interface: Option<String>,
}

/// `POST /os-floating-ips-bulk` (admin): creates a pool of floating addresses, as `nova-manage floating
/// create` did.
async fn create_pool(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-floating-ips-bulk").map_err(ApiError::compute)?;
    let request: BulkCreate = parse_json(&body).map_err(ApiError::compute)?;
    let new = request.floating_ips_bulk_create;
    let range = new
        .ip_range
        .parse()
        .map_err(|_| ApiError::compute(CloudError::BadRequest(format!("{} is not an IPv4 CIDR.", new.ip_range))))?;
    let name = new.pool.unwrap_or_else(|| "nova".into());
    let interface = new.interface.unwrap_or_else(|| "eth0".into());
    let pool = floating_ips::create_pool(&s.app, name, range, interface).await.map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Created<'a> {
        ip_range: String,
        pool: &'a str,
        interface: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        floating_ips_bulk_create: Created<'a>,
    }
    let created = Created { ip_range: pool.range.to_string(), pool: &pool.name, interface: &pool.interface };
    Ok(Json(Body { floating_ips_bulk_create: created }).into_response())
}

#[derive(Serialize)]
struct FloatingView<'a> {
    id: String,
    ip: String,
    pool: &'a str,
    fixed_ip: Option<String>,
    instance_id: Option<String>,
}

fn floating_view(ip: &FloatingIp) -> FloatingView<'_> {
    FloatingView {
        id: ip.id.to_string(),
        ip: ip.address.to_string(),
        pool: &ip.pool,
        fixed_ip: ip.fixed_address.map(|a| a.to_string()),
        instance_id: ip.instance.map(|i| i.to_string()),
    }
}

#[derive(Serialize)]
struct FloatingBody<'a> {
    floating_ip: FloatingView<'a>,
}

async fn list_floating(State(s): State<AppState>, auth: Auth) -> ApiResult {
    // Even an admin sees its own project's addresses here, as nova-network showed them.
    let mine = Caller { project: auth.ctx.project, admin: false };
    let ips = floating_ips::list(&s.app, mine).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        floating_ips: Vec<FloatingView<'a>>,
    }
    Ok(Json(Body { floating_ips: ips.iter().map(floating_view).collect() }).into_response())
}

async fn show_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let ip = floating_ips::find(&s.app, auth.caller(), &id).map_err(ApiError::compute)?;
    Ok(Json(FloatingBody { floating_ip: floating_view(&ip) }).into_response())
}

#[derive(Deserialize, Default)]
struct AllocateFloating {
    pool: Option<String>,
}

async fn allocate_floating(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-floating-ips").map_err(ApiError::compute)?;
    let request: AllocateFloating =
        if body.is_empty() { AllocateFloating::default() } else { parse_json(&body).map_err(ApiError::compute)? };
    let ip = floating_ips::allocate(&s.app, auth.caller(), request.pool).await.map_err(ApiError::compute)?;
    Ok(Json(FloatingBody { floating_ip: floating_view(&ip) }).into_response())
}

async fn release_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-floating-ips").map_err(ApiError::compute)?;
    let ip = floating_ips::find(&s.app, auth.caller(), &id).map_err(ApiError::compute)?;
    floating_ips::release(&s.app, &auth.trace, auth.caller(), ip.address).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `os-fixed-ips/{address}`: its network's range, and the instance that holds it; 2.4 adds `reserved`.
async fn show_fixed(State(s): State<AppState>, auth: Auth, v: Microversion, Path(address): Path<String>) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-fixed-ips").map_err(ApiError::compute)?;
    let ip = parse_address(&address).map_err(ApiError::compute)?;
    let info = fixed_ips::info(&s.app, ip)
        .map_err(ApiError::compute)?
        .ok_or_else(|| ApiError::compute(CloudError::NotFound(format!("Fixed IP {address} could not be found."))))?;
    #[derive(Serialize)]
    struct FixedView<'a> {
        address: &'a str,
        cidr: String,
        hostname: Option<&'a str>,
        host: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reserved: Option<bool>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        fixed_ip: FixedView<'a>,
    }
    let view = FixedView {
        address: &address,
        cidr: info.network.cidr.to_string(),
        hostname: info.instance.as_ref().map(|i| i.name.as_str()),
        host: info.instance.as_ref().and_then(|i| i.host.as_ref()).map(|h| h.0.as_str()),
        reserved: v.has(4).then(|| info.row.as_ref().is_some_and(|r| r.reserved)),
    };
    Ok(Json(Body { fixed_ip: view }).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FixedAction {
    Reserve(IgnoredAny),
    Unreserve(IgnoredAny),
}

async fn fixed_action(State(s): State<AppState>, auth: Auth, Path(address): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-fixed-ips").map_err(ApiError::compute)?;
    let ip = parse_address(&address).map_err(ApiError::compute)?;
    let reserve = match parse_json::<FixedAction>(&body).map_err(ApiError::compute)? {
        FixedAction::Reserve(_) => true,
        FixedAction::Unreserve(_) => false,
    };
    fixed_ips::reserve(&s.app, ip, reserve).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A limit as the quota APIs write it: -1 for unlimited.
fn limit(v: Option<u64>) -> i64 {
    v.map_or(-1, |n| n as i64)
}

/// A quota field with its usage (`os-quota-sets/{id}/detail`).
#[derive(Serialize)]
struct Detailed {
    limit: i64,
    in_use: u64,
    reserved: u64,
}

/// The limits that are the same for every project, as Nova's defaults: `metadata_items` is enforced (and
/// cannot be changed), the others not yet.
#[derive(Serialize)]
struct OtherLimits {
    metadata_items: u32,
    injected_files: u32,
    injected_file_content_bytes: u32,
    injected_file_path_bytes: u32,
    server_groups: u32,
    server_group_members: u32,
}

const OTHER_LIMITS: OtherLimits = OtherLimits {
    metadata_items: MAX_METADATA_ITEMS as u32,
    injected_files: 5,
    injected_file_content_bytes: 10240,
    injected_file_path_bytes: 255,
    server_groups: 10,
    server_group_members: 10,
};

/// A quota set; 2.36 took out the network service's limits (`floating_ips`, `fixed_ips`,
/// `security_groups`, `security_group_rules`).
#[derive(Serialize)]
struct QuotaView<T> {
    id: String,
    instances: T,
    cores: T,
    ram: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    floating_ips: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fixed_ips: Option<T>,
    key_pairs: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_groups: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_group_rules: Option<T>,
    #[serde(flatten)]
    other: OtherLimits,
}

/// The limits 2.36 took out of the quota sets.
const NETWORK_QUOTAS: [&str; 4] = ["floating_ips", "fixed_ips", "security_groups", "security_group_rules"];

#[derive(Serialize)]
struct QuotaBody<T> {
    quota_set: QuotaView<T>,
}

fn quota_view(project: ProjectId, q: &Quota, v: Microversion) -> QuotaBody<i64> {
    let network = |value| (!v.has(36)).then_some(value);
    QuotaBody {
        quota_set: QuotaView {
            id: project.to_string(),
            instances: limit(q.instances),
            cores: limit(q.cores),
            ram: limit(q.ram_mb),
            floating_ips: network(limit(q.floating_ips)),
            fixed_ips: network(limit(q.fixed_ips)),
            key_pairs: limit(q.key_pairs),
            security_groups: network(limit(q.security_groups)),
            security_group_rules: network(limit(q.security_group_rules)),
            other: OTHER_LIMITS,
        },
    }
}

fn quota_detail_view(project: ProjectId, q: &Quota, u: &Usage, groups: u64, v: Microversion) -> QuotaBody<Detailed> {
    let detailed = |limit_of: Option<u64>, in_use: u64| Detailed { limit: limit(limit_of), in_use, reserved: 0 };
    let network = |value| (!v.has(36)).then_some(value);
    QuotaBody {
        quota_set: QuotaView {
            id: project.to_string(),
            instances: detailed(q.instances, u.instances),
            cores: detailed(q.cores, u.cores),
            ram: detailed(q.ram_mb, u.ram_mb),
            floating_ips: network(detailed(q.floating_ips, u.floating_ips)),
            fixed_ips: network(detailed(q.fixed_ips, u.fixed_ips)),
            // Key pairs are counted per user, not per project (as in nova, whose project detail shows 0).
            key_pairs: detailed(q.key_pairs, 0),
            security_groups: network(detailed(q.security_groups, groups)),
            // Counted per group, as nova-network did: no project-wide figure.
            security_group_rules: network(detailed(q.security_group_rules, 0)),
            other: OTHER_LIMITS,
        },
    }
}

/// The project a quota request names: the caller's own, or (admin) any. A member asking about any other
/// project is refused the same way whether it exists or not, so the answer does not reveal project names.
fn quota_project(s: &AppState, auth: &Auth, id: &str) -> Result<ProjectId, ApiError> {
    let project = identity::find_project(&s.app, id).map_err(ApiError::compute)?;
    match project {
        Some(p) if p.id == auth.ctx.project || auth.is_admin() => Ok(p.id),
        None if auth.is_admin() => {
            Err(ApiError::compute(CloudError::NotFound(format!("Project {id} could not be found."))))
        }
        _ => Err(ApiError::compute(CloudError::Forbidden(
            "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.".into(),
        ))),
    }
}

async fn show_quota(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let project = quota_project(&s, &auth, &id)?;
    let (q, _) = quota::show(&s.app, project).map_err(ApiError::compute)?;
    Ok(Json(quota_view(project, &q, v)).into_response())
}

async fn show_quota_detail(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
) -> ApiResult {
    let project = quota_project(&s, &auth, &id)?;
    let (q, u) = quota::show(&s.app, project).map_err(ApiError::compute)?;
    let groups = security_groups::count(&s.app, project).map_err(ApiError::compute)?;
    Ok(Json(quota_detail_view(project, &q, &u, groups, v)).into_response())
}

#[derive(Deserialize)]
struct UpdateQuota {
    quota_set: HashMap<String, Value>,
}

/// `PUT /os-quota-sets/{project}` (admin): sets limits; -1 is unlimited. Limits nimbus does not enforce are
/// accepted and ignored, as clients send them all.
async fn update_quota(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-quota-sets:update").map_err(ApiError::compute)?;
    let project = quota_project(&s, &auth, &id)?;
    let request: UpdateQuota = parse_json(&body).map_err(ApiError::compute)?;
    if let Some(removed) = NETWORK_QUOTAS.iter().find(|k| v.has(36) && request.quota_set.contains_key(**k)) {
        return Err(ApiError::compute(CloudError::BadRequest(format!(
            "{removed} is no quota of the compute API from microversion 2.36 on (this request is at {v}); the \
             network API's quotas hold it."
        ))));
    }
    // Enforced, but the same for every project: another value would be accepted and not honoured.
    let fixed = MAX_METADATA_ITEMS as i64;
    if let Some(asked) = request.quota_set.get("metadata_items")
        && asked.as_i64().or_else(|| asked.as_str().and_then(|s| s.parse().ok())) != Some(fixed)
    {
        return Err(ApiError::compute(CloudError::BadRequest(format!(
            "metadata_items is {fixed} per server for every project here; it cannot be set to {asked}."
        ))));
    }
    let parse = |key: &str| -> Result<Option<Option<u64>>, ApiError> {
        match request.quota_set.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
                Some(-1) => Ok(Some(None)),
                Some(n) if n >= 0 => Ok(Some(Some(n as u64))),
                _ => Err(ApiError::compute(CloudError::BadRequest(format!(
                    "Quota limit {key} must be -1 or a non-negative integer, not {v}."
                )))),
            },
        }
    };
    let changes = QuotaChanges {
        instances: parse("instances")?,
        cores: parse("cores")?,
        ram_mb: parse("ram")?,
        floating_ips: parse("floating_ips")?,
        fixed_ips: parse("fixed_ips")?,
        key_pairs: parse("key_pairs")?,
        security_groups: parse("security_groups")?,
        security_group_rules: parse("security_group_rules")?,
    };
    let q = quota::update(&s.app, project, changes).await.map_err(ApiError::compute)?;
    Ok(Json(quota_view(project, &q, v)).into_response())
}
