//! The instance state machine: Nova's vm_state / task_state / power_state and the events that move them.
//!
//! Pure code: every new state is computed through [`apply`] (by the application layer's guarded transitions,
//! for the server API and the conductor's steps), inside the store transaction that persists it, so an
//! impossible transition is refused instead of written.

use nimbus_storage::records::{PowerState, TaskState, VmState};

/// The three state fields of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub vm: VmState,
    pub task: Option<TaskState>,
    pub power: PowerState,
}

impl Lifecycle {
    /// A new instance, as the API accepts it.
    pub const NEW: Lifecycle =
        Lifecycle { vm: VmState::Building, task: Some(TaskState::Scheduling), power: PowerState::NoState };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The scheduler chose a host.
    Placed,
    /// The network manager gave the instance its addresses.
    NetworkReady,
    /// The virt driver runs the instance.
    Spawned,
    /// The build failed on a host and goes back to the scheduler.
    Rescheduled,
    /// The build gave up (no valid host, or a fatal error).
    Failed,
    /// A user asked for deletion.
    DeleteRequested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {event:?} to an instance in vm_state {vm:?} / task_state {task:?}")]
pub struct InvalidTransition {
    pub vm: VmState,
    pub task: Option<TaskState>,
    pub event: Event,
}

pub fn apply(from: Lifecycle, event: Event) -> Result<Lifecycle, InvalidTransition> {
    use TaskState::*;
    use VmState::*;
    let to = |vm, task, power| Ok(Lifecycle { vm, task, power });
    match (from.vm, from.task, event) {
        (_, Some(Deleting), _) => Err(InvalidTransition { vm: from.vm, task: from.task, event }),
        (_, _, Event::DeleteRequested) => to(from.vm, Some(Deleting), from.power),
        (Building, Some(Scheduling), Event::Placed) => to(Building, Some(Networking), PowerState::NoState),
        (Building, Some(Networking), Event::NetworkReady) => to(Building, Some(Spawning), PowerState::NoState),
        (Building, Some(Spawning), Event::Spawned) => to(Active, None, PowerState::Running),
        (Building, Some(Networking | Spawning), Event::Rescheduled) => {
            to(Building, Some(Scheduling), PowerState::NoState)
        }
        (Building, _, Event::Failed) => to(Error, None, PowerState::NoState),
        _ => Err(InvalidTransition { vm: from.vm, task: from.task, event }),
    }
}

/// The `status` the Compute API shows for a state.
pub fn api_status(vm: VmState) -> &'static str {
    match vm {
        VmState::Building => "BUILD",
        VmState::Active => "ACTIVE",
        VmState::Stopped => "SHUTOFF",
        VmState::Error => "ERROR",
    }
}

pub fn vm_state_name(vm: VmState) -> &'static str {
    match vm {
        VmState::Building => "building",
        VmState::Active => "active",
        VmState::Stopped => "stopped",
        VmState::Error => "error",
    }
}

pub fn task_state_name(task: TaskState) -> &'static str {
    match task {
        TaskState::Scheduling => "scheduling",
        TaskState::Networking => "networking",
        TaskState::Spawning => "spawning",
        TaskState::Deleting => "deleting",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `check(from, event, expected)`: expected is "vm/task/power" or "invalid".
    fn check(from: &str, event: Event, expected: &str) {
        let lifecycle = parse(from);
        let got = match apply(lifecycle, event) {
            Ok(l) => show(l),
            Err(_) => "invalid".to_string(),
        };
        assert_eq!(got, expected, "{from} + {event:?}");
    }

    /// A lifecycle written `vm/task/power` (`building/spawning/0`; `-` for no task), as the tests write them.
    pub(crate) fn parse(s: &str) -> Lifecycle {
        let parts: Vec<&str> = s.split('/').collect();
        let vm = match parts[0] {
            "building" => VmState::Building,
            "active" => VmState::Active,
            "error" => VmState::Error,
            "stopped" => VmState::Stopped,
            other => panic!("vm state {other}"),
        };
        let task = match parts[1] {
            "-" => None,
            "scheduling" => Some(TaskState::Scheduling),
            "networking" => Some(TaskState::Networking),
            "spawning" => Some(TaskState::Spawning),
            "deleting" => Some(TaskState::Deleting),
            other => panic!("task state {other}"),
        };
        let power = match parts[2] {
            "0" => PowerState::NoState,
            "1" => PowerState::Running,
            "4" => PowerState::Shutdown,
            other => panic!("power state {other}"),
        };
        Lifecycle { vm, task, power }
    }

    fn show(l: Lifecycle) -> String {
        format!("{}/{}/{}", vm_state_name(l.vm), l.task.map_or("-", task_state_name), l.power as u8)
    }

    #[test]
    fn a_build_goes_through_its_steps() {
        check("building/scheduling/0", Event::Placed, "building/networking/0");
        check("building/networking/0", Event::NetworkReady, "building/spawning/0");
        check("building/spawning/0", Event::Spawned, "active/-/1");
        assert_eq!(show(Lifecycle::NEW), "building/scheduling/0");
    }

    #[test]
    fn failures_reschedule_or_end_in_error() {
        check("building/networking/0", Event::Rescheduled, "building/scheduling/0");
        check("building/spawning/0", Event::Rescheduled, "building/scheduling/0");
        check("building/scheduling/0", Event::Failed, "error/-/0");
        check("building/spawning/0", Event::Failed, "error/-/0");
        check("active/-/1", Event::Failed, "invalid");
        check("building/scheduling/0", Event::Rescheduled, "invalid");
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        check("building/scheduling/0", Event::Spawned, "invalid");
        check("building/scheduling/0", Event::NetworkReady, "invalid");
        check("active/-/1", Event::Placed, "invalid");
        check("error/-/0", Event::Spawned, "invalid");
    }

    #[test]
    fn delete_wins_over_everything_and_is_final() {
        check("building/spawning/0", Event::DeleteRequested, "building/deleting/0");
        check("active/-/1", Event::DeleteRequested, "active/deleting/1");
        check("error/-/0", Event::DeleteRequested, "error/deleting/0");
        check("active/deleting/1", Event::DeleteRequested, "invalid");
        check("building/deleting/0", Event::Spawned, "invalid");
        check("building/deleting/0", Event::Failed, "invalid");
    }
}
