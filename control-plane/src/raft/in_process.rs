//! A Raft network inside one process: RPCs are direct calls on the target replica's [`Raft`]
//! handle. Used by tests to run a whole cluster in one process, and fit for a single-process
//! deployment. A replica that is not registered (never added, or removed to simulate a crash or
//! a partition) is unreachable.
//!
//! [`Raft`]: openraft::Raft

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use super::{MetadataRaft, Snapshot, SnapshotData, TypeConfig, Vote};
use crate::metadata::ids::ReplicaId;

/// Why an in-process RPC did not reach its target.
#[derive(Debug, thiserror::Error)]
#[error("{replica} is not reachable in this process")]
struct NotReachable {
    replica: ReplicaId,
}

/// The replicas of one in-process cluster, by id. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct InProcessRouter {
    replicas: Arc<Mutex<BTreeMap<ReplicaId, MetadataRaft>>>,
}

impl InProcessRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `replica` reachable through `raft`.
    pub fn register(&self, replica: ReplicaId, raft: MetadataRaft) {
        self.lock().insert(replica, raft);
    }

    /// Makes `replica` unreachable; returns its handle if it was registered.
    pub fn unregister(&self, replica: ReplicaId) -> Option<MetadataRaft> {
        self.lock().remove(&replica)
    }

    pub fn get(&self, replica: ReplicaId) -> Option<MetadataRaft> {
        self.lock().get(&replica).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReplicaId, MetadataRaft>> {
        // The map is only read or replaced entry-wise; a panic elsewhere cannot leave it torn.
        self.replicas.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn target(&self, replica: ReplicaId) -> Result<MetadataRaft, Unreachable<TypeConfig>> {
        self.get(replica).ok_or_else(|| Unreachable::new(&NotReachable { replica }))
    }
}

impl RaftNetworkFactory<TypeConfig> for InProcessRouter {
    type Network = InProcessConnection;

    async fn new_client(&mut self, target: ReplicaId, _node: &BasicNode) -> Self::Network {
        InProcessConnection { router: self.clone(), target }
    }
}

/// A connection from one replica to `target`.
pub struct InProcessConnection {
    router: InProcessRouter,
    target: ReplicaId,
}

fn unreachable<E: std::error::Error + 'static>(error: &E) -> Unreachable<TypeConfig> {
    Unreachable::new(error)
}

impl RaftNetworkV2<TypeConfig> for InProcessConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        // The target's only error here is that it stopped: to the caller it is unreachable.
        raft.append_entries(rpc).await.map_err(|e| RPCError::Unreachable(unreachable(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        raft.vote(rpc).await.map_err(|e| RPCError::Unreachable(unreachable(&e)))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        raft.pre_vote(rpc).await.map_err(|e| RPCError::Unreachable(unreachable(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        // Snapshot data is an in-memory buffer: hand over a copy, as a network would.
        let snapshot = Snapshot { meta: snapshot.meta, snapshot: SnapshotData::new(snapshot.snapshot.into_inner()) };
        raft.install_full_snapshot(vote, snapshot).await.map_err(|e| StreamingError::Unreachable(unreachable(&e)))
    }
}
