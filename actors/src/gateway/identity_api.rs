//! Identity v3: version documents, password tokens with a service catalog, and the admin endpoints for
//! projects, users and role assignments.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use nimbus_storage::Reads;
use nimbus_storage::ids::UserId;
use nimbus_storage::records::{NetworkMode, Project, Role, User};
use nimbus_storage::schema::{PROJECTS, USERS};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, iso8601};
use crate::CloudError;
use crate::identity::{self, AuthContext};

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route("/identity/v3/auth/tokens", post(issue_token).get(check_token))
        .route("/identity/v3/projects", get(list_projects).post(create_project))
        .route("/identity/v3/users", get(list_users).post(create_user))
        .route("/identity/v3/roles", get(list_roles))
        .route("/identity/v3/projects/{project}/users/{user}/roles/{role}", put(grant_role))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(State(s): State<AppState>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": {"values": [version_doc(&s.base_url)]}}))).into_response()
}

async fn version(State(s): State<AppState>) -> Response {
    Json(json!({"version": version_doc(&s.base_url)})).into_response()
}

const DOMAIN: fn() -> Value = || json!({"id": "default", "name": "Default"});

fn catalog(base: &str) -> Value {
    let entry = |kind: &str, name: &str, path: &str| {
        let url = format!("{base}{path}");
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|interface| {
                json!({"id": format!("{name}-{interface}"), "interface": interface, "region": "RegionOne",
                       "region_id": "RegionOne", "url": url})
            })
            .collect();
        json!({"id": name, "type": kind, "name": name, "endpoints": endpoints})
    };
    json!([
        entry("identity", "keystone", "/identity"),
        entry("compute", "nova", "/compute/v2.1"),
        entry("image", "glance", "/image"),
        entry("network", "neutron", "/network"),
    ])
}

fn token_body(ctx: &AuthContext, base: &str) -> Value {
    json!({"token": {
        "methods": ["password"],
        "issued_at": iso8601(ctx.issued_at),
        "expires_at": iso8601(ctx.expires_at),
        "audit_ids": [],
        "user": {"id": ctx.user.to_string(), "name": ctx.user_name, "domain": DOMAIN(), "password_expires_at": null},
        "project": {"id": ctx.project.to_string(), "name": ctx.project_name, "domain": DOMAIN()},
        "roles": ctx.roles.iter().map(|r| json!({"id": r.name(), "name": r.name()})).collect::<Vec<_>>(),
        "catalog": catalog(base),
    }})
}

#[derive(Deserialize)]
struct TokenRequest {
    auth: AuthSection,
}
#[derive(Deserialize)]
struct AuthSection {
    identity: IdentitySection,
    scope: Option<ScopeSection>,
}
#[derive(Deserialize)]
struct IdentitySection {
    methods: Vec<String>,
    password: Option<PasswordSection>,
}
#[derive(Deserialize)]
struct PasswordSection {
    user: UserRef,
}
#[derive(Deserialize)]
struct UserRef {
    name: Option<String>,
    id: Option<String>,
    password: String,
}
#[derive(Deserialize)]
struct ScopeSection {
    project: Option<NameOrId>,
}
#[derive(Deserialize)]
struct NameOrId {
    name: Option<String>,
    id: Option<String>,
}

async fn issue_token(State(s): State<AppState>, body: Bytes) -> ApiResult {
    let request: TokenRequest = parse_json(&body).map_err(ApiError::identity)?;
    let identity = request.auth.identity;
    if !identity.methods.iter().any(|m| m == "password") {
        return Err(ApiError::identity(CloudError::Unauthorized(
            "nimbus supports only the password authentication method.".into(),
        )));
    }
    let password = identity
        .password
        .ok_or_else(|| ApiError::identity(CloudError::BadRequest("auth.identity.password is required.".into())))?;
    let store = &s.ctx.store;
    let user_name = match (password.user.name, password.user.id) {
        (Some(name), _) => name,
        (None, Some(id)) => {
            let user = id
                .parse::<UserId>()
                .ok()
                .map(|id| store.read(|r| r.get(&USERS, &id)))
                .transpose()
                .map_err(|e| ApiError::identity(e.into()))?;
            user.flatten().map(|u| u.name).unwrap_or_default()
        }
        (None, None) => {
            return Err(ApiError::identity(CloudError::BadRequest("A user name or id is required.".into())));
        }
    };
    let project = match request.auth.scope.and_then(|s| s.project) {
        Some(NameOrId { name: Some(name), .. }) => name,
        Some(NameOrId { id: Some(id), .. }) => id,
        _ => {
            // Unscoped request: scope to the user's default project.
            let user = identity::find_user(store, &user_name).map_err(|e| ApiError::identity(e.into()))?;
            user.and_then(|u| u.default_project).map(|p| p.to_string()).unwrap_or_default()
        }
    };
    let (secret, ctx) =
        identity::password_login(store, &user_name, &password.user.password, &project, s.ctx.timing.token_ttl)
            .await
            .map_err(ApiError::identity)?;
    let mut response = (StatusCode::CREATED, Json(token_body(&ctx, &s.base_url))).into_response();
    response.headers_mut().insert("x-subject-token", HeaderValue::from_str(&secret).expect("hex token"));
    Ok(response)
}

/// `GET /auth/tokens`: validates the token in `X-Subject-Token` (for services and for scripts).
async fn check_token(State(s): State<AppState>, _caller: Auth, headers: axum::http::HeaderMap) -> ApiResult {
    let subject = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::identity(CloudError::BadRequest("The X-Subject-Token header is required.".into())))?;
    let ctx = identity::validate(&s.ctx.store, subject)
        .map_err(|_| ApiError::identity(CloudError::NotFound("Could not find token.".into())))?;
    Ok(Json(token_body(&ctx, &s.base_url)).into_response())
}

fn project_view(p: &Project, base: &str) -> Value {
    json!({"id": p.id.to_string(), "name": p.name, "description": p.description, "enabled": p.enabled,
           "network_mode": p.network_mode.name(),
           "domain_id": "default", "parent_id": "default", "is_domain": false, "tags": [],
           "links": {"self": format!("{base}/identity/v3/projects/{}", p.id)}})
}

fn user_view(u: &User, base: &str) -> Value {
    json!({"id": u.id.to_string(), "name": u.name, "enabled": u.enabled, "domain_id": "default",
           "default_project_id": u.default_project.map(|p| p.to_string()), "password_expires_at": null,
           "links": {"self": format!("{base}/identity/v3/users/{}", u.id)}})
}

fn admin_only(auth: &Auth, action: &str) -> Result<(), ApiError> {
    auth.require(Role::Admin, action).map_err(ApiError::identity)
}

async fn list_projects(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_projects")?;
    let projects = s.ctx.store.read(|r| r.scan(&PROJECTS)).map_err(|e| ApiError::identity(e.into()))?;
    let views: Vec<Value> = projects.iter().map(|(_, p)| project_view(p, &s.base_url)).collect();
    Ok(Json(json!({"projects": views, "links": {"self": null, "next": null, "previous": null}})).into_response())
}

#[derive(Deserialize)]
struct CreateProject {
    project: NewProject,
}
#[derive(Deserialize)]
struct NewProject {
    name: String,
    #[serde(default)]
    description: String,
    /// A nimbus extension (Keystone keeps extra project attributes): `flat` (default), `flat_dhcp` or `vlan`.
    network_mode: Option<String>,
}

async fn create_project(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin_only(&auth, "identity:create_project")?;
    let request: CreateProject = parse_json(&body).map_err(ApiError::identity)?;
    let mode = match request.project.network_mode.as_deref() {
        None => NetworkMode::Flat,
        Some(name) => NetworkMode::from_name(name).ok_or_else(|| {
            ApiError::identity(CloudError::BadRequest(format!(
                "Unknown network_mode {name:?}; use flat, flat_dhcp or vlan."
            )))
        })?,
    };
    let project = identity::create_project(&s.ctx.store, &request.project.name, &request.project.description, mode)
        .await
        .map_err(ApiError::identity)?;
    Ok((StatusCode::CREATED, Json(json!({"project": project_view(&project, &s.base_url)}))).into_response())
}

async fn list_users(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_users")?;
    let users = s.ctx.store.read(|r| r.scan(&USERS)).map_err(|e| ApiError::identity(e.into()))?;
    let views: Vec<Value> = users.iter().map(|(_, u)| user_view(u, &s.base_url)).collect();
    Ok(Json(json!({"users": views, "links": {"self": null, "next": null, "previous": null}})).into_response())
}

#[derive(Deserialize)]
struct CreateUser {
    user: NewUser,
}
#[derive(Deserialize)]
struct NewUser {
    name: String,
    password: String,
    default_project_id: Option<String>,
}

async fn create_user(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin_only(&auth, "identity:create_user")?;
    let request: CreateUser = parse_json(&body).map_err(ApiError::identity)?;
    let default_project = match request.user.default_project_id {
        Some(p) => Some(
            identity::find_project(&s.ctx.store, &p)
                .map_err(|e| ApiError::identity(e.into()))?
                .ok_or_else(|| ApiError::identity(CloudError::BadRequest(format!("Project {p} could not be found."))))?
                .id,
        ),
        None => None,
    };
    let user = identity::create_user(&s.ctx.store, &request.user.name, &request.user.password, default_project)
        .await
        .map_err(ApiError::identity)?;
    Ok((StatusCode::CREATED, Json(json!({"user": user_view(&user, &s.base_url)}))).into_response())
}

async fn list_roles(auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_roles")?;
    let roles: Vec<Value> =
        Role::ALL.iter().map(|r| json!({"id": r.name(), "name": r.name(), "domain_id": null})).collect();
    Ok(Json(json!({"roles": roles})).into_response())
}

async fn grant_role(
    State(s): State<AppState>,
    auth: Auth,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult {
    admin_only(&auth, "identity:create_grant")?;
    let role = Role::from_name(&role).ok_or_else(|| ApiError::identity(CloudError::not_found("Role", &role)))?;
    let store = &s.ctx.store;
    let project = identity::find_project(store, &project)
        .map_err(|e| ApiError::identity(e.into()))?
        .ok_or_else(|| ApiError::identity(CloudError::not_found("Project", &project)))?;
    let user_id = match user.parse::<UserId>() {
        Ok(id) => Some(id),
        Err(_) => identity::find_user(store, &user).map_err(|e| ApiError::identity(e.into()))?.map(|u| u.id),
    };
    let user_id = user_id.ok_or_else(|| ApiError::identity(CloudError::not_found("User", &user)))?;
    identity::grant(store, user_id, project.id, role).await.map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
