//! The conductor's decisions, as pure code driven by tests: which step a logged operation is at, given the
//! operation and the instance as the store shows them; how long to wait before repeating a step whose worker
//! did not answer; and the faults a failed build ends with.

use std::time::Duration;

use nimbus_protocol::compute::PowerAction;
use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::scheduler::{Demand, NoValidHost};
use nimbus_storage::records::{Instance, Operation, OperationKind, TaskState, VmState};

use crate::instance_state::power_action;

/// How many hosts a build is tried on before it fails (Nova's `scheduler_max_attempts`).
pub const MAX_ATTEMPTS: usize = 3;
/// How often a step whose worker did not answer is repeated before the operation gives up on it.
pub const MAX_TRANSIENT_RETRIES: u32 = 20;
/// How many steps one run of a saga takes at most (a build on every host it may try, with every retry, takes
/// fewer); past it the run stops and the conductor's sweep resumes the operation later, so a step that keeps
/// changing nothing cannot spin.
pub const MAX_STEPS_PER_RUN: u32 = 200;

/// What to do next for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No operation is logged: nothing to do.
    Done,
    /// The instance's records are gone but its log entry is not: finish the cleanup.
    RemoveRecords,
    /// The build is over (ACTIVE or ERROR) but still logged: close its log entry. ACTIVE closes the build in
    /// its own transaction, so this is met only where none closed it (a log written by an older nimbus, say).
    CloseBuild,
    /// The build waits for a host.
    Place(Demand),
    /// The build is placed on a host: network, spawn, ACTIVE.
    BuildOn(HostId),
    /// The delete: destroy on the host it reached (if any), release its addresses, remove its records.
    Delete(Option<HostId>),
    /// The power action under way: have the instance's host do it, then record where it led.
    Power { host: HostId, action: PowerAction },
    /// A power action that cannot be done (the instance has no host, or none is under way): the instance
    /// stays as it was and the operation is closed.
    AbandonPower,
    /// An interface change: have the instance's host give it the interfaces its record has, then close it
    /// (closed at once if the instance has no host).
    Interfaces(Option<HostId>),
    /// A build in a state no step leads to: it fails.
    Interrupted { vm: VmState, task: Option<TaskState> },
}

/// The step the logged operation of an instance is at.
pub fn next_step(op: Option<&Operation>, instance: Option<&Instance>) -> Step {
    let Some(op) = op else { return Step::Done };
    let Some(instance) = instance else { return Step::RemoveRecords };
    match op.kind {
        OperationKind::Delete => Step::Delete(instance.host.clone()),
        OperationKind::Power => match (instance.task_state.and_then(power_action), &instance.host) {
            (Some(action), Some(host)) => Step::Power { host: host.clone(), action },
            _ => Step::AbandonPower,
        },
        OperationKind::Interfaces => Step::Interfaces(instance.host.clone()),
        OperationKind::Build => match (instance.vm_state, instance.task_state, &instance.host) {
            (VmState::Active | VmState::Error, None, _) => Step::CloseBuild,
            (VmState::Building, Some(TaskState::Scheduling), _) => Step::Place(Demand {
                vcpus: instance.flavor.vcpus,
                ram_mb: instance.flavor.ram_mb,
                disk_gb: instance.flavor.disk_gb,
                tried: instance.tried_hosts.clone(),
            }),
            (VmState::Building, Some(TaskState::Networking | TaskState::Spawning), Some(host)) => {
                Step::BuildOn(host.clone())
            }
            (vm, task, _) => Step::Interrupted { vm, task },
        },
    }
}

/// How long to wait before the `attempt`th repetition of a step whose worker did not answer.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt.clamp(1, 20)))
}

/// The fault of a build no host can take, with why the last host failed it, if one did.
pub fn no_valid_host_fault(no_host: &NoValidHost, last_failure: Option<&str>) -> String {
    match last_failure {
        Some(last) => format!("{no_host} Last exception: {last}"),
        None => no_host.to_string(),
    }
}

/// The fault of a build that failed on as many hosts as it may be tried on.
pub fn attempts_exceeded_fault(id: InstanceId, last_failure: &str) -> String {
    format!(
        "No valid host was found. Exceeded max scheduling attempts {MAX_ATTEMPTS} for instance {id}. Last exception: {last_failure}"
    )
}

/// The fault of a build whose scheduler never answered.
pub fn scheduler_silent_fault(why: &str) -> String {
    format!("No valid host was found. The scheduler did not answer: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_protocol::ids::{FlavorId, ImageId, ProjectId, UserId};
    use nimbus_storage::records::FlavorSnapshot;

    /// An instance in `vm/task` (as [`crate::instance_state`]'s tests write states), on `host`.
    fn instance(state: &str, host: Option<&str>) -> Instance {
        let lifecycle = crate::instance_state::tests::parse(&format!("{state}/0"));
        Instance {
            id: InstanceId(uuid::Uuid::nil()),
            name: "vm".into(),
            project: ProjectId(uuid::Uuid::nil()),
            user: UserId(uuid::Uuid::nil()),
            flavor: FlavorSnapshot {
                id: FlavorId("1".into()),
                name: "m1.tiny".into(),
                vcpus: 1,
                ram_mb: 512,
                disk_gb: 1,
            },
            image: ImageId(uuid::Uuid::nil()),
            host: host.map(HostId::from),
            vm_state: lifecycle.vm,
            task_state: lifecycle.task,
            power_state: lifecycle.power,
            interfaces: Vec::new(),
            fault: None,
            tried_hosts: vec![HostId::from("tried")],
            created_at: 0,
            updated_at: 0,
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

    /// `check(operation, instance, expected)`: the operation is `build`, `delete` or `-` (none); the instance
    /// is `vm/task[@host]` or `-` (gone); the expected step is written as [`show`] writes it.
    fn check(op: &str, state: &str, expected: &str) {
        let op = match op {
            "-" => None,
            kind => Some(Operation {
                instance: InstanceId(uuid::Uuid::nil()),
                project: ProjectId(uuid::Uuid::nil()),
                kind: match kind {
                    "build" => OperationKind::Build,
                    "power" => OperationKind::Power,
                    "interfaces" => OperationKind::Interfaces,
                    _ => OperationKind::Delete,
                },
                started_at: 0,
                request_id: None,
            }),
        };
        let instance = match state {
            "-" => None,
            s => {
                let (s, host) = s.split_once('@').map_or((s, None), |(s, h)| (s, Some(h)));
                Some(instance(s, host))
            }
        };
        assert_eq!(show(&next_step(op.as_ref(), instance.as_ref())), expected, "{op:?} {state}");
    }

    fn show(step: &Step) -> String {
        match step {
            Step::Done => "done".into(),
            Step::RemoveRecords => "remove records".into(),
            Step::CloseBuild => "close build".into(),
            Step::Place(d) => format!("place {}MB avoiding {:?}", d.ram_mb, d.tried),
            Step::BuildOn(host) => format!("build on {host}"),
            Step::Delete(host) => format!("delete on {host:?}"),
            Step::Power { host, action } => format!("{action:?} on {host}"),
            Step::AbandonPower => "abandon power".into(),
            Step::Interfaces(host) => format!("interfaces on {host:?}"),
            Step::Interrupted { vm, task } => format!("interrupted {vm:?}/{task:?}"),
        }
    }

    #[test]
    fn a_build_goes_from_placement_to_its_host_to_closing() {
        check("build", "building/scheduling", r#"place 512MB avoiding [HostId("tried")]"#);
        check("build", "building/networking@h1", "build on h1");
        check("build", "building/spawning@h1", "build on h1");
        check("build", "active/-@h1", "close build");
        check("build", "error/-", "close build");
    }

    #[test]
    fn an_interface_change_goes_to_the_instances_host() {
        check("interfaces", "active/-@h1", r#"interfaces on Some(HostId("h1"))"#);
        check("interfaces", "error/-", "interfaces on None");
        check("interfaces", "-", "remove records");
    }

    #[test]
    fn a_delete_destroys_where_the_instance_is() {
        check("delete", "active/deleting@h1", r#"delete on Some(HostId("h1"))"#);
        check("delete", "building/deleting", "delete on None");
        check("delete", "error/deleting", "delete on None");
    }

    #[test]
    fn a_power_action_is_done_on_the_instance_s_host() {
        check("power", "active/powering-off@h1", "Stop on h1");
        check("power", "stopped/powering-on@h1", "Start on h1");
        check("power", "paused/rebooting_hard@h1", "HardReboot on h1");
        check("power", "suspended/resuming@h1", "Resume on h1");
        check("power", "active/powering-off", "abandon power");
        check("power", "active/-@h1", "abandon power");
        check("power", "-", "remove records");
    }

    #[test]
    fn leftovers_are_cleaned_up_and_impossible_states_fail() {
        check("-", "active/-@h1", "done");
        check("-", "-", "done");
        check("build", "-", "remove records");
        check("delete", "-", "remove records");
        check("build", "building/networking", "interrupted Building/Some(Networking)");
        check("build", "building/deleting@h1", "interrupted Building/Some(Deleting)");
    }

    #[test]
    fn retries_back_off_to_two_seconds() {
        let delays: Vec<u64> = [0, 1, 2, 20, 50].iter().map(|&a| retry_delay(a).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 100, 200, 2000, 2000]);
    }

    #[test]
    fn faults_say_why_the_last_host_failed() {
        let no_host = NoValidHost { detail: "Rejected 4 host(s): not enough RAM.".into() };
        assert_eq!(no_valid_host_fault(&no_host, None), "No valid host was found. Rejected 4 host(s): not enough RAM.");
        assert_eq!(
            no_valid_host_fault(&no_host, Some("h1 failed")),
            "No valid host was found. Rejected 4 host(s): not enough RAM. Last exception: h1 failed"
        );
        let id = InstanceId(uuid::Uuid::nil());
        assert!(
            attempts_exceeded_fault(id, "boom")
                .ends_with("attempts 3 for instance 00000000-0000-0000-0000-000000000000. Last exception: boom")
        );
    }
}
