//! Bridges and segments: a network's bridge with its gateway and DHCP-server addresses, its VXLAN or 802.1Q
//! link (VLAN mode) or uplink (flat), and the record of what was made, so a removal after a restart finds it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use nimbus_protocol::ids::NetworkId;

use super::dnsmasq::DhcpFiles;
use super::{Inner, SegmentKind};
use crate::dataplane::{HostSegment, Segment};
use crate::kernel::{KernelError, netlink, write_atomically};

/// The link that carries a VLAN-mode network off this host.
fn segment_link(segment: &HostSegment, kind: SegmentKind) -> Option<String> {
    let vlan = segment.vlan?;
    Some(match kind {
        SegmentKind::Vxlan => format!("vx{vlan}"),
        SegmentKind::Vlan => format!("vlan{vlan}"),
    })
}

impl Inner {
    pub(super) fn saved_segment(&self, network: NetworkId) -> PathBuf {
        self.config.state_dir.join("segments").join(format!("{network}.json"))
    }

    /// Remembers which links a network has here, so `remove_segment` finds them after a restart too.
    pub(super) fn save_segment(&self, segment: &HostSegment) -> Result<(), KernelError> {
        let saved = serde_json::to_vec_pretty(segment).expect("a segment serializes");
        let path = self.saved_segment(segment.network);
        if std::fs::read(&path).is_ok_and(|current| current == saved) {
            return Ok(());
        }
        write_atomically(&path, &saved)
    }

    pub(super) async fn ensure_segment(&self, segment: Segment) -> Result<(), KernelError> {
        let _serial = self.segments.lock().await;
        self.save_segment(&segment.host_part())?;

        let plumbing = self.plumbing();
        let s = segment.clone();
        netlink::in_netns(self.netns(), move |h| async move {
            let bridge = plumbing.plumb(&h, &s.host_part()).await?;
            // The bridge is the network's router (its gateway) and DHCP server.
            let prefix = s.cidr.prefix();
            let mut wanted: BTreeSet<Ipv4Addr> = [s.gateway].into();
            wanted.extend(s.dhcp.as_ref().map(|(server, _)| *server));
            let present = netlink::addresses(&h, Some(bridge)).await?;
            for a in present.iter().filter(|a| !(wanted.contains(&a.address) && a.prefix == prefix)) {
                netlink::delete_address(&h, a.message.clone()).await?;
            }
            for address in wanted {
                if !present.iter().any(|a| a.address == address && a.prefix == prefix) {
                    netlink::add_address(&h, bridge, address, prefix, None).await?;
                }
            }
            Ok(())
        })
        .await?;

        match &segment.dhcp {
            Some((server, hosts)) => self.ensure_dhcp(&segment, *server, hosts).await,
            None => {
                self.stop_dhcp(segment.network).await;
                Ok(())
            }
        }
    }

    fn plumbing(&self) -> Plumbing {
        Plumbing {
            kind: self.config.segments,
            vxlan_dev: self.config.vxlan_dev.clone(),
            vxlan_group: self.config.vxlan_group,
        }
    }

    pub(super) async fn ensure_host_segment(&self, segment: HostSegment) -> Result<(), KernelError> {
        let _serial = self.segments.lock().await;
        self.save_segment(&segment)?;
        let plumbing = self.plumbing();
        netlink::in_netns(self.netns(), move |h| async move { plumbing.plumb(&h, &segment).await.map(|_| ()) }).await
    }

    pub(super) async fn remove_segment(&self, network: NetworkId) -> Result<(), KernelError> {
        let _serial = self.segments.lock().await;
        self.stop_dhcp(network).await;
        let path = self.saved_segment(network);
        let Ok(saved) = std::fs::read(&path) else { return Ok(()) };
        let segment: HostSegment = serde_json::from_slice(&saved)
            .map_err(|e| KernelError::Unsupported(format!("{} is not a segment: {e}", path.display())))?;
        let kind = self.config.segments;
        netlink::in_netns(self.netns(), move |h| async move {
            if let Some(link) = segment_link(&segment, kind) {
                netlink::delete_link(&h, &link).await?;
            }
            netlink::delete_link(&h, &segment.bridge).await
        })
        .await?;
        let _ = std::fs::remove_dir_all(DhcpFiles::new(&self.config.state_dir, network).dir);
        self.event_offsets.lock().expect("offsets lock").remove(&network);
        std::fs::remove_file(&path).map_err(KernelError::io(format!("remove {}", path.display())))
    }
}

/// How this host builds a network's bridge and segment.
struct Plumbing {
    kind: SegmentKind,
    vxlan_dev: Option<String>,
    vxlan_group: Option<Ipv4Addr>,
}

impl Plumbing {
    /// The bridge (up, fixed MAC), the VLAN-mode segment link or the flat uplink on it. Returns the bridge.
    async fn plumb(&self, h: &rtnetlink::Handle, s: &HostSegment) -> Result<u32, KernelError> {
        let bridge = netlink::ensure_bridge(h, &s.bridge).await?;
        if let Some(link) = segment_link(s, self.kind) {
            let vlan = s.vlan.expect("a VLAN network has a VLAN id");
            match self.kind {
                SegmentKind::Vxlan => {
                    let dev = match s.bridge_interface.as_deref().or(self.vxlan_dev.as_deref()) {
                        Some(dev) => Some(netlink::index(h, dev).await?),
                        None => None,
                    };
                    netlink::ensure_vxlan(h, &link, u32::from(vlan), dev, self.vxlan_group).await?;
                }
                SegmentKind::Vlan => {
                    let base = s.bridge_interface.as_deref().ok_or_else(|| {
                        KernelError::Unsupported(format!(
                            "the VLAN network on {} needs a bridge interface for its 802.1Q link",
                            s.bridge
                        ))
                    })?;
                    netlink::ensure_vlan(h, &link, base, vlan).await?;
                }
            }
            if let Some(mtu) = s.mtu {
                netlink::set_mtu(h, netlink::index(h, &link).await?, mtu).await?;
            }
            netlink::attach(h, &link, bridge).await?;
        } else if let Some(uplink) = &s.bridge_interface {
            netlink::attach(h, uplink, bridge).await?;
        }
        // The network's MTU is the bridge's (ports plugged later take the bridge's); an operator's uplink
        // keeps its own, which must be at least as large.
        if let Some(mtu) = s.mtu {
            netlink::set_mtu(h, bridge, mtu).await?;
        }
        Ok(bridge)
    }
}
