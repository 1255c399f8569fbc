//! Shared helpers for keyed operators: grouping rows by key columns, and reading event time.

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow_row::{Row, RowConverter, RowParser, Rows, SortField};
use hashbrown::HashTable;
use weir_dataflow::keygroup::stable_hash;

use crate::error::TaskResult;

/// Event time of a timestamp column as milliseconds (any time unit or zone); nulls stay null.
pub fn timestamp_millis(array: &ArrayRef) -> TaskResult<TimestampMillisecondArray> {
    let target = DataType::Timestamp(TimeUnit::Millisecond, None);
    let ms = match array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, None) => array.clone(),
        _ => cast(array, &target)?,
    };
    Ok(ms.as_any().downcast_ref::<TimestampMillisecondArray>().expect("cast to timestamp(ms)").clone())
}

/// Interns byte strings (encoded keys) as dense ids. Each key is its own allocation, so a
/// removed key's memory is reused at once (a table whose keys come and go — a working set under
/// a budget — never holds dead bytes, nor copies its keys to compact them); the hash table holds
/// only ids. An entry costs its bytes plus about 40 bytes.
#[derive(Default)]
pub struct KeyTable {
    table: HashTable<u32>,
    /// Per id: its key (`None`: a free id).
    keys: Vec<Option<Box<[u8]>>>,
    hashes: Vec<u64>,
    free: Vec<u32>,
    /// Bytes of the live keys.
    key_bytes: usize,
}

impl KeyTable {
    pub fn key(&self, id: u32) -> &[u8] {
        self.keys[id as usize].as_deref().unwrap_or_default()
    }

    /// The [`stable_hash`] of key `id`'s bytes, kept from when it was interned.
    pub fn hash(&self, id: u32) -> u64 {
        self.hashes[id as usize]
    }

    pub fn get(&self, bytes: &[u8]) -> Option<u32> {
        let hash = stable_hash(bytes);
        let keys = &self.keys;
        self.table.find(hash, |&id| keys[id as usize].as_deref() == Some(bytes)).copied()
    }

    /// The id of `bytes`, adding it if new (`true` when new).
    pub fn intern(&mut self, bytes: &[u8]) -> (u32, bool) {
        if let Some(id) = self.get(bytes) {
            return (id, false);
        }
        let hash = stable_hash(bytes);
        let key = Some(Box::from(bytes));
        self.key_bytes += bytes.len();
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id as usize] = key;
                self.hashes[id as usize] = hash;
                id
            }
            None => {
                self.keys.push(key);
                self.hashes.push(hash);
                (self.keys.len() - 1) as u32
            }
        };
        let hashes = &self.hashes;
        self.table.insert_unique(hash, id, |&other| hashes[other as usize]);
        (id, true)
    }

    /// Forgets an id; it is reused.
    pub fn remove(&mut self, id: u32) {
        let hash = self.hashes[id as usize];
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        if let Some(key) = self.keys[id as usize].take() {
            self.key_bytes -= key.len();
            self.free.push(id);
        }
    }

    /// Whether `id` names a key (not a free id).
    pub fn is_live(&self, id: u32) -> bool {
        self.keys.get(id as usize).is_some_and(Option::is_some)
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.keys.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the live keys.
    pub fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// One more than the largest id handed out: the length for dense per-id vectors.
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }
}

/// Maps key rows to dense group ids, keeping the key of each group for output.
pub struct GroupKeys {
    converter: RowConverter,
    parser: RowParser,
    num_keys: usize,
    table: KeyTable,
}

impl GroupKeys {
    /// The encoded key of a group.
    pub fn key(&self, id: usize) -> &[u8] {
        self.table.key(id as u32)
    }

    /// The group of an encoded key, creating it if new.
    pub fn intern_bytes(&mut self, key: &[u8]) -> (usize, bool) {
        let (id, new) = self.table.intern(key);
        (id as usize, new)
    }

    pub fn try_new(schema: &SchemaRef, columns: &[usize]) -> TaskResult<Self> {
        let fields = columns.iter().map(|c| SortField::new(schema.field(*c).data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let parser = converter.parser();
        Ok(GroupKeys { converter, parser, num_keys: columns.len(), table: KeyTable::default() })
    }

    /// The encoded key of every row.
    pub fn rows(&self, columns: &[ArrayRef]) -> TaskResult<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The group id of every row, and whether the row created its group. Rows of a batch with
    /// no key columns all belong to one group.
    pub fn assign(&mut self, columns: &[ArrayRef], num_rows: usize) -> TaskResult<Vec<(usize, bool)>> {
        if columns.is_empty() {
            let (id, new) = self.table.intern(&[]);
            let mut out = vec![(id as usize, false); num_rows];
            if let Some(first) = out.first_mut() {
                first.1 = new;
            }
            return Ok(out);
        }
        let rows = self.converter.convert_columns(columns)?;
        Ok(rows
            .iter()
            .map(|row| {
                let (id, new) = self.table.intern(row.data());
                (id as usize, new)
            })
            .collect())
    }

    /// The group id of `row`, creating the group if it is new (`true` when new).
    pub fn intern(&mut self, row: Row<'_>) -> (usize, bool) {
        let (id, new) = self.table.intern(row.data());
        (id as usize, new)
    }

    /// Forgets a group; its id is reused.
    pub fn remove(&mut self, id: usize) {
        self.table.remove(id as u32);
    }

    /// The key columns of the given groups, in order.
    pub fn key_columns(&self, groups: &[usize]) -> TaskResult<Vec<ArrayRef>> {
        if self.num_keys == 0 {
            return Ok(vec![]);
        }
        let rows = groups.iter().map(|g| self.parser.parse(self.table.key(*g as u32)));
        Ok(self.converter.convert_rows(rows)?)
    }

    /// Capacity for dense per-group vectors.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The [`stable_hash`] of a group's key.
    pub fn hash(&self, id: usize) -> u64 {
        self.table.hash(id as u32)
    }

    /// The group of an encoded key, if it is in memory.
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        self.table.get(key).map(|id| id as usize)
    }

    pub fn is_live(&self, id: usize) -> bool {
        self.table.is_live(id as u32)
    }

    /// How many groups are in memory.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes of the keys of the groups in memory.
    pub fn key_bytes(&self) -> usize {
        self.table.key_bytes()
    }
}

/// The key group of each row as the hash exchange into an operator computed it, so keyed state
/// is stored under the key group a restore at any parallelism will look in. Rows that reach an
/// operator without a hash exchange (a global one, of parallelism 1) all go to key group 0.
pub struct RowKeyGroups {
    hashed: Option<(Vec<usize>, RowConverter)>,
    max_parallelism: u32,
}

impl RowKeyGroups {
    pub fn new(
        schema: &SchemaRef,
        partitioning: &weir_dataflow::plan::Partitioning,
        max_parallelism: u32,
    ) -> TaskResult<Self> {
        let hashed = match partitioning {
            weir_dataflow::plan::Partitioning::Hash(columns) => {
                let fields = columns.iter().map(|c| SortField::new(schema.field(*c).data_type().clone())).collect();
                Some((columns.clone(), RowConverter::new(fields)?))
            }
            _ => None,
        };
        Ok(RowKeyGroups { hashed, max_parallelism })
    }

    pub fn of(&self, batch: &arrow::array::RecordBatch) -> TaskResult<Vec<u16>> {
        let Some((columns, converter)) = &self.hashed else {
            return Ok(vec![0; batch.num_rows()]);
        };
        let arrays: Vec<ArrayRef> = columns.iter().map(|c| batch.column(*c).clone()).collect();
        let rows = converter.convert_columns(&arrays)?;
        Ok(rows
            .iter()
            .map(|row| {
                weir_dataflow::keygroup::key_group_for_hash(stable_hash(row.as_ref()), self.max_parallelism) as u16
            })
            .collect())
    }
}

/// Which groups changed since the last checkpoint and which persisted ones went away: what a
/// keyed operator writes at the next checkpoint, so its size follows the change, not the state.
#[derive(Default)]
pub struct DirtyGroups {
    flags: Vec<bool>,
    changed: Vec<usize>,
    /// Per group: written at a checkpoint (so a removal must be written too).
    persisted: Vec<bool>,
    removed: Vec<RemovedKey>,
}

/// A key group and key whose state must be deleted at the next checkpoint.
pub type RemovedKey = (u16, Box<[u8]>);

impl DirtyGroups {
    fn ensure(&mut self, group: usize) {
        if group >= self.flags.len() {
            self.flags.resize(group + 1, false);
            self.persisted.resize(group + 1, false);
        }
    }

    pub fn touch(&mut self, group: usize) {
        self.ensure(group);
        if !self.flags[group] {
            self.flags[group] = true;
            self.changed.push(group);
        }
    }

    /// `group` is gone; its id may be reused at once.
    pub fn remove(&mut self, group: usize, key_group: u16, key: &[u8]) {
        self.ensure(group);
        if self.persisted[group] {
            self.removed.push((key_group, key.into()));
            self.persisted[group] = false;
        }
        // Left in `changed`: `take` skips it unless the id is reused and touched again.
        self.flags[group] = false;
    }

    /// `group` leaves memory while its key stays in the store; its id may be reused at once.
    /// Answers whether it changed since the store last had it (so it must be written out).
    pub fn evict(&mut self, group: usize) -> bool {
        self.ensure(group);
        self.persisted[group] = false;
        std::mem::replace(&mut self.flags[group], false)
    }

    /// The keys removed since the last checkpoint, whose deletions the caller now writes.
    pub fn take_removed(&mut self) -> Vec<RemovedKey> {
        std::mem::take(&mut self.removed)
    }

    /// Drops the entries of `changed` that no longer stand for a change (evicted or removed
    /// groups, repeats), so that it stays as long as the changed groups in memory even when no
    /// checkpoint takes it.
    pub fn compact(&mut self) {
        let flags = &mut self.flags;
        self.changed.retain(|g| std::mem::replace(&mut flags[*g], false));
        for g in &self.changed {
            self.flags[*g] = true;
        }
    }

    /// A group restored from a checkpoint (or read back from the store): stored already,
    /// unchanged since.
    pub fn restored(&mut self, group: usize) {
        self.ensure(group);
        self.persisted[group] = true;
    }

    /// Writes what changed since the last checkpoint under `state`: a deletion for each removed
    /// key, then each changed group's value (appended by `encode`) at its key. Deletions go
    /// first: a key removed and created again since the last checkpoint is in both, and its
    /// new value must win.
    pub fn write_changes(
        &mut self,
        ctx: &mut crate::checkpoint::SnapshotContext<'_>,
        state: weir_state_store::StateId,
        key_group_of: &[u16],
        keys: &GroupKeys,
        mut encode: impl FnMut(usize, &mut Vec<u8>) -> TaskResult<()>,
    ) -> TaskResult<()> {
        let (changed, removed) = self.take();
        for (key_group, key) in removed {
            ctx.delete(state, key_group as u32, &key)?;
        }
        let mut value = Vec::new();
        for g in changed {
            value.clear();
            encode(g, &mut value)?;
            ctx.put(state, key_group_of[g] as u32, keys.key(g), &value)?;
        }
        Ok(())
    }

    /// Takes the changed groups and the removed keys, marking the changed ones persisted.
    pub fn take(&mut self) -> (Vec<usize>, Vec<RemovedKey>) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.retain(|g| std::mem::replace(&mut self.flags[*g], false));
        for g in &changed {
            self.persisted[*g] = true;
        }
        (changed, std::mem::take(&mut self.removed))
    }
}

/// The keys an operator wrote to its store, as a Bloom filter that grows with them: a key it
/// never wrote is answered "absent" without a read of the store (almost always: about one in
/// a hundred and fifty absent keys is a false "maybe"). It cannot forget keys; a deleted key
/// stays a "maybe", which costs a read, never a wrong answer.
#[derive(Default)]
pub struct KeyFilter {
    /// Each layer holds up to its capacity of keys; a full one is followed by one twice as large.
    layers: Vec<FilterLayer>,
}

struct FilterLayer {
    bits: Vec<u64>,
    mask: u64,
    len: usize,
    capacity: usize,
}

/// Bits per key and probes: about 0.7% false positives per layer.
const FILTER_BITS_PER_KEY: usize = 12;
const FILTER_PROBES: u64 = 8;
const FIRST_LAYER_KEYS: usize = 1 << 16;

impl FilterLayer {
    fn new(capacity: usize) -> FilterLayer {
        let bits = (capacity * FILTER_BITS_PER_KEY).next_power_of_two().max(64);
        FilterLayer { bits: vec![0; bits / 64], mask: bits as u64 - 1, len: 0, capacity }
    }

    /// The `i`th bit of `hash`, by double hashing (the step is odd, so probes cover the table).
    fn probe(&self, hash: u64, i: u64) -> (usize, u64) {
        let step = hash.rotate_left(32).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let bit = hash.wrapping_add(i.wrapping_mul(step)) & self.mask;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn insert(&mut self, hash: u64) {
        for i in 0..FILTER_PROBES {
            let (word, bit) = self.probe(hash, i);
            self.bits[word] |= bit;
        }
        self.len += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        (0..FILTER_PROBES).all(|i| {
            let (word, bit) = self.probe(hash, i);
            self.bits[word] & bit != 0
        })
    }
}

impl KeyFilter {
    /// Remembers a key by its [`stable_hash`].
    pub fn insert(&mut self, hash: u64) {
        let full = self.layers.last().is_none_or(|l| l.len >= l.capacity);
        if full {
            let capacity = self.layers.last().map_or(FIRST_LAYER_KEYS, |l| l.capacity * 2);
            self.layers.push(FilterLayer::new(capacity));
        }
        self.layers.last_mut().expect("a layer was added").insert(hash);
    }

    /// Whether the key of `hash` may have been inserted.
    pub fn may_contain(&self, hash: u64) -> bool {
        self.layers.iter().any(|l| l.may_contain(hash))
    }

    /// Memory the filter takes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bits.len() * 8).sum()
    }
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    #[test]
    fn a_key_filter_never_forgets_and_rarely_imagines() {
        let mut filter = KeyFilter::default();
        let inserted = 300_000u64;
        for k in 0..inserted {
            filter.insert(stable_hash(&k.to_be_bytes()));
        }
        assert!((0..inserted).all(|k| filter.may_contain(stable_hash(&k.to_be_bytes()))));
        let absent =
            (inserted..inserted + 100_000).filter(|k| filter.may_contain(stable_hash(&k.to_be_bytes()))).count();
        // Three layers at about 0.7% each.
        assert!(absent < 3_000, "{absent} false positives in 100000");
        assert!(filter.bytes() < 1 << 20, "{} bytes", filter.bytes());
    }
}
