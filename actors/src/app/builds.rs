//! The steps a conductor persists for builds and deletes (the saga log is the `operations` table). Each is one
//! transaction, guarded by "is it still ours" (the operation is still this build, the instance still on this
//! host), so a step repeated after a crash, or overtaken by a delete, changes nothing it should not.

use nimbus_protocol::compute::InstanceSpec;
use nimbus_protocol::ids::{HostId, InstanceId, ProjectId};
use nimbus_storage::records::{Fault, Instance, Operation, OperationKind, TaskState, VmState, now_ms};
use nimbus_storage::schema::{INSTANCES, OPERATIONS};
use nimbus_storage::{Reads, StoreError};

use crate::app::App;
use crate::app::instances::{TransitionError, remove_in, set_host_in, transition_in};
use crate::app::specs::instance_spec;
use crate::instance_state::Event;

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

/// The scheduler chose `host`: the instance is recorded there (and the host among those tried).
pub async fn record_placed(app: &App, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
    app.store
        .write(move |tx| {
            if !build_logged_in(tx, id)? {
                return Ok(());
            }
            let mut instance = transition_in(tx, id, Event::Placed, |_| Ok(()), |i| i.tried_hosts.push(host.clone()))?;
            Ok(set_host_in(tx, &mut instance, Some(host))?)
        })
        .await
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

/// The host runs the instance: it is ACTIVE (already so when the step is repeated).
pub async fn record_spawned(app: &App, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
    let guard = on_host(host);
    app.store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
            if current.vm_state == VmState::Active && guard(&current).is_ok() {
                return Ok(());
            }
            transition_in(tx, id, Event::Spawned, guard, |i| i.launched_at = Some(now_ms())).map(drop)
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

/// The last step of a delete: the records go (the instance, its indexes, its quota usage, its operation).
/// Its addresses were released before.
pub async fn remove(app: &App, id: InstanceId) -> Result<(), StoreError> {
    app.store.write(move |tx| remove_in(tx, id)).await
}
