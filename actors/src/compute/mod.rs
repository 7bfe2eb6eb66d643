//! The compute agent: one per host (`compute/host-0003`, topic `compute.host-0003`). It runs, destroys and
//! powers instances through its virt driver and reports its host to the scheduler at an interval; with every
//! report it reconciles the driver with what the cloud places here: on start it runs the settled instances
//! again (a stopped, paused or suspended one put back in its state), and every time it destroys what the
//! cloud does not place here (what a cleanup that failed left).
//!
//! An agent whose driver filters ports also follows the host's firewall: it asks the firewall publisher for
//! it, again each time an answer comes, and has the driver install every new one.
//!
//! It knows nothing of the store: everything it needs arrives in messages (the protocol's wire types) and
//! everything it knows leaves in them, so an agent can run on a host of its own, away from the controllers.
//!
//! # Layout
//! - [`virt`]: the virt driver contract and the `fake` driver; [`netns`]: instances as network namespaces;
//!   [`plumbing`]: a compute node's own side of each network (multi_host).

pub mod netns;
pub mod plumbing;
pub mod virt;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_protocol::compute::{self, ComputeMsg, VirtError};
use nimbus_protocol::failure::{Failure, chain};
use nimbus_protocol::firewall::FirewallClient;
use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::scheduler::{HostReport, Placement, SchedulerClient};
use nimbus_protocol::trace::Traced;
use nimbus_runtime::{ChildSpec, Namespace, ReadyCheck, SupervisorArgs, Wire, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::Instrument;

use crate::timing::Timing;
use virt::VirtDriver;

pub struct ComputeArgs {
    /// The cluster node this agent runs on (`local` in an all-in-one cloud), and its cluster address.
    pub node: String,
    pub node_address: Option<String>,
    pub ns: Namespace,
    pub timing: Timing,
    pub host: HostId,
    pub host_ip: Ipv4Addr,
    pub driver: Arc<dyn VirtDriver>,
    pub first_reports: Arc<FirstReports>,
}

/// What every agent of one node shares: where it runs and how it talks to the cloud.
#[derive(Clone)]
pub struct NodeAgents {
    pub node: String,
    pub node_address: Option<String>,
    pub ns: Namespace,
    pub timing: Timing,
    pub host_ip: Ipv4Addr,
}

impl NodeAgents {
    /// The agents' supervisor (`compute`) for these hosts. Its start ends once every host has made its first
    /// report, so whatever starts after it (the conductors, the API) finds the hosts registered and their
    /// instances restored. The agents report concurrently: thousands of reports share the store's commits.
    pub fn supervisor(&self, hosts: &[(HostId, Arc<dyn VirtDriver>)]) -> SupervisorArgs {
        let first_reports = Arc::new(FirstReports::default());
        let agents = hosts
            .iter()
            .map(|(host, driver)| {
                let (common, host, driver, first_reports) =
                    (self.clone(), host.clone(), driver.clone(), first_reports.clone());
                ChildSpec::new(self.ns.actor_name(&format!("compute/{host}")), move || {
                    let args = ComputeArgs {
                        node: common.node.clone(),
                        node_address: common.node_address.clone(),
                        ns: common.ns.clone(),
                        timing: common.timing.clone(),
                        host: host.clone(),
                        host_ip: common.host_ip,
                        driver: driver.clone(),
                        first_reports: first_reports.clone(),
                    };
                    (ComputeAgent, args)
                })
            })
            .collect();
        // A first report is a report call plus the restore of the host's instances.
        let (count, patience) = (hosts.len(), self.timing.call + self.timing.build);
        let ready: ReadyCheck = Arc::new(move || {
            let first_reports = first_reports.clone();
            Box::pin(async move { first_reports.wait(count, patience).await })
        });
        SupervisorArgs::one_for_one(agents).ready_when(ready)
    }
}

/// The hosts whose agent has started and not made its first report yet. A report counts whatever its outcome:
/// an agent that cannot reach the scheduler then tries again on its timer, and start-up does not wait for that.
pub struct FirstReports {
    pending: watch::Sender<BTreeSet<HostId>>,
}

impl Default for FirstReports {
    fn default() -> Self {
        FirstReports { pending: watch::Sender::new(BTreeSet::new()) }
    }
}

impl FirstReports {
    fn starting(&self, host: &HostId) {
        self.pending.send_if_modified(|pending| pending.insert(host.clone()));
    }

    /// The host's agent has made its first report, or stopped before it could: nobody waits for it.
    fn settled(&self, host: &HostId) {
        self.pending.send_if_modified(|pending| pending.remove(host));
    }

    /// Waits until every agent started so far has made its first report, saying every few seconds how many
    /// of the `agents` are left, and gives up with a warning after `patience`.
    pub async fn wait(&self, agents: usize, patience: Duration) {
        const PROGRESS_EVERY: Duration = Duration::from_secs(5);
        let mut watching = self.pending.subscribe();
        let deadline = Instant::now() + patience;
        loop {
            let step = PROGRESS_EVERY.min(deadline.saturating_duration_since(Instant::now()));
            if tokio::time::timeout(step, watching.wait_for(BTreeSet::is_empty)).await.is_ok() {
                return;
            }
            let left = watching.borrow().len();
            if Instant::now() >= deadline {
                tracing::warn!(
                    left,
                    of = agents,
                    "hosts have not made their first report in {patience:?}; going on without them (they join as \
                     they report)"
                );
                return;
            }
            tracing::info!(left, of = agents, "waiting for the hosts' first reports");
        }
    }
}

pub struct ComputeState {
    name: String,
    node: String,
    node_address: Option<String>,
    scheduler: SchedulerClient,
    host: HostId,
    host_ip: Ipv4Addr,
    driver: Arc<dyn VirtDriver>,
    /// The active instances run again since the agent started.
    restored: bool,
    report_interval: Duration,
    /// Until the first report: the topic to join after it, and who waits for it.
    before_first_report: Option<(Namespace, Arc<FirstReports>)>,
    /// The task that keeps the driver's firewall in step, if it filters ports; it ends with the agent.
    _firewall_follower: Option<Follower>,
}

/// A task that lives as long as its agent's state: aborted when the state is dropped, however the agent
/// ended (a kill skips `post_stop`). The driver keeps what it installed; the next agent follows on from there.
struct Follower(tokio::task::JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        args.first_reports.starting(&args.host);
        let name = myself.get_name().unwrap_or_default();
        let firewall_follower = args.driver.filters_ports().then(|| {
            let client = FirewallClient::new(&args.ns, args.timing.call);
            Follower(tokio::spawn(follow_firewall(name.clone(), args.host.clone(), args.driver.clone(), client)))
        });
        let state = ComputeState {
            name,
            node: args.node,
            node_address: args.node_address,
            scheduler: SchedulerClient::new(&args.ns, args.timing.call),
            host: args.host,
            host_ip: args.host_ip,
            driver: args.driver,
            restored: false,
            report_interval: args.timing.report_interval,
            before_first_report: Some((args.ns, args.first_reports)),
            _firewall_follower: firewall_follower,
        };
        // Registered and reconciled before it takes work: it joins its topic after its first report (if the
        // scheduler cannot be reached then, the timer tries again). That report is its first message, not
        // awaited here: the supervisor starts agents one after the other, and thousands of reports awaited in
        // turn would each wait for a commit of their own.
        myself.send_message(ComputeMsg::ReportIn)?;
        // The periodic reports start at a random point of the first interval (nova's `periodic_fuzzy_delay`):
        // agents started together would otherwise all report in the same instant, every interval. The timer's
        // first tick comes one interval after it is set, so the report at the random point is sent by hand.
        let (me, every) = (myself.clone(), state.report_interval);
        let fuzz = every.mul_f64(rand::random::<f64>());
        tokio::spawn(async move {
            tokio::time::sleep(fuzz).await;
            if me.send_message(ComputeMsg::ReportIn).is_ok() {
                me.send_interval(every, || ComputeMsg::ReportIn);
            }
        });
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ComputeMsg>,
        state: &mut ComputeState,
    ) -> Result<(), ActorProcessingErr> {
        // An agent that died before its first report must not hold start-up until the patience runs out: its
        // supervisor, still starting, restarts it only once the wait is over.
        if let Some((_, first_reports)) = state.before_first_report.take() {
            first_reports.settled(&state.host);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ComputeMsg>,
        msg: ComputeMsg,
        state: &mut ComputeState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        // Builds, destroys, power actions and interface changes run on their own tasks (`spawn_step`).
        match msg {
            ComputeMsg::Build(Wire(Traced { trace, body: spec }), reply) => {
                let driver = state.driver.clone();
                let span = tracing::info_span!("build", request_id = %trace, actor = %state.name, instance = %spec.id);
                // A failed spawn leaves nothing behind (the driver contract), ready for another host.
                let step = async move { driver.spawn(spec).await };
                spawn_step(span, ("instance spawned", "spawn failed"), step, reply);
            }
            ComputeMsg::Destroy(Wire(Traced { trace, body: id }), reply) => {
                let driver = state.driver.clone();
                let span = tracing::info_span!("destroy", request_id = %trace, actor = %state.name, instance = %id);
                let step = async move { driver.destroy(id).await };
                spawn_step(span, ("instance destroyed", "destroy failed"), step, reply);
            }
            ComputeMsg::Power(Wire(Traced { trace, body: (id, action) }), reply) => {
                let driver = state.driver.clone();
                let span =
                    tracing::info_span!("power", request_id = %trace, actor = %state.name, instance = %id, ?action);
                let step = async move { driver.power(id, action).await };
                spawn_step(span, ("power action done", "power action failed"), step, reply);
            }
            ComputeMsg::SetInterfaces(Wire(Traced { trace, body: spec }), reply) => {
                let driver = state.driver.clone();
                let span =
                    tracing::info_span!("interfaces", request_id = %trace, actor = %state.name, instance = %spec.id);
                let step = async move { driver.set_interfaces(spec).await };
                spawn_step(span, ("interfaces changed", "interface change failed"), step, reply);
            }
            ComputeMsg::Uptime(reply) => {
                let _ = reply.send(Wire(machine_uptime()));
            }
            ComputeMsg::ReportIn => {
                state.report_and_reconcile().await;
                if let Some((ns, first_reports)) = state.before_first_report.take() {
                    ns.join(&compute::topic(&state.host), myself.get_cell());
                    first_reports.settled(&state.host);
                }
            }
        }
        Ok(())
    }
}

/// Runs one driver step on a task of its own (one slow spawn does not hold up the others), logs how it ended
/// (`said`: the words for done and for failed) and answers `reply` with it.
fn spawn_step(
    span: tracing::Span,
    said: (&'static str, &'static str),
    step: impl std::future::Future<Output = Result<(), VirtError>> + Send + 'static,
    reply: ractor::RpcReplyPort<compute::StepReply>,
) {
    tokio::spawn(
        async move {
            let outcome = step.await;
            match &outcome {
                Ok(()) => tracing::info!("{}", said.0),
                Err(e) => tracing::warn!(cause = %chain(e), "{}", said.1),
            }
            let _ = reply.send(Wire(outcome));
        }
        .instrument(span),
    );
}

/// The uptime line of the machine the agent runs on, from `/proc` (what a host's hypervisor runs on; a
/// simulated host shares its agent's machine).
fn machine_uptime() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let up: f64 = read("/proc/uptime").split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let loads: Vec<String> = read("/proc/loadavg").split_whitespace().take(3).map(str::to_string).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    uptime_line(now % 86_400, up as u64, &loads)
}

/// `uptime`'s line: the time of day (UTC), how long the machine has run, and its load averages.
fn uptime_line(second_of_day: u64, up_secs: u64, loads: &[String]) -> String {
    let clock = format!("{:02}:{:02}:{:02}", second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let (days, hours, minutes) = (up_secs / 86_400, up_secs / 3600 % 24, up_secs / 60 % 60);
    let span = match days {
        0 => format!("{hours:2}:{minutes:02}"),
        1 => format!("1 day, {hours:2}:{minutes:02}"),
        d => format!("{d} days, {hours:2}:{minutes:02}"),
    };
    format!(" {clock} up {span},  load average: {}", loads.join(", "))
}

/// After a failed ask or install, the wait before trying again.
const FIREWALL_RETRY: Duration = Duration::from_secs(1);

/// Asks for the host's firewall, again and again, and has the driver install each new one. A failure is
/// logged once until the next success, and tried again after [`FIREWALL_RETRY`].
async fn follow_firewall(name: String, host: HostId, driver: Arc<dyn VirtDriver>, client: FirewallClient) {
    let mut have = None;
    let mut failing = false;
    loop {
        let outcome = match client.next(&host, have).await {
            Ok(None) => continue,
            Ok(Some((version, firewall))) => {
                let instances = firewall.instances.len();
                match driver.set_firewall(firewall).await {
                    Ok(()) => {
                        tracing::debug!(%host, instances, sequence = version.sequence, "firewall installed");
                        have = Some(version);
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot install the firewall; retrying: {}", chain(&e))),
                }
            }
            Err(e) => Err(format!("cannot get the firewall; retrying: {}", chain(&Failure::of(&e)))),
        };
        match &outcome {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                tracing::warn!(%host, cause = %e, "firewall");
                failing = true;
            }
            Err(_) => {}
        }
        let failed = outcome.is_err();
        introspect::reconciled(&name, "firewall", outcome);
        if failed {
            tokio::time::sleep(FIREWALL_RETRY).await;
        }
    }
}

impl ComputeState {
    fn report(&self) -> HostReport {
        HostReport {
            name: self.host.clone(),
            capacity: self.driver.capacity(),
            hypervisor_type: self.driver.kind().to_string(),
            host_ip: self.host_ip,
            node: self.node.clone(),
            node_address: self.node_address.clone(),
            restoring: !self.restored,
            report_interval_ms: u64::try_from(self.report_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Reports the host (the scheduler records it and marks it up), then reconciles the driver with what the
    /// cloud places here.
    async fn report_and_reconcile(&mut self) {
        let outcome = self.try_report_and_reconcile().await;
        if let Err(e) = &outcome {
            tracing::warn!(host = %self.host, cause = %e, "host report");
        }
        introspect::reconciled(&self.name, "report", outcome);
    }

    async fn try_report_and_reconcile(&mut self) -> Result<(), String> {
        // Listed before the report: all that runs by then was placed here before the answer was read, so a
        // build that starts meanwhile is never taken for a leftover.
        let running = self.driver.list().await;
        let placed = self
            .scheduler
            .report_in(self.report())
            .await
            .map_err(|e| format!("cannot report to the scheduler; retrying: {}", chain(&e)))?;
        let running = running.map_err(|e| format!("cannot list the instances; retrying: {}", chain(&e)))?;
        self.reconcile(running, placed)
            .await
            .map_err(|e| format!("reconcile failed; retrying at the next report: {}", chain(&e)))
    }

    /// Runs the settled instances again if the answer carries them (and puts a stopped, paused or suspended
    /// one back in its state), and destroys what ran before the report
    /// but the cloud does not place here. Instances being built here are left to their conductor, which
    /// repeats or undoes its step; one deleted meanwhile is destroyed by its delete as well (destroy is
    /// idempotent).
    async fn reconcile(&mut self, running: Vec<InstanceId>, placed: Placement) -> Result<(), VirtError> {
        for restore in &placed.restore {
            self.driver.spawn(restore.spec.clone()).await?;
            if let Some(action) = restore.then {
                self.driver.power(restore.spec.id, action).await?;
            }
        }
        self.restored = true;
        for id in running.into_iter().filter(|id| !placed.instances.contains(id)) {
            tracing::info!(host = %self.host, instance = %id, "destroying an instance the cloud does not place here");
            self.driver.destroy(id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::uptime_line;

    #[test]
    fn the_uptime_line_reads_as_uptime_prints_it() {
        let loads = ["0.20".to_string(), "0.12".into(), "0.14".into()];
        assert_eq!(
            uptime_line(30_731, 8_113_500, &loads),
            " 08:32:11 up 93 days, 21:45,  load average: 0.20, 0.12, 0.14"
        );
        assert_eq!(uptime_line(0, 90_000, &loads), " 00:00:00 up 1 day,  1:00,  load average: 0.20, 0.12, 0.14");
        assert_eq!(uptime_line(59, 600, &loads), " 00:00:59 up  0:10,  load average: 0.20, 0.12, 0.14");
    }
}
