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
    let start = keys::key_group_start(operator, range.start as u16);
    // Key group ranges are inclusive: stop past every key of the last one.
    let end = keys::prefix_end(&keys::key_group_start(operator, range.end as u16));
    let now = backend.now();
    let mut out = Vec::new();
    for (key, stored) in backend.scan_range(&start, end.as_deref()).await? {
        let header = keys::decode_header(&key)?;
        if header.state >= keys::MAX_USER_STATE_ID {
            continue;
        }
        let value = ttl::unwrap(&stored)?;
        if value.is_expired(now) {
            continue;
        }
        out.push((StateId(header.state), header.key_group as u32, Bytes::copy_from_slice(header.rest), value.payload));
    }
    Ok(out)
}
