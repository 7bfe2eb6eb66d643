//! Identity v3: version documents, password tokens with a service catalog, and the admin endpoints for
//! projects, users and role assignments.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use nimbus_storage::records::{NetworkMode, Project, Role, User};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::views::{MediaType, VersionDoc};
use super::{ApiError, AppState, ClientAddr, iso8601};
use crate::app::error::CloudError;
use crate::app::identity::{self, AuthContext, LoginUser};

type ApiResult = Result<Response, ApiError>;

/// `max_login_body`: the body limit of the token route, which anyone may call without a token.
pub fn routes(max_login_body: usize) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route(
            "/identity/v3/auth/tokens",
            post(issue_token).layer(DefaultBodyLimit::max(max_login_body)).get(check_token).delete(revoke_token),
        )
        .route("/identity/v3/projects", get(list_projects).post(create_project))
        .route("/identity/v3/users", get(list_users).post(create_user))
        .route("/identity/v3/users/{user}", get(show_user).patch(update_user).delete(delete_user))
        .route("/identity/v3/users/{user}/password", post(change_password))
        .route("/identity/v3/roles", get(list_roles))
        .route("/identity/v3/projects/{project}/users/{user}/roles/{role}", put(grant_role).delete(revoke_role))
}

fn version_doc(base: &str) -> VersionDoc {
    VersionDoc {
        updated: Some("2020-04-07T00:00:00Z"),
        media_types: Some([MediaType { base: "application/json", kind: "application/vnd.openstack.identity-v3+json" }]),
        ..VersionDoc::plain("v3.14", "stable", format!("{base}/identity/v3/"))
    }
}

#[derive(Serialize)]
struct Versions {
    values: [VersionDoc; 1],
}

async fn versions(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        versions: Versions,
    }
    let body = Body { versions: Versions { values: [version_doc(&s.base_url)] } };
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

async fn version(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        version: VersionDoc,
    }
    Json(Body { version: version_doc(&s.base_url) }).into_response()
}

#[derive(Serialize)]
struct Domain {
    id: &'static str,
    name: &'static str,
}

const DOMAIN: Domain = Domain { id: "default", name: "Default" };

#[derive(Serialize)]
struct Endpoint {
    id: String,
    interface: &'static str,
    region: &'static str,
    region_id: &'static str,
    url: String,
}

#[derive(Serialize)]
struct CatalogEntry {
    id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    endpoints: Vec<Endpoint>,
}

fn catalog(base: &str) -> Vec<CatalogEntry> {
    let entry = |kind, name, path| {
        let url = format!("{base}{path}");
        let endpoints = ["public", "internal", "admin"]
            .into_iter()
            .map(|interface| Endpoint {
                id: format!("{name}-{interface}"),
                interface,
                region: "RegionOne",
                region_id: "RegionOne",
                url: url.clone(),
            })
            .collect();
        CatalogEntry { id: name, kind, name, endpoints }
    };
    vec![
        entry("identity", "keystone", "/identity"),
        entry("compute", "nova", "/compute/v2.1"),
        entry("image", "glance", "/image"),
        entry("network", "neutron", "/network"),
    ]
}

#[derive(Serialize)]
struct TokenUser<'a> {
    id: String,
    name: &'a str,
    domain: Domain,
    password_expires_at: Option<String>,
}

#[derive(Serialize)]
struct TokenProject<'a> {
    id: String,
    name: &'a str,
    domain: Domain,
}

#[derive(Serialize)]
struct RoleRef {
    id: &'static str,
    name: &'static str,
}

#[derive(Serialize)]
struct TokenView<'a> {
    methods: [&'static str; 1],
    issued_at: String,
    expires_at: String,
    audit_ids: [String; 0],
    user: TokenUser<'a>,
    project: TokenProject<'a>,
    roles: Vec<RoleRef>,
    catalog: Vec<CatalogEntry>,
}

#[derive(Serialize)]
struct TokenBody<'a> {
    token: TokenView<'a>,
}

fn token_body<'a>(ctx: &'a AuthContext, base: &str) -> TokenBody<'a> {
    TokenBody {
        token: TokenView {
            methods: ["password"],
            issued_at: iso8601(ctx.issued_at),
            expires_at: iso8601(ctx.expires_at),
            audit_ids: [],
            user: TokenUser {
                id: ctx.user.to_string(),
                name: &ctx.user_name,
                domain: DOMAIN,
                password_expires_at: None,
            },
            project: TokenProject { id: ctx.project.to_string(), name: &ctx.project_name, domain: DOMAIN },
            roles: ctx.roles.iter().map(|r| RoleRef { id: r.name(), name: r.name() }).collect(),
            catalog: catalog(base),
        },
    }
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

async fn issue_token(State(s): State<AppState>, client: Option<Extension<ClientAddr>>, body: Bytes) -> ApiResult {
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
    let user = match (password.user.name, password.user.id) {
        (Some(name), _) => LoginUser::Name(name),
        (None, Some(id)) => LoginUser::Id(id),
        (None, None) => {
            return Err(ApiError::identity(CloudError::BadRequest("A user name or id is required.".into())));
        }
    };
    // No scope: the user's default project.
    let project = request.auth.scope.and_then(|s| s.project).and_then(|p| p.name.or(p.id));
    let (secret, ctx) = identity::login(&s.app, user, &password.user.password, project, source_of(client))
        .await
        .map_err(ApiError::identity)?;
    let mut response = (StatusCode::CREATED, Json(token_body(&ctx, &s.base_url))).into_response();
    response.headers_mut().insert("x-subject-token", HeaderValue::from_str(&secret).expect("hex token"));
    Ok(response)
}

fn subject_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::identity(CloudError::BadRequest("The X-Subject-Token header is required.".into())))
}

/// `DELETE /auth/tokens`: revokes the token in `X-Subject-Token` (`openstack token revoke`); it fails at once,
/// at every request.
async fn revoke_token(State(s): State<AppState>, caller: Auth, headers: axum::http::HeaderMap) -> ApiResult {
    let subject = subject_token(&headers)?;
    identity::revoke_token(&s.app, &caller.ctx, subject).await.map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The address a request came from (unspecified if the server did not say, as in a router test).
fn source_of(client: Option<Extension<ClientAddr>>) -> IpAddr {
    client.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ClientAddr(addr))| addr.ip())
}

/// `GET /auth/tokens`: validates the token in `X-Subject-Token` (for services and for scripts). Another
/// user's token only an admin validates (Keystone's `identity:validate_token`: the token's own user, or an
/// admin); a token that is not valid is a 404 for anyone, as in Keystone.
async fn check_token(State(s): State<AppState>, caller: Auth, headers: axum::http::HeaderMap) -> ApiResult {
    let subject = subject_token(&headers)?;
    let ctx = identity::authenticate(&s.app, subject)
        .map_err(|_| ApiError::identity(CloudError::NotFound("Could not find token.".into())))?;
    if ctx.user != caller.ctx.user {
        caller.require(Role::Admin, "identity:validate_token").map_err(ApiError::identity)?;
    }
    Ok(Json(token_body(&ctx, &s.base_url)).into_response())
}

#[derive(Serialize)]
struct SelfLink {
    #[serde(rename = "self")]
    link: String,
}

#[derive(Serialize)]
struct ProjectView<'a> {
    id: String,
    name: &'a str,
    description: &'a str,
    enabled: bool,
    network_mode: &'static str,
    domain_id: &'static str,
    parent_id: &'static str,
    is_domain: bool,
    tags: [String; 0],
    links: SelfLink,
}

fn project_view<'a>(p: &'a Project, base: &str) -> ProjectView<'a> {
    ProjectView {
        id: p.id.to_string(),
        name: &p.name,
        description: &p.description,
        enabled: p.enabled,
        network_mode: p.network_mode.name(),
        domain_id: "default",
        parent_id: "default",
        is_domain: false,
        tags: [],
        links: SelfLink { link: format!("{base}/identity/v3/projects/{}", p.id) },
    }
}

#[derive(Serialize)]
struct UserView<'a> {
    id: String,
    name: &'a str,
    enabled: bool,
    domain_id: &'static str,
    default_project_id: Option<String>,
    password_expires_at: Option<String>,
    links: SelfLink,
}

fn user_view<'a>(u: &'a User, base: &str) -> UserView<'a> {
    UserView {
        id: u.id.to_string(),
        name: &u.name,
        enabled: u.enabled,
        domain_id: "default",
        default_project_id: u.default_project.map(|p| p.to_string()),
        password_expires_at: None,
        links: SelfLink { link: format!("{base}/identity/v3/users/{}", u.id) },
    }
}

/// The paging links of a Keystone list (nimbus lists everything in one page).
#[derive(Serialize, Default)]
struct ListLinks {
    #[serde(rename = "self")]
    link: Option<String>,
    next: Option<String>,
    previous: Option<String>,
}

fn admin_only(auth: &Auth, action: &str) -> Result<(), ApiError> {
    auth.require(Role::Admin, action).map_err(ApiError::identity)
}

async fn list_projects(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_projects")?;
    let projects = identity::list_projects(&s.app).map_err(ApiError::identity)?;
    #[derive(Serialize)]
    struct Body<'a> {
        projects: Vec<ProjectView<'a>>,
        links: ListLinks,
    }
    let body =
        Body { projects: projects.iter().map(|p| project_view(p, &s.base_url)).collect(), links: ListLinks::default() };
    Ok(Json(body).into_response())
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

#[derive(Serialize)]
struct ProjectBody<'a> {
    project: ProjectView<'a>,
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
    let project = identity::create_project(&s.app, &request.project.name, &request.project.description, mode)
        .await
        .map_err(ApiError::identity)?;
    Ok((StatusCode::CREATED, Json(ProjectBody { project: project_view(&project, &s.base_url) })).into_response())
}

async fn list_users(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_users")?;
    let users = identity::list_users(&s.app).map_err(ApiError::identity)?;
    #[derive(Serialize)]
    struct Body<'a> {
        users: Vec<UserView<'a>>,
        links: ListLinks,
    }
    let body = Body { users: users.iter().map(|u| user_view(u, &s.base_url)).collect(), links: ListLinks::default() };
    Ok(Json(body).into_response())
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
        Some(p) => Some(identity::named_project(&s.app, &p).map_err(ApiError::identity)?),
        None => None,
    };
    let user = identity::create_user(&s.app, &request.user.name, &request.user.password, default_project)
        .await
        .map_err(ApiError::identity)?;
    Ok((StatusCode::CREATED, Json(UserBody { user: user_view(&user, &s.base_url) })).into_response())
}

#[derive(Serialize)]
struct UserBody<'a> {
    user: UserView<'a>,
}

/// The user a path names, by id or name.
fn path_user(s: &AppState, user: &str) -> Result<User, ApiError> {
    identity::find_user_by_id_or_name(&s.app, user)
        .map_err(ApiError::identity)?
        .ok_or_else(|| ApiError::identity(CloudError::not_found("User", user)))
}

/// The user a path names, for a caller who may act only on themselves unless admin: anyone else is "not
/// found", as a name that does not exist, so the answer does not reveal which user names exist.
fn own_or_admin(s: &AppState, auth: &Auth, user: &str) -> Result<User, ApiError> {
    let found = path_user(s, user)?;
    if found.id != auth.ctx.user && !auth.is_admin() {
        return Err(ApiError::identity(CloudError::not_found("User", user)));
    }
    Ok(found)
}

async fn show_user(State(s): State<AppState>, auth: Auth, Path(user): Path<String>) -> ApiResult {
    let found = own_or_admin(&s, &auth, &user)?;
    Ok(Json(UserBody { user: user_view(&found, &s.base_url) }).into_response())
}

#[derive(Deserialize)]
struct UpdateUser {
    user: UserUpdate,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    name: Option<String>,
    password: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    default_project_id: Option<Option<String>>,
    /// Clients send these; nimbus has one domain and no other user attributes.
    domain_id: Option<String>,
    description: Option<String>,
    email: Option<String>,
}

/// A field that may be given as `null` (to clear it) or left out (to keep it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /users/{id}` (admin; `openstack user set`): a new password or `enabled: false` revokes every token
/// of the user at once.
async fn update_user(State(s): State<AppState>, auth: Auth, Path(user): Path<String>, body: Bytes) -> ApiResult {
    admin_only(&auth, "identity:update_user")?;
    let found = path_user(&s, &user)?;
    let request: UpdateUser = parse_json(&body).map_err(ApiError::identity)?;
    let u = request.user;
    let refused =
        [("domain_id", u.domain_id.filter(|d| d != "default")), ("description", u.description), ("email", u.email)];
    if let Some((field, _)) = refused.iter().find(|(_, v)| v.is_some()) {
        return Err(ApiError::identity(CloudError::BadRequest(format!(
            "nimbus does not keep a user's {field}; leave it out."
        ))));
    }
    let default_project = match u.default_project_id {
        Some(Some(p)) => Some(Some(identity::named_project(&s.app, &p).map_err(ApiError::identity)?)),
        Some(None) => Some(None),
        None => None,
    };
    let changes = identity::UserChanges { name: u.name, password: u.password, enabled: u.enabled, default_project };
    let updated = identity::update_user(&s.app, found.id, changes).await.map_err(ApiError::identity)?;
    Ok(Json(UserBody { user: user_view(&updated, &s.base_url) }).into_response())
}

/// `DELETE /users/{id}` (admin): the user's tokens stop working at once.
async fn delete_user(State(s): State<AppState>, auth: Auth, Path(user): Path<String>) -> ApiResult {
    admin_only(&auth, "identity:delete_user")?;
    let found = path_user(&s, &user)?;
    identity::delete_user(&s.app, found.id).await.map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ChangePassword {
    user: PasswordChange,
}
#[derive(Deserialize)]
struct PasswordChange {
    password: String,
    original_password: String,
}

/// `POST /users/{id}/password` (`openstack user password set`): the user's own, proving the old one.
async fn change_password(
    State(s): State<AppState>,
    auth: Auth,
    client: Option<Extension<ClientAddr>>,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: ChangePassword = parse_json(&body).map_err(ApiError::identity)?;
    let found = path_user(&s, &user)?;
    let (original, new) = (&request.user.original_password, &request.user.password);
    identity::change_password(&s.app, &auth.ctx, found.id, original, new, source_of(client))
        .await
        .map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_roles(auth: Auth) -> ApiResult {
    admin_only(&auth, "identity:list_roles")?;
    #[derive(Serialize)]
    struct RoleView {
        id: &'static str,
        name: &'static str,
        domain_id: Option<String>,
    }
    #[derive(Serialize)]
    struct Body {
        roles: Vec<RoleView>,
    }
    let roles = Role::ALL.iter().map(|r| RoleView { id: r.name(), name: r.name(), domain_id: None }).collect();
    Ok(Json(Body { roles }).into_response())
}

/// The role, project and user a grant path names.
fn grant_path(
    s: &AppState,
    (project, user, role): (String, String, String),
) -> Result<(Role, Project, User), ApiError> {
    let role = Role::from_name(&role).ok_or_else(|| ApiError::identity(CloudError::not_found("Role", &role)))?;
    let project = identity::find_project(&s.app, &project)
        .map_err(ApiError::identity)?
        .ok_or_else(|| ApiError::identity(CloudError::not_found("Project", &project)))?;
    Ok((role, project, path_user(s, &user)?))
}

async fn grant_role(State(s): State<AppState>, auth: Auth, Path(path): Path<(String, String, String)>) -> ApiResult {
    admin_only(&auth, "identity:create_grant")?;
    let (role, project, user) = grant_path(&s, path)?;
    identity::grant(&s.app, user.id, project.id, role).await.map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE` of a grant (`openstack role remove`): tokens lose the role at their next request.
async fn revoke_role(State(s): State<AppState>, auth: Auth, Path(path): Path<(String, String, String)>) -> ApiResult {
    admin_only(&auth, "identity:revoke_grant")?;
    let (role, project, user) = grant_path(&s, path)?;
    identity::revoke_role(&s.app, user.id, project.id, role).await.map_err(ApiError::identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
