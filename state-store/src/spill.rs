//! An operator's door to its subtask's database between checkpoints: the keyed state it moved
//! out of its working set to stay under its memory budget, read back on demand.
//!
//! An operator keeps its hot keys in memory and, when over budget, writes the coldest out with
//! [`StateStore::write`]; a later row of such a key reads it back with [`StateStore::get_many`].
//! The database is the one checkpoints go to, so what was written out is part of the next
//! checkpoint without being written again, and a restore can leave every key in the database
//! until a row asks for it (lazy restore). Writes keep checkpoint order: a write made after a
//! barrier waits until the checkpoint of that barrier has taken its content (see
//! [`WriteGate`]), so it never leaks into an earlier checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use slatedb::config::{PutOptions, Ttl};
use slatedb::{Db, WriteBatch};

use crate::compaction::CompactionTrigger;
use crate::error::{Result, StateError};
use crate::ids::{OperatorId, StateId};
use crate::{keys, ttl};

/// Orders writes made outside snapshots after the checkpoints already begun: a snapshot takes a
/// ticket when it starts; its background upload marks it done once the checkpoint has its
/// content (or failed). A write waits until every ticket handed out is done.
#[derive(Debug)]
pub(crate) struct WriteGate {
    started: AtomicU64,
    done: tokio::sync::watch::Sender<u64>,
}

impl WriteGate {
    pub(crate) fn new() -> Arc<WriteGate> {
        Arc::new(WriteGate { started: AtomicU64::new(0), done: tokio::sync::watch::Sender::new(0) })
    }

    /// A snapshot starts: its ticket, to hand to [`WriteGate::finish`].
    pub(crate) fn begin(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn finish(&self, ticket: u64) {
        self.done.send_modify(|done| *done = (*done).max(ticket));
    }

    /// Waits until every snapshot begun so far has its checkpoint's content.
    async fn pass(&self) {
        let target = self.started.load(Ordering::SeqCst);
        let mut done = self.done.subscribe();
        // The sender lives in `self`: it cannot be dropped while we wait.
        let _ = done.wait_for(|d| *d >= target).await;
    }
}

/// One key of an operator's state: which state, its key group and its user key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreKey {
    pub state: StateId,
    pub key_group: u16,
    pub key: Box<[u8]>,
}

/// One change to write out: a value (with, under a state TTL, how long it may still live, so the
/// database's compaction drops it once expired), or a deletion.
#[derive(Debug)]
pub enum StoreWrite {
    Put { key: StoreKey, value: Vec<u8>, expires_in: Option<std::time::Duration> },
    Delete(StoreKey),
}

/// Reads kept in flight at once by [`StateStore::get_many`].
const CONCURRENT_GETS: usize = 64;

/// An operator's handle on its subtask's database. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    db: Db,
    path: Arc<str>,
    operator: OperatorId,
    gate: Arc<WriteGate>,
    compaction: Option<Arc<CompactionTrigger>>,
}

impl StateStore {
    pub(crate) fn new(
        db: Db,
        path: Arc<str>,
        operator: OperatorId,
        gate: Arc<WriteGate>,
        compaction: Option<Arc<CompactionTrigger>>,
    ) -> StateStore {
        StateStore { db, path, operator, gate, compaction }
    }

    /// The same database, for another operator of the task.
    pub fn for_operator(&self, operator: OperatorId) -> StateStore {
        StateStore { operator, ..self.clone() }
    }

    fn db_error(&self) -> impl Fn(slatedb::Error) -> StateError + '_ {
        move |e| StateError::db(&self.path, e)
    }

    /// The stored value of each key (`None`: not stored), in order. Values a state TTL has
    /// expired are the operator's to judge: they are returned as stored.
    pub async fn get_many(&self, wanted: &[StoreKey]) -> Result<Vec<Option<Bytes>>> {
        let stored_keys: Vec<Vec<u8>> =
            wanted.iter().map(|k| keys::state_key(self.operator, k.key_group, k.state, &k.key)).collect();
        let reads = stored_keys.into_iter().map(|key| read(self.db.clone(), key));
        let found: Vec<std::result::Result<Option<Bytes>, slatedb::Error>> =
            futures::stream::iter(reads).buffered(CONCURRENT_GETS).collect().await;
        let mut values = Vec::with_capacity(found.len());
        for stored in found {
            values.push(match stored.map_err(self.db_error())? {
                Some(stored) => Some(ttl::unwrap(&stored)?.payload),
                None => None,
            });
        }
        Ok(values)
    }

    /// Writes `changes` as one batch (a later change of a key wins over an earlier one), once
    /// every checkpoint begun so far has taken its content.
    pub async fn write(&self, changes: Vec<StoreWrite>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for change in changes {
            match change {
                StoreWrite::Put { key, value, expires_in } => {
                    let stored_key = keys::state_key(self.operator, key.key_group, key.state, &key.key);
                    let stored = ttl::wrap(&value, None);
                    let options = PutOptions {
                        ttl: match expires_in {
                            // SlateDB counts whole milliseconds; at least one, or it would be "none".
                            Some(d) => Ttl::ExpireAfterMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
                            None => Ttl::Default,
                        },
                    };
                    batch.put_bytes_with_options(Bytes::from(stored_key), stored, &options);
                }
                StoreWrite::Delete(key) => {
                    batch.delete(keys::state_key(self.operator, key.key_group, key.state, &key.key));
                }
            }
        }
        self.gate.pass().await;
        self.db.write(batch).await.map_err(self.db_error())?;
        // The write may have filled a memtable, which becomes an L0 SST.
        if let Some(trigger) = &self.compaction {
            trigger.check(&self.db);
        }
        Ok(())
    }
}

async fn read(db: Db, key: Vec<u8>) -> std::result::Result<Option<Bytes>, slatedb::Error> {
    db.get(&key).await
}
