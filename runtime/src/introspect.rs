//! Introspection for the console: the live actor tree (walked through the supervisors), per-actor message
//! counts, and a ring of recent supervision events.
//!
//! Every fact here comes from the live actors of this process; ractor does not expose mailbox depths, so none
//! is reported rather than a guess.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use ractor::{ActorCell, ActorId, ActorRef};
use serde::{Deserialize, Serialize};

use crate::supervisor::{self, SupervisorMsg};

/// One actor of the tree, as its supervisor and the actor itself report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    pub name: String,
    /// The actor type (`Scheduler`, `Supervisor`, …).
    pub kind: String,
    /// ractor's process id, `node.pid`.
    pub pid: Option<String>,
    pub supervisor: Option<String>,
    /// ractor's status (`Running`, …), or `Down` while its supervisor waits to restart it.
    pub status: String,
    pub restarts: u32,
    /// The last abnormal end: when (seconds since the Unix epoch) and why.
    pub last_error: Option<(u64, String)>,
    pub uptime_secs: u64,
    /// Messages handled by this incarnation.
    pub messages: u64,
    pub children: Vec<ActorInfo>,
    /// Set when this supervisor did not answer: its children are unknown.
    pub unreachable: bool,
}

static MESSAGES: LazyLock<Mutex<HashMap<ActorId, u64>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Counts one handled message; actors call it first thing in `handle`.
pub fn handled(cell: &ActorCell) {
    *MESSAGES.lock().expect("introspection lock").entry(cell.get_id()).or_default() += 1;
}

pub(crate) fn messages(cell: &ActorCell) -> u64 {
    MESSAGES.lock().expect("introspection lock").get(&cell.get_id()).copied().unwrap_or(0)
}

/// Drops the count of an actor that ended.
pub(crate) fn forget(cell: &ActorCell) {
    MESSAGES.lock().expect("introspection lock").remove(&cell.get_id());
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A child ended abnormally (failed, or was killed).
    Failed,
    /// A child was started again.
    Restarted,
    /// A supervisor exceeded its restart intensity and failed itself.
    Escalated,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEvent {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    pub supervisor: String,
    pub child: String,
    pub detail: String,
}

const EVENTS_KEPT: usize = 2048;
static EVENTS: LazyLock<Mutex<VecDeque<ActorEvent>>> = LazyLock::new(|| Mutex::new(VecDeque::new()));
static SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn record(kind: EventKind, supervisor: &str, child: &str, detail: String) {
    let at_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let event = ActorEvent {
        seq: SEQ.fetch_add(1, Ordering::SeqCst) + 1,
        at_ms,
        kind,
        supervisor: supervisor.to_string(),
        child: child.to_string(),
        detail,
    };
    let mut events = EVENTS.lock().expect("introspection lock");
    if events.len() == EVENTS_KEPT {
        events.pop_front();
    }
    events.push_back(event);
}

/// The events after `seq` (all kept ones for 0) whose supervisor or child name starts with `prefix` (a
/// namespace, so clouds sharing a process see their own).
pub fn events_after(seq: u64, prefix: &str) -> Vec<ActorEvent> {
    let events = EVENTS.lock().expect("introspection lock");
    events
        .iter()
        .filter(|e| e.seq > seq && (e.child.starts_with(prefix) || e.supervisor.starts_with(prefix)))
        .cloned()
        .collect()
}

/// Walks the tree below `root`, asking each supervisor for its children. A supervisor that does not answer
/// within `timeout` is marked unreachable and the walk goes on.
pub async fn tree(root: &ActorRef<SupervisorMsg>, timeout: Duration) -> ActorInfo {
    let cell = root.get_cell();
    let mut info = ActorInfo {
        name: cell.get_name().unwrap_or_default(),
        kind: "Supervisor".into(),
        pid: Some(cell.get_id().to_string()),
        supervisor: cell.try_get_supervisor().and_then(|s| s.get_name()),
        status: format!("{:?}", cell.get_status()),
        restarts: 0,
        last_error: None,
        uptime_secs: 0,
        messages: messages(&cell),
        children: Vec::new(),
        unreachable: false,
    };
    fill(&mut info, root, timeout).await;
    info
}

async fn fill(info: &mut ActorInfo, supervisor: &ActorRef<SupervisorMsg>, timeout: Duration) {
    let Ok(children) = supervisor::children(supervisor, timeout).await else {
        info.unreachable = true;
        return;
    };
    for child in children {
        let mut node = ActorInfo {
            name: child.name.clone(),
            kind: child.kind.clone(),
            pid: child.cell.as_ref().map(|c| c.get_id().to_string()),
            supervisor: Some(info.name.clone()),
            status: child.cell.as_ref().map_or("Down".to_string(), |c| format!("{:?}", c.get_status())),
            restarts: child.restarts,
            last_error: child.last_error.clone(),
            uptime_secs: child.uptime.as_secs(),
            messages: child.cell.as_ref().map_or(0, messages),
            children: Vec::new(),
            unreachable: false,
        };
        if let Some(cell) = child.cell.filter(|c| c.is_message_type_of::<SupervisorMsg>() == Some(true)) {
            Box::pin(fill(&mut node, &ActorRef::from(cell), timeout)).await;
        }
        info.children.push(node);
    }
}
