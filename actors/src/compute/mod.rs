//! The compute agent: one per host (`compute/host-0003`, topic `compute.host-0003`). It runs and destroys
//! instances through its virt driver, reports its host to the scheduler at an interval, and on every start
//! reconciles the driver with what the cloud says runs here (those instances run; nothing else does).
//!
//! It knows nothing of the store: everything it needs arrives in messages (the protocol's wire types) and
//! everything it knows leaves in them, so an agent can run on a host of its own, away from the controllers.
//!
//! # Layout
//! - [`virt`]: the virt driver contract and the `fake` driver; [`netns`]: instances as network namespaces;
//!   [`plumbing`]: a compute node's own side of each network (multi_host).

pub mod netns;
pub mod plumbing;
pub mod virt;

use std::net::Ipv4Addr;
use std::sync::Arc;

use nimbus_protocol::compute::{self, ComputeMsg, VirtError};
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::HostId;
use nimbus_protocol::scheduler::{HostReport, Placement, SchedulerClient};
use nimbus_protocol::trace::Traced;
use nimbus_runtime::{Namespace, Wire, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::timing::Timing;
use virt::VirtDriver;

pub struct ComputeArgs {
    /// The cluster node this agent runs on (`local` in an all-in-one cloud), and its cluster address.
    pub node: String,
    pub node_address: Option<String>,
    pub ns: Namespace,
    pub timing: Timing,
    pub host: HostId,
    pub host_ip: Ipv4Addr,
    pub driver: Arc<dyn VirtDriver>,
}

pub struct ComputeState {
    name: String,
    node: String,
    node_address: Option<String>,
    scheduler: SchedulerClient,
    host: HostId,
    host_ip: Ipv4Addr,
    driver: Arc<dyn VirtDriver>,
    reconciled: bool,
}

pub struct ComputeAgent;

impl Actor for ComputeAgent {
    type Msg = ComputeMsg;
    type State = ComputeState;
    type Arguments = ComputeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ComputeMsg>,
        args: ComputeArgs,
    ) -> Result<ComputeState, ActorProcessingErr> {
        let mut state = ComputeState {
            name: myself.get_name().unwrap_or_default(),
            node: args.node,
            node_address: args.node_address,
            scheduler: SchedulerClient::new(&args.ns, args.timing.call),
            host: args.host,
            host_ip: args.host_ip,
            driver: args.driver,
            reconciled: false,
        };
        // Registered and reconciled before it takes work; if the scheduler cannot be reached now, the timer
        // tries again.
        state.report_and_reconcile().await;
        args.ns.join(&compute::topic(&state.host), myself.get_cell());
        myself.send_interval(args.timing.report_interval, || ComputeMsg::ReportIn);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ComputeMsg>,
        msg: ComputeMsg,
        state: &mut ComputeState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        // Builds and destroys run on their own tasks: one slow spawn does not hold up the others.
        match msg {
            ComputeMsg::Build(Wire(Traced { trace, body: spec }), reply) => {
                let driver = state.driver.clone();
                let span = tracing::info_span!("build", request_id = %trace, actor = %state.name, instance = %spec.id);
                tokio::spawn(
                    async move {
                        let id = spec.id;
                        let outcome = match driver.spawn(spec).await {
                            Ok(()) => {
                                tracing::info!("instance spawned");
                                Ok(())
                            }
                            Err(e) => {
                                tracing::warn!(cause = %chain(&e), "spawn failed; cleaning up");
                                // Leave nothing behind for the retry on another host.
                                let _ = driver.destroy(id).await;
                                Err(e)
                            }
                        };
                        let _ = reply.send(Wire(outcome));
                    }
                    .instrument(span),
                );
            }
            ComputeMsg::Destroy(Wire(Traced { trace, body: id }), reply) => {
                let driver = state.driver.clone();
                let span = tracing::info_span!("destroy", request_id = %trace, actor = %state.name, instance = %id);
                tokio::spawn(
                    async move {
                        let outcome = driver.destroy(id).await;
                        match &outcome {
                            Ok(()) => tracing::info!("instance destroyed"),
                            Err(e) => tracing::warn!(cause = %chain(e), "destroy failed"),
                        }
                        let _ = reply.send(Wire(outcome));
                    }
                    .instrument(span),
                );
            }
            ComputeMsg::ReportIn => state.report_and_reconcile().await,
        }
        Ok(())
    }
}

impl ComputeState {
    fn report(&self) -> HostReport {
        HostReport {
            name: self.host.clone(),
            capacity: self.driver.capacity(),
            hypervisor_type: self.driver.kind().to_string(),
            host_ip: self.host_ip,
            node: self.node.clone(),
            node_address: self.node_address.clone(),
        }
    }

    /// Reports the host (the scheduler records it and marks it up) and, until it has succeeded once,
    /// reconciles the driver with the instances the cloud places here.
    async fn report_and_reconcile(&mut self) {
        let outcome = match self.scheduler.report_in(self.report()).await {
            Ok(placed) if !self.reconciled => match self.reconcile(placed).await {
                Ok(()) => {
                    self.reconciled = true;
                    Ok(())
                }
                Err(e) => Err(format!("reconcile failed; retrying at the next report: {}", chain(&e))),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(format!("cannot report to the scheduler; retrying: {}", chain(&e))),
        };
        if let Err(e) = &outcome {
            tracing::warn!(host = %self.host, cause = %e, "host report");
        }
        introspect::reconciled(&self.name, "report", outcome);
    }

    /// Makes the hypervisor run the instances active here and nothing the cloud does not place here.
    /// Instances being built here are left to their conductor, which repeats or undoes its step.
    async fn reconcile(&self, placed: Placement) -> Result<(), VirtError> {
        for spec in &placed.active {
            self.driver.spawn(spec.clone()).await?;
        }
        for id in self.driver.list().await? {
            if !placed.active.iter().any(|s| s.id == id) && !placed.building.contains(&id) {
                tracing::info!(host = %self.host, instance = %id, "destroying an instance the cloud does not place here");
                self.driver.destroy(id).await?;
            }
        }
        Ok(())
    }
}
