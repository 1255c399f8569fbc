//! A control-plane replica as a process: its Raft node on a local data directory, its two HTTP
//! listeners, the bootstrap of a fresh cluster, leader routing of writes and reads, and
//! membership changes.
//!
//! [`Replica::start`] opens the `redb` store, starts openraft with the HTTP transport
//! ([`crate::raft::http`]) and binds the listeners: the public one (the API) and, for a replica
//! that has or may get peers, the internal one ([`InternalConfig`]). [`Replica::serve`] then
//! serves the caller's API router on the first, and the Raft routes (taking the peer key, see
//! [`crate::internal`]) merged with the caller's internal routes on the second. The API listener
//! serves no internal route. [`Replica::handle`] is the [`ReplicaHandle`] the API and the
//! leader's services use.
//!
//! Replica endpoints besides the Raft protocol (internal listener, not part of the versioned
//! API; every one takes the peer key):
//! - `POST /raft/propose` — a [`Command`] as JSON; answers the [`Response`] (200) once applied,
//!   or a [`ProposeError`] (503). Sent to a follower, it is forwarded to the leader.
//! - `POST /raft/read-index` — on the leader, the log index a linearizable read must wait for.
//! - `POST /raft/members` `{"id": 4, "address": "host:port"}` — adds a replica as a learner,
//!   waits until it caught up, then makes it a voter; answers the new [`ClusterView`].
//! - `DELETE /raft/members/{id}` — removes a voter or learner.
//! - `GET /raft/cluster` — this replica's [`ClusterView`] (leader, term, members, last applied).
//!
//! A request a replica forwards carries the `weir-forwarded` header; a replica that receives one
//! while not the leader answers 421 instead of forwarding again, so leadership changes cannot
//! make requests loop.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{delete, get, post};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, RaftMetrics, ReadPolicy, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use weir_dataflow::auth::ClusterKey;
use weir_net::{Listener, NetError, Plaintext, ServerTls, Transport};

use crate::handle::{BoxFuture, ClusterView, Member, ProposeError, ReplicaHandle};
use crate::internal;
use crate::metadata::ids::ReplicaId;
use crate::metadata::{Command, Response};
use crate::raft::http::{self, JsonBody, SendError};
use crate::raft::{MetadataRaft, MetadataReader, RaftStore, StoreError, TypeConfig};

pub const PROPOSE_PATH: &str = "/raft/propose";
pub const READ_INDEX_PATH: &str = "/raft/read-index";
pub const MEMBERS_PATH: &str = "/raft/members";
pub const CLUSTER_PATH: &str = "/raft/cluster";
/// Marks a request one replica forwarded to the one it believes is the leader.
const FORWARDED_HEADER: &str = "weir-forwarded";
/// How often a request waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(50);
/// How long a graceful HTTP shutdown may take before open connections are dropped.
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub id: ReplicaId,
    /// The address the API listens on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// The certificate the API listener presents; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Where plain HTTP may be served (on either listener).
    pub plaintext: Plaintext,
    /// The internal listener. `None`: a replica alone for good (`weir standalone`), which serves
    /// no internal route at all and can have no peers.
    pub internal: Option<InternalConfig>,
    /// The voters of a fresh cluster, with the internal address each is reached at (this one
    /// included). Empty: this replica alone. Not containing `id`: this replica joins an existing
    /// cluster and waits to be added (`POST /raft/members` on a member).
    pub peers: BTreeMap<ReplicaId, String>,
    /// Holds `raft.redb`: the Raft log, vote and latest snapshot.
    pub data_dir: PathBuf,
    /// How long a write or a linearizable read waits for a leader that can reach a quorum.
    pub leader_timeout: Duration,
    /// How long adding a member may take, its catching up included.
    pub membership_timeout: Duration,
    pub raft: Config,
}

impl ReplicaConfig {
    pub fn new(id: ReplicaId, listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            listen: listen.into(),
            tls: None,
            plaintext: Plaintext::LoopbackOnly,
            internal: None,
            peers: BTreeMap::new(),
            data_dir: data_dir.into(),
            leader_timeout: Duration::from_secs(2),
            membership_timeout: Duration::from_secs(30),
            raft: default_raft_config(),
        }
    }
}

/// The internal listener of a replica: Raft, forwarding between replicas, workers' heartbeats.
#[derive(Clone, Debug)]
pub struct InternalConfig {
    /// The address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// The peer key: what replicas present to each other's internal routes.
    pub key: ClusterKey,
    /// The certificate the internal listener presents; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// How this replica reaches its peers and the workers: over TLS, trusting the cluster's CA.
    pub transport: Transport,
}

impl InternalConfig {
    /// An internal listener on `listen` taking `key`, plain HTTP (for loopback clusters).
    pub fn plain(listen: impl Into<String>, key: ClusterKey) -> Self {
        InternalConfig { listen: listen.into(), key, tls: None, transport: Transport::Plain }
    }
}

/// Raft timings for replicas on one network: a heartbeat every 100 ms and an election after
/// 300–600 ms without one, so a dead leader is replaced in about a second. A snapshot every
/// 5000 entries bounds the log a restart replays.
pub fn default_raft_config() -> Config {
    Config {
        cluster_name: "weir-control-plane".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
}

/// Parses `--peers`: `1=host:port,2=host:port,…`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<ReplicaId, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (id, address) =
            part.split_once('=').ok_or_else(|| format!("`{part}` is not ID=ADDRESS (as in 1=10.0.0.1:7400)"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("`{id}` in `{part}` is not a replica id"))?;
        let address = address.trim();
        if address.is_empty() {
            return Err(format!("replica {id} has no address"));
        }
        if peers.insert(ReplicaId(id), address.to_owned()).is_some() {
            return Err(format!("replica {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// Why a replica could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Listen(#[from] NetError),
    #[error("a replica with peers needs an internal listener (--internal-listen)")]
    NoInternalListener,
    #[error("raft failed: {0}")]
    Raft(String),
    #[error("the replica is already serving")]
    AlreadyServing,
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Why a membership change did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", content = "message", rename_all = "kebab-case")]
pub enum MembershipError {
    /// No leader with a quorum to make the change.
    #[error(transparent)]
    Unavailable(ProposeError),
    /// The leader refused the change (another change in progress, unknown replica, …).
    #[error("membership change refused: {0}")]
    Refused(String),
}

impl From<ProposeError> for MembershipError {
    fn from(error: ProposeError) -> Self {
        MembershipError::Unavailable(error)
    }
}

/// A running replica: Raft started, listeners bound, serving once [`Replica::serve`] is called.
pub struct Replica {
    core: Arc<ReplicaCore>,
    api: Bound,
    internal: Option<(Bound, ClusterKey)>,
    servers: Vec<(tokio::sync::oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

/// A listener, until it is served.
struct Bound {
    addr: SocketAddr,
    listener: Option<Listener>,
}

impl Bound {
    async fn bind(
        address: &str,
        tls: Option<&ServerTls>,
        plaintext: Plaintext,
        flags: &'static str,
    ) -> Result<Bound, NodeError> {
        let listener = Listener::bind(address, tls, plaintext, flags).await?;
        Ok(Bound { addr: listener.address(), listener: Some(listener) })
    }

    /// Serves `app` in the background until the returned sender is used or dropped.
    fn serve(
        &mut self,
        app: Router,
    ) -> Result<(tokio::sync::oneshot::Sender<()>, JoinHandle<std::io::Result<()>>), NodeError> {
        let listener = self.listener.take().ok_or(NodeError::AlreadyServing)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok((stop, server))
    }
}

impl Replica {
    /// Opens the store in `config.data_dir`, starts Raft, binds `config.listen`, and bootstraps a
    /// fresh cluster: the replica with the smallest id of `config.peers` (or a replica alone)
    /// initializes it with every peer as a voter; the others wait to hear from it. A replica
    /// already initialized (its disk has a log) skips that, so restarting with the same flags is
    /// harmless. A replica that lost its disk must be removed and added again, not restarted
    /// with `--peers`: it would not know it had been a member.
    pub async fn start(config: ReplicaConfig) -> Result<Replica, NodeError> {
        let raft_config = Arc::new(config.raft.clone().validate().map_err(|e| NodeError::Config(e.to_string()))?);
        if config.internal.is_none() && !config.peers.is_empty() {
            return Err(NodeError::NoInternalListener);
        }
        let store = RaftStore::open(&config.data_dir).await?;
        let api = Bound::bind(&config.listen, config.tls.as_ref(), config.plaintext, "--tls-cert, --tls-key").await?;
        let internal = match &config.internal {
            Some(internal) => {
                let flags = "--internal-tls-cert, --internal-tls-key";
                let bound = Bound::bind(&internal.listen, internal.tls.as_ref(), config.plaintext, flags).await?;
                Some((bound, internal.key.clone()))
            }
            None => None,
        };
        let transport = config.internal.as_ref().map(|internal| internal.transport.clone()).unwrap_or_default();
        // The address Raft knows this replica by: the internal one (a replica alone for good is
        // never called, and is named by its API address).
        let own = internal.as_ref().map_or(api.addr, |(bound, _)| bound.addr);
        let address = config.peers.get(&config.id).cloned().unwrap_or_else(|| own.to_string());

        let connect_timeout = Duration::from_millis(500);
        let client = match &internal {
            Some((_, key)) => internal::client(key, &transport, connect_timeout).map_err(NodeError::Raft)?,
            None => reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .build()
                .map_err(|e| NodeError::Raft(format!("cannot build the HTTP client: {e}")))?,
        };
        let reader = store.state_machine.reader();
        let network = http::HttpNetwork::new(config.id, client.clone(), transport.clone());
        let raft = MetadataRaft::new(config.id, raft_config, network, store.log, store.state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let core = Arc::new(ReplicaCore {
            id: config.id,
            raft,
            reader,
            client,
            transport,
            leader_timeout: config.leader_timeout,
            membership_timeout: config.membership_timeout,
        });
        if let Err(error) = core.bootstrap(&config.peers, &address).await {
            // Stop Raft's tasks so they release the store before the caller retries or exits.
            let _ = core.raft.shutdown().await;
            return Err(error);
        }
        tracing::info!(replica = %config.id, api = %api.addr, %address, "control-plane replica started");
        Ok(Replica { core, api, internal, servers: Vec::new() })
    }

    pub fn id(&self) -> ReplicaId {
        self.core.id
    }

    /// Where the API listener is bound (the chosen port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.api.addr
    }

    /// Where the internal listener is bound, if the replica has one.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(|(bound, _)| bound.addr)
    }

    /// The replica as the API and the leader's services use it.
    pub fn handle(&self) -> Arc<dyn ReplicaHandle> {
        self.core.clone()
    }

    pub fn raft(&self) -> &MetadataRaft {
        &self.core.raft
    }

    /// Serves `api` on the API listener, and on the internal one the Raft transport and the
    /// replica endpoints (module docs; they take the peer key) merged with `internal`, in the
    /// background until [`Replica::shutdown`]. Every route of `internal` must check a key
    /// itself ([`internal::require_key`]); a replica without an internal listener refuses a
    /// non-empty one.
    pub fn serve(&mut self, api: Router, internal: Router) -> Result<(), NodeError> {
        match &mut self.internal {
            Some((bound, key)) => {
                // Unknown paths too take the key: a caller without one learns nothing of the routes.
                let own = http::transport_routes(self.core.raft.clone())
                    .merge(replica_routes(self.core.clone()))
                    .fallback(internal::not_found);
                let app = internal::require_key(own, key.clone(), "replicas").merge(internal);
                self.servers.push(bound.serve(app)?);
            }
            None if internal.has_routes() => return Err(NodeError::NoInternalListener),
            None => {}
        }
        self.servers.push(self.api.serve(api)?);
        Ok(())
    }

    /// Adds replica `id`, listening at `address`, as a voter: first as a learner, which the
    /// leader brings up to date (by snapshot if its log was purged), then promoted. Runs on the
    /// leader, forwarded there from a follower.
    pub async fn add_member(&self, id: ReplicaId, address: String) -> Result<ClusterView, MembershipError> {
        self.core.on_leader(&AddMember { id, address }).await
    }

    /// Removes replica `id` from the cluster (voter or learner). Runs on the leader.
    pub async fn remove_member(&self, id: ReplicaId) -> Result<ClusterView, MembershipError> {
        self.core.on_leader(&RemoveMember { id }).await
    }

    /// Stops serving (in-flight requests get a moment to finish), then stops Raft.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let mut outcome = Ok(());
        // Both listeners stop taking connections at once, then drain.
        let running: Vec<_> = std::mem::take(&mut self.servers)
            .into_iter()
            .map(|(stop, server)| {
                let _ = stop.send(());
                server
            })
            .collect();
        for mut server in running {
            match tokio::time::timeout(HTTP_DRAIN, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => outcome = Err(NodeError::Serve(e)),
                Ok(Err(join)) => outcome = Err(NodeError::Serve(std::io::Error::other(join))),
                Err(_) => {
                    tracing::warn!(replica = %self.core.id, "open connections did not close in time; dropping them");
                    server.abort();
                }
            }
        }
        self.core.raft.shutdown().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        tracing::info!(replica = %self.core.id, "control-plane replica stopped");
        outcome
    }
}

/// What the replica's routes and its [`ReplicaHandle`] share.
struct ReplicaCore {
    id: ReplicaId,
    raft: MetadataRaft,
    reader: MetadataReader,
    client: reqwest::Client,
    /// How `client` reaches a replica named by its address (`http://` or `https://`).
    transport: Transport,
    leader_timeout: Duration,
    membership_timeout: Duration,
}

/// The result of trying an operation on this replica as the leader.
enum Attempt<T, E> {
    Done(T),
    /// This replica is not (or no longer) the leader: route to the current one.
    NotLeader,
    Failed(E),
}

/// An operation that must run on the leader: here when this replica leads, forwarded over HTTP
/// otherwise. One implementation per endpoint keeps the routing and retry logic in one place
/// ([`ReplicaCore::on_leader`]).
trait LeaderOp: Send + Sync {
    type Output: Serialize + DeserializeOwned + Send;
    type Error: From<ProposeError> + ErrorStatus + Serialize + DeserializeOwned + Send;

    fn describe(&self) -> String;
    /// How the operation is sent to the leader: method, path and body.
    fn request(&self) -> (reqwest::Method, String, Option<serde_json::Value>);
    /// How long the operation may wait for a leader and run there.
    fn timeout(&self, core: &ReplicaCore) -> Duration {
        core.leader_timeout
    }
    /// Runs the operation here; [`Attempt::NotLeader`] when this replica does not lead.
    fn run_here<'a>(
        &'a self,
        core: &'a ReplicaCore,
    ) -> impl Future<Output = Attempt<Self::Output, Self::Error>> + Send + 'a;
    /// Whether forwarding may be tried again after the connection broke mid-request: only when
    /// doing the operation twice is harmless.
    fn idempotent(&self) -> bool {
        true
    }
}

/// The HTTP status an operation's error is answered with.
trait ErrorStatus {
    fn status(&self) -> StatusCode;
}

impl ErrorStatus for ProposeError {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

impl ErrorStatus for MembershipError {
    fn status(&self) -> StatusCode {
        match self {
            MembershipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            MembershipError::Refused(_) => StatusCode::CONFLICT,
        }
    }
}

/// Routing state of a request waiting for a usable leader, for the error given at the deadline.
enum Waiting {
    NoLeader,
    Unreachable(String),
}

impl ReplicaCore {
    async fn bootstrap(&self, peers: &BTreeMap<ReplicaId, String>, own_address: &str) -> Result<(), NodeError> {
        let members: BTreeMap<ReplicaId, BasicNode> = if peers.is_empty() {
            BTreeMap::from([(self.id, BasicNode::new(own_address))])
        } else if peers.contains_key(&self.id) {
            peers.iter().map(|(id, address)| (*id, BasicNode::new(address))).collect()
        } else {
            tracing::info!(replica = %self.id, "not among the peers: waiting to be added to the cluster");
            return Ok(());
        };
        let first = *members.keys().next().expect("members has at least this replica");
        if first != self.id {
            tracing::info!(replica = %self.id, initializer = %first, "waiting for the cluster to be initialized");
            return Ok(());
        }
        match self.raft.initialize(members.clone()).await {
            Ok(()) => {
                let voters: Vec<String> = members.keys().map(ToString::to_string).collect();
                tracing::info!(replica = %self.id, voters = %voters.join(","), "initialized a new cluster");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::debug!(replica = %self.id, "already initialized");
                Ok(())
            }
            Err(e) => Err(NodeError::Raft(format!("cannot initialize the cluster: {e}"))),
        }
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Runs `op` on the leader: here if this replica leads, else forwarded to the leader Raft
    /// names. While there is no leader, or it changes or cannot be reached, it looks again every
    /// [`LEADER_POLL`] until `op.timeout()`; then it fails with what it saw last.
    async fn on_leader<Op: LeaderOp>(&self, op: &Op) -> Result<Op::Output, Op::Error> {
        let timeout = op.timeout(self);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting = Waiting::NoLeader;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                let error = match waiting {
                    Waiting::NoLeader => ProposeError::NoQuorum(format!(
                        "no leader with a quorum within {timeout:?} for {}; retry later",
                        op.describe()
                    )),
                    Waiting::Unreachable(reason) => ProposeError::LeaderUnreachable(reason),
                };
                return Err(error.into());
            }
            let metrics = self.metrics();
            if metrics.running_state.is_err() {
                return Err(ProposeError::ShuttingDown.into());
            }
            match metrics.current_leader {
                Some(leader) if leader == self.id => match tokio::time::timeout(remaining, op.run_here(self)).await {
                    Ok(Attempt::Done(output)) => return Ok(output),
                    Ok(Attempt::Failed(error)) => return Err(error),
                    Ok(Attempt::NotLeader) => waiting = Waiting::NoLeader,
                    Err(_) => {
                        return Err(ProposeError::NoQuorum(format!(
                            "this leader could not reach a quorum within {timeout:?} for {}; it may \
                                 still take effect",
                            op.describe()
                        ))
                        .into());
                    }
                },
                Some(leader) => {
                    let Some(node) = metrics.membership_config.membership().get_node(&leader).cloned() else {
                        waiting = Waiting::NoLeader;
                        tokio::time::sleep(LEADER_POLL.min(remaining)).await;
                        continue;
                    };
                    match self.forward(op, leader, &node, remaining, &mut waiting).await {
                        Attempt::Done(output) => return Ok(output),
                        Attempt::Failed(error) => return Err(error),
                        Attempt::NotLeader => {}
                    }
                }
                None => waiting = Waiting::NoLeader,
            }
            tokio::time::sleep(LEADER_POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        }
    }

    /// Sends `op` to `leader`. [`Attempt::NotLeader`] means "look for the leader again": it no
    /// longer leads, or it could not be connected to (`waiting` says which).
    async fn forward<Op: LeaderOp>(
        &self,
        op: &Op,
        leader: ReplicaId,
        node: &BasicNode,
        remaining: Duration,
        waiting: &mut Waiting,
    ) -> Attempt<Op::Output, Op::Error> {
        let (method, path, body) = op.request();
        let url = format!("{}{path}", self.transport.url(&node.addr));
        let sent = http::send(&self.client, method, &url, body.as_ref(), &[(FORWARDED_HEADER, "1")], remaining).await;
        match sent {
            Ok((StatusCode::OK, body)) => match serde_json::from_slice(&body) {
                Ok(output) => Attempt::Done(output),
                Err(e) => Attempt::Failed(
                    ProposeError::LeaderUnreachable(format!("{leader} answered what this replica cannot read: {e}"))
                        .into(),
                ),
            },
            Ok((StatusCode::MISDIRECTED_REQUEST, _)) => {
                *waiting = Waiting::NoLeader;
                Attempt::NotLeader
            }
            Ok((status, body)) => Attempt::Failed(serde_json::from_slice(&body).unwrap_or_else(|_| {
                ProposeError::LeaderUnreachable(format!(
                    "{leader} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ))
                .into()
            })),
            Err(SendError::Timeout(timeout)) => Attempt::Failed(
                ProposeError::NoQuorum(format!(
                    "{leader} did not answer {} within {timeout:?}; it may still take effect",
                    op.describe()
                ))
                .into(),
            ),
            Err(SendError::Refused { url, reason }) => {
                *waiting = Waiting::Unreachable(format!("{leader} at {url} does not answer: {reason}"));
                tracing::debug!(replica = %self.id, %leader, %url, %reason, "leader not reachable, looking again");
                Attempt::NotLeader
            }
            Err(lost @ SendError::Lost { .. }) if !op.idempotent() => Attempt::Failed(
                ProposeError::LeaderUnreachable(format!("{lost}; {} may or may not have taken effect", op.describe()))
                    .into(),
            ),
            Err(lost @ SendError::Lost { .. }) => {
                *waiting = Waiting::Unreachable(lost.to_string());
                Attempt::NotLeader
            }
        }
    }

    fn view(&self) -> ClusterView {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member { id: *id, address: node.addr.clone(), voter: voters.contains(id) })
            .collect();
        ClusterView {
            id: self.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            members,
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
        }
    }

    /// Waits until this replica applied the log up to `index`.
    async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ProposeError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::ShuttingDown => ProposeError::ShuttingDown,
                timeout @ openraft::metrics::WaitError::Timeout(..) => {
                    ProposeError::NoQuorum(format!("this replica did not catch up with the leader: {timeout}"))
                }
            })
    }
}

impl ReplicaHandle for ReplicaCore {
    fn reader(&self) -> MetadataReader {
        self.reader.clone()
    }

    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Response, ProposeError>> {
        Box::pin(async move { self.on_leader(&Propose(command)).await })
    }

    /// Read-index reads: the leader confirms it still leads (a heartbeat round to a quorum) and
    /// names the index of its commit point; this replica, leader or follower, then waits until it
    /// applied that index. A follower asks the leader over `POST /raft/read-index`.
    fn sync_reads(&self) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            let index = self.on_leader(&ReadIndex).await?;
            self.wait_applied(index, self.leader_timeout).await
        })
    }

    fn cluster(&self) -> ClusterView {
        self.view()
    }

    fn ask_leader(&self, path: String, timeout: Duration) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            let metrics = self.metrics();
            let leader = metrics.current_leader.filter(|leader| *leader != self.id)?;
            let node = metrics.membership_config.membership().get_node(&leader)?.clone();
            let url = format!("{}{path}", self.transport.url(&node.addr));
            match http::send(&self.client, reqwest::Method::GET, &url, None::<&()>, &[], timeout).await {
                Ok((StatusCode::OK, body)) => Some(body.to_vec()),
                _ => None,
            }
        })
    }
}

struct Propose(Command);

impl LeaderOp for Propose {
    type Output = Response;
    type Error = ProposeError;

    fn describe(&self) -> String {
        format!("the write `{}`", self.0)
    }

    fn request(&self) -> (reqwest::Method, String, Option<serde_json::Value>) {
        (reqwest::Method::POST, PROPOSE_PATH.into(), serde_json::to_value(&self.0).ok())
    }

    async fn run_here(&self, core: &ReplicaCore) -> Attempt<Response, ProposeError> {
        match core.raft.client_write(self.0.clone()).await {
            Ok(written) => Attempt::Done(written.data),
            // Refused before it was appended: safe to send to the leader instead.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Attempt::NotLeader,
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Attempt::Failed(ProposeError::NoQuorum(
                    "the leader changed while the write was in flight; it may or may not have been applied".into(),
                ))
            }
            Err(RaftError::APIError(other)) => Attempt::Failed(ProposeError::NoQuorum(other.to_string())),
            Err(RaftError::Fatal(_)) => Attempt::Failed(ProposeError::ShuttingDown),
        }
    }

    fn idempotent(&self) -> bool {
        false
    }
}

struct ReadIndex;

impl LeaderOp for ReadIndex {
    type Output = u64;
    type Error = ProposeError;

    fn describe(&self) -> String {
        "a linearizable read".into()
    }

    fn request(&self) -> (reqwest::Method, String, Option<serde_json::Value>) {
        (reqwest::Method::POST, READ_INDEX_PATH.into(), None)
    }

    async fn run_here(&self, core: &ReplicaCore) -> Attempt<u64, ProposeError> {
        match core.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => Attempt::Done(linearizer.read_log_id().index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Attempt::NotLeader,
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Attempt::Failed(ProposeError::NoQuorum(e.to_string()))
            }
            Err(RaftError::Fatal(_)) => Attempt::Failed(ProposeError::ShuttingDown),
        }
    }
}

/// `POST /raft/members` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddMember {
    pub id: ReplicaId,
    pub address: String,
}

struct RemoveMember {
    id: ReplicaId,
}

/// Maps a membership call's error: not the leader → route again; Raft stopped → unavailable;
/// anything else is the leader refusing the change.
fn membership_attempt<T>(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Attempt<T, MembershipError> {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Attempt::NotLeader,
        RaftError::APIError(refused) => Attempt::Failed(MembershipError::Refused(refused.to_string())),
        RaftError::Fatal(_) => Attempt::Failed(ProposeError::ShuttingDown.into()),
    }
}

/// Commits a membership change on this replica, the leader.
async fn change_members(
    core: &ReplicaCore,
    change: ChangeMembers<ReplicaId, BasicNode>,
) -> Attempt<ClusterView, MembershipError> {
    match core.raft.change_membership(change, false).await {
        Ok(_) => Attempt::Done(core.view()),
        Err(e) => membership_attempt(e),
    }
}

impl LeaderOp for AddMember {
    type Output = ClusterView;
    type Error = MembershipError;

    fn describe(&self) -> String {
        format!("adding {} at {}", self.id, self.address)
    }

    fn request(&self) -> (reqwest::Method, String, Option<serde_json::Value>) {
        (reqwest::Method::POST, MEMBERS_PATH.into(), serde_json::to_value(self).ok())
    }

    fn timeout(&self, core: &ReplicaCore) -> Duration {
        core.membership_timeout
    }

    async fn run_here(&self, core: &ReplicaCore) -> Attempt<ClusterView, MembershipError> {
        // Blocking: returns once the learner has caught up, so promoting it does not leave the
        // voters waiting for a replica that is far behind.
        if let Err(e) = core.raft.add_learner(self.id, BasicNode::new(&self.address), true).await {
            return membership_attempt(e);
        }
        // Adding a replica that is already a voter changes nothing, so a retry is harmless.
        change_members(core, ChangeMembers::AddVoterIds(BTreeSet::from([self.id]))).await
    }
}

impl LeaderOp for RemoveMember {
    type Output = ClusterView;
    type Error = MembershipError;

    fn describe(&self) -> String {
        format!("removing {}", self.id)
    }

    fn request(&self) -> (reqwest::Method, String, Option<serde_json::Value>) {
        (reqwest::Method::DELETE, format!("{MEMBERS_PATH}/{}", self.id.0), None)
    }

    fn timeout(&self, core: &ReplicaCore) -> Duration {
        core.membership_timeout
    }

    async fn run_here(&self, core: &ReplicaCore) -> Attempt<ClusterView, MembershipError> {
        let membership = core.metrics().membership_config.membership().clone();
        let change = if membership.voter_ids().any(|id| id == self.id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([self.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([self.id]))
        };
        change_members(core, change).await
    }
}

fn replica_routes(core: Arc<ReplicaCore>) -> Router {
    Router::new()
        .route(PROPOSE_PATH, post(propose_route))
        .route(READ_INDEX_PATH, post(read_index_route))
        .route(MEMBERS_PATH, post(add_member_route))
        .route(&format!("{MEMBERS_PATH}/{{id}}"), delete(remove_member_route))
        .route(CLUSTER_PATH, get(|State(core): State<Arc<ReplicaCore>>| async move { axum::Json(core.view()) }))
        .with_state(core)
}

/// Runs `op` for an HTTP caller: on the leader (forwarding) for a client, only here for a
/// replica that forwarded it (421 when this replica does not lead).
async fn serve_op<Op: LeaderOp>(core: &ReplicaCore, headers: &HeaderMap, op: Op) -> HttpResponse {
    let outcome = if headers.contains_key(FORWARDED_HEADER) {
        match tokio::time::timeout(op.timeout(core), op.run_here(core)).await {
            Ok(Attempt::Done(output)) => Ok(output),
            Ok(Attempt::Failed(error)) => Err(error),
            Ok(Attempt::NotLeader) => return StatusCode::MISDIRECTED_REQUEST.into_response(),
            Err(_) => Err(ProposeError::NoQuorum(format!(
                "the leader could not reach a quorum in time for {}; it may still take effect",
                op.describe()
            ))
            .into()),
        }
    } else {
        core.on_leader(&op).await
    };
    match outcome {
        Ok(output) => axum::Json(output).into_response(),
        Err(error) => (error.status(), axum::Json(error)).into_response(),
    }
}

async fn propose_route(
    State(core): State<Arc<ReplicaCore>>,
    headers: HeaderMap,
    JsonBody(command): JsonBody<Command>,
) -> HttpResponse {
    serve_op(&core, &headers, Propose(command)).await
}

async fn read_index_route(State(core): State<Arc<ReplicaCore>>, headers: HeaderMap) -> HttpResponse {
    serve_op(&core, &headers, ReadIndex).await
}

async fn add_member_route(
    State(core): State<Arc<ReplicaCore>>,
    headers: HeaderMap,
    JsonBody(member): JsonBody<AddMember>,
) -> HttpResponse {
    serve_op(&core, &headers, member).await
}

async fn remove_member_route(
    State(core): State<Arc<ReplicaCore>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> HttpResponse {
    serve_op(&core, &headers, RemoveMember { id: ReplicaId(id) }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_explained() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=h2:7002,3=http://h3:7003").expect("valid");
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[&ReplicaId(2)], "h2:7002");
        assert_eq!(parse_peers("").expect("empty is alone"), BTreeMap::new());
        for bad in ["1", "x=h:1", "1=", "1=a:1,1=b:2"] {
            let error = parse_peers(bad).expect_err(bad);
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn propose_errors_travel_as_code_and_message() {
        let error = ProposeError::NoQuorum("no leader".into());
        let json = serde_json::to_value(&error).expect("serializes");
        assert_eq!(json, serde_json::json!({"code": "no-quorum", "message": "no leader"}));
        assert_eq!(serde_json::from_value::<ProposeError>(json).expect("parses"), error);
        let refused: MembershipError = serde_json::from_str(r#"{"code":"refused","message":"busy"}"#).expect("parses");
        assert_eq!(refused, MembershipError::Refused("busy".into()));
    }
}
