//! Rows kept by join key, for the regular join: a multimap from encoded key to encoded rows
//! that holds at most a memory budget of row bytes and spills older rows to a local file.
//!
//! Join state grows without bound (Flink keeps it forever without a TTL). Per row only a
//! 24-byte entry stays in memory; row bytes beyond the budget live in an unnamed temporary
//! file and are read back with positioned reads when a probe or an output needs them, which
//! for joins that mostly insert (one side probes a few matches) is rare.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use weir_dataflow::keygroup::{key_group_for_hash, stable_hash};

use super::codec;
use super::keys::{DirtyGroups, KeyTable, RemovedKey};
use crate::error::{TaskError, TaskResult};

/// Row bytes a side keeps in memory before spilling to disk.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;

const NONE: u32 = u32::MAX;

/// One stored row: where its bytes are, how many copies, how many rows of the other side it
/// matches (for a preserved side of an outer join), and the next row of the same key.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    offset: u64,
    len: u32,
    next: u32,
    pub count: i32,
    pub matches: i32,
    /// When an interval join drops the row (`i64::MIN`: never); kept for checkpoints.
    pub expires: i64,
}

/// Append-only row bytes: the newest in memory, the rest in a temporary file.
struct RowLog {
    memory: Vec<u8>,
    /// Log offset of `memory[0]`.
    memory_base: u64,
    file: Option<File>,
    budget: usize,
}

impl RowLog {
    fn append(&mut self, bytes: &[u8]) -> TaskResult<u64> {
        if self.memory.len() + bytes.len() > self.budget && !self.memory.is_empty() {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(tempfile::tempfile().map_err(|e| io_error("a join spill file", e))?),
            };
            file.write_all(&self.memory).map_err(|e| io_error("the join spill file", e))?;
            self.memory_base += self.memory.len() as u64;
            self.memory.clear();
        }
        let offset = self.memory_base + self.memory.len() as u64;
        self.memory.extend_from_slice(bytes);
        Ok(offset)
    }

    /// Appends the bytes at `offset` to `out`.
    fn read_into(&self, offset: u64, len: u32, out: &mut Vec<u8>) -> TaskResult<()> {
        if offset >= self.memory_base {
            let start = (offset - self.memory_base) as usize;
            out.extend_from_slice(&self.memory[start..start + len as usize]);
            return Ok(());
        }
        let file = self.file.as_ref().ok_or_else(|| TaskError::Unsupported("join spill file missing".into()))?;
        let at = out.len();
        out.resize(at + len as usize, 0);
        file.read_exact_at(&mut out[at..], offset).map_err(|e| io_error("the join spill file", e))
    }
}

fn io_error(what: &str, e: std::io::Error) -> TaskError {
    TaskError::Io { path: what.to_string(), source: e }
}

/// Where [`RowStore::push`] put a row.
#[derive(Clone, Copy, Debug)]
pub struct Pushed {
    pub new_key: bool,
    /// The key's id, while it has rows.
    pub key: u32,
    pub entry: u32,
    pub offset: u64,
}

pub struct RowStore {
    keys: KeyTable,
    heads: Vec<u32>,
    /// Per key id: a value the owner attaches to the key (a window join: the window's end).
    tags: Vec<i64>,
    /// With checkpoints: keys whose rows changed, and keys that went away.
    changes: Option<(DirtyGroups, u32)>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    log: RowLog,
}

impl RowStore {
    pub fn new(budget: usize) -> Self {
        RowStore {
            keys: KeyTable::default(),
            heads: Vec::new(),
            tags: Vec::new(),
            changes: None,
            entries: Vec::new(),
            free: Vec::new(),
            log: RowLog { memory: Vec::new(), memory_base: 0, file: None, budget },
        }
    }

    /// The entries stored under `key`.
    pub fn entries_of(&self, key: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(k) = self.keys.get(key) {
            let mut e = self.heads[k as usize];
            while e != NONE {
                out.push(e);
                e = self.entries[e as usize].next;
            }
        }
        out
    }

    pub fn entry(&self, id: u32) -> &Entry {
        &self.entries[id as usize]
    }

    pub fn entry_mut(&mut self, id: u32) -> &mut Entry {
        &mut self.entries[id as usize]
    }

    /// Appends entry `id`'s row bytes to `out`; returns where they are in `out`.
    pub fn read(&self, id: u32, out: &mut Vec<u8>) -> TaskResult<(usize, usize)> {
        let e = &self.entries[id as usize];
        let start = out.len();
        self.log.read_into(e.offset, e.len, out)?;
        Ok((start, e.len as usize))
    }

    /// Records which keys change from now on, for checkpoints; keys are in key groups of
    /// `max_parallelism`.
    pub fn track_changes(&mut self, max_parallelism: u32) {
        self.changes = Some((DirtyGroups::default(), max_parallelism));
    }

    /// The keys whose rows changed since the last call, and the removed keys (with their key
    /// groups) whose stored state must go.
    pub fn take_changes(&mut self) -> (Vec<usize>, Vec<RemovedKey>) {
        self.changes.as_mut().map(|(c, _)| c.take()).unwrap_or_default()
    }

    /// Marks `key`'s rows changed (their match counts, say).
    pub fn touch(&mut self, key: &[u8]) {
        if let Some((changes, _)) = &mut self.changes
            && let Some(k) = self.keys.get(key)
        {
            changes.touch(k as usize);
        }
    }

    /// A restored key: stored already.
    pub fn restored(&mut self, key: u32) {
        if let Some((changes, _)) = &mut self.changes {
            changes.restored(key as usize);
        }
    }

    pub fn key_bytes(&self, key: u32) -> &[u8] {
        self.keys.key(key)
    }

    pub fn tag(&self, key: u32) -> i64 {
        self.tags.get(key as usize).copied().unwrap_or(i64::MIN)
    }

    pub fn set_tag(&mut self, key: u32, tag: i64) {
        self.tags[key as usize] = tag;
    }

    /// `k` is about to be forgotten.
    fn forgetting(&mut self, k: u32) {
        if let Some((changes, max_parallelism)) = &mut self.changes {
            let key = self.keys.key(k);
            let key_group = key_group_for_hash(stable_hash(key), *max_parallelism) as u16;
            changes.remove(k as usize, key_group, key);
        }
    }

    /// Stores `row` under `key`.
    pub fn push(&mut self, key: &[u8], row: &[u8], matches: i64) -> TaskResult<Pushed> {
        let (k, new) = self.keys.intern(key);
        if new || self.heads.len() <= k as usize {
            self.heads.resize(self.heads.len().max(k as usize + 1), NONE);
            self.heads[k as usize] = NONE;
            self.tags.resize(self.heads.len(), i64::MIN);
            self.tags[k as usize] = i64::MIN;
        }
        if let Some((changes, _)) = &mut self.changes {
            changes.touch(k as usize);
        }
        let offset = self.log.append(row)?;
        let entry = Entry {
            offset,
            len: row.len() as u32,
            next: self.heads[k as usize],
            count: 1,
            matches: matches as i32,
            expires: i64::MIN,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.heads[k as usize] = id;
        Ok(Pushed { new_key: new, key: k, entry: id, offset })
    }

    /// Forgets one stored row, if entry `id` still holds the row stored at `offset` (ids are
    /// reused; offsets are not).
    pub fn remove_entry(&mut self, key: &[u8], id: u32, offset: u64) {
        let Some(k) = self.keys.get(key) else { return };
        let mut previous = NONE;
        let mut e = self.heads[k as usize];
        while e != NONE {
            if e == id {
                if self.entries[e as usize].offset == offset {
                    self.unlink(k, previous, e);
                }
                return;
            }
            previous = e;
            e = self.entries[e as usize].next;
        }
    }

    /// Takes entry `e` (after `previous`, or first) out of key `k`'s chain and frees it; a key
    /// left without rows is forgotten.
    fn unlink(&mut self, k: u32, previous: u32, e: u32) {
        let next = self.entries[e as usize].next;
        if previous == NONE {
            self.heads[k as usize] = next;
        } else {
            self.entries[previous as usize].next = next;
        }
        self.free.push(e);
        if self.heads[k as usize] == NONE {
            self.forgetting(k);
            self.keys.remove(k);
        } else if let Some((changes, _)) = &mut self.changes {
            changes.touch(k as usize);
        }
    }

    /// Forgets every row of `key`.
    pub fn remove_key(&mut self, key: &[u8]) {
        let Some(k) = self.keys.get(key) else { return };
        let mut e = self.heads[k as usize];
        while e != NONE {
            self.free.push(e);
            e = self.entries[e as usize].next;
        }
        self.heads[k as usize] = NONE;
        self.forgetting(k);
        self.keys.remove(k);
    }

    /// Every row of key `k`, appended to `out` as (count, matches, expires, bytes).
    pub fn encode_rows(&self, k: u32, out: &mut Vec<u8>) -> TaskResult<()> {
        let mut e = self.heads[k as usize];
        let mut bytes = Vec::new();
        while e != NONE {
            let entry = self.entries[e as usize];
            codec::put_i64(out, entry.count as i64);
            codec::put_i64(out, entry.matches as i64);
            codec::put_i64(out, entry.expires);
            bytes.clear();
            self.read(e, &mut bytes)?;
            codec::put_bytes(out, &bytes);
            e = entry.next;
        }
        Ok(())
    }

    /// The number of rows of key `k`.
    pub fn rows_of_key(&self, k: u32) -> usize {
        let (mut n, mut e) = (0, self.heads[k as usize]);
        while e != NONE {
            n += 1;
            e = self.entries[e as usize].next;
        }
        n
    }

    /// Takes one copy of `row` away from `key`; false if there is none.
    pub fn retract(&mut self, key: &[u8], row: &[u8]) -> TaskResult<bool> {
        let Some(k) = self.keys.get(key) else { return Ok(false) };
        let mut previous = NONE;
        let mut e = self.heads[k as usize];
        let mut scratch = Vec::new();
        while e != NONE {
            scratch.clear();
            self.read(e, &mut scratch)?;
            if scratch == row {
                self.entries[e as usize].count -= 1;
                if self.entries[e as usize].count <= 0 {
                    self.unlink(k, previous, e);
                } else if let Some((changes, _)) = &mut self.changes {
                    changes.touch(k as usize);
                }
                return Ok(true);
            }
            previous = e;
            e = self.entries[e as usize].next;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_key_with_spilling() {
        let mut store = RowStore::new(64);
        for i in 0..100u32 {
            let key = [(i % 3) as u8];
            store.push(&key, format!("row-{i:03}").as_bytes(), 0).unwrap();
        }
        assert!(store.log.file.is_some(), "a 64-byte budget must spill");
        let ids = store.entries_of(&[1]);
        assert_eq!(ids.len(), 33);
        let mut buf = Vec::new();
        let mut rows: Vec<String> = ids
            .iter()
            .map(|id| {
                buf.clear();
                store.read(*id, &mut buf).unwrap();
                String::from_utf8(buf.clone()).unwrap()
            })
            .collect();
        rows.sort();
        assert_eq!(rows[0], "row-001");
        assert_eq!(rows[32], "row-097");
        assert!(store.retract(&[1], b"row-004").unwrap());
        assert!(!store.retract(&[1], b"row-004").unwrap());
        assert_eq!(store.entries_of(&[1]).len(), 32);
        assert!(store.entries_of(&[9]).is_empty());
    }
}
