//! The HTTP server under the API: its own accept loop on hyper, so that no client can hold the API hostage.
//! Every connection has a deadline for its request head (hyper starts the same clock while a kept-alive
//! connection waits for its next request, so it is the idle timeout too), the router adds a deadline for the
//! body and per-route size limits, and the number of open connections is capped below the open-file limit.
//! At the cap the connection idle the longest is closed for the new one; only when every connection has a
//! request in flight is the newcomer answered 503 and closed. So a flood of idle or slow sockets costs an
//! attacker their sockets, not other clients their answers.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// The address a request came from, in the request's extensions (for the login throttle and the logs).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The address a request was made to (a listener on every address answers on several), in the request's
/// extensions.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

/// What the server allows each client.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// The most connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, and stay idle between requests.
    pub header_timeout: Duration,
    /// How long a request may take to send its whole body (one deadline, however it trickles in).
    pub body_timeout: Duration,
}

impl ServerLimits {
    /// Limits for this process: the connection cap leaves a quarter of the open-file limit (at least 64
    /// descriptors) to the store, the dataplane and the cluster.
    pub fn for_this_process() -> ServerLimits {
        let open_files = open_file_limit();
        let reserve = (open_files / 4).max(64);
        ServerLimits {
            max_connections: open_files.saturating_sub(reserve).max(16),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The soft limit on open files of this process.
fn open_file_limit() -> usize {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
}

/// Raises this process's soft limit on open files to its hard limit, so the connection cap can be high; the
/// binary calls it once at start. Returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// One open connection, as the cap sees it.
struct Connection {
    /// Requests being answered now.
    in_flight: usize,
    /// When its last request was answered (or it was opened).
    idle_since: Instant,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Connection>>,
    next: AtomicU64,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.open.lock().expect("the connection table is never poisoned")
    }

    /// Registers a new connection if there is room, making room by closing the connection idle the longest.
    /// `None`: every connection is answering a request.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Notify>)> {
        let mut open = self.lock();
        if open.len() >= max {
            let idlest =
                open.iter().filter(|(_, c)| c.in_flight == 0).min_by_key(|(_, c)| c.idle_since).map(|(id, _)| *id)?;
            let evicted = open.remove(&idlest).expect("the idlest connection is open");
            evicted.close.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        open.insert(id, Connection { in_flight: 0, idle_since: Instant::now(), close: close.clone() });
        Some((id, close))
    }

    fn started(&self, id: u64) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.in_flight += 1;
        }
    }

    fn answered(&self, id: u64) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.idle_since = Instant::now();
        }
    }

    fn closed(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Serves `app` on `listener` until `stop` turns true; then stops accepting, lets in-flight requests finish
/// and closes idle connections.
pub async fn serve(listener: TcpListener, app: Router, limits: ServerLimits, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Connections::default());
    let mut accept_errors_logged_at: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: say so (once a minute), wait a little and go on.
                if accept_errors_logged_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, open = connections.count(), "cannot accept connections");
                    accept_errors_logged_at = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, close)) = connections.admit(limits.max_connections) else {
            refuse_busy(stream);
            continue;
        };
        let shared =
            Shared { app: app.clone(), limits: limits.clone(), connections: connections.clone(), stop: stop.clone() };
        tokio::spawn(connection(stream, addr, id, close, shared));
    }
}

/// What every connection of one server shares.
struct Shared {
    app: Router,
    limits: ServerLimits,
    connections: Arc<Connections>,
    stop: watch::Receiver<bool>,
}

async fn connection(stream: TcpStream, addr: SocketAddr, id: u64, close: Arc<Notify>, shared: Shared) {
    let Shared { app, limits, connections, mut stop } = shared;
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        connections.closed(id);
        return;
    };
    let tracker = connections.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(addr));
        request.extensions_mut().insert(LocalAddr(local));
        let (app, tracker) = (app.clone(), tracker.clone());
        async move {
            tracker.started(id);
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            tracker.answered(id);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Evicted at the cap: it had no request in flight, so dropping it loses no answer.
        _ = close.notified() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
        }
    }
    connections.closed(id);
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender stops the server too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Answers a connection beyond the cap with a 503 and closes it, without reading its request.
fn refuse_busy(stream: TcpStream) {
    const BODY: &str = "{\"error\": {\"code\": 503, \"title\": \"Service Unavailable\", \"message\": \"Every \
                        connection nimbus allows is answering a request; try again shortly.\"}}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: \
         close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    // Best effort and never blocking: a socket whose buffer is full is just closed.
    if let Ok(std) = stream.into_std() {
        let _ = (&std).write(response.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn at_the_cap_the_idlest_connection_makes_room_and_busy_ones_are_kept() {
        let connections = Connections::default();
        let (a, a_close) = connections.admit(2).unwrap();
        let (b, _) = connections.admit(2).unwrap();
        connections.started(b);
        // a is idle, b is answering: a goes.
        let (c, _) = connections.admit(2).unwrap();
        assert!(!connections.lock().contains_key(&a));
        assert!(a_close.notified().now_or_never().is_some(), "the evicted connection is told to close");
        connections.started(c);
        assert!(connections.admit(2).is_none(), "every connection is busy");
        connections.answered(b);
        assert!(connections.admit(2).is_some(), "b is idle again");
        assert_eq!(connections.count(), 2);
    }
}
