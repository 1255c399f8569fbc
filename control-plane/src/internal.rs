//! The internal listener's door: every request on it presents a cluster key
//! ([`weir_dataflow::auth::ClusterKey`]) before anything else happens, and every call a replica
//! makes to another part of the cluster presents one.
//!
//! A replica serves two listeners: the public API (`--listen`) and the internal one
//! (`--internal-listen`: Raft RPCs, writes and reads forwarded between replicas, membership, the
//! leader's live figures, workers' heartbeats). [`require_key`] wraps a router so a request
//! without the right key is answered 401 problem+json before its body is read — body limits, even
//! the 1 GiB of a Raft snapshot, apply only to callers that authenticated. The replicas' routes
//! take the peer key; the heartbeat route takes the worker key, so a worker's credential opens no
//! Raft route.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_dataflow::auth::ClusterKey;
use weir_dataflow::wire::ErrorCode;
use weir_net::Transport;

use crate::api::ApiError;

/// The key a route takes, and how a refusal names it.
#[derive(Clone)]
struct Door {
    key: ClusterKey,
    holder: &'static str,
}

/// `router` answering only requests that present `key` as their bearer; others get 401 naming
/// `holder`, the part of the cluster that holds the key ("replicas", "workers").
pub fn require_key(router: Router, key: ClusterKey, holder: &'static str) -> Router {
    router.layer(axum::middleware::from_fn_with_state(Door { key, holder }, check))
}

async fn check(State(door): State<Door>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    if door.key.accepts_header(presented) {
        return next.run(request).await;
    }
    ApiError::new(
        ErrorCode::Unauthorized,
        format!("this internal route is for {} of this cluster; present their cluster key", door.holder),
    )
    .into_response()
}

/// The answer to a path no internal route serves (to callers that presented the key).
pub async fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "no such internal route").into_response()
}

/// An HTTP client whose every request presents `key` (marked sensitive, so it is never logged),
/// over `transport` (TLS trusting the cluster's CA only, or plain).
pub fn client(key: &ClusterKey, transport: &Transport, connect_timeout: Duration) -> Result<reqwest::Client, String> {
    let mut value = reqwest::header::HeaderValue::from_str(&key.bearer())
        .map_err(|e| format!("the cluster key is not a valid header value: {e}"))?;
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(AUTHORIZATION, value)]);
    transport
        .http_client()
        .connect_timeout(connect_timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
