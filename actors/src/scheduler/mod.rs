//! The scheduler: places each instance on the best host (topic `scheduler`; any member may answer), and
//! records the hosts compute agents report.
//!
//! It keeps a view of the hosts (capacity, usage, up/down) read from the store and reused for a short,
//! bounded time, plus its own placements as claims ([`claims`]) until the store shows them; a "no valid
//! host" is always re-checked against a fresh view.
//!
//! # Layout
//! - [`placement`]: the pure filters and weigher; [`claims`]: the pure claim rules.

pub mod claims;
pub mod placement;

use std::time::{Duration, Instant};

use nimbus_protocol::failure::{Failure, chain};
use nimbus_protocol::ids::HostId;
use nimbus_protocol::scheduler::{self, PlaceRequest, SchedulerError, SchedulerMsg};
use nimbus_protocol::trace::Traced;
use nimbus_runtime::{Wire, introspect};
use nimbus_storage::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::app::{App, hosts};
use claims::{Claim, Claims};
use placement::{HostState, Ratios};

/// How long a view of the hosts read from the store is reused.
const VIEW_TTL: Duration = Duration::from_millis(500);

/// The hosts with the usage the store shows, and where each instance is, as read at `read_at`.
struct StoreView {
    hosts: Vec<HostState>,
    placed: hosts::Placements,
    read_at: Instant,
}

pub struct SchedulerState {
    app: App,
    name: String,
    ratios: Ratios,
    view: Option<StoreView>,
    claims: Claims,
}

pub struct Scheduler;

fn store_failure(e: StoreError) -> SchedulerError {
    SchedulerError::Store(Failure::of(&e))
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = App;

    async fn pre_start(&self, myself: ActorRef<SchedulerMsg>, app: App) -> Result<SchedulerState, ActorProcessingErr> {
        app.ns().join(&scheduler::TOPIC, myself.get_cell());
        let name = myself.get_name().unwrap_or_default();
        Ok(SchedulerState { app, name, ratios: Ratios::default(), view: None, claims: Claims::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            SchedulerMsg::Place(Wire(Traced { trace, body: request }), reply) => {
                let span = tracing::info_span!("place", request_id = %trace, actor = %state.name, instance = %request.instance);
                let _entered = span.enter();
                let outcome = state.place(request);
                match &outcome {
                    Ok(host) => tracing::info!(%host, "placed"),
                    // The conductor warns about the build it fails.
                    Err(e) => tracing::info!(cause = %chain(e), "no host"),
                }
                let _ = reply.send(Wire(outcome));
            }
            SchedulerMsg::ReportIn(Wire(report), reply) => {
                let host = report.name.clone();
                let outcome = hosts::record_report(&state.app, report).await.map_err(store_failure);
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

impl SchedulerState {
    fn place(&mut self, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        let asked = Instant::now();
        let hosts = self.hosts().map_err(store_failure)?;
        let mut chosen = placement::select(&hosts, &request.demand, self.ratios).map(|h| h.name.clone());
        if chosen.is_err() && self.view.as_ref().is_some_and(|v| v.read_at < asked) {
            // A "no" must not come from a view read before the request: capacity may have been freed since.
            self.view = None;
            let hosts = self.hosts().map_err(store_failure)?;
            chosen = placement::select(&hosts, &request.demand, self.ratios).map(|h| h.name.clone());
        }
        let host = chosen.map_err(SchedulerError::NoValidHost)?;
        self.claims.claim(request.instance, Claim { host: host.clone(), demand: request.demand, at: Instant::now() });
        Ok(host)
    }

    /// The current host view: the store's (reused for `VIEW_TTL`) plus the claims it does not show yet.
    fn hosts(&mut self) -> Result<Vec<HostState>, StoreError> {
        if self.view.as_ref().is_none_or(|v| v.read_at.elapsed() > VIEW_TTL) {
            self.view = Some(self.read_view()?);
        }
        let StoreView { hosts, placed, read_at } = self.view.as_ref().expect("view was just loaded");
        let mut hosts = hosts.clone();
        self.claims.settle(placed, *read_at, Instant::now());
        self.claims.add_to(&mut hosts);
        Ok(hosts)
    }

    fn read_view(&self) -> Result<StoreView, StoreError> {
        let (usage, placed) = hosts::usage(&self.app)?;
        let hosts = usage
            .into_iter()
            .map(|u| HostState {
                up: hosts::is_up(&u.host, self.app.timing()),
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
