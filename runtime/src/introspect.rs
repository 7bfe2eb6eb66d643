//! What the actors of this process record about themselves for the console and the metrics: message counts
//! per incarnation, restarts per actor name, the status of every reconciler, and a ring of recent
//! supervision events. [`crate::tree`] assembles these facts into the live actor tree.
//!
//! Every fact here comes from the live actors of this process; ractor does not expose mailbox depths, so none
//! is reported rather than a guess.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use ractor::{ActorCell, ActorId};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, the runtime's one clock for what it reports.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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

/// Restarts by actor name since the process started. The supervisor's own count (`children`) starts over
/// when the supervisor does; this one never goes down, as a Prometheus counter must not.
static RESTARTS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

pub(crate) fn count_restart(child: &str) {
    *RESTARTS.lock().expect("introspection lock").entry(child.to_string()).or_default() += 1;
}

/// How often each actor whose registered name starts with `prefix` was restarted, by name (for the metrics).
pub fn restarts(prefix: &str) -> Vec<(String, u64)> {
    let restarts = RESTARTS.lock().expect("introspection lock");
    restarts.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(n, c)| (n.clone(), *c)).collect()
}

/// How a reconciler (a pass that makes the world match the store: a dataplane apply, a sweep, a host
/// reconcile) has been doing, as garage's background workers report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    /// When the last pass ended, in milliseconds since the Unix epoch.
    pub last_run_ms: Option<u64>,
    pub runs: u64,
    pub errors: u64,
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
}

/// Kept by actor name and reconciler kind, so the history survives the actor's restarts.
static RECONCILERS: LazyLock<Mutex<BTreeMap<(String, &'static str), ReconcileStatus>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Records one pass of the reconciler `kind` of the actor registered as `actor`: `Err` carries the error's
/// text (its whole chain).
pub fn reconciled(actor: &str, kind: &'static str, outcome: Result<(), String>) {
    let mut reconcilers = RECONCILERS.lock().expect("introspection lock");
    let status = reconcilers.entry((actor.to_string(), kind)).or_default();
    status.runs += 1;
    status.last_run_ms = Some(now_ms());
    match outcome {
        Ok(()) => status.consecutive_errors = 0,
        Err(e) => {
            status.errors += 1;
            status.consecutive_errors += 1;
            status.last_error = Some(e);
        }
    }
}

/// The reconcilers of the actor registered as `actor`, by kind.
pub fn reconcilers_of(actor: &str) -> BTreeMap<String, ReconcileStatus> {
    let reconcilers = RECONCILERS.lock().expect("introspection lock");
    // Keys sort by actor first: only this actor's range is read, not every actor's (a tree of 10,000 hosts).
    reconcilers
        .range((actor.to_string(), "")..)
        .take_while(|((a, _), _)| a == actor)
        .map(|((_, kind), s)| (kind.to_string(), s.clone()))
        .collect()
}

/// Every reconciler of the actors whose names start with `prefix`: (actor, kind, status).
pub fn reconcilers(prefix: &str) -> Vec<(String, &'static str, ReconcileStatus)> {
    let reconcilers = RECONCILERS.lock().expect("introspection lock");
    reconcilers
        .iter()
        .filter(|((a, _), _)| a.starts_with(prefix))
        .map(|((a, kind), s)| (a.clone(), *kind, s.clone()))
        .collect()
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
    let event = ActorEvent {
        seq: SEQ.fetch_add(1, Ordering::SeqCst) + 1,
        at_ms: now_ms(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcilers_count_runs_and_errors_in_a_row() {
        let actor = "introspect-test/network";
        reconciled(actor, "dataplane", Ok(()));
        reconciled(actor, "dataplane", Err("eth0 is missing".into()));
        reconciled(actor, "dataplane", Err("eth0 is still missing".into()));
        let status = &reconcilers_of(actor)["dataplane"];
        assert_eq!((status.runs, status.errors, status.consecutive_errors), (3, 2, 2));
        assert_eq!(status.last_error.as_deref(), Some("eth0 is still missing"));
        reconciled(actor, "dataplane", Ok(()));
        let status = &reconcilers_of(actor)["dataplane"];
        assert_eq!((status.runs, status.errors, status.consecutive_errors), (4, 2, 0));
        assert_eq!(status.last_error.as_deref(), Some("eth0 is still missing"), "the last error is kept");
        assert_eq!(reconcilers("introspect-test/").len(), 1);
    }
}
