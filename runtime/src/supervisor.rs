//! A supervisor with OTP's restart strategies, restart intensity, escalation and backoff.
//!
//! ractor links a child to its parent and reports the child's end to the parent, but restarts nothing. This
//! actor keeps, for each child, a function that starts it again, and applies a strategy when one ends:
//! - `OneForOne`: restart only the child that ended;
//! - `OneForAll`: stop the others too, and restart all of them in order;
//! - `RestForOne`: stop the children started after it, and restart it and them in order.
//!
//! More than `intensity.max_restarts` restarts within `intensity.period` make the supervisor fail, so its
//! own parent applies its strategy (escalation). Consecutive restarts of a child wait longer each time
//! (backoff), the first one not at all.
//!
//! A supervisor may also have a template, as OTP's `simple_one_for_one`: children made on demand from a key
//! (`conductor/<project>` from a project id) by whoever asks with [`ensure_child`], without knowing the
//! child's actor type.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};

use crate::introspect::{self, EventKind};

/// How long a start waits for the name of a dying previous incarnation to be released.
const NAME_RELEASE_WAIT: Duration = Duration::from_secs(1);

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;
type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;
/// Makes the spec of the child for a key (see [`ensure_child`]), or says why the key names no child.
pub type ChildTemplate = Arc<dyn Fn(&str) -> Result<ChildSpec, String> + Send + Sync>;
/// Waits until the children that just started are ready for work (see [`SupervisorArgs::ready_when`]).
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

/// At most `max_restarts` restarts within `period`, else the supervisor itself fails.
#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    pub max_restarts: usize,
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity { max_restarts: 10, period: Duration::from_secs(10) }
    }
}

/// The delay before the n-th consecutive restart of a child: none for the first, then `base` doubling up to
/// `max`. A child that ran for longer than `max` without failing counts as healthy again.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(10), max: Duration::from_secs(2) }
    }
}

impl Backoff {
    pub fn delay(&self, consecutive: u32) -> Duration {
        match consecutive {
            0 | 1 => Duration::ZERO,
            n => self.base.saturating_mul(1 << (n - 2).min(16)).min(self.max),
        }
    }
}

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    /// The actor type's name, for the console.
    pub kind: &'static str,
    start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec").field("name", &self.name).finish()
    }
}

impl ChildSpec {
    /// `make` gives the actor and its arguments afresh for every start; `name` is the registered name. Every
    /// child is a long-lived worker: whenever it ends, except when its supervisor stops it, it is started again.
    pub fn new<A, F>(name: impl Into<String>, make: F) -> ChildSpec
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let name = name.into();
        let registered = name.clone();
        let start: StartFn = Arc::new(move |supervisor: ActorCell| {
            let (actor, args) = make();
            let name = registered.clone();
            Box::pin(async move {
                let (actor_ref, _) = A::spawn_linked(Some(name), actor, args, supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        });
        let kind = std::any::type_name::<A>().rsplit("::").next().unwrap_or("actor");
        ChildSpec { name, kind, start }
    }
}

pub struct SupervisorArgs {
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    pub children: Vec<ChildSpec>,
    /// How to make a child on demand from a key; `None` for a supervisor of fixed children.
    pub template: Option<ChildTemplate>,
    /// Awaited once all children started, at every start of the supervisor.
    pub ready: Option<ReadyCheck>,
}

impl SupervisorArgs {
    pub fn one_for_one(children: Vec<ChildSpec>) -> Self {
        SupervisorArgs {
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children,
            template: None,
            ready: None,
        }
    }

    /// Children are also made on demand, from a key, by `template`.
    pub fn with_template(self, template: ChildTemplate) -> Self {
        SupervisorArgs { template: Some(template), ..self }
    }

    /// The supervisor's start ends only once `ready` has, after every child started: what its parent starts
    /// after it waits until the children are ready for work, not merely started (the compute agents'
    /// supervisor waits for the hosts' first reports). `ready` bounds its own wait.
    pub fn ready_when(self, ready: ReadyCheck) -> Self {
        SupervisorArgs { ready: Some(ready), ..self }
    }
}

/// What a supervisor knows about one child, for the console.
#[derive(Clone, Debug)]
pub struct ChildReport {
    pub name: String,
    /// The actor type, e.g. `Scheduler`.
    pub kind: String,
    /// The running incarnation, if any.
    pub cell: Option<ActorCell>,
    pub restarts: u32,
    /// The last abnormal end, and when (seconds since the Unix epoch).
    pub last_error: Option<(u64, String)>,
    /// How long the running incarnation has been up.
    pub uptime: Duration,
}

pub enum SupervisorMsg {
    /// Makes sure the child the template makes for this key runs: started if it does not exist, left alone
    /// (and `Ok`) if it does.
    Ensure(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Lists the children.
    Children(RpcReplyPort<Vec<ChildReport>>),
    /// Internal: (re)start the named children, in this order, after a backoff.
    Restart(Vec<String>),
}

impl ractor::Message for SupervisorMsg {}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    restarts: u32,
    consecutive: u32,
    started_at: Instant,
    last_error: Option<(u64, String)>,
}

pub struct SupervisorState {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    children: Vec<Child>,
    template: Option<ChildTemplate>,
    restart_log: VecDeque<Instant>,
}

/// The supervisor actor. Name it after what it supervises (`cloud`, `projects`, `project/<id>`).
pub struct Supervisor;

#[derive(Clone, Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("child {child} could not start: {reason}")]
    ChildStart { child: String, reason: String },
    #[error("more than {max} restarts within {period:?}; giving up and escalating")]
    IntensityExceeded { max: usize, period: Duration },
    #[error("{supervisor} makes no children on demand")]
    NoTemplate { supervisor: String },
    #[error("{key:?} names no child: {reason}")]
    BadKey { key: String, reason: String },
}

/// Why [`ensure_child`] could not make sure a child runs.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("the supervisor {0} is not running")]
    NoSupervisor(String),
    #[error("the supervisor did not answer")]
    NoAnswer(#[source] crate::rpc::CallError),
    #[error("the supervisor could not start the child")]
    Refused(#[source] SupervisorError),
}

impl SupervisorState {
    fn index_of_cell(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children.iter().position(|c| c.cell.as_ref().is_some_and(|own| own.get_id() == id))
    }

    async fn start_child(&mut self, index: usize, me: &ActorCell) -> Result<(), SupervisorError> {
        let child = &mut self.children[index];
        // A previous incarnation killed with its own supervisor may still hold the name for a moment while
        // ractor tears it down; wait for the name rather than fail the start.
        let deadline = Instant::now() + NAME_RELEASE_WAIT;
        loop {
            match (child.spec.start)(me.clone()).await {
                Ok(cell) => {
                    child.cell = Some(cell);
                    child.started_at = Instant::now();
                    return Ok(());
                }
                Err(SpawnErr::ActorAlreadyRegistered(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => {
                    return Err(SupervisorError::ChildStart { child: child.spec.name.clone(), reason: e.to_string() });
                }
            }
        }
    }

    /// Stops a running child and waits until it is gone (its name is free again).
    async fn stop_child(&mut self, index: usize) {
        if let Some(cell) = self.children[index].cell.take() {
            introspect::forget(&cell);
            let _ = cell.stop_and_wait(Some("supervisor restart strategy".into()), Some(Duration::from_secs(5))).await;
        }
    }

    /// Records a restart of `child`; when the intensity is exceeded, records the escalation and answers `Err`
    /// (the supervisor then fails, and its parent applies its own strategy).
    fn note_restart(&mut self, supervisor: &str, child: &str) -> Result<(), SupervisorError> {
        let now = Instant::now();
        self.restart_log.push_back(now);
        while self.restart_log.front().is_some_and(|t| now.duration_since(*t) > self.intensity.period) {
            self.restart_log.pop_front();
        }
        if self.restart_log.len() > self.intensity.max_restarts {
            let e =
                SupervisorError::IntensityExceeded { max: self.intensity.max_restarts, period: self.intensity.period };
            tracing::error!(supervisor, child, cause = %e, "escalating");
            introspect::record(EventKind::Escalated, supervisor, child, e.to_string());
            return Err(e);
        }
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            strategy: args.strategy,
            intensity: args.intensity,
            backoff: args.backoff,
            children: Vec::new(),
            template: args.template,
            restart_log: VecDeque::new(),
        };
        for spec in args.children {
            state.children.push(Child {
                spec,
                cell: None,
                restarts: 0,
                consecutive: 0,
                started_at: Instant::now(),
                last_error: None,
            });
            let index = state.children.len() - 1;
            if let Err(e) = state.start_child(index, &myself.get_cell()).await {
                // Do not leave the children that did start behind.
                for i in (0..index).rev() {
                    state.stop_child(i).await;
                }
                return Err(e.into());
            }
        }
        if let Some(ready) = args.ready {
            ready().await;
        }
        Ok(state)
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        // Graceful teardown, last started first; without this ractor would kill the children outright.
        for i in (0..state.children.len()).rev() {
            state.stop_child(i).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            SupervisorMsg::Ensure(key, reply) => {
                let Some(template) = &state.template else {
                    let _ = reply.send(Err(SupervisorError::NoTemplate { supervisor: crate::rpc::describe(&myself) }));
                    return Ok(());
                };
                let spec = match template(&key) {
                    Ok(spec) => spec,
                    Err(reason) => {
                        let _ = reply.send(Err(SupervisorError::BadKey { key, reason }));
                        return Ok(());
                    }
                };
                if state.children.iter().any(|c| c.spec.name == spec.name) {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                state.children.push(Child {
                    spec,
                    cell: None,
                    restarts: 0,
                    consecutive: 0,
                    started_at: Instant::now(),
                    last_error: None,
                });
                let index = state.children.len() - 1;
                let outcome = state.start_child(index, &myself.get_cell()).await;
                if outcome.is_err() {
                    state.children.pop();
                }
                let _ = reply.send(outcome);
            }
            SupervisorMsg::Children(reply) => {
                let report = state
                    .children
                    .iter()
                    .map(|c| ChildReport {
                        name: c.spec.name.clone(),
                        kind: c.spec.kind.to_string(),
                        cell: c.cell.clone(),
                        restarts: c.restarts,
                        last_error: c.last_error.clone(),
                        uptime: c.started_at.elapsed(),
                    })
                    .collect();
                let _ = reply.send(report);
            }
            SupervisorMsg::Restart(names) => {
                for name in names {
                    let Some(index) = state.children.iter().position(|c| c.spec.name == name) else {
                        continue;
                    };
                    if state.children[index].cell.is_some() {
                        continue;
                    }
                    let outcome = state.start_child(index, &myself.get_cell()).await;
                    if outcome.is_ok() {
                        introspect::record(EventKind::Restarted, &crate::rpc::describe(&myself), &name, String::new());
                    }
                    if let Err(e) = outcome {
                        tracing::warn!(supervisor = ?myself.get_name(), child = %name, cause = %e, "restart failed; retrying");
                        state.note_restart(&crate::rpc::describe(&myself), &name)?;
                        let child = &mut state.children[index];
                        child.consecutive += 1;
                        let delay = state.backoff.delay(child.consecutive).max(state.backoff.base);
                        myself.send_after(delay, move || SupervisorMsg::Restart(vec![name]));
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // ractor reports a kill as a termination with reason "killed"; a kill is not a clean stop.
                let abnormal = reason.filter(|r| r.contains("kill"));
                (cell, abnormal)
            }
            _ => return Ok(()),
        };
        // Ends of children we replaced or stopped ourselves refer to old cells and are not found.
        let Some(index) = state.index_of_cell(&cell) else {
            return Ok(());
        };
        introspect::forget(&cell);
        let child = &mut state.children[index];
        child.cell = None;
        let name = child.spec.name.clone();
        if let Some(reason) = &failure {
            introspect::record(EventKind::Failed, &crate::rpc::describe(&myself), &name, reason.clone());
            child.last_error = Some((introspect::now_ms() / 1000, reason.clone()));
            tracing::warn!(supervisor = ?myself.get_name(), child = %name, cause = %reason, "child ended abnormally");
        }
        state.note_restart(&crate::rpc::describe(&myself), &name)?;
        introspect::count_restart(&name);
        let child = &mut state.children[index];
        child.restarts += 1;
        child.consecutive = if child.started_at.elapsed() > state.backoff.max { 1 } else { child.consecutive + 1 };
        let delay = state.backoff.delay(child.consecutive);
        let to_restart: Vec<usize> = match state.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..state.children.len()).collect(),
            Strategy::RestForOne => (index..state.children.len()).collect(),
        };
        // Stop the others in reverse start order before anything restarts.
        for &i in to_restart.iter().rev() {
            if i != index {
                state.stop_child(i).await;
            }
        }
        let names: Vec<String> = to_restart.iter().map(|&i| state.children[i].spec.name.clone()).collect();
        if delay.is_zero() {
            myself.send_message(SupervisorMsg::Restart(names))?;
        } else {
            myself.send_after(delay, move || SupervisorMsg::Restart(names));
        }
        Ok(())
    }
}

/// Makes sure the child the supervisor's template makes for `key` runs (see [`SupervisorMsg::Ensure`]).
pub async fn ensure_child(
    supervisor: &ActorRef<SupervisorMsg>,
    key: &str,
    timeout: Duration,
) -> Result<(), EnsureError> {
    let key = key.to_string();
    crate::rpc::call(supervisor, |reply| SupervisorMsg::Ensure(key, reply), timeout)
        .await
        .map_err(EnsureError::NoAnswer)?
        .map_err(EnsureError::Refused)
}

/// [`ensure_child`] of the supervisor registered under `name` in this process (ractor's registry holds local
/// actors only).
pub async fn ensure_child_of(name: &str, key: &str, timeout: Duration) -> Result<(), EnsureError> {
    let supervisor = ractor::registry::where_is(name)
        .filter(|c| c.is_message_type_of::<SupervisorMsg>() == Some(true))
        .map(ActorRef::from)
        .ok_or_else(|| EnsureError::NoSupervisor(name.to_string()))?;
    ensure_child(&supervisor, key, timeout).await
}

/// Lists a supervisor's children, for the console and the tests.
pub async fn children(
    supervisor: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<Vec<ChildReport>, crate::rpc::CallError> {
    crate::rpc::call(supervisor, SupervisorMsg::Children, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counter;
    impl Actor for Counter {
        type Msg = ();
        type State = ();
        type Arguments = Arc<AtomicU32>;
        async fn pre_start(&self, _me: ActorRef<()>, starts: Arc<AtomicU32>) -> Result<(), ActorProcessingErr> {
            starts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn counter(name: &str, starts: &Arc<AtomicU32>) -> ChildSpec {
        let starts = starts.clone();
        ChildSpec::new(name, move || (Counter, starts.clone()))
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn kill(name: &str) {
        let cell = ractor::registry::where_is(name).expect("child is registered");
        cell.kill();
    }

    #[tokio::test]
    async fn one_for_one_restarts_only_the_killed_child() {
        let (a, b) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let args = SupervisorArgs::one_for_one(vec![counter("t1/a", &a), counter("t1/b", &b)]);
        let (sup, handle) = Actor::spawn(Some("t1/sup".into()), Supervisor, args).await.unwrap();
        kill("t1/a").await;
        wait_for("a restarted", || a.load(Ordering::SeqCst) == 2).await;
        wait_for("a registered", || ractor::registry::where_is("t1/a").is_some()).await;
        assert_eq!(b.load(Ordering::SeqCst), 1);
        let report = children(&sup, Duration::from_secs(1)).await.unwrap();
        assert_eq!(report[0].restarts, 1);
        assert!(report[0].last_error.is_some());
        sup.stop(None);
        handle.await.unwrap();
        assert!(ractor::registry::where_is("t1/a").is_none(), "children stop with their supervisor");
    }

    #[tokio::test]
    async fn one_for_all_and_rest_for_one_restart_their_groups() {
        for (strategy, tag, expect) in [(Strategy::OneForAll, "t2", [2, 2, 2]), (Strategy::RestForOne, "t3", [1, 2, 2])]
        {
            let counts: Vec<_> = (0..3).map(|_| Arc::new(AtomicU32::new(0))).collect();
            let names: Vec<String> = (0..3).map(|i| format!("{tag}/c{i}")).collect();
            let args = SupervisorArgs {
                strategy,
                intensity: Intensity::default(),
                backoff: Backoff::default(),
                children: names.iter().zip(&counts).map(|(n, c)| counter(n, c)).collect(),
                template: None,
                ready: None,
            };
            let (sup, handle) = Actor::spawn(Some(format!("{tag}/sup")), Supervisor, args).await.unwrap();
            kill(&names[1]).await;
            wait_for("restarts", || counts.iter().zip(expect).all(|(c, e)| c.load(Ordering::SeqCst) == e)).await;
            sup.stop(None);
            handle.await.unwrap();
        }
    }

    #[tokio::test]
    async fn too_many_restarts_escalate() {
        let starts = Arc::new(AtomicU32::new(0));
        let args = SupervisorArgs {
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 2, period: Duration::from_secs(60) },
            backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(5) },
            children: vec![counter("t4/flappy", &starts)],
            template: None,
            ready: None,
        };
        let (sup, handle) = Actor::spawn(Some("t4/sup".into()), Supervisor, args).await.unwrap();
        for n in 2..=3 {
            kill("t4/flappy").await;
            wait_for("restart", || starts.load(Ordering::SeqCst) == n).await;
            wait_for("registered", || ractor::registry::where_is("t4/flappy").is_some()).await;
        }
        kill("t4/flappy").await;
        tokio::time::timeout(Duration::from_secs(5), handle).await.expect("supervisor gave up").unwrap();
        assert_eq!(sup.get_status(), ractor::ActorStatus::Stopped);
    }

    #[tokio::test]
    async fn what_starts_after_a_supervisor_waits_until_it_is_ready() {
        let (inner, after) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (seen, open) = (inner.clone(), gate.clone());
        let gated = ChildSpec::new("t6/gated", move || {
            let open = open.clone();
            let ready: ReadyCheck = Arc::new(move || {
                let open = open.clone();
                Box::pin(async move {
                    open.acquire().await.expect("gate").forget();
                })
            });
            (Supervisor, SupervisorArgs::one_for_one(vec![counter("t6/worker", &seen)]).ready_when(ready))
        });
        let args = SupervisorArgs::one_for_one(vec![gated, counter("t6/after", &after)]);
        let root = tokio::spawn(Actor::spawn(Some("t6/root".into()), Supervisor, args));
        wait_for("the gated supervisor's child started", || inner.load(Ordering::SeqCst) == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(after.load(Ordering::SeqCst), 0, "nothing after the supervisor starts before it is ready");
        gate.add_permits(1);
        let (sup, handle) = root.await.unwrap().unwrap();
        assert_eq!(after.load(Ordering::SeqCst), 1);
        sup.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_template_makes_each_keyed_child_once() {
        let starts = Arc::new(AtomicU32::new(0));
        let made = starts.clone();
        let template: ChildTemplate = Arc::new(move |key: &str| match key {
            "bad" => Err("not a key".into()),
            _ => Ok(counter(&format!("t5/child-{key}"), &made)),
        });
        let args = SupervisorArgs::one_for_one(Vec::new()).with_template(template);
        let (sup, handle) = Actor::spawn(Some("t5/sup".into()), Supervisor, args).await.unwrap();
        for _ in 0..2 {
            ensure_child_of("t5/sup", "a", Duration::from_secs(1)).await.unwrap();
        }
        ensure_child(&sup, "b", Duration::from_secs(1)).await.unwrap();
        let bad = ensure_child(&sup, "bad", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(bad, EnsureError::Refused(SupervisorError::BadKey { .. })), "{bad}");
        assert_eq!(starts.load(Ordering::SeqCst), 2, "a once, b once");
        assert!(ractor::registry::where_is("t5/child-a").is_some());
        kill("t5/child-a").await;
        wait_for("the keyed child restarted", || starts.load(Ordering::SeqCst) == 3).await;
        let plain = SupervisorArgs::one_for_one(Vec::new());
        let (other, other_handle) = Actor::spawn(Some("t5/plain".into()), Supervisor, plain).await.unwrap();
        let refused = ensure_child(&other, "a", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(refused, EnsureError::Refused(SupervisorError::NoTemplate { .. })), "{refused}");
        let nobody = ensure_child_of("t5/nobody", "a", Duration::from_secs(1)).await;
        assert!(matches!(nobody, Err(EnsureError::NoSupervisor(_))));
        for (s, h) in [(sup, handle), (other, other_handle)] {
            s.stop(None);
            h.await.unwrap();
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff { base: Duration::from_millis(10), max: Duration::from_millis(50) };
        let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 50, 50]);
    }
}
