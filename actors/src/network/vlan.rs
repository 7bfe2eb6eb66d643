//! The VLAN reconcilers: one per project with a VLAN network (`vlan/<project>`, topic `vlan.<project>`),
//! under the `vlans` supervisor, which makes them on demand (the network manager asks for one when a
//! project's VLAN network is first used) and, on every start, for each project with a VLAN network bound.
//! A reconciler owns its project's segment, bridge, DHCP server and VPN forward: it rebuilds them from the
//! store when it (re)starts, and re-applies them on request and on a timer.

use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::ProjectId;
use nimbus_protocol::network::{self, NetworkError, VlanMsg};
use nimbus_runtime::supervisor::ChildTemplate;
use nimbus_runtime::{ChildSpec, Supervisor, SupervisorArgs, Wire, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use super::apply::Applier;
use crate::app::projects;

pub struct VlanArgs {
    pub applier: Applier,
    pub project: ProjectId,
}

pub struct VlanState {
    applier: Applier,
    project: ProjectId,
    name: String,
}

pub struct VlanReconciler;

impl Actor for VlanReconciler {
    type Msg = VlanMsg;
    type State = VlanState;
    type Arguments = VlanArgs;

    async fn pre_start(&self, myself: ActorRef<VlanMsg>, args: VlanArgs) -> Result<VlanState, ActorProcessingErr> {
        let state =
            VlanState { applier: args.applier, project: args.project, name: myself.get_name().unwrap_or_default() };
        let applied = state.applier.apply_project(state.project).await;
        if let Err(e @ NetworkError::Store(_)) = &applied {
            return Err(e.clone().into());
        }
        state.reconciled(applied);
        let app = state.applier.app();
        app.ns().join(&network::vlan_topic(&state.project), myself.get_cell());
        myself.send_interval(app.timing().reconcile_interval, || VlanMsg::Tick);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<VlanMsg>,
        msg: VlanMsg,
        state: &mut VlanState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            VlanMsg::Refresh(Wire(trace), reply) => {
                let span =
                    tracing::info_span!("refresh", request_id = %trace, actor = %state.name, project = %state.project);
                let outcome = state.applier.apply_project(state.project).instrument(span.clone()).await;
                span.in_scope(|| match &outcome {
                    Ok(()) => tracing::info!("project network in line"),
                    Err(e) => tracing::warn!(cause = %chain(e), "project network not in line"),
                });
                let _ = reply.send(Wire(outcome));
            }
            VlanMsg::Tick => {
                let applied = state.applier.apply_project(state.project).await;
                if let Err(e) = &applied {
                    tracing::warn!(project = %state.project, cause = %chain(e), "VLAN reconcile failed; retrying at the next pass");
                }
                state.reconciled(applied);
            }
        }
        Ok(())
    }
}

impl VlanState {
    fn reconciled(&self, outcome: Result<(), NetworkError>) {
        introspect::reconciled(&self.name, "dataplane", outcome.map_err(|e| chain(&e)));
    }
}

/// The spec of the `vlans` supervisor: a reconciler per project with a VLAN network bound (computed at every
/// (re)start from the store), and more on demand.
pub fn vlans_spec(applier: &Applier) -> ChildSpec {
    let applier = applier.clone();
    let ns = applier.app().ns().clone();
    ChildSpec::new(ns.actor_name(network::VLANS), move || {
        let reconciler = |applier: &Applier, project: ProjectId| {
            let applier = applier.clone();
            let name = applier.app().ns().actor_name(&format!("vlan/{project}"));
            ChildSpec::new(name, move || (VlanReconciler, VlanArgs { applier: applier.clone(), project }))
        };
        let bound = projects::with_vlan_networks(applier.app()).unwrap_or_else(|e| {
            tracing::error!(cause = %chain(&e), "cannot list projects with VLAN networks; their reconcilers start on demand");
            Default::default()
        });
        let children = bound.into_iter().map(|p| reconciler(&applier, p)).collect();
        let on_demand = applier.clone();
        let template: ChildTemplate = std::sync::Arc::new(move |key: &str| {
            let project = key.parse().map_err(|_| "VLAN reconcilers are made for project ids".to_string())?;
            Ok(reconciler(&on_demand, project))
        });
        (Supervisor, SupervisorArgs::one_for_one(children).with_template(template))
    })
}
