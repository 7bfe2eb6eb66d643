//! Applying the store's state to the network host: one network's segment, the NAT table, a project's VPN
//! forward, the end of DHCP leases. Every apply reads the state afresh and under a lock held until the
//! driver is done, so a caller holding an older view (a reconcile pass, a VLAN timer, a concurrent request)
//! can never apply it over a newer one, nor bring back a segment that was removed.

use std::sync::Arc;

use nimbus_protocol::failure::Failure;
use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_protocol::network::{EndLease, NetworkError};
use nimbus_storage::StoreError;

use crate::app::{App, dataplane_state};
use crate::dataplane::Dataplane;

#[derive(Default)]
struct ApplyLocks {
    segments: tokio::sync::Mutex<()>,
    nat: tokio::sync::Mutex<()>,
}

/// What the network manager and the VLAN reconcilers apply through. The driver outlives the actors, as the
/// kernel state does.
#[derive(Clone)]
pub struct Applier {
    app: App,
    dataplane: Arc<dyn Dataplane>,
    locks: Arc<ApplyLocks>,
}

fn store_failure(e: StoreError) -> NetworkError {
    NetworkError::Store(Failure::of(&e))
}

impl Applier {
    pub fn new(app: App, dataplane: Arc<dyn Dataplane>) -> Applier {
        Applier { app, dataplane, locks: Arc::default() }
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn dataplane(&self) -> &Arc<dyn Dataplane> {
        &self.dataplane
    }

    /// Makes network `id`'s dataplane what the store implies now: its segment, or none at all once the
    /// network is deleted or unbound.
    pub async fn apply_network(&self, id: NetworkId) -> Result<(), NetworkError> {
        let _latest = self.locks.segments.lock().await;
        let applied = match dataplane_state::segment_of(&self.app, id).map_err(store_failure)? {
            Some(segment) => self.dataplane.ensure_segment(segment).await,
            None => self.dataplane.remove_segment(id).await,
        };
        applied.map_err(NetworkError::Dataplane)
    }

    /// Replaces the NAT table with the one the store implies now.
    pub async fn apply_nat(&self) -> Result<(), NetworkError> {
        let _latest = self.locks.nat.lock().await;
        let nat = dataplane_state::nat(&self.app).map_err(store_failure)?;
        self.dataplane.apply_nat(nat).await.map_err(NetworkError::Dataplane)
    }

    /// Applies the project's VLAN networks and its VPN forward.
    pub async fn apply_project(&self, project: ProjectId) -> Result<(), NetworkError> {
        for network in dataplane_state::project_vlan_networks(&self.app, project).map_err(store_failure)? {
            self.apply_network(network).await?;
        }
        // Read under the lock, as every apply: an older view never replaces a newer one.
        let _latest = self.locks.nat.lock().await;
        let vpn = dataplane_state::project_vpn(&self.app, project).map_err(store_failure)?;
        self.dataplane.ensure_vpn(project, vpn).await.map_err(NetworkError::Dataplane)
    }

    /// Ends DHCP leases now, so their addresses can be handed out again at once.
    pub async fn end_leases(&self, leases: Vec<EndLease>) -> Result<(), NetworkError> {
        for lease in leases {
            self.dataplane
                .release_lease(lease.network, lease.mac, lease.address)
                .await
                .map_err(NetworkError::Dataplane)?;
        }
        Ok(())
    }

    /// Applies every network the network manager owns, and the NAT table.
    pub async fn apply_manager_networks(&self) -> Result<(), NetworkError> {
        // One network that cannot be applied does not keep the others, or the NAT table, out of line.
        let mut outcomes = Vec::new();
        for network in dataplane_state::manager_networks(&self.app).map_err(store_failure)? {
            outcomes.push(self.apply_network(network).await);
        }
        outcomes.push(self.apply_nat().await);
        outcomes.into_iter().collect()
    }
}
