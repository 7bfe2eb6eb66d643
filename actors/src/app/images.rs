//! Images: the records servers are booted from (nimbus keeps image metadata only; no image data), who sees
//! which, and their registration by an admin.

use nimbus_protocol::ids::ImageId;
use nimbus_storage::records::{Image, Role, now_ms};
use nimbus_storage::schema::IMAGES;
use nimbus_storage::{Reads, StoreError};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::identity::AuthContext;

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
    };
    let record = image.clone();
    app.store.write(move |tx| tx.put(&IMAGES, &record.id, &record)).await?;
    Ok(image)
}
