//! The gateway: one HTTP listener serving the OpenStack-shaped APIs under path prefixes (`/identity/v3`,
//! `/compute/v2.1`, `/image/v2`, `/network/v2.0`) and the admin API (`/admin`). For each request it authenticates the token, authorizes the role,
//! validates the input, and then reads the store or persists the intent and hands the work to a worker.
//! The only module that knows HTTP and the OpenStack JSON shapes.
//!
//! The actor owns the server task: when the actor stops or is killed, the server stops with it (the task is
//! aborted when the actor's state is dropped), and a restarted gateway serves again on the same socket.

mod admin_api;
mod auth;
mod compute_api;
mod errors;
mod identity_api;
mod image_api;
mod network_api;
mod nova_network_api;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{CloudError, Ctx, identity, network};
pub use errors::{ApiError, Service};

/// The newest compute microversion nimbus implements (and so the only one it advertises).
pub const COMPUTE_MICROVERSION: &str = "2.1";

#[derive(Clone)]
pub struct AppState {
    pub ctx: Ctx,
    /// `http://host:port`, the prefix of every URL the API hands out (catalog, links).
    pub base_url: Arc<str>,
}

pub struct GatewayArgs {
    pub ctx: Ctx,
    pub listener: Arc<TcpListener>,
    pub base_url: String,
}

pub enum GatewayMsg {
    /// Timer: drop expired tokens from the store.
    PurgeTokens,
}

impl ractor::Message for GatewayMsg {}

/// Aborts the server task if the gateway goes away without a graceful stop (a kill).
struct ServerTask {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct GatewayState {
    ctx: Ctx,
    server: ServerTask,
}

pub struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        args: GatewayArgs,
    ) -> Result<GatewayState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let app = router(AppState { ctx: args.ctx.clone(), base_url: Arc::from(args.base_url.as_str()) });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(cause = %e, "HTTP server failed");
            }
        });
        myself.send_interval(Duration::from_secs(600), || GatewayMsg::PurgeTokens);
        Ok(GatewayState { ctx: args.ctx, server: ServerTask { task, stop: Some(stop) } })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GatewayMsg>,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.server.stop.take() {
            let _ = stop.send(());
            // In-flight requests get a moment to finish; long-polling clients do not hold the stop up.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut state.server.task).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        nimbus_runtime::introspect::handled(&myself.get_cell());
        match msg {
            GatewayMsg::PurgeTokens => match identity::purge_expired_tokens(&state.ctx.store).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired tokens removed"),
                Err(e) => tracing::warn!(cause = %e, "purging expired tokens failed"),
            },
        }
        Ok(())
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(identity_api::routes())
        .merge(compute_api::routes())
        .merge(image_api::routes())
        .merge(nova_network_api::routes())
        .merge(network_api::routes())
        .merge(admin_api::routes())
        .fallback(errors::not_found)
        // Outermost, so the answer to a panicking handler gets its request id too.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(errors::panic_response))
        .layer(middleware::from_fn(request_ids))
        .with_state(state)
}

/// Gives every response a request id (and the compute API's microversion headers).
async fn request_ids(request: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let compute = request.uri().path().starts_with("/compute");
    let wanted = compute.then(|| compute_api::requested_microversion(request.headers())).flatten();
    let mut response = match wanted {
        Some(Err(e)) => axum::response::IntoResponse::into_response(e),
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    let id = HeaderValue::from_str(&id).expect("request ids are ASCII");
    headers.insert(HeaderName::from_static("x-openstack-request-id"), id.clone());
    if compute {
        headers.insert(HeaderName::from_static("x-compute-request-id"), id);
        let version = HeaderValue::from_static(COMPUTE_MICROVERSION);
        headers.insert(HeaderName::from_static("openstack-api-version"), HeaderValue::from_static("compute 2.1"));
        headers.insert(HeaderName::from_static("x-openstack-nova-api-version"), version);
        headers.insert(
            axum::http::header::VARY,
            HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
        );
    }
    response
}

/// Calls the network manager; its errors become API errors, no answer is a 503.
pub(crate) async fn call_network<T: Send + 'static>(
    ctx: &Ctx,
    make: impl FnOnce(ractor::RpcReplyPort<network::Reply<T>>) -> network::NetworkMsg,
) -> Result<T, CloudError> {
    match nimbus_runtime::rpc::call_topic(&ctx.ns, &network::TOPIC, make, ctx.timing.call).await {
        Ok(nimbus_runtime::Wire(outcome)) => outcome.map_err(CloudError::from),
        Err(source) => Err(CloudError::Unavailable { what: "The network manager did not answer".into(), source }),
    }
}

/// Formats store milliseconds the way the OpenStack APIs show times.
pub(crate) fn iso8601(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
