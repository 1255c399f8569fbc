//! The Raft state machine of a replica: the [`MetadataState`] in memory, what was applied last,
//! the membership, and the latest snapshot durably in the replica's `redb` file.
//!
//! Applying only changes memory; durability comes from the log (openraft re-applies committed
//! entries after a restart, from the last snapshot on). A snapshot is the whole state serialized
//! as JSON: the metadata is small (jobs, workers, checkpoint references), so there is no need for
//! incremental snapshots.

use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::Database;
use serde::{Deserialize, Serialize};

use super::store::{SNAPSHOT, SNAPSHOT_DATA_KEY, SNAPSHOT_META_KEY, blocking, from_json, read_record, to_json};
use super::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use crate::metadata::{MetadataState, Response};

/// What the state machine holds: the metadata plus Raft's bookkeeping of how far it got.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    metadata: MetadataState,
}

/// A read-only view of a replica's applied metadata, for the API and the leader's services.
/// Reads see this replica's state: up to date on the leader after `ensure_linearizable`,
/// possibly behind on a follower.
#[derive(Clone)]
pub struct MetadataReader {
    applied: Arc<RwLock<Applied>>,
}

impl MetadataReader {
    /// Runs `read` against the current metadata. Keep it short: it holds the read lock.
    pub fn read<T>(&self, read: impl FnOnce(&MetadataState) -> T) -> T {
        read(&lock_read(&self.applied).metadata)
    }

    /// The last log id the metadata reflects.
    pub fn last_applied(&self) -> Option<LogId> {
        lock_read(&self.applied).last_applied
    }
}

fn lock_read(applied: &RwLock<Applied>) -> RwLockReadGuard<'_, Applied> {
    // A poisoned lock means an apply panicked halfway; the replica must not serve that state.
    applied.read().expect("the state machine lock is never poisoned: apply does not panic")
}

/// The state-machine half of a replica's Raft storage.
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
}

impl StateMachineStore {
    /// Loads the latest snapshot, if any, as the starting state.
    pub(crate) async fn recover(db: Arc<Database>) -> io::Result<StateMachineStore> {
        let stored = blocking(&db, |db| {
            let meta: Option<SnapshotMeta> = read_record(db, SNAPSHOT, SNAPSHOT_META_KEY)?;
            let data = read_snapshot_data(db)?;
            Ok(meta.zip(data))
        })
        .await?;
        let applied = match stored {
            Some((meta, data)) => Applied {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership,
                metadata: from_json(&data)?,
            },
            None => Applied::default(),
        };
        Ok(StateMachineStore { db, applied: Arc::new(RwLock::new(applied)) })
    }

    pub fn reader(&self) -> MetadataReader {
        MetadataReader { applied: self.applied.clone() }
    }

    async fn save_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        let meta = to_json(meta)?;
        blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(io::Error::other)?;
            {
                let mut table = txn.open_table(SNAPSHOT).map_err(io::Error::other)?;
                table.insert(SNAPSHOT_META_KEY, meta.as_slice()).map_err(io::Error::other)?;
                table.insert(SNAPSHOT_DATA_KEY, data.as_slice()).map_err(io::Error::other)?;
            }
            txn.commit().map_err(io::Error::other)
        })
        .await
    }
}

fn read_snapshot_data(db: &Database) -> io::Result<Option<Vec<u8>>> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(io::Error::other)?;
    let table = txn.open_table(SNAPSHOT).map_err(io::Error::other)?;
    Ok(table.get(SNAPSHOT_DATA_KEY).map_err(io::Error::other)?.map(|bytes| bytes.value().to_vec()))
}

/// Builds a snapshot of the state as it is when the builder runs.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let applied = lock_read(&self.applied);
            let meta =
                SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.last_membership.clone() };
            (meta, to_json(&applied.metadata)?)
        };
        let store = StateMachineStore { db: self.db.clone(), applied: self.applied.clone() };
        store.save_snapshot(&meta, data.clone()).await?;
        tracing::debug!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot { meta, snapshot: SnapshotData::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = lock_read(&self.applied);
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = {
                let mut applied =
                    self.applied.write().expect("the state machine lock is never poisoned: apply does not panic");
                applied.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Response::Done,
                    EntryPayload::Normal(command) => applied.metadata.apply(command),
                    EntryPayload::Membership(membership) => {
                        applied.last_membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                        Response::Done
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), applied: self.applied.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let metadata: MetadataState = from_json(&data)?;
        // Persist first: if the replica crashes right after, it restarts from this snapshot.
        self.save_snapshot(meta, data).await?;
        let mut applied = self.applied.write().expect("the state machine lock is never poisoned: apply does not panic");
        *applied = Applied { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone(), metadata };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let stored = blocking(&self.db, |db| {
            let meta: Option<SnapshotMeta> = read_record(db, SNAPSHOT, SNAPSHOT_META_KEY)?;
            let data = read_snapshot_data(db)?;
            Ok(meta.zip(data))
        })
        .await?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: SnapshotData::new(data) }))
    }
}
