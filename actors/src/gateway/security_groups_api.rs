//! Security groups in both shapes clients use: Network v2.0's `security-groups` and `security-group-rules`
//! (the stock CLI's), and nova's `os-security-groups`, `os-security-group-rules` and a server's
//! `os-security-groups`. One model behind them (`app::security_groups`).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use nimbus_protocol::ids::{ProjectId, SecurityGroupId, SecurityRuleId};
use nimbus_storage::records::{Direction, IpProtocol, Remote, Role, SecurityGroup, SecurityRule};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::network_api::{ListQuery, list_answer};
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::security_groups::{self, Asker};
use crate::app::servers;
use crate::security_rules::RuleRequest;

type ApiResult = Result<Response, ApiError>;
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network/v2.0/security-groups", get(list_groups).post(create_group))
        .route("/network/v2.0/security-groups/{id}", get(show_group).put(update_group).delete(delete_group))
        .route("/network/v2.0/security-group-rules", get(list_rules).post(create_rule))
        .route("/network/v2.0/security-group-rules/{id}", get(show_rule).delete(delete_rule))
        .route("/compute/v2.1/os-security-groups", get(nova_list_groups).post(nova_create_group))
        .route(
            "/compute/v2.1/os-security-groups/{id}",
            get(nova_show_group).put(nova_update_group).delete(nova_delete_group),
        )
        .route("/compute/v2.1/os-security-group-rules", post(nova_create_rule))
        .route("/compute/v2.1/os-security-group-rules/{id}", delete(nova_delete_rule))
        .route("/compute/v2.1/servers/{id}/os-security-groups", get(nova_server_groups))
}

fn asker(auth: &Auth) -> Asker {
    Asker { project: auth.ctx.project, admin: auth.is_admin() }
}

fn parse_id<T: std::str::FromStr>(kind: &str, id: &str) -> Result<T, CloudError> {
    id.parse().map_err(|_| CloudError::NotFound(format!("{kind} {id} could not be found.")))
}

// ------------------------------------------------------------------------------------------ Network v2.0

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn protocol_name(p: Option<IpProtocol>) -> Option<&'static str> {
    p.map(|p| match p {
        IpProtocol::Tcp => "tcp",
        IpProtocol::Udp => "udp",
        IpProtocol::Icmp => "icmp",
    })
}

#[derive(Serialize)]
struct RuleView {
    id: String,
    security_group_id: String,
    direction: &'static str,
    ethertype: &'static str,
    protocol: Option<&'static str>,
    port_range_min: Option<u16>,
    port_range_max: Option<u16>,
    remote_ip_prefix: Option<String>,
    remote_group_id: Option<String>,
    remote_address_group_id: Option<String>,
    description: String,
    project_id: String,
    tenant_id: String,
    created_at: String,
    updated_at: String,
    revision_number: u32,
}

fn rule_view(group: &SecurityGroup, rule: &SecurityRule) -> RuleView {
    let (remote_ip_prefix, remote_group_id) = match &rule.remote {
        Remote::Any => (None, None),
        Remote::Cidr(cidr) => (Some(cidr.to_string()), None),
        Remote::Group(id) => (None, Some(id.to_string())),
    };
    RuleView {
        id: rule.id.to_string(),
        security_group_id: group.id.to_string(),
        direction: direction_name(rule.direction),
        ethertype: "IPv4",
        protocol: protocol_name(rule.protocol),
        port_range_min: rule.port_min,
        port_range_max: rule.port_max,
        remote_ip_prefix,
        remote_group_id,
        remote_address_group_id: None,
        description: rule.description.clone(),
        project_id: group.project.to_string(),
        tenant_id: group.project.to_string(),
        created_at: iso8601(group.created_at),
        updated_at: iso8601(group.updated_at),
        revision_number: 0,
    }
}

#[derive(Serialize)]
struct GroupView {
    id: String,
    name: String,
    description: String,
    project_id: String,
    tenant_id: String,
    security_group_rules: Vec<RuleView>,
    stateful: bool,
    shared: bool,
    tags: [String; 0],
    created_at: String,
    updated_at: String,
    revision_number: u32,
}

fn group_view(group: &SecurityGroup) -> GroupView {
    GroupView {
        id: group.id.to_string(),
        name: group.name.clone(),
        description: group.description.clone(),
        project_id: group.project.to_string(),
        tenant_id: group.project.to_string(),
        security_group_rules: group.rules.iter().map(|r| rule_view(group, r)).collect(),
        stateful: true,
        shared: false,
        tags: [],
        created_at: iso8601(group.created_at),
        updated_at: iso8601(group.updated_at),
        revision_number: 0,
    }
}

#[derive(Serialize)]
struct GroupBody {
    security_group: GroupView,
}

/// The fields of each list's views: what it filters, selects and sorts by.
const GROUP_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "project_id",
    "tenant_id",
    "security_group_rules",
    "stateful",
    "shared",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];
const RULE_FIELDS: &[&str] = &[
    "id",
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "project_id",
    "tenant_id",
    "created_at",
    "updated_at",
    "revision_number",
];

/// The groups the asker sees: their project's (made with its default group), or an admin's every group.
async fn visible_groups(s: &AppState, auth: &Auth) -> Result<Vec<SecurityGroup>, ApiError> {
    if auth.is_admin() {
        security_groups::list_all(&s.app, asker(auth)).await
    } else {
        security_groups::list_for_project(&s.app, auth.ctx.project).await
    }
    .map_err(ApiError::network)
}

async fn list_groups(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let query = ListQuery::parse(query.as_deref(), GROUP_FIELDS)?;
    let groups = visible_groups(&s, &auth).await?;
    list_answer(&s, "security_groups", "/network/v2.0/security-groups", groups.iter().map(group_view), &query)
}

async fn show_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(ApiError::network)?;
    let group = security_groups::get(&s.app, asker(&auth), &id.to_string()).map_err(ApiError::network)?;
    Ok(Json(GroupBody { security_group: group_view(&group) }).into_response())
}

#[derive(Deserialize)]
struct GroupRequest<T> {
    security_group: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Accepted only when it is the caller's project (or from an admin): a group is made where it is asked.
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    /// Only stateful groups exist here.
    #[serde(default)]
    stateful: Option<bool>,
}

/// The project a create names (admin: any existing one; others: their own).
fn target_project(s: &AppState, auth: &Auth, named: Option<&str>) -> Result<ProjectId, CloudError> {
    let Some(named) = named else { return Ok(auth.ctx.project) };
    match crate::app::identity::find_project(&s.app, named)? {
        Some(p) if p.id == auth.ctx.project || auth.is_admin() => Ok(p.id),
        _ => Err(CloudError::Forbidden(format!("A security group cannot be made in project {named} by this user."))),
    }
}

async fn create_group(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_security_group").map_err(ApiError::network)?;
    let request: GroupRequest<NewGroup> = parse_json(&body).map_err(ApiError::network)?;
    let new = request.security_group;
    if new.stateful == Some(false) {
        return Err(ApiError::network(CloudError::BadRequest(
            "Stateless security groups are not supported: nimbus filters statefully.".into(),
        )));
    }
    let project = target_project(&s, &auth, new.project_id.or(new.tenant_id).as_deref()).map_err(ApiError::network)?;
    let description = new.description.unwrap_or_default();
    let group = security_groups::create(&s.app, project, new.name, description).await.map_err(ApiError::network)?;
    Ok((StatusCode::CREATED, Json(GroupBody { security_group: group_view(&group) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

async fn update_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "update_security_group").map_err(ApiError::network)?;
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(ApiError::network)?;
    let request: GroupRequest<GroupChange> = parse_json(&body).map_err(ApiError::network)?;
    let GroupChange { name, description } = request.security_group;
    let group =
        security_groups::update(&s.app, asker(&auth), id, name, description).await.map_err(ApiError::network)?;
    Ok(Json(GroupBody { security_group: group_view(&group) }).into_response())
}

async fn delete_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_security_group").map_err(ApiError::network)?;
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(ApiError::network)?;
    security_groups::delete(&s.app, asker(&auth), id).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_rules(State(s): State<AppState>, auth: Auth, RawQuery(query): RawQuery) -> ApiResult {
    let query = ListQuery::parse(query.as_deref(), RULE_FIELDS)?;
    let groups = visible_groups(&s, &auth).await?;
    let views = groups.iter().flat_map(|g| g.rules.iter().map(move |r| rule_view(g, r)));
    list_answer(&s, "security_group_rules", "/network/v2.0/security-group-rules", views, &query)
}

#[derive(Serialize)]
struct RuleBody {
    security_group_rule: RuleView,
}

async fn show_rule(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let id: SecurityRuleId = parse_id("Security group rule", &id).map_err(ApiError::network)?;
    let (group, rule) = security_groups::get_rule(&s.app, asker(&auth), id).map_err(ApiError::network)?;
    Ok(Json(RuleBody { security_group_rule: rule_view(&group, &rule) }).into_response())
}

#[derive(Deserialize)]
struct RuleRequestBody<T> {
    security_group_rule: T,
}

/// A protocol or port as clients send it: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Number(i64),
}

impl TextOrNumber {
    fn text(self) -> String {
        match self {
            TextOrNumber::Text(s) => s,
            TextOrNumber::Number(n) => n.to_string(),
        }
    }

    fn number(self, field: &str) -> Result<i64, CloudError> {
        match self {
            TextOrNumber::Number(n) => Ok(n),
            TextOrNumber::Text(s) => {
                s.trim().parse().map_err(|_| CloudError::BadRequest(format!("{field} must be an integer, not {s:?}.")))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRule {
    security_group_id: String,
    direction: Option<String>,
    #[serde(default)]
    ethertype: Option<String>,
    #[serde(default)]
    protocol: Option<TextOrNumber>,
    #[serde(default)]
    port_range_min: Option<TextOrNumber>,
    #[serde(default)]
    port_range_max: Option<TextOrNumber>,
    #[serde(default)]
    remote_ip_prefix: Option<String>,
    #[serde(default)]
    remote_group_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

fn remote_group(id: Option<String>) -> Result<Option<SecurityGroupId>, CloudError> {
    id.map(|id| {
        id.parse()
            .map_err(|_| CloudError::BadRequest(format!("Remote security group {id} is not a security group id.")))
    })
    .transpose()
}

async fn create_rule(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "create_security_group_rule").map_err(ApiError::network)?;
    let request: RuleRequestBody<NewRule> = parse_json(&body).map_err(ApiError::network)?;
    let new = request.security_group_rule;
    let group: SecurityGroupId = parse_id("Security group", &new.security_group_id).map_err(ApiError::network)?;
    // The rule belongs to its group's project; naming another one is refused, not ignored.
    if let Some(named) = new.project_id.or(new.tenant_id) {
        let project = target_project(&s, &auth, Some(&named)).map_err(ApiError::network)?;
        let owner = security_groups::get(&s.app, asker(&auth), &group.to_string()).map_err(ApiError::network)?;
        if owner.project != project {
            return Err(ApiError::network(CloudError::BadRequest(format!(
                "Security group {group} is of project {}, not {named}: a rule belongs to its group's project.",
                owner.project
            ))));
        }
    }
    let number = |v: Option<TextOrNumber>, field| v.map(|v| v.number(field)).transpose();
    let rule = RuleRequest {
        direction: new.direction,
        ethertype: new.ethertype,
        protocol: new.protocol.map(TextOrNumber::text),
        port_min: number(new.port_range_min, "port_range_min").map_err(ApiError::network)?,
        port_max: number(new.port_range_max, "port_range_max").map_err(ApiError::network)?,
        remote_ip_prefix: new.remote_ip_prefix,
        remote_group: remote_group(new.remote_group_id).map_err(ApiError::network)?,
        description: new.description,
    };
    let (group, rule) =
        security_groups::add_rule(&s.app, asker(&auth), group, rule).await.map_err(ApiError::network)?;
    Ok((StatusCode::CREATED, Json(RuleBody { security_group_rule: rule_view(&group, &rule) })).into_response())
}

async fn delete_rule(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_security_group_rule").map_err(ApiError::network)?;
    let id: SecurityRuleId = parse_id("Security group rule", &id).map_err(ApiError::network)?;
    security_groups::delete_rule(&s.app, asker(&auth), id).await.map_err(ApiError::network)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------------------------ nova's shapes

/// Nova answers 400 where Neutron answers 409 (a name or rule that exists, a group in use, the default
/// group kept): the same refusals, in nova's status.
fn nova_error(e: impl Into<CloudError>) -> ApiError {
    match e.into() {
        CloudError::Conflict(message) => ApiError::compute(CloudError::BadRequest(message)),
        other => ApiError::compute(other),
    }
}

#[derive(Serialize)]
struct NovaRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
}

#[derive(Serialize)]
struct NovaGroupRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
}

/// Nova shows ingress rules only (its API has no egress); ports of "any" are null, ICMP's -1.
#[derive(Serialize)]
struct NovaRuleView {
    id: String,
    parent_group_id: String,
    ip_protocol: Option<&'static str>,
    from_port: Option<i32>,
    to_port: Option<i32>,
    ip_range: NovaRange,
    group: NovaGroupRef,
}

#[derive(Serialize)]
struct NovaGroupView {
    id: String,
    name: String,
    description: String,
    tenant_id: String,
    rules: Vec<NovaRuleView>,
}

fn nova_rule_view(
    group: &SecurityGroup,
    rule: &SecurityRule,
    names: &HashMap<SecurityGroupId, String>,
) -> NovaRuleView {
    let (from_port, to_port) = match rule.protocol {
        None => (None, None),
        Some(IpProtocol::Icmp) => {
            (Some(rule.port_min.map_or(-1, i32::from)), Some(rule.port_max.map_or(-1, i32::from)))
        }
        Some(_) => (Some(rule.port_min.map_or(1, i32::from)), Some(rule.port_max.map_or(65535, i32::from))),
    };
    let (cidr, group_ref) = match &rule.remote {
        Remote::Any => (Some("0.0.0.0/0".to_string()), NovaGroupRef { name: None, tenant_id: None }),
        Remote::Cidr(c) => (Some(c.to_string()), NovaGroupRef { name: None, tenant_id: None }),
        Remote::Group(id) => {
            (None, NovaGroupRef { name: names.get(id).cloned(), tenant_id: Some(group.project.to_string()) })
        }
    };
    NovaRuleView {
        id: rule.id.to_string(),
        parent_group_id: group.id.to_string(),
        ip_protocol: protocol_name(rule.protocol),
        from_port,
        to_port,
        ip_range: NovaRange { cidr },
        group: group_ref,
    }
}

fn nova_group_view(group: &SecurityGroup, names: &HashMap<SecurityGroupId, String>) -> NovaGroupView {
    NovaGroupView {
        id: group.id.to_string(),
        name: group.name.clone(),
        description: group.description.clone(),
        tenant_id: group.project.to_string(),
        rules: group
            .rules
            .iter()
            .filter(|r| r.direction == Direction::Ingress)
            .map(|r| nova_rule_view(group, r, names))
            .collect(),
    }
}

/// Names of the groups the rules of `groups` name as their remote.
fn remote_names(s: &AppState, groups: &[SecurityGroup]) -> Result<HashMap<SecurityGroupId, String>, ApiError> {
    let remotes = groups.iter().flat_map(|g| g.rules.iter()).filter_map(|r| match r.remote {
        Remote::Group(id) => Some(id),
        _ => None,
    });
    security_groups::names(&s.app, remotes).map_err(nova_error)
}

async fn nova_list_groups(
    State(s): State<AppState>,
    auth: Auth,
    Query(f): Query<HashMap<String, String>>,
) -> ApiResult {
    let all = match f.get("all_tenants").map(String::as_str) {
        None | Some("0" | "false" | "False") => false,
        Some(_) => {
            auth.require(Role::Admin, "os_compute_api:os-security-groups:list:all_tenants").map_err(nova_error)?;
            true
        }
    };
    let groups = if all {
        security_groups::list_all(&s.app, asker(&auth)).await
    } else {
        security_groups::list_for_project(&s.app, auth.ctx.project).await
    }
    .map_err(nova_error)?;
    let names = remote_names(&s, &groups)?;
    #[derive(Serialize)]
    struct Body {
        security_groups: Vec<NovaGroupView>,
    }
    Ok(Json(Body { security_groups: groups.iter().map(|g| nova_group_view(g, &names)).collect() }).into_response())
}

#[derive(Serialize)]
struct NovaGroupBody {
    security_group: NovaGroupView,
}

fn nova_group_answer(s: &AppState, group: &SecurityGroup) -> Result<NovaGroupBody, ApiError> {
    let names = remote_names(s, std::slice::from_ref(group))?;
    Ok(NovaGroupBody { security_group: nova_group_view(group, &names) })
}

async fn nova_show_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(nova_error)?;
    let group = security_groups::get(&s.app, asker(&auth), &id.to_string()).map_err(nova_error)?;
    Ok(Json(nova_group_answer(&s, &group)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NovaNewGroup {
    name: String,
    description: String,
}

async fn nova_create_group(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-security-groups:create").map_err(nova_error)?;
    let request: GroupRequest<NovaNewGroup> = parse_json(&body).map_err(nova_error)?;
    let NovaNewGroup { name, description } = request.security_group;
    let group = security_groups::create(&s.app, auth.ctx.project, name, description).await.map_err(nova_error)?;
    Ok(Json(nova_group_answer(&s, &group)?).into_response())
}

async fn nova_update_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-security-groups:update").map_err(nova_error)?;
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(nova_error)?;
    let request: GroupRequest<NovaNewGroup> = parse_json(&body).map_err(nova_error)?;
    let NovaNewGroup { name, description } = request.security_group;
    let group =
        security_groups::update(&s.app, asker(&auth), id, Some(name), Some(description)).await.map_err(nova_error)?;
    Ok(Json(nova_group_answer(&s, &group)?).into_response())
}

async fn nova_delete_group(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-security-groups:delete").map_err(nova_error)?;
    let id: SecurityGroupId = parse_id("Security group", &id).map_err(nova_error)?;
    security_groups::delete(&s.app, asker(&auth), id).await.map_err(nova_error)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NovaNewRule {
    parent_group_id: String,
    #[serde(default)]
    ip_protocol: Option<String>,
    #[serde(default)]
    from_port: Option<TextOrNumber>,
    #[serde(default)]
    to_port: Option<TextOrNumber>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
}

/// Nova's rule: ingress only; a protocol needs both ports; ICMP's -1 is "any type / code".
fn nova_rule_request(new: NovaNewRule) -> Result<(SecurityGroupId, RuleRequest), CloudError> {
    let group = parse_id("Security group", &new.parent_group_id)?;
    let from = new.from_port.map(|p| p.number("from_port")).transpose()?;
    let to = new.to_port.map(|p| p.number("to_port")).transpose()?;
    let protocol = new.ip_protocol.filter(|p| !p.is_empty());
    let icmp = protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("icmp"));
    let (port_min, port_max) = match (&protocol, from, to) {
        (None, None, None) => (None, None),
        (Some(_), Some(from), Some(to)) if icmp => ((from != -1).then_some(from), (to != -1).then_some(to)),
        (Some(_), Some(from), Some(to)) => (Some(from), Some(to)),
        _ => {
            return Err(CloudError::BadRequest(
                "ip_protocol, from_port and to_port are given together (or none of them).".into(),
            ));
        }
    };
    let cidr = new.cidr.filter(|c| !c.is_empty());
    let remote_ip_prefix = match (&cidr, &new.group_id) {
        (None, None) => Some("0.0.0.0/0".to_string()),
        _ => cidr,
    };
    Ok((
        group,
        RuleRequest {
            direction: Some("ingress".into()),
            protocol,
            port_min,
            port_max,
            remote_ip_prefix,
            remote_group: remote_group(new.group_id)?,
            ..RuleRequest::default()
        },
    ))
}

async fn nova_create_rule(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-security-group-rules:create").map_err(nova_error)?;
    let request: RuleRequestBody<NovaNewRule> = parse_json(&body).map_err(nova_error)?;
    let (group, rule) = nova_rule_request(request.security_group_rule).map_err(nova_error)?;
    let (group, rule) = security_groups::add_rule(&s.app, asker(&auth), group, rule).await.map_err(nova_error)?;
    let names = remote_names(&s, std::slice::from_ref(&group))?;
    #[derive(Serialize)]
    struct Body {
        security_group_rule: NovaRuleView,
    }
    Ok(Json(Body { security_group_rule: nova_rule_view(&group, &rule, &names) }).into_response())
}

async fn nova_delete_rule(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "os_compute_api:os-security-group-rules:delete").map_err(nova_error)?;
    let id: SecurityRuleId = parse_id("Security group rule", &id).map_err(nova_error)?;
    security_groups::delete_rule(&s.app, asker(&auth), id).await.map_err(nova_error)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn nova_server_groups(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let instance = servers::get(&s.app, &auth.ctx, &id).map_err(nova_error)?;
    let asker = Asker { project: instance.project, admin: auth.is_admin() };
    let groups = instance
        .security_groups
        .iter()
        .map(|g| security_groups::get(&s.app, asker, &g.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nova_error)?;
    let names = remote_names(&s, &groups)?;
    #[derive(Serialize)]
    struct Body {
        security_groups: Vec<NovaGroupView>,
    }
    Ok(Json(Body { security_groups: groups.iter().map(|g| nova_group_view(g, &names)).collect() }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_fields_are_the_views_fields() {
        let group = SecurityGroup::default_for(ProjectId::generate(), 0);
        super::super::network_api::assert_known_fields(group_view(&group), GROUP_FIELDS);
        let rule = group.rules.first().expect("a default group has rules");
        super::super::network_api::assert_known_fields(rule_view(&group, rule), RULE_FIELDS);
    }
}
