//! The network manager (topic `network`; any member may answer): networks, fixed IPs, floating IPs, and the
//! dataplane of every network that is not a project's VLAN network.
//!
//! Each request is one store transaction (so an address can never be handed out twice, even with several
//! network managers or with actors killed mid-way), followed by a reconcile of what it changed: the
//! dataplane state is computed from the store ([`desired`]) and applied through the [`dataplane`] driver.
//! VLAN networks are applied by their project's VLAN supervisor ([`vlan`]), which the manager asks.

pub mod dataplane;
pub mod desired;
pub mod dhcp_release;
pub mod dnsmasq;
pub mod floating;
pub mod ipam;
pub mod linux;
pub mod plan;
pub mod vlan;

use std::net::Ipv4Addr;

use nimbus_runtime::{Topic, Wire, rpc};
use nimbus_storage::ids::{InstanceId, NetworkId, Pair, PortId, ProjectId};
use nimbus_storage::records::{
    AllocationCursor, FixedIp, Instance, Interface, Network, NetworkMode, TaskState, Usage, now_ms,
};
use nimbus_storage::schema::{ALLOCATION_CURSORS, FIXED_IPS, INSTANCES, MACS, NETWORKS, PROJECTS};
use nimbus_storage::{Reads, StoreError, WriteTx};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::quota::{self, QuotaError};
use crate::{Ctx, projects};
use dataplane::{LeaseAction, LeaseEvent};
use ipam::{FixedIpAllocator, random_mac};

pub const TOPIC: Topic = Topic::Role("network");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NetworkError {
    #[error("instance {0} no longer exists or is being deleted")]
    InstanceGone(InstanceId),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Dataplane(String),
    #[error("storage failure: {0}")]
    Store(String),
}

impl From<StoreError> for NetworkError {
    fn from(e: StoreError) -> Self {
        NetworkError::Store(e.to_string())
    }
}

impl From<QuotaError> for NetworkError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Store(e) => e.into(),
            exceeded => NetworkError::QuotaExceeded(exceeded.to_string()),
        }
    }
}

pub type Reply<T> = Wire<Result<T, NetworkError>>;

#[derive(RactorClusterMessage)]
pub enum NetworkMsg {
    /// Gives the instance its interface (or the one it has), binding a VLAN network to its project on first use.
    #[rpc]
    Allocate(Wire<InstanceId>, RpcReplyPort<Reply<Vec<Interface>>>),
    /// Frees the instance's fixed IPs, disassociates its floating ones (releasing those auto-assigned with it);
    /// nothing to do if it has none.
    #[rpc]
    Deallocate(Wire<InstanceId>, RpcReplyPort<Reply<()>>),
    /// Creates networks (`nova-manage network create`).
    #[rpc]
    CreateNetworks(Wire<plan::NetworkRequest>, RpcReplyPort<Reply<Vec<Network>>>),
    /// Deletes a network that no instance uses.
    #[rpc]
    DeleteNetwork(Wire<NetworkId>, RpcReplyPort<Reply<()>>),
    /// Binds a network to a project, or (`None`) unbinds it.
    #[rpc]
    SetNetworkProject(Wire<(NetworkId, Option<ProjectId>)>, RpcReplyPort<Reply<Network>>),
    /// Holds an address back from allocation, or gives it back.
    #[rpc]
    ReserveFixedIp(Wire<(Ipv4Addr, bool)>, RpcReplyPort<Reply<()>>),
    /// Floating IP operations; see [`floating`].
    #[rpc]
    Floating(Wire<floating::FloatingRequest>, RpcReplyPort<Reply<floating::FloatingOutcome>>),
    /// A DHCP server's report about a lease.
    Lease(Wire<LeaseEvent>),
    /// Timer: free fixed IPs whose DHCP release never came.
    Reclaim,
    /// Timer: re-apply the dataplane state the store implies.
    Reconcile,
}

pub struct NetworkManager;

impl Actor for NetworkManager {
    type Msg = NetworkMsg;
    type State = Ctx;
    type Arguments = Ctx;

    async fn pre_start(&self, myself: ActorRef<NetworkMsg>, ctx: Ctx) -> Result<Ctx, ActorProcessingErr> {
        let (events, mut received) = mpsc::unbounded_channel::<LeaseEvent>();
        ctx.dataplane.subscribe(events);
        let me = myself.clone();
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if me.send_message(NetworkMsg::Lease(Wire(event))).is_err() {
                    break;
                }
            }
        });
        match reconcile_all(&ctx).await {
            // The kernel may refuse for reasons only an operator can fix; the timer retries, and the
            // network manager keeps serving what it can meanwhile.
            Err(NetworkError::Dataplane(e)) => {
                tracing::warn!(cause = %e, "the dataplane is not in line with the store")
            }
            other => other?,
        }
        ctx.ns.join(&TOPIC, myself.get_cell());
        myself.send_interval(ctx.timing.reconcile_interval, || NetworkMsg::Reconcile);
        myself.send_interval(ctx.timing.fixed_ip_reclaim_after / 4, || NetworkMsg::Reclaim);
        Ok(ctx)
    }

    async fn handle(
        &self,
        myself: ActorRef<NetworkMsg>,
        msg: NetworkMsg,
        ctx: &mut Ctx,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        // Requests run on their own tasks so concurrent ones share group commits and dataplane passes.
        let ctx = ctx.clone();
        match msg {
            NetworkMsg::Allocate(Wire(instance), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(allocate(&ctx, instance).await));
                });
            }
            NetworkMsg::Deallocate(Wire(instance), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(deallocate(&ctx, instance).await));
                });
            }
            NetworkMsg::CreateNetworks(Wire(request), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(create_networks(&ctx, request).await));
                });
            }
            NetworkMsg::DeleteNetwork(Wire(id), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(delete_network(&ctx, id).await));
                });
            }
            NetworkMsg::SetNetworkProject(Wire((id, project)), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(set_network_project(&ctx, id, project).await));
                });
            }
            NetworkMsg::ReserveFixedIp(Wire((address, reserve)), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(reserve_fixed_ip(&ctx, address, reserve).await));
                });
            }
            NetworkMsg::Floating(Wire(request), reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(Wire(floating::handle(&ctx, request).await));
                });
            }
            NetworkMsg::Lease(Wire(event)) => lease(&ctx, event).await?,
            NetworkMsg::Reclaim => reclaim(&ctx).await?,
            NetworkMsg::Reconcile => {
                if let Err(e) = reconcile_all(&ctx).await {
                    tracing::warn!(cause = %e, "dataplane reconcile failed; retrying at the next pass");
                }
            }
        }
        Ok(())
    }
}

/// Applies every network the manager owns, and the NAT table.
async fn reconcile_all(ctx: &Ctx) -> Result<(), NetworkError> {
    let networks: Vec<Network> = ctx.store.read(|r| r.scan(&NETWORKS))?.into_iter().map(|(_, n)| n).collect();
    for network in networks.iter().filter(|n| desired::owned_by_network_manager(n)) {
        apply_network(ctx, network.id).await?;
    }
    apply_nat(ctx).await
}

/// Makes network `id`'s dataplane what the store implies now: its segment, or none at all once the network
/// is deleted or unbound. The read and the apply happen under one lock, so a caller holding an older view
/// (a reconcile pass, a VLAN supervisor's timer) cannot bring back what a newer one removed.
pub(crate) async fn apply_network(ctx: &Ctx, id: NetworkId) -> Result<(), NetworkError> {
    let _latest = ctx.dataplane_apply.segments.lock().await;
    let applied = match ctx.store.read(|r| desired::segment_of(r, id))? {
        Some(segment) => ctx.dataplane.ensure_segment(segment).await,
        None => ctx.dataplane.remove_segment(id).await,
    };
    applied.map_err(|e| NetworkError::Dataplane(e.to_string()))
}

pub(crate) async fn apply_nat(ctx: &Ctx) -> Result<(), NetworkError> {
    let _latest = ctx.dataplane_apply.nat.lock().await;
    let nat = ctx.store.read(desired::nat)?;
    ctx.dataplane.apply_nat(nat).await.map_err(|e| NetworkError::Dataplane(e.to_string()))
}

/// Brings the dataplane of `network` in line with the store: directly, or through its project's VLAN
/// supervisor.
async fn refresh(ctx: &Ctx, network: &Network) -> Result<(), NetworkError> {
    match (desired::owned_by_network_manager(network), network.project) {
        (true, _) => apply_network(ctx, network.id).await,
        (false, Some(project)) => {
            projects::ensure(ctx, project).await.map_err(|e| NetworkError::Dataplane(e.to_string()))?;
            let outcome =
                rpc::call_topic(&ctx.ns, &vlan::topic(&project), vlan::VlanMsg::Refresh, ctx.timing.call).await;
            match outcome {
                Ok(Wire(result)) => result,
                Err(e) => Err(NetworkError::Dataplane(format!("the VLAN supervisor of project {project}: {e}"))),
            }
        }
        // An unbound VLAN network has no dataplane.
        (false, None) => Ok(()),
    }
}

async fn allocate(ctx: &Ctx, instance: InstanceId) -> Result<Vec<Interface>, NetworkError> {
    let auto_assign = ctx.auto_assign_floating_ip;
    let (interfaces, network, assigned) = ctx
        .store
        .write(move |tx| {
            let (interfaces, network) = allocate_in(tx, instance)?;
            let assigned = auto_assign && floating::auto_assign_in(tx, instance)?;
            Ok::<_, NetworkError>((interfaces, network, assigned))
        })
        .await?;
    refresh(ctx, &network).await?;
    if assigned {
        apply_nat(ctx).await?;
    }
    Ok(interfaces)
}

/// The network an instance of `instance.project` gets: a network bound to the project if it has one; else,
/// by the project's mode, the oldest shared network of that mode, or (VLAN) a free VLAN network, bound to
/// the project now.
fn network_for(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<Network, NetworkError> {
    let mut networks: Vec<Network> = tx.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).collect();
    networks.sort_by_key(|n| (n.vlan, n.created_at, u32::from(n.cidr.network())));
    if let Some(own) = networks.iter().find(|n| n.project == Some(instance.project)) {
        return Ok(own.clone());
    }
    let project = tx.get(&PROJECTS, &instance.project)?;
    let mode = project.map_or(NetworkMode::Flat, |p| p.network_mode);
    let free = networks.into_iter().find(|n| n.project.is_none() && n.mode == mode);
    match (mode, free) {
        (NetworkMode::Vlan, Some(mut network)) => {
            network.project = Some(instance.project);
            tx.put(&NETWORKS, &network.id, &network)?;
            tracing::info!(project = %instance.project, network = %network.label, vlan = ?network.vlan, "VLAN network bound to project");
            Ok(network)
        }
        (_, Some(network)) => Ok(network),
        (NetworkMode::Vlan, None) => Err(NetworkError::Exhausted(format!(
            "No free VLAN network is left for project {}; create more with `nimbus network create --mode vlan`.",
            instance.project
        ))),
        (mode, None) => Err(NetworkError::Exhausted(format!("No {} network is available.", mode.name()))),
    }
}

/// The allocation transaction; returns the interfaces and the network they are on.
pub(crate) fn allocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<(Vec<Interface>, Network), NetworkError> {
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or(NetworkError::InstanceGone(id))?;
    if instance.task_state == Some(TaskState::Deleting) {
        return Err(NetworkError::InstanceGone(id));
    }
    if let Some(first) = instance.interfaces.first() {
        let network = tx.get(&NETWORKS, &first.network)?.ok_or_else(|| NetworkError::NotFound("network".into()))?;
        return Ok((instance.interfaces, network));
    }
    let network = network_for(tx, &instance)?;
    let address = take_free_address_in(tx, &network)?
        .ok_or_else(|| NetworkError::Exhausted(format!("No more fixed IPs available on network {}.", network.label)))?;
    let mac = loop {
        let mac = random_mac(&mut rand::rng());
        if tx.get(&MACS, &mac)?.is_none() {
            break mac;
        }
    };
    tx.put(&MACS, &mac, &id)?;
    quota::charge_in(tx, instance.project, Usage { fixed_ips: 1, ..Usage::default() })?;
    let row = FixedIp {
        address,
        instance: Some(id),
        mac: Some(mac.clone()),
        hostname: Some(desired::dhcp_hostname(&instance.name, id)),
        allocated: true,
        leased: false,
        reserved: false,
        released_at: None,
    };
    tx.put(&FIXED_IPS, &Pair(network.id, u32::from(address)), &row)?;
    instance.interfaces = vec![Interface {
        id: PortId::random(),
        network: network.id,
        network_label: network.label.clone(),
        mac,
        address,
        floating: Vec::new(),
    }];
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    Ok((instance.interfaces, network))
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

/// Frees a fixed IP row: the address becomes free (the cursor moves back to it, so the lowest free address
/// is handed out next) and its MAC unused.
fn free_fixed_ip_in(tx: &mut WriteTx<'_>, key: &Pair<NetworkId, u32>) -> Result<(), StoreError> {
    if let Some(row) = tx.delete(&FIXED_IPS, key)? {
        if let Some(mac) = &row.mac {
            tx.delete(&MACS, mac)?;
        }
        let cursor = tx.get(&ALLOCATION_CURSORS, &key.0)?;
        if cursor.is_none_or(|c| c.next > key.1) {
            tx.put(&ALLOCATION_CURSORS, &key.0, &AllocationCursor { next: key.1 })?;
        }
    }
    Ok(())
}

/// What a deallocation leaves for the dataplane to do.
#[derive(Default)]
pub(crate) struct Released {
    networks: Vec<Network>,
    /// DHCP leases to end now: (network, mac, address).
    leases: Vec<(NetworkId, String, Ipv4Addr)>,
    nat_changed: bool,
}

async fn deallocate(ctx: &Ctx, instance: InstanceId) -> Result<(), NetworkError> {
    let released = ctx.store.write(move |tx| deallocate_in(tx, instance)).await?;
    apply_released(ctx, released).await
}

pub(crate) async fn apply_released(ctx: &Ctx, released: Released) -> Result<(), NetworkError> {
    for network in &released.networks {
        refresh(ctx, network).await?;
    }
    for (network, mac, address) in released.leases {
        ctx.dataplane.release_lease(network, mac, address).await.map_err(|e| NetworkError::Dataplane(e.to_string()))?;
    }
    if released.nat_changed {
        apply_nat(ctx).await?;
    }
    Ok(())
}

/// The deallocation transaction. A leased address stays associated (not allocated) until the DHCP server
/// reports the lease ended, or the reclaim timer frees it; any other address is free at once.
pub(crate) fn deallocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<Released, StoreError> {
    let mut released = Released::default();
    let Some(mut instance) = tx.get(&INSTANCES, &id)? else { return Ok(released) };
    released.nat_changed = floating::release_for_instance_in(tx, &instance)?;
    for interface in &instance.interfaces {
        let key = Pair(interface.network, u32::from(interface.address));
        let Some(mut row) = tx.get(&FIXED_IPS, &key)?.filter(|row| row.instance == Some(id) && row.allocated) else {
            continue;
        };
        if row.leased {
            row.allocated = false;
            row.released_at = Some(now_ms());
            released.leases.push((interface.network, row.mac.clone().unwrap_or_default(), row.address));
            tx.put(&FIXED_IPS, &key, &row)?;
        } else {
            free_fixed_ip_in(tx, &key)?;
        }
        quota::refund_in(tx, instance.project, Usage { fixed_ips: 1, ..Usage::default() })?;
        released.networks.extend(tx.get(&NETWORKS, &interface.network)?);
    }
    if !instance.interfaces.is_empty() {
        instance.interfaces.clear();
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    Ok(released)
}

/// What a lease event does to the address's row.
#[derive(Debug, PartialEq, Eq)]
enum LeaseChange {
    Leased(bool),
    /// The lease of a deallocated address ended: the address is free.
    Free,
}

/// The change `event` makes to `row`, if any: none for an address handed to another MAC since, or a state
/// the row is in already (a DHCP server reports every lease again, `old`, on each reload and renewal).
fn lease_change(row: &FixedIp, event: &LeaseEvent) -> Option<LeaseChange> {
    if row.mac.as_deref() != Some(event.mac.as_str()) {
        return None;
    }
    match event.action {
        LeaseAction::Add | LeaseAction::Old => (!row.leased).then_some(LeaseChange::Leased(true)),
        LeaseAction::Del if !row.allocated && !row.reserved => Some(LeaseChange::Free),
        LeaseAction::Del => row.leased.then_some(LeaseChange::Leased(false)),
    }
}

async fn lease(ctx: &Ctx, event: LeaseEvent) -> Result<(), StoreError> {
    let key = Pair(event.network, u32::from(event.address));
    // Most events change nothing and need no write transaction.
    let row = ctx.store.read(|r| r.get(&FIXED_IPS, &key))?;
    if row.is_none_or(|row| lease_change(&row, &event).is_none()) {
        return Ok(());
    }
    ctx.store
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

/// Frees deallocated addresses whose DHCP release never came (nova's leak guard).
async fn reclaim(ctx: &Ctx) -> Result<(), StoreError> {
    let after = ctx.timing.fixed_ip_reclaim_after.as_millis() as u64;
    let freed = ctx
        .store
        .write(move |tx| {
            let now = now_ms();
            let stale: Vec<_> = tx
                .scan(&FIXED_IPS)?
                .into_iter()
                .filter(|(_, row)| !row.allocated && !row.reserved && row.released_at.is_some_and(|t| now - t >= after))
                .map(|(key, _)| key)
                .collect();
            for key in &stale {
                free_fixed_ip_in(tx, key)?;
            }
            Ok::<_, StoreError>(stale.len())
        })
        .await?;
    if freed > 0 {
        tracing::info!(freed, "reclaimed fixed IPs whose DHCP release never came");
    }
    Ok(())
}

async fn create_networks(ctx: &Ctx, request: plan::NetworkRequest) -> Result<Vec<Network>, NetworkError> {
    if let Some(project) = request.project
        && ctx.store.read(|r| r.get(&PROJECTS, &project))?.is_none()
    {
        return Err(NetworkError::NotFound(format!("Project {project} could not be found.")));
    }
    let created = ctx
        .store
        .write(move |tx| {
            let existing: Vec<Network> = tx.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).collect();
            let planned = plan::plan(&request, &existing, now_ms()).map_err(|e| match e {
                plan::PlanError::Invalid(m) => NetworkError::BadRequest(m),
                plan::PlanError::Conflict(m) => NetworkError::Conflict(m),
            })?;
            for network in &planned {
                tx.put(&NETWORKS, &network.id, network)?;
            }
            Ok::<_, NetworkError>(planned)
        })
        .await?;
    for network in &created {
        refresh(ctx, network).await?;
    }
    apply_nat(ctx).await?;
    Ok(created)
}

async fn delete_network(ctx: &Ctx, id: NetworkId) -> Result<(), NetworkError> {
    let network = ctx
        .store
        .write(move |tx| {
            let network = tx
                .get(&NETWORKS, &id)?
                .ok_or_else(|| NetworkError::NotFound(format!("Network {id} could not be found.")))?;
            let used = tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))?;
            if used.iter().any(|(_, row)| row.instance.is_some()) {
                return Err(NetworkError::Conflict(format!(
                    "Network {} is still in use by instances; delete them first.",
                    network.label
                )));
            }
            for (key, _) in used {
                free_fixed_ip_in(tx, &key)?;
            }
            tx.delete(&ALLOCATION_CURSORS, &id)?;
            tx.delete(&NETWORKS, &id)?;
            Ok(network)
        })
        .await?;
    apply_network(ctx, network.id).await?;
    if !desired::owned_by_network_manager(&network) {
        // Its project's VLAN supervisor drops the VPN forward it had.
        refresh(ctx, &network).await?;
    }
    apply_nat(ctx).await
}

async fn set_network_project(ctx: &Ctx, id: NetworkId, project: Option<ProjectId>) -> Result<Network, NetworkError> {
    let (before, after) = ctx
        .store
        .write(move |tx| {
            let mut network = tx
                .get(&NETWORKS, &id)?
                .ok_or_else(|| NetworkError::NotFound(format!("Network {id} could not be found.")))?;
            let before = network.clone();
            if let Some(p) = project {
                tx.get(&PROJECTS, &p)?
                    .ok_or_else(|| NetworkError::NotFound(format!("Project {p} could not be found.")))?;
            }
            if project.is_none() {
                let used = tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))?;
                if used.iter().any(|(_, row)| row.instance.is_some()) {
                    return Err(NetworkError::Conflict(format!(
                        "Network {} is still in use by instances; it cannot be disassociated.",
                        network.label
                    )));
                }
            }
            network.project = project;
            tx.put(&NETWORKS, &id, &network)?;
            Ok::<_, NetworkError>((before, network))
        })
        .await?;
    // Removed if it is unbound now. VPN forwards follow the binding: the VLAN supervisors of the previous and
    // the new project re-apply theirs.
    apply_network(ctx, id).await?;
    if !desired::owned_by_network_manager(&after) {
        if before.project != after.project {
            refresh(ctx, &before).await?;
        }
        refresh(ctx, &after).await?;
    }
    Ok(after)
}

async fn reserve_fixed_ip(ctx: &Ctx, address: Ipv4Addr, reserve: bool) -> Result<(), NetworkError> {
    ctx.store
        .write(move |tx| {
            let (network, row) = fixed_ip_info(tx, address)?
                .ok_or_else(|| NetworkError::NotFound(format!("Fixed IP {address} is not on any network.")))?;
            if !FixedIpAllocator::for_network(&network).is_allocatable(address) {
                return Err(NetworkError::BadRequest(format!(
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
                    return Err(NetworkError::Conflict(format!("Fixed IP {address} is in use by an instance.")));
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

/// The fixed IP's row and network, for `os-fixed-ips`.
pub fn fixed_ip_info(r: &impl Reads, address: Ipv4Addr) -> Result<Option<(Network, Option<FixedIp>)>, StoreError> {
    let Some(network) = r.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).find(|n| n.cidr.contains(address)) else {
        return Ok(None);
    };
    let row = r.get(&FIXED_IPS, &Pair(network.id, u32::from(address)))?;
    Ok(Some((network, row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_events_change_only_what_they_must() {
        let mac = "fa:16:3e:00:00:01";
        // (allocated, leased, action, event from the row's MAC, expected change)
        let cases = [
            (true, false, LeaseAction::Add, true, Some(LeaseChange::Leased(true))),
            (true, true, LeaseAction::Add, true, None),
            (true, true, LeaseAction::Old, true, None),
            (true, false, LeaseAction::Old, true, Some(LeaseChange::Leased(true))),
            (true, true, LeaseAction::Del, true, Some(LeaseChange::Leased(false))),
            (true, false, LeaseAction::Del, true, None),
            (false, true, LeaseAction::Del, true, Some(LeaseChange::Free)),
            (true, false, LeaseAction::Add, false, None),
            (false, true, LeaseAction::Del, false, None),
        ];
        for (allocated, leased, action, same_mac, expected) in cases {
            let row = FixedIp {
                address: "10.0.0.2".parse().unwrap(),
                instance: None,
                mac: Some(mac.into()),
                hostname: None,
                allocated,
                leased,
                reserved: false,
                released_at: None,
            };
            let event = LeaseEvent {
                network: NetworkId::random(),
                action,
                mac: if same_mac { mac.into() } else { "fa:16:3e:00:00:02".into() },
                address: row.address,
            };
            assert_eq!(lease_change(&row, &event), expected, "{allocated} {leased} {action:?} {same_mac}");
        }
    }
}
