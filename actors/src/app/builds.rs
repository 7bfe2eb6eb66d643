//! The steps a conductor persists for builds, deletes, power actions and interface changes (the saga log is the `operations`
//! table). Each is one transaction, guarded by "is it still ours" (the operation is still this build or
//! power action, the instance still on this host), so a step repeated after a crash, or overtaken by a
//! delete, changes nothing it should not.

use nimbus_protocol::compute::InstanceSpec;
use nimbus_protocol::ids::{HostId, InstanceId, ProjectId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_storage::records::{Fault, Instance, Operation, OperationKind, TaskState, VmState, now_ms};
use nimbus_storage::schema::{INSTANCES, OPERATIONS};
use nimbus_storage::{Reads, StoreError, WriteTx};

use crate::app::error::CloudError;
use crate::app::instances::{TransitionError, remove_in, set_host_in, transition_in};
use crate::app::specs::instance_spec;
use crate::app::{App, interfaces};
use crate::instance_state::{Event, power_action};

/// The logged operation on an instance and the instance, from one snapshot.
pub fn load(app: &App, id: InstanceId) -> Result<(Option<Operation>, Option<Instance>), StoreError> {
    app.store.read(|r| Ok((r.get(&OPERATIONS, &id)?, r.get(&INSTANCES, &id)?)))
}

/// The instances of `project` with a logged operation.
pub fn pending(app: &App, project: ProjectId) -> Result<Vec<InstanceId>, StoreError> {
    let operations = app.store.read(|r| r.scan(&OPERATIONS))?;
    Ok(operations.into_iter().filter(|(_, op)| op.project == project).map(|(id, _)| id).collect())
}

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

/// Ends the power action logged for `id`: the instance goes to the state the action leads to (`done`) or
/// stays as it was, and the operation is closed, in one transaction. `false` if a delete replaced the action
/// meanwhile (nothing changes then).
pub async fn finish_power(app: &App, id: InstanceId, done: bool) -> Result<bool, TransitionError> {
    app.store
        .write(move |tx| {
            if !tx.get(&OPERATIONS, &id)?.is_some_and(|op| op.kind == OperationKind::Power) {
                return Ok(false);
            }
            let under_way = tx.get(&INSTANCES, &id)?.and_then(|i| i.task_state).and_then(power_action).is_some();
            if under_way {
                let event = if done { Event::PowerDone } else { Event::PowerFailed };
                transition_in(tx, id, event, |_| Ok(()), |_| {})?;
            }
            tx.delete(&OPERATIONS, &id)?;
            Ok(true)
        })
        .await
}

/// Closes the interface change logged for `id`; `false` if another operation replaced it meanwhile.
pub async fn finish_interfaces(app: &App, id: InstanceId) -> Result<bool, StoreError> {
    app.store
        .write(move |tx| {
            let ours = tx.get(&OPERATIONS, &id)?.is_some_and(|op| op.kind == OperationKind::Interfaces);
            if ours {
                tx.delete(&OPERATIONS, &id)?;
            }
            Ok(ours)
        })
        .await
}

/// The spec of the instance as its record has it now.
pub fn current_spec(app: &App, id: InstanceId) -> Result<InstanceSpec, CloudError> {
    app.store.read(|r| {
        let instance = r.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
        Ok(instance_spec(r, &instance)?)
    })
}

/// Closes a build that is over; `false` if a delete replaced it meanwhile (nothing is closed then).
pub async fn close_build(app: &App, id: InstanceId) -> Result<bool, StoreError> {
    app.store
        .write(move |tx| {
            let still_build = build_logged_in(tx, id)?;
            if still_build {
                tx.delete(&OPERATIONS, &id)?;
            }
            Ok(still_build)
        })
        .await
}

/// The scheduler chose `host`: the instance is recorded there (and the host among those tried) and, in the
/// same transaction, given its addresses, so a build costs one durable write less. The allocation is only
/// store work (the network host hears of it in the next step), so no crash window is lost. If it fails
/// (no address left, say), the placement is recorded alone and the build step meets the failure again, as
/// its own.
pub async fn record_placed(app: &App, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
    let auto_assign = app.auto_assign_floating_ip;
    let on = host.clone();
    let together = app
        .store
        .write(move |tx| {
            if !place_in(tx, id, on)? {
                return Ok(());
            }
            interfaces::allocate_with_floating_in(tx, id, auto_assign).map_err(PlacedError::Allocation)?;
            Ok(())
        })
        .await;
    match together {
        Ok(()) => Ok(()),
        Err(PlacedError::Transition(e)) => Err(e),
        Err(PlacedError::Allocation(CloudError::Store(e))) => Err(e.into()),
        Err(PlacedError::Allocation(_)) => app.store.write(move |tx| place_in(tx, id, host).map(drop)).await,
    }
}

/// Why the placement transaction failed: its own transition, or the allocation that rode along.
enum PlacedError {
    Transition(TransitionError),
    Allocation(CloudError),
}

impl From<StoreError> for PlacedError {
    fn from(e: StoreError) -> Self {
        PlacedError::Transition(e.into())
    }
}

impl From<TransitionError> for PlacedError {
    fn from(e: TransitionError) -> Self {
        PlacedError::Transition(e)
    }
}

/// Records the placement; `false` if a delete replaced the build (nothing is written then).
fn place_in(tx: &mut WriteTx<'_>, id: InstanceId, host: HostId) -> Result<bool, TransitionError> {
    if !build_logged_in(tx, id)? {
        return Ok(false);
    }
    let mut instance = transition_in(tx, id, Event::Placed, |_| Ok(()), |i| i.tried_hosts.push(host.clone()))?;
    set_host_in(tx, &mut instance, Some(host))?;
    Ok(true)
}

/// The instance has its network: it is spawning on `host` (already so when the step is repeated). Returns the
/// spec its host is sent.
pub async fn record_network_ready(app: &App, id: InstanceId, host: HostId) -> Result<InstanceSpec, TransitionError> {
    let guard = on_host(host);
    let instance = app
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
            if current.task_state == Some(TaskState::Spawning) {
                guard(&current).map_err(|why| TransitionError::Superseded(id, why))?;
                return Ok(current);
            }
            transition_in(tx, id, Event::NetworkReady, guard, |_| {})
        })
        .await?;
    Ok(app.store.read(|r| instance_spec(r, &instance))?)
}

/// The host runs the instance: it is ACTIVE (already so when the step is repeated), and its build is closed
/// in the same transaction (nothing is left to do between the two, so no crash window is lost).
pub async fn record_spawned(app: &App, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
    let guard = on_host(host);
    app.store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
            if !(current.vm_state == VmState::Active && guard(&current).is_ok()) {
                transition_in(tx, id, Event::Spawned, guard, |i| i.launched_at = Some(now_ms()))?;
            }
            if build_logged_in(tx, id)? {
                tx.delete(&OPERATIONS, &id)?;
            }
            Ok(())
        })
        .await
}

/// The build failed on `host` (nothing of it is left there): the instance goes back to the scheduler.
/// Returns how many hosts it was tried on, or `None` if a delete replaced the build meanwhile.
pub async fn reschedule(app: &App, id: InstanceId, host: HostId) -> Result<Option<usize>, TransitionError> {
    app.store
        .write(move |tx| {
            if !build_logged_in(tx, id)? {
                return Ok(None);
            }
            let mut instance = transition_in(tx, id, Event::Rescheduled, on_host(host), |_| {})?;
            set_host_in(tx, &mut instance, None)?;
            Ok(Some(instance.tried_hosts.len()))
        })
        .await
}

/// Ends a build in ERROR with `message` as its fault, and closes its operation (unless a delete replaced it).
pub async fn fail_build(app: &App, id: InstanceId, message: String) -> Result<(), StoreError> {
    let outcome = app
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

/// The last step of a delete: the instance's addresses are released and its records go (the instance, its
/// indexes, its quota usage, its operation), in one transaction. Returns what the network host must apply:
/// the caller passes it on after the commit, as after a release on its own (a crash before that leaves the
/// kernel to the network host's reconcilers, as it would between a release and its apply).
pub async fn release_and_remove(app: &App, id: InstanceId) -> Result<NetworkChanges, StoreError> {
    app.store
        .write(move |tx| {
            let changes = interfaces::deallocate_in(tx, id)?;
            remove_in(tx, id)?;
            Ok(changes)
        })
        .await
}
