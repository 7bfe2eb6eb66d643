//! The build, delete, power and interface sagas of one instance, as omicron runs its sagas: every step is persisted before the
//! next starts, every step is idempotent, and a failure unwinds what the attempt did (nothing of it stays on
//! the host, its addresses are released) before the build goes to another host or ends in ERROR.
//!
//! [`drive`] runs an instance's logged operation to its end, reading the store before every step, so it
//! resumes after a crash exactly where the store says the operation is. The effects it has (the store's
//! steps and the workers' calls) come through [`Effects`], so the tests inject a failure at every step and
//! run every step twice.

use std::future::Future;

use nimbus_protocol::compute::{ComputeClient, ComputeError, InstanceSpec, PowerAction};
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::network::{NetworkChanges, NetworkClient, NetworkError};
use nimbus_protocol::scheduler::{PlaceRequest, SchedulerClient, SchedulerError};
use nimbus_protocol::trace::Trace;
use nimbus_storage::StoreError;
use nimbus_storage::records::{Instance, Operation};
use tracing::Instrument;

use super::steps::{self, MAX_ATTEMPTS, MAX_STEPS_PER_RUN, MAX_TRANSIENT_RETRIES, Step, next_step};
use crate::app::error::CloudError;
use crate::app::instances::TransitionError;
use crate::app::{App, builds, interfaces};

/// Why a worker's step did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepFailure {
    /// The worker answered that it failed (and cleaned up after itself).
    Failed(String),
    /// The worker did not answer; what it did is unknown.
    Lost(String),
}

impl StepFailure {
    fn reason(&self) -> &str {
        match self {
            StepFailure::Failed(r) | StepFailure::Lost(r) => r,
        }
    }
}

/// How long a destroy may take: a delete waits as long as a build may take; the cleanup of an attempt whose
/// host did not answer waits only as long as a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    Call,
    Build,
}

/// What a saga does to the world: the store's steps and the workers' calls.
pub trait Effects: Send + Sync {
    fn load(
        &self,
        id: InstanceId,
    ) -> impl Future<Output = Result<(Option<Operation>, Option<Instance>), StoreError>> + Send;
    fn record_placed(&self, id: InstanceId, host: HostId) -> impl Future<Output = Result<(), TransitionError>> + Send;
    fn record_network_ready(
        &self,
        id: InstanceId,
        host: HostId,
    ) -> impl Future<Output = Result<InstanceSpec, TransitionError>> + Send;
    fn record_spawned(&self, id: InstanceId, host: HostId) -> impl Future<Output = Result<(), TransitionError>> + Send;
    fn reschedule(
        &self,
        id: InstanceId,
        host: HostId,
    ) -> impl Future<Output = Result<Option<usize>, TransitionError>> + Send;
    fn fail_build(&self, id: InstanceId, message: String) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn close_build(&self, id: InstanceId) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Ends the power action under way, where it led (`done`) or where it started; `false` if a delete
    /// replaced it.
    fn finish_power(&self, id: InstanceId, done: bool) -> impl Future<Output = Result<bool, TransitionError>> + Send;
    /// Closes the interface change logged for `id`; `false` if another operation (a delete) replaced it.
    fn finish_interfaces(&self, id: InstanceId) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Releases the instance's addresses and removes its records (a store step); returns what the release
    /// asks of the network host.
    fn remove(&self, id: InstanceId) -> impl Future<Output = Result<NetworkChanges, StoreError>> + Send;
    fn place(
        &self,
        trace: &Trace,
        request: PlaceRequest,
    ) -> impl Future<Output = Result<HostId, SchedulerError>> + Send;
    /// Gives the instance its addresses (a store step); returns what that asks of the network host.
    fn allocate(&self, id: InstanceId) -> impl Future<Output = Result<NetworkChanges, StepFailure>> + Send;
    /// Releases the instance's addresses (a store step); returns what that asks of the network host.
    fn deallocate(&self, id: InstanceId) -> impl Future<Output = Result<NetworkChanges, StepFailure>> + Send;
    /// Has the network host apply what an allocation or a release changed.
    fn apply_network(
        &self,
        trace: &Trace,
        changes: &NetworkChanges,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
    fn spawn(
        &self,
        trace: &Trace,
        host: &HostId,
        spec: InstanceSpec,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
    fn destroy(
        &self,
        trace: &Trace,
        host: &HostId,
        id: InstanceId,
        patience: Patience,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
    fn power(
        &self,
        trace: &Trace,
        host: &HostId,
        id: InstanceId,
        action: PowerAction,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
    /// Has `host` give the instance the interfaces its record has now.
    fn set_interfaces(
        &self,
        trace: &Trace,
        host: &HostId,
        id: InstanceId,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
    /// Waits before the `attempt`th repetition of a step whose worker did not answer.
    fn pause(&self, attempt: u32) -> impl Future<Output = ()> + Send;
}

/// A store step overtaken by a delete changed nothing: the loop reads the store again and goes on with the
/// delete. Only a store failure is an error.
fn unless_superseded<T>(outcome: Result<T, TransitionError>) -> Result<Option<T>, StoreError> {
    match outcome {
        Ok(value) => Ok(Some(value)),
        Err(e) => e.only_store().map(|()| None),
    }
}

/// Runs the logged operation of `id` until it has finished (or there is none). A store failure ends the run
/// with `Err`; the operation stays logged and a later run resumes it.
pub async fn drive(fx: &impl Effects, id: InstanceId) -> Result<(), StoreError> {
    let mut retries = 0u32;
    let mut last_failure: Option<String> = None;
    for _ in 0..MAX_STEPS_PER_RUN {
        let (op, instance) = fx.load(id).await?;
        let trace = Trace { request_id: op.as_ref().and_then(|op| op.request_id.clone()) };
        let span = tracing::info_span!("step", request_id = %trace, instance = %id);
        let step = next_step(op.as_ref(), instance.as_ref());
        let finished = run_step(fx, &trace, id, step, &mut retries, &mut last_failure).instrument(span).await?;
        if finished {
            return Ok(());
        }
    }
    tracing::error!(instance = %id, steps = MAX_STEPS_PER_RUN, "the operation made no end in this run; the sweep resumes it");
    Ok(())
}

/// Does one step; `true` when the operation is over.
async fn run_step(
    fx: &impl Effects,
    trace: &Trace,
    id: InstanceId,
    step: Step,
    retries: &mut u32,
    last_failure: &mut Option<String>,
) -> Result<bool, StoreError> {
    match step {
        Step::Done => return Ok(true),
        Step::RemoveRecords => {
            // The records are gone, so there is nothing left to release.
            fx.remove(id).await?;
            return Ok(true);
        }
        Step::CloseBuild => {
            // `false`: a delete replaced the build since it was read; the next pass does the delete.
            if fx.close_build(id).await? {
                tracing::info!("build finished");
                return Ok(true);
            }
        }
        Step::Place(demand) => match fx.place(trace, PlaceRequest { instance: id, demand }).await {
            Ok(host) => {
                *retries = 0;
                if unless_superseded(fx.record_placed(id, host.clone()).await)?.is_some() {
                    tracing::info!(%host, "placed");
                }
            }
            Err(SchedulerError::NoValidHost(no_host)) => {
                let fault = steps::no_valid_host_fault(&no_host, last_failure.as_deref());
                tracing::warn!(%fault, "build failed");
                fx.fail_build(id, fault).await?;
            }
            Err(e) => {
                *retries += 1;
                if *retries > MAX_TRANSIENT_RETRIES {
                    fx.fail_build(id, steps::scheduler_silent_fault(&chain(&e))).await?;
                } else {
                    tracing::warn!(cause = %chain(&e), "scheduler unreachable; retrying");
                    fx.pause(*retries).await;
                }
            }
        },
        Step::BuildOn(host) => {
            if let Err(failure) = build_on_host(fx, trace, id, &host).await? {
                tracing::warn!(%host, cause = %failure.reason(), "build failed on host; rescheduling");
                unwind_attempt(fx, trace, id, &host, &failure).await;
                let reason = failure.reason().to_string();
                let tried = unless_superseded(fx.reschedule(id, host).await)?.flatten();
                if tried.is_some_and(|tried| tried >= MAX_ATTEMPTS) {
                    let fault = steps::attempts_exceeded_fault(id, &reason);
                    tracing::warn!(%fault, "build failed");
                    fx.fail_build(id, fault).await?;
                }
                *last_failure = Some(reason);
            } else {
                *retries = 0;
            }
        }
        Step::Delete(host) => {
            delete(fx, trace, id, host).await?;
            return Ok(true);
        }
        Step::Power { host, action } => match fx.power(trace, &host, id, action).await {
            Ok(()) => {
                if unless_superseded(fx.finish_power(id, true).await)?.is_some() {
                    tracing::info!(%host, ?action, "power action done");
                }
                return Ok(true);
            }
            Err(StepFailure::Lost(cause)) if *retries < MAX_TRANSIENT_RETRIES => {
                // Power actions are idempotent: asking again is safe whatever the host did.
                *retries += 1;
                tracing::warn!(%host, ?action, %cause, "the host did not answer the power action; retrying");
                fx.pause(*retries).await;
            }
            Err(failure) => {
                tracing::warn!(%host, ?action, cause = %failure.reason(), "power action failed; the instance stays as it was");
                unless_superseded(fx.finish_power(id, false).await)?;
                return Ok(true);
            }
        },
        Step::AbandonPower => {
            tracing::warn!("power action with no host to do it; the instance stays as it was");
            unless_superseded(fx.finish_power(id, false).await)?;
            return Ok(true);
        }
        Step::Interfaces(None) => {
            tracing::warn!("interface change of an instance with no host; closing it");
            fx.finish_interfaces(id).await?;
            return Ok(true);
        }
        Step::Interfaces(Some(host)) => match fx.set_interfaces(trace, &host, id).await {
            Ok(()) => {
                if fx.finish_interfaces(id).await? {
                    tracing::info!(%host, "interfaces changed");
                }
                return Ok(true);
            }
            // Idempotent (the host is given the whole list each time), so a failure, answered or not, is
            // tried again: the record has the change already, and the host must come to agree with it.
            Err(failure) if *retries < MAX_TRANSIENT_RETRIES => {
                *retries += 1;
                tracing::warn!(%host, cause = %failure.reason(), "the interface change did not complete; retrying");
                fx.pause(*retries).await;
            }
            Err(failure) => {
                tracing::error!(%host, cause = %failure.reason(), "giving up on the interface change: the host's interfaces differ from the record until the next change");
                fx.finish_interfaces(id).await?;
                return Ok(true);
            }
        },
        Step::Interrupted { vm, task } => {
            tracing::error!(?vm, ?task, "build operation in an unexpected state; failing it");
            fx.fail_build(id, format!("Build interrupted in state {vm:?}/{task:?}")).await?;
            // Whatever the store says now is for the next run (a delete, or the sweep).
            return Ok(true);
        }
    }
    Ok(false)
}

/// The host part of a build: the instance's network, the spawn, ACTIVE; each recorded before the next. A
/// store step a delete overtook ends the attempt without a failure: the delete takes it from there.
async fn build_on_host(
    fx: &impl Effects,
    trace: &Trace,
    id: InstanceId,
    host: &HostId,
) -> Result<Result<(), StepFailure>, StoreError> {
    let changes = match fx.allocate(id).await {
        Ok(changes) => changes,
        Err(failure) => return Ok(Err(failure)),
    };
    if let Err(failure) = fx.apply_network(trace, &changes).await {
        return Ok(Err(failure));
    }
    let Some(spec) = unless_superseded(fx.record_network_ready(id, host.clone()).await)? else { return Ok(Ok(())) };
    tracing::info!(%host, "network ready; spawning");
    if let Err(failure) = fx.spawn(trace, host, spec).await {
        return Ok(Err(failure));
    }
    if unless_superseded(fx.record_spawned(id, host.clone()).await)?.is_some() {
        tracing::info!(%host, "active");
    }
    Ok(Ok(()))
}

/// Leaves nothing of a failed attempt: if the host did not answer, whatever it made is destroyed (if that
/// fails too, the host's agent destroys what is left at its next report); the addresses are released.
async fn unwind_attempt(fx: &impl Effects, trace: &Trace, id: InstanceId, host: &HostId, failure: &StepFailure) {
    if matches!(failure, StepFailure::Lost(_))
        && let Err(e) = fx.destroy(trace, host, id, Patience::Call).await
    {
        tracing::warn!(%host, cause = %e.reason(), "could not clean up the attempt on its host; its agent does at its next report");
    }
    release_network(fx, trace, id).await;
}

/// Releases the instance's addresses, then has the network host apply what the release changed: the same
/// changes until it answers (a second release finds nothing left to release, so it cannot stand in for them).
/// An answer that it failed ends the step: the network host has the news, and its reconcilers bring the kernel
/// in line from the store. Never given up: the addresses must come back; failures only pace the retries.
async fn release_network(fx: &impl Effects, trace: &Trace, id: InstanceId) {
    let mut attempt = 0;
    let changes = loop {
        match fx.deallocate(id).await {
            Ok(changes) => break changes,
            Err(failure) => {
                attempt += 1;
                tracing::warn!(cause = %failure.reason(), "releasing the instance's addresses failed; retrying");
                fx.pause(attempt).await;
            }
        }
    };
    apply_released(fx, trace, &changes, attempt).await;
}

/// Has the network host apply what a release changed, until it answers (`attempt`: the retries so far).
async fn apply_released(fx: &impl Effects, trace: &Trace, changes: &NetworkChanges, mut attempt: u32) {
    loop {
        match fx.apply_network(trace, changes).await {
            Ok(()) => return,
            Err(StepFailure::Failed(cause)) => {
                tracing::warn!(%cause, "the network host could not apply the released addresses; its reconcilers retry");
                return;
            }
            Err(StepFailure::Lost(cause)) => {
                attempt += 1;
                tracing::warn!(%cause, "the network host did not answer for the released addresses; retrying");
                fx.pause(attempt).await;
            }
        }
    }
}

/// The delete: destroyed on its host (given up after repeated failures: the host's agent destroys what is
/// left at its first report after the records are gone), then its addresses released and its records removed
/// in one store step, then the network host told of the release.
async fn delete(fx: &impl Effects, trace: &Trace, id: InstanceId, host: Option<HostId>) -> Result<(), StoreError> {
    if let Some(host) = host {
        let mut attempt = 0;
        while let Err(failure) = fx.destroy(trace, &host, id, Patience::Build).await {
            attempt += 1;
            if attempt > MAX_TRANSIENT_RETRIES {
                tracing::error!(%host, cause = %failure.reason(), "giving up on destroying the instance on its host; removing its records (the host's agent destroys what is left when it next reports)");
                break;
            }
            tracing::warn!(%host, cause = %failure.reason(), "destroy did not complete; retrying");
            fx.pause(attempt).await;
        }
    }
    let released = fx.remove(id).await?;
    tracing::info!("deleted");
    apply_released(fx, trace, &released, 0).await;
    Ok(())
}

/// The effects of a running cloud: the application layer's steps, and the workers through their clients.
pub struct CloudEffects {
    app: App,
    scheduler: SchedulerClient,
    network: NetworkClient,
}

impl CloudEffects {
    pub fn new(app: App) -> CloudEffects {
        let call = app.timing().call;
        let scheduler = SchedulerClient::new(app.ns(), call);
        let network = NetworkClient::new(app.ns(), call);
        CloudEffects { app, scheduler, network }
    }

    fn compute(&self, host: &HostId) -> ComputeClient {
        ComputeClient::new(self.app.ns(), host)
    }
}

/// A compute agent's own failure is `Failed`; no answer is `Lost`.
fn compute_outcome(outcome: Result<(), ComputeError>) -> Result<(), StepFailure> {
    outcome.map_err(|e| match e {
        ComputeError::Virt { .. } => StepFailure::Failed(chain(&e)),
        ComputeError::NoAnswer { .. } => StepFailure::Lost(chain(&e)),
    })
}

impl Effects for CloudEffects {
    async fn load(&self, id: InstanceId) -> Result<(Option<Operation>, Option<Instance>), StoreError> {
        builds::load(&self.app, id)
    }

    async fn record_placed(&self, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
        builds::record_placed(&self.app, id, host).await
    }

    async fn record_network_ready(&self, id: InstanceId, host: HostId) -> Result<InstanceSpec, TransitionError> {
        builds::record_network_ready(&self.app, id, host).await
    }

    async fn record_spawned(&self, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
        builds::record_spawned(&self.app, id, host).await
    }

    async fn reschedule(&self, id: InstanceId, host: HostId) -> Result<Option<usize>, TransitionError> {
        builds::reschedule(&self.app, id, host).await
    }

    async fn fail_build(&self, id: InstanceId, message: String) -> Result<(), StoreError> {
        builds::fail_build(&self.app, id, message).await
    }

    async fn close_build(&self, id: InstanceId) -> Result<bool, StoreError> {
        builds::close_build(&self.app, id).await
    }

    async fn finish_power(&self, id: InstanceId, done: bool) -> Result<bool, TransitionError> {
        builds::finish_power(&self.app, id, done).await
    }

    async fn finish_interfaces(&self, id: InstanceId) -> Result<bool, StoreError> {
        builds::finish_interfaces(&self.app, id).await
    }

    async fn remove(&self, id: InstanceId) -> Result<NetworkChanges, StoreError> {
        builds::release_and_remove(&self.app, id).await
    }

    async fn place(&self, trace: &Trace, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        self.scheduler.place(trace, request).await
    }

    async fn allocate(&self, id: InstanceId) -> Result<NetworkChanges, StepFailure> {
        interfaces::allocate(&self.app, id).await.map_err(|e| match e {
            CloudError::Store(e) => StepFailure::Lost(chain(&e)),
            e => StepFailure::Failed(format!("network allocation failed: {}", chain(&e))),
        })
    }

    async fn deallocate(&self, id: InstanceId) -> Result<NetworkChanges, StepFailure> {
        interfaces::deallocate(&self.app, id).await.map_err(|e| StepFailure::Lost(chain(&e)))
    }

    /// The network side's own failure is `Failed`; no answer is `Lost`.
    async fn apply_network(&self, trace: &Trace, changes: &NetworkChanges) -> Result<(), StepFailure> {
        self.network.apply(trace, changes.clone()).await.map_err(|e| match e {
            NetworkError::NoAnswer(_) => StepFailure::Lost(chain(&e)),
            other => StepFailure::Failed(chain(&other)),
        })
    }

    async fn spawn(&self, trace: &Trace, host: &HostId, spec: InstanceSpec) -> Result<(), StepFailure> {
        compute_outcome(self.compute(host).build(trace, spec, self.app.timing().build).await)
    }

    async fn destroy(
        &self,
        trace: &Trace,
        host: &HostId,
        id: InstanceId,
        patience: Patience,
    ) -> Result<(), StepFailure> {
        let timing = self.app.timing();
        let timeout = match patience {
            Patience::Call => timing.call,
            Patience::Build => timing.build,
        };
        compute_outcome(self.compute(host).destroy(trace, id, timeout).await)
    }

    async fn power(
        &self,
        trace: &Trace,
        host: &HostId,
        id: InstanceId,
        action: PowerAction,
    ) -> Result<(), StepFailure> {
        compute_outcome(self.compute(host).power(trace, id, action, self.app.timing().build).await)
    }

    async fn set_interfaces(&self, trace: &Trace, host: &HostId, id: InstanceId) -> Result<(), StepFailure> {
        let spec = builds::current_spec(&self.app, id).map_err(|e| StepFailure::Lost(chain(&e)))?;
        compute_outcome(self.compute(host).set_interfaces(trace, spec, self.app.timing().build).await)
    }

    async fn pause(&self, attempt: u32) {
        tokio::time::sleep(steps::retry_delay(attempt)).await;
    }
}

#[cfg(test)]
mod tests;
