//! The scheduler: places each instance on the best host (topic `scheduler`; any member may answer).
//!
//! It keeps a view of the hosts (capacity, usage, up/down) read from the store and reused for a short,
//! bounded time, and records its own placements as claims at once, so a burst of requests spreads over the
//! hosts instead of piling onto the one that looked emptiest when the view was read. A claim is dropped when
//! the store shows the instance on its host (it is then counted from the store) or after a timeout.

pub mod placement;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nimbus_runtime::{Topic, Wire};
use nimbus_storage::ids::{HostId, InstanceId};
use nimbus_storage::records::now_ms;
use nimbus_storage::schema::{HOSTS, INSTANCES};
use nimbus_storage::{Reads, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::Ctx;
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

#[derive(RactorClusterMessage)]
pub enum SchedulerMsg {
    #[rpc]
    Place(Wire<PlaceRequest>, RpcReplyPort<PlaceReply>),
}

struct Claim {
    host: HostId,
    demand: Demand,
    at: Instant,
}

/// The hosts with the usage the store shows, and where each instance is, as read at `read_at`.
struct StoreView {
    hosts: Vec<HostState>,
    placed: HashMap<InstanceId, Option<HostId>>,
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
        }
        Ok(())
    }
}

impl SchedulerState {
    fn place(&mut self, request: PlaceRequest) -> Result<Result<HostId, NoValidHost>, StoreError> {
        let hosts = self.hosts()?;
        let chosen = placement::select(&hosts, &request.demand, self.ratios).map(|h| h.name.clone());
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
        let StoreView { hosts, placed, .. } = self.view.as_ref().expect("view was just loaded");
        let mut hosts = hosts.clone();
        self.claims.retain(|id, claim| {
            let counted_by_store = placed.get(id).is_some_and(Option::is_some);
            !counted_by_store && claim.at.elapsed() < CLAIM_TTL
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
        let down_after = self.ctx.timing.service_down_after.as_millis() as u64;
        let now = now_ms();
        self.ctx.store.read(|r| {
            let mut hosts: Vec<HostState> = r
                .scan(&HOSTS)?
                .into_iter()
                .map(|(_, h)| HostState {
                    name: h.name,
                    vcpus: h.vcpus,
                    ram_mb: h.ram_mb,
                    disk_gb: h.disk_gb,
                    used_vcpus: 0,
                    used_ram_mb: 0,
                    used_disk_gb: 0,
                    enabled: h.enabled,
                    up: now.saturating_sub(h.last_seen) <= down_after,
                })
                .collect();
            let mut placed = HashMap::new();
            for (id, instance) in r.scan(&INSTANCES)? {
                if let Some(h) = instance.host.as_ref().and_then(|name| hosts.iter_mut().find(|h| &h.name == name)) {
                    h.used_vcpus += instance.flavor.vcpus;
                    h.used_ram_mb += instance.flavor.ram_mb;
                    h.used_disk_gb += instance.flavor.disk_gb;
                }
                placed.insert(id, instance.host);
            }
            Ok(StoreView { hosts, placed, read_at: Instant::now() })
        })
    }
}
