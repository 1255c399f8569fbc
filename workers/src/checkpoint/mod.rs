//! Checkpoints of a running job: the barrier protocol on the task side ([`align`]), the
//! coordinator's decisions ([`protocol`], pure) and the shell that carries them out and commits
//! completed checkpoints ([`coordinator`]), and what operators see of it ([`SnapshotContext`],
//! [`RestoredState`]).
//!
//! A checkpoint starts at the sources: each source subtask, told by the coordinator, records its
//! position and emits a barrier on every output channel. A task snapshots when it has the barrier
//! from all of its inputs, then forwards it; its keyed state is written back to its SlateDB
//! database and uploaded while the task goes on processing. When every subtask has
//! acknowledged, the coordinator commits the checkpoint's metadata (source positions, small
//! per-subtask operator state, state handles) and tells the tasks, so exactly-once sinks
//! publish what the checkpoint covers.

pub mod align;
pub mod coordinator;
pub mod protocol;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use weir_dataflow::config::CheckpointConfig;
use weir_dataflow::ids::{AttemptNumber, CheckpointId, JobId, SubtaskIndex, VertexId};
use weir_dataflow::wire::Failure;
use weir_state_store::{CompletedCheckpoint, KeyedStateBackend, OperatorId, StateHandle, StateId, StateLocation};

use crate::error::TaskResult;

/// Everything a job needs to take checkpoints and to start from one.
#[derive(Clone)]
pub struct CheckpointSetup {
    pub config: CheckpointConfig,
    pub location: StateLocation,
    pub job: JobId,
    /// This run's attempt: each attempt writes its own databases, so an old one never shares a
    /// writer with a new one.
    pub attempt: AttemptNumber,
    /// The checkpoint (or savepoint) this run starts from.
    pub restore: Option<CompletedCheckpoint>,
}

/// What a task tells the coordinator (over the wire when the coordinator runs in another
/// process: see [`crate::runtime::JobPart`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskReport {
    /// The task's part of a checkpoint is stored.
    Ack {
        checkpoint: CheckpointId,
        vertex: VertexId,
        subtask: SubtaskIndex,
        handle: Option<StateHandle>,
        position: serde_json::Value,
    },
    /// The task could not take its part; the checkpoint cannot complete.
    Decline { checkpoint: CheckpointId, failure: Failure },
    /// The task has processed all of its input. `position` is its final record, which stands in
    /// for its part of every checkpoint whose barrier it never emitted: everything it sent is
    /// ahead of its end of partition, which its consumers count as that barrier.
    Finished {
        vertex: VertexId,
        subtask: SubtaskIndex,
        position: serde_json::Value,
        last_barrier: Option<CheckpointId>,
    },
}

/// The keyed and per-subtask state an operator writes at a checkpoint.
pub struct SnapshotContext<'a> {
    pub checkpoint: CheckpointId,
    pub(crate) backend: Option<&'a mut KeyedStateBackend>,
    pub(crate) operator: OperatorId,
    /// Small state of this operator instance that is not keyed (a watermark, a sink's pending
    /// files); stored in the checkpoint's metadata.
    pub operator_state: Option<serde_json::Value>,
    /// Instead of a backend: keyed state kept in memory, so operators' snapshot and restore can
    /// be tested without a database.
    pub(crate) memory: Option<&'a mut MemoryState>,
}

impl<'a> SnapshotContext<'a> {
    /// A context that writes keyed state into `memory` (tests of snapshot and restore).
    pub fn in_memory(checkpoint: CheckpointId, memory: &'a mut MemoryState) -> Self {
        SnapshotContext {
            checkpoint,
            backend: None,
            operator: OperatorId(0),
            operator_state: None,
            memory: Some(memory),
        }
    }
}

impl SnapshotContext<'_> {
    /// False for a finished task's final record: keyed state is not kept, so operators need not
    /// prepare it.
    pub fn writes_keyed_state(&self) -> bool {
        self.backend.is_some() || self.memory.is_some()
    }

    /// Writes (or overwrites) one key's value of state `state`. Without a backend (a finished
    /// task's final record, which keeps no keyed state) nothing is written.
    pub fn put(&mut self, state: StateId, key_group: u32, key: &[u8], value: &[u8]) -> TaskResult<()> {
        if let Some(backend) = self.backend.as_deref_mut() {
            backend.stage(self.operator, state, key_group, key, Some(value))?;
        }
        if let Some(memory) = self.memory.as_deref_mut() {
            memory.keyed.insert((state, key_group, key.to_vec()), value.to_vec());
        }
        Ok(())
    }

    /// Removes one key of state `state`.
    pub fn delete(&mut self, state: StateId, key_group: u32, key: &[u8]) -> TaskResult<()> {
        if let Some(backend) = self.backend.as_deref_mut() {
            backend.stage(self.operator, state, key_group, key, None)?;
        }
        if let Some(memory) = self.memory.as_deref_mut() {
            memory.keyed.remove(&(state, key_group, key.to_vec()));
        }
        Ok(())
    }
}

/// One operator's checkpointed state held in memory: what a backend would store, for tests.
#[derive(Default, Clone, Debug)]
pub struct MemoryState {
    /// Keyed state as the backend would hold it after the writes: (state, key group, key) →
    /// value.
    pub keyed: BTreeMap<(StateId, u32, Vec<u8>), Vec<u8>>,
}

impl MemoryState {
    /// What a task restoring this state at parallelism 1 hands the operator, with the given
    /// per-subtask states.
    pub fn restored(&self, operator_states: Vec<serde_json::Value>) -> RestoredState {
        let mut keyed: HashMap<StateId, Vec<RestoredEntry>> = HashMap::new();
        for ((state, key_group, key), value) in &self.keyed {
            keyed.entry(*state).or_default().push((
                *key_group,
                Bytes::copy_from_slice(key),
                Bytes::copy_from_slice(value),
            ));
        }
        RestoredState { operator_states, keyed }
    }
}

/// One stored key of a restored state: its key group, key and value.
pub type RestoredEntry = (u32, Bytes, Bytes);

/// What an operator gets back when its task restores a checkpoint.
#[derive(Default)]
pub struct RestoredState {
    /// The operator's per-subtask state, one per old subtask whose key groups this subtask now
    /// owns (one at the same parallelism; none or several after a rescale).
    pub operator_states: Vec<serde_json::Value>,
    /// Keyed state by state id, for the key groups this subtask owns.
    pub keyed: HashMap<StateId, Vec<RestoredEntry>>,
}
