//! Dataplane drivers: the one contract through which the network side changes the kernel (bridges,
//! segments, DHCP, NAT, VPN forwarding), and the `sim` driver, which records the state it was asked for.
//! [`linux`] is the real driver.
//!
//! Every call states the whole desired state of one thing (a network's segment, the NAT table, a project's VPN
//! forward); a driver makes the kernel match it. Callers compute that state from the store each time
//! (`app::dataplane_state`), so the same call both applies a change and repairs drift. Drivers know nothing of
//! the store.

pub mod linux;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Mutex;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_protocol::network::{DataplaneError, LeaseAction, LeaseEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub type DataplaneFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DataplaneError>> + Send + 'a>>;

/// One DHCP host entry (dnsmasq's `mac,hostname,ip`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DhcpHost {
    pub mac: String,
    pub hostname: String,
    pub address: Ipv4Addr,
}

/// Everything one network needs on a host: its bridge, its segment, and its DHCP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub network: NetworkId,
    pub label: String,
    pub bridge: String,
    pub bridge_interface: Option<String>,
    /// VLAN mode: the segment id (the network leaves the host over a VLAN or VXLAN link).
    pub vlan: Option<u16>,
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
    /// FlatDHCP / VLAN: the server's address and its host entries.
    pub dhcp: Option<(Ipv4Addr, BTreeSet<DhcpHost>)>,
    /// The network's `dns1` / `dns2`: where its DNS server sends the names it does not know, and handed
    /// out to its instances after that server.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The network's MTU, if it has one set: its bridge and segment link have it, DHCP hands it out.
    pub mtu: Option<u32>,
    /// The domain its DHCP server names instances under (`vm1.novalocal`).
    pub dhcp_domain: String,
}

/// A network's bridge and segment on a compute host (multi_host): no addresses, no DHCP server; those stay
/// on the network host, reached over the segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSegment {
    pub network: NetworkId,
    pub bridge: String,
    pub bridge_interface: Option<String>,
    /// VLAN mode: the segment id.
    pub vlan: Option<u16>,
    /// The network's MTU, if it has one set (segments saved by an older nimbus have none).
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Segment {
    /// The part of the segment every host of the network has.
    pub fn host_part(&self) -> HostSegment {
        HostSegment {
            network: self.network,
            bridge: self.bridge.clone(),
            bridge_interface: self.bridge_interface.clone(),
            vlan: self.vlan,
            mtu: self.mtu,
        }
    }
}

/// A floating address NATed to a fixed one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FloatingNat {
    pub floating: Ipv4Addr,
    pub fixed: Ipv4Addr,
    pub interface: String,
}

/// The whole NAT table: floating addresses, the fixed ranges SNATed for outbound traffic, and the metadata
/// service's address on every network's bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nat {
    pub floating: BTreeSet<FloatingNat>,
    pub snat_ranges: BTreeSet<Ipv4Network>,
    pub metadata: BTreeSet<MetadataRedirect>,
}

/// Where the metadata service's address leads from one network: `169.254.169.254:80`, asked on `bridge`, is
/// answered at `gateway:`[`METADATA_PORT`] on the network host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetadataRedirect {
    pub bridge: String,
    pub gateway: Ipv4Addr,
}

/// The address instances ask for their metadata (the link-local one every cloud uses).
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The port the network host's metadata listener answers on (nova's `metadata_port`).
pub const METADATA_PORT: u16 = 8775;

/// A project's VPN endpoint: UDP `public:port` forwarded to `private:1194`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnForward {
    pub project: ProjectId,
    pub network: NetworkId,
    pub public_address: Option<Ipv4Addr>,
    pub public_port: u16,
    pub private_address: Ipv4Addr,
}

/// The contract of a dataplane driver. Every method is idempotent.
pub trait Dataplane: Send + Sync + 'static {
    /// `sim`, `linux`.
    fn kind(&self) -> &'static str;
    /// Makes the network's bridge, segment and DHCP server exactly `segment`.
    fn ensure_segment(&self, segment: Segment) -> DataplaneFuture<'_>;
    /// Removes everything of the network.
    fn remove_segment(&self, network: NetworkId) -> DataplaneFuture<'_>;
    /// A compute host's side of a network: its bridge and segment link (left in place when it exists).
    fn ensure_host_segment(&self, segment: HostSegment) -> DataplaneFuture<'_>;
    /// Replaces the NAT table, atomically.
    fn apply_nat(&self, nat: Nat) -> DataplaneFuture<'_>;
    /// Makes the project's VPN forward exactly `vpn` (or removes it).
    fn ensure_vpn(&self, project: ProjectId, vpn: Option<VpnForward>) -> DataplaneFuture<'_>;
    /// Ends a DHCP lease now (dnsmasq's `dhcp_release`), so the address can be reused at once.
    fn release_lease(&self, network: NetworkId, mac: String, address: Ipv4Addr) -> DataplaneFuture<'_>;
    /// Where lease events go; the network manager subscribes when it starts.
    fn subscribe(&self, events: mpsc::UnboundedSender<LeaseEvent>);
}

/// The recorded state of the `sim` driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimState {
    pub segments: BTreeMap<NetworkId, Segment>,
    pub host_segments: BTreeMap<NetworkId, HostSegment>,
    pub nat: Nat,
    pub vpns: BTreeMap<ProjectId, VpnForward>,
}

/// A dataplane that records what it is asked for. Its DHCP servers grant a lease to every host entry at once
/// and report it, and end leases on release, as a real one would once the instance asks.
#[derive(Default)]
pub struct SimDataplane {
    state: Mutex<SimState>,
    events: Mutex<Option<mpsc::UnboundedSender<LeaseEvent>>>,
    lose_releases: std::sync::atomic::AtomicBool,
}

impl SimDataplane {
    pub fn new() -> SimDataplane {
        SimDataplane::default()
    }

    /// Makes released leases go unreported, as when a DHCP server dies before its script runs (for tests of
    /// the reclaim timer).
    pub fn lose_releases(&self, lose: bool) {
        self.lose_releases.store(lose, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forgets everything it was asked for, as a network host that rebooted (for tests of re-application).
    pub fn forget(&self) {
        *self.state.lock().expect("sim dataplane lock") = SimState::default();
    }

    pub fn state(&self) -> SimState {
        self.state.lock().expect("sim dataplane lock").clone()
    }

    fn emit(&self, event: LeaseEvent) {
        if let Some(events) = self.events.lock().expect("sim dataplane lock").as_ref() {
            let _ = events.send(event);
        }
    }
}

impl Dataplane for SimDataplane {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn ensure_segment(&self, segment: Segment) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let network = segment.network;
            let new_hosts: Vec<DhcpHost> = {
                let mut state = self.state.lock().expect("sim dataplane lock");
                let before = state
                    .segments
                    .get(&network)
                    .and_then(|s| s.dhcp.as_ref())
                    .map(|(_, h)| h.clone())
                    .unwrap_or_default();
                let after = segment.dhcp.as_ref().map(|(_, h)| h.clone()).unwrap_or_default();
                state.segments.insert(network, segment);
                after.difference(&before).cloned().collect()
            };
            for host in new_hosts {
                self.emit(LeaseEvent { network, action: LeaseAction::Add, mac: host.mac, address: host.address });
            }
            Ok(())
        })
    }

    fn remove_segment(&self, network: NetworkId) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().expect("sim dataplane lock");
            state.segments.remove(&network);
            state.host_segments.remove(&network);
            Ok(())
        })
    }

    fn ensure_host_segment(&self, segment: HostSegment) -> DataplaneFuture<'_> {
        Box::pin(async move {
            self.state.lock().expect("sim dataplane lock").host_segments.insert(segment.network, segment);
            Ok(())
        })
    }

    fn apply_nat(&self, nat: Nat) -> DataplaneFuture<'_> {
        Box::pin(async move {
            self.state.lock().expect("sim dataplane lock").nat = nat;
            Ok(())
        })
    }

    fn ensure_vpn(&self, project: ProjectId, vpn: Option<VpnForward>) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().expect("sim dataplane lock");
            match vpn {
                Some(vpn) => state.vpns.insert(project, vpn),
                None => state.vpns.remove(&project),
            };
            Ok(())
        })
    }

    fn release_lease(&self, network: NetworkId, mac: String, address: Ipv4Addr) -> DataplaneFuture<'_> {
        Box::pin(async move {
            if !self.lose_releases.load(std::sync::atomic::Ordering::SeqCst) {
                self.emit(LeaseEvent { network, action: LeaseAction::Del, mac, address });
            }
            Ok(())
        })
    }

    fn subscribe(&self, events: mpsc::UnboundedSender<LeaseEvent>) {
        *self.events.lock().expect("sim dataplane lock") = Some(events);
    }
}

/// The behaviour every dataplane driver shares; the `sim` and the `linux` driver both run it, each observed
/// its own way (the sim's record, the kernel's state).
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    /// What a driver has made of the calls so far.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Observed {
        pub bridges: BTreeSet<String>,
        pub dhcp: BTreeSet<NetworkId>,
        /// (floating, fixed)
        pub floating: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    }

    fn segment(n: u8, dhcp: bool) -> Segment {
        let cidr: Ipv4Network = format!("10.{n}.0.0/24").parse().unwrap();
        let gateway = Ipv4Addr::new(10, n, 0, 1);
        Segment {
            network: NetworkId(uuid::Uuid::from_bytes([n; 16])),
            label: format!("net{n}"),
            bridge: format!("brc{n}"),
            bridge_interface: None,
            vlan: None,
            cidr,
            gateway,
            dns_servers: Vec::new(),
            mtu: None,
            dhcp_domain: "novalocal".into(),
            dhcp: dhcp.then(|| {
                let host = DhcpHost {
                    mac: format!("fa:16:3e:00:00:{n:02x}"),
                    hostname: format!("vm{n}"),
                    address: Ipv4Addr::new(10, n, 0, 2),
                };
                (gateway, [host].into())
            }),
        }
    }

    pub async fn check<F, Fut>(driver: &dyn Dataplane, public_interface: &str, observe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Observed>,
    {
        let (a, b) = (segment(1, true), segment(2, false));
        driver.ensure_segment(a.clone()).await.expect("ensure a");
        driver.ensure_segment(a.clone()).await.expect("ensuring the same segment again succeeds");
        driver.ensure_segment(b.clone()).await.expect("ensure b");
        driver.ensure_host_segment(b.host_part()).await.expect("a host segment over an existing bridge");
        let seen = observe().await;
        assert_eq!(seen.bridges, ["brc1".to_string(), "brc2".to_string()].into());
        assert_eq!(seen.dhcp, [a.network].into(), "a DHCP server for the DHCP network only");

        let floating = FloatingNat {
            floating: "198.51.100.20".parse().unwrap(),
            fixed: "10.1.0.2".parse().unwrap(),
            interface: public_interface.into(),
        };
        let metadata = MetadataRedirect { bridge: a.bridge.clone(), gateway: a.gateway };
        let nat = Nat {
            floating: [floating.clone()].into(),
            snat_ranges: [a.cidr, b.cidr].into(),
            metadata: [metadata].into(),
        };
        driver.apply_nat(nat.clone()).await.expect("apply the NAT table");
        driver.apply_nat(nat).await.expect("applying the same table again succeeds");
        assert_eq!(observe().await.floating, [(floating.floating, floating.fixed)].into());
        let nat = Nat { floating: BTreeSet::new(), snat_ranges: [a.cidr].into(), metadata: BTreeSet::new() };
        driver.apply_nat(nat).await.unwrap();
        assert!(observe().await.floating.is_empty(), "a floating address left out is removed");

        let project = ProjectId(uuid::Uuid::from_bytes([9; 16]));
        driver.ensure_vpn(project, None).await.expect("no VPN for a project without one");
        driver
            .release_lease(NetworkId::generate(), "fa:16:3e:00:00:99".into(), "10.9.0.2".parse().unwrap())
            .await
            .expect("releasing on an unknown network is a no-op");

        driver.remove_segment(a.network).await.expect("remove a");
        driver.remove_segment(a.network).await.expect("removing a removed segment succeeds");
        driver.remove_segment(NetworkId::generate()).await.expect("removing an unknown segment succeeds");
        let seen = observe().await;
        assert_eq!(seen.bridges, ["brc2".to_string()].into());
        assert!(seen.dhcp.is_empty(), "its DHCP server is gone");
        driver.remove_segment(b.network).await.unwrap();
        let c = segment(3, false);
        driver.ensure_host_segment(c.host_part()).await.expect("a compute host's segment");
        driver.ensure_host_segment(c.host_part()).await.expect("again");
        assert_eq!(observe().await.bridges, ["brc3".to_string()].into());
        driver.remove_segment(c.network).await.unwrap();
        driver.apply_nat(Nat::default()).await.unwrap();
        assert_eq!(observe().await, Observed::default(), "nothing is left");
    }

    #[tokio::test]
    async fn the_sim_driver_keeps_the_contract() {
        let sim = SimDataplane::new();
        check(&sim, "eth0", || async {
            let state = sim.state();
            Observed {
                bridges: state
                    .segments
                    .values()
                    .map(|s| s.bridge.clone())
                    .chain(state.host_segments.values().map(|s| s.bridge.clone()))
                    .collect(),
                dhcp: state.segments.values().filter(|s| s.dhcp.is_some()).map(|s| s.network).collect(),
                floating: state.nat.floating.iter().map(|f| (f.floating, f.fixed)).collect(),
            }
        })
        .await;
    }
}
