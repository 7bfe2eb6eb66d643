//! What a fresh cloud gets on its first start: the admin project and user, Nova's classic flavors, a default
//! image, a default network; and the `clouds.yaml` that points the OpenStack clients at it.

use std::io::Write;
use std::path::Path;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{FlavorId, ImageId};
use nimbus_storage::Reads;
use nimbus_storage::records::{Flavor, Image, NetworkMode, Role, now_ms};
use nimbus_storage::schema::{FLAVORS, FLOATING_POOLS, IMAGES, NETWORKS};
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::app::error::CloudError;
use crate::app::{App, floating_ips, identity, quota};
use crate::network_plan::{self, NetworkRequest};

pub const ADMIN: &str = "admin";
pub const DEFAULT_IMAGE: &str = "cirros-0.6.2-x86_64-disk";
pub const DEFAULT_NETWORK: &str = "private";
pub const DEFAULT_POOL: &str = "public";
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// What a fresh cloud is created with.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub admin_password: Option<String>,
    pub fixed_range: Ipv4Network,
    pub floating_range: Ipv4Network,
    pub public_interface: String,
}

/// Creates whatever of the defaults is missing. Returns the admin password if it was generated now (it is
/// also written, readable by the owner only, to `data_dir/admin-password`).
pub async fn ensure_defaults(app: &App, data_dir: &Path, defaults: &Defaults) -> Result<Option<String>, CloudError> {
    let admin_password = defaults.admin_password.as_deref();
    let fixed_range = defaults.fixed_range;
    let mut generated = None;
    if identity::find_user(app, ADMIN)?.is_none() {
        let project = match identity::find_project(app, ADMIN)? {
            Some(p) => p,
            None => {
                identity::create_project(app, ADMIN, "Bootstrap project for initializing the cloud.", NetworkMode::Flat)
                    .await?
            }
        };
        let password = match admin_password {
            Some(p) => p.to_string(),
            None => {
                let p: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
                let path = data_dir.join(ADMIN_PASSWORD_FILE);
                write_private(&path, &format!("{p}\n")).map_err(cannot_write(&path))?;
                generated = Some(p.clone());
                p
            }
        };
        let user = identity::create_user(app, ADMIN, &password, Some(project.id)).await?;
        identity::grant(app, user.id, project.id, Role::Admin).await?;
        // The operator's own project is not limited.
        quota::set_unlimited(app, project.id).await?;
    }
    app.store
        .write(move |tx| {
            if tx.scan(&FLAVORS)?.is_empty() {
                // Nova's classic flavors.
                for (id, name, vcpus, ram_mb, disk_gb) in [
                    ("1", "m1.tiny", 1, 512, 1),
                    ("2", "m1.small", 1, 2048, 20),
                    ("3", "m1.medium", 2, 4096, 40),
                    ("4", "m1.large", 4, 8192, 80),
                ] {
                    let flavor = Flavor {
                        id: FlavorId(id.into()),
                        name: name.into(),
                        vcpus,
                        ram_mb,
                        disk_gb,
                        ephemeral_gb: 0,
                        swap_mb: 0,
                        is_public: true,
                    };
                    tx.put(&FLAVORS, &flavor.id, &flavor)?;
                }
            }
            if tx.scan(&IMAGES)?.is_empty() {
                let image = Image {
                    id: ImageId::random(),
                    name: DEFAULT_IMAGE.into(),
                    disk_format: "qcow2".into(),
                    container_format: "bare".into(),
                    size_bytes: 21_430_272,
                    min_disk_gb: 0,
                    min_ram_mb: 0,
                    owner: None,
                    public: true,
                    created_at: now_ms(),
                };
                tx.put(&IMAGES, &image.id, &image)?;
            }
            if tx.scan(&NETWORKS)?.is_empty() {
                let mut request = NetworkRequest::new(DEFAULT_NETWORK, NetworkMode::Flat, fixed_range);
                request.network_size = fixed_range.size();
                let planned = network_plan::plan(&request, &[], now_ms())
                    .map_err(|e| CloudError::BadRequest(format!("the default network {fixed_range}: {e}")))?;
                for network in planned {
                    tx.put(&NETWORKS, &network.id, &network)?;
                }
            }
            Ok::<_, CloudError>(())
        })
        .await?;
    let no_pool = app.store.read(|r| r.scan(&FLOATING_POOLS))?.is_empty();
    if no_pool {
        let (range, interface) = (defaults.floating_range, defaults.public_interface.clone());
        floating_ips::create_pool(app, DEFAULT_POOL.into(), range, interface).await?;
    }
    Ok(generated)
}

/// A `clouds.yaml` with one cloud, `nimbus`, for the stock OpenStack clients.
pub fn clouds_yaml(base_url: &str, password: &str) -> String {
    format!(
        "clouds:\n  nimbus:\n    auth:\n      auth_url: {base_url}/identity/v3\n      username: {ADMIN}\n      \
         password: \"{password}\"\n      project_name: {ADMIN}\n      user_domain_name: Default\n      \
         project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n    interface: public\n"
    )
}

/// The error for a file nimbus could not write.
pub fn cannot_write(path: &Path) -> impl FnOnce(std::io::Error) -> CloudError + '_ {
    move |e| CloudError::Internal(format!("cannot write {}: {e}", path.display()))
}

/// Writes a file only its owner can read (it holds a password or a key). A file that exists already is made
/// private too: the mode given at creation would not change it.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}
