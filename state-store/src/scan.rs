//! Reading back every value an operator stored, for an operator that rebuilds its in-memory
//! working set when its task restores a checkpoint.

use bytes::Bytes;

use crate::backend::KeyedStateBackend;
use crate::error::Result;
use crate::ids::{OperatorId, StateId};
use crate::{keys, ttl};

/// One live value: its state, key group, user key and value.
pub type StoredValue = (StateId, u32, Bytes, Bytes);

/// Every live (not expired) value the [`crate::ValueState`]s of `operator` hold in this backend's
/// key groups, in key order. (An operator using other primitives reads them through those.)
pub async fn operator_values(backend: &KeyedStateBackend, operator: OperatorId) -> Result<Vec<StoredValue>> {
    let range = backend.key_groups();
    let now = backend.now();
    let mut out = Vec::new();
    // Key groups come first in a stored key: one scan of the operator's prefix per key group.
    for key_group in range.start..=range.end {
        // The backend keeps owned key groups below 2^15.
        let prefix = keys::operator_prefix(operator, key_group as u16);
        let end = keys::prefix_end(&prefix);
        for (key, stored) in backend.scan_range(&prefix, end.as_deref()).await? {
            let header = keys::decode_header(&key)?;
            if header.state >= keys::MAX_USER_STATE_ID {
                continue;
            }
            let value = ttl::unwrap(&stored)?;
            if value.is_expired(now) {
                continue;
            }
            out.push((StateId(header.state), key_group, Bytes::copy_from_slice(header.rest), value.payload));
        }
    }
    Ok(out)
}
