//! Keyed state primitives, Flink's: value, list, map, reducing and aggregating state.
//!
//! Each is a small copyable descriptor (operator + state id) whose methods take the subtask's
//! [`KeyedStateBackend`], the key group and the user key. Values are bytes: operators encode
//! their rows (Arrow row format, fixed-width accumulators) themselves. Writes are synchronous
//! and only touch the working set; reads are async because a miss goes to SlateDB.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{KeyedStateBackend, ValueKind};
use crate::error::{Result, StateError};
use crate::ids::{OperatorId, StateId};
use crate::keys;
use crate::ttl;

fn checked(operator: OperatorId, state: StateId) -> Result<(OperatorId, StateId)> {
    if state.0 >= keys::MAX_USER_STATE_ID {
        return Err(StateError::ReservedStateId(state.0));
    }
    Ok((operator, state))
}

/// Reads one value with an expiry header; expired values read as absent and are deleted.
async fn get_single(backend: &mut KeyedStateBackend, key: Vec<u8>) -> Result<Option<Bytes>> {
    let Some(stored) = backend.load(&key, ValueKind::Single).await? else {
        return Ok(None);
    };
    let value = ttl::unwrap(&stored)?;
    if value.is_expired(backend.now()) {
        backend.remove(key);
        return Ok(None);
    }
    if backend.refresh_on_read() {
        let rewrapped = ttl::wrap(&value.payload, backend.expire_at());
        backend.store(key, rewrapped, ValueKind::Single);
    }
    Ok(Some(value.payload))
}

fn put_single(backend: &mut KeyedStateBackend, key: Vec<u8>, value: &[u8]) {
    let stored = ttl::wrap(value, backend.expire_at());
    backend.store(key, stored, ValueKind::Single);
}

/// One value per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueState {
    operator: OperatorId,
    state: StateId,
}

impl ValueState {
    pub fn new(operator: OperatorId, state: StateId) -> Result<ValueState> {
        let (operator, state) = checked(operator, state)?;
        Ok(ValueState { operator, state })
    }

    fn key(&self, backend: &KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Vec<u8>> {
        Ok(keys::state_key(self.operator, backend.check_key_group(key_group)?, self.state, key))
    }

    pub async fn get(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Option<Bytes>> {
        let key = self.key(backend, key_group, key)?;
        get_single(backend, key).await
    }

    pub fn put(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let key = self.key(backend, key_group, key)?;
        put_single(backend, key, value);
        Ok(())
    }

    pub fn clear(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<()> {
        let key = self.key(backend, key_group, key)?;
        backend.remove(key);
        Ok(())
    }
}

/// A list of values per key. Each element has its own TTL, as in Flink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListState {
    operator: OperatorId,
    state: StateId,
}

impl ListState {
    pub fn new(operator: OperatorId, state: StateId) -> Result<ListState> {
        let (operator, state) = checked(operator, state)?;
        Ok(ListState { operator, state })
    }

    fn key(&self, backend: &KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Vec<u8>> {
        Ok(keys::state_key(self.operator, backend.check_key_group(key_group)?, self.state, key))
    }

    /// The live elements, still wrapped with their expiry; rewrites the list if some expired.
    async fn live_elements(backend: &mut KeyedStateBackend, key: &[u8]) -> Result<Vec<Bytes>> {
        let Some(stored) = backend.load(key, ValueKind::List).await? else {
            return Ok(Vec::new());
        };
        let elements = ttl::decode_list(&stored)?;
        if backend.ttl().is_none() {
            return Ok(elements);
        }
        let now = backend.now();
        let total = elements.len();
        let mut live = Vec::with_capacity(total);
        for element in elements {
            if !ttl::unwrap(&element)?.is_expired(now) {
                live.push(element);
            }
        }
        if live.len() != total {
            Self::store_elements(backend, key.to_vec(), &live);
        }
        Ok(live)
    }

    fn store_elements(backend: &mut KeyedStateBackend, key: Vec<u8>, elements: &[Bytes]) {
        if elements.is_empty() {
            backend.remove(key);
        } else {
            backend.store(key, ttl::encode_list(elements), ValueKind::List);
        }
    }

    pub async fn get(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Vec<Bytes>> {
        let key = self.key(backend, key_group, key)?;
        let live = Self::live_elements(backend, &key).await?;
        let mut payloads = Vec::with_capacity(live.len());
        for element in &live {
            payloads.push(ttl::unwrap(element)?.payload);
        }
        if backend.refresh_on_read() && !payloads.is_empty() {
            let expire_at = backend.expire_at();
            let rewrapped: Vec<Bytes> = payloads.iter().map(|p| ttl::wrap(p, expire_at)).collect();
            Self::store_elements(backend, key, &rewrapped);
        }
        Ok(payloads)
    }

    pub async fn add(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let key = self.key(backend, key_group, key)?;
        let mut live = Self::live_elements(backend, &key).await?;
        live.push(ttl::wrap(value, backend.expire_at()));
        Self::store_elements(backend, key, &live);
        Ok(())
    }

    /// Replaces the whole list.
    pub fn update(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], values: &[&[u8]]) -> Result<()> {
        let key = self.key(backend, key_group, key)?;
        let expire_at = backend.expire_at();
        let wrapped: Vec<Bytes> = values.iter().map(|v| ttl::wrap(v, expire_at)).collect();
        Self::store_elements(backend, key, &wrapped);
        Ok(())
    }

    pub fn clear(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<()> {
        let key = self.key(backend, key_group, key)?;
        backend.remove(key);
        Ok(())
    }
}

/// A map per key; every entry is its own SlateDB key (and has its own TTL), so one entry can
/// change without rewriting the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapState {
    operator: OperatorId,
    state: StateId,
}

impl MapState {
    pub fn new(operator: OperatorId, state: StateId) -> Result<MapState> {
        let (operator, state) = checked(operator, state)?;
        Ok(MapState { operator, state })
    }

    fn entry_key(&self, backend: &KeyedStateBackend, key_group: u32, key: &[u8], map_key: &[u8]) -> Result<Vec<u8>> {
        Ok(keys::map_entry_key(self.operator, backend.check_key_group(key_group)?, self.state, key, map_key))
    }

    pub async fn get(
        &self,
        backend: &mut KeyedStateBackend,
        key_group: u32,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Bytes>> {
        let entry = self.entry_key(backend, key_group, key, map_key)?;
        get_single(backend, entry).await
    }

    pub async fn contains(
        &self,
        backend: &mut KeyedStateBackend,
        key_group: u32,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<bool> {
        Ok(self.get(backend, key_group, key, map_key).await?.is_some())
    }

    pub fn put(
        &self,
        backend: &mut KeyedStateBackend,
        key_group: u32,
        key: &[u8],
        map_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let entry = self.entry_key(backend, key_group, key, map_key)?;
        put_single(backend, entry, value);
        Ok(())
    }

    pub fn remove(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], map_key: &[u8]) -> Result<()> {
        let entry = self.entry_key(backend, key_group, key, map_key)?;
        backend.remove(entry);
        Ok(())
    }

    /// The live entries of `key`'s map as (map key, value), in map-key byte order. Expired
    /// entries are left out and deleted.
    pub async fn entries(
        &self,
        backend: &mut KeyedStateBackend,
        key_group: u32,
        key: &[u8],
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let prefix = keys::map_prefix(self.operator, backend.check_key_group(key_group)?, self.state, key);
        let end = keys::prefix_end(&prefix);
        let found = backend.scan_range(&prefix, end.as_deref()).await?;
        let now = backend.now();
        let mut entries = Vec::with_capacity(found.len());
        let mut expired = Vec::new();
        for (entry_key, stored) in found {
            let value = ttl::unwrap(&stored)?;
            if value.is_expired(now) {
                expired.push(entry_key);
                continue;
            }
            let map_key = Bytes::copy_from_slice(&entry_key[prefix.len()..]);
            entries.push((map_key, value.payload));
        }
        for entry_key in expired {
            backend.remove(entry_key);
        }
        Ok(entries)
    }

    pub async fn is_empty(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<bool> {
        Ok(self.entries(backend, key_group, key).await?.is_empty())
    }

    /// Removes every entry of `key`'s map.
    pub async fn clear(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<()> {
        let prefix = keys::map_prefix(self.operator, backend.check_key_group(key_group)?, self.state, key);
        let end = keys::prefix_end(&prefix);
        let found = backend.scan_range(&prefix, end.as_deref()).await?;
        for entry_key in found.into_keys() {
            backend.remove(entry_key);
        }
        Ok(())
    }
}

/// Combines the stored value with a new one (Flink's `ReduceFunction`).
pub type ReduceFn = Arc<dyn Fn(&[u8], &[u8]) -> Bytes + Send + Sync>;
/// Folds an input into an accumulator, `None` when there is none yet (Flink's
/// `AggregateFunction::add` with `createAccumulator` folded in).
pub type AggregateFn = Arc<dyn Fn(Option<&[u8]>, &[u8]) -> Bytes + Send + Sync>;

/// One value per key, combined with every added value by a caller-supplied function.
#[derive(Clone)]
pub struct ReducingState {
    value: ValueState,
    reduce: ReduceFn,
}

impl fmt::Debug for ReducingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReducingState").field("value", &self.value).finish_non_exhaustive()
    }
}

impl ReducingState {
    pub fn new(operator: OperatorId, state: StateId, reduce: ReduceFn) -> Result<ReducingState> {
        Ok(ReducingState { value: ValueState::new(operator, state)?, reduce })
    }

    pub async fn get(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Option<Bytes>> {
        self.value.get(backend, key_group, key).await
    }

    pub async fn add(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let combined = match self.value.get(backend, key_group, key).await? {
            Some(current) => (self.reduce)(&current, value),
            None => Bytes::copy_from_slice(value),
        };
        self.value.put(backend, key_group, key, &combined)
    }

    pub fn clear(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<()> {
        self.value.clear(backend, key_group, key)
    }
}

/// One accumulator per key, into which inputs are folded by a caller-supplied function.
#[derive(Clone)]
pub struct AggregatingState {
    value: ValueState,
    add: AggregateFn,
}

impl fmt::Debug for AggregatingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatingState").field("value", &self.value).finish_non_exhaustive()
    }
}

impl AggregatingState {
    pub fn new(operator: OperatorId, state: StateId, add: AggregateFn) -> Result<AggregatingState> {
        Ok(AggregatingState { value: ValueState::new(operator, state)?, add })
    }

    /// The accumulator.
    pub async fn get(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<Option<Bytes>> {
        self.value.get(backend, key_group, key).await
    }

    pub async fn add(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8], input: &[u8]) -> Result<()> {
        let current = self.value.get(backend, key_group, key).await?;
        let next = (self.add)(current.as_deref(), input);
        self.value.put(backend, key_group, key, &next)
    }

    pub fn clear(&self, backend: &mut KeyedStateBackend, key_group: u32, key: &[u8]) -> Result<()> {
        self.value.clear(backend, key_group, key)
    }
}
