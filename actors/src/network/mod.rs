//! The network manager: gives each instance a virtual interface (an `fa:16:3e` MAC) and a fixed IP on its
//! network, and takes them back. Listens on the `network` topic; any member may answer.
//!
//! Allocation is one store transaction (pick the lowest free address, record it, write the instance's
//! interfaces), so two instances can never get the same address, even with several network managers or
//! with actors killed mid-way; and it is idempotent (an instance that has its interfaces gets them again).

pub mod ipam;

use std::collections::BTreeSet;

use nimbus_runtime::{Topic, Wire};
use nimbus_storage::ids::{InstanceId, Pair};
use nimbus_storage::records::{FixedIp, Instance, Interface, Network, TaskState, now_ms};
use nimbus_storage::schema::{FIXED_IPS, INSTANCES, NETWORKS};
use nimbus_storage::{Reads, StoreError, WriteTx};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::Ctx;
use ipam::{FixedIpAllocator, random_mac};

pub const TOPIC: Topic = Topic::Role("network");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NetworkError {
    #[error("instance {0} no longer exists or is being deleted")]
    InstanceGone(InstanceId),
    #[error("no network is available to project {0}")]
    NoNetwork(String),
    #[error("no more fixed IPs available on network {0}")]
    Exhausted(String),
    #[error("storage failure: {0}")]
    Store(String),
}

impl From<StoreError> for NetworkError {
    fn from(e: StoreError) -> Self {
        NetworkError::Store(e.to_string())
    }
}

pub type AllocateReply = Wire<Result<Vec<Interface>, NetworkError>>;
pub type DeallocateReply = Wire<Result<(), NetworkError>>;

#[derive(RactorClusterMessage)]
pub enum NetworkMsg {
    /// Gives the instance its interfaces (or the ones it has).
    #[rpc]
    Allocate(Wire<InstanceId>, RpcReplyPort<AllocateReply>),
    /// Frees the instance's fixed IPs and forgets its interfaces; nothing to do if it has none.
    #[rpc]
    Deallocate(Wire<InstanceId>, RpcReplyPort<DeallocateReply>),
}

pub struct NetworkManager;

impl Actor for NetworkManager {
    type Msg = NetworkMsg;
    type State = Ctx;
    type Arguments = Ctx;

    async fn pre_start(&self, myself: ActorRef<NetworkMsg>, ctx: Ctx) -> Result<Ctx, ActorProcessingErr> {
        ctx.ns.join(&TOPIC, myself.get_cell());
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NetworkMsg>,
        msg: NetworkMsg,
        ctx: &mut Ctx,
    ) -> Result<(), ActorProcessingErr> {
        // Each request is one store transaction; run them on their own tasks so concurrent requests share
        // group commits instead of queueing behind each other's fsync.
        let store = ctx.store.clone();
        match msg {
            NetworkMsg::Allocate(Wire(instance), reply) => {
                tokio::spawn(async move {
                    let outcome = store.write(move |tx| allocate_in(tx, instance)).await;
                    let _ = reply.send(Wire(outcome));
                });
            }
            NetworkMsg::Deallocate(Wire(instance), reply) => {
                tokio::spawn(async move {
                    let outcome = store
                        .write(move |tx| deallocate_in(tx, instance))
                        .await
                        .map_err(NetworkError::from);
                    let _ = reply.send(Wire(outcome));
                });
            }
        }
        Ok(())
    }
}

/// The network an instance of this project gets: the project's own, else the oldest shared one.
fn network_for(tx: &WriteTx<'_>, instance: &Instance) -> Result<Network, NetworkError> {
    let mut candidates: Vec<Network> = tx
        .scan(&NETWORKS)?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n.project.is_none_or(|p| p == instance.project))
        .collect();
    candidates.sort_by_key(|n| (n.project.is_none(), n.created_at));
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| NetworkError::NoNetwork(instance.project.to_string()))
}

pub(crate) fn allocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<Vec<Interface>, NetworkError> {
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or(NetworkError::InstanceGone(id))?;
    if instance.task_state == Some(TaskState::Deleting) {
        return Err(NetworkError::InstanceGone(id));
    }
    if !instance.interfaces.is_empty() {
        return Ok(instance.interfaces);
    }
    let network = network_for(tx, &instance)?;
    let in_use = tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&network.id))?;
    let taken: BTreeSet<u32> = in_use.iter().map(|(Pair(_, ip), _)| *ip).collect();
    let macs: BTreeSet<&str> = in_use.iter().filter_map(|(_, row)| row.mac.as_deref()).collect();
    let allocator = FixedIpAllocator {
        cidr: network.cidr,
        gateway: network.gateway,
    };
    let address = allocator
        .first_free(&taken)
        .ok_or_else(|| NetworkError::Exhausted(network.label.clone()))?;
    let mac = loop {
        let mac = random_mac(&mut rand::rng());
        if !macs.contains(mac.as_str()) {
            break mac;
        }
    };
    tx.put(
        &FIXED_IPS,
        &Pair(network.id, u32::from(address)),
        &FixedIp {
            address,
            instance: Some(id),
            mac: Some(mac.clone()),
            allocated: true,
            leased: false,
            reserved: false,
        },
    )?;
    instance.interfaces = vec![Interface {
        network: network.id,
        network_label: network.label,
        mac,
        address,
    }];
    instance.updated_at = now_ms();
    tx.put(&INSTANCES, &id, &instance)?;
    Ok(instance.interfaces)
}

pub(crate) fn deallocate_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<(), StoreError> {
    let Some(mut instance) = tx.get(&INSTANCES, &id)? else {
        return Ok(());
    };
    for interface in &instance.interfaces {
        let key = Pair(interface.network, u32::from(interface.address));
        if tx.get(&FIXED_IPS, &key)?.is_some_and(|row| row.instance == Some(id)) {
            tx.delete(&FIXED_IPS, &key)?;
        }
    }
    if !instance.interfaces.is_empty() {
        instance.interfaces.clear();
        instance.updated_at = now_ms();
        tx.put(&INSTANCES, &id, &instance)?;
    }
    Ok(())
}
