//! Applying the store's state to the network host: one network's segment, the NAT table, a project's VPN
//! forward, the end of DHCP leases. Every apply reads the state afresh and under a lock held until the
//! driver is done, so a caller holding an older view (a reconcile pass, a VLAN timer, a concurrent request)
//! can never apply it over a newer one, nor bring back a segment that was removed. Callers that queue for
//! the same segment, or for the NAT table, share one apply (see [`Coalesced`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Per network, the callers waiting for its segment.
    segment_applies: Mutex<HashMap<NetworkId, Arc<Coalesced>>>,
    nat_applies: Coalesced,
}

/// The applies of one thing (a segment, the NAT table), shared: an apply whose read of the store starts
/// after a caller asked serves that caller, whose change was committed before it asked. Callers that queue
/// behind a running apply are thus all served by the next one, which reads and applies the state once for
/// all of them, instead of once each.
#[derive(Default)]
struct Coalesced {
    /// Tickets handed out, one per caller.
    asked: AtomicU64,
    /// The latest apply: every ticket up to `covers` was asked before it read the store.
    latest: tokio::sync::Mutex<Served>,
}

#[derive(Default)]
struct Served {
    covers: u64,
    outcome: Option<Result<(), NetworkError>>,
}

impl Coalesced {
    /// `apply`'s outcome, or that of an apply that began after this call.
    async fn apply(&self, apply: impl Future<Output = Result<(), NetworkError>>) -> Result<(), NetworkError> {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut latest = self.latest.lock().await;
        if let Some(outcome) = latest.outcome.as_ref().filter(|_| latest.covers >= ticket) {
            return outcome.clone();
        }
        // Taken before `apply` (which does nothing until awaited) reads the store.
        let covers = self.asked.load(Ordering::SeqCst);
        let outcome = apply.await;
        *latest = Served { covers, outcome: Some(outcome.clone()) };
        outcome
    }
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
        let applies = self.locks.segment_applies.lock().expect("segment applies lock").entry(id).or_default().clone();
        let removed = AtomicBool::new(false);
        let outcome = applies
            .apply(async {
                let _latest = self.locks.segments.lock().await;
                let applied = match dataplane_state::segment_of(&self.app, id).map_err(store_failure)? {
                    Some(segment) => self.dataplane.ensure_segment(segment).await,
                    None => {
                        removed.store(true, Ordering::SeqCst);
                        self.dataplane.remove_segment(id).await
                    }
                };
                applied.map_err(NetworkError::Dataplane)
            })
            .await;
        if removed.into_inner() {
            // A network gone from the store leaves no entry behind, unless a caller holds it still (the map
            // and this call are the only holders otherwise; callers take it under the same lock).
            let mut all = self.locks.segment_applies.lock().expect("segment applies lock");
            if all.get(&id).is_some_and(|a| Arc::ptr_eq(a, &applies) && Arc::strong_count(a) == 2) {
                all.remove(&id);
            }
        }
        outcome
    }

    /// Replaces the NAT table with the one the store implies now.
    pub async fn apply_nat(&self) -> Result<(), NetworkError> {
        self.locks
            .nat_applies
            .apply(async {
                let _latest = self.locks.nat.lock().await;
                let nat = dataplane_state::nat(&self.app).map_err(store_failure)?;
                self.dataplane.apply_nat(nat).await.map_err(NetworkError::Dataplane)
            })
            .await
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Callers that queue behind a running apply share the next one; each is served by an apply that began
    /// after it asked, and every caller hears that apply's outcome.
    #[tokio::test]
    async fn callers_queued_behind_an_apply_share_the_next_one() {
        let coalesced = Arc::new(Coalesced::default());
        let (applies, state) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let call = |asked_at: usize| {
            let (coalesced, applies, state) = (coalesced.clone(), applies.clone(), state.clone());
            tokio::spawn(async move {
                coalesced
                    .apply(async {
                        applies.fetch_add(1, Ordering::SeqCst);
                        // What this apply "reads" must include the caller's change.
                        let seen = state.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if seen >= asked_at {
                            Ok(())
                        } else {
                            Err(NetworkError::Store(Failure::message("a stale read")))
                        }
                    })
                    .await
            })
        };
        state.store(1, Ordering::SeqCst);
        let first = call(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Ten changes while the first apply runs: their callers wait, then share one apply.
        let mut queued = Vec::new();
        for change in 2..12 {
            state.store(change, Ordering::SeqCst);
            queued.push(call(change));
        }
        first.await.unwrap().unwrap();
        for caller in queued {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(applies.load(Ordering::SeqCst), 2, "one apply for the first caller, one for the ten behind it");
    }

    #[tokio::test]
    async fn the_apply_of_a_network_gone_from_the_store_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = nimbus_storage::Store::open(dir.path().join("nimbus.redb")).unwrap();
        let ns = nimbus_runtime::Namespace::new("apply-test");
        let app = App::new(store, ns, crate::timing::Timing::default(), false);
        let applier = Applier::new(app, Arc::new(crate::dataplane::SimDataplane::new()));
        applier.apply_network(NetworkId::generate()).await.unwrap();
        assert!(applier.locks.segment_applies.lock().unwrap().is_empty());
    }
}
