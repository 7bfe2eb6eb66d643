//! Flavors: the sizes servers are built in (Nova's classic ones are created at bootstrap).

use nimbus_protocol::ids::FlavorId;
use nimbus_storage::records::Flavor;
use nimbus_storage::schema::FLAVORS;
use nimbus_storage::{Reads, StoreError};

use crate::app::App;
use crate::app::error::CloudError;

/// Every flavor, smallest first.
pub fn list(app: &App) -> Result<Vec<Flavor>, StoreError> {
    let mut all: Vec<Flavor> = app.store.read(|r| r.scan(&FLAVORS))?.into_iter().map(|(_, f)| f).collect();
    all.sort_by_key(|f| (f.ram_mb, f.vcpus, f.id.0.clone()));
    Ok(all)
}

pub fn get(app: &App, id: &str) -> Result<Flavor, CloudError> {
    let flavor = app.store.read(|r| r.get(&FLAVORS, &FlavorId(id.to_string())))?;
    flavor.ok_or_else(|| CloudError::not_found("Flavor", id))
}
