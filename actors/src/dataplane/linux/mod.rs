//! The `linux` dataplane driver: bridges, VXLAN or 802.1Q segments, one dnsmasq per DHCP network, the
//! `ip nimbus` nftables table and floating addresses on the public interfaces, all in one network namespace
//! (the host's own, or a named one for labs and tests).
//!
//! Every operation makes the kernel match the desired state it is given and touches only what is nimbus's:
//! its bridges and segment links, addresses marked with nimbus's address protocol, its own nftables table,
//! and the dnsmasq processes whose pid files it keeps. The driver outlives the actors that call it, so a
//! restarted network manager re-applies the same state without tearing anything down.
//!
//! # Layout
//! - [`segments`]: bridges, segment links and uplinks; [`dhcp`]: the dnsmasq processes, and [`dnsmasq`]
//!   their files and arguments (pure); [`leases`]: their lease events, and [`dhcp_release`] the DHCPRELEASE
//!   packets that end a lease; [`nat`]: the NAT table and the floating addresses.

mod dhcp;
mod dhcp_release;
mod dnsmasq;
mod leases;
mod nat;
mod segments;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_protocol::network::{DataplaneError, LeaseEvent};
use tokio::sync::mpsc;

use super::{Dataplane, DataplaneFuture, HostSegment, Nat, Segment, VpnForward};
use crate::kernel::{KernelError, netlink};
use dhcp::DhcpServer;
pub use nat::FLOATING_ADDRESS_PROTOCOL;
use nat::NatState;

/// How VLAN-mode networks are segmented on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// A VXLAN link per project (VNI = the network's VLAN id): no VLAN-capable switch needed.
    Vxlan,
    /// An 802.1Q link on the network's bridge interface, as nova did; needs the kernel's 8021q module.
    Vlan,
}

#[derive(Clone, Debug)]
pub struct LinuxConfig {
    /// The network namespace everything lives in; `None` is nimbus's own (a real network host).
    pub netns: Option<String>,
    /// DHCP hosts files, pid files, lease scripts and the segments applied.
    pub state_dir: PathBuf,
    pub segments: SegmentKind,
    /// VXLAN: the underlay device and multicast group that reach the other hosts of a segment.
    pub vxlan_dev: Option<String>,
    pub vxlan_group: Option<Ipv4Addr>,
}

pub struct LinuxDataplane {
    inner: Arc<Inner>,
}

struct Inner {
    config: LinuxConfig,
    /// Serializes segment changes: concurrent callers may pass states read at different times.
    segments: tokio::sync::Mutex<()>,
    dhcp: Mutex<BTreeMap<NetworkId, DhcpServer>>,
    nat: tokio::sync::Mutex<NatState>,
    events: Mutex<Option<mpsc::UnboundedSender<LeaseEvent>>>,
    event_offsets: Mutex<BTreeMap<NetworkId, u64>>,
}

impl LinuxDataplane {
    /// Checks root and the tools, enables forwarding in the namespace, and starts the housekeeping task
    /// (lease events, restarting dnsmasq processes that died).
    pub async fn start(mut config: LinuxConfig) -> Result<LinuxDataplane, KernelError> {
        crate::kernel::check_prerequisites(&["ip", "nft", "dnsmasq"])?;
        std::fs::create_dir_all(config.state_dir.join("segments"))
            .map_err(KernelError::io(format!("create {}", config.state_dir.display())))?;
        // dnsmasq changes to `/` and its scripts run anywhere: every path handed out must be absolute.
        config.state_dir = std::fs::canonicalize(&config.state_dir)
            .map_err(KernelError::io(format!("resolve {}", config.state_dir.display())))?;
        // Bridged frames pass the ip family's hooks too (br_netfilter), where the compute side filters them;
        // the isolation rules here leave traffic within one network alone.
        crate::kernel::in_netns(config.netns.as_deref(), || netlink::set_sysctl("net.ipv4.ip_forward", "1")).await?;
        let inner = Arc::new(Inner {
            config,
            segments: tokio::sync::Mutex::new(()),
            dhcp: Mutex::new(BTreeMap::new()),
            nat: tokio::sync::Mutex::new(NatState::default()),
            events: Mutex::new(None),
            event_offsets: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(LinuxDataplane { inner })
    }

    /// A listener for the metadata service inside the network host's namespace, on every address of
    /// [`METADATA_PORT`](crate::dataplane::METADATA_PORT): the NAT table sends each network's
    /// `169.254.169.254:80` to its gateway there, and whoever serves it answers only on gateway addresses.
    pub async fn metadata_listener(&self) -> Result<std::net::TcpListener, KernelError> {
        let port = crate::dataplane::METADATA_PORT;
        crate::kernel::in_netns(self.inner.netns(), move || {
            std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
                .map_err(KernelError::io(format!("listen on port {port} for the metadata service")))
        })
        .await
    }

    /// The pids of the DHCP servers it runs, by network.
    pub fn dhcp_pids(&self) -> BTreeMap<NetworkId, u32> {
        self.inner.dhcp.lock().expect("dhcp lock").iter().map(|(n, s)| (*n, s.pid)).collect()
    }
}

fn nat_failed(e: KernelError) -> DataplaneError {
    DataplaneError::new("apply the NAT table", &e)
}

impl Dataplane for LinuxDataplane {
    fn kind(&self) -> &'static str {
        "linux"
    }

    fn ensure_segment(&self, segment: Segment) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let action = format!("set up network {} on bridge {}", segment.label, segment.bridge);
            self.inner.ensure_segment(segment).await.map_err(|e| DataplaneError::new(action, &e))
        })
    }

    fn remove_segment(&self, network: NetworkId) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let failed = |e: KernelError| DataplaneError::new(format!("remove the segment of network {network}"), &e);
            self.inner.remove_segment(network).await.map_err(failed)
        })
    }

    fn ensure_host_segment(&self, segment: HostSegment) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let action = format!("set up this host's side of bridge {}", segment.bridge);
            self.inner.ensure_host_segment(segment).await.map_err(|e| DataplaneError::new(action, &e))
        })
    }

    fn apply_nat(&self, nat: Nat) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.inner.nat.lock().await;
            state.nat = Some(nat);
            self.inner.apply_nat(&state).await.map_err(nat_failed)
        })
    }

    fn ensure_vpn(&self, project: ProjectId, vpn: Option<VpnForward>) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.inner.nat.lock().await;
            let changed = match vpn {
                Some(vpn) => state.vpns.insert(project, vpn.clone()) != Some(vpn),
                None => state.vpns.remove(&project).is_some(),
            };
            if changed && state.nat.is_some() {
                self.inner.apply_nat(&state).await.map_err(nat_failed)?;
            }
            Ok(())
        })
    }

    fn release_lease(&self, network: NetworkId, mac: String, address: Ipv4Addr) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let failed = |e: KernelError| DataplaneError::new(format!("end the DHCP lease of {address}"), &e);
            self.inner.release_lease(network, &mac, address).await.map_err(failed)
        })
    }

    fn subscribe(&self, events: mpsc::UnboundedSender<LeaseEvent>) {
        *self.inner.events.lock().expect("events lock") = Some(events);
    }
}

impl Inner {
    fn netns(&self) -> Option<&str> {
        self.config.netns.as_deref()
    }
}

/// Lease events every 100 ms; dead dnsmasq processes every second. Ends with the driver.
async fn housekeeping(inner: Weak<Inner>) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.forward_lease_events();
        ticks += 1;
        if ticks.is_multiple_of(10) {
            inner.restart_dead_dhcp().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::contract::{Observed, check};
    use crate::kernel::{TestNetns, nft, process};

    #[tokio::test]
    async fn the_linux_driver_keeps_the_contract() {
        let Some(netns) = TestNetns::new("dataplane", &["ip", "nft", "dnsmasq"]) else { return };
        netns.ip(&["link", "add", "pub0", "type", "veth", "peer", "name", "pub1"]);
        let state = tempfile::tempdir().unwrap();
        let driver = LinuxDataplane::start(LinuxConfig {
            netns: Some(netns.name.clone()),
            state_dir: state.path().to_path_buf(),
            segments: SegmentKind::Vxlan,
            vxlan_dev: None,
            vxlan_group: None,
        })
        .await
        .unwrap();
        let name = netns.name.clone();
        check(&driver, "pub0", || async {
            let name = Some(name.clone());
            let bridges =
                netlink::in_netns(name.as_deref(), |h| async move { netlink::links(&h).await }).await.unwrap();
            let table = nft::list(name.as_deref(), nft::NAT_TABLE).await.unwrap();
            // `ip daddr F dnat to X` appears once in prerouting and once in output.
            let floating = table
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    let rest = l.strip_prefix("ip daddr ")?;
                    let (floating, fixed) = rest.split_once(" dnat to ")?;
                    Some((floating.parse().ok()?, fixed.parse().ok()?))
                })
                .collect();
            Observed {
                bridges: bridges.into_keys().filter(|name| name.starts_with("brc")).collect(),
                dhcp: driver.dhcp_pids().into_iter().filter(|(_, pid)| process::alive(*pid)).map(|(n, _)| n).collect(),
                floating,
            }
        })
        .await;
    }
}
