//! Compute v2.1: version documents, flavors, servers (create, list, show, delete), hypervisors and services.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::ids::{FlavorId, ImageId, InstanceId, NetworkId};
use nimbus_storage::records::{Flavor, Instance, Operation, OperationKind, Role, TaskState, now_ms};
use nimbus_storage::schema::{FLAVORS, IMAGES, INSTANCES, INSTANCES_BY_PROJECT, NETWORKS, OPERATIONS};
use nimbus_storage::{Reads, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha224};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, COMPUTE_MICROVERSION, call_network, iso8601};
use crate::instance_state::{Event, api_status, task_state_name, vm_state_name};
use crate::instances::{TransitionError, new_instance, transition_in};
use crate::network::NetworkMsg;
use crate::network::floating::FloatingRequest;
use crate::scheduler::{self, HostUsage};
use crate::{CloudError, projects, quota};
use nimbus_runtime::Wire;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/flavors", get(list_flavors_brief))
        .route("/compute/v2.1/flavors/detail", get(list_flavors_detail))
        .route("/compute/v2.1/flavors/{id}", get(show_flavor))
        .route("/compute/v2.1/servers", get(list_servers_brief).post(create_server))
        .route("/compute/v2.1/servers/detail", get(list_servers_detail))
        .route("/compute/v2.1/servers/{id}", get(show_server).delete(delete_server))
        .route("/compute/v2.1/servers/{id}/action", axum::routing::post(server_action))
        .route("/compute/v2.1/os-hypervisors", get(list_hypervisors_brief))
        .route("/compute/v2.1/os-hypervisors/detail", get(list_hypervisors_detail))
        .route("/compute/v2.1/os-services", get(list_services))
}

/// The microversion the client asked for: `None` if it did not ask, an error if nimbus does not implement it.
pub fn requested_microversion(headers: &HeaderMap) -> Option<Result<(), ApiError>> {
    let asked = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("compute").map(str::trim).map(str::to_string))
        .or_else(|| headers.get("x-openstack-nova-api-version").and_then(|v| v.to_str().ok()).map(str::to_string))?;
    let asked = asked.trim();
    if asked == "latest" || asked == COMPUTE_MICROVERSION || asked == "2.0" {
        return Some(Ok(()));
    }
    Some(Err(ApiError {
        service: super::Service::Compute,
        error: CloudError::NotAcceptable(format!(
            "Version {asked} is not supported by the API. Minimum is 2.1 and maximum is {COMPUTE_MICROVERSION}."
        )),
    }))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v2.1", "status": "CURRENT", "version": COMPUTE_MICROVERSION, "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

async fn versions(State(s): State<AppState>) -> Response {
    Json(json!({"versions": [version_doc(&s.base_url)]})).into_response()
}

async fn version(State(s): State<AppState>) -> Response {
    Json(json!({"version": version_doc(&s.base_url)})).into_response()
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::compute(e.into())
}

fn links(base: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/compute/v2.1/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/compute/{kind}/{id}")},
    ])
}

fn flavor_view(f: &Flavor, base: &str, detail: bool) -> Value {
    let mut v = json!({"id": f.id.0, "name": f.name, "links": links(base, "flavors", &f.id.0)});
    if detail {
        let extra = json!({
            "ram": f.ram_mb, "disk": f.disk_gb, "vcpus": f.vcpus,
            "swap": if f.swap_mb == 0 { json!("") } else { json!(f.swap_mb) },
            "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb, "OS-FLV-DISABLED:disabled": false,
            "os-flavor-access:is_public": f.is_public, "rxtx_factor": 1.0,
        });
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    }
    v
}

fn flavors(s: &AppState) -> Result<Vec<Flavor>, ApiError> {
    let mut all: Vec<Flavor> =
        s.ctx.store.read(|r| r.scan(&FLAVORS)).map_err(store_err)?.into_iter().map(|(_, f)| f).collect();
    all.sort_by_key(|f| (f.ram_mb, f.vcpus, f.id.0.clone()));
    Ok(all)
}

async fn list_flavors_brief(State(s): State<AppState>, _auth: Auth) -> ApiResult {
    let views: Vec<Value> = flavors(&s)?.iter().map(|f| flavor_view(f, &s.base_url, false)).collect();
    Ok(Json(json!({"flavors": views})).into_response())
}

async fn list_flavors_detail(State(s): State<AppState>, _auth: Auth) -> ApiResult {
    let views: Vec<Value> = flavors(&s)?.iter().map(|f| flavor_view(f, &s.base_url, true)).collect();
    Ok(Json(json!({"flavors": views})).into_response())
}

async fn show_flavor(State(s): State<AppState>, _auth: Auth, Path(id): Path<String>) -> ApiResult {
    let flavor = s.ctx.store.read(|r| r.get(&FLAVORS, &FlavorId(id.clone()))).map_err(store_err)?;
    let flavor = flavor.ok_or_else(|| ApiError::compute(CloudError::not_found("Flavor", &id)))?;
    Ok(Json(json!({"flavor": flavor_view(&flavor, &s.base_url, true)})).into_response())
}

// ---------------------------------------------------------------------------------------------- servers

fn host_id(instance: &Instance) -> String {
    match &instance.host {
        Some(host) => Sha224::digest(format!("{}{}", instance.project, host).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        None => String::new(),
    }
}

fn server_view(i: &Instance, base: &str, admin: bool, detail: bool) -> Value {
    let id = i.id.to_string();
    let mut v = json!({"id": id, "name": i.name, "links": links(base, "servers", &id)});
    if !detail {
        return v;
    }
    let mut addresses: HashMap<&str, Vec<Value>> = HashMap::new();
    for interface in &i.interfaces {
        let entry = addresses.entry(&interface.network_label).or_default();
        entry.push(json!({
            "version": 4, "addr": interface.address.to_string(),
            "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": interface.mac,
        }));
        for floating in &interface.floating {
            entry.push(json!({
                "version": 4, "addr": floating.to_string(),
                "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": interface.mac,
            }));
        }
    }
    let status = api_status(i.vm_state);
    let mut extra = json!({
        "status": status,
        "tenant_id": i.project.to_string(),
        "user_id": i.user.to_string(),
        "metadata": {},
        "hostId": host_id(i),
        "image": {"id": i.image.to_string(), "links": [{"rel": "bookmark", "href": format!("{base}/image/v2/images/{}", i.image)}]},
        "flavor": {"id": i.flavor.id.0, "links": [{"rel": "bookmark", "href": format!("{base}/compute/flavors/{}", i.flavor.id.0)}]},
        "created": iso8601(i.created_at),
        "updated": iso8601(i.updated_at),
        "addresses": addresses,
        "accessIPv4": "",
        "accessIPv6": "",
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": "",
        "key_name": null,
        "progress": 0,
        "OS-SRV-USG:launched_at": i.launched_at.map(iso8601),
        "OS-SRV-USG:terminated_at": null,
        "OS-EXT-STS:vm_state": vm_state_name(i.vm_state),
        "OS-EXT-STS:task_state": i.task_state.map(task_state_name),
        "OS-EXT-STS:power_state": i.power_state as u8,
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": "default"}],
    });
    let fields = extra.as_object_mut().expect("object");
    if admin {
        let host = i.host.as_ref().map(|h| h.0.clone());
        fields.insert("OS-EXT-SRV-ATTR:host".into(), json!(host));
        fields.insert("OS-EXT-SRV-ATTR:hypervisor_hostname".into(), json!(host));
        fields.insert("OS-EXT-SRV-ATTR:instance_name".into(), json!(format!("instance-{}", &id[..8])));
    }
    if let Some(fault) = &i.fault {
        fields.insert(
            "fault".into(),
            json!({"code": fault.code, "message": fault.message, "created": iso8601(fault.created_at)}),
        );
    }
    v.as_object_mut().expect("object").extend(fields.clone());
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum ServerAction {
    AddFloatingIp { address: String },
    RemoveFloatingIp { address: String },
}

/// `POST /servers/{id}/action`: the nova-network era floating IP actions.
async fn server_action(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let instance = visible_instance(&s, &auth, &id)?;
    auth.require(Role::Member, "os_compute_api:os-floating-ips").map_err(ApiError::compute)?;
    let action: ServerAction = parse_json(&body).map_err(|e| {
        ApiError::compute(match e {
            CloudError::BadRequest(m) if m.contains("unknown variant") => {
                CloudError::BadRequest("nimbus supports the server actions addFloatingIp and removeFloatingIp.".into())
            }
            other => other,
        })
    })?;
    let caller = auth.caller();
    let parse = |a: &str| {
        a.parse::<std::net::Ipv4Addr>()
            .map_err(|_| ApiError::compute(CloudError::BadRequest(format!("{a} is not an IPv4 address."))))
    };
    let request = match action {
        ServerAction::AddFloatingIp { address } => {
            FloatingRequest::Associate { caller, address: parse(&address)?, instance: instance.id }
        }
        ServerAction::RemoveFloatingIp { address } => {
            let address = parse(&address)?;
            if !instance.interfaces.iter().any(|i| i.floating.contains(&address)) {
                return Err(ApiError::compute(CloudError::NotFound(format!(
                    "Floating IP {address} is not associated with instance {id}."
                ))));
            }
            FloatingRequest::Disassociate { caller, address }
        }
    };
    call_network(&s.ctx, |reply| NetworkMsg::Floating(Wire(request), reply)).await.map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The instance if the caller may see it: their project's, or any for an admin. Anything else is a 404, so
/// another project's ids are not even confirmed to exist.
pub(super) fn visible_instance(s: &AppState, auth: &Auth, id: &str) -> Result<Instance, ApiError> {
    let missing = || ApiError::compute(CloudError::NotFound(format!("Instance {id} could not be found.")));
    let parsed: InstanceId = id.parse().map_err(|_| missing())?;
    let instance = s.ctx.store.read(|r| r.get(&INSTANCES, &parsed)).map_err(store_err)?.ok_or_else(missing)?;
    if instance.project != auth.0.project && !auth.is_admin() {
        return Err(missing());
    }
    Ok(instance)
}

async fn show_server(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let instance = visible_instance(&s, &auth, &id)?;
    Ok(Json(json!({"server": server_view(&instance, &s.base_url, auth.is_admin(), true)})).into_response())
}

#[derive(Deserialize, Default)]
struct ServerFilters {
    name: Option<String>,
    status: Option<String>,
    all_tenants: Option<String>,
    project_id: Option<String>,
    tenant_id: Option<String>,
    limit: Option<usize>,
    marker: Option<String>,
}

fn truthy(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "f" | "no" | "off")
}

fn list_servers(s: &AppState, auth: &Auth, filters: ServerFilters, detail: bool) -> ApiResult {
    let all_tenants = filters.all_tenants.as_deref().is_some_and(truthy);
    if all_tenants {
        auth.require(Role::Admin, "os_compute_api:servers:index:get_all_tenants").map_err(ApiError::compute)?;
    }
    let project_filter = filters.project_id.or(filters.tenant_id);
    let mut instances: Vec<Instance> = s
        .ctx
        .store
        .read(|r| {
            if all_tenants {
                Ok(r.scan(&INSTANCES)?.into_iter().map(|(_, i)| i).collect())
            } else {
                let ids = r.index_get(&INSTANCES_BY_PROJECT, &auth.0.project)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.extend(r.get(&INSTANCES, &id)?);
                }
                Ok::<_, StoreError>(out)
            }
        })
        .map_err(store_err)?;
    instances.retain(|i| {
        filters.name.as_deref().is_none_or(|n| i.name.contains(n))
            && filters.status.as_deref().is_none_or(|st| api_status(i.vm_state).eq_ignore_ascii_case(st))
            && project_filter.as_deref().is_none_or(|p| i.project.to_string() == p)
    });
    // Newest first, as Nova sorts by default.
    instances.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    if let Some(marker) = &filters.marker {
        let at = instances
            .iter()
            .position(|i| i.id.to_string() == *marker)
            .ok_or_else(|| ApiError::compute(CloudError::BadRequest(format!("marker [{marker}] not found"))))?;
        instances.drain(..=at);
    }
    if let Some(limit) = filters.limit {
        instances.truncate(limit);
    }
    let views: Vec<Value> = instances.iter().map(|i| server_view(i, &s.base_url, auth.is_admin(), detail)).collect();
    Ok(Json(json!({"servers": views})).into_response())
}

async fn list_servers_brief(
    State(s): State<AppState>,
    auth: Auth,
    Query(filters): Query<HashMap<String, String>>,
) -> ApiResult {
    list_servers(&s, &auth, server_filters(filters)?, false)
}

async fn list_servers_detail(
    State(s): State<AppState>,
    auth: Auth,
    Query(filters): Query<HashMap<String, String>>,
) -> ApiResult {
    list_servers(&s, &auth, server_filters(filters)?, true)
}

/// Known filters are parsed; unknown query parameters are ignored, as clients send some nimbus does not use.
fn server_filters(raw: HashMap<String, String>) -> Result<ServerFilters, ApiError> {
    let limit = match raw.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::compute(CloudError::BadRequest(format!("limit must be a non-negative integer, not {l:?}")))
        })?),
        None => None,
    };
    Ok(ServerFilters {
        name: raw.get("name").cloned(),
        status: raw.get("status").cloned(),
        all_tenants: raw.get("all_tenants").cloned(),
        project_id: raw.get("project_id").cloned(),
        tenant_id: raw.get("tenant_id").cloned(),
        limit,
        marker: raw.get("marker").cloned(),
    })
}

#[derive(Deserialize)]
struct CreateServer {
    server: NewServer,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewServer {
    name: String,
    image_ref: String,
    flavor_ref: String,
    #[serde(default)]
    networks: Option<Value>,
    #[serde(default, rename = "min_count")]
    min_count: Option<Value>,
    #[serde(default, rename = "max_count")]
    max_count: Option<Value>,
}

/// `min_count`/`max_count` arrive as numbers or strings.
fn count(v: &Option<Value>, field: &str) -> Result<Option<u32>, CloudError> {
    let bad = || CloudError::BadRequest(format!("Invalid {field}: must be an integer between 1 and 100."));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().filter(|n| (1..=100).contains(n)).map(|n| Some(n as u32)).ok_or_else(bad),
        Some(Value::String(s)) => s.parse::<u32>().ok().filter(|n| (1..=100).contains(n)).map(Some).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// The last path segment of a reference that may be a bare id or a URL.
fn ref_id(reference: &str) -> &str {
    reference.trim_end_matches('/').rsplit('/').next().unwrap_or(reference)
}

async fn create_server(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:servers:create").map_err(ApiError::compute)?;
    let request: CreateServer = parse_json(&body).map_err(ApiError::compute)?;
    let new = request.server;
    let bad = |m: String| ApiError::compute(CloudError::BadRequest(m));
    if let Some(problem) = crate::names::name_problem("server", &new.name) {
        return Err(bad(format!("Invalid input for field/attribute name: {problem}")));
    }
    let min = count(&new.min_count, "min_count").map_err(ApiError::compute)?.unwrap_or(1);
    let max = count(&new.max_count, "max_count").map_err(ApiError::compute)?.unwrap_or(min);
    if min > max {
        return Err(bad("min_count must be <= max_count".into()));
    }
    let image_ref = ref_id(&new.image_ref).to_string();
    let flavor_ref = ref_id(&new.flavor_ref).to_string();
    let (image, flavor) = s
        .ctx
        .store
        .read(|r| {
            let image = match image_ref.parse::<ImageId>() {
                Ok(id) => r.get(&IMAGES, &id)?,
                Err(_) => None,
            };
            Ok::<_, StoreError>((image, r.get(&FLAVORS, &FlavorId(flavor_ref.clone()))?))
        })
        .map_err(store_err)?;
    let image = image.ok_or_else(|| bad(format!("Image {image_ref} could not be found.")))?;
    if !super::image_api::visible(&image, &auth) {
        return Err(bad(format!("Image {image_ref} could not be found.")));
    }
    let flavor = flavor.ok_or_else(|| bad(format!("Flavor {flavor_ref} could not be found.")))?;
    validate_networks(&s, &auth, new.networks.as_ref())?;

    let now = now_ms();
    let instances: Vec<Instance> = (1..=max)
        .map(|n| {
            let name = if max > 1 { format!("{}-{n}", new.name) } else { new.name.clone() };
            new_instance(name, auth.0.project, auth.0.user, &flavor, image.id, now)
        })
        .collect();
    let records = instances.clone();
    // The intent, in one transaction: the instances and their build operations.
    s.ctx
        .store
        .write(move |tx| {
            for instance in &records {
                quota::charge_in(
                    tx,
                    instance.project,
                    quota::instance_usage(instance.flavor.vcpus, instance.flavor.ram_mb),
                )?;
                tx.put(&INSTANCES, &instance.id, instance)?;
                tx.index_add(&INSTANCES_BY_PROJECT, &instance.project, &instance.id)?;
                let op = Operation {
                    instance: instance.id,
                    project: instance.project,
                    kind: OperationKind::Build,
                    started_at: now,
                };
                tx.put(&OPERATIONS, &instance.id, &op)?;
            }
            Ok::<_, CloudError>(())
        })
        .await
        .map_err(ApiError::compute)?;
    for instance in &instances {
        projects::notify(&s.ctx, instance.project, instance.id);
    }
    let first = &instances[0];
    let id = first.id.to_string();
    let body = json!({"server": {
        "id": id, "links": links(&s.base_url, "servers", &id), "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}], "adminPass": random_admin_pass(),
    }});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn random_admin_pass() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(12).map(char::from).collect()
}

/// `networks` may be "auto", "none", or a list of `{"uuid": …}` (or `{"port": …}`, which nimbus does not
/// have). Named networks must exist and be visible to the caller. They are checked, not honoured: an instance
/// gets one interface, on the network its project's mode gives it.
fn validate_networks(s: &AppState, auth: &Auth, networks: Option<&Value>) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::compute(CloudError::BadRequest(m));
    match networks {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(v)) if v == "auto" || v == "none" => Ok(()),
        Some(Value::Array(list)) => {
            for entry in list {
                if entry.get("port").is_some_and(|p| !p.is_null()) {
                    return Err(bad("Ports are not supported; request a network by uuid.".into()));
                }
                let Some(uuid) = entry.get("uuid").and_then(Value::as_str) else {
                    return Err(bad("Each requested network needs a uuid.".into()));
                };
                let id: NetworkId = uuid
                    .parse()
                    .map_err(|_| bad(format!("Bad network format: network uuid is not in proper format ({uuid})")))?;
                let network = s.ctx.store.read(|r| r.get(&NETWORKS, &id)).map_err(store_err)?;
                if !network.is_some_and(|n| auth.sees_network(&n)) {
                    return Err(bad(format!("Network {uuid} could not be found.")));
                }
            }
            Ok(())
        }
        Some(other) => Err(bad(format!("Invalid networks value {other}; expected \"auto\", \"none\" or a list."))),
    }
}

async fn delete_server(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let instance = visible_instance(&s, &auth, &id)?;
    auth.require(Role::Member, "os_compute_api:servers:delete").map_err(ApiError::compute)?;
    let (instance_id, project) = (instance.id, instance.project);
    let logged = s
        .ctx
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &instance_id)?.ok_or(TransitionError::Gone(instance_id))?;
            if current.task_state != Some(TaskState::Deleting) {
                transition_in(tx, instance_id, Event::DeleteRequested, |_| Ok(()), |_| {})?;
            }
            // The delete supersedes any build in flight; the conductor notices when its step returns.
            let op = Operation { instance: instance_id, project, kind: OperationKind::Delete, started_at: now_ms() };
            tx.put(&OPERATIONS, &instance_id, &op)?;
            Ok::<_, TransitionError>(())
        })
        .await;
    match logged {
        Ok(()) => {}
        Err(TransitionError::Gone(_)) => {
            return Err(ApiError::compute(CloudError::not_found("Instance", &id)));
        }
        Err(TransitionError::Store(e)) => return Err(store_err(e)),
        Err(e) => return Err(ApiError::compute(CloudError::Conflict(e.to_string()))),
    }
    projects::notify(&s.ctx, project, instance_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------------- hypervisors, services

fn hosts_with_usage(s: &AppState) -> Result<Vec<HostUsage>, ApiError> {
    s.ctx.store.read(|r| scheduler::host_usage(r).map(|(hosts, _)| hosts)).map_err(store_err)
}

fn hypervisors(s: &AppState, auth: &Auth, detail: bool) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-hypervisors:list").map_err(ApiError::compute)?;
    let views: Vec<Value> = hosts_with_usage(s)?
        .into_iter()
        .map(|HostUsage { host: h, vcpus: vcpus_used, ram_mb: ram_used, disk_gb: disk_used, instances: running }| {
            let mut v = json!({
                "id": h.number, "hypervisor_hostname": h.name.0,
                "state": if scheduler::is_up(&h, &s.ctx.timing) { "up" } else { "down" },
                "status": if h.enabled { "enabled" } else { "disabled" },
            });
            if detail {
                let extra = json!({
                    "hypervisor_type": h.hypervisor_type, "hypervisor_version": 1, "host_ip": h.host_ip.to_string(),
                    "vcpus": h.vcpus, "vcpus_used": vcpus_used, "memory_mb": h.ram_mb, "memory_mb_used": ram_used,
                    "local_gb": h.disk_gb, "local_gb_used": disk_used,
                    "free_ram_mb": h.ram_mb as i64 - ram_used as i64, "free_disk_gb": h.disk_gb as i64 - disk_used as i64,
                    "running_vms": running, "current_workload": 0, "disk_available_least": h.disk_gb as i64 - disk_used as i64,
                    "cpu_info": "{}", "service": {"host": h.name.0, "id": h.number, "disabled_reason": null},
                });
                v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
            }
            v
        })
        .collect();
    Ok(Json(json!({"hypervisors": views})).into_response())
}

async fn list_hypervisors_brief(State(s): State<AppState>, auth: Auth) -> ApiResult {
    hypervisors(&s, &auth, false)
}

async fn list_hypervisors_detail(State(s): State<AppState>, auth: Auth) -> ApiResult {
    hypervisors(&s, &auth, true)
}

async fn list_services(State(s): State<AppState>, auth: Auth) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-services:list").map_err(ApiError::compute)?;
    let views: Vec<Value> = hosts_with_usage(&s)?
        .into_iter()
        .map(|HostUsage { host: h, .. }| {
            json!({
                "id": h.number, "binary": "nova-compute", "host": h.name.0, "zone": "nova",
                "status": if h.enabled { "enabled" } else { "disabled" },
                "state": if scheduler::is_up(&h, &s.ctx.timing) { "up" } else { "down" },
                "updated_at": iso8601(h.last_seen), "disabled_reason": null,
            })
        })
        .collect();
    Ok(Json(json!({"services": views})).into_response())
}
