//! The VLAN supervisor of one project (`vlan/<project>`, topic `vlan.<project>`): owns the dataplane of the
//! project's VLAN network — its segment, bridge and DHCP server — and its VPN endpoint. It starts with the
//! project's supervisor, rebuilds everything from the store when it (re)starts, and re-applies on request
//! and on a timer.

use nimbus_runtime::{Topic, Wire};
use nimbus_storage::ids::{NetworkId, ProjectId};
use nimbus_storage::schema::NETWORKS;
use nimbus_storage::{Reads, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::{NetworkError, Reply, desired};
use crate::Ctx;

pub const ROLE: &str = "vlan";

pub fn topic(project: &ProjectId) -> Topic {
    Topic::keyed(ROLE, project)
}

#[derive(RactorClusterMessage)]
pub enum VlanMsg {
    /// Re-applies the project's segment, DHCP server and VPN endpoint from the store.
    #[rpc]
    Refresh(RpcReplyPort<Reply<()>>),
    /// Timer: the same, to repair drift.
    Tick,
}

pub struct VlanArgs {
    pub ctx: Ctx,
    pub project: ProjectId,
}

pub struct VlanState {
    ctx: Ctx,
    project: ProjectId,
}

pub struct VlanSupervisor;

impl Actor for VlanSupervisor {
    type Msg = VlanMsg;
    type State = VlanState;
    type Arguments = VlanArgs;

    async fn pre_start(&self, myself: ActorRef<VlanMsg>, args: VlanArgs) -> Result<VlanState, ActorProcessingErr> {
        let state = VlanState { ctx: args.ctx, project: args.project };
        match state.apply().await {
            Err(NetworkError::Dataplane(e)) => {
                tracing::warn!(project = %state.project, cause = %e, "the project's dataplane is not in line with the store")
            }
            other => other?,
        }
        state.ctx.ns.join(&topic(&state.project), myself.get_cell());
        myself.send_interval(state.ctx.timing.reconcile_interval, || VlanMsg::Tick);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<VlanMsg>,
        msg: VlanMsg,
        state: &mut VlanState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            VlanMsg::Refresh(reply) => {
                let _ = reply.send(Wire(state.apply().await));
            }
            VlanMsg::Tick => {
                if let Err(e) = state.apply().await {
                    tracing::warn!(project = %state.project, cause = %e, "VLAN reconcile failed; retrying at the next pass");
                }
            }
        }
        Ok(())
    }
}

impl VlanState {
    async fn apply(&self) -> Result<(), NetworkError> {
        let project = self.project;
        let (networks, vpn) = self.ctx.store.read(|r| {
            let networks: Vec<NetworkId> = r
                .scan(&NETWORKS)?
                .into_iter()
                .filter(|(_, n)| !desired::owned_by_network_manager(n) && n.project == Some(project))
                .map(|(id, _)| id)
                .collect();
            Ok::<_, StoreError>((networks, desired::vpn(r, project)?))
        })?;
        for network in networks {
            super::apply_network(&self.ctx, network).await?;
        }
        let vpn = self.ctx.dataplane.ensure_vpn(project, vpn).await;
        vpn.map_err(|e| NetworkError::Dataplane(e.to_string()))
    }
}
