//! The conductor: one per project (`conductor/<project>`, topic `conductor.<project>`), made on demand by the
//! `projects` supervisor. It drives the project's logged operations (the `operations` table is the saga log):
//! every instance with a logged build or delete gets its saga run ([`saga::drive`]) on a task of its own, so
//! many operations of one project are in flight at once and the conductor's mailbox never waits on a step.
//! A kick tells it about a new operation; a periodic sweep finds those it was not told about, and a saga that
//! stopped on a store failure is run again after a pause.
//!
//! # Layout
//! - [`steps`]: the pure decisions (which step an operation is at, retry pacing, faults);
//!   [`saga`]: running the steps, with the effects behind a trait for the tests.

pub mod saga;
pub mod steps;

use std::collections::{HashMap, HashSet};

use nimbus_protocol::conductor::{self, ConductorMsg};
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::{InstanceId, ProjectId};
use nimbus_protocol::trace::Traced;
use nimbus_runtime::{Wire, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::{App, builds};
use saga::CloudEffects;

pub struct ConductorArgs {
    pub app: App,
    pub project: ProjectId,
}

/// A saga running on its own task; aborted if the conductor goes away (the restarted conductor resumes it
/// from the store, as after a crash).
struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct ConductorState {
    app: App,
    project: ProjectId,
    name: String,
    effects: std::sync::Arc<CloudEffects>,
    running: HashMap<InstanceId, Running>,
    /// Instances kicked while their saga was running: it may have read the store before the news.
    kicked_while_running: HashSet<InstanceId>,
}

pub struct Conductor;

impl Actor for Conductor {
    type Msg = ConductorMsg;
    type State = ConductorState;
    type Arguments = ConductorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConductorMsg>,
        args: ConductorArgs,
    ) -> Result<ConductorState, ActorProcessingErr> {
        args.app.ns().join(&conductor::topic(&args.project), myself.get_cell());
        myself.send_interval(args.app.timing().sweep_interval, || ConductorMsg::Sweep);
        // Resume whatever the log holds.
        myself.send_message(ConductorMsg::Sweep)?;
        Ok(ConductorState {
            effects: std::sync::Arc::new(CloudEffects::new(args.app.clone())),
            app: args.app,
            project: args.project,
            name: myself.get_name().unwrap_or_default(),
            running: HashMap::new(),
            kicked_while_running: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConductorMsg>,
        msg: ConductorMsg,
        state: &mut ConductorState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            ConductorMsg::Kick(Wire(Traced { trace, body: id })) => {
                tracing::debug!(request_id = %trace, instance = %id, "kicked");
                state.run(&myself, id);
            }
            ConductorMsg::Finished(Wire(id)) => {
                state.running.remove(&id);
                if state.kicked_while_running.remove(&id) {
                    state.run(&myself, id);
                }
            }
            ConductorMsg::Sweep => {
                let pending = builds::pending(&state.app, state.project);
                if let Ok(pending) = &pending {
                    for id in pending {
                        state.run(&myself, *id);
                    }
                }
                introspect::reconciled(&state.name, "sweep", pending.map(drop).map_err(|e| chain(&e)));
            }
        }
        Ok(())
    }
}

impl ConductorState {
    /// Runs the instance's saga unless it runs already.
    fn run(&mut self, me: &ActorRef<ConductorMsg>, id: InstanceId) {
        if self.running.contains_key(&id) {
            self.kicked_while_running.insert(id);
            return;
        }
        let (effects, me, sweep) = (self.effects.clone(), me.clone(), self.app.timing().sweep_interval);
        let span = tracing::info_span!("conductor", actor = %self.name, project = %self.project);
        let task = tokio::spawn(
            async move {
                if let Err(e) = saga::drive(effects.as_ref(), id).await {
                    // The operation stays logged; run it again after a pause (or at the next sweep).
                    tracing::warn!(instance = %id, cause = %chain(&e), "saga stopped on a store failure; resuming later");
                    me.send_after(sweep.min(std::time::Duration::from_secs(1)), move || {
                        ConductorMsg::Kick(Wire(Traced { trace: Default::default(), body: id }))
                    });
                }
                // Fails only while the conductor stops; its successor resumes from the store.
                let _ = me.send_message(ConductorMsg::Finished(Wire(id)));
            }
            .instrument(span),
        );
        self.running.insert(id, Running(task));
    }
}
