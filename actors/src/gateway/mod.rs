//! The gateway: one HTTP listener serving the OpenStack-shaped APIs under path prefixes (`/identity/v3`,
//! `/compute/v2.1`, `/image/v2`, `/network/v2.0`) and the admin API (`/admin`), and optionally a second one
//! serving the Prometheus metrics (`/metrics`). For each request it names the request, authenticates the
//! token, authorizes the role, parses and validates the input, calls the application layer and renders its
//! answer as the API's JSON. The only module that knows HTTP and the OpenStack JSON shapes.
//!
//! The actor owns the server tasks: when the actor stops or is killed, the servers stop with it (the tasks are
//! aborted when the actor's state is dropped), and a restarted gateway serves again on the same sockets.
//!
//! # Layout
//! - [`server`]: the accept loop with its timeouts and connection cap; `auth`: the `Auth` extractor and role
//!   checks; [`errors`]: statuses and error bodies per service; `views`: the shapes several APIs share.
//! - `identity_api`, `compute_api`, `hypervisors_api` (os-hypervisors, os-services), `image_api`,
//!   `nova_network_api` (the nova-network era compute endpoints), `network_api` (Network v2.0), `admin_api`:
//!   the routes and typed views of each API.

mod admin_api;
mod auth;
mod compute_api;
mod errors;
mod hypervisors_api;
mod identity_api;
mod image_api;
mod key_pairs_api;
mod metadata_api;
mod microversion;
mod network_api;
mod nova_network_api;
mod security_groups_api;
pub mod server;
mod views;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use nimbus_protocol::failure::chain;
use nimbus_runtime::{Namespace, introspect};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::{self, App, identity};
use crate::metrics::Metrics;
pub use errors::{ApiError, Service};
use microversion::Microversion;
pub use server::{ClientAddr, ServerLimits};

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    /// `http://host:port`, the prefix of every URL the API hands out (catalog, links).
    pub base_url: Arc<str>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    fn ns(&self) -> &Namespace {
        self.app.ns()
    }
}

/// The id the gateway gives a request (`req-<uuid>`), in the request's extensions for the handlers.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub struct GatewayArgs {
    pub app: App,
    pub listener: Arc<TcpListener>,
    /// Where the Prometheus metrics are served, if anywhere.
    pub metrics_listener: Option<Arc<TcpListener>>,
    /// Where the metadata service is served (inside the network host's namespace), if anywhere.
    pub metadata_listener: Option<Arc<TcpListener>>,
    pub metrics: Arc<Metrics>,
    pub base_url: String,
    pub limits: ServerLimits,
}

pub enum GatewayMsg {
    /// Timer: drop expired tokens.
    PurgeTokens,
}

impl ractor::Message for GatewayMsg {}

/// A server task, stopped gracefully on a stop and aborted if the gateway goes away without one (a kill).
struct ServerTask {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl ServerTask {
    fn serve(listener: &TcpListener, app: Router, limits: &ServerLimits) -> Result<ServerTask, std::io::Error> {
        let listener = listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, app, limits.clone(), stopped));
        Ok(ServerTask { task, stop })
    }

    /// Stops every server at once. In-flight requests get five seconds in all to finish; long-polling
    /// clients do not hold the stop up.
    async fn stop_all(servers: &mut [ServerTask]) {
        for server in servers.iter() {
            let _ = server.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for server in servers {
            let _ = tokio::time::timeout_at(deadline, &mut server.task).await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct GatewayState {
    app: App,
    name: String,
    servers: Vec<ServerTask>,
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
        let state =
            AppState { app: args.app.clone(), base_url: Arc::from(args.base_url.as_str()), metrics: args.metrics };
        let mut servers = vec![ServerTask::serve(&args.listener, router(state.clone(), &args.limits), &args.limits)?];
        if let Some(listener) = &args.metrics_listener {
            let metrics = Router::new().route("/metrics", axum::routing::get(render_metrics)).with_state(state);
            servers.push(ServerTask::serve(listener, metrics, &args.limits)?);
        }
        if let Some(listener) = &args.metadata_listener {
            servers.push(ServerTask::serve(listener, metadata_api::router(args.app.clone()), &args.limits)?);
        }
        myself.send_interval(Duration::from_secs(600), || GatewayMsg::PurgeTokens);
        Ok(GatewayState { app: args.app, name: myself.get_name().unwrap_or_default(), servers })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GatewayMsg>,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        ServerTask::stop_all(&mut state.servers).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            GatewayMsg::PurgeTokens => {
                let purged = identity::purge_expired_tokens(&state.app).await;
                match &purged {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired tokens removed"),
                    Err(e) => tracing::warn!(cause = %chain(e), "purging expired tokens failed"),
                }
                introspect::reconciled(&state.name, "token purge", purged.map(drop).map_err(|e| chain(&e)));
            }
        }
        Ok(())
    }
}

/// The largest request body of the API (a server create with 64 KiB of user data fits), and of the one
/// route anyone may call without a token.
const MAX_BODY: usize = 256 * 1024;
const MAX_LOGIN_BODY: usize = 16 * 1024;

/// The whole HTTP API.
pub fn router(state: AppState, limits: &ServerLimits) -> Router {
    Router::new()
        .merge(identity_api::routes(MAX_LOGIN_BODY))
        .merge(compute_api::routes())
        .merge(hypervisors_api::routes())
        .merge(key_pairs_api::routes())
        .merge(image_api::routes())
        .merge(nova_network_api::routes())
        .merge(network_api::routes())
        .merge(security_groups_api::routes())
        .merge(admin_api::routes())
        .route_layer(middleware::from_fn(matched_route))
        .fallback(errors::not_found)
        .layer(middleware::from_fn_with_state(limits.body_timeout, whole_body_in_time))
        // Image data streams, with limits of its own.
        .merge(image_api::streaming_routes().route_layer(middleware::from_fn(matched_route)))
        // Inside the request-id layer, so the answer to a panicking handler gets its request id too.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(errors::panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), requests))
        .with_state(state)
}

/// Reads the whole request body before the handler runs, within one deadline for all of it: a client that
/// sends a byte now and then cannot keep a request, and its connection, in flight. A body over the largest
/// limit is refused here as well (the routes' own, smaller limits apply to what is passed on).
async fn whole_body_in_time(State(deadline): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let error = match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => return next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => app::error::CloudError::PayloadTooLarge(format!(
            "The request body is larger than {} KiB, or could not be read.",
            MAX_BODY / 1024
        )),
        Err(_) => app::error::CloudError::RequestTimeout(format!(
            "The request body did not arrive within {} s.",
            deadline.as_secs()
        )),
    };
    ApiError { service: Service::of_path(parts.uri.path()), error }.into_response()
}

/// Tells the outer layer which route the request matched (in the response's extensions, for the metrics).
async fn matched_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Names every request (a request id, in the response headers and in a span every log line of the request
/// carries), logs and measures its answer, and adds the compute API's microversion headers.
async fn requests(State(s): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    request.extensions_mut().insert(RequestId(id.clone()));
    let compute = path.starts_with("/compute");
    let started = Instant::now();
    let wanted = if compute { Microversion::requested(request.headers()) } else { Ok(Microversion::MIN) };
    let version = *wanted.as_ref().unwrap_or(&Microversion::MIN);
    let mut response = match wanted {
        Err(e) => ApiError::compute(e).into_response(),
        Ok(version) if version.removed(&path) => ApiError::compute(app::error::CloudError::NotFound(format!(
            "{path} is a proxy to another service, gone from compute microversion 2.36 on (this request is at \
             {version}); use that service's API."
        )))
        .into_response(),
        Ok(version) => {
            request.extensions_mut().insert(version);
            next.run(request).instrument(span.clone()).await
        }
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = response.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    s.metrics.observe_request(method.as_str(), route, status, elapsed);
    span.in_scope(|| tracing::info!(status, ms = elapsed.as_secs_f64() * 1e3, "answered"));
    let headers = response.headers_mut();
    let id = HeaderValue::from_str(&id).expect("request ids are ASCII");
    headers.insert(HeaderName::from_static("x-openstack-request-id"), id.clone());
    if compute {
        headers.insert(HeaderName::from_static("x-compute-request-id"), id);
        let compute_version = HeaderValue::from_str(&format!("compute {version}")).expect("a version is ASCII");
        headers.insert(HeaderName::from_static("openstack-api-version"), compute_version);
        let version = HeaderValue::from_str(&version.to_string()).expect("a version is ASCII");
        headers.insert(HeaderName::from_static("x-openstack-nova-api-version"), version);
        headers.insert(
            axum::http::header::VARY,
            HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
        );
    }
    response
}

/// `GET /metrics` on the metrics listener: the Prometheus text exposition.
async fn render_metrics(State(s): State<AppState>) -> Response {
    let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    match s.metrics.render() {
        Ok(text) => (content_type, text).into_response(),
        Err(e) => {
            tracing::error!(cause = %chain(&e), "rendering the metrics failed");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", chain(&e))).into_response()
        }
    }
}

/// Formats Unix milliseconds the way the OpenStack APIs show times.
pub(crate) fn iso8601(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
