//! Key groups: the unit of keyed state and of rescaling.
//!
//! A key hashes to one of `max_parallelism` key groups; subtask `i` of `p` owns a contiguous
//! range of groups. The arithmetic is Flink's (`KeyGroupRangeAssignment`), so a job rescaled
//! from `p` to `q` subtasks moves whole key groups and never splits one.

use serde::{Deserialize, Serialize};

/// The least max parallelism Flink derives when `pipeline.max-parallelism` is not set.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest max parallelism (and so parallelism) Flink allows: `1 << 15` key groups.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The max parallelism of a job whose `pipeline.max-parallelism` is not set, from its
/// parallelism, as Flink's `KeyGroupRangeAssignment.computeDefaultMaxParallelism`: room to
/// scale up by half, rounded up to a power of two, at least 128 and at most 32768.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let wanted = parallelism.saturating_add(parallelism / 2);
    wanted
        .checked_next_power_of_two()
        .unwrap_or(UPPER_BOUND_MAX_PARALLELISM)
        .clamp(DEFAULT_MAX_PARALLELISM, UPPER_BOUND_MAX_PARALLELISM)
}

/// An inclusive range of key groups `[start, end]`; empty when `start > end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    pub fn len(&self) -> u32 {
        if self.start > self.end { 0 } else { self.end - self.start + 1 }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key group of a key with the given 64-bit hash.
///
/// The hash is mixed once more (murmur3's finaliser) so that hashes with poor low bits still
/// spread evenly over the groups.
pub fn key_group_for_hash(hash: u64, max_parallelism: u32) -> u32 {
    debug_assert!(max_parallelism > 0, "max_parallelism must be positive");
    let mut h = hash;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % max_parallelism as u64) as u32
}

/// The subtask (of `parallelism`) that owns `key_group`.
pub fn operator_index_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    debug_assert!(key_group < max_parallelism, "key group out of range");
    (key_group as u64 * parallelism as u64 / max_parallelism as u64) as u32
}

/// The key groups owned by subtask `index` of `parallelism`.
pub fn key_group_range_for_subtask(max_parallelism: u32, parallelism: u32, index: u32) -> KeyGroupRange {
    debug_assert!(parallelism > 0 && parallelism <= max_parallelism, "parallelism out of range");
    let (m, p, i) = (max_parallelism as u64, parallelism as u64, index as u64);
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m - 1) / p;
    KeyGroupRange { start: start as u32, end: end as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_groups_and_agree_with_assignment() {
        for max in [1u32, 7, 128, 1000] {
            for p in 1..=max.min(20) {
                let mut next = 0;
                for i in 0..p {
                    let range = key_group_range_for_subtask(max, p, i);
                    assert_eq!(range.start, next, "max={max} p={p} i={i}");
                    for g in range.start..=range.end {
                        assert_eq!(operator_index_for_key_group(g, max, p), i);
                    }
                    next = range.end + 1;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn default_max_parallelism_is_flinks() {
        // Flink's computeDefaultMaxParallelism for the same parallelisms.
        for (parallelism, expected) in
            [(1, 128), (85, 128), (86, 256), (128, 256), (129, 256), (200, 512), (1000, 2048), (21_846, 32_768)]
        {
            assert_eq!(default_max_parallelism(parallelism), expected, "parallelism {parallelism}");
        }
        assert_eq!(default_max_parallelism(40_000), UPPER_BOUND_MAX_PARALLELISM);
        assert_eq!(default_max_parallelism(u32::MAX), UPPER_BOUND_MAX_PARALLELISM);
    }

    #[test]
    fn hashes_spread_over_groups() {
        let mut counts = vec![0u32; 128];
        for k in 0..128_000u64 {
            counts[key_group_for_hash(k, 128) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
    }
}

/// A hash of a key's encoded bytes that is the same on every machine and in every process, so
/// that all subtasks, workers and restarts agree on a key's key group.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ (bytes.len() as u64).wrapping_mul(M);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("chunk of 8"));
        h = (h ^ v.wrapping_mul(M)).rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(buf).wrapping_mul(M)).rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    h ^ (h >> 31)
}

#[cfg(test)]
mod stable_hash_tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // Changing these values would move keys between key groups and break restored state.
        assert_eq!(stable_hash(b""), 2_611_923_444_700_143_042);
        assert_eq!(stable_hash(b"a"), 4_271_280_585_196_170_568);
        assert_eq!(stable_hash(b"123456789"), 10_516_214_560_575_853_666);
        let spread: std::collections::HashSet<u32> =
            (0..10_000u32).map(|i| key_group_for_hash(stable_hash(&i.to_le_bytes()), 128)).collect();
        assert_eq!(spread.len(), 128);
    }
}
