//! The admin API for the debug console (admin role): the live actor tree, recent supervision events,
//! stopping or killing an actor by name, and the cluster's nodes and hosts. Names are the cloud's own (`scheduler`, `compute/host-0003`).

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nimbus_runtime::SupervisorMsg;
use nimbus_runtime::introspect::{self, ActorInfo};
use nimbus_storage::records::{Role, now_ms};
use ractor::ActorRef;
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::errors::parse_json;
use super::{ApiError, AppState, iso8601};
use crate::{CloudError, scheduler};

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
    s.ctx.ns.actor_name("")
}

async fn list_actors(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin(&auth)?;
    let root_name = s.ctx.ns.actor_name("cloud");
    let root: ActorRef<SupervisorMsg> = ractor::registry::where_is(root_name)
        .map(ActorRef::from)
        .ok_or_else(|| ApiError::compute(CloudError::Internal("the root supervisor is not running".into())))?;
    let mut tree = introspect::tree(&root, Duration::from_secs(2)).await;
    local_names(&mut tree, &prefix(&s));
    Ok(Json(json!({
        "source": "live actors of this node",
        "node": "local",
        "mailbox_depth": "not reported (ractor does not expose it)",
        "tree": tree,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct Target {
    name: String,
}

fn find(s: &AppState, body: &[u8]) -> Result<(String, ractor::ActorCell), ApiError> {
    let target: Target = parse_json(body).map_err(ApiError::compute)?;
    let cell = ractor::registry::where_is(s.ctx.ns.actor_name(&target.name)).ok_or_else(|| {
        ApiError::compute(CloudError::NotFound(format!("No actor named {} is running.", target.name)))
    })?;
    Ok((target.name, cell))
}

async fn kill_actor(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin(&auth)?;
    let (name, cell) = find(&s, &body)?;
    tracing::warn!(actor = %name, "killed through the admin API");
    cell.kill();
    Ok((StatusCode::ACCEPTED, Json(json!({"killed": name}))).into_response())
}

async fn stop_actor(State(s): State<AppState>, auth: Auth, body: Bytes) -> ApiResult {
    admin(&auth)?;
    let (name, cell) = find(&s, &body)?;
    tracing::warn!(actor = %name, "stopped through the admin API");
    cell.stop(Some("stopped through the admin API".into()));
    Ok((StatusCode::ACCEPTED, Json(json!({"stopped": name}))).into_response())
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
    Ok(Json(json!({"events": events})).into_response())
}

/// The cluster as the store knows it: this node (which answers), and every compute host with the node that
/// runs its agent, its last report, whether it counts as up, and the instances placed on it.
async fn cluster_status(State(s): State<AppState>, auth: Auth) -> ApiResult {
    admin(&auth)?;
    let now = now_ms();
    let (hosts, _) = s.ctx.store.read(scheduler::host_usage).map_err(|e| ApiError::compute(e.into()))?;
    let mut warnings = Vec::new();
    let views: Vec<serde_json::Value> = hosts
        .iter()
        .map(|u| {
            let (h, placed) = (&u.host, u.instances);
            let up = scheduler::is_up(h, &s.ctx.timing);
            if !up && placed > 0 {
                warnings.push(format!("{placed} instance(s) on {}, which is down: they may not be running", h.name));
            }
            json!({
                "host": h.name.0, "node": h.node, "role": "compute", "address": h.node_address,
                "last_report": iso8601(h.last_seen), "seconds_since_report": now.saturating_sub(h.last_seen) / 1000,
                "state": if up { "up" } else { "down" }, "enabled": h.enabled, "instances": placed,
            })
        })
        .collect();
    Ok(Json(json!({
        "source": "host reports in the store, as of this node",
        "controller": {"node": "this node", "role": "controller", "api": s.base_url.as_ref(), "state": "up"},
        "hosts": views,
        "warnings": warnings,
    }))
    .into_response())
}
