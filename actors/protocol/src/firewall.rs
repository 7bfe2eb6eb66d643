//! The firewall publisher's protocol (topic `firewall`; any member may answer): the security-group rules the
//! store implies for one host's instance ports, which that host's agent follows by asking again and again
//! (a long poll) and hands to its virt driver to enforce.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use nimbus_runtime::{CallError, Namespace, Topic, Wire, rpc};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::ids::{HostId, InstanceId, SecurityGroupId};

pub const TOPIC: Topic = Topic::Role("firewall");

/// Which way a rule lets traffic through, seen from the instance's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Flow {
    /// To the port.
    Ingress,
    /// From the port.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// The other end of the traffic a rule lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    Any,
    Cidr(Ipv4Network),
    /// The fixed addresses of the group's members, listed in [`HostFirewall::members`].
    Group(SecurityGroupId),
}

/// One kind of traffic a group lets through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FilterRule {
    pub flow: Flow,
    /// `None` is any protocol.
    pub protocol: Option<Protocol>,
    /// TCP and UDP: the destination port range. ICMP: the type and the code.
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub peer: Peer,
}

/// What the ports of one host's instances let through, whole: the host's driver replaces what it enforced
/// with it. An instance port the driver runs but this does not name lets nothing through but DHCP (its
/// rules have not arrived yet).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFirewall {
    /// Each instance on the host, and its security groups.
    pub instances: BTreeMap<InstanceId, Vec<SecurityGroupId>>,
    /// The rules of every group those instances are in.
    pub groups: BTreeMap<SecurityGroupId, Vec<FilterRule>>,
    /// The member addresses of every group a rule names as its peer.
    pub members: BTreeMap<SecurityGroupId, BTreeSet<Ipv4Addr>>,
}

/// Which computation of a host's firewall an agent holds. A publisher that restarts starts a new epoch, so
/// its versions never match what an agent was told before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallVersion {
    pub epoch: u64,
    pub sequence: u64,
}

/// An agent's ask: the host's firewall if it is not `have`, or else wait up to `hold` for it to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallAsk {
    pub host: HostId,
    pub have: Option<FirewallVersion>,
    pub hold: Duration,
}

/// The answer: `None` when `have` is still current after the hold.
pub type FirewallAnswer = Option<(FirewallVersion, HostFirewall)>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FirewallError {
    #[error("the firewall publisher could not read the store")]
    Store(#[source] Failure),
    #[error("the firewall publisher did not answer")]
    NoAnswer(#[source] CallError),
}

pub type FirewallReply = Wire<Result<FirewallAnswer, FirewallError>>;

#[derive(RactorClusterMessage)]
pub enum FirewallMsg {
    #[rpc]
    Ask(Wire<FirewallAsk>, RpcReplyPort<FirewallReply>),
    /// Timer: look for changes in the store, and answer the asks they concern or whose hold is over.
    Tick,
}

/// Asks the firewall publisher, whichever member of its topic runs now.
#[derive(Clone, Debug)]
pub struct FirewallClient {
    ns: Namespace,
    timeout: Duration,
}

impl FirewallClient {
    /// A client whose asks are held at most half of `timeout`, so the answer comes before the call gives up.
    pub fn new(ns: &Namespace, timeout: Duration) -> FirewallClient {
        FirewallClient { ns: ns.clone(), timeout }
    }

    /// `host`'s firewall when it differs from `have`, or `None` when it did not change for a while.
    pub async fn next(&self, host: &HostId, have: Option<FirewallVersion>) -> Result<FirewallAnswer, FirewallError> {
        let ask = Wire(FirewallAsk { host: host.clone(), have, hold: self.timeout / 2 });
        let Wire(reply) = rpc::call_topic(&self.ns, &TOPIC, |r| FirewallMsg::Ask(ask, r), self.timeout)
            .await
            .map_err(FirewallError::NoAnswer)?;
        reply
    }
}
