//! Flavors: the sizes servers are built in (Nova's classic ones are created at bootstrap).

use nimbus_protocol::ids::FlavorId;
use nimbus_storage::records::Flavor;
use nimbus_storage::schema::FLAVORS;
use nimbus_storage::{Reads, StoreError};

use crate::app::App;
use crate::app::error::CloudError;

/// Every flavor, in id order.
pub fn list(app: &App) -> Result<Vec<Flavor>, StoreError> {
    Ok(app.store.read(|r| r.scan(&FLAVORS))?.into_iter().map(|(_, f)| f).collect())
}

/// What a flavor list asks for (nova's `GET /flavors` parameters).
#[derive(Clone, Debug, Default)]
pub struct FlavorQuery {
    pub min_disk: Option<u64>,
    pub min_ram: Option<u64>,
    /// `Some(true)`: the public ones (the default); `Some(false)`: the private ones; `None`: all.
    pub is_public: Option<bool>,
    pub sort_key: Option<String>,
    /// Descending when `true`; ascending (the default) otherwise.
    pub descending: bool,
    pub limit: Option<usize>,
    /// Only the flavors after this one (by id) in the order asked for.
    pub marker: Option<String>,
}

/// The keys nimbus sorts flavors by (nova's names).
pub const FLAVOR_SORT_KEYS: &[&str] =
    &["flavorid", "id", "name", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "swap", "is_public"];

/// The flavors `query` selects from `all`, in its order, or why it cannot be answered (a 400).
pub fn select(mut all: Vec<Flavor>, query: &FlavorQuery) -> Result<Vec<Flavor>, String> {
    all.retain(|f| {
        query.min_disk.is_none_or(|d| f.disk_gb >= d)
            && query.min_ram.is_none_or(|r| f.ram_mb >= r)
            && query.is_public.is_none_or(|p| f.is_public == p)
    });
    let key = query.sort_key.as_deref().unwrap_or("flavorid");
    let by_id = |a: &Flavor, b: &Flavor| a.id.0.cmp(&b.id.0);
    match key {
        "flavorid" | "id" => all.sort_by(by_id),
        "name" => all.sort_by(|a, b| a.name.cmp(&b.name).then(by_id(a, b))),
        "memory_mb" => all.sort_by(|a, b| a.ram_mb.cmp(&b.ram_mb).then(by_id(a, b))),
        "vcpus" => all.sort_by(|a, b| a.vcpus.cmp(&b.vcpus).then(by_id(a, b))),
        "root_gb" => all.sort_by(|a, b| a.disk_gb.cmp(&b.disk_gb).then(by_id(a, b))),
        "ephemeral_gb" => all.sort_by(|a, b| a.ephemeral_gb.cmp(&b.ephemeral_gb).then(by_id(a, b))),
        "swap" => all.sort_by(|a, b| a.swap_mb.cmp(&b.swap_mb).then(by_id(a, b))),
        "is_public" => all.sort_by(|a, b| a.is_public.cmp(&b.is_public).then(by_id(a, b))),
        other => {
            return Err(format!(
                "Invalid sort_key {other:?}: nimbus sorts flavors by {}.",
                FLAVOR_SORT_KEYS.join(", ")
            ));
        }
    }
    if query.descending {
        all.reverse();
    }
    if let Some(marker) = &query.marker {
        let at = all.iter().position(|f| f.id.0 == *marker).ok_or_else(|| format!("marker [{marker}] not found"))?;
        all.drain(..=at);
    }
    all.truncate(query.limit.unwrap_or(usize::MAX));
    Ok(all)
}

pub fn get(app: &App, id: &str) -> Result<Flavor, CloudError> {
    let flavor = app.store.read(|r| r.get(&FLAVORS, &FlavorId(id.to_string())))?;
    flavor.ok_or_else(|| CloudError::not_found("Flavor", id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(id: &str, name: &str, ram_mb: u64, disk_gb: u64, is_public: bool) -> Flavor {
        Flavor {
            id: FlavorId(id.into()),
            name: name.into(),
            vcpus: 1,
            ram_mb,
            disk_gb,
            ephemeral_gb: 0,
            swap_mb: 0,
            is_public,
        }
    }

    #[test]
    fn flavors_are_filtered_sorted_and_paged_as_nova_does() {
        let all = vec![
            flavor("3", "m1.medium", 4096, 40, true),
            flavor("1", "m1.tiny", 512, 1, true),
            flavor("2", "m1.small", 2048, 20, true),
            flavor("9", "secret", 8192, 80, false),
        ];
        let ids = |query: FlavorQuery| -> Result<Vec<String>, String> {
            select(all.clone(), &query).map(|flavors| flavors.into_iter().map(|f| f.id.0).collect())
        };
        let public = FlavorQuery { is_public: Some(true), ..FlavorQuery::default() };
        assert_eq!(ids(public.clone()).unwrap(), ["1", "2", "3"]);
        assert_eq!(ids(FlavorQuery::default()).unwrap(), ["1", "2", "3", "9"], "is_public none: all");
        assert_eq!(ids(FlavorQuery { is_public: Some(false), ..FlavorQuery::default() }).unwrap(), ["9"]);
        assert_eq!(ids(FlavorQuery { min_ram: Some(2048), ..public.clone() }).unwrap(), ["2", "3"]);
        assert_eq!(ids(FlavorQuery { min_disk: Some(21), ..public.clone() }).unwrap(), ["3"]);
        let by_name = FlavorQuery { sort_key: Some("name".into()), descending: true, ..public.clone() };
        assert_eq!(ids(by_name.clone()).unwrap(), ["1", "2", "3"], "tiny, small, medium by name descending");
        assert_eq!(ids(FlavorQuery { marker: Some("2".into()), limit: Some(1), ..by_name }).unwrap(), ["3"]);
        assert_eq!(ids(FlavorQuery { limit: Some(2), ..public.clone() }).unwrap(), ["1", "2"]);
        assert!(ids(FlavorQuery { marker: Some("7".into()), ..public.clone() }).unwrap_err().contains("marker [7]"));
        assert!(ids(FlavorQuery { sort_key: Some("disabled".into()), ..public }).unwrap_err().contains("sort_key"));
    }
}
