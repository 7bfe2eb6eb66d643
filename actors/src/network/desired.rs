//! The dataplane state the store implies, computed afresh for every reconcile pass.

use std::collections::BTreeSet;

use nimbus_storage::ids::{InstanceId, NetworkId, Pair, ProjectId};
use nimbus_storage::records::{Network, NetworkMode};
use nimbus_storage::schema::{FIXED_IPS, FLOATING_IPS, FLOATING_POOLS, NETWORKS};
use nimbus_storage::{Reads, StoreError};

use super::dataplane::{DhcpHost, FloatingNat, Nat, Segment, VpnForward};

/// A DHCP hostname for an instance: lowercase letters, digits and dashes, at most 63 characters (dnsmasq
/// silently refuses longer ones), never empty.
pub fn dhcp_hostname(name: &str, id: InstanceId) -> String {
    let mut host: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    while host.ends_with('-') {
        host.pop();
    }
    if host.is_empty() {
        host = format!("instance-{}", &id.to_string()[..8]);
    }
    host
}

/// The network manager drives every network but the VLAN ones, which belong to their project's VLAN
/// supervisor.
pub fn owned_by_network_manager(network: &Network) -> bool {
    network.mode != NetworkMode::Vlan
}

/// The segment network `id` should have now: none when the network is gone, or is a VLAN network bound to
/// no project (it has no dataplane until its first use).
pub fn segment_of(r: &impl Reads, id: NetworkId) -> Result<Option<Segment>, StoreError> {
    match r.get(&NETWORKS, &id)? {
        Some(n) if n.mode != NetworkMode::Vlan || n.project.is_some() => segment(r, &n).map(Some),
        _ => Ok(None),
    }
}

/// The bridge, segment and DHCP host entries of one network.
pub fn segment(r: &impl Reads, network: &Network) -> Result<Segment, StoreError> {
    let dhcp = match network.dhcp_server {
        Some(server) if network.mode.has_dhcp() => {
            let rows = r.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&network.id))?;
            let hosts: BTreeSet<DhcpHost> = rows
                .into_iter()
                .filter(|(_, row)| row.allocated)
                .filter_map(|(_, row)| {
                    Some(DhcpHost { mac: row.mac?, hostname: row.hostname.unwrap_or_default(), address: row.address })
                })
                .collect();
            Some((server, hosts))
        }
        _ => None,
    };
    Ok(Segment {
        network: network.id,
        label: network.label.clone(),
        mode: network.mode,
        bridge: network.bridge.clone(),
        bridge_interface: network.bridge_interface.clone(),
        vlan: network.vlan,
        cidr: network.cidr,
        gateway: network.gateway,
        dhcp,
    })
}

/// The whole NAT table: every associated floating address, and SNAT for every fixed range.
pub fn nat(r: &impl Reads) -> Result<Nat, StoreError> {
    let pools = r.scan(&FLOATING_POOLS)?;
    let mut floating = BTreeSet::new();
    for (_, ip) in r.scan(&FLOATING_IPS)? {
        if let (Some(_), Some(fixed)) = (ip.instance, ip.fixed_address) {
            let interface = pools.iter().find(|(name, _)| *name == ip.pool).map(|(_, p)| p.interface.clone());
            floating.insert(FloatingNat { floating: ip.address, fixed, interface: interface.unwrap_or_default() });
        }
    }
    let snat_ranges = r.scan(&NETWORKS)?.into_iter().map(|(_, n)| n.cidr).collect();
    Ok(Nat { floating, snat_ranges })
}

/// The project's VPN forward: the endpoint of its VLAN network, if it has one.
pub fn vpn(r: &impl Reads, project: ProjectId) -> Result<Option<VpnForward>, StoreError> {
    let networks = r.scan(&NETWORKS)?;
    Ok(networks
        .into_iter()
        .map(|(_, n)| n)
        .find(|n| n.project == Some(project) && n.mode == NetworkMode::Vlan)
        .and_then(|n| {
            n.vpn.map(|v| VpnForward {
                project,
                network: n.id,
                public_address: v.public_address,
                public_port: v.public_port,
                private_address: v.private_address,
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_safe_for_dnsmasq() {
        let id = InstanceId::random();
        assert_eq!(dhcp_hostname("Web Server_1", id), "web-server-1");
        assert_eq!(dhcp_hostname(&"x".repeat(100), id).len(), 63);
        assert_eq!(dhcp_hostname("---", id), format!("instance-{}", &id.to_string()[..8]));
        assert_eq!(dhcp_hostname(&format!("{}-tail", "a".repeat(62)), id), "a".repeat(62));
    }
}
