//! One replica's Raft storage on local disk: a single `redb` file holding the log, the vote,
//! the committed log id and the latest snapshot. [`RaftStore::open`] hands out the two halves
//! openraft wants, [`LogStore`] and [`StateMachineStore`], sharing that file.
//!
//! redb is synchronous; every access runs on tokio's blocking pool, and a write transaction
//! commits with `Durability::Immediate` (fsync) before anything is reported as stored.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;

/// Log entries by index, JSON-encoded.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small records of the log side: [`VOTE_KEY`], [`COMMITTED_KEY`], [`LAST_PURGED_KEY`].
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
/// The latest snapshot: [`SNAPSHOT_META_KEY`] and [`SNAPSHOT_DATA_KEY`], written together.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

pub(crate) const VOTE_KEY: &str = "vote";
pub(crate) const COMMITTED_KEY: &str = "committed";
pub(crate) const LAST_PURGED_KEY: &str = "last_purged";
pub(crate) const SNAPSHOT_META_KEY: &str = "meta";
pub(crate) const SNAPSHOT_DATA_KEY: &str = "data";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the raft data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the raft store {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
}

/// A replica's Raft storage, opened from its data directory.
pub struct RaftStore {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
}

impl RaftStore {
    /// The file name inside the data directory.
    pub const FILE_NAME: &'static str = "raft.redb";

    /// Opens (or creates) `DIR/raft.redb` and recovers the state machine from its snapshot.
    /// Log entries after the snapshot are re-applied by openraft when the replica starts.
    pub async fn open(dir: &Path) -> Result<RaftStore, StoreError> {
        let path = dir.join(Self::FILE_NAME);
        let dir = dir.to_path_buf();
        let open_path = path.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Database, StoreError> {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
            let open_error = |source: io::Error| StoreError::Open { path: open_path.clone(), source };
            let db = Database::create(&open_path).map_err(|e| open_error(io::Error::other(e)))?;
            create_tables(&db).map_err(open_error)?;
            Ok(db)
        })
        .await
        .map_err(|e| StoreError::Open { path: path.clone(), source: io::Error::other(e) })??;
        let db = Arc::new(opened);
        let state_machine =
            StateMachineStore::recover(db.clone()).await.map_err(|source| StoreError::Open { path, source })?;
        Ok(RaftStore { log: LogStore::new(db), state_machine })
    }
}

/// Creates every table so that read transactions never meet a missing one.
fn create_tables(db: &Database) -> io::Result<()> {
    let txn = db.begin_write().map_err(io::Error::other)?;
    txn.open_table(LOG).map_err(io::Error::other)?;
    txn.open_table(LOG_META).map_err(io::Error::other)?;
    txn.open_table(SNAPSHOT).map_err(io::Error::other)?;
    txn.commit().map_err(io::Error::other)
}

/// Runs blocking redb work off the async threads.
pub(crate) async fn blocking<T, F>(db: &Arc<Database>, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> io::Result<T> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&db)).await.map_err(io::Error::other)?
}

/// Reads one JSON record of a `&str`-keyed table.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    let txn = db.begin_read().map_err(io::Error::other)?;
    let table = txn.open_table(table).map_err(io::Error::other)?;
    match table.get(key).map_err(io::Error::other)? {
        Some(bytes) => {
            serde_json::from_slice(bytes.value()).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        None => Ok(None),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
