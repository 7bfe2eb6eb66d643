//! The compute agent: one per host (`compute/host-0003`, topic `compute.host-0003`). It runs and destroys
//! instances through its virt driver, reports its host to the scheduler at an interval, and on every start
//! reconciles the driver with what the cloud says runs here (those instances run; nothing else does).
//!
//! It never touches the store: everything it needs arrives in messages and everything it knows leaves in
//! them, so an agent can run on a host of its own, away from the controller that owns the store.

pub mod netns;
pub mod plumbing;
pub mod virt;

use std::net::Ipv4Addr;
use std::sync::Arc;

use nimbus_runtime::{Topic, Wire, rpc};
use nimbus_storage::ids::{HostId, InstanceId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::context::Timing;
use crate::scheduler::{self, HostReport, Placement, SchedulerMsg};
use nimbus_runtime::Namespace;
use virt::{InstanceSpec, VirtDriver};

pub const ROLE: &str = "compute";

pub fn topic(host: &HostId) -> Topic {
    Topic::keyed(ROLE, host)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ComputeError {
    #[error("{0}")]
    Virt(String),
}

pub type StepReply = Wire<Result<(), ComputeError>>;

#[derive(RactorClusterMessage)]
pub enum ComputeMsg {
    /// Runs the instance (idempotent: a running instance is left as it is). On failure nothing of it is left.
    #[rpc]
    Build(Wire<InstanceSpec>, RpcReplyPort<StepReply>),
    /// Destroys the instance here (idempotent).
    #[rpc]
    Destroy(Wire<InstanceId>, RpcReplyPort<StepReply>),
    /// Timer: report this host to the scheduler, and reconcile if the last attempt could not.
    ReportIn,
}

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
    node: String,
    node_address: Option<String>,
    ns: Namespace,
    timing: Timing,
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
            node: args.node,
            node_address: args.node_address,
            ns: args.ns,
            timing: args.timing,
            host: args.host,
            host_ip: args.host_ip,
            driver: args.driver,
            reconciled: false,
        };
        // Registered and reconciled before it takes work; if the scheduler cannot be reached now, the timer
        // tries again.
        state.report_and_reconcile().await;
        state.ns.join(&topic(&state.host), myself.get_cell());
        myself.send_interval(state.timing.report_interval, || ComputeMsg::ReportIn);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ComputeMsg>,
        msg: ComputeMsg,
        state: &mut ComputeState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            ComputeMsg::Build(Wire(spec), reply) => {
                let driver = state.driver.clone();
                tokio::spawn(async move {
                    let id = spec.id;
                    let outcome = match driver.spawn(spec).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            // Leave nothing behind for the retry on another host.
                            let _ = driver.destroy(id).await;
                            Err(ComputeError::Virt(e.to_string()))
                        }
                    };
                    let _ = reply.send(Wire(outcome));
                });
            }
            ComputeMsg::Destroy(Wire(id), reply) => {
                let driver = state.driver.clone();
                tokio::spawn(async move {
                    let outcome = driver.destroy(id).await.map_err(|e| ComputeError::Virt(e.to_string()));
                    let _ = reply.send(Wire(outcome));
                });
            }
            ComputeMsg::ReportIn => state.report_and_reconcile().await,
        }
        Ok(())
    }
}

impl ComputeState {
    fn report(&self) -> HostReport {
        let capacity = self.driver.capacity();
        HostReport {
            name: self.host.clone(),
            vcpus: capacity.vcpus,
            ram_mb: capacity.ram_mb,
            disk_gb: capacity.disk_gb,
            hypervisor_type: self.driver.kind().to_string(),
            host_ip: self.host_ip,
            node: self.node.clone(),
            node_address: self.node_address.clone(),
        }
    }

    /// Reports the host (the scheduler records it and marks it up) and, until it has succeeded once,
    /// reconciles the driver with the instances the cloud places here.
    async fn report_and_reconcile(&mut self) {
        let report = self.report();
        let timeout = self.timing.call;
        let placed =
            rpc::call_topic(&self.ns, &scheduler::TOPIC, |r| SchedulerMsg::ReportIn(Wire(report), r), timeout).await;
        match placed {
            Ok(Wire(Ok(placed))) if !self.reconciled => match self.reconcile(placed).await {
                Ok(()) => self.reconciled = true,
                Err(e) => {
                    tracing::warn!(host = %self.host, cause = %e, "reconcile failed; retrying at the next report")
                }
            },
            Ok(Wire(Ok(_))) => {}
            Ok(Wire(Err(e))) => {
                tracing::warn!(host = %self.host, cause = %e, "the scheduler could not record this host")
            }
            Err(e) => tracing::warn!(host = %self.host, cause = %e, "cannot report to the scheduler; retrying"),
        }
    }

    /// Makes the hypervisor run the instances active here and nothing the cloud does not place here.
    /// Instances being built here are left to their conductor, which repeats or undoes its step.
    async fn reconcile(&self, placed: Placement) -> Result<(), virt::VirtError> {
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
