//! Image v2: the version document, images (list with the filters clients send, show, create by members —
//! public ones by admins —, delete), their data (upload once, download) and `info/import` (nimbus takes
//! data by upload only). The upload streams: its route is outside the whole-body layer, with a size cap and
//! a minimum rate of its own.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use nimbus_storage::records::{Image, ImageStatus, Role};
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
        .route("/image/v2/info/import", get(import_info))
        .route("/image/v2/images", get(list_images).post(create_image))
        .route("/image/v2/images/{id}", get(show_image).delete(delete_image))
}

/// The routes whose body streams (image data): the caller keeps them out of the layer that reads bodies
/// whole.
pub fn streaming_routes() -> axum::Router<AppState> {
    axum::Router::new().route("/image/v2/images/{id}/file", get(download).put(upload))
}

/// How slowly image data may arrive: after a first [`UPLOAD_GRACE`], at least this many bytes a second on
/// average, or the upload is cut (a client trickling bytes cannot hold a connection).
const MIN_UPLOAD_RATE: u64 = 64 * 1024;
const UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

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
        status: match i.status {
            ImageStatus::Active => "active",
            ImageStatus::Queued => "queued",
        },
        visibility: if i.public { "public" } else { "private" },
        protected: false,
        os_hidden: false,
        checksum: i.data.as_ref().map(|d| d.md5.clone()),
        os_hash_algo: i.data.as_ref().map(|_| "sha512".to_string()),
        os_hash_value: i.data.as_ref().map(|d| d.sha512.clone()),
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
        status: match q.get("status").map(String::as_str) {
            None => None,
            Some("active") => Some(ImageStatus::Active),
            Some("queued") => Some(ImageStatus::Queued),
            Some(other) => {
                return Err(ApiError::image(CloudError::BadRequest(format!(
                    "Invalid status {other:?}: nimbus images are queued (waiting for their data) or active."
                ))));
            }
        },
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

/// Members create images in their project (Glance's default policy); only an admin makes one public.
async fn create_image(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Role::Member, "add_image").map_err(ApiError::image)?;
    let new: CreateImage = parse_json(&body).map_err(ApiError::image)?;
    let public = match new.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => {
            return Err(ApiError::image(CloudError::BadRequest(format!(
                "Invalid visibility value: {other} (nimbus images are private to their project, or public)"
            ))));
        }
    };
    if public {
        auth.require(Role::Admin, "publicize_image").map_err(ApiError::image)?;
    }
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

async fn delete_image(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Member, "delete_image").map_err(ApiError::image)?;
    images::delete(&s.app, &auth.ctx, &id).await.map_err(ApiError::image)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /images/{id}/file`: the image's data, streamed to disk as it arrives.
async fn upload(State(s): State<AppState>, auth: Auth, Path(id): Path<String>, request: Request) -> ApiResult {
    auth.require(Role::Member, "upload_image").map_err(ApiError::image)?;
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if content_type != "application/octet-stream" {
        return Err(ApiError::image(CloudError::UnsupportedMediaType(format!(
            "Image data is sent as application/octet-stream, not {content_type:?}."
        ))));
    }
    // A body announced larger than the cap is refused before a byte is written.
    let announced = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > images::MAX_IMAGE_BYTES) {
        return Err(ApiError::image(CloudError::PayloadTooLarge(format!(
            "An image is at most {} GiB.",
            images::MAX_IMAGE_BYTES >> 30
        ))));
    }
    // Each chunk must come before the bytes so far stop buying time at the minimum rate.
    let started = tokio::time::Instant::now();
    let body = request.into_body().into_data_stream();
    let chunks = futures::stream::unfold((body, 0u64, false), move |(mut body, received, ended)| async move {
        if ended {
            return None;
        }
        let deadline = started + UPLOAD_GRACE + std::time::Duration::from_secs(received / MIN_UPLOAD_RATE);
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(None) => None,
            Ok(Some(Ok(chunk))) => {
                let received = received + chunk.len() as u64;
                Some((Ok(chunk), (body, received, false)))
            }
            Ok(Some(Err(e))) => {
                let error = CloudError::BadRequest(format!("The image data could not be read: {e}"));
                Some((Err(error), (body, received, true)))
            }
            Err(_) => {
                let error = CloudError::RequestTimeout(format!(
                    "The image data arrives slower than {} KiB/s.",
                    MIN_UPLOAD_RATE / 1024
                ));
                Some((Err(error), (body, received, true)))
            }
        }
    });
    images::upload(&s.app, &auth.ctx, &id, Box::pin(chunks)).await.map_err(ApiError::image)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /images/{id}/file`: the data, streamed; 204 for an image without any (as Glance answers).
async fn download(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult {
    auth.require(Role::Reader, "download_image").map_err(ApiError::image)?;
    let Some((path, size)) = images::data_file(&s.app, &auth.ctx, &id).map_err(ApiError::image)? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::image(CloudError::Internal(format!("open {}: {e}", path.display()))))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0; 256 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [(CONTENT_TYPE, "application/octet-stream".to_string()), (CONTENT_LENGTH, size.to_string())],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `GET /info/import`: nimbus takes image data by upload (`PUT /images/{id}/file`) only, no import method.
async fn import_info() -> Response {
    Json(serde_json::json!({"import-methods": {"description": "Import methods available.", "type": "array", "value": []}}))
        .into_response()
}
