//! The compute agent: one per host (`compute/host-0003`, topic `compute.host-0003`). It registers its host,
//! reports in at an interval, builds and destroys instances through its virt driver, and on every start
//! reconciles the driver with the store (instances the store says run here are running; nothing else is).

pub mod virt;

use std::net::Ipv4Addr;
use std::sync::Arc;

use nimbus_runtime::{Topic, Wire, rpc};
use nimbus_storage::ids::{HostId, InstanceId};
use nimbus_storage::records::{Host, Instance, TaskState, VmState, now_ms};
use nimbus_storage::schema::{HOSTS, INSTANCES, INSTANCES_BY_HOST};
use nimbus_storage::{Reads, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::Ctx;
use crate::instance_state::Event;
use crate::instances::{TransitionError, transition_in};
use crate::network::{self, NetworkMsg};
use virt::{InstanceSpec, VirtDriver};

pub const ROLE: &str = "compute";

pub fn topic(host: &HostId) -> Topic {
    Topic::keyed(ROLE, host)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ComputeError {
    /// The instance was deleted or moved elsewhere while this host worked on it; nothing is left here.
    #[error("instance {0} is no longer this host's to build: {1}")]
    Superseded(InstanceId, String),
    #[error("network allocation failed: {0}")]
    Network(String),
    #[error("{0}")]
    Virt(String),
    #[error("storage failure: {0}")]
    Store(String),
}

impl From<StoreError> for ComputeError {
    fn from(e: StoreError) -> Self {
        ComputeError::Store(e.to_string())
    }
}

impl From<TransitionError> for ComputeError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::Store(e) => e.into(),
            TransitionError::Gone(id) => ComputeError::Superseded(id, "deleted".into()),
            TransitionError::Superseded(id, why) => ComputeError::Superseded(id, why),
            TransitionError::Invalid { id, source } => ComputeError::Superseded(id, source.to_string()),
        }
    }
}

pub type StepReply = Wire<Result<(), ComputeError>>;

#[derive(RactorClusterMessage)]
pub enum ComputeMsg {
    /// Builds the instance the store assigns to this host: network, then spawn, then ACTIVE. Idempotent.
    #[rpc]
    Build(Wire<InstanceId>, RpcReplyPort<StepReply>),
    /// Destroys the instance here and releases its network. Idempotent.
    #[rpc]
    Destroy(Wire<InstanceId>, RpcReplyPort<StepReply>),
    /// Timer: record that this host is alive.
    ReportIn,
}

pub struct ComputeArgs {
    pub ctx: Ctx,
    pub host: HostId,
    pub host_ip: Ipv4Addr,
    pub driver: Arc<dyn VirtDriver>,
}

#[derive(Clone)]
pub struct ComputeState {
    ctx: Ctx,
    host: HostId,
    driver: Arc<dyn VirtDriver>,
}

pub struct ComputeAgent;

impl Actor for ComputeAgent {
    type Msg = ComputeMsg;
    type State = ComputeState;
    type Arguments = ComputeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ComputeMsg>,
        args: ComputeArgs,
    ) -> Result<ComputeState, ActorProcessingErr> {
        register(&args).await?;
        let state = ComputeState { ctx: args.ctx, host: args.host, driver: args.driver };
        reconcile(&state).await?;
        state.ctx.ns.join(&topic(&state.host), myself.get_cell());
        myself.send_interval(state.ctx.timing.report_interval, || ComputeMsg::ReportIn);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ComputeMsg>,
        msg: ComputeMsg,
        state: &mut ComputeState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            ComputeMsg::Build(Wire(id), reply) => {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = reply.send(Wire(build(&state, id).await));
                });
            }
            ComputeMsg::Destroy(Wire(id), reply) => {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = reply.send(Wire(destroy(&state, id).await));
                });
            }
            ComputeMsg::ReportIn => {
                let host = state.host.clone();
                state
                    .ctx
                    .store
                    .write(move |tx| {
                        if let Some(mut record) = tx.get(&HOSTS, &host)? {
                            record.last_seen = now_ms();
                            tx.put(&HOSTS, &host, &record)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Creates or refreshes this host's record, keeping its number and the operator's enabled flag.
async fn register(args: &ComputeArgs) -> Result<(), StoreError> {
    let capacity = args.driver.capacity();
    let (name, host_ip, kind) = (args.host.clone(), args.host_ip, args.driver.kind().to_string());
    args.ctx
        .store
        .write(move |tx| {
            let hosts = tx.scan(&HOSTS)?;
            let existing = hosts.iter().find(|(n, _)| *n == name).map(|(_, h)| h.clone());
            let number = existing
                .as_ref()
                .map_or_else(|| hosts.iter().map(|(_, h)| h.number).max().unwrap_or(0) + 1, |h| h.number);
            let record = Host {
                name: name.clone(),
                number,
                vcpus: capacity.vcpus,
                ram_mb: capacity.ram_mb,
                disk_gb: capacity.disk_gb,
                hypervisor_type: kind,
                host_ip,
                enabled: existing.is_none_or(|h| h.enabled),
                last_seen: now_ms(),
            };
            tx.put(&HOSTS, &name, &record)
        })
        .await
}

fn spec_of(instance: &Instance) -> InstanceSpec {
    InstanceSpec {
        id: instance.id,
        name: instance.name.clone(),
        vcpus: instance.flavor.vcpus,
        ram_mb: instance.flavor.ram_mb,
        disk_gb: instance.flavor.disk_gb,
        interfaces: instance.interfaces.clone(),
    }
}

/// Makes the hypervisor run exactly the instances the store says are active here. Instances still being
/// built are left to their conductor, which resumes them.
async fn reconcile(state: &ComputeState) -> Result<(), ActorProcessingErr> {
    let host = state.host.clone();
    let mine: Vec<Instance> = state.ctx.store.read(|r| {
        let ids = r.index_get(&INSTANCES_BY_HOST, &host)?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(r.get(&INSTANCES, &id)?);
        }
        Ok::<_, StoreError>(out)
    })?;
    for instance in mine.iter().filter(|i| i.vm_state == VmState::Active && i.task_state.is_none()) {
        state.driver.spawn(spec_of(instance)).await?;
    }
    for id in state.driver.list().await? {
        if !mine.iter().any(|i| i.id == id) {
            tracing::info!(host = %state.host, instance = %id, "destroying an instance the store does not place here");
            state.driver.destroy(id).await?;
        }
    }
    Ok(())
}

fn on_this_host(host: &HostId) -> impl FnOnce(&Instance) -> Result<(), String> + '_ {
    move |instance| match &instance.host {
        Some(h) if h == host => Ok(()),
        Some(other) => Err(format!("now assigned to {other}")),
        None => Err("no longer assigned to a host".into()),
    }
}

async fn call_network<T: Send + 'static>(
    ctx: &Ctx,
    make: impl FnOnce(ractor::RpcReplyPort<Wire<Result<T, network::NetworkError>>>) -> NetworkMsg,
) -> Result<T, ComputeError> {
    match rpc::call_topic(&ctx.ns, &network::TOPIC, make, ctx.timing.call).await {
        Ok(Wire(outcome)) => outcome.map_err(|e| ComputeError::Network(e.to_string())),
        Err(e) => Err(ComputeError::Network(e.to_string())),
    }
}

async fn build(state: &ComputeState, id: InstanceId) -> Result<(), ComputeError> {
    let store = &state.ctx.store;
    let instance =
        store.read(|r| r.get(&INSTANCES, &id))?.ok_or_else(|| ComputeError::Superseded(id, "deleted".into()))?;
    on_this_host(&state.host)(&instance).map_err(|why| ComputeError::Superseded(id, why))?;
    if instance.vm_state == VmState::Active {
        // A resumed build that had finished: make sure it runs, nothing else to do.
        state.driver.spawn(spec_of(&instance)).await.map_err(|e| ComputeError::Virt(e.to_string()))?;
        return Ok(());
    }
    // The allocation wrote the interfaces into the instance record; the transition below reads them from there
    // (never from this reply, which a floating-IP association may have outdated meanwhile).
    call_network(&state.ctx, |reply| NetworkMsg::Allocate(Wire(id), reply)).await?;
    let host = state.host.clone();
    let instance = store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?;
            if let Some(current) = current.filter(|i| past_networking(i, &host)) {
                // Another attempt of this same build got further already.
                return Ok(current);
            }
            transition_in(tx, id, Event::NetworkReady, on_this_host(&host), |_| {})
        })
        .await
        .map_err(ComputeError::from)?;
    if let Err(e) = state.driver.spawn(spec_of(&instance)).await {
        // Leave nothing behind for the retry on another host.
        let _ = state.driver.destroy(id).await;
        let _ = call_network(&state.ctx, |reply| NetworkMsg::Deallocate(Wire(id), reply)).await;
        return Err(ComputeError::Virt(e.to_string()));
    }
    let host = state.host.clone();
    let done = store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?;
            if let Some(current) = current.filter(|i| i.vm_state == VmState::Active && i.host.as_ref() == Some(&host)) {
                return Ok(current);
            }
            transition_in(tx, id, Event::Spawned, on_this_host(&host), |i| i.launched_at = Some(now_ms()))
        })
        .await;
    if let Err(e) = done {
        // Deleted or moved while spawning: whoever owns it now cleans its own side; we clean ours.
        let _ = state.driver.destroy(id).await;
        return Err(e.into());
    }
    Ok(())
}

/// The instance is on `host` and its build is at the spawn step or done: a repeated build skips ahead.
fn past_networking(instance: &Instance, host: &HostId) -> bool {
    instance.host.as_ref() == Some(host)
        && (instance.task_state == Some(TaskState::Spawning)
            || (instance.vm_state == VmState::Active && instance.task_state.is_none()))
}

async fn destroy(state: &ComputeState, id: InstanceId) -> Result<(), ComputeError> {
    state.driver.destroy(id).await.map_err(|e| ComputeError::Virt(e.to_string()))?;
    call_network(&state.ctx, |reply| NetworkMsg::Deallocate(Wire(id), reply)).await
}
