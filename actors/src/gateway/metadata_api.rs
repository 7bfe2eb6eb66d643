//! The metadata service as instances reach it: `GET` of any path at 169.254.169.254, redirected by the
//! network host to its listener on the network's gateway. No token: the instance is known by the address it
//! sends from and the gateway it was sent to.

use std::net::IpAddr;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::server::{ClientAddr, LocalAddr};
use crate::app::App;
use crate::app::error::CloudError;
use crate::app::metadata;

pub fn router(app: App) -> Router {
    Router::new().fallback(answer).with_state(app)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], format!("{text}\n")).into_response()
}

async fn answer(
    State(app): State<App>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    Extension(LocalAddr(local)): Extension<LocalAddr>,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "The metadata service answers GET only.");
    }
    let (IpAddr::V4(gateway), IpAddr::V4(source)) = (local.ip(), client.ip()) else {
        return plain(StatusCode::NOT_FOUND, "The metadata service answers IPv4 instances only.");
    };
    match metadata::answer(&app, gateway, source, uri.path()) {
        Ok(document) => {
            let kind = if document.json { "application/json" } else { "text/plain" };
            (StatusCode::OK, [(header::CONTENT_TYPE, kind)], document.body).into_response()
        }
        Err(CloudError::NotFound(message)) => plain(StatusCode::NOT_FOUND, &message),
        Err(e) => {
            tracing::warn!(%source, path = uri.path(), cause = %nimbus_protocol::failure::chain(&e), "metadata answer failed");
            plain(StatusCode::SERVICE_UNAVAILABLE, "The metadata service cannot answer now; try again.")
        }
    }
}
