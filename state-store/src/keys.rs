//! The byte layout of every key in a subtask's database.
//!
//! ```text
//! value, list, reducing:  key group u16 BE | op u32 BE | state u16 BE | user key
//! map entry:              key group u16 BE | op u32 BE | state u16 BE | len u32 BE | user key | map key
//! timer:                  key group u16 BE | op u32 BE | 0xFFFF (event) / 0xFFFE (processing)
//!                         | timestamp i64 BE with the sign bit flipped | user key
//! ```
//!
//! Key group first (as in Flink's RocksDB backend): a subtask's key groups are one contiguous key
//! range, whatever operators and states they hold, so a rescale hands a new subtask its range of
//! an old database as one projected clone ([`key_group_bounds`]), with no key read. Big-endian
//! integers (and the flipped sign bit) make byte order equal numeric order, so timers scan in
//! time order. The user key is length-prefixed only where a map key follows it, so that a map's
//! entries for one user key are exactly one prefix.

use crate::error::{Result, StateError};
use crate::ids::{OperatorId, StateId};

/// The layout's version, recorded in every state handle: 1 put the operator first, 2 (this
/// one) the key group.
pub const KEY_LAYOUT: u16 = 2;
/// Bytes before the user key: key group, operator, state.
pub const HEADER_LEN: usize = 8;
/// State ids from here up are reserved for the store's own records (timers).
pub const MAX_USER_STATE_ID: u16 = 0xFF00;
pub(crate) const EVENT_TIMERS: u16 = 0xFFFF;
pub(crate) const PROCESSING_TIMERS: u16 = 0xFFFE;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

impl TimeDomain {
    pub(crate) fn state_tag(self) -> u16 {
        match self {
            TimeDomain::EventTime => EVENT_TIMERS,
            TimeDomain::ProcessingTime => PROCESSING_TIMERS,
        }
    }
}

fn header(out: &mut Vec<u8>, operator: OperatorId, key_group: u16, state: u16) {
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(&operator.0.to_be_bytes());
    out.extend_from_slice(&state.to_be_bytes());
}

/// The key of a value, list or reducing state entry.
pub fn state_key(operator: OperatorId, key_group: u16, state: StateId, user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + user_key.len());
    header(&mut out, operator, key_group, state.0);
    out.extend_from_slice(user_key);
    out
}

/// The prefix shared by all entries of one user key's map.
pub fn map_prefix(operator: OperatorId, key_group: u16, state: StateId, user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + user_key.len());
    header(&mut out, operator, key_group, state.0);
    let len = u32::try_from(user_key.len()).expect("user keys are smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(user_key);
    out
}

/// The key of one map entry.
pub fn map_entry_key(operator: OperatorId, key_group: u16, state: StateId, user_key: &[u8], map_key: &[u8]) -> Vec<u8> {
    let mut out = map_prefix(operator, key_group, state, user_key);
    out.extend_from_slice(map_key);
    out
}

/// The key of a timer.
pub fn timer_key(operator: OperatorId, key_group: u16, domain: TimeDomain, timestamp: i64, user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + user_key.len());
    header(&mut out, operator, key_group, domain.state_tag());
    out.extend_from_slice(&((timestamp as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(user_key);
    out
}

/// The prefix of all timers of one domain in one key group.
pub fn timer_prefix(operator: OperatorId, key_group: u16, domain: TimeDomain) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    header(&mut out, operator, key_group, domain.state_tag());
    out
}

/// The prefix of every key of `operator` in `key_group`.
pub fn operator_prefix(operator: OperatorId, key_group: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(&operator.0.to_be_bytes());
    out
}

/// The key range holding key groups `first..=last` (of every operator): from the first one's
/// prefix up to, not including, the next one's. Key groups are below 2^15, so `last + 1` fits.
pub fn key_group_bounds(first: u16, last: u16) -> (Vec<u8>, Vec<u8>) {
    debug_assert!(first <= last && last < u16::MAX);
    (first.to_be_bytes().to_vec(), (last + 1).to_be_bytes().to_vec())
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The fixed part of a stored key, and what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHeader<'a> {
    pub operator: OperatorId,
    pub key_group: u16,
    pub state: u16,
    pub rest: &'a [u8],
}

/// Splits a stored key; an error (never a panic) when it is too short to be one of ours.
pub fn decode_header(key: &[u8]) -> Result<KeyHeader<'_>> {
    if key.len() < HEADER_LEN {
        return Err(StateError::Corrupt(format!("state key of {} bytes is shorter than its header", key.len())));
    }
    let be_u32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(KeyHeader {
        key_group: u16::from_be_bytes([key[0], key[1]]),
        operator: OperatorId(be_u32(&key[2..6])),
        state: u16::from_be_bytes([key[6], key[7]]),
        rest: &key[HEADER_LEN..],
    })
}

/// Splits the rest of a map entry key into (user key, map key).
pub fn decode_map_rest(rest: &[u8]) -> Result<(&[u8], &[u8])> {
    if rest.len() < 4 {
        return Err(StateError::Corrupt("map entry key without its length prefix".into()));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let body = &rest[4..];
    if body.len() < len {
        return Err(StateError::Corrupt(format!("map entry key says {len} bytes of user key, has {}", body.len())));
    }
    Ok(body.split_at(len))
}

/// Splits the rest of a timer key into (timestamp, user key).
pub fn decode_timer_rest(rest: &[u8]) -> Result<(i64, &[u8])> {
    if rest.len() < 8 {
        return Err(StateError::Corrupt("timer key without its timestamp".into()));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&rest[..8]);
    Ok(((u64::from_be_bytes(ts) ^ (1 << 63)) as i64, &rest[8..]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layout_is_pinned() {
        // Changing the layout breaks every stored checkpoint: this test is the reminder.
        assert_eq!(state_key(OperatorId(1), 2, StateId(3), b"k"), [0, 2, 0, 0, 0, 1, 0, 3, b'k']);
        assert_eq!(
            map_entry_key(OperatorId(1), 2, StateId(3), b"k", b"m"),
            [0, 2, 0, 0, 0, 1, 0, 3, 0, 0, 0, 1, b'k', b'm']
        );
        assert_eq!(
            timer_key(OperatorId(1), 2, TimeDomain::EventTime, 0, b""),
            [0, 2, 0, 0, 0, 1, 0xFF, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(key_group_bounds(1, 0x7FFF), (vec![0, 1], vec![0x80, 0]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn short_or_lying_keys_are_errors() {
        assert!(decode_header(&[0, 0, 0]).is_err());
        assert!(decode_map_rest(&[0, 0, 0, 9, b'a']).is_err());
        assert!(decode_map_rest(&[0, 0]).is_err());
        assert!(decode_timer_rest(&[1, 2, 3]).is_err());
    }

    proptest! {
        #[test]
        fn map_keys_round_trip(op: u32, kg: u16, state in 0u16..MAX_USER_STATE_ID, user in proptest::collection::vec(any::<u8>(), 0..20), map in proptest::collection::vec(any::<u8>(), 0..20)) {
            let key = map_entry_key(OperatorId(op), kg, StateId(state), &user, &map);
            let h = decode_header(&key).unwrap();
            prop_assert_eq!((h.operator, h.key_group, h.state), (OperatorId(op), kg, state));
            let (u, m) = decode_map_rest(h.rest).unwrap();
            prop_assert_eq!((u, m), (&user[..], &map[..]));
            prop_assert!(key.starts_with(&map_prefix(OperatorId(op), kg, StateId(state), &user)));
        }

        #[test]
        fn timer_keys_round_trip_and_sort_by_time(op: u32, kg: u16, a: i64, b: i64, user in proptest::collection::vec(any::<u8>(), 0..8)) {
            let ka = timer_key(OperatorId(op), kg, TimeDomain::ProcessingTime, a, &user);
            let kb = timer_key(OperatorId(op), kg, TimeDomain::ProcessingTime, b, &user);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            let h = decode_header(&ka).unwrap();
            prop_assert_eq!(h.state, PROCESSING_TIMERS);
            prop_assert_eq!(decode_timer_rest(h.rest).unwrap(), (a, &user[..]));
        }

        #[test]
        fn a_key_group_range_holds_exactly_its_keys(op: u32, kg in 0u16..0x8000, first in 0u16..0x8000, len in 0u16..0x100, state: u16, user in proptest::collection::vec(any::<u8>(), 0..8)) {
            let last = first.saturating_add(len).min(0x7FFF);
            let key = state_key(OperatorId(op), kg, StateId(state), &user);
            let (start, end) = key_group_bounds(first, last);
            prop_assert_eq!(key >= start && key < end, (first..=last).contains(&kg));
            prop_assert!(key.starts_with(&operator_prefix(OperatorId(op), kg)));
        }
    }
}
