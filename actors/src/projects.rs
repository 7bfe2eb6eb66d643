//! Per-project supervisors: `project/<id>` (holding the project's VLAN supervisor and conductor) under the `projects`
//! supervisor. A project's supervisor starts the first time the project has resources, and again after any
//! restart for every project that has instances, operations or networks of its own in the store.

use std::collections::BTreeSet;

use nimbus_runtime::supervisor::SupervisorMsg;
use nimbus_runtime::{CallError, ChildSpec, Supervisor, SupervisorArgs, Wire, rpc};
use nimbus_storage::ids::{InstanceId, ProjectId};
use nimbus_storage::schema::{INSTANCES, NETWORKS, OPERATIONS};
use nimbus_storage::{Reads, StoreError};
use ractor::ActorRef;

use crate::conductor::{self, Conductor, ConductorArgs, ConductorMsg};
use crate::network::vlan::{VlanArgs, VlanSupervisor};
use crate::{CloudError, Ctx};

/// The registered name of the supervisor of all project supervisors.
pub const PROJECTS: &str = "projects";

/// The spec of one project's supervisor and its children.
pub fn project_spec(ctx: &Ctx, project: ProjectId) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new(ctx.ns.actor_name(&format!("project/{project}")), move || {
        let conductor_ctx = ctx.clone();
        let conductor = ChildSpec::new(ctx.ns.actor_name(&format!("conductor/{project}")), move || {
            (Conductor, ConductorArgs { ctx: conductor_ctx.clone(), project })
        });
        let vlan_ctx = ctx.clone();
        let vlan = ChildSpec::new(ctx.ns.actor_name(&format!("vlan/{project}")), move || {
            (VlanSupervisor, VlanArgs { ctx: vlan_ctx.clone(), project })
        });
        (Supervisor, SupervisorArgs::one_for_one(vec![vlan, conductor]))
    })
}

/// The spec of the `projects` supervisor. Its children are computed at every (re)start from the store: the
/// projects that have instances, pending operations or networks of their own.
pub fn projects_spec(ctx: &Ctx) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::new(ctx.ns.actor_name(PROJECTS), move || {
        let active = projects_with_resources(&ctx).unwrap_or_else(|e| {
            tracing::error!(cause = %e, "cannot list projects with resources; their conductors start on demand");
            BTreeSet::new()
        });
        let children = active.into_iter().map(|p| project_spec(&ctx, p)).collect();
        (Supervisor, SupervisorArgs::one_for_one(children))
    })
}

fn projects_with_resources(ctx: &Ctx) -> Result<BTreeSet<ProjectId>, StoreError> {
    ctx.store.read(|r| {
        let mut projects: BTreeSet<ProjectId> = r.scan(&OPERATIONS)?.into_iter().map(|(_, op)| op.project).collect();
        projects.extend(r.scan(&INSTANCES)?.into_iter().map(|(_, i)| i.project));
        // A project with a network of its own has a segment (and a VPN endpoint) to keep up.
        projects.extend(r.scan(&NETWORKS)?.into_iter().filter_map(|(_, n)| n.project));
        Ok(projects)
    })
}

/// Starts the project's supervisor if it is not running.
pub async fn ensure(ctx: &Ctx, project: ProjectId) -> Result<(), CloudError> {
    if !ctx.ns.members(&conductor::topic(&project)).is_empty() {
        return Ok(());
    }
    let unavailable =
        |source: CallError| CloudError::Unavailable { what: "the project supervisor is not available".into(), source };
    let name = ctx.ns.actor_name(PROJECTS);
    let projects: ActorRef<SupervisorMsg> = ractor::registry::where_is(name.clone())
        .map(ActorRef::from)
        .ok_or_else(|| unavailable(CallError::Unreachable { target: name }))?;
    let spec = project_spec(ctx, project);
    rpc::call(&projects, |reply| SupervisorMsg::StartChild(spec, reply), ctx.timing.call)
        .await
        .map_err(unavailable)?
        .map_err(CloudError::Internal)
}

/// Tells the project's conductor, in the background, that an operation on `instance` was logged: the API
/// answers without waiting for the conductor (which may be restarting). If the notice is lost, the operation
/// is not: the conductor's sweep finds it in the store.
pub fn notify(ctx: &Ctx, project: ProjectId, instance: InstanceId) {
    let ctx = ctx.clone();
    tokio::spawn(async move { kick(&ctx, project, instance).await });
}

async fn kick(ctx: &Ctx, project: ProjectId, instance: InstanceId) {
    let delivered = match ensure(ctx, project).await {
        Ok(()) => rpc::cast_topic(&ctx.ns, &conductor::topic(&project), ConductorMsg::Kick(Wire(instance)))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(cause) = delivered {
        tracing::warn!(%project, %instance, %cause, "could not notify the conductor; its sweep will pick the operation up");
    }
}
