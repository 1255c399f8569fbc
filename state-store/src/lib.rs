//! Keyed state for Weir's operators, scoped by operator and key group.
//!
//! Today operators keep their state in in-memory working sets (see `weir-workers`); this crate
//! owns the key-group arithmetic they are partitioned by. The SlateDB backend, checkpoints and
//! restore/rescale land here with the state issue.

pub use weir_dataflow::keygroup::{
    KeyGroupRange, key_group_for_hash, key_group_range_for_subtask, operator_index_for_key_group, stable_hash,
};
