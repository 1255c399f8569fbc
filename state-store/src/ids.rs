//! Ids that scope state: which operator of a job owns it, which state of that operator it is,
//! and which subtask attempt writes it. Job-wide ids come from `weir-dataflow`.

use std::fmt;

use serde::{Deserialize, Serialize};
pub use weir_dataflow::ids::{AttemptNumber, CheckpointId, JobId, SubtaskIndex, VertexId};

/// An operator of a job graph (a plan node). Planning is deterministic, so the id is the same in
/// every attempt and after a rescale; it prefixes every key the operator stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperatorId(pub u32);

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// One named state of an operator (e.g. "accumulators" = 0, "rows" = 1). Chosen by the operator
/// and fixed across versions of it; ids from [`crate::keys::MAX_USER_STATE_ID`] up are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateId(pub u16);

impl fmt::Display for StateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Which subtask attempt a database belongs to. Each attempt writes its own database, so an old
/// attempt and a new one never share a writer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubtaskStateId {
    pub job: JobId,
    pub vertex: VertexId,
    pub subtask: SubtaskIndex,
    pub attempt: AttemptNumber,
}
