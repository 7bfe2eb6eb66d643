//! The live actor tree for the console: walked through the supervisors, each actor with what
//! [`crate::introspect`] recorded about it.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::ActorRef;
use serde::{Deserialize, Serialize};

use crate::introspect::{self, ReconcileStatus};
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
    /// The actor's reconcilers, by kind (see [`introspect::reconciled`]).
    pub reconcilers: BTreeMap<String, ReconcileStatus>,
    pub children: Vec<ActorInfo>,
    /// Set when this supervisor did not answer: its children are unknown.
    pub unreachable: bool,
}

/// Walks the tree below `root`, asking each supervisor for its children. A supervisor that does not answer
/// within `timeout` is marked unreachable and the walk goes on.
pub async fn tree(root: &ActorRef<SupervisorMsg>, timeout: Duration) -> ActorInfo {
    let cell = root.get_cell();
    let name = cell.get_name().unwrap_or_default();
    let mut info = ActorInfo {
        reconcilers: introspect::reconcilers_of(&name),
        name,
        kind: "Supervisor".into(),
        pid: Some(cell.get_id().to_string()),
        supervisor: cell.try_get_supervisor().and_then(|s| s.get_name()),
        status: format!("{:?}", cell.get_status()),
        restarts: 0,
        last_error: None,
        uptime_secs: 0,
        messages: introspect::messages(&cell),
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
            reconcilers: introspect::reconcilers_of(&child.name),
            name: child.name.clone(),
            kind: child.kind.clone(),
            pid: child.cell.as_ref().map(|c| c.get_id().to_string()),
            supervisor: Some(info.name.clone()),
            status: child.cell.as_ref().map_or("Down".to_string(), |c| format!("{:?}", c.get_status())),
            restarts: child.restarts,
            last_error: child.last_error.clone(),
            uptime_secs: child.uptime.as_secs(),
            messages: child.cell.as_ref().map_or(0, introspect::messages),
            children: Vec::new(),
            unreachable: false,
        };
        if let Some(cell) = child.cell.filter(|c| c.is_message_type_of::<SupervisorMsg>() == Some(true)) {
            Box::pin(fill(&mut node, &ActorRef::from(cell), timeout)).await;
        }
        info.children.push(node);
    }
}
