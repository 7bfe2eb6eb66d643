//! Compute v2.1 `os-keypairs`: the caller's own key pairs (create or import, list, show, delete), in the
//! shapes of microversion 2.1.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::records::KeyPair;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, iso8601};
use crate::app::key_pairs;

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

/// `type` (2.2) and `user_id` (2.10) are later microversions': at 2.1 they are refused as unknown fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyPair {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
}

#[derive(Serialize)]
struct Created<'a> {
    fingerprint: &'a str,
    name: &'a str,
    public_key: &'a str,
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<&'a str>,
}

async fn create(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    let request: CreateBody = parse_json(&body).map_err(ApiError::compute)?;
    let NewKeyPair { name, public_key } = request.keypair;
    let created = key_pairs::create(&s.app, auth.ctx.user, auth.ctx.project, name, public_key)
        .await
        .map_err(ApiError::compute)?;
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
    };
    // 2.1 answers 200 (201 from 2.2 on).
    Ok(Json(Body { keypair }).into_response())
}

async fn list(State(s): State<AppState>, auth: Auth) -> ApiResult {
    let pairs = key_pairs::list(&s.app, auth.ctx.user).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Brief<'a> {
        fingerprint: &'a str,
        name: &'a str,
        public_key: &'a str,
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        keypair: Brief<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        keypairs: Vec<Entry<'a>>,
    }
    let keypairs = pairs
        .iter()
        .map(|p| Entry { keypair: Brief { fingerprint: &p.fingerprint, name: &p.name, public_key: &p.public_key } })
        .collect();
    Ok(Json(Body { keypairs }).into_response())
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
}

fn detail(pair: &KeyPair) -> Detail<'_> {
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
    }
}

async fn show(State(s): State<AppState>, auth: Auth, Path(name): Path<String>) -> ApiResult {
    let pair = key_pairs::get(&s.app, auth.ctx.user, &name).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct Body<'a> {
        keypair: Detail<'a>,
    }
    Ok(Json(Body { keypair: detail(&pair) }).into_response())
}

async fn delete(State(s): State<AppState>, auth: Auth, Path(name): Path<String>) -> ApiResult {
    key_pairs::delete(&s.app, auth.ctx.user, name).await.map_err(ApiError::compute)?;
    // 2.1 answers 202 (204 from 2.2 on).
    Ok(StatusCode::ACCEPTED.into_response())
}
