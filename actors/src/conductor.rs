//! The conductor: one per project (`conductor/<project>`, topic `conductor.<project>`), under the project's
//! supervisor. It drives the project's multi-step operations, whose log is the `operations` table:
//!
//! - build: scheduler places → the instance is recorded on its host → that host's compute agent builds it
//!   (network, spawn, ACTIVE). A failure on a host sends it back to the scheduler with that host excluded, up
//!   to [`MAX_ATTEMPTS`] hosts, then the instance goes to ERROR with "No valid host was found".
//! - delete: the host's compute agent destroys it and releases its network; then the records go, in one
//!   transaction with the operation.
//!
//! Every step is persisted before the next starts, and every step is idempotent, so after a crash the
//! conductor simply looks at each logged operation and does its current step again. It never waits on its
//! own mailbox: calls run on their own tasks and their outcomes come back as messages (see
//! [`nimbus_runtime::rpc::then`]). A periodic sweep picks up operations it was not told about.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nimbus_runtime::{CallError, Topic, Wire, rpc};
use nimbus_storage::ids::{HostId, InstanceId, ProjectId};
use nimbus_storage::records::{Fault, Instance, OperationKind, TaskState, VmState, now_ms};
use nimbus_storage::schema::{INSTANCES, OPERATIONS};
use nimbus_storage::{Reads, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::Ctx;
use crate::compute::virt::InstanceSpec;
use crate::compute::{self, ComputeMsg, StepReply};
use crate::instance_state::Event;
use crate::instances::{TransitionError, remove_in, set_host_in, transition_in};
use crate::network::{self, NetworkMsg};
use crate::scheduler::placement::Demand;
use crate::scheduler::{self, PlaceRequest, SchedulerMsg};

pub const ROLE: &str = "conductor";
/// How many hosts a build is tried on before it fails (Nova's `scheduler_max_attempts`).
pub const MAX_ATTEMPTS: usize = 3;
/// How often a step that could not reach its worker is retried before the operation gives up on it.
const MAX_TRANSIENT_RETRIES: u32 = 20;

pub fn topic(project: &ProjectId) -> Topic {
    Topic::keyed(ROLE, project)
}

/// Why a step did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepFailure {
    /// The worker answered that it failed (and cleaned up after itself).
    Failed(String),
    /// The worker did not answer; its state is unknown.
    Lost(String),
}

#[derive(RactorClusterMessage)]
pub enum ConductorMsg {
    /// An operation on this instance was logged or may need attention.
    Kick(Wire<InstanceId>),
    /// The scheduler's answer for a build.
    Placed(Wire<(InstanceId, Result<HostId, StepFailure>)>),
    /// A compute agent's answer for a build on a host.
    Built(Wire<(InstanceId, HostId, Result<(), StepFailure>)>),
    /// A compute agent's answer for a destroy.
    Destroyed(Wire<(InstanceId, Result<(), StepFailure>)>),
    /// The network manager's answer for the release of a deleted instance's addresses.
    Released(Wire<(InstanceId, Result<(), StepFailure>)>),
    /// Timer: look for logged operations that nothing is working on.
    Sweep,
}

pub struct ConductorArgs {
    pub ctx: Ctx,
    pub project: ProjectId,
}

pub struct ConductorState {
    ctx: Ctx,
    project: ProjectId,
    /// Instances with a step in flight; their outcome message will advance them.
    in_flight: HashSet<InstanceId>,
    /// Consecutive transient failures per instance.
    retries: HashMap<InstanceId, u32>,
    /// Why the last host failed each build, for the fault when no host is left to try.
    last_failure: HashMap<InstanceId, String>,
}

pub struct Conductor;

impl Actor for Conductor {
    type Msg = ConductorMsg;
    type State = ConductorState;
    type Arguments = ConductorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConductorMsg>,
        args: ConductorArgs,
    ) -> Result<ConductorState, ActorProcessingErr> {
        args.ctx.ns.join(&topic(&args.project), myself.get_cell());
        myself.send_interval(args.ctx.timing.sweep_interval, || ConductorMsg::Sweep);
        // Resume whatever the log holds.
        myself.send_message(ConductorMsg::Sweep)?;
        Ok(ConductorState {
            ctx: args.ctx,
            project: args.project,
            in_flight: HashSet::new(),
            retries: HashMap::new(),
            last_failure: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConductorMsg>,
        msg: ConductorMsg,
        state: &mut ConductorState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            ConductorMsg::Kick(Wire(id)) => {
                if !state.in_flight.contains(&id) {
                    state.advance(&myself, id).await?;
                }
            }
            ConductorMsg::Sweep => {
                let project = state.project;
                let pending: Vec<InstanceId> = state.ctx.store.read(|r| {
                    Ok::<_, StoreError>(
                        r.scan(&OPERATIONS)?
                            .into_iter()
                            .filter(|(_, op)| op.project == project)
                            .map(|(id, _)| id)
                            .collect(),
                    )
                })?;
                for id in pending {
                    if !state.in_flight.contains(&id) {
                        state.advance(&myself, id).await?;
                    }
                }
            }
            ConductorMsg::Placed(Wire((id, outcome))) => {
                state.in_flight.remove(&id);
                state.placed(&myself, id, outcome).await?;
            }
            ConductorMsg::Built(Wire((id, host, outcome))) => {
                state.in_flight.remove(&id);
                state.built(&myself, id, host, outcome).await?;
            }
            ConductorMsg::Destroyed(Wire((id, outcome))) => {
                state.in_flight.remove(&id);
                state.destroyed(&myself, id, outcome).await?;
            }
            ConductorMsg::Released(Wire((id, outcome))) => {
                state.in_flight.remove(&id);
                state.released(&myself, id, outcome).await?;
            }
        }
        Ok(())
    }
}

/// The host part of a build, run off the conductor's mailbox: the instance's network (idempotent), then the
/// agent runs it, then it is recorded ACTIVE. Each step is recorded before the next, guarded by "still on this
/// host and not being deleted", so a resumed build repeats only what is missing. On a failure on the host,
/// nothing of the attempt is left there and its network is released, ready for another host.
/// Whether the instance's logged operation is still its build (a delete may have replaced it).
fn build_logged_in(tx: &impl Reads, id: InstanceId) -> Result<bool, StoreError> {
    Ok(tx.get(&OPERATIONS, &id)?.is_some_and(|op| op.kind == OperationKind::Build))
}

/// A transition guard: the instance is still placed on `host`.
fn on_host(host: HostId) -> impl Fn(&Instance) -> Result<(), String> {
    move |i: &Instance| match &i.host {
        Some(h) if *h == host => Ok(()),
        _ => Err(format!("no longer on {host}")),
    }
}

async fn build_on_host(ctx: &Ctx, id: InstanceId, host: &HostId) -> Result<(), StepFailure> {
    let network =
        rpc::call_topic(&ctx.ns, &network::TOPIC, |r| NetworkMsg::Allocate(Wire(id), r), ctx.timing.call).await;
    match network {
        Ok(Wire(Ok(_))) => {}
        Ok(Wire(Err(e))) => return Err(StepFailure::Failed(format!("network allocation failed: {e}"))),
        Err(e) => return Err(StepFailure::Lost(format!("the network manager did not answer: {e}"))),
    }
    let guard = on_host(host.clone());
    let recorded = ctx
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
            if current.task_state == Some(TaskState::Spawning) {
                guard(&current).map_err(|why| TransitionError::Superseded(id, why))?;
                return Ok(current);
            }
            transition_in(tx, id, Event::NetworkReady, guard, |_| {})
        })
        .await;
    let instance = match recorded {
        Ok(instance) => instance,
        Err(TransitionError::Store(e)) => return Err(StepFailure::Lost(e.to_string())),
        // Deleted or moved meanwhile: the step that superseded this one takes it from here.
        Err(e) => return Err(StepFailure::Failed(e.to_string())),
    };
    let spec = match ctx.store.read(|r| InstanceSpec::of(r, &instance)) {
        Ok(spec) => spec,
        Err(e) => return Err(StepFailure::Lost(e.to_string())),
    };
    if let Err(failure) = compute_step(ctx, host, |r| ComputeMsg::Build(Wire(spec), r), ctx.timing.build).await {
        if matches!(failure, StepFailure::Failed(_)) {
            let _ = rpc::call_topic(&ctx.ns, &network::TOPIC, |r| NetworkMsg::Deallocate(Wire(id), r), ctx.timing.call)
                .await;
        }
        return Err(failure);
    }
    let guard = on_host(host.clone());
    let done = ctx
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
            if current.vm_state == VmState::Active && guard(&current).is_ok() {
                return Ok(current);
            }
            transition_in(tx, id, Event::Spawned, guard, |i| i.launched_at = Some(now_ms()))
        })
        .await;
    match done {
        Ok(_) => Ok(()),
        Err(TransitionError::Store(e)) => Err(StepFailure::Lost(e.to_string())),
        Err(e) => {
            // Deleted or moved while it spawned: take it off this host; whoever owns it now does the rest.
            let _ = compute_step(ctx, host, |r| ComputeMsg::Destroy(Wire(id), r), ctx.timing.call).await;
            Err(StepFailure::Failed(e.to_string()))
        }
    }
}

/// Calls a host's compute agent.
async fn compute_step(
    ctx: &Ctx,
    host: &HostId,
    make: impl FnOnce(RpcReplyPort<StepReply>) -> ComputeMsg,
    timeout: Duration,
) -> Result<(), StepFailure> {
    step_outcome(rpc::call_topic(&ctx.ns, &compute::topic(host), make, timeout).await)
}

/// A worker's own failure is `Failed`; no answer is `Lost`.
fn step_outcome<E: std::fmt::Display>(outcome: Result<Wire<Result<(), E>>, CallError>) -> Result<(), StepFailure> {
    match outcome {
        Ok(Wire(result)) => result.map_err(|e| StepFailure::Failed(e.to_string())),
        Err(e) => Err(StepFailure::Lost(e.to_string())),
    }
}

impl ConductorState {
    /// Looks at the logged operation of `id` and starts its current step.
    async fn advance(&mut self, me: &ActorRef<ConductorMsg>, id: InstanceId) -> Result<(), StoreError> {
        let (op, instance) =
            self.ctx.store.read(|r| Ok::<_, StoreError>((r.get(&OPERATIONS, &id)?, r.get(&INSTANCES, &id)?)))?;
        let Some(op) = op else {
            self.retries.remove(&id);
            return Ok(());
        };
        let Some(instance) = instance else {
            // The records are gone but the log entry is not: finish the cleanup.
            self.ctx.store.write(move |tx| remove_in(tx, id)).await?;
            return Ok(());
        };
        let ctx = self.ctx.clone();
        match op.kind {
            OperationKind::Build => match (instance.vm_state, instance.task_state, instance.host) {
                (VmState::Active | VmState::Error, None, _) => {
                    // The build is over. Close its log entry, unless a delete replaced it since we read it.
                    let closed = self
                        .ctx
                        .store
                        .write(move |tx| {
                            let still_build = build_logged_in(tx, id)?;
                            if still_build {
                                tx.delete(&OPERATIONS, &id)?;
                            }
                            Ok::<_, StoreError>(still_build)
                        })
                        .await?;
                    self.retries.remove(&id);
                    if !closed {
                        // Fails only while this conductor stops; the log entry is resumed on restart then.
                        let _ = me.send_message(ConductorMsg::Kick(Wire(id)));
                    }
                }
                (VmState::Building, Some(TaskState::Scheduling), _) => {
                    self.in_flight.insert(id);
                    let demand = Demand {
                        vcpus: instance.flavor.vcpus,
                        ram_mb: instance.flavor.ram_mb,
                        disk_gb: instance.flavor.disk_gb,
                        tried: instance.tried_hosts,
                    };
                    rpc::then(me, async move {
                        let request = PlaceRequest { instance: id, demand };
                        let outcome = rpc::call_topic(
                            &ctx.ns,
                            &scheduler::TOPIC,
                            |reply| SchedulerMsg::Place(Wire(request), reply),
                            ctx.timing.call,
                        )
                        .await;
                        let outcome = match outcome {
                            Ok(Wire(Ok(host))) => Ok(host),
                            Ok(Wire(Err(no_host))) => Err(StepFailure::Failed(no_host.to_string())),
                            Err(e) => Err(StepFailure::Lost(e.to_string())),
                        };
                        ConductorMsg::Placed(Wire((id, outcome)))
                    });
                }
                (VmState::Building, Some(TaskState::Networking | TaskState::Spawning), Some(host)) => {
                    self.in_flight.insert(id);
                    rpc::then(me, async move {
                        let outcome = build_on_host(&ctx, id, &host).await;
                        ConductorMsg::Built(Wire((id, host, outcome)))
                    });
                }
                (vm, task, host) => {
                    tracing::error!(instance = %id, ?vm, ?task, ?host, "build operation in an unexpected state; failing it");
                    self.fail_build(id, format!("Build interrupted in state {vm:?}/{task:?}")).await?;
                }
            },
            OperationKind::Delete => {
                self.in_flight.insert(id);
                match instance.host {
                    Some(host) => rpc::then(me, async move {
                        let outcome =
                            compute_step(&ctx, &host, |reply| ComputeMsg::Destroy(Wire(id), reply), ctx.timing.build)
                                .await;
                        ConductorMsg::Destroyed(Wire((id, outcome)))
                    }),
                    // Never reached a host: nothing runs anywhere, only records to remove.
                    None => {
                        let _ = me.send_message(ConductorMsg::Destroyed(Wire((id, Ok(())))));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a transient failure of the instance's current step; returns how many there were in a row.
    fn note_retry(&mut self, id: InstanceId) -> u32 {
        let n = self.retries.entry(id).or_default();
        *n += 1;
        *n
    }

    /// Counts a transient failure; `true` while the step may be retried.
    fn may_retry(&mut self, id: InstanceId) -> bool {
        self.note_retry(id) <= MAX_TRANSIENT_RETRIES
    }

    fn retry_later(&self, me: &ActorRef<ConductorMsg>, id: InstanceId) {
        let attempt = self.retries.get(&id).copied().unwrap_or(1);
        let delay = Duration::from_millis(100 * u64::from(attempt.min(20)));
        me.send_after(delay, move || ConductorMsg::Kick(Wire(id)));
    }

    async fn placed(
        &mut self,
        me: &ActorRef<ConductorMsg>,
        id: InstanceId,
        outcome: Result<HostId, StepFailure>,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(host) => {
                let recorded = self
                    .ctx
                    .store
                    .write(move |tx| {
                        if !build_logged_in(tx, id)? {
                            return Ok(false);
                        }
                        let mut instance =
                            transition_in(tx, id, Event::Placed, |_| Ok(()), |i| i.tried_hosts.push(host.clone()))?;
                        set_host_in(tx, &mut instance, Some(host))?;
                        Ok::<_, TransitionError>(true)
                    })
                    .await;
                recorded.map(drop).or_else(TransitionError::only_store)?;
                self.retries.remove(&id);
                self.advance(me, id).await
            }
            Err(StepFailure::Failed(no_valid_host)) => {
                let fault = match self.last_failure.remove(&id) {
                    Some(last) => format!("{no_valid_host} Last exception: {last}"),
                    None => no_valid_host,
                };
                self.fail_build(id, fault).await
            }
            Err(StepFailure::Lost(why)) => {
                if self.may_retry(id) {
                    tracing::warn!(instance = %id, cause = %why, "scheduler unreachable; retrying");
                    self.retry_later(me, id);
                    Ok(())
                } else {
                    self.fail_build(id, format!("No valid host was found. The scheduler did not answer: {why}")).await
                }
            }
        }
    }

    async fn built(
        &mut self,
        me: &ActorRef<ConductorMsg>,
        id: InstanceId,
        host: HostId,
        outcome: Result<(), StepFailure>,
    ) -> Result<(), StoreError> {
        let reason = match outcome {
            Ok(()) => {
                self.last_failure.remove(&id);
                return self.advance(me, id).await;
            }
            Err(StepFailure::Failed(reason)) => reason,
            Err(StepFailure::Lost(why)) => {
                // The agent's state is unknown: make sure nothing of the attempt stays on that host, then
                // handle it as a failure there. If the host is unreachable too, its own reconciliation
                // removes what is left when it comes back.
                self.in_flight.insert(id);
                let ctx = self.ctx.clone();
                rpc::then(me, async move {
                    let _ =
                        compute_step(&ctx, &host, |reply| ComputeMsg::Destroy(Wire(id), reply), ctx.timing.call).await;
                    let reason = format!("{host} did not finish the build: {why}");
                    ConductorMsg::Built(Wire((id, host, Err(StepFailure::Failed(reason)))))
                });
                return Ok(());
            }
        };
        tracing::warn!(instance = %id, %host, cause = %reason, "build failed on host; rescheduling");
        self.last_failure.insert(id, reason.clone());
        let failed_host = host.clone();
        let gave_up = self
            .ctx
            .store
            .write(move |tx| {
                if !build_logged_in(tx, id)? {
                    return Ok(false);
                }
                let mut instance = transition_in(tx, id, Event::Rescheduled, on_host(failed_host), |_| {})?;
                set_host_in(tx, &mut instance, None)?;
                Ok::<_, TransitionError>(instance.tried_hosts.len() >= MAX_ATTEMPTS)
            })
            .await;
        match gave_up {
            Ok(true) => {
                self.fail_build(
                    id,
                    format!("No valid host was found. Exceeded max scheduling attempts {MAX_ATTEMPTS} for instance {id}. Last exception: {reason}"),
                )
                .await
            }
            Ok(false) => self.advance(me, id).await,
            Err(e) => {
                e.only_store()?;
                self.advance(me, id).await
            }
        }
    }

    async fn destroyed(
        &mut self,
        me: &ActorRef<ConductorMsg>,
        id: InstanceId,
        outcome: Result<(), StepFailure>,
    ) -> Result<(), StoreError> {
        if let Err(failure) = outcome {
            if self.may_retry(id) {
                tracing::warn!(instance = %id, ?failure, "destroy did not complete; retrying");
                self.retry_later(me, id);
                return Ok(());
            }
            tracing::error!(
                instance = %id, ?failure,
                "giving up on destroying the instance on its host; removing its records (the host removes what is left when it reconciles)"
            );
        }
        // Nothing runs on a host any more; release the addresses, then the records go.
        self.in_flight.insert(id);
        let ctx = self.ctx.clone();
        rpc::then(me, async move {
            let outcome = step_outcome(
                rpc::call_topic(&ctx.ns, &network::TOPIC, |r| NetworkMsg::Deallocate(Wire(id), r), ctx.timing.call)
                    .await,
            );
            ConductorMsg::Released(Wire((id, outcome)))
        });
        Ok(())
    }

    async fn released(
        &mut self,
        me: &ActorRef<ConductorMsg>,
        id: InstanceId,
        outcome: Result<(), StepFailure>,
    ) -> Result<(), StoreError> {
        if let Err(failure) = outcome {
            // Never given up: the addresses must come back. The count only paces the retries.
            tracing::warn!(instance = %id, ?failure, "releasing the network of a deleted instance failed; retrying");
            self.note_retry(id);
            self.retry_later(me, id);
            return Ok(());
        }
        self.retries.remove(&id);
        self.ctx.store.write(move |tx| remove_in(tx, id)).await
    }

    /// Ends a build in ERROR with `message` as its fault, and closes its operation.
    async fn fail_build(&mut self, id: InstanceId, message: String) -> Result<(), StoreError> {
        self.retries.remove(&id);
        self.last_failure.remove(&id);
        tracing::warn!(instance = %id, %message, "build failed");
        let outcome = self
            .ctx
            .store
            .write(move |tx| {
                if !build_logged_in(tx, id)? {
                    return Ok(());
                }
                let fault = Fault { code: 500, message, created_at: now_ms() };
                let mut instance = transition_in(tx, id, Event::Failed, |_| Ok(()), |i| i.fault = Some(fault))?;
                set_host_in(tx, &mut instance, None)?;
                tx.delete(&OPERATIONS, &id)?;
                Ok::<_, TransitionError>(())
            })
            .await;
        outcome.or_else(TransitionError::only_store)
    }
}
