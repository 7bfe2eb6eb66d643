//! Images: the records servers are booted from, who sees which, their creation by members (public ones by
//! an admin), and their data: uploaded once into the data directory's `images/` (size, MD5 and SHA-512
//! computed as it arrives), downloaded, deleted with the image.

use std::path::PathBuf;

use futures::{Stream, StreamExt};
use md5::Md5;
use nimbus_protocol::ids::ImageId;
use nimbus_storage::records::{Image, ImageData, ImageStatus, Role, now_ms};
use nimbus_storage::schema::IMAGES;
use nimbus_storage::{Reads, StoreError};
use sha2::{Digest, Sha512};
use tokio::io::AsyncWriteExt;

use crate::app::error::CloudError;
use crate::app::identity::AuthContext;
use crate::app::{App, hex};

/// Whether the caller may see (and boot) the image.
pub fn visible(auth: &AuthContext, i: &Image) -> bool {
    i.public || i.owner == Some(auth.project) || auth.has(Role::Admin)
}

/// Which images a list shows.
#[derive(Clone, Debug, Default)]
pub struct ImageFilters {
    pub name: Option<String>,
    /// Only these ids (`id=in:a,b`, how the CLI fetches the images of a server list at once).
    pub ids: Option<Vec<String>>,
    /// `public`, `private`, or `all`.
    pub visibility: Option<String>,
    /// `active` or `queued`.
    pub status: Option<ImageStatus>,
}

/// The images the caller sees that pass `filters`, newest first.
pub fn list(app: &App, auth: &AuthContext, filters: &ImageFilters) -> Result<Vec<Image>, StoreError> {
    let mut images: Vec<Image> = app
        .store
        .read(|r| r.scan(&IMAGES))?
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| visible(auth, i))
        .filter(|i| filters.name.as_ref().is_none_or(|n| &i.name == n))
        .filter(|i| filters.ids.as_ref().is_none_or(|ids| ids.contains(&i.id.to_string())))
        .filter(|i| filters.visibility.as_deref().is_none_or(|v| v == "all" || (v == "public") == i.public))
        .filter(|i| filters.status.is_none_or(|s| i.status == s))
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(images)
}

pub fn get(app: &App, auth: &AuthContext, id: &str) -> Result<Image, CloudError> {
    let missing = || CloudError::NotFound(format!("No image found with ID {id}"));
    let parsed: ImageId = id.parse().map_err(|_| missing())?;
    let image = app.store.read(|r| r.get(&IMAGES, &parsed))?;
    image.filter(|i| visible(auth, i)).ok_or_else(missing)
}

/// An image record to register (`POST /v2/images`).
#[derive(Clone, Debug)]
pub struct NewImage {
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    pub public: bool,
    pub min_disk_gb: u64,
    pub min_ram_mb: u64,
    pub size_bytes: u64,
}

/// Registers an image owned by the caller's project.
pub async fn create(app: &App, auth: &AuthContext, new: NewImage) -> Result<Image, CloudError> {
    if let Some(problem) = crate::names::name_problem("image", &new.name) {
        return Err(CloudError::BadRequest(problem));
    }
    let image = Image {
        id: ImageId::generate(),
        name: new.name,
        disk_format: new.disk_format,
        container_format: new.container_format,
        size_bytes: new.size_bytes,
        min_disk_gb: new.min_disk_gb,
        min_ram_mb: new.min_ram_mb,
        owner: Some(auth.project),
        public: new.public,
        created_at: now_ms(),
        status: ImageStatus::Queued,
        data: None,
    };
    let record = image.clone();
    app.store.write(move |tx| tx.put(&IMAGES, &record.id, &record)).await?;
    Ok(image)
}

/// The largest image nimbus takes (Glance's `image_size_cap` is 1 TiB; a trial cloud's disk is smaller).
pub const MAX_IMAGE_BYTES: u64 = 64 << 30;

/// The image `id` if the caller may change it: its project's, or any for an admin. One they only see (a
/// public image of another project) is a 403, as Glance answers; one they do not see is a 404.
fn owned(app: &App, auth: &AuthContext, id: &str) -> Result<Image, CloudError> {
    let image = get(app, auth, id)?;
    if image.owner != Some(auth.project) && !auth.has(Role::Admin) {
        return Err(CloudError::Forbidden(format!("You are not permitted to modify image {id}.")));
    }
    Ok(image)
}

fn images_dir(app: &App) -> Result<&PathBuf, CloudError> {
    app.images_dir.as_ref().ok_or_else(|| {
        CloudError::BadRequest("This cloud keeps no image data: it was started without a data directory.".into())
    })
}

/// Takes the image's data from `chunks` (a queued image only: data is uploaded once), keeping it under the
/// images directory. The file is written whole and synced before the record names it; two uploads at once
/// each write their own file, and the one that commits second is refused (409) and removes its own.
pub async fn upload<B: AsRef<[u8]>>(
    app: &App,
    auth: &AuthContext,
    id: &str,
    mut chunks: impl Stream<Item = Result<B, CloudError>> + Unpin,
) -> Result<Image, CloudError> {
    let image = owned(app, auth, id)?;
    if image.status != ImageStatus::Queued {
        return Err(CloudError::Conflict(format!("Image {id} has its data already: data is uploaded once.")));
    }
    let dir = images_dir(app)?.clone();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| CloudError::Internal(format!("create {}: {e}", dir.display())))?;
    let file_name = format!("{}.{}", image.id, uuid::Uuid::new_v4().simple());
    let path = dir.join(&file_name);
    let written = write_data(&path, &mut chunks).await;
    let (size, md5, sha512) = match written {
        Ok(digests) => digests,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    let data = ImageData { file: file_name, md5, sha512 };
    let image_id = image.id;
    let committed = app
        .store
        .write(move |tx| {
            let mut image = tx.get(&IMAGES, &image_id)?.ok_or_else(|| CloudError::not_found("Image", image_id))?;
            if image.status != ImageStatus::Queued {
                return Err(CloudError::Conflict(format!("Image {image_id} got its data from another upload.")));
            }
            image.status = ImageStatus::Active;
            image.size_bytes = size;
            image.data = Some(data);
            tx.put(&IMAGES, &image_id, &image)?;
            Ok(image)
        })
        .await;
    if committed.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    committed
}

/// Writes `chunks` to a new private file at `path` and syncs it; returns its size, MD5 and SHA-512 (hex).
async fn write_data<B: AsRef<[u8]>>(
    path: &std::path::Path,
    chunks: &mut (impl Stream<Item = Result<B, CloudError>> + Unpin),
) -> Result<(u64, String, String), CloudError> {
    let io = |e: std::io::Error| CloudError::Internal(format!("write {}: {e}", path.display()));
    let mut file =
        tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).await.map_err(io)?;
    let (mut md5, mut sha512, mut size) = (Md5::new(), Sha512::new(), 0u64);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let chunk = chunk.as_ref();
        size += chunk.len() as u64;
        if size > MAX_IMAGE_BYTES {
            return Err(CloudError::PayloadTooLarge(format!("An image is at most {} GiB.", MAX_IMAGE_BYTES >> 30)));
        }
        md5.update(chunk);
        sha512.update(chunk);
        file.write_all(chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok((size, hex(&md5.finalize()), hex(&sha512.finalize())))
}

/// Where the image's data is, if it has any (the catalog's own images are records only), with its size.
pub fn data_file(app: &App, auth: &AuthContext, id: &str) -> Result<Option<(PathBuf, u64)>, CloudError> {
    let image = get(app, auth, id)?;
    let Some(data) = &image.data else { return Ok(None) };
    Ok(Some((images_dir(app)?.join(&data.file), image.size_bytes)))
}

/// Deletes the image record and its data. Servers booted from it keep running, as with Glance.
pub async fn delete(app: &App, auth: &AuthContext, id: &str) -> Result<(), CloudError> {
    let image = owned(app, auth, id)?;
    let image_id = image.id;
    app.store.write(move |tx| tx.delete(&IMAGES, &image_id).map(drop)).await?;
    if let (Some(data), Some(dir)) = (&image.data, &app.images_dir) {
        let path = dir.join(&data.file);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(image = %image_id, cause = %e, path = %path.display(), "could not remove the image's data");
        }
    }
    Ok(())
}
