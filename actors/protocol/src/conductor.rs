//! The conductors' protocol: one conductor per project (`conductor/<project>`, topic `conductor.<project>`),
//! made on demand by the `projects` supervisor, drives the project's logged operations.

use std::time::Duration;

use nimbus_runtime::{CallError, Namespace, Topic, Wire, rpc, supervisor};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::ids::{InstanceId, ProjectId};
use crate::trace::{Trace, Traced};

pub const ROLE: &str = "conductor";
/// The registered name of the supervisor of the conductors, which makes them on demand.
pub const PROJECTS: &str = "projects";

pub fn topic(project: &ProjectId) -> Topic {
    Topic::keyed(ROLE, project)
}

#[derive(RactorClusterMessage)]
pub enum ConductorMsg {
    /// An operation on this instance was logged or may need attention.
    Kick(Wire<Traced<InstanceId>>),
    /// The instance's saga ended its run: it finished, or it waits to be resumed.
    Finished(Wire<InstanceId>),
    /// Timer: look for logged operations that nothing is working on.
    Sweep,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConductorError {
    #[error("the conductor of project {project} could not be started")]
    NotStarted {
        project: ProjectId,
        #[source]
        source: Failure,
    },
    #[error("the conductor of project {project} is not reachable")]
    Unreachable {
        project: ProjectId,
        #[source]
        source: CallError,
    },
}

/// Tells one project's conductor about its operations, starting the conductor first if it does not run.
#[derive(Clone, Debug)]
pub struct ConductorClient {
    ns: Namespace,
    project: ProjectId,
    timeout: Duration,
}

impl ConductorClient {
    pub fn new(ns: &Namespace, project: ProjectId, timeout: Duration) -> ConductorClient {
        ConductorClient { ns: ns.clone(), project, timeout }
    }

    /// Tells the conductor that an operation on `instance` was logged (one-way: the operation is in the
    /// store, so a lost notice only waits for the conductor's sweep).
    pub async fn kick(&self, trace: &Trace, instance: InstanceId) -> Result<(), ConductorError> {
        let project = self.project;
        if self.ns.members(&topic(&project)).is_empty() {
            supervisor::ensure_child_of(&self.ns.actor_name(PROJECTS), &project.to_string(), self.timeout)
                .await
                .map_err(|e| ConductorError::NotStarted { project, source: Failure::of(&e) })?;
        }
        rpc::cast_topic(&self.ns, &topic(&project), ConductorMsg::Kick(Wire(Traced::new(trace, instance))))
            .map_err(|source| ConductorError::Unreachable { project, source })
    }
}
