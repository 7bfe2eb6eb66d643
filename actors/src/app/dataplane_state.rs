//! The dataplane state the store implies, computed afresh for every apply and reconcile pass, and which part
//! of the network side owns which network.

use std::collections::BTreeSet;

use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_storage::records::{Network, NetworkMode};
use nimbus_storage::schema::{self, FIXED_IPS, FLOATING_POOLS, NETWORKS};
use nimbus_storage::{Pair, Reads, StoreError};

use crate::app::App;
use crate::dataplane::{DhcpHost, FloatingNat, MetadataRedirect, Nat, Segment, VpnForward};

/// The network manager drives every network but the VLAN ones, which belong to their project's VLAN
/// reconciler.
pub fn owned_by_network_manager(network: &Network) -> bool {
    network.mode != NetworkMode::Vlan
}

/// Who must re-apply a change to `network`: the network manager for its own networks and for an unbound VLAN
/// network (its segment is removed), the project's VLAN reconciler for a bound one.
pub fn changes_of(network: &Network) -> NetworkChanges {
    match network.project {
        Some(project) if !owned_by_network_manager(network) => {
            NetworkChanges { vlan_projects: vec![project], ..NetworkChanges::default() }
        }
        _ => NetworkChanges { networks: vec![network.id], ..NetworkChanges::default() },
    }
}

/// The networks the network manager owns.
pub fn manager_networks(app: &App) -> Result<Vec<NetworkId>, StoreError> {
    let networks = app.store.read(|r| r.scan(&NETWORKS))?;
    Ok(networks.into_iter().filter(|(_, n)| owned_by_network_manager(n)).map(|(id, _)| id).collect())
}

/// The VLAN networks bound to `project`, oldest first.
fn vlan_networks_of(r: &impl Reads, project: ProjectId) -> Result<Vec<Network>, StoreError> {
    let mut own: Vec<Network> = r
        .scan(&NETWORKS)?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| !owned_by_network_manager(n) && n.project == Some(project))
        .collect();
    own.sort_by_key(|n| n.created_at);
    Ok(own)
}

/// The VLAN networks bound to `project`.
pub fn project_vlan_networks(app: &App, project: ProjectId) -> Result<Vec<NetworkId>, StoreError> {
    Ok(app.store.read(|r| vlan_networks_of(r, project))?.into_iter().map(|n| n.id).collect())
}

/// The project's VPN forward: the endpoint of its VLAN network, if it has one.
pub fn project_vpn(app: &App, project: ProjectId) -> Result<Option<VpnForward>, StoreError> {
    let networks = app.store.read(|r| vlan_networks_of(r, project))?;
    Ok(networks.into_iter().find_map(|n| {
        n.vpn.map(|v| VpnForward {
            project,
            network: n.id,
            public_address: v.public_address,
            public_port: v.public_port,
            private_address: v.private_address,
        })
    }))
}

/// The segment network `id` should have now: none when the network is gone, or is a VLAN network bound to
/// no project (it has no dataplane until its first use).
pub fn segment_of(app: &App, id: NetworkId) -> Result<Option<Segment>, StoreError> {
    app.store.read(|r| match r.get(&NETWORKS, &id)? {
        Some(n) if owned_by_network_manager(&n) || n.project.is_some() => segment(r, &n, app.dhcp_domain()).map(Some),
        _ => Ok(None),
    })
}

/// The bridge, segment and DHCP host entries of one network, its instances named under `domain`.
fn segment(r: &impl Reads, network: &Network, domain: &str) -> Result<Segment, StoreError> {
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
        bridge: network.bridge.clone(),
        bridge_interface: network.bridge_interface.clone(),
        vlan: network.vlan,
        cidr: network.cidr,
        gateway: network.gateway,
        dhcp,
        dns_servers: network.dns1.into_iter().chain(network.dns2).collect(),
        mtu: network.mtu,
        dhcp_domain: domain.to_string(),
    })
}

/// The whole NAT table: every associated floating address, and SNAT for every fixed range.
pub fn nat(app: &App) -> Result<Nat, StoreError> {
    app.store.read(|r| {
        let pools = r.scan(&FLOATING_POOLS)?;
        let mut floating = BTreeSet::new();
        for ip in schema::held_floating_ips(r, None)? {
            if let (Some(_), Some(fixed)) = (ip.instance, ip.fixed_address) {
                let interface = pools.iter().find(|(name, _)| *name == ip.pool).map(|(_, p)| p.interface.clone());
                floating.insert(FloatingNat { floating: ip.address, fixed, interface: interface.unwrap_or_default() });
            }
        }
        let networks = r.scan(&NETWORKS)?;
        let snat_ranges = networks.iter().map(|(_, n)| n.cidr).collect();
        let metadata =
            networks.into_iter().map(|(_, n)| MetadataRedirect { bridge: n.bridge, gateway: n.gateway }).collect();
        Ok(Nat { floating, snat_ranges, metadata })
    })
}
