//! How a generator source (`nexmark`, `datagen`) splits its global index space (events, rows)
//! among subtasks, and how that split moves when a job is restored at another parallelism.
//!
//! Subtask `i` of `n` owns the slots `base + i + k·n` for `k = 0, 1, …`; its position is how
//! many slots it has passed. A fresh job has `base` 0. A restore at another parallelism cannot
//! continue the old subtasks' interleaving, so it starts a new one: `base` becomes the first
//! index some old subtask had not reached (everything below it was emitted), and the indices
//! at or above it that old subtasks had already emitted are listed in `skip`. Slots on `skip`
//! are passed without emitting. Pure: no I/O, unit-tested below.

use std::collections::BTreeSet;

use arrow::array::BooleanArray;
use serde::{Deserialize, Serialize};

use crate::error::{TaskError, TaskResult};

/// Where a generator's subtasks start from: see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitLayout {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base: u64,
    /// Sorted, all at or above `base`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A generator subtask's checkpointed position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorPosition {
    /// Slots passed.
    pub rows: u64,
    #[serde(flatten)]
    pub layout: SplitLayout,
}

impl GeneratorPosition {
    pub fn parse(position: &serde_json::Value) -> TaskResult<GeneratorPosition> {
        serde_json::from_value(position.clone())
            .map_err(|e| TaskError::Config(format!("not a generator source position ({e}): {position}")))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a generator position serializes")
    }
}

impl SplitLayout {
    /// The global index of slot `local` of subtask `index` of `count`.
    #[inline]
    pub fn global(&self, index: u64, count: u64, local: u64) -> u64 {
        self.base.wrapping_add(index).wrapping_add(local.wrapping_mul(count))
    }

    /// Slots subtask `index` of `count` has below `total` indices; `None` when unbounded.
    pub fn slots(&self, index: u64, count: u64, total: Option<u64>) -> Option<u64> {
        let count = count.max(1);
        if index >= count {
            return Some(0);
        }
        total.map(|total| {
            let first = self.base.saturating_add(index);
            if first >= total { 0 } else { (total - 1 - first) / count + 1 }
        })
    }

    /// For `rows` slots starting at global index `first`, `stride` apart: which to emit, or
    /// `None` when all of them are (the common case: nothing to skip in range).
    pub fn keep_mask(&self, first: u64, stride: u64, rows: usize) -> Option<BooleanArray> {
        let last = first.saturating_add(stride.saturating_mul(rows.saturating_sub(1) as u64));
        let start = self.skip.partition_point(|s| *s < first);
        if self.skip.get(start).is_none_or(|s| *s > last) {
            return None;
        }
        let in_range = &self.skip[start..self.skip.partition_point(|s| *s <= last)];
        let mut keep = vec![true; rows];
        for s in in_range {
            if (s - first).is_multiple_of(stride) {
                keep[((s - first) / stride) as usize] = false;
            }
        }
        Some(BooleanArray::from(keep))
    }

    /// The layout that continues after old subtasks `0..rows.len()` passed `rows[i]` slots each
    /// under this layout.
    pub fn rescale(&self, rows: &[u64]) -> SplitLayout {
        let count = rows.len().max(1) as u64;
        let next = |i: usize| self.global(i as u64, count, rows[i]);
        let base = (0..rows.len()).map(next).min().unwrap_or(self.base);
        let mut skip: BTreeSet<u64> = self.skip.iter().copied().filter(|s| *s >= base).collect();
        for (i, &passed) in rows.iter().enumerate() {
            let first = self.global(i as u64, count, 0);
            // The first slot at or above the new base.
            let from = if base > first { (base - first).div_ceil(count) } else { 0 };
            skip.extend((from..passed).map(|k| self.global(i as u64, count, k)));
        }
        SplitLayout { base, skip: skip.into_iter().collect() }
    }
}

/// A generator whose subtask walks a [`SplitLayout`]: what its checkpointed position is made
/// of, so `nexmark` and `datagen` record and restore positions the same way.
pub trait SplitGenerator {
    /// Slots passed.
    fn position(&self) -> u64;
    fn layout(&self) -> &SplitLayout;
    fn seek_with_layout(&mut self, position: u64, layout: SplitLayout);
}

/// A generator source's position, as its checkpoint records it.
pub fn position_of(generator: &impl SplitGenerator) -> serde_json::Value {
    GeneratorPosition { rows: generator.position(), layout: generator.layout().clone() }.to_json()
}

/// Resumes a generator at a position taken by [`position_of`] (or made by [`rescale_positions`]).
pub fn seek(generator: &mut impl SplitGenerator, position: &serde_json::Value) -> TaskResult<()> {
    let position = GeneratorPosition::parse(position)?;
    generator.seek_with_layout(position.rows, position.layout);
    Ok(())
}

/// The position every new subtask starts from, given the old subtasks' positions in subtask
/// order: slot 0 of the rescaled layout.
pub fn rescale_positions(old: &[GeneratorPosition]) -> TaskResult<GeneratorPosition> {
    let Some(first) = old.first() else {
        return Ok(GeneratorPosition { rows: 0, layout: SplitLayout::default() });
    };
    if old.iter().any(|p| p.layout != first.layout) {
        return Err(TaskError::Config("the generator positions of one checkpoint disagree on their layout".into()));
    }
    let rows: Vec<u64> = old.iter().map(|p| p.rows).collect();
    Ok(GeneratorPosition { rows: 0, layout: first.layout.rescale(&rows) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indices below `total` that subtasks of `count` emit having passed `rows[i]` slots.
    fn emitted(layout: &SplitLayout, rows: &[u64], total: u64) -> Vec<u64> {
        let count = rows.len() as u64;
        let mut out = Vec::new();
        for (i, &passed) in rows.iter().enumerate() {
            let slots = layout.slots(i as u64, count, Some(total)).unwrap();
            for k in 0..passed.min(slots) {
                let g = layout.global(i as u64, count, k);
                if layout.skip.binary_search(&g).is_err() {
                    out.push(g);
                }
            }
        }
        out
    }

    #[test]
    fn rescaling_twice_emits_every_index_exactly_once() {
        let total = 1000;
        // Parallelism 2, uneven progress; then 1; then 3 to the end.
        let start = SplitLayout::default();
        let mut seen = emitted(&start, &[137, 120], total);
        let one = start.rescale(&[137, 120]);
        assert_eq!(one.base, 241, "split 1's next index is the first not reached");
        assert!(one.skip.iter().all(|s| *s >= one.base && s % 2 == 0), "only split 0 ran ahead: {one:?}");
        seen.extend(emitted(&one, &[300], total));
        let three = one.rescale(&[300]);
        let slots: Vec<u64> = (0..3).map(|i| three.slots(i, 3, Some(total)).unwrap()).collect();
        seen.extend(emitted(&three, &slots, total));
        seen.sort_unstable();
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn keep_mask_drops_exactly_the_skipped_slots() {
        let layout = SplitLayout { base: 10, skip: vec![13, 16, 17, 40] };
        // Subtask 0 of 3 from base 10: 10, 13, 16, 19, 22.
        let mask = layout.keep_mask(10, 3, 5).expect("13 and 16 are in range");
        assert_eq!(mask, BooleanArray::from(vec![true, false, false, true, true]));
        assert!(layout.keep_mask(19, 3, 5).is_none(), "nothing to skip in 19..=31 on this stride");
    }

    #[test]
    fn positions_round_trip_and_old_ones_still_parse() {
        let p = GeneratorPosition { rows: 7, layout: SplitLayout { base: 3, skip: vec![5] } };
        assert_eq!(GeneratorPosition::parse(&p.to_json()).unwrap(), p);
        let old = GeneratorPosition::parse(&serde_json::json!({"rows": 9})).unwrap();
        assert_eq!(old.layout, SplitLayout::default());
        assert_eq!(old.to_json(), serde_json::json!({"rows": 9}));
    }
}
