//! The instance state machine: Nova's vm_state / task_state / power_state and the events that move them.
//!
//! Pure code: every new state is computed through [`apply`] (by the application layer's guarded transitions,
//! for the server API and the conductor's steps), inside the store transaction that persists it, so an
//! impossible transition is refused instead of written.

use nimbus_protocol::compute::PowerAction;
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
    /// A user asked for a power action.
    PowerRequested(PowerAction),
    /// The host did the power action under way.
    PowerDone,
    /// The host could not do it: the instance stays as it was.
    PowerFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {event:?} to an instance in vm_state {vm:?} / task_state {task:?}")]
pub struct InvalidTransition {
    pub vm: VmState,
    pub task: Option<TaskState>,
    pub event: Event,
}

/// The task a power action is under way as (nova's task_state for it).
pub fn power_task(action: PowerAction) -> TaskState {
    match action {
        PowerAction::Stop => TaskState::PoweringOff,
        PowerAction::Start => TaskState::PoweringOn,
        PowerAction::SoftReboot => TaskState::Rebooting,
        PowerAction::HardReboot => TaskState::RebootingHard,
        PowerAction::Pause => TaskState::Pausing,
        PowerAction::Unpause => TaskState::Unpausing,
        PowerAction::Suspend => TaskState::Suspending,
        PowerAction::Resume => TaskState::Resuming,
    }
}

/// Every power action.
pub const POWER_ACTIONS: [PowerAction; 8] = [
    PowerAction::Stop,
    PowerAction::Start,
    PowerAction::SoftReboot,
    PowerAction::HardReboot,
    PowerAction::Pause,
    PowerAction::Unpause,
    PowerAction::Suspend,
    PowerAction::Resume,
];

/// The power action under way, if `task` is one.
pub fn power_action(task: TaskState) -> Option<PowerAction> {
    POWER_ACTIONS.into_iter().find(|a| power_task(*a) == task)
}

/// The vm_states a power action may start from (nova's `check_instance_state`, but for ERROR: nova also
/// stops and hard-reboots instances in ERROR, and nimbus's have no host left to act on).
fn power_allowed_from(action: PowerAction) -> &'static [VmState] {
    use VmState::*;
    match action {
        PowerAction::Stop | PowerAction::SoftReboot | PowerAction::Pause | PowerAction::Suspend => &[Active],
        PowerAction::Start => &[Stopped],
        PowerAction::HardReboot => &[Active, Stopped, Paused, Suspended],
        PowerAction::Unpause => &[Paused],
        PowerAction::Resume => &[Suspended],
    }
}

/// The state a finished power action leaves.
fn power_result(action: PowerAction) -> (VmState, PowerState) {
    match action {
        PowerAction::Stop => (VmState::Stopped, PowerState::Shutdown),
        PowerAction::Pause => (VmState::Paused, PowerState::Paused),
        PowerAction::Suspend => (VmState::Suspended, PowerState::Suspended),
        PowerAction::Start
        | PowerAction::SoftReboot
        | PowerAction::HardReboot
        | PowerAction::Unpause
        | PowerAction::Resume => (VmState::Active, PowerState::Running),
    }
}

/// The action that brings an instance run again (by a host restoring its instances) back to `vm`: `None`
/// for a running one.
pub fn restore_action(vm: VmState) -> Option<PowerAction> {
    match vm {
        VmState::Stopped => Some(PowerAction::Stop),
        VmState::Paused => Some(PowerAction::Pause),
        VmState::Suspended => Some(PowerAction::Suspend),
        VmState::Building | VmState::Active | VmState::Error => None,
    }
}

pub fn apply(from: Lifecycle, event: Event) -> Result<Lifecycle, InvalidTransition> {
    use TaskState::*;
    use VmState::*;
    let to = |vm, task, power| Ok(Lifecycle { vm, task, power });
    // The end of a power action under way (a delete replaced its task, so it has none then).
    match (from.task.and_then(power_action), event) {
        (Some(action), Event::PowerDone) => {
            let (vm, power) = power_result(action);
            return to(vm, None, power);
        }
        (Some(_), Event::PowerFailed) => return to(from.vm, None, from.power),
        _ => {}
    }
    match (from.vm, from.task, event) {
        (_, Some(Deleting), _) => Err(InvalidTransition { vm: from.vm, task: from.task, event }),
        (_, _, Event::DeleteRequested) => to(from.vm, Some(Deleting), from.power),
        (vm, None, Event::PowerRequested(action)) if power_allowed_from(action).contains(&vm) => {
            to(vm, Some(power_task(action)), from.power)
        }
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
        VmState::Paused => "PAUSED",
        VmState::Suspended => "SUSPENDED",
    }
}

/// The `status` the Compute API shows for a state, with what is under way: a reboot shows as `REBOOT` or
/// `HARD_REBOOT`, as in nova.
pub fn api_status_of(vm: VmState, task: Option<TaskState>) -> &'static str {
    match task {
        Some(TaskState::Rebooting) => "REBOOT",
        Some(TaskState::RebootingHard) => "HARD_REBOOT",
        _ => api_status(vm),
    }
}

pub fn vm_state_name(vm: VmState) -> &'static str {
    match vm {
        VmState::Building => "building",
        VmState::Active => "active",
        VmState::Stopped => "stopped",
        VmState::Error => "error",
        VmState::Paused => "paused",
        VmState::Suspended => "suspended",
    }
}

pub fn task_state_name(task: TaskState) -> &'static str {
    match task {
        TaskState::Scheduling => "scheduling",
        TaskState::Networking => "networking",
        TaskState::Spawning => "spawning",
        TaskState::Deleting => "deleting",
        TaskState::PoweringOff => "powering-off",
        TaskState::PoweringOn => "powering-on",
        TaskState::Rebooting => "rebooting",
        TaskState::RebootingHard => "rebooting_hard",
        TaskState::Pausing => "pausing",
        TaskState::Unpausing => "unpausing",
        TaskState::Suspending => "suspending",
        TaskState::Resuming => "resuming",
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
            "paused" => VmState::Paused,
            "suspended" => VmState::Suspended,
            other => panic!("vm state {other}"),
        };
        let task = match parts[1] {
            "-" => None,
            "scheduling" => Some(TaskState::Scheduling),
            "networking" => Some(TaskState::Networking),
            "spawning" => Some(TaskState::Spawning),
            "deleting" => Some(TaskState::Deleting),
            other => Some(
                POWER_ACTIONS
                    .into_iter()
                    .map(power_task)
                    .find(|t| task_state_name(*t) == other)
                    .unwrap_or_else(|| panic!("task state {other}")),
            ),
        };
        let power = match parts[2] {
            "0" => PowerState::NoState,
            "1" => PowerState::Running,
            "4" => PowerState::Shutdown,
            "3" => PowerState::Paused,
            "7" => PowerState::Suspended,
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

    #[test]
    fn power_actions_start_from_the_states_nova_allows_and_end_in_theirs() {
        use PowerAction::*;
        for (from, event, expected) in [
            ("active/-/1", Event::PowerRequested(Stop), "active/powering-off/1"),
            ("active/powering-off/1", Event::PowerDone, "stopped/-/4"),
            ("stopped/-/4", Event::PowerRequested(Start), "stopped/powering-on/4"),
            ("stopped/powering-on/4", Event::PowerDone, "active/-/1"),
            ("active/-/1", Event::PowerRequested(SoftReboot), "active/rebooting/1"),
            ("active/rebooting/1", Event::PowerDone, "active/-/1"),
            ("stopped/-/4", Event::PowerRequested(HardReboot), "stopped/rebooting_hard/4"),
            ("stopped/rebooting_hard/4", Event::PowerDone, "active/-/1"),
            ("active/-/1", Event::PowerRequested(Pause), "active/pausing/1"),
            ("active/pausing/1", Event::PowerDone, "paused/-/3"),
            ("paused/-/3", Event::PowerRequested(Unpause), "paused/unpausing/3"),
            ("paused/unpausing/3", Event::PowerDone, "active/-/1"),
            ("active/-/1", Event::PowerRequested(Suspend), "active/suspending/1"),
            ("active/suspending/1", Event::PowerDone, "suspended/-/7"),
            ("suspended/-/7", Event::PowerRequested(Resume), "suspended/resuming/7"),
            ("suspended/resuming/7", Event::PowerDone, "active/-/1"),
            // A failure leaves the instance as it was.
            ("active/powering-off/1", Event::PowerFailed, "active/-/1"),
            ("paused/unpausing/3", Event::PowerFailed, "paused/-/3"),
            // What the state does not allow, or another action under way, is refused.
            ("stopped/-/4", Event::PowerRequested(Stop), "invalid"),
            ("active/-/1", Event::PowerRequested(Start), "invalid"),
            ("stopped/-/4", Event::PowerRequested(SoftReboot), "invalid"),
            ("paused/-/3", Event::PowerRequested(Suspend), "invalid"),
            ("error/-/0", Event::PowerRequested(HardReboot), "invalid"),
            ("building/spawning/0", Event::PowerRequested(Stop), "invalid"),
            ("active/powering-off/1", Event::PowerRequested(SoftReboot), "invalid"),
            ("active/-/1", Event::PowerDone, "invalid"),
            ("building/spawning/0", Event::PowerFailed, "invalid"),
            // A delete overtakes a power action, whose end then changes nothing.
            ("active/powering-off/1", Event::DeleteRequested, "active/deleting/1"),
            ("active/deleting/1", Event::PowerDone, "invalid"),
        ] {
            check(from, event, expected);
        }
        assert_eq!(restore_action(VmState::Stopped), Some(Stop));
        assert_eq!(restore_action(VmState::Active), None);
        for action in POWER_ACTIONS {
            assert_eq!(power_action(power_task(action)), Some(action));
        }
    }
}
