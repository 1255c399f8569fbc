//! The Raft transport between replica processes: openraft's RPCs as JSON over HTTP/1.1.
//!
//! - Server: [`transport_routes`] serves `POST /raft/append`, `/raft/vote`, `/raft/pre-vote` and
//!   `/raft/snapshot` (a whole snapshot in one request) on a replica's axum listener. A body
//!   that does not parse is answered 400, never a panic.
//! - Client: [`HttpNetwork`] is openraft's network factory; each [`HttpConnection`] posts to the
//!   peer at its [`BasicNode`] address (`host:port`, or a full `http://` URL).
//!
//! Every RPC has a timeout. A peer that refuses the connection or does not answer is reported as
//! [`Unreachable`], so openraft backs off before trying it again instead of spinning; a peer
//! whose Raft has stopped is reported the same way. [`send`] and [`JsonBody`] are shared with the
//! replica's own endpoints (forwarded writes and membership, in `crate::node`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::errors::{Fatal, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, OptionalSend, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_net::Transport;

use super::{MetadataRaft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use crate::metadata::ids::ReplicaId;

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const PRE_VOTE_PATH: &str = "/raft/pre-vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// The shortest timeout an RPC gets. openraft asks for one heartbeat interval (100 ms) for
/// appends; on a loaded machine that cuts off healthy replies and stalls replication, while a
/// dead peer is noticed at once anyway (the connection is refused).
const MIN_RPC_TIMEOUT: Duration = Duration::from_millis(500);

/// Appends carry at most `max_payload_entries` commands; far below this.
const APPEND_BODY_LIMIT: usize = 64 << 20;
/// A snapshot is the whole metadata in one body (JSON, bytes as numbers: about 3.5× its size).
const SNAPSHOT_BODY_LIMIT: usize = 1 << 30;

/// A full snapshot on the wire: openraft hands the leader's vote, the meta and the data together.
#[derive(Serialize, Deserialize)]
struct SnapshotTransfer {
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The Raft protocol endpoints of a replica. The answers are openraft's results as JSON: a
/// `RaftError` there means the replica's Raft stopped, which the client treats as unreachable.
pub fn transport_routes(raft: MetadataRaft) -> Router {
    Router::new()
        .route(APPEND_PATH, post(append).layer(DefaultBodyLimit::max(APPEND_BODY_LIMIT)))
        .route(VOTE_PATH, post(vote))
        .route(PRE_VOTE_PATH, post(pre_vote))
        .route(SNAPSHOT_PATH, post(install_snapshot).layer(DefaultBodyLimit::max(SNAPSHOT_BODY_LIMIT)))
        .with_state(raft)
}

async fn append(
    State(raft): State<MetadataRaft>,
    JsonBody(rpc): JsonBody<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    axum::Json(raft.append_entries(rpc).await).into_response()
}

async fn vote(State(raft): State<MetadataRaft>, JsonBody(rpc): JsonBody<VoteRequest<TypeConfig>>) -> Response {
    axum::Json(raft.vote(rpc).await).into_response()
}

async fn pre_vote(State(raft): State<MetadataRaft>, JsonBody(rpc): JsonBody<VoteRequest<TypeConfig>>) -> Response {
    axum::Json(raft.pre_vote(rpc).await).into_response()
}

async fn install_snapshot(
    State(raft): State<MetadataRaft>,
    JsonBody(transfer): JsonBody<SnapshotTransfer>,
) -> Response {
    let snapshot = Snapshot { meta: transfer.meta, snapshot: SnapshotData::new(transfer.data) };
    axum::Json(raft.install_full_snapshot(transfer.vote, snapshot).await).into_response()
}

/// A JSON request body; anything that is not the expected JSON is answered 400 with the reason
/// (axum's own `Json` answers 415 or 422 for some of those, and wants a content type).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = (StatusCode, String);

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| (e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed request body: {e}")))
    }
}

/// Why an HTTP call to another replica got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request was never delivered (connection refused, no route): safe to send again.
    #[error("cannot reach {url}: {reason}")]
    Refused { url: String, reason: String },
    /// The connection broke after the request was sent: it may or may not have been handled.
    #[error("the connection to {url} broke: {reason}")]
    Lost { url: String, reason: String },
}

/// Sends one request with a JSON body (if any) and returns the status and body. Every call has
/// its own `timeout`, connection included.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&(impl Serialize + ?Sized)>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(StatusCode, Bytes), SendError> {
    let mut request = client.request(method, url).timeout(timeout);
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            SendError::Timeout(timeout)
        } else if e.is_connect() {
            SendError::Refused { url: url.to_owned(), reason: error_chain(&e) }
        } else {
            SendError::Lost { url: url.to_owned(), reason: error_chain(&e) }
        }
    };
    let response = request.send().await.map_err(classify)?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = response.bytes().await.map_err(classify)?;
    Ok((status, bytes))
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// openraft's network over HTTP: one [`HttpConnection`] per peer, sharing one connection pool.
#[derive(Clone)]
pub struct HttpNetwork {
    source: ReplicaId,
    client: reqwest::Client,
    transport: Transport,
}

impl HttpNetwork {
    /// The network of replica `source`, sending with `client` to the base URLs `transport`
    /// makes of the peers' addresses.
    pub fn new(source: ReplicaId, client: reqwest::Client, transport: Transport) -> Self {
        Self { source, client, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpConnection;

    async fn new_client(&mut self, target: ReplicaId, node: &BasicNode) -> Self::Network {
        HttpConnection {
            source: self.source,
            target,
            base: self.transport.url(&node.addr),
            client: self.client.clone(),
        }
    }
}

/// The Raft RPCs from one replica to `target`.
pub struct HttpConnection {
    source: ReplicaId,
    target: ReplicaId,
    base: String,
    client: reqwest::Client,
}

/// Why a reply did not make sense: a peer of another version, or not a Weir replica at all.
#[derive(Debug, thiserror::Error)]
#[error("{target} answered {path} with {status}: {detail}")]
struct BadReply {
    target: ReplicaId,
    path: &'static str,
    status: StatusCode,
    detail: String,
}

impl HttpConnection {
    /// Posts `request` to `path` and decodes the peer's `Result<T, E>`. An error of the peer's
    /// Raft (it is stopping) makes the peer unreachable, as does any reply that does not decode:
    /// retrying at once would meet the same answer.
    async fn call<Req, T, E>(
        &self,
        path: &'static str,
        action: RPCTypes,
        request: &Req,
        timeout: Duration,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        Req: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned + std::error::Error + 'static,
    {
        let timeout = timeout.max(MIN_RPC_TIMEOUT);
        let url = format!("{}{path}", self.base);
        let (status, body) = send(&self.client, reqwest::Method::POST, &url, Some(request), &[], timeout)
            .await
            .map_err(|e| match e {
                SendError::Timeout(timeout) => {
                    RPCError::Timeout(Timeout { action, id: self.source, target: self.target, timeout })
                }
                unreachable => RPCError::Unreachable(Unreachable::new(&unreachable)),
            })?;
        let bad_reply = |detail: String| {
            RPCError::Unreachable(Unreachable::new(&BadReply { target: self.target, path, status, detail }))
        };
        if !status.is_success() {
            return Err(bad_reply(String::from_utf8_lossy(&body).into_owned()));
        }
        match serde_json::from_slice::<Result<T, E>>(&body) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(remote)) => Err(RPCError::Unreachable(Unreachable::new(&remote))),
            Err(e) => Err(bad_reply(e.to_string())),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for HttpConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftError<TypeConfig>>(APPEND_PATH, RPCTypes::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftError<TypeConfig>>(VOTE_PATH, RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftError<TypeConfig>>(PRE_VOTE_PATH, RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let transfer = SnapshotTransfer { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        let sent = self.call::<_, _, Fatal<TypeConfig>>(
            SNAPSHOT_PATH,
            RPCTypes::InstallSnapshot,
            &transfer,
            option.hard_ttl(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = sent => reply.map_err(StreamingError::from),
        }
    }
}
