//! Whole control-plane Raft clusters in one process, over the in-process network: replication,
//! leader failover, restart from disk, and membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tempfile::TempDir;
use weir_control_plane::metadata::Command;
use weir_control_plane::metadata::Response;
use weir_control_plane::metadata::ids::{ReplicaId, TenantId, UnixMillis};
use weir_control_plane::metadata::records::{CompletedCheckpoint, JobStatus};
use weir_control_plane::raft::in_process::InProcessRouter;
use weir_control_plane::raft::{MetadataRaft, MetadataReader, RaftStore};
use weir_dataflow::ids::{CheckpointId, JobId};

const WAIT: Duration = Duration::from_secs(10);

struct Replica {
    raft: MetadataRaft,
    reader: MetadataReader,
}

/// Replicas in one process, each with its own data directory.
struct TestCluster {
    router: InProcessRouter,
    config: Arc<Config>,
    root: TempDir,
    replicas: BTreeMap<ReplicaId, Replica>,
    /// The highest log index a write through [`TestCluster::write`] was committed at.
    last_written: AtomicU64,
}

impl TestCluster {
    fn new(config: Config) -> Self {
        Self {
            router: InProcessRouter::new(),
            config: Arc::new(config.validate().expect("valid raft config")),
            root: tempfile::tempdir().expect("temp dir"),
            replicas: BTreeMap::new(),
            last_written: AtomicU64::new(0),
        }
    }

    fn node(id: ReplicaId) -> BasicNode {
        BasicNode { addr: format!("in-process-{}", id.0) }
    }

    async fn start(&mut self, id: ReplicaId) {
        let dir = self.root.path().join(id.0.to_string());
        // After an in-process shutdown openraft's background tasks drop their store handles a
        // moment later, and redb allows one open handle per file: retry briefly.
        let deadline = tokio::time::Instant::now() + WAIT;
        let store = loop {
            match RaftStore::open(&dir).await {
                Ok(store) => break store,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    eprintln!("{id}: store not reopened yet: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("store does not open: {error}"),
            }
        };
        let reader = store.state_machine.reader();
        let raft = MetadataRaft::new(id, self.config.clone(), self.router.clone(), store.log, store.state_machine)
            .await
            .expect("raft starts");
        self.router.register(id, raft.clone());
        self.replicas.insert(id, Replica { raft, reader });
    }

    /// Stops a replica as a crash would look to the others: it stops answering at once.
    async fn stop(&mut self, id: ReplicaId) {
        self.router.unregister(id);
        let replica = self.replicas.remove(&id).expect("replica is running");
        replica.raft.shutdown().await.expect("raft shuts down");
    }

    fn raft(&self, id: ReplicaId) -> &MetadataRaft {
        &self.replicas[&id].raft
    }

    async fn initialize(&self, members: impl IntoIterator<Item = u64>) {
        let members: BTreeMap<ReplicaId, BasicNode> =
            members.into_iter().map(|id| (ReplicaId(id), Self::node(ReplicaId(id)))).collect();
        let first = *members.keys().next().expect("at least one member");
        self.raft(first).initialize(members).await.expect("initializes");
    }

    /// Waits until every running replica agrees on one leader other than `not`, and returns it.
    async fn leader(&self, not: Option<ReplicaId>) -> ReplicaId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leaders: BTreeSet<Option<ReplicaId>> =
                self.replicas.values().map(|replica| replica.raft.metrics().borrow_watched().current_leader).collect();
            if let [Some(leader)] = leaders.iter().copied().collect::<Vec<_>>()[..]
                && Some(leader) != not
                && self.replicas.contains_key(&leader)
            {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader within {WAIT:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn write(&self, leader: ReplicaId, command: Command) -> Response {
        let written = self.raft(leader).client_write(command).await.expect("the leader commits the write");
        self.last_written.fetch_max(written.log_id.index, Ordering::SeqCst);
        written.data
    }

    /// Waits until every running replica applied every write so far and everything the leader
    /// has applied. (The leader answers a write before its metrics show it applied.)
    async fn converge(&self, leader: ReplicaId) {
        let leader_applied =
            self.raft(leader).metrics().borrow_watched().last_applied.as_ref().map_or(0, |id| id.index);
        let applied = Some(leader_applied.max(self.last_written.load(Ordering::SeqCst)));
        for (id, replica) in &self.replicas {
            replica
                .raft
                .wait(Some(WAIT))
                .applied_index_at_least(applied, format!("{id} catches up"))
                .await
                .expect("replica catches up");
        }
    }
}

fn config() -> Config {
    Config {
        cluster_name: "weir-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        ..Default::default()
    }
}

fn create_tenant(name: &str) -> Command {
    Command::CreateTenant { tenant: TenantId::from(name), display_name: name.into(), at: UnixMillis(1) }
}

fn submit_job(job: &str) -> Command {
    Command::SubmitJob {
        job: JobId(job.into()),
        tenant: TenantId::from("acme"),
        name: job.into(),
        sql: "INSERT INTO out SELECT * FROM bids".into(),
        config: BTreeMap::new().into(),
        parallelism: 2,
        at: UnixMillis(2),
        quota: None,
    }
}

fn commit_checkpoint(job: &str, id: u64) -> Command {
    Command::CommitCheckpoint {
        job: JobId(job.into()),
        checkpoint: CompletedCheckpoint {
            id: CheckpointId(id),
            location: format!("s3://bucket/{job}/chk-{id}"),
            parallelism: 2,
            state_size_bytes: 1,
            completed_at: UnixMillis(10 + id),
        },
        retain: 3,
    }
}

fn latest_checkpoint(reader: &MetadataReader, job: &str) -> Option<CheckpointId> {
    reader.read(|state| {
        state.job(&JobId(job.into())).and_then(|job| job.latest_checkpoint()).map(|checkpoint| checkpoint.id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_replicate_fail_over_and_recover_from_disk() {
    let mut cluster = TestCluster::new(config());
    for id in 1..=3 {
        cluster.start(ReplicaId(id)).await;
    }
    cluster.initialize(1..=3).await;
    let first_leader = cluster.leader(None).await;

    assert_eq!(cluster.write(first_leader, create_tenant("acme")).await, Response::Done);
    assert_eq!(cluster.write(first_leader, submit_job("j1")).await, Response::Done);
    let set_running = Command::SetJobStatus { job: JobId("j1".into()), status: JobStatus::Running, at: UnixMillis(3) };
    assert_eq!(cluster.write(first_leader, set_running).await, Response::Done);
    for id in 1..=2 {
        let response = cluster.write(first_leader, commit_checkpoint("j1", id)).await;
        assert!(matches!(response, Response::CheckpointCommitted { .. }), "{response:?}");
    }
    // a rule broken is an answer, not a failed write
    let stale = cluster.write(first_leader, commit_checkpoint("j1", 1)).await;
    assert!(matches!(stale, Response::Rejected(ref r) if r.code() == "stale-checkpoint"), "{stale:?}");

    cluster.converge(first_leader).await;
    for (id, replica) in &cluster.replicas {
        assert_eq!(latest_checkpoint(&replica.reader, "j1"), Some(CheckpointId(2)), "on {id}");
        let status = replica.reader.read(|s| s.job(&JobId("j1".into())).map(|j| j.status));
        assert_eq!(status, Some(JobStatus::Running), "on {id}");
    }

    // The leader dies; the other two elect a new one and keep accepting writes.
    cluster.stop(first_leader).await;
    let second_leader = cluster.leader(Some(first_leader)).await;
    assert_ne!(second_leader, first_leader);
    let response = cluster.write(second_leader, commit_checkpoint("j1", 3)).await;
    assert!(matches!(response, Response::CheckpointCommitted { .. }), "{response:?}");
    assert_eq!(cluster.write(second_leader, submit_job("j2")).await, Response::Done);
    cluster.converge(second_leader).await;
    for replica in cluster.replicas.values() {
        assert_eq!(latest_checkpoint(&replica.reader, "j1"), Some(CheckpointId(3)));
        assert!(replica.reader.read(|s| s.job(&JobId("j2".into())).is_some()));
    }

    // The old leader restarts from its data directory and catches up on what it missed.
    cluster.start(first_leader).await;
    let leader = cluster.leader(None).await;
    cluster.converge(leader).await;
    let restarted = &cluster.replicas[&first_leader].reader;
    assert_eq!(latest_checkpoint(restarted, "j1"), Some(CheckpointId(3)));
    assert!(restarted.read(|s| s.job(&JobId("j2".into())).is_some()));

    for id in 1..=3 {
        cluster.stop(ReplicaId(id)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_add_a_learner_promote_it_and_remove_a_voter() {
    // Snapshot often and keep no log behind it, so the new replica must be sent a snapshot.
    let mut cluster = TestCluster::new(Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..config()
    });
    for id in 1..=3 {
        cluster.start(ReplicaId(id)).await;
    }
    cluster.initialize(1..=3).await;
    let leader = cluster.leader(None).await;
    assert_eq!(cluster.write(leader, create_tenant("acme")).await, Response::Done);
    assert_eq!(cluster.write(leader, submit_job("j1")).await, Response::Done);
    for id in 1..=20 {
        cluster.write(leader, commit_checkpoint("j1", id)).await;
    }
    cluster
        .raft(leader)
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some(), "the leader purged its log")
        .await
        .expect("log purged after a snapshot");

    let newcomer = ReplicaId(4);
    cluster.start(newcomer).await;
    cluster.raft(leader).add_learner(newcomer, TestCluster::node(newcomer), true).await.expect("learner added");
    cluster.converge(leader).await;
    assert_eq!(
        latest_checkpoint(&cluster.replicas[&newcomer].reader, "j1"),
        Some(CheckpointId(20)),
        "the learner got the state through a snapshot"
    );

    // Promote the learner and remove one follower: {1,2,3} -> {1,2,3,4} minus a follower.
    let removed = (1..=3).map(ReplicaId).find(|id| *id != leader).expect("a follower exists");
    let voters: BTreeSet<ReplicaId> = (1..=4).map(ReplicaId).filter(|id| *id != removed).collect();
    cluster.raft(leader).change_membership(voters.clone(), false).await.expect("membership changes");
    for (id, replica) in &cluster.replicas {
        if *id == removed {
            continue;
        }
        replica
            .raft
            .wait(Some(WAIT))
            .voter_ids(voters.clone(), format!("{id} sees the new voters"))
            .await
            .expect("new membership applied");
    }
    cluster.stop(removed).await;

    // The cluster without the removed replica still has a quorum and takes writes.
    let response = cluster.write(leader, commit_checkpoint("j1", 21)).await;
    assert!(matches!(response, Response::CheckpointCommitted { .. }), "{response:?}");
    cluster.converge(leader).await;
    assert_eq!(latest_checkpoint(&cluster.replicas[&newcomer].reader, "j1"), Some(CheckpointId(21)));

    for id in voters {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_restarts_with_its_metadata() {
    // The standalone deployment: one replica, so everything after a restart comes from its disk
    // (the snapshot taken every few entries, then the log after it).
    let mut cluster = TestCluster::new(Config { snapshot_policy: SnapshotPolicy::LogsSinceLast(4), ..config() });
    let only = ReplicaId(1);
    cluster.start(only).await;
    cluster.initialize([1]).await;
    let leader = cluster.leader(None).await;
    assert_eq!(cluster.write(leader, create_tenant("acme")).await, Response::Done);
    assert_eq!(cluster.write(leader, submit_job("j1")).await, Response::Done);
    for id in 1..=10 {
        cluster.write(leader, commit_checkpoint("j1", id)).await;
    }
    cluster.stop(only).await;

    cluster.start(only).await;
    let leader = cluster.leader(None).await;
    assert_eq!(leader, only);
    cluster.converge(leader).await;
    let reader = &cluster.replicas[&only].reader;
    assert_eq!(latest_checkpoint(reader, "j1"), Some(CheckpointId(10)));
    let retained = reader.read(|s| s.job(&JobId("j1".into())).map(|j| j.checkpoints.len()));
    assert_eq!(retained, Some(3));
    // and it still takes writes
    let response = cluster.write(leader, commit_checkpoint("j1", 11)).await;
    assert!(matches!(response, Response::CheckpointCommitted { .. }), "{response:?}");
    cluster.stop(only).await;
}
