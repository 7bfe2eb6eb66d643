//! Fixed IPs: allocation to an instance (binding a VLAN network to its project on first use), release, the
//! DHCP lease events that follow them, the reclaim of addresses whose release never came, and the operator's
//! reservations. Each change is one transaction, so an address is never handed out twice, even with several
//! controllers or with actors killed mid-way; what it asks of the network host is returned for the caller to
//! pass on.

use std::net::Ipv4Addr;

use nimbus_protocol::ids::{InstanceId, NetworkId, PortId};
use nimbus_protocol::network::{EndLease, LeaseEvent, NetworkChanges};
use nimbus_storage::records::{
    AllocationCursor, FixedIp, Instance, Interface, Network, NetworkMode, TaskState, Usage, now_ms,
};
use nimbus_storage::schema::{
    self, ALLOCATION_CURSORS, COUNTERS, FIXED_IPS, FIXED_RELEASES, INSTANCES, MACS, NETWORKS, PROJECTS,
};
use nimbus_storage::{NetworkOwner, Pair, Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::dataplane_state::changes_of;
use crate::app::error::CloudError;
use crate::app::{floating_ips, quota};
use crate::ipam::{FixedIpAllocator, LeaseChange, MacAllocator, lease_change};
use crate::names::dhcp_hostname;

/// Gives the instance its interface (or leaves the one it has), and with `auto_assign_floating_ip` a
/// floating IP. Returns what the network host must apply. An instance that has its interface already (the
/// placement step allocated it, or the step is repeated) costs a read, not a write.
pub async fn allocate(app: &App, instance: InstanceId) -> Result<NetworkChanges, CloudError> {
    let auto_assign = app.auto_assign_floating_ip;
    if let Some(changes) = app.store.read(|r| allocated_changes(r, instance, auto_assign))? {
        return Ok(changes);
    }
    app.store.write(move |tx| allocate_with_floating_in(tx, instance, auto_assign)).await
}

/// What the network host must apply for an instance that has its interface already; `None` if it has none.
fn allocated_changes(r: &impl Reads, id: InstanceId, auto_assign: bool) -> Result<Option<NetworkChanges>, CloudError> {
    // A deleting instance goes through the transaction, which refuses it.
    let Some(instance) = r.get(&INSTANCES, &id)?.filter(|i| i.task_state != Some(TaskState::Deleting)) else {
        return Ok(None);
    };
    let Some(first) = instance.interfaces.first() else { return Ok(None) };
    let network = r.get(&NETWORKS, &first.network)?.ok_or_else(|| CloudError::not_found("Network", first.network))?;
    let floating = instance.interfaces.iter().any(|i| !i.floating.is_empty());
    if auto_assign && !floating {
        // The floating IP is still to be assigned (the option was turned on since, or it was taken off).
        return Ok(None);
    }
    let mut changes = changes_of(&network);
    changes.nat = auto_assign;
    Ok(Some(changes))
}

/// The allocation transaction with the auto-assigned floating IP; returns what the network host must apply.
pub(crate) fn allocate_with_floating_in(
    tx: &mut WriteTx<'_>,
    instance: InstanceId,
    auto_assign: bool,
) -> Result<NetworkChanges, CloudError> {
    let network = allocate_in(tx, instance)?;
    let mut changes = changes_of(&network);
    changes.nat = auto_assign && floating_ips::auto_assign_in(tx, instance)?;
    Ok(changes)
}

/// The network an instance of `instance.project` gets: a network bound to the project if it has one; else,
/// by the project's mode, the oldest shared network of that mode, or (VLAN) a free VLAN network, bound to
/// the project now.
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

/// The allocation transaction; returns the network the interface is on.
fn allocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<Network, CloudError> {
    let gone = || CloudError::NotFound(format!("Instance {id} no longer exists or is being deleted."));
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or_else(gone)?;
    if instance.task_state == Some(TaskState::Deleting) {
        return Err(gone());
    }
    if let Some(first) = instance.interfaces.first() {
        return tx.get(&NETWORKS, &first.network)?.ok_or_else(|| CloudError::not_found("Network", first.network));
    }
    let network = network_for(tx, &instance)?;
    let address = take_free_address_in(tx, &network)?
        .ok_or_else(|| CloudError::Conflict(format!("No more fixed IPs available on network {}.", network.label)))?;
    let mac = take_free_mac_in(tx)?.ok_or_else(|| {
        CloudError::Conflict(format!("Every MAC address {}xx:xx:xx is in use.", MacAllocator::PREFIX))
    })?;
    tx.put(&MACS, &mac, &id)?;
    quota::charge_in(tx, instance.project, Usage { fixed_ips: 1, ..Usage::default() })?;
    let row = FixedIp {
        address,
        instance: Some(id),
        mac: Some(mac.clone()),
        hostname: Some(dhcp_hostname(&instance.name, id)),
        allocated: true,
        leased: false,
        reserved: false,
        released_at: None,
    };
    tx.put(&FIXED_IPS, &Pair(network.id, u32::from(address)), &row)?;
    instance.interfaces = vec![Interface {
        id: PortId::generate(),
        network: network.id,
        network_label: network.label.clone(),
        mac,
        address,
        floating: Vec::new(),
    }];
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    Ok(network)
}

/// The lowest free address from the network's cursor on (wrapping), moving the cursor past it.
fn take_free_address_in(tx: &mut WriteTx<'_>, network: &Network) -> Result<Option<Ipv4Addr>, StoreError> {
    let allocator = FixedIpAllocator::for_network(network);
    let cursor = tx.get(&ALLOCATION_CURSORS, &network.id)?.map_or(0, |c| c.next);
    let prefix = Pair::<NetworkId, u32>::prefix(&network.id);
    let found = allocator.find_free(cursor, |from| {
        Ok::<_, StoreError>(
            tx.keys_from(&FIXED_IPS, &Pair(network.id, from), &prefix, 64)?.into_iter().map(|Pair(_, ip)| ip).collect(),
        )
    })?;
    if let Some(address) = found {
        tx.put(&ALLOCATION_CURSORS, &network.id, &AllocationCursor { next: u32::from(address) + 1 })?;
    }
    Ok(found)
}

/// The next free MAC from the cloud's MAC cursor on, moving the cursor past it (never back: see
/// [`MacAllocator`]).
fn take_free_mac_in(tx: &mut WriteTx<'_>) -> Result<Option<String>, StoreError> {
    let key = "mac".to_string();
    let cursor = match tx.get(&COUNTERS, &key)? {
        Some(cursor) => cursor.next,
        None => MacAllocator::random_start(&mut rand::rng()),
    };
    let found = MacAllocator::find_free(cursor, |from| {
        let taken = tx.keys_from(&MACS, &MacAllocator::mac(from), MacAllocator::PREFIX.as_bytes(), 64)?;
        Ok::<_, StoreError>(taken.iter().filter_map(|mac| MacAllocator::number(mac)).collect())
    })?;
    if let Some(n) = found {
        tx.put(&COUNTERS, &key, &AllocationCursor { next: n + 1 })?;
    }
    Ok(found.map(MacAllocator::mac))
}

/// Frees a fixed IP row: the address becomes free (the cursor moves back to it, so the lowest free address
/// is handed out next) and its MAC unused.
pub(crate) fn free_fixed_ip_in(tx: &mut WriteTx<'_>, key: &Pair<NetworkId, u32>) -> Result<(), StoreError> {
    if let Some(row) = tx.delete(&FIXED_IPS, key)? {
        if let Some(mac) = &row.mac {
            tx.delete(&MACS, mac)?;
        }
        if let Some(at) = row.released_at {
            tx.delete(&FIXED_RELEASES, &Pair(at, key.clone()))?;
        }
        let cursor = tx.get(&ALLOCATION_CURSORS, &key.0)?;
        if cursor.is_none_or(|c| c.next > key.1) {
            tx.put(&ALLOCATION_CURSORS, &key.0, &AllocationCursor { next: key.1 })?;
        }
    }
    Ok(())
}

/// Frees the instance's fixed IPs and disassociates its floating ones (releasing those auto-assigned with it);
/// nothing to do if it has none. Returns what the network host must apply.
pub async fn deallocate(app: &App, instance: InstanceId) -> Result<NetworkChanges, StoreError> {
    app.store.write(move |tx| deallocate_in(tx, instance)).await
}

/// The deallocation transaction. A leased address stays associated (not allocated) until the DHCP server
/// reports the lease ended, or the reclaim timer frees it; any other address is free at once.
pub(crate) fn deallocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<NetworkChanges, StoreError> {
    let mut changes = NetworkChanges::default();
    let Some(mut instance) = tx.get(&INSTANCES, &id)? else { return Ok(changes) };
    changes.nat = floating_ips::release_for_instance_in(tx, &instance)?;
    for interface in &instance.interfaces {
        let key = Pair(interface.network, u32::from(interface.address));
        let Some(mut row) = tx.get(&FIXED_IPS, &key)?.filter(|row| row.instance == Some(id) && row.allocated) else {
            continue;
        };
        if row.leased {
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
        quota::refund_in(tx, instance.project, Usage { fixed_ips: 1, ..Usage::default() })?;
        if let Some(network) = tx.get(&NETWORKS, &interface.network)? {
            changes.merge(changes_of(&network));
        }
    }
    if !instance.interfaces.is_empty() {
        instance.interfaces.clear();
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    Ok(changes)
}

/// Records what a DHCP server reported about a lease.
pub async fn lease_event(app: &App, event: LeaseEvent) -> Result<(), StoreError> {
    let key = Pair(event.network, u32::from(event.address));
    // Most events change nothing and need no write transaction.
    let row = app.store.read(|r| r.get(&FIXED_IPS, &key))?;
    if row.is_none_or(|row| lease_change(&row, &event).is_none()) {
        return Ok(());
    }
    app.store
        .write(move |tx| {
            let Some(mut row) = tx.get(&FIXED_IPS, &key)? else { return Ok(()) };
            match lease_change(&row, &event) {
                None => Ok(()),
                Some(LeaseChange::Free) => free_fixed_ip_in(tx, &key),
                Some(LeaseChange::Leased(leased)) => {
                    row.leased = leased;
                    tx.put(&FIXED_IPS, &key, &row)
                }
            }
        })
        .await
}

/// Frees deallocated addresses whose DHCP release never came (nova's leak guard); returns how many. It reads
/// only the releases that are due, at most [`RECLAIM_BATCH`] a pass (the next pass takes the rest).
pub async fn reclaim(app: &App) -> Result<usize, StoreError> {
    let after = app.timing.fixed_ip_reclaim_after.as_millis() as u64;
    app.store
        .write(move |tx| {
            let due = schema::due(tx, &FIXED_RELEASES, now_ms().saturating_sub(after), RECLAIM_BATCH)?;
            let mut freed = 0;
            for release in due {
                tx.delete(&FIXED_RELEASES, &release)?;
                let Pair(at, key) = release;
                // Still waiting for this release: not given out again, not held back by the operator since.
                let waiting = tx
                    .get(&FIXED_IPS, &key)?
                    .is_some_and(|row| !row.allocated && !row.reserved && row.released_at == Some(at));
                if waiting {
                    free_fixed_ip_in(tx, &key)?;
                    freed += 1;
                }
            }
            Ok::<_, StoreError>(freed)
        })
        .await
}

/// The most due releases one reclaim pass frees, so one pass never holds the writer for long.
const RECLAIM_BATCH: usize = 10_000;

/// Holds an address back from allocation (`reserve`), or gives it back.
pub async fn reserve(app: &App, address: Ipv4Addr, reserve: bool) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let (network, row) = network_and_row(tx, address)?
                .ok_or_else(|| CloudError::NotFound(format!("Fixed IP {address} is not on any network.")))?;
            if !FixedIpAllocator::for_network(&network).is_allocatable(address) {
                return Err(CloudError::BadRequest(format!(
                    "{address} is always kept back on network {} (network, gateway, broadcast, DHCP or VPN address).",
                    network.label
                )));
            }
            let key = Pair(network.id, u32::from(address));
            match (row, reserve) {
                (None, true) => tx.put(
                    &FIXED_IPS,
                    &key,
                    &FixedIp {
                        address,
                        instance: None,
                        mac: None,
                        hostname: None,
                        allocated: false,
                        leased: false,
                        reserved: true,
                        released_at: None,
                    },
                )?,
                (Some(row), true) if row.instance.is_some() => {
                    return Err(CloudError::Conflict(format!("Fixed IP {address} is in use by an instance.")));
                }
                (Some(mut row), _) => {
                    row.reserved = reserve;
                    if row.instance.is_none() && !reserve {
                        free_fixed_ip_in(tx, &key)?;
                    } else {
                        tx.put(&FIXED_IPS, &key, &row)?;
                    }
                }
                (None, false) => {}
            }
            Ok(())
        })
        .await
}

/// The network holding `address`, and its row if the address is in use.
fn network_and_row(r: &impl Reads, address: Ipv4Addr) -> Result<Option<(Network, Option<FixedIp>)>, StoreError> {
    let Some(network) = r.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).find(|n| n.cidr.contains(address)) else {
        return Ok(None);
    };
    let row = r.get(&FIXED_IPS, &Pair(network.id, u32::from(address)))?;
    Ok(Some((network, row)))
}

/// What `os-fixed-ips` shows of an address.
pub struct FixedIpInfo {
    pub network: Network,
    pub row: Option<FixedIp>,
    /// The instance holding it, if any.
    pub instance: Option<Instance>,
}

pub fn info(app: &App, address: Ipv4Addr) -> Result<Option<FixedIpInfo>, StoreError> {
    app.store.read(|r| {
        let Some((network, row)) = network_and_row(r, address)? else { return Ok(None) };
        let instance = match row.as_ref().and_then(|row| row.instance) {
            Some(id) => r.get(&INSTANCES, &id)?,
            None => None,
        };
        Ok(Some(FixedIpInfo { network, row, instance }))
    })
}
