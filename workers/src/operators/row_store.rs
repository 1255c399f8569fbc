//! Rows kept by join key, for the regular join: a multimap from encoded key to encoded rows
//! that holds at most a memory budget of row bytes and spills older rows to a local file.
//!
//! Join state grows without bound (Flink keeps it forever without a TTL). Per row only a
//! 48-byte entry stays in memory; row bytes beyond the budget live in an unnamed temporary
//! file and are read back with positioned reads when a probe or an output needs them, which
//! for joins that mostly insert (one side probes a few matches) is rare.
//!
//! **Checkpoints write segments.** The rows added between two checkpoints are written as one
//! value per key group (a *segment*, named by the checkpoint's id and a chunk number when one
//! would pass [`SEGMENT_BYTES`]), so a checkpoint costs a write per key group and the bytes of
//! the new rows, not a write per row or per key. A stored
//! row whose copies or match count later change gets a small *patch* entry (segment, index);
//! a segment whose rows are all gone is deleted with its patches. Rows that the watermark
//! removes (an interval join's expired rows, a window join's closed windows) need no patch:
//! restore drops every row the restored watermark has passed. When more than half of the
//! stored rows are dead, the live rows of mostly-dead segments are written again into the new
//! segment and the old segments deleted, which bounds the space the state takes to twice its
//! live rows.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use weir_dataflow::event::Timestamp;
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::keygroup::key_group_for_hash;
use weir_state_store::StateId;

use super::codec;
use super::keys::KeyTable;
use crate::checkpoint::{RestoredEntry, SnapshotContext};
use crate::error::{TaskError, TaskResult};

/// Row bytes a side keeps in memory before spilling to disk.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;

const NONE: u32 = u32::MAX;
/// The offset of a freed entry: offsets of stored rows are unique, so a recorded (entry,
/// offset) pair tells whether the entry still holds that row.
const FREED: u64 = u64::MAX;
/// "No time": a row that never expires, or a key outside any window.
pub const NO_TIME: i64 = i64::MIN;
/// The most row bytes one segment value holds; more go into further chunks.
const SEGMENT_BYTES: usize = 4 << 20;
/// Dead rows a store tolerates in its segments before it compacts them.
const COMPACT_MIN_DEAD_ROWS: u64 = 16 * 1024;

/// One stored row: where its bytes are, its key, how many copies, how many rows of the other
/// side it matches (for a preserved side of an outer join), the next row of the same key, and
/// where it is stored by checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    offset: u64,
    len: u32,
    next: u32,
    key: u32,
    pub count: i32,
    pub matches: i32,
    /// The slot of the segment holding this row, or `NONE` while no checkpoint has stored it.
    segment: u32,
    /// The row's index within its segment.
    index: u32,
    /// When an interval join drops the row (`NO_TIME`: never).
    pub expires: i64,
    /// Its copies or matches changed since its segment was written.
    patched: bool,
    /// Its key's key group, with checkpoints on (kept so a checkpoint need not hash the key).
    key_group: u16,
}

impl Entry {
    /// Where its bytes are in the log: with the entry's id, names the row (ids are reused,
    /// offsets are not).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// Bytes of the spill file whose space is given back at once when none of their rows is live.
const HOLE_BYTES: u64 = 4 << 20;

/// Append-only row bytes: the newest in memory, the rest in a temporary file.
///
/// The log counts the live rows touching each [`HOLE_BYTES`] chunk; once a chunk in the file
/// has none (rows forgotten by TTL or by the watermark, retracted), its disk space is released
/// with a punched hole, offsets unchanged. Rows mostly die in the order they came, so the file
/// takes about the space of the live rows, not of every row ever stored.
struct RowLog {
    memory: Vec<u8>,
    /// Log offset of `memory[0]`.
    memory_base: u64,
    file: Option<File>,
    budget: usize,
    /// Live rows touching each chunk of `hole_bytes` (a field so that tests can use small ones).
    live: Vec<u32>,
    hole_bytes: u64,
}

impl RowLog {
    fn new(budget: usize) -> Self {
        RowLog { memory: Vec::new(), memory_base: 0, file: None, budget, live: Vec::new(), hole_bytes: HOLE_BYTES }
    }

    fn chunks(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<usize> {
        let last = offset.saturating_add(len.max(1) - 1);
        (offset / self.hole_bytes) as usize..=(last / self.hole_bytes) as usize
    }

    fn append(&mut self, bytes: &[u8]) -> TaskResult<u64> {
        if self.memory.len() + bytes.len() > self.budget && !self.memory.is_empty() {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(tempfile::tempfile().map_err(|e| io_error("a join spill file", e))?),
            };
            file.write_all(&self.memory).map_err(|e| io_error("the join spill file", e))?;
            let written = self.chunks(self.memory_base, self.memory.len() as u64);
            self.memory_base += self.memory.len() as u64;
            self.memory.clear();
            // Chunks whose rows all went while they were in memory.
            for chunk in written {
                if self.live.get(chunk).is_none_or(|n| *n == 0) {
                    self.release_chunk(chunk);
                }
            }
        }
        let offset = self.memory_base + self.memory.len() as u64;
        self.memory.extend_from_slice(bytes);
        let chunks = self.chunks(offset, bytes.len() as u64);
        if self.live.len() <= *chunks.end() {
            self.live.resize(chunks.end() + 1, 0);
        }
        for chunk in chunks {
            self.live[chunk] += 1;
        }
        Ok(offset)
    }

    /// The row at `offset` is gone: chunks left without live rows give their disk space back.
    fn forget(&mut self, offset: u64, len: u32) {
        if offset == FREED {
            return;
        }
        for chunk in self.chunks(offset, u64::from(len)) {
            let Some(live) = self.live.get_mut(chunk) else { continue };
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.release_chunk(chunk);
            }
        }
    }

    /// Punches a hole over `chunk` if the whole chunk is in the file (only the tail chunk can
    /// still grow, and it is in memory). Space is all it saves: a failure changes nothing else.
    fn release_chunk(&self, chunk: usize) {
        use std::os::fd::AsRawFd;
        let start = chunk as u64 * self.hole_bytes;
        let Some(file) = &self.file else { return };
        if start + self.hole_bytes > self.memory_base {
            return;
        }
        let (Ok(start), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(self.hole_bytes)) else {
            return;
        };
        // SAFETY: fallocate(2) on a descriptor we own, with plain integers; no memory is shared.
        unsafe {
            libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, start, len);
        }
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

/// Reads rows of a [`RowLog`] in increasing offsets, the spilled ones through a window of
/// large reads rather than one read per row.
struct SequentialReader<'a> {
    log: &'a RowLog,
    window: Vec<u8>,
    /// Log offset of `window[0]`.
    window_start: u64,
}

/// Bytes read from a spill file at once when a checkpoint copies rows out of it.
const READ_WINDOW: u64 = 8 << 20;

impl<'a> SequentialReader<'a> {
    fn new(log: &'a RowLog) -> Self {
        SequentialReader { log, window: Vec::new(), window_start: 0 }
    }

    /// Appends the bytes at `offset` to `out`.
    fn read_into(&mut self, offset: u64, len: u32, out: &mut Vec<u8>) -> TaskResult<()> {
        let end = offset + len as u64;
        if offset >= self.log.memory_base {
            return self.log.read_into(offset, len, out);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || end > window_end {
            let file =
                self.log.file.as_ref().ok_or_else(|| TaskError::Unsupported("join spill file missing".into()))?;
            let size = (self.log.memory_base - offset).min(READ_WINDOW.max(len as u64));
            self.window.resize(size as usize, 0);
            file.read_exact_at(&mut self.window, offset).map_err(|e| io_error("the join spill file", e))?;
            self.window_start = offset;
        }
        let start = (offset - self.window_start) as usize;
        out.extend_from_slice(&self.window[start..start + len as usize]);
        Ok(())
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

/// The rows of one key group that one checkpoint stored.
#[derive(Debug)]
struct Segment {
    /// Its key in the state: the checkpoint that wrote it, shifted left 16 bits, and the chunk.
    id: u64,
    key_group: u16,
    /// Rows written, and rows still stored here.
    rows: u32,
    live: u32,
    /// Indices with a patch entry, deleted with the segment (an index patched again is listed
    /// again until [`Segment::patched`] folds the repeats).
    patches: Vec<u32>,
    dead: bool,
}

/// What changed since the last checkpoint, when checkpoints are on.
#[derive(Default)]
struct Changes {
    max_parallelism: u32,
    /// Rows not yet in a segment, as (entry, offset).
    added: Vec<(u32, u64)>,
    /// Stored rows whose copies or matches changed, as (entry, offset).
    patched: Vec<(u32, u64)>,
    /// Stored rows taken away other than by the watermark: (segment slot, index).
    removed: Vec<(u32, u32)>,
    segments: Vec<Segment>,
    free_slots: Vec<u32>,
    /// Slots of segments whose rows are all gone.
    dead: Vec<u32>,
    /// Rows stored in segments, and those of them still live.
    stored_rows: u64,
    live_rows: u64,
}

impl Segment {
    /// Row `index` has a patch entry now.
    fn patched(&mut self, index: u32) {
        self.patches.push(index);
        // A row patched at many checkpoints must not grow the list without bound.
        if self.patches.len() > 2 * self.rows as usize + 16 {
            self.patches.sort_unstable();
            self.patches.dedup();
        }
    }
}

impl Changes {
    fn new_segment(&mut self, id: u64, key_group: u16, rows: u32) -> u32 {
        let segment = Segment { id, key_group, rows, live: 0, patches: Vec::new(), dead: false };
        self.stored_rows += rows as u64;
        match self.free_slots.pop() {
            Some(slot) => {
                self.segments[slot as usize] = segment;
                slot
            }
            None => {
                self.segments.push(segment);
                (self.segments.len() - 1) as u32
            }
        }
    }

    /// A stored row left its segment.
    fn left_segment(&mut self, slot: u32) {
        let segment = &mut self.segments[slot as usize];
        segment.live -= 1;
        self.live_rows -= 1;
        if segment.live == 0 {
            self.dead.push(slot);
        }
    }
}

/// The key of a patch: the segment's id and the row's index in it.
fn patch_key(segment: u64, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&segment.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A stored row's fields in a segment: a flags byte, then only those that differ from the usual
/// (one copy, no matches, no expiry, no window), so a plain row costs one byte besides its key
/// and bytes.
fn put_row_fields(out: &mut Vec<u8>, entry: &Entry, window_end: Timestamp) {
    let flags = (entry.count != 1) as u8
        | ((entry.matches != 0) as u8) << 1
        | ((entry.expires != NO_TIME) as u8) << 2
        | ((window_end != NO_TIME) as u8) << 3;
    out.push(flags);
    if entry.count != 1 {
        codec::put_i64(out, entry.count as i64);
    }
    if entry.matches != 0 {
        codec::put_i64(out, entry.matches as i64);
    }
    if entry.expires != NO_TIME {
        codec::put_i64(out, entry.expires);
    }
    if window_end != NO_TIME {
        codec::put_i64(out, window_end);
    }
}

/// Reads what [`put_row_fields`] wrote: (count, matches, expires, window end).
fn read_row_fields(r: &mut codec::Reader<'_>) -> TaskResult<(i64, i64, i64, i64)> {
    let flags = r.u8()?;
    let mut field = |bit: u8, default: i64| if flags & (1 << bit) != 0 { r.i64() } else { Ok(default) };
    Ok((field(0, 1)?, field(1, 0)?, field(2, NO_TIME)?, field(3, NO_TIME)?))
}

/// A patched row's (count, matches) and, for a row with a state TTL, its expiry.
type Patch = (i64, i64, Option<i64>);

/// One row as [`RowStore::restore`] hands it back, to rebuild the owner's indexes.
pub struct RestoredRow<'a> {
    pub key: &'a [u8],
    pub pushed: Pushed,
    pub window_end: Timestamp,
    pub expires: Timestamp,
}

pub struct RowStore {
    keys: KeyTable,
    heads: Vec<u32>,
    /// Per key id: a value the owner attaches to the key (a window join: the window's end).
    tags: Vec<i64>,
    changes: Option<Changes>,
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
            log: RowLog::new(budget),
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

    /// Sets a row's expiry; only for a row just pushed (checkpoints store it with the row).
    pub fn set_expires(&mut self, id: u32, expires: Timestamp) {
        self.entries[id as usize].expires = expires;
    }

    /// Moves a stored row's expiry (its state TTL started again): a checkpoint patches it.
    pub fn refresh_expires(&mut self, id: u32, expires: Timestamp) {
        self.entries[id as usize].expires = expires;
        self.changed(id);
    }

    /// Sets how many rows of the other side a stored row matches.
    pub fn set_matches(&mut self, id: u32, matches: i32) {
        self.entries[id as usize].matches = matches;
        self.changed(id);
    }

    /// A stored row's copies or matches changed: a checkpoint must patch it.
    fn changed(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        if let Some(changes) = &mut self.changes
            && entry.segment != NONE
            && !entry.patched
        {
            entry.patched = true;
            changes.patched.push((id, entry.offset));
        }
    }

    /// Appends entry `id`'s row bytes to `out`; returns where they are in `out`.
    pub fn read(&self, id: u32, out: &mut Vec<u8>) -> TaskResult<(usize, usize)> {
        let e = &self.entries[id as usize];
        let start = out.len();
        self.log.read_into(e.offset, e.len, out)?;
        Ok((start, e.len as usize))
    }

    /// Records what changes from now on, for checkpoints; keys are in key groups of
    /// `max_parallelism`.
    pub fn track_changes(&mut self, max_parallelism: u32) {
        self.changes = Some(Changes { max_parallelism, ..Changes::default() });
    }

    pub fn tag(&self, key: u32) -> i64 {
        self.tags.get(key as usize).copied().unwrap_or(NO_TIME)
    }

    pub fn set_tag(&mut self, key: u32, tag: i64) {
        self.tags[key as usize] = tag;
    }

    /// Stores `row` under `key`.
    pub fn push(&mut self, key: &[u8], row: &[u8], matches: i64) -> TaskResult<Pushed> {
        let (k, new) = self.keys.intern(key);
        if new || self.heads.len() <= k as usize {
            self.heads.resize(self.heads.len().max(k as usize + 1), NONE);
            self.heads[k as usize] = NONE;
            self.tags.resize(self.heads.len(), NO_TIME);
            self.tags[k as usize] = NO_TIME;
        }
        let offset = self.log.append(row)?;
        let entry = Entry {
            offset,
            len: row.len() as u32,
            next: self.heads[k as usize],
            key: k,
            count: 1,
            matches: matches as i32,
            segment: NONE,
            index: 0,
            expires: NO_TIME,
            patched: false,
            key_group: match &self.changes {
                Some(changes) => key_group_for_hash(self.keys.hash(k), changes.max_parallelism) as u16,
                None => 0,
            },
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
        if let Some(changes) = &mut self.changes {
            changes.added.push((id, offset));
        }
        Ok(Pushed { new_key: new, key: k, entry: id, offset })
    }

    /// Forgets one stored row because the watermark passed it, if entry `id` still holds the
    /// row stored at `offset` (ids are reused; offsets are not).
    pub fn remove_entry(&mut self, key: &[u8], id: u32, offset: u64) {
        let Some(k) = self.keys.get(key) else { return };
        let mut previous = NONE;
        let mut e = self.heads[k as usize];
        while e != NONE {
            if e == id {
                if self.entries[e as usize].offset == offset {
                    self.unlink(k, previous, e, true);
                }
                return;
            }
            previous = e;
            e = self.entries[e as usize].next;
        }
    }

    /// Frees entry `e`, keeping the checkpoint bookkeeping: a stored row leaves its segment,
    /// and unless the watermark removed it (restore drops those by itself), gets a patch.
    fn free_entry(&mut self, e: u32, by_watermark: bool) {
        let entry = &mut self.entries[e as usize];
        self.log.forget(entry.offset, entry.len);
        entry.offset = FREED;
        if let Some(changes) = &mut self.changes
            && entry.segment != NONE
        {
            if !by_watermark {
                changes.removed.push((entry.segment, entry.index));
            }
            changes.left_segment(entry.segment);
        }
        self.free.push(e);
    }

    /// Takes entry `e` (after `previous`, or first) out of key `k`'s chain and frees it; a key
    /// left without rows is forgotten.
    fn unlink(&mut self, k: u32, previous: u32, e: u32, by_watermark: bool) {
        let next = self.entries[e as usize].next;
        if previous == NONE {
            self.heads[k as usize] = next;
        } else {
            self.entries[previous as usize].next = next;
        }
        self.free_entry(e, by_watermark);
        if self.heads[k as usize] == NONE {
            self.keys.remove(k);
        }
    }

    /// Forgets every row of `key`, because the watermark closed its window.
    pub fn remove_key(&mut self, key: &[u8]) {
        let Some(k) = self.keys.get(key) else { return };
        let mut e = self.heads[k as usize];
        while e != NONE {
            let next = self.entries[e as usize].next;
            self.free_entry(e, true);
            e = next;
        }
        self.heads[k as usize] = NONE;
        self.keys.remove(k);
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
                    self.unlink(k, previous, e, false);
                } else {
                    self.changed(e);
                }
                return Ok(true);
            }
            previous = e;
            e = self.entries[e as usize].next;
        }
        Ok(false)
    }

    /// Writes what changed since the last checkpoint: deletions of dead segments and their
    /// patches first, then patches, then one new segment per key group, named by `checkpoint`.
    /// `rows` and `patches` are the two states the store writes to.
    pub fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        rows: StateId,
        patches: StateId,
        ctx: &mut SnapshotContext<'_>,
    ) -> TaskResult<()> {
        let Some(mut changes) = self.changes.take() else { return Ok(()) };
        let result = self.write_changes(&mut changes, checkpoint.0, rows, patches, ctx);
        self.changes = Some(changes);
        result
    }

    fn write_changes(
        &mut self,
        changes: &mut Changes,
        checkpoint: u64,
        rows: StateId,
        patches: StateId,
        ctx: &mut SnapshotContext<'_>,
    ) -> TaskResult<()> {
        self.compact(changes);
        for slot in std::mem::take(&mut changes.dead) {
            let segment = &mut changes.segments[slot as usize];
            let key_group = segment.key_group as u32;
            ctx.delete(rows, key_group, &segment.id.to_be_bytes())?;
            for index in &segment.patches {
                ctx.delete(patches, key_group, &patch_key(segment.id, *index))?;
            }
            changes.stored_rows -= segment.rows as u64;
            segment.dead = true;
            segment.patches = Vec::new();
            changes.free_slots.push(slot);
        }
        let mut value = Vec::new();
        for (slot, index) in std::mem::take(&mut changes.removed) {
            let segment = &mut changes.segments[slot as usize];
            if !segment.dead {
                value.clear();
                codec::put_i64(&mut value, 0);
                codec::put_i64(&mut value, 0);
                ctx.put(patches, segment.key_group as u32, &patch_key(segment.id, index), &value)?;
                segment.patched(index);
            }
        }
        for (id, offset) in std::mem::take(&mut changes.patched) {
            let entry = &mut self.entries[id as usize];
            if entry.offset != offset || entry.segment == NONE || !entry.patched {
                continue;
            }
            entry.patched = false;
            let segment = &mut changes.segments[entry.segment as usize];
            value.clear();
            codec::put_i64(&mut value, entry.count as i64);
            codec::put_i64(&mut value, entry.matches as i64);
            // A row whose state TTL started again since its segment was written.
            if entry.expires != NO_TIME {
                codec::put_i64(&mut value, entry.expires);
            }
            ctx.put(patches, segment.key_group as u32, &patch_key(segment.id, entry.index), &value)?;
            segment.patched(entry.index);
        }
        // The new rows, one segment per key group (and chunk).
        let mut open: Vec<(u64, Vec<u8>, Vec<u32>)> = Vec::new();
        let mut added = std::mem::take(&mut changes.added);
        // In log order, so rows spilled to disk are read with a few large reads.
        added.sort_unstable_by_key(|&(_, offset)| offset);
        let mut reader = SequentialReader::new(&self.log);
        for (id, offset) in added {
            let entry = self.entries[id as usize];
            if entry.offset != offset || entry.segment != NONE {
                continue;
            }
            let key_group = entry.key_group;
            if open.len() <= key_group as usize {
                open.resize_with(key_group as usize + 1, Default::default);
            }
            let (chunk, segment, members) = &mut open[key_group as usize];
            if segment.len() >= SEGMENT_BYTES {
                let full = (*chunk, std::mem::take(segment), std::mem::take(members));
                *chunk += 1;
                Self::write_segment(&mut self.entries, changes, checkpoint, key_group, full, rows, ctx)?;
            }
            let (_, segment, members) = &mut open[key_group as usize];
            codec::put_short_bytes(segment, self.keys.key(entry.key));
            // The row's bytes go straight from the log into the segment, after their length.
            codec::put_varint(segment, entry.len as u64);
            reader.read_into(entry.offset, entry.len, segment)?;
            put_row_fields(segment, &entry, self.tags[entry.key as usize]);
            members.push(id);
        }
        for (key_group, open) in open.into_iter().enumerate() {
            if !open.2.is_empty() {
                Self::write_segment(&mut self.entries, changes, checkpoint, key_group as u16, open, rows, ctx)?;
            }
        }
        Ok(())
    }

    /// Writes one segment: chunk `chunk` of `key_group`'s new rows at `checkpoint`.
    fn write_segment(
        entries: &mut [Entry],
        changes: &mut Changes,
        checkpoint: u64,
        key_group: u16,
        (chunk, segment, members): (u64, Vec<u8>, Vec<u32>),
        rows: StateId,
        ctx: &mut SnapshotContext<'_>,
    ) -> TaskResult<()> {
        if chunk >= 1 << 16 {
            return Err(TaskError::Checkpoint(format!("a join's new rows of key group {key_group} pass 256 GiB")));
        }
        let id = (checkpoint << 16) | chunk;
        ctx.put(rows, key_group as u32, &id.to_be_bytes(), &segment)?;
        let slot = changes.new_segment(id, key_group, members.len() as u32);
        for (index, id) in members.into_iter().enumerate() {
            let entry = &mut entries[id as usize];
            entry.segment = slot;
            entry.index = index as u32;
            entry.patched = false;
        }
        let stored = &mut changes.segments[slot as usize];
        stored.live = stored.rows;
        changes.live_rows += stored.rows as u64;
        Ok(())
    }

    /// When more than half of the stored rows are dead, moves the live rows of every segment
    /// that is more than half dead into the next segment, and marks those segments dead.
    fn compact(&mut self, changes: &mut Changes) {
        let dead_rows = changes.stored_rows - changes.live_rows;
        if dead_rows < COMPACT_MIN_DEAD_ROWS || dead_rows <= changes.live_rows {
            return;
        }
        let sparse: Vec<bool> = changes.segments.iter().map(|s| !s.dead && s.live > 0 && s.live * 2 < s.rows).collect();
        for (id, entry) in self.entries.iter_mut().enumerate() {
            if entry.offset == FREED || entry.segment == NONE || !sparse[entry.segment as usize] {
                continue;
            }
            changes.left_segment(entry.segment);
            entry.segment = NONE;
            entry.patched = false;
            changes.added.push((id as u32, entry.offset));
        }
    }

    /// Restores one side's rows from `rows` (segments) and `patches`, dropping every row the
    /// `watermark` has passed: an expired row, or a row of a closed window. (A regular join
    /// whose rows expire by state TTL passes the processing time instead.) `on_row` sees each
    /// kept row, so the owner can rebuild its indexes.
    pub fn restore(
        &mut self,
        rows: Vec<RestoredEntry>,
        patches: Vec<RestoredEntry>,
        watermark: Timestamp,
        mut on_row: impl FnMut(&mut Self, RestoredRow<'_>),
    ) -> TaskResult<()> {
        let mut patched: HashMap<(u32, [u8; 12]), Patch> = HashMap::with_capacity(patches.len());
        for (key_group, key, value) in patches {
            let key: [u8; 12] = key.as_ref().try_into().map_err(|_| codec::Reader::error("a join row patch's key"))?;
            let mut r = codec::Reader::new(&value);
            let (count, matches) = (r.i64()?, r.i64()?);
            let expires = if r.is_empty() { None } else { Some(r.i64()?) };
            patched.insert((key_group, key), (count, matches, expires));
            r.finish()?;
        }
        for (key_group, key, value) in rows {
            let id = u64::from_be_bytes(
                key.as_ref().try_into().map_err(|_| codec::Reader::error("a join row segment's key"))?,
            );
            let mut r = codec::Reader::new(&value);
            let mut rows_in_segment = Vec::new();
            while !r.is_empty() {
                let (join_key, row) = (r.short_bytes()?, r.short_bytes()?);
                let (count, matches, expires, window_end) = read_row_fields(&mut r)?;
                rows_in_segment.push((join_key, row, count, matches, expires, window_end));
            }
            let slot = self.changes.as_mut().map(|c| c.new_segment(id, key_group as u16, rows_in_segment.len() as u32));
            for (index, (join_key, row, count, matches, expires, window_end)) in rows_in_segment.into_iter().enumerate()
            {
                let index = index as u32;
                let patch = patched.get(&(key_group, patch_key(id, index))).copied();
                if let (Some(slot), Some(_)) = (slot, patch) {
                    self.changes.as_mut().expect("tracking").segments[slot as usize].patches.push(index);
                }
                let (count, matches, expires) = match patch {
                    Some((count, matches, patched_expiry)) => (count, matches, patched_expiry.unwrap_or(expires)),
                    None => (count, matches, expires),
                };
                let passed = |t: i64| t != NO_TIME && t <= watermark;
                if count <= 0 || passed(expires) || (window_end != NO_TIME && passed(window_end - 1)) {
                    continue;
                }
                let pushed = self.push(join_key, row, matches)?;
                let entry = &mut self.entries[pushed.entry as usize];
                entry.count = count as i32;
                entry.expires = expires;
                if let Some(slot) = slot {
                    entry.segment = slot;
                    entry.index = index;
                    let changes = self.changes.as_mut().expect("tracking");
                    changes.added.pop();
                    changes.segments[slot as usize].live += 1;
                    changes.live_rows += 1;
                }
                if pushed.new_key {
                    self.set_tag(pushed.key, window_end);
                }
                on_row(self, RestoredRow { key: join_key, pushed, window_end, expires });
            }
            if let Some(slot) = slot
                && self.changes.as_ref().expect("tracking").segments[slot as usize].live == 0
            {
                self.changes.as_mut().expect("tracking").dead.push(slot);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Disk blocks the spill file takes, in bytes.
    fn allocated(store: &RowStore) -> u64 {
        use std::os::unix::fs::MetadataExt;
        store.log.file.as_ref().map_or(0, |f| f.metadata().unwrap().blocks() * 512)
    }

    #[test]
    fn forgotten_rows_give_their_spill_space_back() {
        let mut store = RowStore::new(4096);
        store.log.hole_bytes = 16 * 1024;
        let row = [7u8; 100];
        let mut pushed = Vec::new();
        for i in 0..20_000u32 {
            let key = i.to_be_bytes();
            pushed.push((key, store.push(&key, &row, 0).unwrap()));
        }
        let before = allocated(&store);
        assert!(before >= 1_900_000, "2 MB of rows spilled: {before}");
        // The older nine tenths go, as rows go under a TTL.
        for (key, p) in &pushed[..18_000] {
            store.remove_entry(key, p.entry, p.offset);
        }
        let after = allocated(&store);
        assert!(after < before / 5, "the file still takes {after} of {before} bytes");
        // The rows left read back whole, from the file and from memory.
        let mut buf = Vec::new();
        for (key, p) in &pushed[18_000..] {
            assert_eq!(store.entries_of(key), vec![p.entry]);
            buf.clear();
            store.read(p.entry, &mut buf).unwrap();
            assert_eq!(buf, row);
        }
    }

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
