//! Image v2: the version document, image records (list with the filters clients send, show), and
//! registration of image records by an admin. nimbus keeps image metadata only; no image data.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_storage::records::{Image, Role};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::views::VersionDoc;
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::images::{self, ImageFilters, NewImage};

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
    #[derive(Serialize)]
    struct Body {
        versions: [VersionDoc; 1],
    }
    let version = VersionDoc::plain("v2.9", "CURRENT", format!("{}/image/v2/", s.base_url));
    (StatusCode::MULTIPLE_CHOICES, Json(Body { versions: [version] })).into_response()
}

#[derive(Serialize)]
struct ImageView<'a> {
    id: String,
    name: &'a str,
    status: &'static str,
    visibility: &'static str,
    protected: bool,
    os_hidden: bool,
    checksum: Option<String>,
    os_hash_algo: Option<String>,
    os_hash_value: Option<String>,
    owner: Option<String>,
    size: u64,
    virtual_size: Option<u64>,
    min_ram: u64,
    min_disk: u64,
    disk_format: &'a str,
    container_format: &'a str,
    created_at: String,
    updated_at: String,
    tags: [String; 0],
    #[serde(rename = "self")]
    link: String,
    file: String,
    schema: &'static str,
}

fn image_view(i: &Image) -> ImageView<'_> {
    let id = i.id.to_string();
    ImageView {
        name: &i.name,
        status: "active",
        visibility: if i.public { "public" } else { "private" },
        protected: false,
        os_hidden: false,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        owner: i.owner.map(|o| o.to_string()),
        size: i.size_bytes,
        virtual_size: None,
        min_ram: i.min_ram_mb,
        min_disk: i.min_disk_gb,
        disk_format: &i.disk_format,
        container_format: &i.container_format,
        created_at: iso8601(i.created_at),
        updated_at: iso8601(i.created_at),
        tags: [],
        link: format!("/v2/images/{id}"),
        file: format!("/v2/images/{id}/file"),
        schema: "/v2/schemas/image",
        id,
    }
}

async fn list_images(State(s): State<AppState>, auth: Auth, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let filters = ImageFilters {
        name: q.get("name").cloned(),
        // `id=in:a,b` is how the CLI fetches the images of a server list at once.
        ids: q.get("id").map(|v| v.strip_prefix("in:").unwrap_or(v).split(',').map(str::to_string).collect()),
        visibility: q.get("visibility").cloned(),
    };
    let images = images::list(&s.app, &auth.ctx, &filters).map_err(ApiError::image)?;
    #[derive(Serialize)]
    struct Body<'a> {
        images: Vec<ImageView<'a>>,
        first: &'static str,
        schema: &'static str,
    }
    let body =
        Body { images: images.iter().map(image_view).collect(), first: "/v2/images", schema: "/v2/schemas/images" };
    Ok(Json(body).into_response())
}

async fn show_image(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    let image = images::get(&s.app, &auth.ctx, &id).map_err(ApiError::image)?;
    Ok(Json(image_view(&image)).into_response())
}

#[derive(Deserialize)]
struct CreateImage {
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
    let new: CreateImage = parse_json(&body).map_err(ApiError::image)?;
    let public = match new.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(other) => {
            return Err(ApiError::image(CloudError::BadRequest(format!("Invalid visibility value: {other}"))));
        }
    };
    let new = NewImage {
        name: new.name,
        disk_format: new.disk_format,
        container_format: new.container_format,
        public,
        min_disk_gb: new.min_disk,
        min_ram_mb: new.min_ram,
        size_bytes: new.size,
    };
    let image = images::create(&s.app, &auth.ctx, new).await.map_err(ApiError::image)?;
    Ok((StatusCode::CREATED, Json(image_view(&image))).into_response())
}
