//! Keyed state for Weir's operators, scoped by operator and key group, kept in SlateDB on
//! object storage with incremental checkpoints.
//!
//! - [`location`]: `state.checkpoints.dir` → object store + root (local folder, S3, memory).
//! - [`backend`]: one SlateDB database per subtask attempt with an in-memory working set in
//!   front; snapshot (write-back + SlateDB checkpoint), restore and rescale (projected clones), discard.
//! - [`primitives`]: value, list, map, reducing and aggregating state; [`timers`]: event- and
//!   processing-time timers; [`ttl`]: state TTL with an injected clock.
//! - [`sqs`]: compaction work items on SQS, and the `weir compactor` loop that takes them.
//! - [`spill`]: an operator's handle for keyed state beyond its memory budget.
//! - [`keys`]: the key layout (key group, operator, state, user key).
//! - [`checkpoint`]: completed-checkpoint metadata and retention; [`savepoint`]: savepoints,
//!   self-contained clones of a checkpoint's databases.
//! - [`compaction`]: compaction off the tasks: the queue tasks ask on, the process's own
//!   compactor, and the run of SlateDB's compactor a compactor does per work item.
//! - [`counting`]: an object store that counts requests; [`testing`]: a real S3 endpoint for
//!   tests (moto).

pub mod backend;
pub mod checkpoint;
pub mod compaction;
pub mod counting;
pub mod error;
pub mod ids;
pub mod keys;
pub mod location;
pub mod primitives;
pub mod retry;
pub mod savepoint;
pub mod scan;
pub mod spill;
pub mod sqs;
pub mod testing;
pub mod timers;
pub mod ttl;

pub use backend::{Compaction, KeyedStateBackend, PendingSnapshot, StateHandle, StateOptions, WriteBackStats, discard};
pub use checkpoint::{CheckpointStore, CompletedCheckpoint, LatestCheckpoint, MetadataWarning, SourcePosition};
pub use error::{Result, StateError};
pub use ids::{OperatorId, StateId, SubtaskStateId};
pub use keys::TimeDomain;
pub use location::{S3Options, StateLocation, StoreKind};
pub use primitives::{AggregatingState, ListState, MapState, ReducingState, ValueState};
/// Paths of databases and files inside a state location's store.
pub use slatedb::object_store::path::Path as ObjectPath;
pub use spill::{StateStore, StoreKey, StoreWrite};
pub use timers::{Timer, TimerService};
pub use ttl::{TtlConfig, TtlUpdate};
pub use weir_dataflow::clock::{Clock, ManualClock, SystemClock};
pub use weir_dataflow::keygroup::{
    KeyGroupRange, key_group_for_hash, key_group_range_for_subtask, operator_index_for_key_group, stable_hash,
};
