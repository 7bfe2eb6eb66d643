//! Floating IPs: operator pools, allocation to a project (with quota), association with one of the project's
//! instances (NAT), disassociation, release. Each operation is one transaction; one that changes the NAT table
//! then has the network host apply it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{FloatingIpId, InstanceId, PoolId, ProjectId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::{
    AllocationCursor, FloatingIp, FloatingPool, Instance, Interface, TaskState, Usage, now_ms,
};
use nimbus_storage::schema::{self, FLOATING_BY_ID, FLOATING_IPS, FLOATING_POOLS, INSTANCES, NETWORKS, POOL_CURSORS};
use nimbus_storage::{Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::quota;
use crate::network_plan;

/// The largest pool nimbus creates in one go.
const MAX_POOL_ADDRESSES: u32 = 65536;

/// Who asks: a project, or an admin who may act on any project's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub project: ProjectId,
    pub admin: bool,
}

impl Caller {
    /// Whether the caller may see and use the address: its project holds it (an admin: any project).
    fn holds(&self, ip: &FloatingIp) -> bool {
        ip.project.is_some_and(|p| p == self.project || self.admin)
    }

    /// Whether the caller may see the instance.
    fn sees(&self, instance: &Instance) -> bool {
        self.admin || instance.project == self.project
    }
}

/// Creates a pool of floating addresses (`nova-manage floating create`); pools need no dataplane until an
/// address is associated.
pub async fn create_pool(
    app: &App,
    name: String,
    range: Ipv4Network,
    interface: String,
) -> Result<FloatingPool, CloudError> {
    app.store.write(move |tx| create_pool_in(tx, name, range, interface)).await
}

/// Allocates an address of `pool` (the oldest pool if `None`) to the caller's project, charging its quota.
pub async fn allocate(app: &App, caller: Caller, pool: Option<String>) -> Result<FloatingIp, CloudError> {
    app.store.write(move |tx| allocate_in(tx, caller, pool)).await
}

/// [`allocate`] and [`associate`] in one transaction, so an association that is refused allocates nothing.
pub async fn allocate_associated(
    app: &App,
    trace: &Trace,
    caller: Caller,
    pool: Option<String>,
    instance: InstanceId,
) -> Result<FloatingIp, CloudError> {
    let ip = app
        .store
        .write(move |tx| {
            let ip = allocate_in(tx, caller, pool)?;
            associate_in(tx, caller, ip.address, instance)
        })
        .await?;
    apply_nat(app, trace).await?;
    Ok(ip)
}

/// Associates the caller's address with one of its project's instances, and applies the NAT table.
pub async fn associate(
    app: &App,
    trace: &Trace,
    caller: Caller,
    address: Ipv4Addr,
    instance: InstanceId,
) -> Result<FloatingIp, CloudError> {
    let ip = app.store.write(move |tx| associate_in(tx, caller, address, instance)).await?;
    apply_nat(app, trace).await?;
    Ok(ip)
}

/// Takes the caller's address off its instance (when `from` is given: only if it is on that one), and applies
/// the NAT table.
pub async fn disassociate(
    app: &App,
    trace: &Trace,
    caller: Caller,
    address: Ipv4Addr,
    from: Option<InstanceId>,
) -> Result<FloatingIp, CloudError> {
    let ip = app.store.write(move |tx| disassociate_in(tx, caller, address, from)).await?;
    apply_nat(app, trace).await?;
    Ok(ip)
}

/// Gives the caller's address back to its pool (refunding the quota), disassociating it first in the same
/// transaction if it is associated, as both nova-network and Neutron do. An address given at boot is refused:
/// it stays with its instance.
pub async fn release(app: &App, trace: &Trace, caller: Caller, address: Ipv4Addr) -> Result<(), CloudError> {
    let was_associated = app.store.write(move |tx| release_in(tx, caller, address)).await?;
    if was_associated {
        apply_nat(app, trace).await?;
    }
    Ok(())
}

async fn apply_nat(app: &App, trace: &Trace) -> Result<(), CloudError> {
    let changes = NetworkChanges { nat: true, ..NetworkChanges::default() };
    Ok(app.network().apply(trace, changes).await?)
}

/// Every pool.
pub fn pools(app: &App) -> Result<Vec<FloatingPool>, StoreError> {
    Ok(app.store.read(|r| r.scan(&FLOATING_POOLS))?.into_iter().map(|(_, p)| p).collect())
}

/// The floating IPs a caller sees: its project's (an admin sees all allocated ones).
pub fn list(app: &App, caller: Caller) -> Result<Vec<FloatingIp>, StoreError> {
    app.store.read(|r| held_by(r, caller))
}

fn held_by(r: &impl Reads, caller: Caller) -> Result<Vec<FloatingIp>, StoreError> {
    schema::held_floating_ips(r, (!caller.admin).then_some(caller.project))
}

/// A floating IP with what the Network API shows besides: its pool, and the instance it is associated with
/// (only one the caller may see).
#[derive(Clone, Debug)]
pub struct FloatingView {
    pub ip: FloatingIp,
    pub pool: Option<FloatingPool>,
    pub instance: Option<Instance>,
}

/// [`list`] with each address's view, read in one snapshot (the pools once).
pub fn list_views(app: &App, caller: Caller) -> Result<Vec<FloatingView>, StoreError> {
    app.store.read(|r| {
        let pools: BTreeMap<String, FloatingPool> = r.scan(&FLOATING_POOLS)?.into_iter().collect();
        held_by(r, caller)?
            .into_iter()
            .map(|ip| Ok(FloatingView { pool: pools.get(&ip.pool).cloned(), instance: seen(r, caller, &ip)?, ip }))
            .collect()
    })
}

/// The view of one address the caller holds.
pub fn view(app: &App, caller: Caller, ip: FloatingIp) -> Result<FloatingView, StoreError> {
    app.store
        .read(|r| Ok(FloatingView { pool: r.get(&FLOATING_POOLS, &ip.pool)?, instance: seen(r, caller, &ip)?, ip }))
}

/// The instance the address is associated with, if the caller may see it.
fn seen(r: &impl Reads, caller: Caller, ip: &FloatingIp) -> Result<Option<Instance>, StoreError> {
    match ip.instance {
        Some(id) => Ok(r.get(&INSTANCES, &id)?.filter(|i| caller.sees(i))),
        None => Ok(None),
    }
}

/// The caller's floating IP by id or address; anyone else's is "not found", so addresses of other projects
/// are not even confirmed to exist.
pub fn find(app: &App, caller: Caller, id_or_address: &str) -> Result<FloatingIp, CloudError> {
    let not_found = || CloudError::NotFound(format!("Floating IP {id_or_address} could not be found."));
    let ip = app.store.read(|r| {
        let key = match (id_or_address.parse::<FloatingIpId>(), id_or_address.parse::<Ipv4Addr>()) {
            (Ok(id), _) => r.index_get(&FLOATING_BY_ID, &id)?.into_iter().next(),
            (_, Ok(address)) => Some(u32::from(address)),
            _ => None,
        };
        let ip = match key {
            Some(k) => r.get(&FLOATING_IPS, &k)?,
            None => None,
        };
        Ok::<_, StoreError>(ip.filter(|ip| caller.holds(ip)))
    })?;
    ip.ok_or_else(not_found)
}

fn create_pool_in(
    tx: &mut WriteTx<'_>,
    name: String,
    range: Ipv4Network,
    interface: String,
) -> Result<FloatingPool, CloudError> {
    if let Some(problem) =
        crate::names::name_problem("pool", &name).or_else(|| network_plan::network_address_problem(range))
    {
        return Err(CloudError::BadRequest(problem));
    }
    if range.size() > MAX_POOL_ADDRESSES {
        return Err(CloudError::BadRequest(format!("A pool holds at most {MAX_POOL_ADDRESSES} addresses.")));
    }
    if interface.trim().is_empty() {
        return Err(CloudError::BadRequest("A pool needs the public interface its addresses live on.".into()));
    }
    if tx.get(&FLOATING_POOLS, &name)?.is_some() {
        return Err(CloudError::Conflict(format!("A floating IP pool named {name} already exists.")));
    }
    for (_, pool) in tx.scan(&FLOATING_POOLS)? {
        if network_plan::overlaps(pool.range, range) {
            return Err(CloudError::Conflict(format!(
                "The range {range} overlaps pool {} ({}).",
                pool.name, pool.range
            )));
        }
    }
    for (_, network) in tx.scan(&NETWORKS)? {
        if network_plan::overlaps(network.cidr, range) {
            return Err(CloudError::Conflict(format!(
                "The range {range} overlaps the fixed network {} ({}).",
                network.label, network.cidr
            )));
        }
    }
    let pool = FloatingPool { id: PoolId::generate(), name: name.clone(), range, interface, created_at: now_ms() };
    tx.put(&FLOATING_POOLS, &name, &pool)?;
    let (first, last) = pool_bounds(&pool);
    for a in first..=last {
        let ip = FloatingIp {
            id: FloatingIpId::generate(),
            address: Ipv4Addr::from(a),
            pool: name.clone(),
            project: None,
            instance: None,
            fixed_address: None,
            auto_assigned: false,
        };
        schema::put_floating_ip_in(tx, &ip)?;
        tx.index_add(&FLOATING_BY_ID, &ip.id, &a)?;
    }
    Ok(pool)
}

/// The first and last address of a pool (all but the network and broadcast addresses of ranges above /31).
fn pool_bounds(pool: &FloatingPool) -> (u32, u32) {
    let range = pool.range;
    if range.prefix() >= 31 {
        (u32::from(range.network()), u32::from(range.broadcast()))
    } else {
        (u32::from(range.network()) + 1, u32::from(range.broadcast()) - 1)
    }
}

/// The oldest pool.
fn default_pool(tx: &WriteTx<'_>) -> Result<FloatingPool, CloudError> {
    let mut pools: Vec<FloatingPool> = tx.scan(&FLOATING_POOLS)?.into_iter().map(|(_, p)| p).collect();
    pools.sort_by_key(|p| p.created_at);
    pools.into_iter().next().ok_or_else(|| CloudError::NotFound("No floating IP pool exists.".into()))
}

fn allocate_in(tx: &mut WriteTx<'_>, caller: Caller, pool: Option<String>) -> Result<FloatingIp, CloudError> {
    let pool = match pool {
        Some(name) => tx
            .get(&FLOATING_POOLS, &name)?
            .ok_or_else(|| CloudError::NotFound(format!("Floating IP pool not found: {name}.")))?,
        None => default_pool(tx)?,
    };
    quota::charge_in(tx, caller.project, Usage { floating_ips: 1, ..Usage::default() })?;
    take_free_in(tx, &pool, caller.project, false)
}

/// Gives the lowest free address of `pool` (from the pool's cursor on, wrapping) to `project`.
fn take_free_in(
    tx: &mut WriteTx<'_>,
    pool: &FloatingPool,
    project: ProjectId,
    auto_assigned: bool,
) -> Result<FloatingIp, CloudError> {
    let (first, last) = pool_bounds(pool);
    let cursor = tx.get(&POOL_CURSORS, &pool.name)?.map_or(first, |c| c.next.clamp(first, last));
    for (start, end) in [(cursor, last), (first, cursor.saturating_sub(1))] {
        let mut next = start;
        while next <= end {
            let batch = tx.scan_from(&FLOATING_IPS, &next, 64)?;
            if batch.is_empty() {
                break;
            }
            for (a, mut ip) in batch {
                if a > end {
                    break;
                }
                next = a + 1;
                if ip.project.is_none() {
                    ip.project = Some(project);
                    ip.auto_assigned = auto_assigned;
                    schema::put_floating_ip_in(tx, &ip)?;
                    tx.put(&POOL_CURSORS, &pool.name, &AllocationCursor { next: a + 1 })?;
                    return Ok(ip);
                }
            }
        }
    }
    Err(CloudError::Conflict(format!("No more floating IPs available in pool {}.", pool.name)))
}

/// The floating IP at `address` if the caller may use it; someone else's is "not found", so addresses of
/// other projects are not even confirmed to exist.
fn owned(tx: &WriteTx<'_>, caller: Caller, address: Ipv4Addr) -> Result<FloatingIp, CloudError> {
    let not_found = || CloudError::NotFound(format!("Floating IP {address} could not be found."));
    tx.get(&FLOATING_IPS, &u32::from(address))?.filter(|ip| caller.holds(ip)).ok_or_else(not_found)
}

fn associate_in(
    tx: &mut WriteTx<'_>,
    caller: Caller,
    address: Ipv4Addr,
    id: InstanceId,
) -> Result<FloatingIp, CloudError> {
    let mut ip = owned(tx, caller, address)?;
    let server_missing = || CloudError::NotFound(format!("Instance {id} could not be found."));
    let mut instance: Instance = tx.get(&INSTANCES, &id)?.ok_or_else(server_missing)?;
    if Some(instance.project) != ip.project || instance.task_state == Some(TaskState::Deleting) {
        return Err(server_missing());
    }
    if ip.instance == Some(id) {
        return Ok(ip);
    }
    // On another server of the project, it moves (as nova's addFloatingIp does): one transaction, so the
    // address is never on both.
    if ip.instance.is_some() {
        detach_in(tx, &mut ip)?;
    }
    let interface = instance.interfaces.first_mut().ok_or_else(|| {
        CloudError::BadRequest(format!("Instance {id} has no fixed IP yet to associate a floating IP with."))
    })?;
    interface.floating.push(address);
    ip.instance = Some(id);
    ip.fixed_address = Some(interface.address);
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    schema::put_floating_ip_in(tx, &ip)?;
    Ok(ip)
}

fn detach_in(tx: &mut WriteTx<'_>, ip: &mut FloatingIp) -> Result<(), StoreError> {
    if let Some(id) = ip.instance.take()
        && let Some(mut instance) = tx.get(&INSTANCES, &id)?
    {
        for interface in &mut instance.interfaces {
            interface.floating.retain(|a| *a != ip.address);
        }
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    ip.fixed_address = None;
    Ok(())
}

/// A freed address is searched first next time (lowest free first).
fn rewind_pool_cursor_in(tx: &mut WriteTx<'_>, pool: &str, address: u32) -> Result<(), StoreError> {
    let pool = pool.to_string();
    if tx.get(&POOL_CURSORS, &pool)?.is_none_or(|c| c.next > address) {
        tx.put(&POOL_CURSORS, &pool, &AllocationCursor { next: address })?;
    }
    Ok(())
}

/// An address given to an instance at boot stays with it until the instance is deleted (as in nova-network):
/// it was never counted against the project's quota, so the project may not keep it.
fn unless_auto_assigned(ip: FloatingIp) -> Result<FloatingIp, CloudError> {
    match ip.instance.filter(|_| ip.auto_assigned) {
        Some(instance) => Err(CloudError::Forbidden(format!(
            "Cannot disassociate auto assigned floating IP {}: it stays with instance {instance} until the \
             instance is deleted.",
            ip.address
        ))),
        None => Ok(ip),
    }
}

fn disassociate_in(
    tx: &mut WriteTx<'_>,
    caller: Caller,
    address: Ipv4Addr,
    from: Option<InstanceId>,
) -> Result<FloatingIp, CloudError> {
    let ip = owned(tx, caller, address)?;
    if let Some(id) = from.filter(|id| ip.instance != Some(*id)) {
        return Err(CloudError::NotFound(format!("Floating IP {address} is not associated with instance {id}.")));
    }
    let mut ip = unless_auto_assigned(ip)?;
    detach_in(tx, &mut ip)?;
    schema::put_floating_ip_in(tx, &ip)?;
    Ok(ip)
}

/// Returns whether the address was associated (the NAT table changed).
fn release_in(tx: &mut WriteTx<'_>, caller: Caller, address: Ipv4Addr) -> Result<bool, CloudError> {
    let mut ip = unless_auto_assigned(owned(tx, caller, address)?)?;
    let was_associated = ip.instance.is_some();
    detach_in(tx, &mut ip)?;
    let project = ip.project.take().expect("owned() checked the project");
    schema::put_floating_ip_in(tx, &ip)?;
    rewind_pool_cursor_in(tx, &ip.pool, u32::from(address))?;
    quota::refund_in(tx, project, Usage { floating_ips: 1, ..Usage::default() })?;
    Ok(was_associated)
}

/// Gives an instance that has none a floating IP from the default pool, associated at once; not counted
/// against the quota. Returns whether one was assigned.
pub(crate) fn auto_assign_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<bool, CloudError> {
    let instance = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
    if instance.interfaces.iter().any(|i| !i.floating.is_empty()) {
        return Ok(false);
    }
    let pool = default_pool(tx)?;
    let ip = take_free_in(tx, &pool, instance.project, true)?;
    associate_in(tx, Caller { project: instance.project, admin: false }, ip.address, id)?;
    Ok(true)
}

/// Disassociates the floating IPs NATed to `interfaces` of instance `id`, which are going away; auto-assigned
/// ones go back to their pool. Returns whether anything changed.
pub(crate) fn release_for_interfaces_in(
    tx: &mut WriteTx<'_>,
    id: InstanceId,
    interfaces: &[Interface],
) -> Result<bool, StoreError> {
    let mut changed = false;
    for address in interfaces.iter().flat_map(|i| i.floating.iter().copied()) {
        let key = u32::from(address);
        let Some(mut ip) = tx.get(&FLOATING_IPS, &key)?.filter(|ip| ip.instance == Some(id)) else { continue };
        detach_in(tx, &mut ip)?;
        if ip.auto_assigned {
            // Never counted against the quota, so nothing to refund.
            ip.project = None;
            ip.auto_assigned = false;
            rewind_pool_cursor_in(tx, &ip.pool, key)?;
        }
        schema::put_floating_ip_in(tx, &ip)?;
        changed = true;
    }
    Ok(changed)
}
