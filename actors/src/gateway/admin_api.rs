//! The admin API for the debug console (admin role): the live actor tree (with each actor's reconcilers),
//! recent supervision events, stopping or killing an actor by name, and the cluster's nodes and hosts. Names
//! are the cloud's own (`scheduler`, `compute/host-0003`).

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_runtime::SupervisorMsg;
use nimbus_runtime::introspect;
use nimbus_runtime::tree::{self, ActorInfo};
use nimbus_storage::records::{Role, now_ms};
use ractor::ActorRef;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, iso8601};
use crate::app::error::CloudError;
use crate::app::hosts;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/admin/actors", get(list_actors))
        .route("/admin/actors/kill", post(kill_actor))
        .route("/admin/actors/stop", post(stop_actor))
        .route("/admin/events", get(list_events))
        .route("/admin/cluster", get(cluster_status))
}

fn admin(auth: &Auth) -> Result<(), ApiError> {
    auth.require(Role::Admin, "nimbus:admin:actors").map_err(ApiError::compute)
}

/// Strips the namespace prefix so the API shows the cloud's own names.
fn local_names(info: &mut ActorInfo, prefix: &str) {
    info.name = strip(&info.name, prefix);
    info.supervisor = info.supervisor.as_deref().map(|s| strip(s, prefix));
    for child in &mut info.children {
        local_names(child, prefix);
    }
}

fn strip(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_string()
}

fn prefix(s: &AppState) -> String {
    s.ns().actor_name("")
}

async fn list_actors(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin(&auth)?;
    let mut tree = tree::tree(&root(&s)?, Duration::from_secs(2)).await;
    local_names(&mut tree, &prefix(&s));
    #[derive(Serialize)]
    struct Body {
        source: &'static str,
        node: &'static str,
        mailbox_depth: &'static str,
        tree: ActorInfo,
    }
    let body = Body {
        source: "live actors of this node",
        node: "local",
        mailbox_depth: "not reported (ractor does not expose it)",
        tree,
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct Target {
    name: String,
}

/// The actor a kill or stop names. Only actors a supervisor restarts may be ended this way: the supervision
/// root (ending it ends nimbus), actors outside the tree (the cluster listener) and the store (not an actor,
/// but the state every actor reads) are refused with the reason.
async fn find(s: &AppState, body: &[u8]) -> Result<(String, ractor::ActorCell), ApiError> {
    let target: Target = parse_json(body).map_err(ApiError::compute)?;
    let refuse = |why: String| Err(ApiError::compute(CloudError::Conflict(why)));
    if target.name == "store" {
        return refuse(
            "The store is not an actor: it is the cloud's state, written by one thread every actor depends on; \
             it ends only with nimbus."
                .into(),
        );
    }
    let full_name = s.ns().actor_name(&target.name);
    let cell = ractor::registry::where_is(full_name.clone()).ok_or_else(|| {
        ApiError::compute(CloudError::NotFound(format!("No actor named {} is running.", target.name)))
    })?;
    let root = root(s)?;
    if cell.get_id() == root.get_id() {
        return refuse(format!(
            "{} is the supervision root: nothing would restart it, and ending it ends nimbus. Stop the process \
             instead (SIGTERM).",
            target.name
        ));
    }
    if !supervised(&tree::tree(&root, Duration::from_secs(2)).await, &full_name) {
        return refuse(format!("{} has no supervisor to restart it, so it cannot be ended here.", target.name));
    }
    Ok((target.name, cell))
}

/// Whether `name` is below `info` in the supervision tree.
fn supervised(info: &ActorInfo, name: &str) -> bool {
    info.children.iter().any(|child| child.name == name || supervised(child, name))
}

fn root(s: &AppState) -> Result<ActorRef<SupervisorMsg>, ApiError> {
    ractor::registry::where_is(s.ns().actor_name("cloud"))
        .map(ActorRef::from)
        .ok_or_else(|| ApiError::compute(CloudError::Internal("the root supervisor is not running".into())))
}

async fn kill_actor(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin(&auth)?;
    let (name, cell) = find(&s, &body).await?;
    tracing::warn!(actor = %name, "killed through the admin API");
    cell.kill();
    #[derive(Serialize)]
    struct Body {
        killed: String,
    }
    Ok((StatusCode::ACCEPTED, Json(Body { killed: name })).into_response())
}

async fn stop_actor(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin(&auth)?;
    let (name, cell) = find(&s, &body).await?;
    tracing::warn!(actor = %name, "stopped through the admin API");
    cell.stop(Some("stopped through the admin API".into()));
    #[derive(Serialize)]
    struct Body {
        stopped: String,
    }
    Ok((StatusCode::ACCEPTED, Json(Body { stopped: name })).into_response())
}

async fn list_events(State(s): State<AppState>, auth: Auth, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    admin(&auth)?;
    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let prefix = prefix(&s);
    let mut events = introspect::events_after(after, &prefix);
    for e in &mut events {
        e.child = strip(&e.child, &prefix);
        e.supervisor = strip(&e.supervisor, &prefix);
    }
    #[derive(Serialize)]
    struct Body {
        events: Vec<introspect::ActorEvent>,
    }
    Ok(Json(Body { events }).into_response())
}

/// The cluster as the hosts reported themselves: this node (which answers), and every compute host with the
/// node that runs its agent, its last report, whether it counts as up, and the instances placed on it.
async fn cluster_status(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin(&auth)?;
    let now = now_ms();
    let usage = hosts::usage(&s.app).map_err(ApiError::compute)?;
    #[derive(Serialize)]
    struct HostView {
        host: String,
        node: String,
        role: &'static str,
        address: Option<String>,
        last_report: String,
        seconds_since_report: u64,
        state: &'static str,
        enabled: bool,
        instances: usize,
    }
    #[derive(Serialize)]
    struct Controller {
        node: &'static str,
        role: &'static str,
        api: String,
        state: &'static str,
    }
    #[derive(Serialize)]
    struct Body {
        source: &'static str,
        controller: Controller,
        hosts: Vec<HostView>,
        warnings: Vec<String>,
    }
    let mut warnings = Vec::new();
    let views = usage
        .iter()
        .map(|u| {
            let (h, placed) = (&u.host, u.instances);
            let up = hosts::is_up(h, s.app.timing());
            if !up && placed > 0 {
                warnings.push(format!("{placed} instance(s) on {}, which is down: they may not be running", h.name));
            }
            HostView {
                host: h.name.0.clone(),
                node: h.node.clone(),
                role: "compute",
                address: h.node_address.clone(),
                last_report: iso8601(h.last_seen),
                seconds_since_report: now.saturating_sub(h.last_seen) / 1000,
                state: if up { "up" } else { "down" },
                enabled: h.enabled,
                instances: placed,
            }
        })
        .collect();
    let body = Body {
        source: "host reports, as of this node",
        controller: Controller { node: "this node", role: "controller", api: s.base_url.to_string(), state: "up" },
        hosts: views,
        warnings,
    };
    Ok(Json(body).into_response())
}
