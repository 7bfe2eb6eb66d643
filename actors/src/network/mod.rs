//! The network side: the network manager (`network`, topic `network`; any member may answer), which owns the
//! network host's dataplane, and the VLAN reconcilers under `vlans`, one per project with a VLAN network.
//!
//! Every change to networks and addresses is a transaction of the application layer (`app::fixed_ips`,
//! `app::floating_ips`, `app::networks`); the network manager is then asked to bring the kernel in line
//! ([`NetworkMsg::Apply`]). It applies the networks it owns and the NAT table itself, and hands a project's
//! VLAN network to that project's reconciler, starting it on first use. It also records the DHCP servers'
//! lease events, frees addresses whose release never came, and re-applies everything on a timer.
//!
//! # Layout
//! - [`apply`]: applying the store's state under the apply locks; [`vlan`]: the VLAN reconcilers.

pub mod apply;
pub mod vlan;

use nimbus_protocol::failure::chain;
use nimbus_protocol::network::{self, LeaseEvent, NetworkChanges, NetworkError, NetworkMsg, VlanClient};
use nimbus_protocol::trace::{Trace, Traced};
use nimbus_runtime::{Wire, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::app::fixed_ips;
use apply::Applier;

pub struct NetworkManager;

pub struct NetworkState {
    applier: Applier,
    name: String,
}

impl Actor for NetworkManager {
    type Msg = NetworkMsg;
    type State = NetworkState;
    type Arguments = Applier;

    async fn pre_start(
        &self,
        myself: ActorRef<NetworkMsg>,
        applier: Applier,
    ) -> Result<NetworkState, ActorProcessingErr> {
        let (events, mut received) = mpsc::unbounded_channel::<LeaseEvent>();
        applier.dataplane().subscribe(events);
        let me = myself.clone();
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if me.send_message(NetworkMsg::Lease(Wire(event))).is_err() {
                    break;
                }
            }
        });
        let state = NetworkState { name: myself.get_name().unwrap_or_default(), applier };
        // The kernel may refuse for reasons only an operator can fix; the timer retries, and the network
        // manager serves what it can meanwhile. Only a store failure stops it from starting.
        let applied = state.applier.apply_manager_networks().await;
        if let Err(e @ NetworkError::Store(_)) = &applied {
            return Err(e.clone().into());
        }
        state.reconciled(applied);
        let app = state.applier.app();
        app.ns().join(&network::TOPIC, myself.get_cell());
        myself.send_interval(app.timing().reconcile_interval, || NetworkMsg::Reconcile);
        myself.send_interval(app.timing().fixed_ip_reclaim_after / 4, || NetworkMsg::Reclaim);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NetworkMsg>,
        msg: NetworkMsg,
        state: &mut NetworkState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            NetworkMsg::Apply(Wire(Traced { trace, body: changes }), reply) => {
                // On its own task: lease events and other applies are taken while this one waits on the kernel.
                let applier = state.applier.clone();
                let span = tracing::info_span!("apply", request_id = %trace, actor = %state.name);
                tokio::spawn(
                    async move {
                        let outcome = apply(&applier, &trace, changes).await;
                        match &outcome {
                            Ok(()) => tracing::info!("network host in line"),
                            Err(e) => tracing::warn!(cause = %chain(e), "network host not in line"),
                        }
                        let _ = reply.send(Wire(outcome));
                    }
                    .instrument(span),
                );
            }
            NetworkMsg::Lease(Wire(event)) => fixed_ips::lease_event(state.applier.app(), event).await?,
            NetworkMsg::Reclaim => {
                let reclaimed = fixed_ips::reclaim(state.applier.app()).await;
                match &reclaimed {
                    Ok(0) => {}
                    Ok(freed) => tracing::info!(freed, "reclaimed fixed IPs whose DHCP release never came"),
                    Err(e) => tracing::warn!(cause = %chain(e), "reclaiming fixed IPs failed"),
                }
                introspect::reconciled(&state.name, "reclaim", reclaimed.map(drop).map_err(|e| chain(&e)));
            }
            NetworkMsg::Reconcile => {
                let applied = state.applier.apply_manager_networks().await;
                if let Err(e) = &applied {
                    tracing::warn!(cause = %chain(e), "dataplane reconcile failed; retrying at the next pass");
                }
                state.reconciled(applied);
            }
        }
        Ok(())
    }
}

impl NetworkState {
    fn reconciled(&self, outcome: Result<(), NetworkError>) {
        introspect::reconciled(&self.name, "dataplane", outcome.map_err(|e| chain(&e)));
    }
}

/// Applies what a committed change asks: the manager's networks and the NAT table itself, each project's VLAN
/// network through its reconciler (started on first use), then the ends of leases. Every part is applied even
/// when one fails (a VLAN refresh that fails must not leave a floating IP forwarding to a released address);
/// the first failure is the answer.
async fn apply(applier: &Applier, trace: &Trace, changes: NetworkChanges) -> Result<(), NetworkError> {
    let mut outcomes = Vec::new();
    for network in changes.networks {
        outcomes.push(applier.apply_network(network).await);
    }
    let app = applier.app();
    for project in changes.vlan_projects {
        outcomes.push(VlanClient::new(app.ns(), project, app.timing().call).refresh(trace).await);
    }
    outcomes.push(applier.end_leases(changes.leases).await);
    if changes.nat {
        outcomes.push(applier.apply_nat().await);
    }
    outcomes.into_iter().collect()
}
