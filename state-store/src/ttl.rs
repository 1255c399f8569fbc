//! State time-to-live (Flink's `table.exec.state.ttl`) and the clock it reads.
//!
//! Every stored value carries a one-byte header saying whether it expires and, if so, at which
//! millisecond. Expired values are never returned (Flink's `NeverReturnExpired`); they are
//! deleted when read and at write-back. The clock is injected, so tests (and protocol logic) never
//! depend on the wall clock.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Result, StateError};

/// When a value's time to live starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TtlUpdate {
    /// On every write (Flink's default, and what `table.exec.state.ttl` uses).
    #[default]
    OnCreateAndWrite,
    /// On every read and write.
    OnReadAndWrite,
}

/// State TTL: values not written (or read, per `update`) for `ttl` are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlConfig {
    pub ttl: Duration,
    pub update: TtlUpdate,
}

impl TtlConfig {
    pub fn new(ttl: Duration) -> TtlConfig {
        TtlConfig { ttl, update: TtlUpdate::OnCreateAndWrite }
    }

    pub(crate) fn expire_at(&self, now_millis: i64) -> i64 {
        now_millis.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

const NO_EXPIRY: u8 = 0;
const EXPIRES: u8 = 1;

/// Wraps a value with its expiry header.
pub(crate) fn wrap(payload: &[u8], expire_at: Option<i64>) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 9);
    match expire_at {
        None => out.put_u8(NO_EXPIRY),
        Some(at) => {
            out.put_u8(EXPIRES);
            out.put_i64(at);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// A stored value: its expiry and its payload (a zero-copy slice of the stored bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub expire_at: Option<i64>,
    pub payload: Bytes,
}

impl Stored {
    pub fn is_expired(&self, now_millis: i64) -> bool {
        self.expire_at.is_some_and(|at| at <= now_millis)
    }
}

pub(crate) fn unwrap(stored: &Bytes) -> Result<Stored> {
    match stored.first() {
        Some(&NO_EXPIRY) => Ok(Stored { expire_at: None, payload: stored.slice(1..) }),
        Some(&EXPIRES) if stored.len() >= 9 => {
            let mut at = [0u8; 8];
            at.copy_from_slice(&stored[1..9]);
            Ok(Stored { expire_at: Some(i64::from_be_bytes(at)), payload: stored.slice(9..) })
        }
        Some(tag) => Err(StateError::Corrupt(format!("stored value with unknown header {tag} or truncated"))),
        None => Err(StateError::Corrupt("stored value without its header".into())),
    }
}

/// Lists are stored as one value: a sequence of `len u32 BE | wrapped element`, so each element
/// keeps its own expiry, as in Flink.
pub(crate) fn encode_list(elements: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for element in elements {
        out.put_u32(u32::try_from(element.len()).expect("list elements are smaller than 4 GiB"));
        out.put_slice(element);
    }
    out.freeze()
}

pub(crate) fn decode_list(stored: &Bytes) -> Result<Vec<Bytes>> {
    let mut elements = Vec::new();
    let mut pos = 0;
    while pos < stored.len() {
        let Some(len_bytes) = stored.get(pos..pos + 4) else {
            return Err(StateError::Corrupt("list element without its length".into()));
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let start = pos + 4;
        if stored.len() - start < len {
            return Err(StateError::Corrupt(format!("list element of {len} bytes is truncated")));
        }
        elements.push(stored.slice(start..start + len));
        pos = start + len;
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_lists_round_trip() {
        let v = wrap(b"abc", Some(-5));
        assert_eq!(unwrap(&v).unwrap(), Stored { expire_at: Some(-5), payload: Bytes::from_static(b"abc") });
        assert!(unwrap(&v).unwrap().is_expired(-5));
        assert!(!unwrap(&wrap(b"", None)).unwrap().is_expired(i64::MAX));
        let list = vec![wrap(b"a", None), wrap(b"", Some(3))];
        assert_eq!(decode_list(&encode_list(&list)).unwrap(), list);
    }

    #[test]
    fn damaged_values_are_errors() {
        assert!(unwrap(&Bytes::new()).is_err());
        assert!(unwrap(&Bytes::from_static(&[1, 0, 0])).is_err());
        assert!(unwrap(&Bytes::from_static(&[7])).is_err());
        assert!(decode_list(&Bytes::from_static(&[0, 0, 0, 5, 1])).is_err());
        assert!(decode_list(&Bytes::from_static(&[0, 0])).is_err());
    }
}
