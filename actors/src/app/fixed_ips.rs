//! Fixed IPs: a new address and MAC on a network (for an instance's interface or a port), the DHCP lease
//! events that follow them, the reclaim of addresses whose release never came, and the operator's
//! reservations. Each change is one transaction, so an address is never handed out twice, even with several
//! controllers or with actors killed mid-way.

use std::net::Ipv4Addr;

use nimbus_protocol::ids::{InstanceId, NetworkId, PortId, ProjectId};
use nimbus_protocol::network::LeaseEvent;
use nimbus_storage::records::{AllocationCursor, FixedIp, Instance, Interface, Network, Usage, now_ms};
use nimbus_storage::schema::{
    self, ALLOCATION_CURSORS, COUNTERS, FIXED_IPS, FIXED_RELEASES, INSTANCES, MACS, NETWORKS,
};
use nimbus_storage::{Pair, Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::quota;
use crate::ipam::{FixedIpAllocator, LeaseChange, MacAllocator, lease_change};

/// Who a new address is for.
pub(crate) enum Holder<'a> {
    /// An instance's new interface, under its DHCP hostname.
    Instance(InstanceId, &'a str),
    /// A port of the Network API with no instance yet.
    Port(PortId),
}

/// A new address and MAC on `network` (`wanted`, if given, else the lowest free one), charged to `project`'s
/// fixed-IP quota; returns the interface they make.
pub(crate) fn new_address_in(
    tx: &mut WriteTx<'_>,
    network: &Network,
    wanted: Option<Ipv4Addr>,
    project: ProjectId,
    holder: Holder<'_>,
) -> Result<Interface, CloudError> {
    let address = match wanted {
        Some(address) => take_address_in(tx, network, address)?,
        None => take_free_address_in(tx, network)?.ok_or_else(|| {
            CloudError::Conflict(format!("No more fixed IPs available on network {}.", network.label))
        })?,
    };
    let mac = take_free_mac_in(tx)?.ok_or_else(|| {
        CloudError::Conflict(format!("Every MAC address {}xx:xx:xx is in use.", MacAllocator::PREFIX))
    })?;
    let (port, instance, hostname) = match holder {
        Holder::Instance(id, hostname) => (PortId::generate(), Some(id), hostname.to_string()),
        Holder::Port(port) => (port, None, port_hostname(address)),
    };
    tx.put(&MACS, &mac, &port)?;
    quota::charge_in(tx, project, Usage { fixed_ips: 1, ..Usage::default() })?;
    let row = FixedIp {
        address,
        instance,
        mac: Some(mac.clone()),
        hostname: Some(hostname),
        allocated: true,
        leased: false,
        reserved: false,
        released_at: None,
    };
    tx.put(&FIXED_IPS, &Pair(network.id, u32::from(address)), &row)?;
    Ok(Interface {
        id: port,
        network: network.id,
        network_label: network.label.clone(),
        mac,
        address,
        floating: Vec::new(),
    })
}

/// The DHCP hostname of a port no instance has (Neutron's `host-10-0-0-5`).
pub(crate) fn port_hostname(address: Ipv4Addr) -> String {
    format!("host-{}", address.to_string().replace('.', "-"))
}

/// A fixed address asked for by name: it must be one the network hands out, and free.
fn take_address_in(tx: &mut WriteTx<'_>, network: &Network, address: Ipv4Addr) -> Result<Ipv4Addr, CloudError> {
    match address_problem(tx, network, address)? {
        Some(problem) => Err(problem),
        None => Ok(address),
    }
}

/// Why `address` cannot be given on `network`, if it cannot: not on it, not one it hands out, or taken.
pub(crate) fn address_problem(
    r: &impl Reads,
    network: &Network,
    address: Ipv4Addr,
) -> Result<Option<CloudError>, StoreError> {
    let label = &network.label;
    if !network.cidr.contains(address) {
        return Ok(Some(CloudError::BadRequest(format!(
            "Fixed IP {address} is not on network {label} ({}).",
            network.cidr
        ))));
    }
    if !FixedIpAllocator::for_network(network).is_allocatable(address) {
        return Ok(Some(CloudError::BadRequest(format!(
            "Fixed IP {address} is not one network {label} hands out (network, gateway, broadcast, DHCP or VPN \
             address, or outside its allocation pool)."
        ))));
    }
    if r.get(&FIXED_IPS, &Pair(network.id, u32::from(address)))?.is_some() {
        return Ok(Some(CloudError::Conflict(format!(
            "Fixed IP address {address} is already in use on network {label}."
        ))));
    }
    Ok(None)
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
                (Some(row), true) if row.instance.is_some() || row.allocated => {
                    return Err(CloudError::Conflict(format!(
                        "Fixed IP {address} is in use by an instance or a port."
                    )));
                }
                (Some(mut row), _) => {
                    row.reserved = reserve;
                    if row.instance.is_none() && !row.allocated && !reserve {
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
