//! Compute v2.1: version documents, flavors, servers (create, list, show, rename, delete, their metadata, the
//! power, floating-IP and security-group actions). Hypervisors and services are in `hypervisors_api`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_protocol::compute::PowerAction;
use nimbus_protocol::ids::{HostId, InstanceId, SecurityGroupId};
use nimbus_storage::records::{Flavor, Instance, NicRequest, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha224};

use super::auth::Auth;
use super::errors::{parse_address, parse_json};
use super::microversion::Microversion;
use super::views::{Link, MediaType, VersionDoc};
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::flavors;
use crate::app::hosts;
use crate::app::security_groups;
use crate::app::servers::{
    self, AskedNics, NewServers, NicAsk, NicChange, ServerFilters, ServerUpdate, TagChange, TagFilters,
};
use crate::instance_state::{api_status_of, task_state_name, vm_state_name};
use crate::names::dhcp_hostname;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2", get(version_2_0))
        .route("/compute/v2/", get(version_2_0))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/flavors", get(list_flavors_brief))
        .route("/compute/v2.1/flavors/detail", get(list_flavors_detail))
        .route("/compute/v2.1/flavors/{id}", get(show_flavor))
        .route("/compute/v2.1/servers", get(list_servers_brief).post(create_server))
        .route("/compute/v2.1/servers/detail", get(list_servers_detail))
        .route("/compute/v2.1/servers/{id}", get(show_server).put(update_server).delete(delete_server))
        .route("/compute/v2.1/servers/{id}/action", axum::routing::post(server_action))
        .route("/compute/v2.1/servers/{id}/remote-consoles", axum::routing::post(remote_console))
        .route("/compute/v2.1/servers/{id}/tags", get(list_tags).put(replace_tags).delete(clear_tags))
        .route("/compute/v2.1/servers/{id}/tags/{tag}", get(check_tag).put(add_tag).delete(remove_tag))
        .route("/compute/v2.1/servers/{id}/metadata", get(list_metadata).post(merge_metadata).put(replace_metadata))
        .route(
            "/compute/v2.1/servers/{id}/metadata/{key}",
            get(show_metadata_item).put(set_metadata_item).delete(delete_metadata_item),
        )
}

fn version_doc(base: &str) -> VersionDoc {
    VersionDoc {
        version: Some(Microversion::MAX_TEXT),
        min_version: Some("2.1"),
        updated: Some("2013-07-23T11:33:21Z"),
        media_types: Some([MediaType {
            base: "application/json",
            kind: "application/vnd.openstack.compute+json;version=2.1",
        }]),
        ..VersionDoc::plain("v2.1", "CURRENT", format!("{base}/compute/v2.1/"))
    }
}

/// The legacy v2.0 API, listed as nova lists it (SUPPORTED, no microversions); nimbus answers it only with
/// its version document, and v2.1 (which a client without microversions speaks as 2.1) for everything else.
fn version_2_0_doc(base: &str) -> VersionDoc {
    VersionDoc {
        version: Some(""),
        min_version: Some(""),
        updated: Some("2011-01-21T11:33:21Z"),
        ..VersionDoc::plain("v2.0", "SUPPORTED", format!("{base}/compute/v2/"))
    }
}

async fn versions(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        versions: [VersionDoc; 2],
    }
    Json(Body { versions: [version_2_0_doc(&s.base_url), version_doc(&s.base_url)] }).into_response()
}

async fn version_2_0(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        version: VersionDoc,
    }
    Json(Body { version: version_2_0_doc(&s.base_url) }).into_response()
}

async fn version(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        version: VersionDoc,
    }
    Json(Body { version: version_doc(&s.base_url) }).into_response()
}

/// The `self` and `bookmark` links of a resource.
fn links(base: &str, kind: &str, id: &str) -> [Link; 2] {
    [Link::to_self(format!("{base}/compute/v2.1/{kind}/{id}")), Link::bookmark(format!("{base}/compute/{kind}/{id}"))]
}

/// Only a bookmark link (a server's image and flavor).
#[derive(Serialize)]
struct Bookmark {
    id: String,
    links: [Link; 1],
}

// ---------------------------------------------------------------------------------------------- flavors

/// Swap as Nova shows it: an empty string for none, else megabytes.
#[derive(Serialize)]
#[serde(untagged)]
enum Swap {
    None(&'static str),
    Mb(u64),
}

#[derive(Serialize)]
struct FlavorDetail {
    ram: u64,
    disk: u64,
    vcpus: u32,
    swap: Swap,
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral")]
    ephemeral: u64,
    #[serde(rename = "OS-FLV-DISABLED:disabled")]
    disabled: bool,
    #[serde(rename = "os-flavor-access:is_public")]
    is_public: bool,
    rxtx_factor: f64,
}

#[derive(Serialize)]
struct FlavorView<'a> {
    id: &'a str,
    name: &'a str,
    links: [Link; 2],
    #[serde(flatten)]
    detail: Option<FlavorDetail>,
}

fn flavor_view<'a>(f: &'a Flavor, base: &str, detail: bool) -> FlavorView<'a> {
    FlavorView {
        id: &f.id.0,
        name: &f.name,
        links: links(base, "flavors", &f.id.0),
        detail: detail.then_some(FlavorDetail {
            ram: f.ram_mb,
            disk: f.disk_gb,
            vcpus: f.vcpus,
            swap: if f.swap_mb == 0 { Swap::None("") } else { Swap::Mb(f.swap_mb) },
            ephemeral: f.ephemeral_gb,
            disabled: false,
            is_public: f.is_public,
            rxtx_factor: 1.0,
        }),
    }
}

/// The flavor list's parameters. `is_public=none` is every flavor the caller may use, `false` the private
/// ones: for anyone but an admin (nimbus keeps no flavor access lists) those are the public ones, and none.
fn flavor_query(raw: &HashMap<String, String>) -> Result<flavors::FlavorQuery, ApiError> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        raw.get(key)
            .map(|v| v.parse().map_err(|_| bad_request(format!("Invalid {key} {v:?}: it is a non-negative integer."))))
            .transpose()
    };
    let is_public = match raw.get("is_public").map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Some(true),
        Some("none") => None,
        Some(v) if ["1", "t", "true", "on", "y", "yes"].contains(&v) => Some(true),
        Some(v) if ["0", "f", "false", "off", "n", "no"].contains(&v) => Some(false),
        Some(v) => return Err(bad_request(format!("Invalid is_public {v:?}: it is true, false or none."))),
    };
    let descending = match raw.get("sort_dir").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(bad_request(format!("Invalid sort_dir {other:?}: it is asc or desc."))),
    };
    Ok(flavors::FlavorQuery {
        min_disk: number("minDisk")?,
        min_ram: number("minRam")?,
        is_public,
        sort_key: raw.get("sort_key").cloned(),
        descending,
        limit: number("limit")?.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        marker: raw.get("marker").cloned(),
    })
}

fn list_flavors(s: &AppState, auth: &Auth, raw: &HashMap<String, String>, detail: bool) -> ApiResult {
    let query = flavor_query(raw)?;
    let mut all = flavors::list(&s.app).map_err(ApiError::compute)?;
    if !auth.is_admin() {
        all.retain(|f| f.is_public);
    }
    let all = flavors::select(all, &query).map_err(bad_request)?;
    #[derive(Serialize)]
    struct Body<'a> {
        flavors: Vec<FlavorView<'a>>,
    }
    Ok(Json(Body { flavors: all.iter().map(|f| flavor_view(f, &s.base_url, detail)).collect() }).into_response())
}

async fn list_flavors_brief(
    State(s): State<AppState>,
    auth: Auth,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    list_flavors(&s, &auth, &raw, false)
}

async fn list_flavors_detail(
    State(s): State<AppState>,
    auth: Auth,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    list_flavors(&s, &auth, &raw, true)
}

async fn show_flavor(State(s): State<AppState>, _auth: Auth, Path(id): Path<String>) -> ApiResult {
    let flavor = flavors::get(&s.app, &id).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        flavor: FlavorView<'a>,
    }
    Ok(Json(Body { flavor: flavor_view(&flavor, &s.base_url, true) }).into_response())
}

// ---------------------------------------------------------------------------------------------- servers

/// Nova's `hostId`: the host, hashed with the project, so projects cannot compare hosts.
fn host_id(instance: &Instance) -> String {
    match &instance.host {
        Some(host) => crate::app::hex(&Sha224::digest(format!("{}{}", instance.project, host).as_bytes())),
        None => String::new(),
    }
}

#[derive(Serialize)]
struct AddressView {
    version: u8,
    addr: String,
    #[serde(rename = "OS-EXT-IPS:type")]
    kind: &'static str,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr")]
    mac: String,
}

#[derive(Serialize)]
struct SecurityGroupRef<'a> {
    name: &'a str,
}

/// The names of the security groups of the instances a view shows.
type GroupNames = HashMap<SecurityGroupId, String>;

fn group_names<'i>(s: &AppState, instances: impl IntoIterator<Item = &'i Instance>) -> Result<GroupNames, ApiError> {
    let ids = instances.into_iter().flat_map(|i| i.security_groups.iter().copied());
    security_groups::names(&s.app, ids).map_err(ApiError::compute)
}

/// What only an admin sees of a server.
#[derive(Serialize)]
struct AdminAttributes {
    #[serde(rename = "OS-EXT-SRV-ATTR:host")]
    host: Option<String>,
    #[serde(rename = "OS-EXT-SRV-ATTR:hypervisor_hostname")]
    hypervisor_hostname: Option<String>,
    #[serde(rename = "OS-EXT-SRV-ATTR:instance_name")]
    instance_name: String,
    #[serde(flatten)]
    since_2_3: Option<AdminAttributes23>,
    /// 2.16: whether the server's host is up (admin only, as nova's default policy has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_status: Option<&'static str>,
}

/// What 2.3 added to an admin's view of a server.
#[derive(Serialize)]
struct AdminAttributes23 {
    #[serde(rename = "OS-EXT-SRV-ATTR:reservation_id")]
    reservation_id: String,
    #[serde(rename = "OS-EXT-SRV-ATTR:launch_index")]
    launch_index: u32,
    #[serde(rename = "OS-EXT-SRV-ATTR:hostname")]
    hostname: String,
    #[serde(rename = "OS-EXT-SRV-ATTR:kernel_id")]
    kernel_id: &'static str,
    #[serde(rename = "OS-EXT-SRV-ATTR:ramdisk_id")]
    ramdisk_id: &'static str,
    #[serde(rename = "OS-EXT-SRV-ATTR:root_device_name")]
    root_device_name: Option<&'static str>,
    #[serde(rename = "OS-EXT-SRV-ATTR:user_data")]
    user_data: Option<String>,
}

#[derive(Serialize)]
struct FaultView<'a> {
    code: u16,
    message: &'a str,
    created: String,
}

#[derive(Serialize)]
struct ServerDetail<'a> {
    status: &'static str,
    tenant_id: String,
    user_id: String,
    metadata: &'a BTreeMap<String, String>,
    #[serde(rename = "hostId")]
    host_id: String,
    image: Bookmark,
    flavor: Bookmark,
    created: String,
    updated: String,
    addresses: BTreeMap<&'a str, Vec<AddressView>>,
    #[serde(rename = "accessIPv4")]
    access_ipv4: &'static str,
    #[serde(rename = "accessIPv6")]
    access_ipv6: &'static str,
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    #[serde(rename = "OS-EXT-AZ:availability_zone")]
    availability_zone: &'static str,
    config_drive: &'static str,
    key_name: Option<&'a str>,
    progress: u8,
    #[serde(rename = "OS-SRV-USG:launched_at")]
    launched_at: Option<String>,
    #[serde(rename = "OS-SRV-USG:terminated_at")]
    terminated_at: Option<String>,
    #[serde(rename = "OS-EXT-STS:vm_state")]
    vm_state: &'static str,
    #[serde(rename = "OS-EXT-STS:task_state")]
    task_state: Option<&'static str>,
    #[serde(rename = "OS-EXT-STS:power_state")]
    power_state: u8,
    #[serde(rename = "os-extended-volumes:volumes_attached")]
    volumes_attached: [String; 0],
    security_groups: Vec<SecurityGroupRef<'a>>,
    #[serde(flatten)]
    admin: Option<AdminAttributes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<FaultView<'a>>,
    /// 2.9: nimbus does not lock servers, so never locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    /// 2.19 (`null` when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Option<&'a str>>,
    /// 2.26.
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
}

/// What a server view depends on besides the instance: the caller, the microversion, and what the views of
/// an admin's newer microversions read from elsewhere.
struct ViewContext<'a> {
    base: &'a str,
    names: GroupNames,
    admin: bool,
    version: Microversion,
    /// 2.3: the user data of the servers created with some.
    user_data: BTreeMap<InstanceId, Vec<u8>>,
    /// 2.16: whether the servers' hosts are up.
    hosts_up: BTreeMap<HostId, bool>,
}

impl<'a> ViewContext<'a> {
    /// The context for views of `instances`: it reads only what the caller's microversion and role show.
    fn new<'i>(
        s: &'a AppState,
        auth: &Auth,
        version: Microversion,
        instances: impl IntoIterator<Item = &'i Instance> + Clone,
        detail: bool,
    ) -> Result<ViewContext<'a>, ApiError> {
        let admin = auth.is_admin();
        let names = if detail { group_names(s, instances.clone())? } else { GroupNames::new() };
        let user_data = if detail && admin && version.has(3) {
            servers::user_data(&s.app, instances.clone().into_iter().map(|i| i.id)).map_err(ApiError::compute)?
        } else {
            BTreeMap::new()
        };
        let hosts_up = if detail && admin && version.has(16) {
            let hosts = instances.into_iter().filter_map(|i| i.host.clone());
            hosts::up_states(&s.app, hosts).map_err(ApiError::compute)?
        } else {
            BTreeMap::new()
        };
        Ok(ViewContext { base: &s.base_url, names, admin, version, user_data, hosts_up })
    }
}

#[derive(Serialize)]
struct ServerView<'a> {
    id: String,
    name: &'a str,
    links: [Link; 2],
    #[serde(flatten)]
    detail: Option<ServerDetail<'a>>,
}

fn server_view<'a>(i: &'a Instance, cx: &'a ViewContext<'_>, detail: bool) -> ServerView<'a> {
    let (base, names, admin, v) = (cx.base, &cx.names, cx.admin, cx.version);
    let id = i.id.to_string();
    let detail = detail.then(|| {
        let mut addresses: BTreeMap<&str, Vec<AddressView>> = BTreeMap::new();
        for interface in &i.interfaces {
            let entry = addresses.entry(&interface.network_label).or_default();
            let address = |addr: Ipv4Addr, kind| AddressView {
                version: 4,
                addr: addr.to_string(),
                kind,
                mac: interface.mac.clone(),
            };
            entry.push(address(interface.address, "fixed"));
            entry.extend(interface.floating.iter().map(|f| address(*f, "floating")));
        }
        let host = i.host.as_ref().map(|h| h.0.clone());
        ServerDetail {
            status: api_status_of(i.vm_state, i.task_state),
            tenant_id: i.project.to_string(),
            user_id: i.user.to_string(),
            metadata: &i.metadata,
            host_id: host_id(i),
            image: Bookmark {
                id: i.image.to_string(),
                links: [Link::bookmark(format!("{base}/image/v2/images/{}", i.image))],
            },
            flavor: Bookmark {
                id: i.flavor.id.0.clone(),
                links: [Link::bookmark(format!("{base}/compute/flavors/{}", i.flavor.id.0))],
            },
            created: iso8601(i.created_at),
            updated: iso8601(i.updated_at),
            addresses,
            access_ipv4: "",
            access_ipv6: "",
            disk_config: "MANUAL",
            availability_zone: "nova",
            config_drive: "",
            key_name: i.key.as_ref().map(|k| k.name.as_str()),
            progress: 0,
            launched_at: i.launched_at.map(iso8601),
            terminated_at: None,
            vm_state: vm_state_name(i.vm_state),
            task_state: i.task_state.map(task_state_name),
            power_state: i.power_state as u8,
            volumes_attached: [],
            security_groups: i
                .security_groups
                .iter()
                .filter_map(|g| names.get(g))
                .map(|name| SecurityGroupRef { name })
                .collect(),
            admin: admin.then(|| AdminAttributes {
                hypervisor_hostname: host.clone(),
                host,
                instance_name: format!("instance-{}", &id[..8]),
                since_2_3: v.has(3).then(|| AdminAttributes23 {
                    reservation_id: i.reservation_id.clone(),
                    launch_index: i.launch_index,
                    hostname: dhcp_hostname(&i.name, i.id),
                    kernel_id: "",
                    ramdisk_id: "",
                    root_device_name: None,
                    user_data: cx.user_data.get(&i.id).map(|b| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(b)
                    }),
                }),
                host_status: v.has(16).then(|| match &i.host {
                    Some(h) if cx.hosts_up.get(h).copied().unwrap_or(false) => "UP",
                    Some(_) => "DOWN",
                    None => "",
                }),
            }),
            fault: i.fault.as_ref().map(|f| FaultView {
                code: f.code,
                message: &f.message,
                created: iso8601(f.created_at),
            }),
            locked: v.has(9).then_some(false),
            description: v.has(19).then_some(i.description.as_deref()),
            tags: v.has(26).then_some(i.tags.as_slice()),
        }
    });
    ServerView { links: links(base, "servers", &id), id, name: &i.name, detail }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum ServerAction {
    AddFloatingIp {
        address: String,
    },
    RemoveFloatingIp {
        address: String,
    },
    AddSecurityGroup {
        name: String,
    },
    RemoveSecurityGroup {
        name: String,
    },
    AddFixedIp {
        #[serde(rename = "networkId")]
        network_id: Value,
    },
    RemoveFixedIp {
        address: String,
    },
    #[serde(rename = "os-stop")]
    Stop(()),
    #[serde(rename = "os-start")]
    Start(()),
    Reboot {
        #[serde(rename = "type")]
        kind: String,
    },
    Pause(()),
    Unpause(()),
    Suspend(()),
    Resume(()),
    /// 2.17.
    #[serde(rename = "trigger_crash_dump")]
    TriggerCrashDump(()),
}

/// The policy a server action is checked against.
fn policy_of(action: &ServerAction) -> &'static str {
    match action {
        ServerAction::AddFloatingIp { .. } | ServerAction::RemoveFloatingIp { .. } => "os_compute_api:os-floating-ips",
        ServerAction::AddSecurityGroup { .. } => "os_compute_api:os-security-groups:add",
        ServerAction::RemoveSecurityGroup { .. } => "os_compute_api:os-security-groups:remove",
        ServerAction::AddFixedIp { .. } | ServerAction::RemoveFixedIp { .. } => "os_compute_api:os-multinic",
        ServerAction::Stop(_) => "os_compute_api:servers:stop",
        ServerAction::Start(_) => "os_compute_api:servers:start",
        ServerAction::Reboot { .. } => "os_compute_api:servers:reboot",
        ServerAction::Pause(_) => "os_compute_api:os-pause-server:pause",
        ServerAction::Unpause(_) => "os_compute_api:os-pause-server:unpause",
        ServerAction::Suspend(_) => "os_compute_api:os-suspend-server:suspend",
        ServerAction::Resume(_) => "os_compute_api:os-suspend-server:resume",
        ServerAction::TriggerCrashDump(_) => "os_compute_api:servers:trigger_crash_dump",
    }
}

/// A reboot's `type`.
fn reboot_of(kind: &str) -> Result<PowerAction, CloudError> {
    match kind.to_ascii_uppercase().as_str() {
        "SOFT" => Ok(PowerAction::SoftReboot),
        "HARD" => Ok(PowerAction::HardReboot),
        other => Err(CloudError::BadRequest(format!("Invalid reboot type {other:?}: it is SOFT or HARD."))),
    }
}

/// `POST /servers/{id}/action`: the power actions, and the nova-network era floating-IP, fixed-IP (multinic)
/// and security-group actions.
async fn server_action(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    let action: ServerAction = parse_json(&body).map_err(|e| {
        ApiError::compute(match e {
            CloudError::BadRequest(m) if m.contains("unknown variant") => CloudError::BadRequest(
                "nimbus supports the server actions os-stop, os-start, reboot, pause, unpause, suspend, resume, \
                     addFloatingIp, removeFloatingIp, addFixedIp, removeFixedIp, addSecurityGroup \
                     and removeSecurityGroup."
                    .into(),
            ),
            other => other,
        })
    })?;
    auth.require(Role::Member, policy_of(&action)).map_err(ApiError::compute)?;
    let power = |action, name| servers::power(&s.app, &auth.trace, &instance, action, name);
    match action {
        ServerAction::AddFloatingIp { address } => {
            let address = parse_address(&address).map_err(ApiError::compute)?;
            servers::add_floating_ip(&s.app, &auth.trace, &auth.ctx, &instance, address).await
        }
        ServerAction::RemoveFloatingIp { address } => {
            let address = parse_address(&address).map_err(ApiError::compute)?;
            servers::remove_floating_ip(&s.app, &auth.trace, &auth.ctx, &instance, address).await
        }
        ServerAction::AddSecurityGroup { name } => {
            security_groups::set_membership(&s.app, instance.id, name, true).await
        }
        ServerAction::RemoveSecurityGroup { name } => {
            security_groups::set_membership(&s.app, instance.id, name, false).await
        }
        ServerAction::AddFixedIp { network_id } => {
            // Nova takes the id as a string or a number; nimbus's ids are UUIDs.
            let network = match network_id {
                Value::String(id) => id,
                other => other.to_string(),
            };
            let change = NicChange::Add(network);
            servers::change_interfaces(&s.app, &auth.trace, &auth.ctx, &instance, change, "addFixedIp").await
        }
        ServerAction::RemoveFixedIp { address } => {
            let change = NicChange::Remove(parse_address(&address).map_err(ApiError::compute)?);
            servers::change_interfaces(&s.app, &auth.trace, &auth.ctx, &instance, change, "removeFixedIp").await
        }
        ServerAction::Stop(_) => power(PowerAction::Stop, "stop").await,
        ServerAction::Start(_) => power(PowerAction::Start, "start").await,
        ServerAction::Reboot { kind } => match reboot_of(&kind) {
            Ok(action) => power(action, "reboot").await,
            Err(e) => Err(e),
        },
        ServerAction::Pause(_) => power(PowerAction::Pause, "pause").await,
        ServerAction::Unpause(_) => power(PowerAction::Unpause, "unpause").await,
        ServerAction::Suspend(_) => power(PowerAction::Suspend, "suspend").await,
        ServerAction::Resume(_) => power(PowerAction::Resume, "resume").await,
        ServerAction::TriggerCrashDump(_) => {
            since(v, 17, "trigger_crash_dump")?;
            Err(CloudError::BadRequest(format!(
                "Triggering a crash dump is not supported: nimbus's instances ({}) have no kernel of their own to dump.",
                "network namespaces or simulated"
            )))
        }
    }
    .map_err(ApiError::compute)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST /servers/{id}/remote-consoles` (2.6; `mks` from 2.8): nimbus's instances have no console to reach,
/// so every protocol is refused with the reason, as nova refuses a console type its hypervisor lacks.
async fn remote_console(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    if !v.has(6) {
        return Err(ApiError::compute(CloudError::NotFound(format!(
            "Remote consoles are an API of microversion 2.6; this request is at {v}."
        ))));
    }
    servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        remote_console: Console,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Console {
        protocol: String,
        #[serde(rename = "type")]
        kind: String,
    }
    let Body { remote_console: Console { protocol, kind } } = parse_json(&body).map_err(ApiError::compute)?;
    let protocols: &[&str] =
        if v.has(8) { &["vnc", "spice", "rdp", "serial", "mks"] } else { &["vnc", "spice", "rdp", "serial"] };
    let bad = |m: String| ApiError::compute(CloudError::BadRequest(m));
    if !protocols.contains(&protocol.as_str()) {
        return Err(bad(format!("Invalid protocol {protocol:?}: at {v} it is one of {}.", protocols.join(", "))));
    }
    Err(bad(format!(
        "Unavailable console type {kind}: nimbus's instances have no {protocol} console (they are network \
         namespaces or simulated)."
    )))
}

#[derive(Serialize)]
struct ServerBody<'a> {
    server: ServerView<'a>,
}

async fn show_server(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    let cx = ViewContext::new(&s, &auth, v, [&instance], true)?;
    Ok(Json(ServerBody { server: server_view(&instance, &cx, true) }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateServer {
    server: ServerChanges,
}

/// What `PUT /servers/{id}` may change (`description` from 2.19 on).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, rename = "accessIPv4")]
    access_ipv4: Option<Value>,
    #[serde(default, rename = "accessIPv6")]
    access_ipv6: Option<Value>,
}

/// A field given as `null` is `Some(None)`, not absent (`"description": null` clears it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A request field of microversion `2.minor`, refused at an earlier one.
fn since(v: Microversion, minor: u16, field: &str) -> Result<(), ApiError> {
    if v.has(minor) {
        Ok(())
    } else {
        Err(ApiError::compute(CloudError::BadRequest(format!(
            "Invalid input: {field} is a field of microversion 2.{minor}; this request is at {v}."
        ))))
    }
}

/// `PUT /servers/{id}`: renames a server, or (2.19) changes its description.
async fn update_server(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    auth.require(Role::Member, "os_compute_api:servers:update").map_err(ApiError::compute)?;
    let request: UpdateServer = parse_json(&body).map_err(ApiError::compute)?;
    let ServerChanges { name, description, access_ipv4, access_ipv6 } = request.server;
    if description.is_some() {
        since(v, 19, "description")?;
    }
    if access_ipv4.is_some() || access_ipv6.is_some() {
        return Err(ApiError::compute(CloudError::BadRequest(
            "nimbus does not keep access IPs (accessIPv4, accessIPv6): a server is reached at its fixed and \
             floating addresses."
                .into(),
        )));
    }
    let instance = if name.is_some() || description.is_some() {
        let update = ServerUpdate { name, description };
        servers::update(&s.app, &instance, update).await.map_err(ApiError::compute)?
    } else {
        instance
    };
    let cx = ViewContext::new(&s, &auth, v, [&instance], true)?;
    Ok(Json(ServerBody { server: server_view(&instance, &cx, true) }).into_response())
}

// ------------------------------------------------------------------------------------------ server tags

/// The server of a tags call, which exists from 2.26 on.
fn tagged_server(s: &AppState, auth: &Auth, v: Microversion, id: &str) -> Result<Instance, ApiError> {
    if !v.has(26) {
        return Err(ApiError::compute(CloudError::NotFound(format!(
            "Server tags are an API of microversion 2.26; this request is at {v}."
        ))));
    }
    servers::get(&s.app, &auth.ctx, id).map_err(ApiError::compute)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    tags: Vec<String>,
}

async fn list_tags(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    Ok(Json(TagsBody { tags: instance.tags }).into_response())
}

async fn change_tags(
    s: &AppState,
    auth: &Auth,
    instance: &Instance,
    change: TagChange,
) -> Result<(Vec<String>, bool), ApiError> {
    auth.require(Role::Member, "os_compute_api:os-server-tags:update").map_err(ApiError::compute)?;
    servers::change_tags(&s.app, instance, change).await.map_err(ApiError::compute)
}

async fn replace_tags(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    let request: TagsBody = parse_json(&body).map_err(ApiError::compute)?;
    let (tags, _) = change_tags(&s, &auth, &instance, TagChange::Replace(request.tags)).await?;
    Ok(Json(TagsBody { tags }).into_response())
}

async fn clear_tags(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    change_tags(&s, &auth, &instance, TagChange::Replace(Vec::new())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check_tag(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    if !instance.tags.contains(&tag) {
        return Err(ApiError::compute(CloudError::NotFound(format!("Tag {tag} could not be found on server {id}."))));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /servers/{id}/tags/{tag}`: 201 with the tag's location when it is new, 204 when the server had it.
async fn add_tag(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    let (_, added) = change_tags(&s, &auth, &instance, TagChange::Add(tag.clone())).await?;
    if !added {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let location = format!("{}/compute/v2.1/servers/{id}/tags/{tag}", s.base_url);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)]).into_response())
}

async fn remove_tag(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let instance = tagged_server(&s, &auth, v, &id)?;
    change_tags(&s, &auth, &instance, TagChange::Remove(tag)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------------------------ server metadata

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    meta: BTreeMap<String, String>,
}

async fn list_metadata(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    Ok(Json(MetadataBody { metadata: instance.metadata }).into_response())
}

async fn change_metadata(s: &AppState, auth: &Auth, id: &str, change: servers::MetadataChange) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, id).map_err(ApiError::compute)?;
    auth.require(Role::Member, "os_compute_api:server-metadata:update").map_err(ApiError::compute)?;
    let metadata = servers::change_metadata(&s.app, &instance, change).await.map_err(ApiError::compute)?;
    Ok(Json(MetadataBody { metadata }).into_response())
}

async fn merge_metadata(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let request: MetadataBody = parse_json(&body).map_err(ApiError::compute)?;
    change_metadata(&s, &auth, &id, servers::MetadataChange::Merge(request.metadata)).await
}

async fn replace_metadata(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let request: MetadataBody = parse_json(&body).map_err(ApiError::compute)?;
    change_metadata(&s, &auth, &id, servers::MetadataChange::Replace(request.metadata)).await
}

async fn show_metadata_item(
    State(s): State<AppState>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    let value = instance
        .metadata
        .get(&key)
        .ok_or_else(|| ApiError::compute(CloudError::NotFound(format!("Metadata item {key} was not found."))))?;
    Ok(Json(MetaBody { meta: BTreeMap::from([(key, value.clone())]) }).into_response())
}

/// `PUT /metadata/{key}`: the body holds exactly that one item.
async fn set_metadata_item(
    State(s): State<AppState>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: MetaBody = parse_json(&body).map_err(ApiError::compute)?;
    if request.meta.len() != 1 || !request.meta.contains_key(&key) {
        return Err(ApiError::compute(CloudError::BadRequest(format!(
            "The body must hold exactly one item, {key:?}, the key the path names."
        ))));
    }
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    auth.require(Role::Member, "os_compute_api:server-metadata:update").map_err(ApiError::compute)?;
    let change = servers::MetadataChange::Merge(request.meta.clone());
    servers::change_metadata(&s.app, &instance, change).await.map_err(ApiError::compute)?;
    Ok(Json(request).into_response())
}

async fn delete_metadata_item(
    State(s): State<AppState>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    auth.require(Role::Member, "os_compute_api:server-metadata:delete").map_err(ApiError::compute)?;
    servers::change_metadata(&s.app, &instance, servers::MetadataChange::Delete(key))
        .await
        .map_err(ApiError::compute)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn truthy(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "f" | "no" | "off")
}

/// The most servers one list answers, whatever `limit` asks (Nova's `[api] max_limit`); a full page carries a
/// `next` link to the rest.
const MAX_LIMIT: usize = 1000;

fn list_servers(
    s: &AppState,
    auth: &Auth,
    v: Microversion,
    mut raw: HashMap<String, String>,
    detail: bool,
) -> ApiResult {
    let mut filters = server_filters(&raw, v)?;
    if filters.all_projects {
        auth.require(Role::Admin, "os_compute_api:servers:index:get_all_tenants").map_err(ApiError::compute)?;
    }
    if filters.host.is_some() {
        auth.require(Role::Admin, "os_compute_api:servers:allow_all_filters").map_err(ApiError::compute)?;
    }
    let limit = filters.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    filters.limit = Some(limit);
    let instances = servers::list(&s.app, &auth.ctx, &filters).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        servers: Vec<ServerView<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        servers_links: Vec<Link>,
    }
    let mut servers_links = Vec::new();
    if let Some(last) = instances.last().filter(|_| instances.len() == limit) {
        raw.insert("marker".into(), last.id.to_string());
        raw.insert("limit".into(), limit.to_string());
        let query: BTreeMap<_, _> = raw.into_iter().collect();
        let query =
            serde_urlencoded::to_string(query).map_err(|e| ApiError::compute(CloudError::Internal(e.to_string())))?;
        let path = if detail { "servers/detail" } else { "servers" };
        servers_links.push(Link { rel: "next", href: format!("{}/compute/v2.1/{path}?{query}", s.base_url) });
    }
    let cx = ViewContext::new(s, auth, v, &instances, detail)?;
    let views = instances.iter().map(|i| server_view(i, &cx, detail)).collect();
    Ok(Json(Body { servers: views, servers_links }).into_response())
}

async fn list_servers_brief(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Query(filters): Query<HashMap<String, String>>,
) -> ApiResult {
    list_servers(&s, &auth, v, filters, false)
}

async fn list_servers_detail(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Query(filters): Query<HashMap<String, String>>,
) -> ApiResult {
    list_servers(&s, &auth, v, filters, true)
}

/// The filters of the Compute API's server list (api-ref) nimbus does not apply: asked for, they are a 400,
/// never ignored (a client would take the unfiltered list for the filtered one).
const UNSUPPORTED_SERVER_FILTERS: &[&str] = &[
    "access_ip_v4",
    "access_ip_v6",
    "auto_disk_config",
    "availability_zone",
    "changes-before",
    "config_drive",
    "created_at",
    "description",
    "hostname",
    "ip6",
    "kernel_id",
    "launch_index",
    "launched_at",
    "locked",
    "locked_by",
    "node",
    "pinned_availability_zone",
    "power_state",
    "progress",
    "ramdisk_id",
    "reservation_id",
    "root_device_name",
    "sort_dir",
    "sort_key",
    "task_state",
    "terminated_at",
    "uuid",
];

fn bad_request(message: String) -> ApiError {
    ApiError::compute(CloudError::BadRequest(message))
}

/// A regular expression filter (nova matches `name` and `ip` as Python regular expressions).
fn regex_filter(raw: &HashMap<String, String>, key: &str) -> Result<Option<regex::Regex>, ApiError> {
    raw.get(key)
        .map(|pattern| {
            regex::Regex::new(pattern).map_err(|e| bad_request(format!("Invalid {key} filter {pattern:?}: {e}")))
        })
        .transpose()
}

/// An ISO 8601 time (`2026-12-04`, `2026-12-04T10:00:00Z`, `…T10:00:00.5+01:00`), as ms since the epoch.
pub(crate) fn parse_iso8601(text: &str) -> Option<u64> {
    let text = text.trim();
    let with_time = if text.len() == 10 { format!("{text}T00:00:00") } else { text.to_string() };
    // An offset (`+01:00`, `-0500`) is taken off and applied; `Z` and no zone are UTC.
    let (base, offset_s) = match with_time.rfind(['+', '-']).filter(|i| *i > 10) {
        Some(i) => {
            let digits: String = with_time[i + 1..].chars().filter(char::is_ascii_digit).collect();
            if digits.len() != 4 {
                return None;
            }
            let (h, m): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            let sign = if with_time.as_bytes()[i] == b'-' { -1 } else { 1 };
            (&with_time[..i], sign * (h * 3600 + m * 60))
        }
        None => (with_time.trim_end_matches(['Z', 'z']), 0),
    };
    let at = humantime::parse_rfc3339_weak(base).ok()?;
    let ms = i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
    u64::try_from(ms - offset_s * 1000).ok()
}

/// The list's filters. The documented ones nimbus does not apply are a 400; a parameter the api-ref does not
/// name is ignored, as nova does.
fn server_filters(raw: &HashMap<String, String>, v: Microversion) -> Result<ServerFilters, ApiError> {
    if let Some(unsupported) = UNSUPPORTED_SERVER_FILTERS.iter().find(|f| raw.contains_key(**f)) {
        return Err(bad_request(format!(
            "nimbus does not filter servers by {unsupported}: it filters by name, status, image, flavor, ip, \
             changes-since, host, user_id, key_name, vm_state, project_id, all_tenants and (2.26) tags, tags-any, \
             not-tags and not-tags-any, with limit and marker."
        )));
    }
    // Deleted servers leave no record: asking for the others is what every list is.
    if let Some(deleted) = raw.get("deleted").filter(|d| truthy(d)) {
        return Err(bad_request(format!(
            "nimbus keeps no record of deleted servers: deleted={deleted} matches nothing it could list."
        )));
    }
    let limit = match raw.get("limit") {
        Some(l) => Some(
            l.parse::<usize>().map_err(|_| bad_request(format!("limit must be a non-negative integer, not {l:?}")))?,
        ),
        None => None,
    };
    let changes_since = match raw.get("changes-since") {
        Some(t) => Some(parse_iso8601(t).ok_or_else(|| {
            bad_request(format!("Invalid changes-since {t:?}: it is an ISO 8601 time, as 2026-12-04T10:00:00Z."))
        })?),
        None => None,
    };
    let tag_list = |key: &str| -> Result<Vec<String>, ApiError> {
        let Some(text) = raw.get(key) else { return Ok(Vec::new()) };
        since(v, 26, key)?;
        let tags: Vec<String> = text.split(',').map(str::to_string).collect();
        match tags.iter().find_map(|t| servers::tag_problem(t)) {
            Some(problem) => Err(bad_request(problem)),
            None => Ok(tags),
        }
    };
    let tags = TagFilters {
        all: tag_list("tags")?,
        any: tag_list("tags-any")?,
        not_all: tag_list("not-tags")?,
        not_any: tag_list("not-tags-any")?,
    };
    Ok(ServerFilters {
        tags,
        name: regex_filter(raw, "name")?,
        status: raw.get("status").cloned(),
        image: raw.get("image").cloned(),
        flavor: raw.get("flavor").cloned(),
        ip: regex_filter(raw, "ip")?,
        changes_since,
        host: raw.get("host").cloned(),
        user: raw.get("user_id").cloned(),
        key_name: raw.get("key_name").cloned(),
        vm_state: raw.get("vm_state").cloned(),
        all_projects: raw.get("all_tenants").is_some_and(|v| truthy(v)),
        project: raw.get("project_id").or_else(|| raw.get("tenant_id")).cloned(),
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
    #[serde(default, rename = "key_name")]
    key_name: Option<String>,
    #[serde(default, rename = "security_groups")]
    security_groups: Option<Vec<NamedGroup>>,
    #[serde(default, rename = "user_data")]
    user_data: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
}

/// `user_data` arrives base64-encoded (standard alphabet; line breaks, as some clients send them, are
/// dropped first).
fn decode_user_data(text: Option<String>) -> Result<Option<Vec<u8>>, CloudError> {
    use base64::Engine;
    let Some(text) = text else { return Ok(None) };
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map(Some)
        .map_err(|e| CloudError::BadRequest(format!("Invalid user_data: it must be base64 ({e}).")))
}

/// A group a server create names: `{"name": …}` (a name or an id).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedGroup {
    name: String,
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

/// `networks` may be "auto", "none", or a list of `{"uuid": …}` (with a `fixed_ip` if wanted),
/// `{"fixed_ip": …}` and `{"port": …}` entries, one interface each, in that order. An empty list is "auto", as
/// in nova's v2.1.
/// From 2.32 an entry may carry a device `tag`; the tags come back in the order of the entries.
fn requested_networks(
    networks: Option<&Value>,
    v: Microversion,
) -> Result<(AskedNics, Vec<Option<String>>), CloudError> {
    let bad = CloudError::BadRequest;
    match networks {
        None | Some(Value::Null) => Ok((AskedNics::Auto, Vec::new())),
        Some(Value::String(word)) if word == "auto" => Ok((AskedNics::Auto, Vec::new())),
        Some(Value::String(word)) if word == "none" => Ok((AskedNics::None, Vec::new())),
        Some(Value::Array(list)) if list.is_empty() => Ok((AskedNics::Auto, Vec::new())),
        Some(Value::Array(list)) => {
            let (nics, tags) =
                list.iter().map(|e| requested_nic(e, v)).collect::<Result<Vec<_>, _>>()?.into_iter().unzip();
            Ok((AskedNics::These(nics), tags))
        }
        Some(other) => Err(bad(format!("Invalid networks value {other}; expected \"auto\", \"none\" or a list."))),
    }
}

/// One entry of a server create's `networks`.
fn requested_nic(entry: &Value, v: Microversion) -> Result<(NicAsk, Option<String>), CloudError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        uuid: Option<String>,
        port: Option<String>,
        fixed_ip: Option<String>,
        tag: Option<String>,
    }
    let bad = CloudError::BadRequest;
    let entry: Entry = serde_json::from_value(entry.clone())
        .map_err(|e| bad(format!("Invalid input for field/attribute networks: {e}.")))?;
    if let Some(tag) = &entry.tag {
        if !v.has(32) {
            return Err(bad(format!("A network's tag is a field of microversion 2.32; this request is at {v}.")));
        }
        if let Some(problem) = servers::tag_problem(tag) {
            return Err(bad(problem));
        }
    }
    let tag = entry.tag;
    let address = |ip: String| ip.parse().map_err(|_| bad(format!("Invalid fixed IP address ({ip})")));
    let nic = match (entry.uuid, entry.port, entry.fixed_ip) {
        (_, Some(port), None) => {
            port.parse().map(NicRequest::Port).map_err(|_| bad(format!("Port {port} could not be found.")))
        }
        (None, None, Some(ip)) => return Ok((NicAsk::Address(address(ip)?), tag)),
        (_, Some(_), Some(_)) => Err(bad("A port comes with its own fixed IP; do not give both.".into())),
        (Some(uuid), None, fixed_ip) => {
            let network = uuid
                .parse()
                .map_err(|_| bad(format!("Bad network format: network uuid is not in proper format ({uuid})")))?;
            Ok(NicRequest::Network { network, address: fixed_ip.map(address).transpose()? })
        }
        (None, None, None) => Err(bad("Each requested network needs a uuid, a port or a fixed_ip.".into())),
    }?;
    Ok((NicAsk::Given(nic), tag))
}

#[derive(Serialize)]
struct CreatedServer<'a> {
    id: String,
    links: [Link; 2],
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    security_groups: Vec<SecurityGroupRef<'a>>,
    #[serde(rename = "adminPass")]
    admin_pass: String,
}

async fn create_server(State(s): State<AppState>, auth: Auth, v: Microversion, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:servers:create").map_err(ApiError::compute)?;
    let request: CreateServer = parse_json(&body).map_err(ApiError::compute)?;
    let new = request.server;
    if new.description.is_some() {
        since(v, 19, "description")?;
    }
    let min = count(&new.min_count, "min_count").map_err(ApiError::compute)?.unwrap_or(1);
    let max = count(&new.max_count, "max_count").map_err(ApiError::compute)?.unwrap_or(min);
    if min > max {
        return Err(ApiError::compute(CloudError::BadRequest("min_count must be <= max_count".into())));
    }
    let (networks, nic_tags) = requested_networks(new.networks.as_ref(), v).map_err(ApiError::compute)?;
    let new = NewServers {
        name: new.name,
        image: ref_id(&new.image_ref).to_string(),
        flavor: ref_id(&new.flavor_ref).to_string(),
        networks,
        nic_tags,
        count: max,
        key_name: new.key_name,
        security_groups: new.security_groups.unwrap_or_default().into_iter().map(|g| g.name).collect(),
        user_data: decode_user_data(new.user_data).map_err(ApiError::compute)?,
        metadata: new.metadata.unwrap_or_default(),
        description: new.description.flatten(),
    };
    let created = servers::create(&s.app, &auth.trace, &auth.ctx, new).await.map_err(ApiError::compute)?;
    let id = created[0].id.to_string();
    let names = group_names(&s, &created)?;
    #[derive(Serialize)]
    struct Body<'a> {
        server: CreatedServer<'a>,
    }
    let server = CreatedServer {
        links: links(&s.base_url, "servers", &id),
        id,
        disk_config: "MANUAL",
        security_groups: created[0]
            .security_groups
            .iter()
            .filter_map(|g| names.get(g))
            .map(|name| SecurityGroupRef { name })
            .collect(),
        admin_pass: random_admin_pass(),
    };
    Ok((StatusCode::ACCEPTED, Json(Body { server })).into_response())
}

fn random_admin_pass() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(12).map(char::from).collect()
}

async fn delete_server(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(ApiError::compute)?;
    auth.require(Role::Member, "os_compute_api:servers:delete").map_err(ApiError::compute)?;
    servers::delete(&s.app, &auth.trace, &instance).await.map_err(ApiError::compute)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_iso8601;

    #[test]
    fn changes_since_takes_iso_8601_times_with_or_without_a_zone() {
        let at = 1_764_842_400_000; // 2025-12-04T10:00:00Z
        for (text, expected) in [
            ("2025-12-04T10:00:00Z", Some(at)),
            ("2025-12-04T10:00:00", Some(at)),
            ("2025-12-04 10:00:00", Some(at)),
            ("2025-12-04T10:00:00.250Z", Some(at + 250)),
            ("2025-12-04T11:00:00+01:00", Some(at)),
            ("2025-12-04T05:00:00-0500", Some(at)),
            ("2025-12-04", Some(at - 10 * 3600 * 1000)),
            ("yesterday", None),
            ("2025-13-04T10:00:00Z", None),
            ("2025-12-04T10:00:00+1", None),
            ("", None),
        ] {
            assert_eq!(parse_iso8601(text), expected, "{text:?}");
        }
    }
}
