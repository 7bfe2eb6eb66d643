//! An instance's interfaces: the network step gives it those its create asked for (its project's network,
//! named networks with or without a fixed IP, ports of the Network API), in that order, and its delete
//! releases them. Each is one transaction, so an address or a port is never given twice, even with several
//! controllers or with actors killed mid-way; what it asks of the network host is returned for the caller to
//! pass on.

use std::net::Ipv4Addr;

use nimbus_protocol::ids::{InstanceId, NetworkId};
use nimbus_protocol::network::{EndLease, NetworkChanges};
use nimbus_storage::records::{
    Instance, Interface, Network, NetworkMode, NicRequest, RequestedNics, TaskState, Usage, now_ms,
};
use nimbus_storage::schema::{self, FIXED_IPS, FIXED_RELEASES, INSTANCES, NETWORKS, PROJECTS};
use nimbus_storage::{NetworkOwner, Pair, Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::dataplane_state::changes_of;
use crate::app::error::CloudError;
use crate::app::fixed_ips::{Holder, free_fixed_ip_in, new_address_in};
use crate::app::{floating_ips, ports, quota};
use crate::names::dhcp_hostname;

/// Gives the instance the interfaces it asked for (or leaves the ones it has), and with
/// `auto_assign_floating_ip` a floating IP. Returns what the network host must apply. An instance that has
/// its interfaces already (the step is repeated) costs a read, not a write.
pub async fn allocate(app: &App, instance: InstanceId) -> Result<NetworkChanges, CloudError> {
    let auto_assign = app.auto_assign_floating_ip;
    if let Some(changes) = app.store.read(|r| allocated_changes(r, instance, auto_assign))? {
        return Ok(changes);
    }
    app.store.write(move |tx| allocate_with_floating_in(tx, instance, auto_assign)).await
}

/// What the network host must apply for an instance that has its interfaces already; `None` if it has none.
fn allocated_changes(r: &impl Reads, id: InstanceId, auto_assign: bool) -> Result<Option<NetworkChanges>, CloudError> {
    // A deleting instance goes through the transaction, which refuses it.
    let Some(instance) = r.get(&INSTANCES, &id)?.filter(|i| i.task_state != Some(TaskState::Deleting)) else {
        return Ok(None);
    };
    if instance.interfaces.is_empty() {
        return Ok(None);
    }
    let floating = instance.interfaces.iter().any(|i| !i.floating.is_empty());
    if auto_assign && !floating {
        // The floating IP is still to be assigned (the option was turned on since, or it was taken off).
        return Ok(None);
    }
    let mut changes = NetworkChanges { nat: auto_assign, ..NetworkChanges::default() };
    for interface in &instance.interfaces {
        let network =
            r.get(&NETWORKS, &interface.network)?.ok_or_else(|| CloudError::not_found("Network", interface.network))?;
        changes.merge(changes_of(&network));
    }
    Ok(Some(changes))
}

/// The allocation transaction with the auto-assigned floating IP; returns what the network host must apply.
pub(crate) fn allocate_with_floating_in(
    tx: &mut WriteTx<'_>,
    instance: InstanceId,
    auto_assign: bool,
) -> Result<NetworkChanges, CloudError> {
    let networks = allocate_in(tx, instance)?;
    let mut changes = NetworkChanges::default();
    for network in &networks {
        changes.merge(changes_of(network));
    }
    // The floating IP goes to the first interface; an instance without one gets none.
    changes.nat = auto_assign && !networks.is_empty() && floating_ips::auto_assign_in(tx, instance)?;
    Ok(changes)
}

/// The network an instance of `instance.project` gets when it asks for none: a network bound to the project
/// if it has one; else, by the project's mode, the oldest shared network of that mode, or (VLAN) a free VLAN
/// network, bound to the project now.
fn network_for(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<Network, CloudError> {
    if let Some(own) = schema::first_network_of(tx, NetworkOwner::Project(instance.project))? {
        return Ok(own);
    }
    let project = tx.get(&PROJECTS, &instance.project)?;
    let mode = project.map_or(NetworkMode::Flat, |p| p.network_mode);
    let free = schema::first_network_of(tx, NetworkOwner::Unbound(mode))?;
    match (mode, free) {
        (NetworkMode::Vlan, Some(mut network)) => {
            network.project = Some(instance.project);
            schema::put_network_in(tx, &network)?;
            tracing::info!(project = %instance.project, network = %network.label, vlan = ?network.vlan, "VLAN network bound to project");
            Ok(network)
        }
        (_, Some(network)) => Ok(network),
        (NetworkMode::Vlan, None) => Err(CloudError::Conflict(format!(
            "No free VLAN network is left for project {}; create more with `nimbus network create --mode vlan`.",
            instance.project
        ))),
        (mode, None) => Err(CloudError::Conflict(format!("No {} network is available.", mode.name()))),
    }
}

/// The allocation transaction: one interface per requested NIC, in the order asked; returns the networks
/// they are on (the ones it has, if it has its interfaces already).
fn allocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<Vec<Network>, CloudError> {
    let gone = || CloudError::NotFound(format!("Instance {id} no longer exists or is being deleted."));
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or_else(gone)?;
    if instance.task_state == Some(TaskState::Deleting) {
        return Err(gone());
    }
    if !instance.interfaces.is_empty() {
        return instance
            .interfaces
            .iter()
            .map(|i| tx.get(&NETWORKS, &i.network)?.ok_or_else(|| CloudError::not_found("Network", i.network)))
            .collect();
    }
    let requests = match &instance.requested_nics {
        RequestedNics::Auto => vec![None],
        RequestedNics::None => Vec::new(),
        RequestedNics::These(list) => list.iter().cloned().map(Some).collect(),
    };
    let hostname = dhcp_hostname(&instance.name, id);
    let mut networks = Vec::with_capacity(requests.len());
    for request in requests {
        let (interface, network) = match request {
            None => {
                let network = network_for(tx, &instance)?;
                (new_address_in(tx, &network, None, instance.project, Holder::Instance(id, &hostname))?, network)
            }
            Some(NicRequest::Network { network, address }) => {
                let network = network_in(tx, network)?;
                (new_address_in(tx, &network, address, instance.project, Holder::Instance(id, &hostname))?, network)
            }
            Some(NicRequest::Port(port)) => {
                let interface = ports::bind_in(tx, port, &instance, &hostname)?;
                let network = network_in(tx, interface.network)?;
                (interface, network)
            }
        };
        networks.push(network);
        instance.interfaces.push(interface);
    }
    // Device tags go with the interfaces made for the requests that had them (2.32).
    let tagged: Vec<_> = instance.requested_tags.iter().zip(&instance.interfaces).collect();
    let tags = tagged.into_iter().filter_map(|(tag, i)| tag.clone().map(|tag| (i.id, tag))).collect();
    instance.nic_tags = tags;
    if !instance.interfaces.is_empty() {
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    Ok(networks)
}

/// A network that must exist (a requested one may have lost its subnet, or been deleted, since).
fn network_in(r: &impl Reads, id: NetworkId) -> Result<Network, CloudError> {
    r.get(&NETWORKS, &id)?.ok_or_else(|| {
        CloudError::Conflict(format!("Network {id} has no subnet (or no longer exists): it has no addresses to give."))
    })
}

/// Frees the instance's fixed IPs and disassociates its floating ones (releasing those auto-assigned with it);
/// nothing to do if it has none. Returns what the network host must apply.
pub async fn deallocate(app: &App, instance: InstanceId) -> Result<NetworkChanges, StoreError> {
    app.store.write(move |tx| deallocate_in(tx, instance)).await
}

/// The deallocation transaction: every interface released (see [`release_in`]).
pub(crate) fn deallocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<NetworkChanges, StoreError> {
    let mut changes = NetworkChanges::default();
    let Some(mut instance) = tx.get(&INSTANCES, &id)? else { return Ok(changes) };
    changes.nat = floating_ips::release_for_interfaces_in(tx, id, &instance.interfaces)?;
    for interface in &instance.interfaces {
        release_in(tx, &instance, interface, &mut changes)?;
    }
    if !instance.interfaces.is_empty() {
        instance.interfaces.clear();
        instance.nic_tags.clear();
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    Ok(changes)
}

/// Releases one interface's address; the caller takes the interface off the record. A leased address stays
/// associated (not allocated) until the DHCP server reports the lease ended, or the reclaim timer frees it;
/// any other address is free at once. A port of the Network API keeps its address, still charged to the
/// project (and its lease, for the next instance with its MAC).
fn release_in(
    tx: &mut WriteTx<'_>,
    instance: &Instance,
    interface: &Interface,
    changes: &mut NetworkChanges,
) -> Result<(), StoreError> {
    let key = Pair(interface.network, u32::from(interface.address));
    let Some(mut row) = tx.get(&FIXED_IPS, &key)?.filter(|row| row.instance == Some(instance.id) && row.allocated)
    else {
        return Ok(());
    };
    let kept_by_port = ports::unbind_in(tx, interface.id, &mut row)?;
    if kept_by_port {
        tx.put(&FIXED_IPS, &key, &row)?;
    } else if row.leased {
        let at = now_ms();
        row.allocated = false;
        row.released_at = Some(at);
        tx.put(&FIXED_RELEASES, &Pair(at, key.clone()), &key.0)?;
        let mac = row.mac.clone().unwrap_or_default();
        changes.leases.push(EndLease { network: interface.network, mac, address: row.address });
        tx.put(&FIXED_IPS, &key, &row)?;
    } else {
        free_fixed_ip_in(tx, &key)?;
    }
    if !kept_by_port {
        quota::refund_in(tx, instance.project, Usage { fixed_ips: 1, ..Usage::default() })?;
    }
    if let Some(network) = tx.get(&NETWORKS, &interface.network)? {
        changes.merge(changes_of(&network));
    }
    Ok(())
}

/// A change to the interfaces of an instance that runs (nova-network's interface attach and detach).
#[derive(Clone, Debug)]
pub enum InterfaceChange {
    /// A new interface on this network, after the others (`addFixedIp`).
    Add(Box<Network>),
    /// The interface with this fixed address goes (`removeFixedIp`); the ones after it move up.
    Remove(Ipv4Addr),
}

/// Makes the change on the instance's record, in the caller's transaction; returns what the network host
/// must apply.
pub(crate) fn change_in(
    tx: &mut WriteTx<'_>,
    id: InstanceId,
    change: InterfaceChange,
) -> Result<NetworkChanges, CloudError> {
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
    let mut changes = NetworkChanges::default();
    match change {
        InterfaceChange::Add(network) => {
            let hostname = dhcp_hostname(&instance.name, id);
            let interface = new_address_in(tx, &network, None, instance.project, Holder::Instance(id, &hostname))?;
            instance.interfaces.push(interface);
            changes.merge(changes_of(&network));
        }
        InterfaceChange::Remove(address) => {
            let interface = instance
                .interfaces
                .iter()
                .find(|i| i.address == address)
                .cloned()
                .ok_or_else(|| CloudError::BadRequest(format!("Instance {id} has no fixed IP {address}.")))?;
            changes.nat = floating_ips::release_for_interfaces_in(tx, id, std::slice::from_ref(&interface))?;
            release_in(tx, &instance, &interface, &mut changes)?;
            // Disassociating its floating IPs rewrote the record.
            instance = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            instance.interfaces.retain(|i| i.id != interface.id);
            instance.nic_tags.remove(&interface.id);
        }
    }
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    Ok(changes)
}
