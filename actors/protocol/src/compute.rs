//! The compute agents' protocol (topic `compute.<host>`: exactly that host's agent), and what an agent is
//! sent to run an instance. These wire types are built from the store's records on the controller, so an
//! agent needs nothing of the store and the wire format does not change when the file format does.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use nimbus_runtime::{CallError, Namespace, Topic, Wire, rpc};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::ids::{HostId, InstanceId, NetworkId, PortId};
use crate::trace::{Trace, Traced};

pub const ROLE: &str = "compute";

pub fn topic(host: &HostId) -> Topic {
    Topic::keyed(ROLE, host)
}

/// What a host offers, as its agent registers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { vcpus: 16, ram_mb: 32768, disk_gb: 500 }
    }
}

/// Everything a driver needs to run one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub id: InstanceId,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub interfaces: Vec<NicSpec>,
}

/// How an interface gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Addressing {
    /// Written into the instance (flat networks).
    Injected,
    /// Asked for from the network's DHCP server.
    Dhcp,
}

/// One interface of an instance and the network it plugs into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    pub port: PortId,
    pub network: NetworkId,
    pub network_label: String,
    pub mac: String,
    pub address: Ipv4Addr,
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub addressing: Addressing,
    pub bridge: String,
    /// The host interface the bridge is attached to (the uplink), if any.
    pub bridge_interface: Option<String>,
    /// The segment id of a VLAN-mode network (an 802.1Q VLAN id, or a VXLAN VNI).
    pub vlan: Option<u16>,
    /// The name the instance gives its DHCP server.
    pub hostname: String,
    /// The network's MTU, if it has one set (its bridge has it, and the host end takes the bridge's).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// What a power action does to a running instance. Each is idempotent: stopping a stopped instance succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerAction {
    Stop,
    Start,
    /// The guest restarts itself (nova's SOFT reboot).
    SoftReboot,
    /// The hypervisor restarts the guest, whatever state it is in (nova's HARD reboot).
    HardReboot,
    Pause,
    Unpause,
    Suspend,
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum VirtError {
    #[error("the hypervisor refused to spawn {id}")]
    Spawn {
        id: InstanceId,
        #[source]
        cause: Failure,
    },
    #[error("the hypervisor failed to destroy {id}")]
    Destroy {
        id: InstanceId,
        #[source]
        cause: Failure,
    },
    #[error("the hypervisor could not {action:?} {id}")]
    Power {
        id: InstanceId,
        action: PowerAction,
        #[source]
        cause: Failure,
    },
    #[error("the hypervisor could not install the host's firewall")]
    Firewall(#[source] Failure),
    #[error("the hypervisor could not change the interfaces of {id}")]
    Interfaces {
        id: InstanceId,
        #[source]
        cause: Failure,
    },
}

/// Why a call to a compute agent did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ComputeError {
    /// The agent answered that its driver failed (and cleaned up after itself).
    #[error("{host} failed")]
    Virt {
        host: HostId,
        #[source]
        source: VirtError,
    },
    /// The agent did not answer; what it did is unknown.
    #[error("{host} did not answer")]
    NoAnswer {
        host: HostId,
        #[source]
        source: CallError,
    },
}

pub type StepReply = Wire<Result<(), VirtError>>;

#[derive(RactorClusterMessage)]
pub enum ComputeMsg {
    /// Runs the instance (idempotent: a running instance is left as it is). On failure nothing of it is left.
    #[rpc]
    Build(Wire<Traced<InstanceSpec>>, RpcReplyPort<StepReply>),
    /// Destroys the instance here (idempotent).
    #[rpc]
    Destroy(Wire<Traced<InstanceId>>, RpcReplyPort<StepReply>),
    /// Powers the instance here off, on, through a reboot, into a pause or a suspension, or out of one.
    #[rpc]
    Power(Wire<Traced<(InstanceId, PowerAction)>>, RpcReplyPort<StepReply>),
    /// Gives the running instance exactly the spec's interfaces (plugs those added, unplugs those removed).
    #[rpc]
    SetInterfaces(Wire<Traced<InstanceSpec>>, RpcReplyPort<StepReply>),
    /// The host's uptime line, as `uptime` prints it (what nova's `os-hypervisors/{id}/uptime` shows).
    #[rpc]
    Uptime(RpcReplyPort<Wire<String>>),
    /// Timer: report this host to the scheduler, and reconcile if the last attempt could not.
    ReportIn,
}

/// Calls one host's compute agent.
#[derive(Clone, Debug)]
pub struct ComputeClient {
    ns: Namespace,
    host: HostId,
}

impl ComputeClient {
    pub fn new(ns: &Namespace, host: &HostId) -> ComputeClient {
        ComputeClient { ns: ns.clone(), host: host.clone() }
    }

    /// Runs the instance on this host, waiting at most `timeout`.
    pub async fn build(&self, trace: &Trace, spec: InstanceSpec, timeout: Duration) -> Result<(), ComputeError> {
        let request = Wire(Traced::new(trace, spec));
        self.step(|r| ComputeMsg::Build(request, r), timeout).await
    }

    /// Destroys the instance on this host, waiting at most `timeout`.
    pub async fn destroy(&self, trace: &Trace, id: InstanceId, timeout: Duration) -> Result<(), ComputeError> {
        let request = Wire(Traced::new(trace, id));
        self.step(|r| ComputeMsg::Destroy(request, r), timeout).await
    }

    /// Applies the power action to the instance on this host, waiting at most `timeout`.
    pub async fn power(
        &self,
        trace: &Trace,
        id: InstanceId,
        action: PowerAction,
        timeout: Duration,
    ) -> Result<(), ComputeError> {
        let request = Wire(Traced::new(trace, (id, action)));
        self.step(|r| ComputeMsg::Power(request, r), timeout).await
    }

    /// Gives the running instance the spec's interfaces, waiting at most `timeout`.
    pub async fn set_interfaces(
        &self,
        trace: &Trace,
        spec: InstanceSpec,
        timeout: Duration,
    ) -> Result<(), ComputeError> {
        let request = Wire(Traced::new(trace, spec));
        self.step(|r| ComputeMsg::SetInterfaces(request, r), timeout).await
    }

    /// The host's uptime line, waiting at most `timeout`.
    pub async fn uptime(&self, timeout: Duration) -> Result<String, ComputeError> {
        let Wire(line) = rpc::call_topic(&self.ns, &topic(&self.host), ComputeMsg::Uptime, timeout)
            .await
            .map_err(|source| ComputeError::NoAnswer { host: self.host.clone(), source })?;
        Ok(line)
    }

    async fn step(
        &self,
        make: impl FnOnce(RpcReplyPort<StepReply>) -> ComputeMsg,
        timeout: Duration,
    ) -> Result<(), ComputeError> {
        let host = || self.host.clone();
        let Wire(reply) = rpc::call_topic(&self.ns, &topic(&self.host), make, timeout)
            .await
            .map_err(|source| ComputeError::NoAnswer { host: host(), source })?;
        reply.map_err(|source| ComputeError::Virt { host: host(), source })
    }
}
