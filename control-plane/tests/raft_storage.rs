//! openraft's storage conformance suite against the `redb` log and state-machine store, plus
//! recovery of the state machine from its snapshot after the store is reopened.

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::vote::leader_id_std::CommittedLeaderId;
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;
use weir_control_plane::metadata::Command;
use weir_control_plane::metadata::ids::{TenantId, UnixMillis};
use weir_control_plane::raft::{LogStore, RaftStore, StateMachineStore, TypeConfig};

struct RedbStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let store = RaftStore::open(dir.path())
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, std::io::Error::other(e)))?;
        Ok((dir, store.log, store.state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_the_redb_store() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RedbStoreBuilder).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_recovers_from_its_snapshot_after_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let command =
        Command::CreateTenant { tenant: TenantId::from("acme"), display_name: "Acme".into(), at: UnixMillis(1) };
    let snapshot_log_id = {
        let mut store = RaftStore::open(dir.path()).await.expect("opens");
        let log_id = openraft::LogId::new(CommittedLeaderId::new(1), 1);
        let entry = openraft::Entry { log_id, payload: openraft::EntryPayload::Normal(command) };
        let items = futures::stream::iter([Ok((entry, None))]);
        store.state_machine.apply(items).await.expect("applies");
        let mut builder = store.state_machine.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.expect("builds");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id));
        // the log side is independent of the snapshot and starts empty
        let state = store.log.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, None);
        log_id
    };
    let mut reopened = RaftStore::open(dir.path()).await.expect("reopens");
    let (last_applied, _) = reopened.state_machine.applied_state().await.expect("applied state");
    assert_eq!(last_applied, Some(snapshot_log_id));
    let reader = reopened.state_machine.reader();
    assert!(reader.read(|state| state.tenant(&TenantId::from("acme")).is_some()));
}
