//! Guarded transitions of instance records inside a transaction, and their removal: what the server API and
//! the conductor's steps share.

use nimbus_protocol::ids::{HostId, ImageId, InstanceId, ProjectId, UserId};
use nimbus_storage::records::{Flavor, FlavorSnapshot, HostLoad, Instance, Millis, now_ms};
use nimbus_storage::schema::{
    self, HOST_LOADS, INSTANCE_LIST, INSTANCES, INSTANCES_BY_HOST, OPERATIONS, PROJECT_INSTANCE_LIST, USER_DATA,
};
use nimbus_storage::{NewestFirst, Pair, Reads, StoreError, WriteTx};

use crate::app::quota;
use crate::instance_state::{Event, InvalidTransition, Lifecycle, apply};

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("instance {0} no longer exists")]
    Gone(InstanceId),
    #[error("instance {0} has moved on: {1}")]
    Superseded(InstanceId, String),
    #[error("instance {id} cannot make this step")]
    Invalid { id: InstanceId, source: InvalidTransition },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransitionError {
    /// For a step whose instance may have been deleted or moved on meanwhile: only a store failure is an
    /// error; the step that superseded this one takes the instance from here.
    pub fn only_store(self) -> Result<(), StoreError> {
        match self {
            TransitionError::Store(e) => Err(e),
            TransitionError::Gone(_) | TransitionError::Invalid { .. } | TransitionError::Superseded(..) => Ok(()),
        }
    }
}

/// A new instance as the API accepts it: building, waiting for the scheduler.
pub fn new_instance(
    name: String,
    project: ProjectId,
    user: UserId,
    flavor: &Flavor,
    image: ImageId,
    now: Millis,
) -> Instance {
    let Lifecycle { vm, task, power } = Lifecycle::NEW;
    Instance {
        id: InstanceId::generate(),
        name,
        project,
        user,
        flavor: FlavorSnapshot {
            id: flavor.id.clone(),
            name: flavor.name.clone(),
            vcpus: flavor.vcpus,
            ram_mb: flavor.ram_mb,
            disk_gb: flavor.disk_gb,
        },
        image,
        host: None,
        vm_state: vm,
        task_state: task,
        power_state: power,
        interfaces: Vec::new(),
        fault: None,
        tried_hosts: Vec::new(),
        created_at: now,
        updated_at: now,
        launched_at: None,
        key: None,
        security_groups: Vec::new(),
        metadata: Default::default(),
        requested_nics: Default::default(),
        description: None,
        reservation_id: String::new(),
        launch_index: 0,
        tags: Vec::new(),
        requested_tags: Vec::new(),
        nic_tags: Default::default(),
    }
}

/// The instances of `project`, or of every project (`None`), newest first: read from the list orders.
pub fn all_in(r: &impl Reads, project: Option<ProjectId>) -> Result<Vec<Instance>, StoreError> {
    let mut ids = Vec::new();
    match project {
        Some(p) => {
            r.visit_keys(&PROJECT_INSTANCE_LIST, &Pair::<ProjectId, NewestFirst>::prefix(&p), None, |Pair(_, at)| {
                ids.push(at.id);
                Ok(true)
            })?
        }
        None => r.visit_keys(&INSTANCE_LIST, &[], None, |at: NewestFirst| {
            ids.push(at.id);
            Ok(true)
        })?,
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(r.get(&INSTANCES, &id)?);
    }
    Ok(out)
}

pub fn lifecycle(instance: &Instance) -> Lifecycle {
    Lifecycle { vm: instance.vm_state, task: instance.task_state, power: instance.power_state }
}

/// Applies `event` to the instance if `still_ours` holds for it (e.g. "it is still on this host"), lets
/// `edit` change other fields, and writes it back. All in the caller's transaction.
pub fn transition_in(
    tx: &mut WriteTx<'_>,
    id: InstanceId,
    event: Event,
    still_ours: impl FnOnce(&Instance) -> Result<(), String>,
    edit: impl FnOnce(&mut Instance),
) -> Result<Instance, TransitionError> {
    let mut instance = tx.get(&INSTANCES, &id)?.ok_or(TransitionError::Gone(id))?;
    still_ours(&instance).map_err(|why| TransitionError::Superseded(id, why))?;
    let next = apply(lifecycle(&instance), event).map_err(|source| TransitionError::Invalid { id, source })?;
    instance.vm_state = next.vm;
    instance.task_state = next.task;
    instance.power_state = next.power;
    instance.updated_at = now_ms();
    edit(&mut instance);
    tx.put(&INSTANCES, &id, &instance)?;
    Ok(instance)
}

/// Moves the instance to `host` (or off any host), keeping the host index and the hosts' loads in step.
pub fn set_host_in(tx: &mut WriteTx<'_>, instance: &mut Instance, host: Option<HostId>) -> Result<(), StoreError> {
    if let Some(old) = &instance.host {
        tx.index_remove(&INSTANCES_BY_HOST, old, &instance.id)?;
        change_load_in(tx, old, |load| load.remove(&instance.flavor))?;
    }
    if let Some(new) = &host {
        tx.index_add(&INSTANCES_BY_HOST, new, &instance.id)?;
        change_load_in(tx, new, |load| load.add(&instance.flavor))?;
    }
    instance.host = host;
    tx.put(&INSTANCES, &instance.id, instance)
}

/// Changes what a host's instances use of it.
fn change_load_in(tx: &mut WriteTx<'_>, host: &HostId, change: impl FnOnce(&mut HostLoad)) -> Result<(), StoreError> {
    let mut load = tx.get(&HOST_LOADS, host)?.unwrap_or_default();
    change(&mut load);
    tx.put(&HOST_LOADS, host, &load)
}

/// Records a new instance, with its place in the list orders.
pub fn insert_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<(), StoreError> {
    tx.put(&INSTANCES, &instance.id, instance)?;
    schema::join_security_groups_in(tx, instance)?;
    schema::list_instance_in(tx, instance)
}

/// Removes an instance and everything that points at it (indexes, list orders, group memberships, user
/// data, its operation, its quota usage). Its fixed and floating IPs must have been released first.
pub fn remove_in(tx: &mut WriteTx<'_>, id: InstanceId) -> Result<(), StoreError> {
    if let Some(instance) = tx.delete(&INSTANCES, &id)? {
        quota::refund_in(
            tx,
            instance.project,
            quota::instances_usage(1, instance.flavor.vcpus, instance.flavor.ram_mb),
        )?;
        schema::unlist_instance_in(tx, &instance)?;
        schema::leave_security_groups_in(tx, &instance)?;
        tx.delete(&USER_DATA, &id)?;
        if let Some(host) = &instance.host {
            tx.index_remove(&INSTANCES_BY_HOST, host, &id)?;
            change_load_in(tx, host, |load| load.remove(&instance.flavor))?;
        }
    }
    tx.delete(&OPERATIONS, &id)?;
    Ok(())
}
