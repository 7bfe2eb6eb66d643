//! Compute v2.1 `os-keypairs`: the caller's own key pairs (create or import, list, show, delete); from 2.2
//! with their `type` (always `ssh`) and the 201 / 204 answers, from 2.10 an admin's for any user
//! (`user_id`), from 2.35 a list by pages.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::records::KeyPair;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::microversion::Microversion;
use super::views::Link;
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::{identity, key_pairs};
use nimbus_protocol::ids::UserId;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/compute/v2.1/os-keypairs", get(list).post(create))
        .route("/compute/v2.1/os-keypairs/{name}", get(show).delete(delete))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    keypair: NewKeyPair,
}

/// `type` is 2.2's and `user_id` 2.10's: asked for at an earlier microversion, they are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyPair {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

/// The key type nimbus keeps (2.2's `type`): SSH keys only.
const SSH: &str = "ssh";

#[derive(Serialize)]
struct Created<'a> {
    fingerprint: &'a str,
    name: &'a str,
    public_key: &'a str,
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

fn bad(message: String) -> ApiError {
    ApiError::compute(CloudError::BadRequest(message))
}

/// A field of microversion `2.minor`, refused at an earlier one.
fn since(v: Microversion, minor: u16, field: &str) -> Result<(), ApiError> {
    if v.has(minor) {
        Ok(())
    } else {
        Err(bad(format!("{field} is a field of microversion 2.{minor}; this request is at {v}.")))
    }
}

/// Whose key pairs a request is about: the caller's, or (2.10, admin) the user it names.
fn owner(s: &AppState, auth: &Auth, v: Microversion, named: Option<&str>) -> Result<UserId, ApiError> {
    let Some(named) = named else { return Ok(auth.ctx.user) };
    since(v, 10, "user_id")?;
    if !auth.is_admin() && named != auth.ctx.user.to_string() {
        return Err(ApiError::compute(CloudError::Forbidden(
            "Only an admin may manage another user's key pairs.".into(),
        )));
    }
    let user = identity::find_user_by_id_or_name(&s.app, named).map_err(ApiError::compute)?;
    user.map(|u| u.id)
        .ok_or_else(|| ApiError::compute(CloudError::NotFound(format!("User {named} could not be found."))))
}

/// The query of a list, show or delete: 2.10's `user_id`, and a list's page (2.35's `limit` and `marker`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    user_id: Option<String>,
    limit: Option<usize>,
    marker: Option<String>,
}

fn owner_query(query: Option<&str>) -> Result<OwnerQuery, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| bad(format!("Invalid query for key pairs ({e}); it may name a user_id (2.10).")))
}

async fn create(State(s): State<AppState>, auth: Auth, v: Microversion, body: Bytes) -> ApiResult {
    let request: CreateBody = parse_json(&body).map_err(ApiError::compute)?;
    let NewKeyPair { name, public_key, kind, user_id } = request.keypair;
    if let Some(kind) = &kind {
        since(v, 2, "type")?;
        if kind != SSH {
            return Err(bad(format!("Key pair type {kind:?} is not supported: nimbus keeps SSH keys (\"ssh\").")));
        }
    }
    let user = owner(&s, &auth, v, user_id.as_deref())?;
    let created =
        key_pairs::create(&s.app, user, auth.ctx.project, name, public_key).await.map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        keypair: Created<'a>,
    }
    let pair = &created.pair;
    let keypair = Created {
        fingerprint: &pair.fingerprint,
        name: &pair.name,
        public_key: &pair.public_key,
        user_id: pair.user.to_string(),
        private_key: created.private_key.as_deref(),
        kind: v.has(2).then_some(SSH),
    };
    // 2.1 answers 200, 2.2 201.
    let status = if v.has(2) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Body { keypair })).into_response())
}

async fn list(State(s): State<AppState>, auth: Auth, v: Microversion, RawQuery(q): RawQuery) -> ApiResult {
    let query = owner_query(q.as_deref())?;
    let user = owner(&s, &auth, v, query.user_id.as_deref())?;
    let mut pairs = key_pairs::list(&s.app, user).map_err(ApiError::compute)?;
    if query.limit.is_some() || query.marker.is_some() {
        since(v, 35, "limit and marker")?;
    }
    // By name, from just after the marker's.
    if let Some(marker) = &query.marker {
        let at =
            pairs.iter().position(|p| p.name == *marker).ok_or_else(|| bad(format!("marker [{marker}] not found")))?;
        pairs.drain(..=at);
    }
    let mut keypairs_links = Vec::new();
    if let Some(limit) = query.limit.filter(|l| pairs.len() > *l) {
        pairs.truncate(limit);
        let last = pairs.last().map(|p| p.name.clone()).unwrap_or_default();
        let mut next = vec![("limit", limit.to_string()), ("marker", last)];
        next.extend(query.user_id.clone().map(|u| ("user_id", u)));
        let next = serde_urlencoded::to_string(next).unwrap_or_default();
        keypairs_links.push(Link { rel: "next", href: format!("{}/compute/v2.1/os-keypairs?{next}", s.base_url) });
    }
    #[derive(Serialize)]
    struct Brief<'a> {
        fingerprint: &'a str,
        name: &'a str,
        public_key: &'a str,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        kind: Option<&'static str>,
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        keypair: Brief<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        keypairs: Vec<Entry<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        keypairs_links: Vec<Link>,
    }
    let keypairs = pairs
        .iter()
        .map(|p| Entry {
            keypair: Brief {
                fingerprint: &p.fingerprint,
                name: &p.name,
                public_key: &p.public_key,
                kind: v.has(2).then_some(SSH),
            },
        })
        .collect();
    Ok(Json(Body { keypairs, keypairs_links }).into_response())
}

#[derive(Serialize)]
struct Detail<'a> {
    created_at: String,
    deleted: bool,
    deleted_at: Option<String>,
    fingerprint: &'a str,
    id: u32,
    name: &'a str,
    public_key: &'a str,
    updated_at: Option<String>,
    user_id: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

fn detail(pair: &KeyPair, v: Microversion) -> Detail<'_> {
    Detail {
        created_at: iso8601(pair.created_at),
        deleted: false,
        deleted_at: None,
        fingerprint: &pair.fingerprint,
        id: pair.number,
        name: &pair.name,
        public_key: &pair.public_key,
        updated_at: None,
        user_id: pair.user.to_string(),
        kind: v.has(2).then_some(SSH),
    }
}

async fn show(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let user = owner(&s, &auth, v, owner_query(q.as_deref())?.user_id.as_deref())?;
    let pair = key_pairs::get(&s.app, user, &name).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        keypair: Detail<'a>,
    }
    Ok(Json(Body { keypair: detail(&pair, v) }).into_response())
}

async fn delete(
    State(s): State<AppState>,
    auth: Auth,
    v: Microversion,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let user = owner(&s, &auth, v, owner_query(q.as_deref())?.user_id.as_deref())?;
    key_pairs::delete(&s.app, user, name).await.map_err(ApiError::compute)?;
    // 2.1 answers 202, 2.2 204.
    Ok(if v.has(2) { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED }.into_response())
}
