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

/// Interns byte strings (encoded keys) as dense ids. Keys are stored once, packed in one
/// arena; the hash table holds only ids. An entry costs its bytes plus about 24 bytes.
#[derive(Default)]
pub struct KeyTable {
    table: HashTable<u32>,
    arena: Vec<u8>,
    /// Per id: where its key is in the arena (`len == FREE`: a free id).
    spans: Vec<(u32, u32)>,
    hashes: Vec<u64>,
    free: Vec<u32>,
    /// Arena bytes of removed keys, reclaimed by compaction.
    garbage: usize,
}

const FREE: u32 = u32::MAX;

impl KeyTable {
    pub fn key(&self, id: u32) -> &[u8] {
        let (start, len) = self.spans[id as usize];
        &self.arena[start as usize..(start + len) as usize]
    }

    /// The [`stable_hash`] of key `id`'s bytes, kept from when it was interned.
    pub fn hash(&self, id: u32) -> u64 {
        self.hashes[id as usize]
    }

    pub fn get(&self, bytes: &[u8]) -> Option<u32> {
        let hash = stable_hash(bytes);
        let (arena, spans) = (&self.arena, &self.spans);
        self.table
            .find(hash, |&id| {
                let (start, len) = spans[id as usize];
                len != FREE && &arena[start as usize..(start + len) as usize] == bytes
            })
            .copied()
    }

    /// The id of `bytes`, adding it if new (`true` when new).
    pub fn intern(&mut self, bytes: &[u8]) -> (u32, bool) {
        if let Some(id) = self.get(bytes) {
            return (id, false);
        }
        let hash = stable_hash(bytes);
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        let span = (start, bytes.len() as u32);
        let id = match self.free.pop() {
            Some(id) => {
                self.spans[id as usize] = span;
                self.hashes[id as usize] = hash;
                id
            }
            None => {
                self.spans.push(span);
                self.hashes.push(hash);
                (self.spans.len() - 1) as u32
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
        self.garbage += self.spans[id as usize].1 as usize;
        self.spans[id as usize] = (0, FREE);
        self.free.push(id);
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for span in &mut self.spans {
            if span.1 == FREE {
                continue;
            }
            let start = arena.len() as u32;
            arena.extend_from_slice(&self.arena[span.0 as usize..(span.0 + span.1) as usize]);
            span.0 = start;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// One more than the largest id handed out: the length for dense per-id vectors.
    pub fn capacity(&self) -> usize {
        self.spans.len()
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

    /// A group restored from a checkpoint: stored already, unchanged since.
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
