//! The scheduler: places each instance on the best host (topic `scheduler`; any member may answer), and
//! records the hosts compute agents report.
//!
//! It keeps a view of the hosts (capacity, usage, up/down) read from the store and reused for a short,
//! bounded time, and records its own placements as claims at once, so a burst of requests spreads over the
//! hosts instead of piling onto the one that looked emptiest when the view was read. A claim is dropped when
//! the store shows the instance on its host (it is then counted from the store) or after a timeout.

pub mod placement;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nimbus_runtime::{Topic, Wire};
use nimbus_storage::ids::{HostId, InstanceId};
use nimbus_storage::records::{Host, VmState, now_ms};
use nimbus_storage::schema::{HOSTS, INSTANCES, INSTANCES_BY_HOST};
use nimbus_storage::{Reads, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::Ctx;
use crate::compute::virt::InstanceSpec;
use crate::context::Timing;
use placement::{Demand, HostState, NoValidHost, Ratios};

pub const TOPIC: Topic = Topic::Role("scheduler");

/// How long a view of the hosts read from the store is reused.
const VIEW_TTL: Duration = Duration::from_millis(500);
/// How long a claim counts while the store does not show its instance on a host yet.
const CLAIM_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRequest {
    pub instance: InstanceId,
    pub demand: Demand,
}

pub type PlaceReply = Wire<Result<HostId, NoValidHost>>;

/// What a compute agent reports about its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub name: HostId,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub hypervisor_type: String,
    pub host_ip: Ipv4Addr,
    /// The cluster node the agent runs on, and its cluster address.
    pub node: String,
    pub node_address: Option<String>,
}

/// What the cloud places on a host, for its agent to reconcile with: instances that must run, and instances
/// being built there (their conductor finishes or undoes them; the agent leaves them alone).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub active: Vec<InstanceSpec>,
    pub building: Vec<InstanceId>,
}

pub type ReportReply = Wire<Result<Placement, String>>;

#[derive(RactorClusterMessage)]
pub enum SchedulerMsg {
    #[rpc]
    Place(Wire<PlaceRequest>, RpcReplyPort<PlaceReply>),
    /// A compute agent reports in: the host is recorded (kept number and enabled flag) and marked up.
    #[rpc]
    ReportIn(Wire<HostReport>, RpcReplyPort<ReportReply>),
}

struct Claim {
    host: HostId,
    demand: Demand,
    at: Instant,
}

/// The hosts with the usage the store shows, and where each instance is, as read at `read_at`.
struct StoreView {
    hosts: Vec<HostState>,
    placed: Placements,
    read_at: Instant,
}

pub struct SchedulerState {
    ctx: Ctx,
    ratios: Ratios,
    view: Option<StoreView>,
    claims: HashMap<InstanceId, Claim>,
}

pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = Ctx;

    async fn pre_start(&self, myself: ActorRef<SchedulerMsg>, ctx: Ctx) -> Result<SchedulerState, ActorProcessingErr> {
        ctx.ns.join(&TOPIC, myself.get_cell());
        Ok(SchedulerState { ctx, ratios: Ratios::default(), view: None, claims: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            SchedulerMsg::Place(Wire(request), reply) => {
                let outcome = state.place(request)?;
                let _ = reply.send(Wire(outcome));
            }
            SchedulerMsg::ReportIn(Wire(report), reply) => {
                let host = report.name.clone();
                let outcome = record_host(&state.ctx, report).await.map_err(|e| e.to_string());
                if outcome.is_ok() && state.view.as_ref().is_some_and(|v| !v.hosts.iter().any(|h| h.name == host)) {
                    // A new host: let the next placement see it at once.
                    state.view = None;
                }
                let _ = reply.send(Wire(outcome));
            }
        }
        Ok(())
    }
}

/// A host and what the instances placed on it use of it, as the store shows them.
#[derive(Clone, Debug)]
pub struct HostUsage {
    pub host: Host,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub instances: usize,
}

/// Whether the host reported recently enough to count as up.
pub fn is_up(host: &Host, timing: &Timing) -> bool {
    now_ms().saturating_sub(host.last_seen) <= timing.service_down_after.as_millis() as u64
}

/// Where each instance is placed (`None`: not on a host yet).
pub type Placements = HashMap<InstanceId, Option<HostId>>;

/// Every host with its usage (in host-number order), and where each instance is placed.
pub fn host_usage(r: &impl Reads) -> Result<(Vec<HostUsage>, Placements), StoreError> {
    let mut hosts: Vec<HostUsage> = r
        .scan(&HOSTS)?
        .into_iter()
        .map(|(_, host)| HostUsage { host, vcpus: 0, ram_mb: 0, disk_gb: 0, instances: 0 })
        .collect();
    hosts.sort_by_key(|u| u.host.number);
    let mut placed = HashMap::new();
    for (id, instance) in r.scan(&INSTANCES)? {
        if let Some(u) = instance.host.as_ref().and_then(|name| hosts.iter_mut().find(|u| &u.host.name == name)) {
            u.vcpus += instance.flavor.vcpus;
            u.ram_mb += instance.flavor.ram_mb;
            u.disk_gb += instance.flavor.disk_gb;
            u.instances += 1;
        }
        placed.insert(id, instance.host);
    }
    Ok((hosts, placed))
}

/// Creates or refreshes the host's record, keeping its number and the operator's enabled flag; returns what
/// the cloud places on it.
async fn record_host(ctx: &Ctx, report: HostReport) -> Result<Placement, StoreError> {
    let name = report.name.clone();
    ctx.store
        .write(move |tx| {
            let hosts = tx.scan(&HOSTS)?;
            let existing = hosts.iter().find(|(n, _)| *n == report.name).map(|(_, h)| h.clone());
            let number = existing
                .as_ref()
                .map_or_else(|| hosts.iter().map(|(_, h)| h.number).max().unwrap_or(0) + 1, |h| h.number);
            let record = Host {
                name: report.name.clone(),
                number,
                vcpus: report.vcpus,
                ram_mb: report.ram_mb,
                disk_gb: report.disk_gb,
                hypervisor_type: report.hypervisor_type,
                host_ip: report.host_ip,
                node: report.node,
                node_address: report.node_address,
                enabled: existing.is_none_or(|h| h.enabled),
                last_seen: now_ms(),
            };
            tx.put(&HOSTS, &report.name, &record)
        })
        .await?;
    ctx.store.read(|r| {
        let mut placement = Placement::default();
        for id in r.index_get(&INSTANCES_BY_HOST, &name)? {
            match r.get(&INSTANCES, &id)? {
                Some(i) if i.vm_state == VmState::Active && i.task_state.is_none() => {
                    placement.active.push(InstanceSpec::of(r, &i)?)
                }
                Some(i) => placement.building.push(i.id),
                None => {}
            }
        }
        Ok(placement)
    })
}

impl SchedulerState {
    fn place(&mut self, request: PlaceRequest) -> Result<Result<HostId, NoValidHost>, StoreError> {
        let hosts = self.hosts()?;
        let mut chosen = placement::select(&hosts, &request.demand, self.ratios).map(|h| h.name.clone());
        if chosen.is_err() {
            // A "no" must not come from a cached view: capacity may have been freed since it was read.
            self.view = None;
            let hosts = self.hosts()?;
            chosen = placement::select(&hosts, &request.demand, self.ratios).map(|h| h.name.clone());
        }
        if let Ok(host) = &chosen {
            self.claims
                .insert(request.instance, Claim { host: host.clone(), demand: request.demand, at: Instant::now() });
        }
        Ok(chosen)
    }

    /// The current host view: the store's (reused for `VIEW_TTL`) plus the claims it does not show yet.
    fn hosts(&mut self) -> Result<Vec<HostState>, StoreError> {
        if self.view.as_ref().is_none_or(|v| v.read_at.elapsed() > VIEW_TTL) {
            self.view = Some(self.read_view()?);
        }
        let StoreView { hosts, placed, read_at } = self.view.as_ref().expect("view was just loaded");
        let mut hosts = hosts.clone();
        self.claims.retain(|id, claim| match placed.get(id) {
            // The store counts it now: on its host, or (a view newer than the claim) wherever it went since.
            // A view older than the claim may still show the host of an earlier attempt; the claim stays.
            Some(Some(host)) if *host == claim.host || *read_at > claim.at => false,
            // Gone from a view read after the claim: deleted meanwhile; its resources are free again.
            None if *read_at > claim.at => false,
            _ => claim.at.elapsed() < CLAIM_TTL,
        });
        for claim in self.claims.values() {
            if let Some(h) = hosts.iter_mut().find(|h| h.name == claim.host) {
                h.used_vcpus += claim.demand.vcpus;
                h.used_ram_mb += claim.demand.ram_mb;
                h.used_disk_gb += claim.demand.disk_gb;
            }
        }
        Ok(hosts)
    }

    fn read_view(&self) -> Result<StoreView, StoreError> {
        let (usage, placed) = self.ctx.store.read(host_usage)?;
        let hosts = usage
            .into_iter()
            .map(|u| HostState {
                up: is_up(&u.host, &self.ctx.timing),
                enabled: u.host.enabled,
                name: u.host.name,
                vcpus: u.host.vcpus,
                ram_mb: u.host.ram_mb,
                disk_gb: u.host.disk_gb,
                used_vcpus: u.vcpus,
                used_ram_mb: u.ram_mb,
                used_disk_gb: u.disk_gb,
            })
            .collect();
        Ok(StoreView { hosts, placed, read_at: Instant::now() })
    }
}
