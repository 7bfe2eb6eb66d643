//! The `projects` supervisor: a conductor per project (`conductor/<project>`), made on demand when the
//! project's first operation is logged (see `ConductorClient::kick`), and at every (re)start for each project
//! with logged operations in the store (the conductor resumes them).

use nimbus_protocol::conductor::PROJECTS;
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::ProjectId;
use nimbus_runtime::supervisor::ChildTemplate;
use nimbus_runtime::{ChildSpec, Supervisor, SupervisorArgs};

use crate::app::{App, projects};
use crate::conductor::{Conductor, ConductorArgs};

fn conductor_spec(app: &App, project: ProjectId) -> ChildSpec {
    let app = app.clone();
    let name = app.ns().actor_name(&format!("conductor/{project}"));
    ChildSpec::new(name, move || (Conductor, ConductorArgs { app: app.clone(), project }))
}

/// The spec of the `projects` supervisor.
pub fn projects_spec(app: &App) -> ChildSpec {
    let app = app.clone();
    ChildSpec::new(app.ns().actor_name(PROJECTS), move || {
        let active = projects::with_operations(&app).unwrap_or_else(|e| {
            tracing::error!(cause = %chain(&e), "cannot list projects with logged operations; their conductors start on demand");
            Default::default()
        });
        let children = active.into_iter().map(|p| conductor_spec(&app, p)).collect();
        let on_demand = app.clone();
        let template: ChildTemplate = std::sync::Arc::new(move |key: &str| {
            let project = key.parse().map_err(|_| "conductors are made for project ids".to_string())?;
            Ok(conductor_spec(&on_demand, project))
        });
        (Supervisor, SupervisorArgs::one_for_one(children).with_template(template))
    })
}
