//! The scheduler: places each instance on the best host (topic `scheduler`; any member may answer), and
//! records the hosts compute agents report.
//!
//! It keeps a view of the hosts (capacity, usage, up/down) read from the store and reused for a short,
//! bounded time, plus its own placements as claims ([`claims`]) until the store shows them; a "no valid
//! host" is always re-checked against a fresh view. The claims are added to the view when it is read and
//! each new one as it is made. The view keeps its hosts ranked by weight ([`placement::HostView`]), so a
//! placement visits the best hosts only, O(log n) in hosts while the best host fits. Host
//! reports are written on tasks of their own: placements never queue behind a report's commit.
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
use placement::{HostState, HostView, Ratios};

/// How long a view of the hosts read from the store is reused.
const VIEW_TTL: Duration = Duration::from_millis(500);

/// The hosts with the usage the store shows as read at `read_at`, plus the claims that still count.
struct StoreView {
    hosts: HostView,
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
                if state.view.as_ref().is_some_and(|v| !v.hosts.contains(&report.name)) {
                    // A new host: the next placement reads a new view, which has it once its report is in.
                    state.view = None;
                }
                let app = state.app.clone();
                tokio::spawn(async move {
                    let outcome = hosts::record_report(&app, report).await.map_err(store_failure);
                    let _ = reply.send(Wire(outcome));
                });
            }
        }
        Ok(())
    }
}

impl SchedulerState {
    fn place(&mut self, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        let asked = Instant::now();
        let mut chosen = self.hosts()?.select(&request.demand).map(|h| h.name.clone());
        if chosen.is_err() && self.view.as_ref().is_some_and(|v| v.read_at < asked) {
            // A "no" must not come from a view read before the request: capacity may have been freed since.
            self.view = None;
            chosen = self.hosts()?.select(&request.demand).map(|h| h.name.clone());
        }
        let host = chosen.map_err(SchedulerError::NoValidHost)?;
        if let Some(view) = &mut self.view {
            view.hosts.add_usage(&host, &request.demand);
        }
        let claim = Claim { host: host.clone(), demand: request.demand, at: Instant::now() };
        self.claims.claim(request.instance, claim);
        Ok(host)
    }

    /// The current host view: the store's (reused for `VIEW_TTL`) plus the claims it does not show yet.
    fn hosts(&mut self) -> Result<&HostView, SchedulerError> {
        if self.view.as_ref().is_none_or(|v| v.read_at.elapsed() > VIEW_TTL) {
            self.view = Some(self.read_view().map_err(store_failure)?);
        }
        Ok(&self.view.as_ref().expect("view was just loaded").hosts)
    }

    /// A new view: the store's hosts and usage, with the claims it does not count yet.
    fn read_view(&mut self) -> Result<StoreView, StoreError> {
        let (usage, placed) = hosts::usage_and_placements(&self.app, self.claims.instances())?;
        let read_at = Instant::now();
        let hosts: Vec<HostState> = usage
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
        self.claims.settle(&placed, read_at, Instant::now());
        let mut hosts = HostView::new(hosts, self.ratios);
        self.claims.add_to(&mut hosts);
        Ok(StoreView { hosts, read_at })
    }
}
