//! The scheduler: places each instance on the best host (topic `scheduler`; any member may answer), and
//! records the hosts compute agents report.
//!
//! It keeps a view of the hosts (capacity, usage, up/down), read from the store once and then kept in step:
//! a store watch names the hosts whose record or load a commit wrote, and before each placement the view
//! re-reads just those, the hosts whose last report has grown too old to count as up, and those holding
//! an expired claim. Its own placements count as claims ([`claims`]) until the store shows them. The view
//! keeps its hosts ranked by weight ([`placement::HostView`]), so a placement costs O(log n) in hosts
//! (plus O(log n) for each host that changed) while the best host fits. Host reports are written on tasks
//! of their own: placements never queue behind a report's commit.
//!
//! # Layout
//! - [`placement`]: the pure filters and weigher; [`claims`]: the pure claim rules.

pub mod claims;
pub mod placement;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use nimbus_protocol::failure::{Failure, chain};
use nimbus_protocol::ids::HostId;
use nimbus_protocol::scheduler::{self, PlaceRequest, SchedulerError, SchedulerMsg};
use nimbus_protocol::trace::Traced;
use nimbus_runtime::{Wire, introspect};
use nimbus_storage::records::now_ms;
use nimbus_storage::{StoreError, Watch};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::app::App;
use crate::app::hosts::{self, HostUsage};
use crate::timing::Timing;
use claims::{Claim, Claims};
use placement::{HostState, HostView, Ratios};

/// How often the view looks for claims that expired.
const CLAIM_SWEEP: Duration = Duration::from_secs(1);

/// How often the view catches up with the store when no placement asks it to.
const CATCH_UP: Duration = Duration::from_secs(1);

/// The hosts as the store shows them plus the claims that still count, kept in step with the store.
struct LiveView {
    hosts: HostView,
    /// The hosts whose record or load a commit wrote since the view last looked.
    changed: Watch<HostId>,
    /// When each host that counts as up would count as down (ms since the epoch) unless it reports again.
    down_at: BTreeSet<(u64, HostId)>,
    deadline: HashMap<HostId, u64>,
    next_claim_sweep: Instant,
}

impl LiveView {
    /// Puts the host as the store shows it, with what is claimed on it.
    fn put(&mut self, usage: HostUsage, claims: &Claims, timing: &Timing) {
        if let Some(old) = self.deadline.remove(&usage.host.name) {
            self.down_at.remove(&(old, usage.host.name.clone()));
        }
        let at = hosts::down_at(&usage.host, timing);
        let mut state = host_state(usage, timing);
        if state.up {
            self.down_at.insert((at, state.name.clone()));
            self.deadline.insert(state.name.clone(), at);
        }
        claims.add_to_host(&mut state);
        self.hosts.put(state);
    }

    fn remove(&mut self, host: &HostId) {
        if let Some(old) = self.deadline.remove(host) {
            self.down_at.remove(&(old, host.clone()));
        }
        self.hosts.remove(host);
    }

    /// The hosts to re-read now: those the watch names, those whose report has grown too old since, and
    /// (once every [`CLAIM_SWEEP`]) those with an expired claim.
    fn due(&mut self, claims: &Claims) -> Vec<HostId> {
        let mut due: BTreeSet<HostId> = self.changed.written().into_iter().collect();
        let now = now_ms();
        while let Some((at, host)) = self.down_at.first().cloned().filter(|(at, _)| *at < now) {
            self.down_at.remove(&(at, host.clone()));
            self.deadline.remove(&host);
            due.insert(host);
        }
        let now = Instant::now();
        if now >= self.next_claim_sweep {
            due.extend(claims.hosts_with_expired(now));
            self.next_claim_sweep = now + CLAIM_SWEEP;
        }
        due.into_iter().collect()
    }
}

/// A host as the store shows it, before the claims.
fn host_state(u: HostUsage, timing: &Timing) -> HostState {
    HostState {
        up: hosts::is_up(&u.host, timing),
        enabled: u.host.enabled,
        name: u.host.name,
        vcpus: u.host.vcpus,
        ram_mb: u.host.ram_mb,
        disk_gb: u.host.disk_gb,
        used_vcpus: u.vcpus,
        used_ram_mb: u.ram_mb,
        used_disk_gb: u.disk_gb,
    }
}

pub struct SchedulerState {
    app: App,
    name: String,
    ratios: Ratios,
    view: Option<LiveView>,
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
        let mut state = SchedulerState { app, name, ratios: Ratios::default(), view: None, claims: Claims::default() };
        // Read before the first placement, which then finds the view ready; hosts that report later come
        // through the watch.
        state.view().await?;
        myself.send_interval(CATCH_UP, || SchedulerMsg::CatchUp);
        Ok(state)
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
                let outcome = state.place(request).instrument(span.clone()).await;
                let _entered = span.enter();
                match &outcome {
                    Ok(host) => tracing::info!(%host, "placed"),
                    // The conductor warns about the build it fails.
                    Err(e) => tracing::info!(cause = %chain(e), "no host"),
                }
                let _ = reply.send(Wire(outcome));
            }
            SchedulerMsg::CatchUp => {
                if let Err(e) = state.view().await {
                    tracing::warn!(cause = %chain(&e), "the host view could not catch up; the next placement tries again");
                }
            }
            SchedulerMsg::ReportIn(Wire(report), reply) => {
                // The view hears of the host's record through its watch once the report is written.
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
    async fn place(&mut self, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        let view = self.view().await?;
        let host = view.hosts.select(&request.demand).map(|h| h.name.clone()).map_err(SchedulerError::NoValidHost)?;
        view.hosts.add_usage(&host, &request.demand);
        let claim = Claim { host: host.clone(), demand: request.demand, at: Instant::now() };
        if let Some(earlier) = self.claims.claim(request.instance, claim) {
            // An earlier attempt's claim no longer counts on its host.
            if let Some(view) = &mut self.view {
                view.hosts.remove_usage(&earlier.host, &earlier.demand);
            }
        }
        Ok(host)
    }

    /// The view, in step with the store: read whole the first time, then only the hosts that are due.
    async fn view(&mut self) -> Result<&mut LiveView, SchedulerError> {
        match self.view.take() {
            Some(mut view) => {
                self.catch_up(&mut view).map_err(store_failure)?;
                Ok(self.view.insert(view))
            }
            None => {
                let view = self.read_view().await.map_err(store_failure)?;
                Ok(self.view.insert(view))
            }
        }
    }

    /// A whole view: the watch first, so that no write after the read is missed, then every host.
    async fn read_view(&mut self) -> Result<LiveView, StoreError> {
        let changed = hosts::watch(&self.app).await?;
        let (usage, placed) = hosts::usage_and_placements(&self.app, self.claims.instances())?;
        self.claims.settle(&placed, Instant::now(), Instant::now());
        let mut view = LiveView {
            hosts: HostView::new(Vec::new(), self.ratios),
            changed,
            down_at: BTreeSet::new(),
            deadline: HashMap::new(),
            next_claim_sweep: Instant::now() + CLAIM_SWEEP,
        };
        for u in usage {
            view.put(u, &self.claims, self.app.timing());
        }
        Ok(view)
    }

    /// Re-reads the hosts that are due, with the claims on them, from one snapshot.
    fn catch_up(&mut self, view: &mut LiveView) -> Result<(), StoreError> {
        let due = view.due(&self.claims);
        if due.is_empty() {
            return Ok(());
        }
        let claimed: Vec<_> = due.iter().flat_map(|h| self.claims.on_host(h)).collect();
        let (usage, placed) = hosts::usage_of(&self.app, &due, claimed.iter().copied())?;
        self.claims.settle_only(&claimed, &placed, Instant::now(), Instant::now());
        for (name, usage) in due.iter().zip(usage) {
            match usage {
                Some(u) => view.put(u, &self.claims, self.app.timing()),
                None => view.remove(name),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nimbus_protocol::ids::InstanceId;
    use nimbus_protocol::scheduler::{Demand, HostReport};
    use nimbus_runtime::Namespace;
    use nimbus_storage::records::HostLoad;
    use nimbus_storage::schema::{HOST_LOADS, HOSTS};
    use nimbus_storage::{Reads, Store};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn report(name: &str, vcpus: u32) -> HostReport {
        let mut report = hosts::tests::report(name);
        report.capacity.vcpus = vcpus;
        report
    }

    /// What a view read whole now would show, with the claims the scheduler holds.
    fn expected(state: &SchedulerState) -> Vec<HostState> {
        let mut hosts: Vec<HostState> = hosts::usage(&state.app)
            .unwrap()
            .into_iter()
            .map(|u| {
                let mut h = host_state(u, state.app.timing());
                state.claims.add_to_host(&mut h);
                h
            })
            .collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        hosts
    }

    /// Through random reports, operator changes, load changes, removals and placements, and hosts going
    /// down for want of reports, the view kept in step shows what a view read whole would.
    #[tokio::test]
    async fn the_view_kept_in_step_shows_what_a_whole_read_shows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("nimbus.redb")).unwrap();
        let timing = Timing { service_down_after: Duration::from_millis(300), ..Timing::default() };
        let app = App::new(store, Namespace::new("scheduler-view-test"), timing, false);
        let mut state = SchedulerState {
            app: app.clone(),
            name: "s".into(),
            ratios: Ratios::default(),
            view: None,
            claims: Claims::default(),
        };
        let mut rng = StdRng::seed_from_u64(7);
        let name = |rng: &mut StdRng| format!("h{}", rng.random_range(0..12));
        for step in 0..300 {
            match rng.random_range(0..6) {
                0 => drop(hosts::record_report(&app, report(&name(&mut rng), rng.random_range(1..8))).await.unwrap()),
                1 => {
                    let host = HostId(name(&mut rng));
                    let enabled = rng.random_ratio(1, 2);
                    app.store()
                        .write(move |tx| match tx.get(&HOSTS, &host)? {
                            Some(mut h) => {
                                h.enabled = enabled;
                                tx.put(&HOSTS, &host, &h)
                            }
                            None => Ok(()),
                        })
                        .await
                        .unwrap();
                }
                2 => {
                    let host = HostId(name(&mut rng));
                    let load = HostLoad {
                        vcpus: rng.random_range(0..4),
                        ram_mb: rng.random_range(0..4) * 256,
                        disk_gb: 1,
                        instances: 1,
                    };
                    app.store().write(move |tx| tx.put(&HOST_LOADS, &host, &load)).await.unwrap();
                }
                3 => {
                    let host = HostId(name(&mut rng));
                    app.store().write(move |tx| tx.delete(&HOSTS, &host).map(drop)).await.unwrap();
                }
                4 => {
                    let demand = Demand { vcpus: 1, ram_mb: 256, disk_gb: 1, tried: Vec::new() };
                    let _ = state.place(PlaceRequest { instance: InstanceId::generate(), demand }).await;
                }
                _ => {
                    if step % 50 == 0 {
                        // Long enough without reports for every host to count as down.
                        tokio::time::sleep(Duration::from_millis(350)).await;
                    }
                }
            }
            let view = state.view().await.unwrap();
            let shown: Vec<HostState> = view.hosts.hosts().cloned().collect();
            assert_eq!(shown, expected(&state), "after step {step}");
        }
        let seen = app.store().read(|r| r.scan(&HOSTS)).unwrap();
        assert!(!seen.is_empty(), "the test made hosts");
    }
}
