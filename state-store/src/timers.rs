//! Event-time and processing-time timers of keyed operators.
//!
//! A timer is (timestamp, key group, key), unique per operator and time domain: registering it
//! twice keeps one. Timers live in memory in time order, are loaded from SlateDB the first time
//! an operator touches them after a restore, and are written back with the rest of the state at
//! a checkpoint. Firing is driven by the caller (`advance_to` with the watermark or the
//! processing time), never by a clock here.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::backend::KeyedStateBackend;
use crate::error::Result;
use crate::ids::OperatorId;
use crate::keys::{self, TimeDomain};

/// A due or registered timer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub timestamp: i64,
    pub key_group: u32,
    pub key: Bytes,
}

type TimerEntry = (i64, u16, Bytes);

/// The timers of one operator in one domain, and what changed since the last write-back
/// (`true`: registered, `false`: deleted or fired).
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    pub queue: BTreeSet<TimerEntry>,
    pub changes: BTreeMap<TimerEntry, bool>,
}

/// The timers of one operator in one time domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerService {
    operator: OperatorId,
    domain: TimeDomain,
}

impl TimerService {
    pub fn new(operator: OperatorId, domain: TimeDomain) -> TimerService {
        TimerService { operator, domain }
    }

    async fn queue<'b>(&self, backend: &'b mut KeyedStateBackend) -> Result<&'b mut TimerQueue> {
        let id = (self.operator, self.domain);
        if !backend.timers.contains_key(&id) {
            let mut loaded = TimerQueue::default();
            let range = backend.key_groups();
            for key_group in range.start..=range.end {
                // validate() keeps owned key groups below 2^15.
                let prefix = keys::timer_prefix(self.operator, key_group as u16, self.domain);
                for (stored_key, _) in backend.scan_db_prefix(&prefix).await? {
                    let header = keys::decode_header(&stored_key)?;
                    let (timestamp, user_key) = keys::decode_timer_rest(header.rest)?;
                    loaded.queue.insert((timestamp, header.key_group, Bytes::copy_from_slice(user_key)));
                }
            }
            backend.timers.insert(id, loaded);
        }
        Ok(backend.timers.get_mut(&id).expect("the queue was inserted above"))
    }

    /// Registers a timer; `false` when it was already registered.
    pub async fn register(
        &self,
        backend: &mut KeyedStateBackend,
        timestamp: i64,
        key_group: u32,
        key: &[u8],
    ) -> Result<bool> {
        let key_group = backend.check_key_group(key_group)?;
        let queue = self.queue(backend).await?;
        let entry = (timestamp, key_group, Bytes::copy_from_slice(key));
        if queue.queue.insert(entry.clone()) {
            queue.changes.insert(entry, true);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Deletes a timer; `false` when there was none.
    pub async fn delete(
        &self,
        backend: &mut KeyedStateBackend,
        timestamp: i64,
        key_group: u32,
        key: &[u8],
    ) -> Result<bool> {
        let key_group = backend.check_key_group(key_group)?;
        let queue = self.queue(backend).await?;
        let entry = (timestamp, key_group, Bytes::copy_from_slice(key));
        if queue.queue.remove(&entry) {
            queue.changes.insert(entry, false);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Removes and returns, in (timestamp, key group, key) order, every timer at or before
    /// `time` (the watermark, or the current processing time).
    pub async fn advance_to(&self, backend: &mut KeyedStateBackend, time: i64) -> Result<Vec<Timer>> {
        let queue = self.queue(backend).await?;
        let mut due = Vec::new();
        while let Some(first) = queue.queue.first() {
            if first.0 > time {
                break;
            }
            let entry = queue.queue.pop_first().expect("first() was Some");
            due.push(Timer { timestamp: entry.0, key_group: u32::from(entry.1), key: entry.2.clone() });
            queue.changes.insert(entry, false);
        }
        Ok(due)
    }

    /// The earliest registered timestamp.
    pub async fn next_timestamp(&self, backend: &mut KeyedStateBackend) -> Result<Option<i64>> {
        Ok(self.queue(backend).await?.queue.first().map(|entry| entry.0))
    }

    /// How many timers are registered.
    pub async fn len(&self, backend: &mut KeyedStateBackend) -> Result<usize> {
        Ok(self.queue(backend).await?.queue.len())
    }
}
