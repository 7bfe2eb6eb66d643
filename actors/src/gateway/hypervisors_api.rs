//! The hosts as the Compute API shows them to admins: `os-hypervisors` (list, detail, one, statistics,
//! search by host name, the servers on matching hosts, uptime) and `os-services` (every host runs
//! `nova-compute`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::records::Role;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::microversion::Microversion;
use super::views::Link;
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::hosts::{self, HostUsage, ServiceChange};

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/compute/v2.1/os-hypervisors", get(list_brief))
        .route("/compute/v2.1/os-hypervisors/detail", get(list_detail))
        .route("/compute/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/compute/v2.1/os-hypervisors/{id}", get(show))
        .route("/compute/v2.1/os-hypervisors/{id}/uptime", get(uptime))
        .route("/compute/v2.1/os-hypervisors/{id}/search", get(search))
        .route("/compute/v2.1/os-hypervisors/{id}/servers", get(servers_on))
        .route("/compute/v2.1/os-services", get(list_services))
        .route("/compute/v2.1/os-services/{action}", axum::routing::put(change_service))
}

fn up_or_down(s: &AppState, u: &HostUsage) -> &'static str {
    if hosts::is_up(&u.host, s.app.timing()) { "up" } else { "down" }
}

fn enabled_or_disabled(u: &HostUsage) -> &'static str {
    if u.host.enabled { "enabled" } else { "disabled" }
}

#[derive(Serialize)]
struct HypervisorService {
    host: String,
    id: u32,
    disabled_reason: Option<String>,
}

/// What hosts offer and use: one host's in its detail, every host's summed in the statistics.
#[derive(Serialize, Default)]
struct Resources {
    vcpus: u64,
    vcpus_used: u64,
    memory_mb: u64,
    memory_mb_used: u64,
    local_gb: u64,
    local_gb_used: u64,
    free_ram_mb: i64,
    free_disk_gb: i64,
    running_vms: usize,
    current_workload: u32,
    disk_available_least: i64,
}

impl Resources {
    fn add(&mut self, u: &HostUsage) {
        let h = &u.host;
        self.vcpus += u64::from(h.vcpus);
        self.vcpus_used += u64::from(u.vcpus);
        self.memory_mb += h.ram_mb;
        self.memory_mb_used += u.ram_mb;
        self.local_gb += h.disk_gb;
        self.local_gb_used += u.disk_gb;
        self.free_ram_mb += h.ram_mb as i64 - u.ram_mb as i64;
        self.free_disk_gb += h.disk_gb as i64 - u.disk_gb as i64;
        self.disk_available_least = self.free_disk_gb;
        self.running_vms += u.instances;
    }
}

#[derive(Serialize)]
struct HypervisorDetail {
    hypervisor_type: String,
    hypervisor_version: u32,
    host_ip: String,
    #[serde(flatten)]
    resources: Resources,
    /// A JSON text before 2.28, an object from it; nimbus knows nothing of the hosts' CPUs.
    cpu_info: serde_json::Value,
    service: HypervisorService,
}

#[derive(Serialize)]
struct ServerRef {
    name: String,
    uuid: String,
}

#[derive(Serialize)]
struct HypervisorView {
    id: u32,
    hypervisor_hostname: String,
    state: &'static str,
    status: &'static str,
    #[serde(flatten)]
    detail: Option<HypervisorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime: Option<String>,
    /// Only in `…/servers`, and only for a host with servers (as nova omits it).
    #[serde(skip_serializing_if = "Option::is_none")]
    servers: Option<Vec<ServerRef>>,
}

fn view(s: &AppState, u: &HostUsage, detail: bool, v: Microversion) -> HypervisorView {
    let h = &u.host;
    HypervisorView {
        id: h.number,
        hypervisor_hostname: h.name.0.clone(),
        state: up_or_down(s, u),
        status: enabled_or_disabled(u),
        detail: detail.then(|| HypervisorDetail {
            hypervisor_type: h.hypervisor_type.clone(),
            hypervisor_version: 1,
            host_ip: h.host_ip.to_string(),
            resources: {
                let mut one = Resources::default();
                one.add(u);
                one
            },
            cpu_info: if v.has(28) { serde_json::json!({}) } else { serde_json::json!("{}") },
            service: HypervisorService {
                host: h.name.0.clone(),
                id: h.number,
                disabled_reason: h.disabled_reason.clone(),
            },
        }),
        uptime: None,
        servers: None,
    }
}

#[derive(Serialize)]
struct ListBody {
    hypervisors: Vec<HypervisorView>,
    /// 2.33: the next page's link, when a page is full.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hypervisors_links: Vec<Link>,
}

/// 2.33's paging of the hypervisor lists.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    marker: Option<String>,
}

fn page(query: Option<&str>, v: Microversion) -> Result<Page, ApiError> {
    let bad = |m: String| ApiError::compute(CloudError::BadRequest(m));
    let page: Page = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| bad(format!("Invalid query ({e}); the hypervisor lists take limit and marker (2.33).")))?;
    if (page.limit.is_some() || page.marker.is_some()) && !v.has(33) {
        return Err(bad(format!("limit and marker are parameters of microversion 2.33; this request is at {v}.")));
    }
    Ok(page)
}

#[derive(Serialize)]
struct OneBody {
    hypervisor: HypervisorView,
}

/// The body of an `os-services` change: the service, and what `disable-log-reason` and `force-down` set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceRequest {
    host: String,
    binary: String,
    disabled_reason: Option<String>,
    forced_down: Option<bool>,
}

/// `PUT /os-services/{enable | disable | disable-log-reason | force-down}` (admin; `force-down` from 2.11):
/// a disabled host gets no new instances, a forced-down one counts as down whatever it reports.
async fn change_service(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(action): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-services:update").map_err(ApiError::compute)?;
    let bad = |m: String| ApiError::compute(CloudError::BadRequest(m));
    let request: ServiceRequest = super::errors::parse_json(&body).map_err(ApiError::compute)?;
    if request.binary != "nova-compute" {
        return Err(ApiError::compute(CloudError::NotFound(format!(
            "Service {} on host {} could not be found: every nimbus host runs nova-compute only.",
            request.binary, request.host
        ))));
    }
    let reason_only_here = |allowed: bool| match (&request.disabled_reason, allowed) {
        (Some(_), false) => Err(bad(format!("disabled_reason goes with disable-log-reason, not {action}."))),
        _ => Ok(()),
    };
    let change = match action.as_str() {
        "enable" => {
            reason_only_here(false)?;
            ServiceChange { enabled: Some(true), ..ServiceChange::default() }
        }
        "disable" => {
            reason_only_here(false)?;
            ServiceChange { enabled: Some(false), ..ServiceChange::default() }
        }
        "disable-log-reason" => {
            let reason = request
                .disabled_reason
                .clone()
                .ok_or_else(|| bad("disable-log-reason needs a disabled_reason.".into()))?;
            ServiceChange { enabled: Some(false), disabled_reason: Some(Some(reason)), ..ServiceChange::default() }
        }
        "force-down" if v.has(11) => {
            reason_only_here(false)?;
            let forced =
                request.forced_down.ok_or_else(|| bad("force-down needs forced_down, true or false.".into()))?;
            ServiceChange { forced_down: Some(forced), ..ServiceChange::default() }
        }
        other => {
            return Err(ApiError::compute(CloudError::NotFound(format!(
                "Unknown os-services action {other:?} at {v}: enable, disable, disable-log-reason{}.",
                if v.has(11) { " or force-down" } else { " (force-down from 2.11)" }
            ))));
        }
    };
    if request.forced_down.is_some() && action != "force-down" {
        return Err(bad(format!("forced_down goes with force-down, not {action}.")));
    }
    let host = hosts::change_service(&s.app, &request.host, change).await.map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Changed {
        binary: &'static str,
        host: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        disabled_reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        forced_down: Option<bool>,
    }
    let forcing = action == "force-down";
    let service = Changed {
        binary: "nova-compute",
        host: host.name.0.clone(),
        status: (!forcing).then_some(if host.enabled { "enabled" } else { "disabled" }),
        disabled_reason: (action == "disable-log-reason").then(|| host.disabled_reason.clone()).flatten(),
        forced_down: forcing.then_some(host.forced_down),
    };
    Ok(Json(serde_json::json!({ "service": service })).into_response())
}

/// Every host, after the admin check every `os-hypervisors` call makes.
fn usage(s: &AppState, auth: &Auth, policy: &str) -> Result<Vec<HostUsage>, ApiError> {
    auth.require(Role::Admin, policy).map_err(ApiError::compute)?;
    hosts::usage(&s.app).map_err(ApiError::compute)
}

/// The hosts in the order of their numbers, from just after the marker's (a host number), a page of them.
fn list(s: &AppState, auth: &Auth, v: Microversion, query: Option<&str>, detail: bool) -> ApiResult {
    let page = page(query, v)?;
    let mut usage = usage(s, auth, "os_compute_api:os-hypervisors:list")?;
    usage.sort_by_key(|u| u.host.number);
    if let Some(marker) = &page.marker {
        let at = by_id(usage.clone(), marker)
            .map_err(|_| ApiError::compute(CloudError::BadRequest(format!("marker [{marker}] not found"))))?;
        usage.retain(|u| u.host.number > at.host.number);
    }
    let mut hypervisors_links = Vec::new();
    if let Some(limit) = page.limit.filter(|l| usage.len() > *l) {
        usage.truncate(limit);
        let last = usage.last().map(|u| u.host.number).unwrap_or_default();
        let path = if detail { "os-hypervisors/detail" } else { "os-hypervisors" };
        let href = format!("{}/compute/v2.1/{path}?limit={limit}&marker={last}", s.base_url);
        hypervisors_links.push(Link { rel: "next", href });
    }
    let hypervisors = usage.iter().map(|u| view(s, u, detail, v)).collect();
    Ok(Json(ListBody { hypervisors, hypervisors_links }).into_response())
}

async fn list_brief(State(s): State<AppState>, auth: Auth, v: Microversion, RawQuery(q): RawQuery) -> ApiResult {
    list(&s, &auth, v, q.as_deref(), false)
}

async fn list_detail(State(s): State<AppState>, auth: Auth, v: Microversion, RawQuery(q): RawQuery) -> ApiResult {
    list(&s, &auth, v, q.as_deref(), true)
}

/// The host with number `id` (at microversion 2.1 hypervisors are known by number).
fn by_id(all: Vec<HostUsage>, id: &str) -> Result<HostUsage, ApiError> {
    let not_found = || ApiError::compute(CloudError::NotFound(format!("Hypervisor with ID {id} could not be found.")));
    let number: u32 = id.parse().map_err(|_| not_found())?;
    all.into_iter().find(|u| u.host.number == number).ok_or_else(not_found)
}

async fn show(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let host = by_id(usage(&s, &auth, "os_compute_api:os-hypervisors:show")?, &id)?;
    Ok(Json(OneBody { hypervisor: view(&s, &host, true, v) }).into_response())
}

async fn uptime(State(s): State<AppState>, auth: Auth, v: Microversion, Path(id): Path<String>) -> ApiResult {
    let host = by_id(usage(&s, &auth, "os_compute_api:os-hypervisors:uptime")?, &id)?;
    let line = hosts::uptime(&s.app, &host.host.name).await.map_err(ApiError::compute)?;
    let hypervisor = HypervisorView { uptime: Some(line), ..view(&s, &host, false, v) };
    Ok(Json(OneBody { hypervisor }).into_response())
}

/// The hosts whose name contains `pattern` (nova's `hypervisor_hostname_pattern`); none is a 404.
fn matching(all: Vec<HostUsage>, pattern: &str) -> Result<Vec<HostUsage>, ApiError> {
    let found: Vec<HostUsage> = all.into_iter().filter(|u| u.host.name.0.contains(pattern)).collect();
    if found.is_empty() {
        return Err(ApiError::compute(CloudError::NotFound(format!(
            "No hypervisor matching '{pattern}' could be found."
        ))));
    }
    Ok(found)
}

async fn search(State(s): State<AppState>, auth: Auth, v: Microversion, Path(pattern): Path<String>) -> ApiResult {
    let found = matching(usage(&s, &auth, "os_compute_api:os-hypervisors:search")?, &pattern)?;
    let hypervisors = found.iter().map(|u| view(&s, u, false, v)).collect();
    Ok(Json(ListBody { hypervisors, hypervisors_links: Vec::new() }).into_response())
}

async fn servers_on(State(s): State<AppState>, auth: Auth, v: Microversion, Path(pattern): Path<String>) -> ApiResult {
    let found = matching(usage(&s, &auth, "os_compute_api:os-hypervisors:servers")?, &pattern)?;
    let mut hypervisors = Vec::with_capacity(found.len());
    for u in &found {
        let instances = hosts::instances_on(&s.app, &u.host.name).map_err(ApiError::compute)?;
        let servers: Vec<ServerRef> =
            instances.into_iter().map(|i| ServerRef { name: i.name, uuid: i.id.to_string() }).collect();
        hypervisors.push(HypervisorView { servers: (!servers.is_empty()).then_some(servers), ..view(&s, u, false, v) });
    }
    Ok(Json(ListBody { hypervisors, hypervisors_links: Vec::new() }).into_response())
}

/// `os-hypervisors/statistics`: the sums over every host.
async fn statistics(State(s): State<AppState>, auth: Auth) -> ApiResult {
    let all = usage(&s, &auth, "os_compute_api:os-hypervisors:statistics")?;
    #[derive(Serialize)]
    struct Statistics {
        count: usize,
        #[serde(flatten)]
        resources: Resources,
    }
    let mut sum = Statistics { count: all.len(), resources: Resources::default() };
    for u in &all {
        sum.resources.add(u);
    }
    #[derive(Serialize)]
    struct Body {
        hypervisor_statistics: Statistics,
    }
    Ok(Json(Body { hypervisor_statistics: sum }).into_response())
}

/// `os-services?host=&binary=`: every host runs one service, `nova-compute`.
async fn list_services(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Query(filters): Query<HashMap<String, String>>,
) -> ApiResult {
    auth.require(Role::Admin, "os_compute_api:os-services:list").map_err(ApiError::compute)?;
    if let Some(unknown) = filters.keys().find(|k| !matches!(k.as_str(), "host" | "binary")) {
        return Err(ApiError::compute(CloudError::BadRequest(format!(
            "os-services is filtered by host and binary, not {unknown:?}."
        ))));
    }
    let mut usage = hosts::usage(&s.app).map_err(ApiError::compute)?;
    usage.retain(|u| {
        filters.get("host").is_none_or(|h| *h == u.host.name.0)
            && filters.get("binary").is_none_or(|b| b == "nova-compute")
    });
    #[derive(Serialize)]
    struct ServiceView {
        id: u32,
        binary: &'static str,
        host: String,
        zone: &'static str,
        status: &'static str,
        state: &'static str,
        updated_at: String,
        disabled_reason: Option<String>,
        /// 2.11.
        #[serde(skip_serializing_if = "Option::is_none")]
        forced_down: Option<bool>,
    }
    #[derive(Serialize)]
    struct Body {
        services: Vec<ServiceView>,
    }
    let services = usage
        .iter()
        .map(|u| ServiceView {
            id: u.host.number,
            binary: "nova-compute",
            host: u.host.name.0.clone(),
            zone: "nova",
            status: enabled_or_disabled(u),
            state: up_or_down(&s, u),
            updated_at: iso8601(u.host.last_seen),
            disabled_reason: u.host.disabled_reason.clone(),
            forced_down: v.has(11).then_some(u.host.forced_down),
        })
        .collect();
    Ok(Json(Body { services }).into_response())
}
