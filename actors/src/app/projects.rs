//! Which projects need a worker of their own when the cloud starts: a conductor for each project with logged
//! operations (to resume them), a VLAN reconciler for each project with a VLAN network bound to it.

use std::collections::BTreeSet;

use nimbus_protocol::ids::ProjectId;
use nimbus_storage::Reads;
use nimbus_storage::StoreError;
use nimbus_storage::schema::{NETWORKS, OPERATIONS};

use crate::app::App;
use crate::app::dataplane_state::owned_by_network_manager;

/// Projects with logged operations.
pub fn with_operations(app: &App) -> Result<BTreeSet<ProjectId>, StoreError> {
    Ok(app.store.read(|r| r.scan(&OPERATIONS))?.into_iter().map(|(_, op)| op.project).collect())
}

/// Projects with a VLAN network of their own (a segment and a VPN endpoint to keep up).
pub fn with_vlan_networks(app: &App) -> Result<BTreeSet<ProjectId>, StoreError> {
    let networks = app.store.read(|r| r.scan(&NETWORKS))?;
    Ok(networks.into_iter().filter(|(_, n)| !owned_by_network_manager(n)).filter_map(|(_, n)| n.project).collect())
}
