//! Image v2: the version document, image records (list with the filters clients send, show), and
//! registration of image records by an admin. nimbus keeps image metadata only; no image data is stored.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::ids::ImageId;
use nimbus_storage::records::{Image, Role, now_ms};
use nimbus_storage::schema::IMAGES;
use nimbus_storage::{Reads, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, iso8601};
use crate::CloudError;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(list_images).post(create_image))
        .route("/image/v2/images/{id}", get(show_image))
}

async fn versions(State(s): State<AppState>) -> Response {
    let v = json!({"id": "v2.9", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{}/image/v2/", s.base_url)}]});
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": [v]}))).into_response()
}

fn image_view(i: &Image) -> Value {
    let id = i.id.to_string();
    json!({
        "id": id, "name": i.name, "status": "active",
        "visibility": if i.public { "public" } else { "private" },
        "protected": false, "os_hidden": false, "checksum": null, "os_hash_algo": null, "os_hash_value": null,
        "owner": i.owner.map(|o| o.to_string()), "size": i.size_bytes, "virtual_size": null,
        "min_ram": i.min_ram_mb, "min_disk": i.min_disk_gb,
        "disk_format": i.disk_format, "container_format": i.container_format,
        "created_at": iso8601(i.created_at), "updated_at": iso8601(i.created_at), "tags": [],
        "self": format!("/v2/images/{id}"), "file": format!("/v2/images/{id}/file"), "schema": "/v2/schemas/image",
    })
}

/// Whether the caller may see (and boot) the image.
pub(super) fn visible(i: &Image, auth: &Auth) -> bool {
    i.public || i.owner == Some(auth.0.project) || auth.is_admin()
}

async fn list_images(State(s): State<AppState>, auth: Auth, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let all = s.ctx.store.read(|r| r.scan(&IMAGES)).map_err(|e| ApiError::image(e.into()))?;
    // `id=in:a,b` is how the CLI fetches the images of a server list at once.
    let ids: Option<Vec<&str>> = q.get("id").map(|v| v.strip_prefix("in:").unwrap_or(v).split(',').collect());
    let mut images: Vec<&Image> = all
        .iter()
        .map(|(_, i)| i)
        .filter(|i| visible(i, &auth))
        .filter(|i| q.get("name").is_none_or(|n| &i.name == n))
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id.to_string().as_str())))
        .filter(|i| q.get("visibility").is_none_or(|v| v == "all" || (v == "public") == i.public))
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let views: Vec<Value> = images.into_iter().map(image_view).collect();
    Ok(Json(json!({"images": views, "first": "/v2/images", "schema": "/v2/schemas/images"})).into_response())
}

async fn show_image(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let missing = || ApiError::image(CloudError::NotFound(format!("No image found with ID {id}")));
    let parsed: ImageId = id.parse().map_err(|_| missing())?;
    let image = s.ctx.store.read(|r| r.get(&IMAGES, &parsed)).map_err(|e| ApiError::image(e.into()))?;
    let image = image.filter(|i| visible(i, &auth)).ok_or_else(missing)?;
    Ok(Json(image_view(&image)).into_response())
}

#[derive(Deserialize)]
struct NewImage {
    name: String,
    #[serde(default = "default_disk_format")]
    disk_format: String,
    #[serde(default = "default_container_format")]
    container_format: String,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    min_disk: u64,
    #[serde(default)]
    min_ram: u64,
    #[serde(default)]
    size: u64,
}

fn default_disk_format() -> String {
    "qcow2".into()
}

fn default_container_format() -> String {
    "bare".into()
}

async fn create_image(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Admin, "add_image").map_err(ApiError::image)?;
    let new: NewImage = parse_json(&body).map_err(ApiError::image)?;
    if let Some(problem) = crate::names::name_problem("image", &new.name) {
        return Err(ApiError::image(CloudError::BadRequest(problem)));
    }
    let public = match new.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(other) => {
            return Err(ApiError::image(CloudError::BadRequest(format!("Invalid visibility value: {other}"))));
        }
    };
    let image = Image {
        id: ImageId::random(),
        name: new.name,
        disk_format: new.disk_format,
        container_format: new.container_format,
        size_bytes: new.size,
        min_disk_gb: new.min_disk,
        min_ram_mb: new.min_ram,
        owner: Some(auth.0.project),
        public,
        created_at: now_ms(),
    };
    let record = image.clone();
    s.ctx
        .store
        .write(move |tx| tx.put(&IMAGES, &record.id, &record))
        .await
        .map_err(|e: StoreError| ApiError::image(e.into()))?;
    Ok((StatusCode::CREATED, Json(image_view(&image))).into_response())
}
