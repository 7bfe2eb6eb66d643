//! The network side's protocol: the network manager (topic `network`; any member may answer), which owns
//! the network host's dataplane, and the VLAN reconcilers (`vlan/<project>`, topic `vlan.<project>`), which
//! own the VLAN network of one project each. Every change is committed to the store first; these messages
//! only ask for the kernel to be brought in line with it.

use std::net::Ipv4Addr;
use std::time::Duration;

use nimbus_runtime::{CallError, Namespace, Topic, Wire, rpc, supervisor};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::ids::{NetworkId, ProjectId};
use crate::trace::{Trace, Traced};

pub const TOPIC: Topic = Topic::Role("network");
pub const VLAN_ROLE: &str = "vlan";
/// The registered name of the supervisor of the VLAN reconcilers, which makes them on demand.
pub const VLANS: &str = "vlans";

pub fn vlan_topic(project: &ProjectId) -> Topic {
    Topic::keyed(VLAN_ROLE, project)
}

/// What a DHCP server reported about a lease (dnsmasq's `--dhcp-script` actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAction {
    Add,
    Old,
    Del,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEvent {
    pub network: NetworkId,
    pub action: LeaseAction,
    pub mac: String,
    pub address: Ipv4Addr,
}

/// A DHCP lease to end now (dnsmasq's `dhcp_release`), so its address can be handed out again at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndLease {
    pub network: NetworkId,
    pub mac: String,
    pub address: Ipv4Addr,
}

/// What a committed change asks of the network host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkChanges {
    /// Networks of the network manager whose segment or DHCP hosts changed, or that are gone or unbound
    /// (their segment is removed).
    pub networks: Vec<NetworkId>,
    /// Projects whose VLAN network or VPN endpoint changed: their VLAN reconcilers re-apply.
    pub vlan_projects: Vec<ProjectId>,
    /// The NAT table changed (floating IPs, fixed ranges).
    pub nat: bool,
    pub leases: Vec<EndLease>,
}

impl NetworkChanges {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.vlan_projects.is_empty() && !self.nat && self.leases.is_empty()
    }

    /// Adds `other`'s changes to these.
    pub fn merge(&mut self, other: NetworkChanges) {
        for network in other.networks {
            if !self.networks.contains(&network) {
                self.networks.push(network);
            }
        }
        for project in other.vlan_projects {
            if !self.vlan_projects.contains(&project) {
                self.vlan_projects.push(project);
            }
        }
        self.nat |= other.nat;
        self.leases.extend(other.leases);
    }
}

/// What the kernel refused: what the driver was doing, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{action}")]
pub struct DataplaneError {
    pub action: String,
    #[source]
    pub cause: Failure,
}

impl DataplaneError {
    pub fn new(action: impl Into<String>, cause: &(dyn std::error::Error + 'static)) -> DataplaneError {
        DataplaneError { action: action.into(), cause: Failure::of(cause) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NetworkError {
    #[error("the network host could not apply the change")]
    Dataplane(#[source] DataplaneError),
    #[error("the network side could not read the store")]
    Store(#[source] Failure),
    #[error("the VLAN reconciler of project {project} is not available")]
    VlanUnavailable {
        project: ProjectId,
        #[source]
        source: Failure,
    },
    #[error("the network manager did not answer")]
    NoAnswer(#[source] CallError),
}

pub type NetworkReply = Wire<Result<(), NetworkError>>;

#[derive(RactorClusterMessage)]
pub enum NetworkMsg {
    /// Brings the network host in line with a committed change.
    #[rpc]
    Apply(Wire<Traced<NetworkChanges>>, RpcReplyPort<NetworkReply>),
    /// A DHCP server's report about a lease.
    Lease(Wire<LeaseEvent>),
    /// Timer: free fixed IPs whose DHCP release never came.
    Reclaim,
    /// Timer: re-apply the dataplane state the store implies.
    Reconcile,
}

/// Calls the network manager, whichever member of its topic runs now.
#[derive(Clone, Debug)]
pub struct NetworkClient {
    ns: Namespace,
    timeout: Duration,
}

impl NetworkClient {
    pub fn new(ns: &Namespace, timeout: Duration) -> NetworkClient {
        NetworkClient { ns: ns.clone(), timeout }
    }

    /// Has the network host apply `changes` (nothing to do for none).
    pub async fn apply(&self, trace: &Trace, changes: NetworkChanges) -> Result<(), NetworkError> {
        if changes.is_empty() {
            return Ok(());
        }
        let request = Wire(Traced::new(trace, changes));
        let Wire(reply) = rpc::call_topic(&self.ns, &TOPIC, |r| NetworkMsg::Apply(request, r), self.timeout)
            .await
            .map_err(NetworkError::NoAnswer)?;
        reply
    }
}

#[derive(RactorClusterMessage)]
pub enum VlanMsg {
    /// Re-applies the project's segment, DHCP server and VPN endpoint from the store.
    #[rpc]
    Refresh(Wire<Trace>, RpcReplyPort<NetworkReply>),
    /// Timer: the same, to repair drift.
    Tick,
}

/// Calls the VLAN reconciler of one project, starting it first if it does not run.
#[derive(Clone, Debug)]
pub struct VlanClient {
    ns: Namespace,
    project: ProjectId,
    timeout: Duration,
}

impl VlanClient {
    pub fn new(ns: &Namespace, project: ProjectId, timeout: Duration) -> VlanClient {
        VlanClient { ns: ns.clone(), project, timeout }
    }

    /// Has the project's VLAN reconciler re-apply everything of the project.
    pub async fn refresh(&self, trace: &Trace) -> Result<(), NetworkError> {
        let unavailable = |source: Failure| NetworkError::VlanUnavailable { project: self.project, source };
        if self.ns.members(&vlan_topic(&self.project)).is_empty() {
            supervisor::ensure_child_of(&self.ns.actor_name(VLANS), &self.project.to_string(), self.timeout)
                .await
                .map_err(|e| unavailable(Failure::of(&e)))?;
        }
        let trace = Wire(trace.clone());
        let Wire(reply) =
            rpc::call_topic(&self.ns, &vlan_topic(&self.project), |r| VlanMsg::Refresh(trace, r), self.timeout)
                .await
                .map_err(|e| unavailable(Failure::of(&e)))?;
        reply
    }
}
