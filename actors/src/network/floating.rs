//! Floating IPs: operator pools, allocation to a project (with quota), association with one of the project's
//! instances (NAT), disassociation, release. Each operation is one transaction, then the NAT table is applied.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use nimbus_storage::ids::{FloatingIpId, InstanceId, PoolId, ProjectId};
use nimbus_storage::records::{AllocationCursor, FloatingIp, FloatingPool, Instance, TaskState, Usage, now_ms};
use nimbus_storage::schema::{FLOATING_BY_ID, FLOATING_IPS, FLOATING_POOLS, INSTANCES, NETWORKS, POOL_CURSORS};
use nimbus_storage::{Reads, StoreError, WriteTx};
use serde::{Deserialize, Serialize};

use super::{NetworkError, apply_nat, plan};
use crate::Ctx;
use crate::quota;

/// The largest pool nimbus creates in one go.
const MAX_POOL_ADDRESSES: u32 = 65536;

/// Who asks: a project, or an admin who may act on any project's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub project: ProjectId,
    pub admin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloatingRequest {
    CreatePool { name: String, range: Ipv4Network, interface: String },
    Allocate { caller: Caller, pool: Option<String> },
    Associate { caller: Caller, address: Ipv4Addr, instance: InstanceId },
    Disassociate { caller: Caller, address: Ipv4Addr },
    Release { caller: Caller, address: Ipv4Addr },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloatingOutcome {
    Pool(FloatingPool),
    Ip(FloatingIp),
}

/// Creates a pool straight in the store (at bootstrap, before any actor runs; pools need no dataplane).
pub async fn create_pool(
    store: &nimbus_storage::Store,
    request: FloatingRequest,
) -> Result<FloatingOutcome, NetworkError> {
    store.write(move |tx| handle_in(tx, request)).await
}

pub async fn handle(ctx: &Ctx, request: FloatingRequest) -> Result<FloatingOutcome, NetworkError> {
    let changes_nat = matches!(request, FloatingRequest::Associate { .. } | FloatingRequest::Disassociate { .. });
    let outcome = ctx.store.write(move |tx| handle_in(tx, request)).await?;
    if changes_nat {
        apply_nat(ctx).await?;
    }
    Ok(outcome)
}

fn handle_in(tx: &mut WriteTx<'_>, request: FloatingRequest) -> Result<FloatingOutcome, NetworkError> {
    match request {
        FloatingRequest::CreatePool { name, range, interface } => {
            create_pool_in(tx, name, range, interface).map(FloatingOutcome::Pool)
        }
        FloatingRequest::Allocate { caller, pool } => allocate_in(tx, caller, pool).map(FloatingOutcome::Ip),
        FloatingRequest::Associate { caller, address, instance } => {
            associate_in(tx, caller, address, instance).map(FloatingOutcome::Ip)
        }
        FloatingRequest::Disassociate { caller, address } => {
            disassociate_in(tx, caller, address).map(FloatingOutcome::Ip)
        }
        FloatingRequest::Release { caller, address } => release_in(tx, caller, address).map(FloatingOutcome::Ip),
    }
}

fn create_pool_in(
    tx: &mut WriteTx<'_>,
    name: String,
    range: Ipv4Network,
    interface: String,
) -> Result<FloatingPool, NetworkError> {
    if let Some(problem) = crate::names::name_problem("pool", &name).or_else(|| plan::network_address_problem(range)) {
        return Err(NetworkError::BadRequest(problem));
    }
    if range.size() > MAX_POOL_ADDRESSES {
        return Err(NetworkError::BadRequest(format!("A pool holds at most {MAX_POOL_ADDRESSES} addresses.")));
    }
    if interface.trim().is_empty() {
        return Err(NetworkError::BadRequest("A pool needs the public interface its addresses live on.".into()));
    }
    if tx.get(&FLOATING_POOLS, &name)?.is_some() {
        return Err(NetworkError::Conflict(format!("A floating IP pool named {name} already exists.")));
    }
    for (_, pool) in tx.scan(&FLOATING_POOLS)? {
        if plan::overlaps(pool.range, range) {
            return Err(NetworkError::Conflict(format!(
                "The range {range} overlaps pool {} ({}).",
                pool.name, pool.range
            )));
        }
    }
    for (_, network) in tx.scan(&NETWORKS)? {
        if plan::overlaps(network.cidr, range) {
            return Err(NetworkError::Conflict(format!(
                "The range {range} overlaps the fixed network {} ({}).",
                network.label, network.cidr
            )));
        }
    }
    let pool = FloatingPool { id: PoolId::random(), name: name.clone(), range, interface, created_at: now_ms() };
    tx.put(&FLOATING_POOLS, &name, &pool)?;
    let (first, last) = pool_bounds(&pool);
    for a in first..=last {
        let ip = FloatingIp {
            id: FloatingIpId::random(),
            address: Ipv4Addr::from(a),
            pool: name.clone(),
            project: None,
            instance: None,
            fixed_address: None,
            auto_assigned: false,
        };
        tx.put(&FLOATING_IPS, &a, &ip)?;
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
fn default_pool(tx: &WriteTx<'_>) -> Result<FloatingPool, NetworkError> {
    let mut pools: Vec<FloatingPool> = tx.scan(&FLOATING_POOLS)?.into_iter().map(|(_, p)| p).collect();
    pools.sort_by_key(|p| p.created_at);
    pools.into_iter().next().ok_or_else(|| NetworkError::NotFound("No floating IP pool exists.".into()))
}

fn allocate_in(tx: &mut WriteTx<'_>, caller: Caller, pool: Option<String>) -> Result<FloatingIp, NetworkError> {
    let pool = match pool {
        Some(name) => tx
            .get(&FLOATING_POOLS, &name)?
            .ok_or_else(|| NetworkError::NotFound(format!("Floating IP pool not found: {name}.")))?,
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
) -> Result<FloatingIp, NetworkError> {
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
                    tx.put(&FLOATING_IPS, &a, &ip)?;
                    tx.put(&POOL_CURSORS, &pool.name, &AllocationCursor { next: a + 1 })?;
                    return Ok(ip);
                }
            }
        }
    }
    Err(NetworkError::Exhausted(format!("No more floating IPs available in pool {}.", pool.name)))
}

/// The floating IP at `address` if the caller may use it; someone else's is "not found", so addresses of
/// other projects are not even confirmed to exist.
fn owned(tx: &WriteTx<'_>, caller: Caller, address: Ipv4Addr) -> Result<FloatingIp, NetworkError> {
    let not_found = || NetworkError::NotFound(format!("Floating IP {address} could not be found."));
    let ip = tx.get(&FLOATING_IPS, &u32::from(address))?.ok_or_else(not_found)?;
    match ip.project {
        Some(p) if p == caller.project || caller.admin => Ok(ip),
        _ => Err(not_found()),
    }
}

fn associate_in(
    tx: &mut WriteTx<'_>,
    caller: Caller,
    address: Ipv4Addr,
    id: InstanceId,
) -> Result<FloatingIp, NetworkError> {
    let mut ip = owned(tx, caller, address)?;
    let server_missing = || NetworkError::NotFound(format!("Instance {id} could not be found."));
    let mut instance: Instance = tx.get(&INSTANCES, &id)?.ok_or_else(server_missing)?;
    if Some(instance.project) != ip.project || instance.task_state == Some(TaskState::Deleting) {
        return Err(server_missing());
    }
    if ip.instance == Some(id) {
        return Ok(ip);
    }
    if let Some(other) = ip.instance {
        return Err(NetworkError::BadRequest(format!(
            "Floating IP {address} is associated with instance {other}; disassociate it first."
        )));
    }
    let interface = instance.interfaces.first_mut().ok_or_else(|| {
        NetworkError::BadRequest(format!("Instance {id} has no fixed IP yet to associate a floating IP with."))
    })?;
    interface.floating.push(address);
    ip.instance = Some(id);
    ip.fixed_address = Some(interface.address);
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    tx.put(&FLOATING_IPS, &u32::from(address), &ip)?;
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

fn disassociate_in(tx: &mut WriteTx<'_>, caller: Caller, address: Ipv4Addr) -> Result<FloatingIp, NetworkError> {
    let mut ip = owned(tx, caller, address)?;
    detach_in(tx, &mut ip)?;
    tx.put(&FLOATING_IPS, &u32::from(address), &ip)?;
    Ok(ip)
}

fn release_in(tx: &mut WriteTx<'_>, caller: Caller, address: Ipv4Addr) -> Result<FloatingIp, NetworkError> {
    let mut ip = owned(tx, caller, address)?;
    if let Some(instance) = ip.instance {
        return Err(NetworkError::Conflict(format!(
            "Floating IP {address} is associated with instance {instance}; disassociate it before releasing it."
        )));
    }
    let project = ip.project.take().expect("owned() checked the project");
    ip.auto_assigned = false;
    tx.put(&FLOATING_IPS, &u32::from(address), &ip)?;
    rewind_pool_cursor_in(tx, &ip.pool, u32::from(address))?;
    quota::refund_in(tx, project, Usage { floating_ips: 1, ..Usage::default() })?;
    Ok(ip)
}

/// Gives an instance that has none a floating IP from the default pool, associated at once; not counted
/// against the quota. Returns whether one was assigned.
pub(crate) fn auto_assign_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<bool, NetworkError> {
    let instance = tx.get(&INSTANCES, &id)?.ok_or(NetworkError::InstanceGone(id))?;
    if instance.interfaces.iter().any(|i| !i.floating.is_empty()) {
        return Ok(false);
    }
    let pool = default_pool(tx)?;
    let ip = take_free_in(tx, &pool, instance.project, true)?;
    associate_in(tx, Caller { project: instance.project, admin: false }, ip.address, id)?;
    Ok(true)
}

/// Disassociates every floating IP of an instance that is going away; auto-assigned ones go back to their
/// pool. Returns whether anything changed.
pub(crate) fn release_for_instance_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<bool, StoreError> {
    let mut changed = false;
    for address in instance.interfaces.iter().flat_map(|i| i.floating.iter().copied()) {
        let key = u32::from(address);
        let Some(mut ip) = tx.get(&FLOATING_IPS, &key)?.filter(|ip| ip.instance == Some(instance.id)) else { continue };
        detach_in(tx, &mut ip)?;
        if ip.auto_assigned {
            // Never counted against the quota, so nothing to refund.
            ip.project = None;
            ip.auto_assigned = false;
            rewind_pool_cursor_in(tx, &ip.pool, key)?;
        }
        tx.put(&FLOATING_IPS, &key, &ip)?;
        changed = true;
    }
    Ok(changed)
}

/// The floating IPs a caller sees: its project's (an admin sees all allocated ones).
pub fn list(r: &impl Reads, caller: Caller) -> Result<Vec<FloatingIp>, StoreError> {
    Ok(r.scan(&FLOATING_IPS)?
        .into_iter()
        .map(|(_, ip)| ip)
        .filter(|ip| ip.project.is_some_and(|p| p == caller.project || caller.admin))
        .collect())
}

/// Looks a floating IP up by its id or its address.
pub fn find(r: &impl Reads, id_or_address: &str) -> Result<Option<FloatingIp>, StoreError> {
    let key = match (id_or_address.parse::<FloatingIpId>(), id_or_address.parse::<Ipv4Addr>()) {
        (Ok(id), _) => r.index_get(&FLOATING_BY_ID, &id)?.into_iter().next(),
        (_, Ok(address)) => Some(u32::from(address)),
        _ => None,
    };
    match key {
        Some(k) => r.get(&FLOATING_IPS, &k),
        None => Ok(None),
    }
}
