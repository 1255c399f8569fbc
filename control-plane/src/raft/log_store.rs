//! The Raft log on local disk: entries, the vote, the committed log id and the last purged log
//! id, in the replica's `redb` file (see `store`).
//!
//! `append` reports an entry as flushed only after its write transaction committed durably, which
//! is what lets openraft count this replica toward a quorum.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::store::{
    COMMITTED_KEY, LAST_PURGED_KEY, LOG, LOG_META, VOTE_KEY, blocking, from_json, read_record, to_json,
};
use super::{Entry, LogId, TypeConfig, Vote};

/// The log half of a replica's Raft storage; also its own log reader (readers share the file).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> io::Result<()> {
        let bytes = to_json(value)?;
        blocking(&self.db, move |db| {
            let mut txn = db.begin_write().map_err(io::Error::other)?;
            txn.set_durability(durability).map_err(io::Error::other)?;
            {
                let mut table = txn.open_table(LOG_META).map_err(io::Error::other)?;
                table.insert(key, bytes.as_slice()).map_err(io::Error::other)?;
            }
            txn.commit().map_err(io::Error::other)
        })
        .await
    }

    async fn read_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> io::Result<Option<T>> {
        blocking(&self.db, move |db| read_record(db, LOG_META, key)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(&self.db, move |db| {
            let txn = db.begin_read().map_err(io::Error::other)?;
            let table = txn.open_table(LOG).map_err(io::Error::other)?;
            let mut entries = Vec::new();
            for row in table.range::<u64>(bounds).map_err(io::Error::other)? {
                let (_, value) = row.map_err(io::Error::other)?;
                entries.push(from_json::<Entry>(value.value())?);
            }
            Ok(entries)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE_KEY).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        blocking(&self.db, |db| {
            let last_purged_log_id: Option<LogId> = read_record(db, LOG_META, LAST_PURGED_KEY)?;
            let txn = db.begin_read().map_err(io::Error::other)?;
            let table = txn.open_table(LOG).map_err(io::Error::other)?;
            let last_log_id = match table.last().map_err(io::Error::other)? {
                Some((_, value)) => Some(from_json::<Entry>(value.value())?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must survive a crash, or this replica could vote twice in one term.
        self.write_meta(VOTE_KEY, vote, Durability::Immediate).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The committed id is only a hint for re-applying the log on restart; losing the newest
        // one is safe (less is re-applied, the rest arrives from the leader). Without an fsync of
        // its own it becomes durable with the next durable commit (a vote or an append).
        self.write_meta(COMMITTED_KEY, &committed, Durability::None).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, to_json(&entry)?)))
            .collect::<io::Result<Vec<_>>>()?;
        let result = blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(io::Error::other)?;
            {
                let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io::Error::other)?;
                }
            }
            // Durability::Immediate (redb's default): commit returns once the data is on disk.
            txn.commit().map_err(io::Error::other)
        })
        .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                callback.io_completed(Err(error));
                Err(io::Error::other(message))
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index + 1);
        blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(io::Error::other)?;
            {
                let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
                table.retain_in(first_removed.., |_, _| false).map_err(io::Error::other)?;
            }
            txn.commit().map_err(io::Error::other)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let last_purged = to_json(&log_id)?;
        blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(io::Error::other)?;
            {
                // The purge mark and the removal commit together: a crash between them must not
                // leave a log whose first entry is missing without saying so.
                let mut meta = txn.open_table(LOG_META).map_err(io::Error::other)?;
                meta.insert(LAST_PURGED_KEY, last_purged.as_slice()).map_err(io::Error::other)?;
                let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(io::Error::other)?;
            }
            txn.commit().map_err(io::Error::other)
        })
        .await
    }
}
