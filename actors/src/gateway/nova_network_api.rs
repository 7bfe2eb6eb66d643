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
use nimbus_runtime::Wire;
use nimbus_storage::Reads;
use nimbus_storage::ids::{NetworkId, ProjectId};
use nimbus_storage::records::{FloatingIp, Network, NetworkMode, Quota, Role, Usage};
use nimbus_storage::schema::{FLOATING_POOLS, NETWORKS, QUOTAS};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, call_network};
use crate::network::floating::{self, Caller, FloatingOutcome, FloatingRequest};
use crate::network::plan::NetworkRequest;
use crate::network::{self, NetworkMsg};
use crate::{CloudError, identity, quota};

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

fn compute<E: Into<CloudError>>(e: E) -> ApiError {
    ApiError::compute(e.into())
}

fn network_view(n: &Network, admin: bool) -> Value {
    let mut v = json!({
        "id": n.id.to_string(), "label": n.label, "cidr": n.cidr.to_string(), "netmask": n.cidr.mask().to_string(),
        "gateway": n.gateway.to_string(), "broadcast": n.cidr.broadcast().to_string(),
        "dns1": n.dns1.map(|a| a.to_string()), "dns2": n.dns2.map(|a| a.to_string()),
        "cidr_v6": null, "gateway_v6": null, "netmask_v6": null,
    });
    if admin {
        let extra = json!({
            "bridge": n.bridge, "bridge_interface": n.bridge_interface, "vlan": n.vlan,
            "dhcp_server": n.dhcp_server.map(|a| a.to_string()), "dhcp_start": null,
            "vpn_private_address": n.vpn.as_ref().map(|v| v.private_address.to_string()),
            "vpn_public_address": n.vpn.as_ref().and_then(|v| v.public_address).map(|a| a.to_string()),
            "vpn_public_port": n.vpn.as_ref().map(|v| v.public_port),
            "project_id": n.project.map(|p| p.to_string()), "multi_host": n.multi_host,
            "mode": n.mode.name(), "host": null, "injected": n.mode == NetworkMode::Flat,
        });
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    }
    v
}

/// The networks a caller sees: all for an admin; the shared ones and its project's own otherwise.
fn visible_networks(s: &AppState, auth: &Auth) -> Result<Vec<Network>, ApiError> {
    let mut networks: Vec<Network> =
        s.ctx.store.read(|r| r.scan(&NETWORKS)).map_err(compute)?.into_iter().map(|(_, n)| n).collect();
    networks.retain(|n| auth.sees_network(n));
    networks.sort_by_key(|n| (n.created_at, u32::from(n.cidr.network())));
    Ok(networks)
}

async fn list_networks(State(s): State<AppState>, auth: Auth) -> ApiResult {
    let views: Vec<Value> = visible_networks(&s, &auth)?.iter().map(|n| network_view(n, auth.is_admin())).collect();
    Ok(Json(json!({"networks": views})).into_response())
}

fn find_network(s: &AppState, auth: &Auth, id: &str) -> Result<Network, ApiError> {
    let missing = || ApiError::compute(CloudError::NotFound(format!("Network {id} could not be found.")));
    let parsed: NetworkId = id.parse().map_err(|_| missing())?;
    visible_networks(s, auth)?.into_iter().find(|n| n.id == parsed).ok_or_else(missing)
}

async fn show_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let network = find_network(&s, &auth, &id)?;
    Ok(Json(json!({"network": network_view(&network, auth.is_admin())})).into_response())
}

#[derive(Deserialize)]
struct CreateNetwork {
    network: NewNetwork,
}

#[derive(Deserialize)]
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
}

/// Parses the admin's network request into the planner's terms.
fn network_request(s: &AppState, new: NewNetwork) -> Result<NetworkRequest, CloudError> {
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
    request.project = match new.project_id {
        Some(p) => Some(
            identity::find_project(&s.ctx.store, &p)?
                .ok_or_else(|| bad(format!("Project {p} could not be found.")))?
                .id,
        ),
        None => None,
    };
    Ok(request)
}

async fn create_network(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:create").map_err(compute)?;
    let request: CreateNetwork = parse_json(&body).map_err(compute)?;
    let request = network_request(&s, request.network).map_err(compute)?;
    let created = call_network(&s.ctx, |r| NetworkMsg::CreateNetworks(Wire(request), r)).await.map_err(compute)?;
    let first = created.first().map(|n| network_view(n, true)).unwrap_or(Value::Null);
    let all: Vec<Value> = created.iter().map(|n| network_view(n, true)).collect();
    Ok(Json(json!({"network": first, "networks": all})).into_response())
}

async fn delete_network(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:delete").map_err(compute)?;
    let network = find_network(&s, &auth, &id)?;
    call_network(&s.ctx, |r| NetworkMsg::DeleteNetwork(Wire(network.id), r)).await.map_err(compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
struct AddNetwork {
    id: Option<String>,
}

/// `POST /os-networks/add {"id": …}`: binds the network to the caller's project (nova's associate).
async fn add_network(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-networks:add").map_err(compute)?;
    let request: AddNetwork = parse_json(&body).map_err(compute)?;
    let id = request.id.ok_or_else(|| compute(CloudError::BadRequest("The network id is required.".into())))?;
    let network = find_network(&s, &auth, &id)?;
    let project = auth.0.project;
    call_network(&s.ctx, |r| NetworkMsg::SetNetworkProject(Wire((network.id, Some(project))), r))
        .await
        .map_err(compute)?;
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
    auth.require(Role::Admin, "os_compute_api:os-networks:associate").map_err(compute)?;
    let network = find_network(&s, &auth, &id)?;
    let action: NetworkAction = parse_json(&body).map_err(compute)?;
    let project: Option<ProjectId> = match action {
        NetworkAction::Disassociate(_) | NetworkAction::DisassociateProject(_) => None,
        NetworkAction::AssociateProject(p) => Some(
            identity::find_project(&s.ctx.store, &p)
                .map_err(compute)?
                .ok_or_else(|| compute(CloudError::BadRequest(format!("Project {p} could not be found."))))?
                .id,
        ),
    };
    call_network(&s.ctx, |r| NetworkMsg::SetNetworkProject(Wire((network.id, project)), r)).await.map_err(compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_pools(State(s): State<AppState>, _auth: Auth) -> ApiResult {
    let pools = s.ctx.store.read(|r| r.scan(&FLOATING_POOLS)).map_err(compute)?;
    let views: Vec<Value> = pools.iter().map(|(name, _)| json!({"name": name})).collect();
    Ok(Json(json!({"floating_ip_pools": views})).into_response())
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
    auth.require(Role::Admin, "os_compute_api:os-floating-ips-bulk").map_err(compute)?;
    let request: BulkCreate = parse_json(&body).map_err(compute)?;
    let new = request.floating_ips_bulk_create;
    let range = new
        .ip_range
        .parse()
        .map_err(|_| compute(CloudError::BadRequest(format!("{} is not an IPv4 CIDR.", new.ip_range))))?;
    let request = FloatingRequest::CreatePool {
        name: new.pool.unwrap_or_else(|| "nova".into()),
        range,
        interface: new.interface.unwrap_or_else(|| "eth0".into()),
    };
    let FloatingOutcome::Pool(pool) =
        call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(compute)?
    else {
        unreachable!("pool creation answers with the pool")
    };
    Ok(Json(json!({"floating_ips_bulk_create": {
        "ip_range": pool.range.to_string(), "pool": pool.name, "interface": pool.interface,
    }}))
    .into_response())
}

fn floating_view(ip: &FloatingIp) -> Value {
    json!({
        "id": ip.id.to_string(), "ip": ip.address.to_string(), "pool": ip.pool,
        "fixed_ip": ip.fixed_address.map(|a| a.to_string()), "instance_id": ip.instance.map(|i| i.to_string()),
    })
}

async fn list_floating(State(s): State<AppState>, auth: Auth) -> ApiResult {
    // Even an admin sees its own project's addresses here, as nova-network showed them.
    let mine = Caller { project: auth.0.project, admin: false };
    let ips = s.ctx.store.read(|r| floating::list(r, mine)).map_err(compute)?;
    Ok(Json(json!({"floating_ips": ips.iter().map(floating_view).collect::<Vec<_>>()})).into_response())
}

/// A floating IP of the caller's, by id or address; anything else is a 404.
pub(super) fn owned_floating(s: &AppState, auth: &Auth, id: &str) -> Result<FloatingIp, CloudError> {
    let ip = s.ctx.store.read(|r| floating::find(r, id))?;
    ip.filter(|ip| ip.project.is_some_and(|p| p == auth.0.project || auth.is_admin()))
        .ok_or_else(|| CloudError::NotFound(format!("Floating IP {id} could not be found.")))
}

async fn show_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let ip = owned_floating(&s, &auth, &id).map_err(compute)?;
    Ok(Json(json!({"floating_ip": floating_view(&ip)})).into_response())
}

#[derive(Deserialize, Default)]
struct AllocateFloating {
    pool: Option<String>,
}

async fn allocate_floating(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-floating-ips").map_err(compute)?;
    let request: AllocateFloating =
        if body.is_empty() { AllocateFloating::default() } else { parse_json(&body).map_err(compute)? };
    let request = FloatingRequest::Allocate { caller: auth.caller(), pool: request.pool };
    let outcome = call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(compute)?;
    let FloatingOutcome::Ip(ip) = outcome else { unreachable!("allocate answers with an address") };
    Ok(Json(json!({"floating_ip": floating_view(&ip)})).into_response())
}

async fn release_floating(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-floating-ips").map_err(compute)?;
    let ip = owned_floating(&s, &auth, &id).map_err(compute)?;
    let caller = auth.caller();
    // Releasing an associated address disassociates it first, as nova-network did.
    if ip.instance.is_some() {
        let request = FloatingRequest::Disassociate { caller, address: ip.address };
        call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(compute)?;
    }
    let request = FloatingRequest::Release { caller, address: ip.address };
    call_network(&s.ctx, |r| NetworkMsg::Floating(Wire(request), r)).await.map_err(compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn parse_address(address: &str) -> Result<Ipv4Addr, ApiError> {
    address.parse().map_err(|_| compute(CloudError::BadRequest(format!("{address} is not an IPv4 address."))))
}

async fn show_fixed(State(s): State<AppState>, auth: Auth, Path(address): Path<String>) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-fixed-ips").map_err(compute)?;
    let ip = parse_address(&address)?;
    let info = s.ctx.store.read(|r| network::fixed_ip_info(r, ip)).map_err(compute)?;
    let (net, row) =
        info.ok_or_else(|| compute(CloudError::NotFound(format!("Fixed IP {address} could not be found."))))?;
    let instance = row.as_ref().and_then(|r| r.instance);
    let (hostname, host) = match instance {
        Some(id) => s
            .ctx
            .store
            .read(|r| r.get(&nimbus_storage::schema::INSTANCES, &id))
            .map_err(compute)?
            .map_or((None, None), |i| (Some(i.name), i.host.map(|h| h.0))),
        None => (None, None),
    };
    Ok(Json(json!({"fixed_ip": {
        "address": address, "cidr": net.cidr.to_string(), "hostname": hostname, "host": host,
        "reserved": row.as_ref().is_some_and(|r| r.reserved),
        "allocated": row.as_ref().is_some_and(|r| r.allocated), "leased": row.as_ref().is_some_and(|r| r.leased),
    }}))
    .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FixedAction {
    Reserve(IgnoredAny),
    Unreserve(IgnoredAny),
}

async fn fixed_action(State(s): State<AppState>, auth: Auth, Path(address): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-fixed-ips").map_err(compute)?;
    let ip = parse_address(&address)?;
    let reserve = match parse_json::<FixedAction>(&body).map_err(compute)? {
        FixedAction::Reserve(_) => true,
        FixedAction::Unreserve(_) => false,
    };
    call_network(&s.ctx, |r| NetworkMsg::ReserveFixedIp(Wire((ip, reserve)), r)).await.map_err(compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn limit(v: Option<u64>) -> Value {
    v.map_or(json!(-1), |n| json!(n))
}

fn quota_view(project: ProjectId, q: &Quota, usage: Option<&Usage>) -> Value {
    let mut v = json!({
        "id": project.to_string(), "instances": limit(q.instances), "cores": limit(q.cores), "ram": limit(q.ram_mb),
        "floating_ips": limit(q.floating_ips), "fixed_ips": limit(q.fixed_ips),
        "metadata_items": 128, "injected_files": 5, "injected_file_content_bytes": 10240,
        "injected_file_path_bytes": 255, "key_pairs": 100, "security_groups": 10, "security_group_rules": 20,
        "server_groups": 10, "server_group_members": 10,
    });
    if let Some(u) = usage {
        for (key, used) in quota::fields(u) {
            let limit = v[key].clone();
            v[key] = json!({"limit": limit, "in_use": used, "reserved": 0});
        }
    }
    v
}

/// The project a quota request names: the caller's own, or (admin) any.
fn quota_project(s: &AppState, auth: &Auth, id: &str) -> Result<ProjectId, ApiError> {
    let project = identity::find_project(&s.ctx.store, id)
        .map_err(compute)?
        .ok_or_else(|| compute(CloudError::NotFound(format!("Project {id} could not be found."))))?;
    if project.id != auth.0.project && !auth.is_admin() {
        return Err(compute(CloudError::Forbidden(
            "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.".into(),
        )));
    }
    Ok(project.id)
}

async fn show_quota(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let project = quota_project(&s, &auth, &id)?;
    let q = s.ctx.store.read(|r| quota::quota(r, project)).map_err(compute)?;
    Ok(Json(json!({"quota_set": quota_view(project, &q, None)})).into_response())
}

async fn show_quota_detail(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let project = quota_project(&s, &auth, &id)?;
    let (q, u) = s
        .ctx
        .store
        .read(|r| Ok::<_, nimbus_storage::StoreError>((quota::quota(r, project)?, quota::usage(r, project)?)))
        .map_err(compute)?;
    Ok(Json(json!({"quota_set": quota_view(project, &q, Some(&u))})).into_response())
}

#[derive(Deserialize)]
struct UpdateQuota {
    quota_set: HashMap<String, Value>,
}

/// `PUT /os-quota-sets/{project}` (admin): sets limits; -1 is unlimited. Limits nimbus does not enforce are
/// accepted and ignored, as clients send them all.
async fn update_quota(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-quota-sets:update").map_err(compute)?;
    let project = quota_project(&s, &auth, &id)?;
    let request: UpdateQuota = parse_json(&body).map_err(compute)?;
    let parse = |key: &str| -> Result<Option<Option<u64>>, ApiError> {
        match request.quota_set.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
                Some(-1) => Ok(Some(None)),
                Some(n) if n >= 0 => Ok(Some(Some(n as u64))),
                _ => Err(compute(CloudError::BadRequest(format!(
                    "Quota limit {key} must be -1 or a non-negative integer, not {v}."
                )))),
            },
        }
    };
    let changes = [parse("instances")?, parse("cores")?, parse("ram")?, parse("floating_ips")?, parse("fixed_ips")?];
    let q = s
        .ctx
        .store
        .write(move |tx| {
            let mut q = quota::quota(tx, project)?;
            let fields = [&mut q.instances, &mut q.cores, &mut q.ram_mb, &mut q.floating_ips, &mut q.fixed_ips];
            for (field, change) in fields.into_iter().zip(changes) {
                if let Some(new) = change {
                    *field = new;
                }
            }
            tx.put(&QUOTAS, &project, &q)?;
            Ok::<_, nimbus_storage::StoreError>(q)
        })
        .await
        .map_err(compute)?;
    Ok(Json(json!({"quota_set": quota_view(project, &q, None)})).into_response())
}
