//! The scheduler's protocol (topic `scheduler`; any member may answer): placements, and the reports compute
//! agents send about their hosts.

use std::net::Ipv4Addr;
use std::time::Duration;

use nimbus_runtime::{CallError, Namespace, Topic, Wire, rpc};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::compute::{Capacity, InstanceSpec, PowerAction};
use crate::failure::Failure;
use crate::ids::{HostId, InstanceId};
use crate::trace::{Trace, Traced};

pub const TOPIC: Topic = Topic::Role("scheduler");

/// What an instance needs of a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Hosts this instance's build already failed on (the retry filter).
    pub tried: Vec<HostId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRequest {
    pub instance: InstanceId,
    pub demand: Demand,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("No valid host was found. {detail}")]
pub struct NoValidHost {
    pub detail: String,
}

/// What a compute agent reports about its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub name: HostId,
    pub capacity: Capacity,
    pub hypervisor_type: String,
    pub host_ip: Ipv4Addr,
    /// The cluster node the agent runs on, and its cluster address.
    pub node: String,
    pub node_address: Option<String>,
    /// The agent has not run its active instances again since it started: the answer carries their specs.
    pub restoring: bool,
    /// How often the agent reports (nodes set their own): whether an unchanged report may skip its write
    /// depends on when the next ones come.
    pub report_interval_ms: u64,
}

/// What the cloud places on a host, for its agent to reconcile with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Every instance placed there, in any state (those being built are their conductor's to finish or undo).
    pub instances: Vec<InstanceId>,
    /// The settled ones (active, stopped, paused, suspended), to run again: only for an agent that is
    /// restoring.
    pub restore: Vec<Restore>,
}

/// An instance to run again, and the power action that then puts it back in its state, if it is not
/// running (a stopped instance is spawned and stopped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    pub spec: InstanceSpec,
    pub then: Option<PowerAction>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SchedulerError {
    #[error(transparent)]
    NoValidHost(NoValidHost),
    #[error("the scheduler could not read or record the hosts")]
    Store(#[source] Failure),
    #[error("the scheduler did not answer")]
    NoAnswer(#[source] CallError),
}

pub type SchedulerReply<T> = Wire<Result<T, SchedulerError>>;

#[derive(RactorClusterMessage)]
pub enum SchedulerMsg {
    #[rpc]
    Place(Wire<Traced<PlaceRequest>>, RpcReplyPort<SchedulerReply<HostId>>),
    /// A compute agent reports in: the host is recorded (kept number and enabled flag) and marked up.
    #[rpc]
    ReportIn(Wire<HostReport>, RpcReplyPort<SchedulerReply<Placement>>),
    /// Timer: bring the host view in step with the store (between placements too, so what the store's
    /// watch tells never piles up).
    CatchUp,
}

/// Calls the scheduler, whichever member of its topic runs now.
#[derive(Clone, Debug)]
pub struct SchedulerClient {
    ns: Namespace,
    timeout: Duration,
}

impl SchedulerClient {
    pub fn new(ns: &Namespace, timeout: Duration) -> SchedulerClient {
        SchedulerClient { ns: ns.clone(), timeout }
    }

    /// The host the instance should be built on.
    pub async fn place(&self, trace: &Trace, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        let request = Wire(Traced::new(trace, request));
        let Wire(reply) = rpc::call_topic(&self.ns, &TOPIC, |r| SchedulerMsg::Place(request, r), self.timeout)
            .await
            .map_err(SchedulerError::NoAnswer)?;
        reply
    }

    /// Reports a host; the answer says what the cloud places there.
    pub async fn report_in(&self, report: HostReport) -> Result<Placement, SchedulerError> {
        let Wire(reply) = rpc::call_topic(&self.ns, &TOPIC, |r| SchedulerMsg::ReportIn(Wire(report), r), self.timeout)
            .await
            .map_err(SchedulerError::NoAnswer)?;
        reply
    }
}
