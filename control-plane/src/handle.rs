//! What the API and the leader's services need of a replica: read the applied metadata, propose
//! a command (on the leader, or forwarded to it), and say who is in the cluster. The replica
//! process ([`crate::node::Replica`]) implements it over Raft; tests may implement it over a
//! single in-process replica.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metadata::ids::ReplicaId;
use crate::metadata::{Command, Response};
use crate::raft::MetadataReader;

/// Why a proposal has no answer. A command the rules refuse is not an error here: it comes back
/// as [`Response::Rejected`]. Serialized as `{"code": "no-quorum", "message": "..."}` when a
/// replica forwards a write to the leader and relays its failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", content = "message", rename_all = "kebab-case")]
pub enum ProposeError {
    /// No leader is known, or the leader cannot reach a quorum in time: the write may or may not
    /// happen later. The API answers 503.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The leader could not be reached to forward the write, or the connection broke after the
    /// write was sent (then it may or may not be applied).
    #[error("the leader is unreachable: {0}")]
    LeaderUnreachable(String),
    /// This replica is shutting down.
    #[error("this replica is shutting down")]
    ShuttingDown,
}

/// One member of the Raft cluster, as `GET /cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: ReplicaId,
    /// Where its internal listener (Raft, forwarding, workers) is reached.
    pub address: String,
    /// A voter (false: a learner).
    pub voter: bool,
}

/// The cluster as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This replica.
    pub id: ReplicaId,
    pub leader: Option<ReplicaId>,
    pub term: u64,
    pub members: Vec<Member>,
    /// The last log index applied to this replica's metadata.
    pub last_applied: Option<u64>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replica as the API and the leader's services use it.
pub trait ReplicaHandle: Send + Sync + 'static {
    /// This replica's applied metadata (possibly behind the leader's on a follower).
    fn reader(&self) -> MetadataReader;

    /// Replicates `command` through the leader and answers once it is applied (on the leader).
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Response, ProposeError>>;

    /// Waits until this replica's metadata includes every write committed before the call
    /// (a linearizable read point); errors as [`ReplicaHandle::propose`] does without a quorum.
    fn sync_reads(&self) -> BoxFuture<'_, Result<(), ProposeError>>;

    /// Members, leader and term as this replica knows them.
    fn cluster(&self) -> ClusterView;

    /// Gets `path` from the leader's internal listener, presenting this replica's peer key, and
    /// answers the body of a 200. `None` when there is no other leader to ask (this replica
    /// leads, or has no peers), or it did not answer 200 within `timeout`.
    fn ask_leader(&self, path: String, timeout: Duration) -> BoxFuture<'_, Option<Vec<u8>>> {
        let _ = (path, timeout);
        Box::pin(async { None })
    }

    /// Whether this replica is the leader now.
    fn is_leader(&self) -> bool {
        let view = self.cluster();
        view.leader == Some(view.id)
    }
}
