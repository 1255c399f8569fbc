//! What the control plane's integration tests share: a one-member Raft cluster in process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Config, ReadPolicy};
use tempfile::TempDir;
use weir_control_plane::handle::{BoxFuture, ClusterView, Member, ProposeError, ReplicaHandle};
use weir_control_plane::metadata::ids::ReplicaId;
use weir_control_plane::metadata::{Command, Response};
use weir_control_plane::raft::in_process::InProcessRouter;
use weir_control_plane::raft::{MetadataRaft, MetadataReader, RaftStore};

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

/// One replica of a one-member Raft cluster, as the API sees it.
pub struct SingleReplica {
    pub raft: MetadataRaft,
    pub id: ReplicaId,
    pub reader: MetadataReader,
    _dir: TempDir,
}

impl SingleReplica {
    pub async fn start() -> Arc<SingleReplica> {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = ReplicaId(1);
        let store = RaftStore::open(dir.path()).await.expect("store opens");
        let reader = store.state_machine.reader();
        let config = Arc::new(Config::default().validate().expect("valid raft config"));
        let router = InProcessRouter::new();
        let raft =
            MetadataRaft::new(id, config, router.clone(), store.log, store.state_machine).await.expect("raft starts");
        router.register(id, raft.clone());
        let members = BTreeMap::from([(id, BasicNode { addr: "127.0.0.1:0".into() })]);
        raft.initialize(members).await.expect("initializes");
        let deadline = tokio::time::Instant::now() + WAIT;
        while raft.metrics().borrow_watched().current_leader != Some(id) {
            assert!(tokio::time::Instant::now() < deadline, "no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Arc::new(SingleReplica { id, raft, reader, _dir: dir })
    }
}

impl ReplicaHandle for SingleReplica {
    fn reader(&self) -> MetadataReader {
        self.reader.clone()
    }

    fn propose(&self, command: Command) -> BoxFuture<'_, Result<Response, ProposeError>> {
        Box::pin(async move {
            let written = self.raft.client_write(command).await.map_err(|e| ProposeError::NoQuorum(e.to_string()))?;
            Ok(written.data)
        })
    }

    fn sync_reads(&self) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            self.raft
                .ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map_err(|e| ProposeError::NoQuorum(e.to_string()))?;
            Ok(())
        })
    }

    fn cluster(&self) -> ClusterView {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        ClusterView {
            id: self.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            members: membership
                .nodes()
                .map(|(id, node)| Member { id: *id, address: node.addr.clone(), voter: voters.contains(id) })
                .collect(),
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
        }
    }
}
