//! Newtypes for every identifier and fencing token that crosses a module boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_newtype!(
    /// A vertex of a job graph: one chain of operators.
    VertexId(u32), "v");
id_newtype!(
    /// The index of one parallel instance of a vertex, `0..parallelism`.
    SubtaskIndex(u32), "#");
id_newtype!(
    /// A checkpoint; ids increase monotonically within a job.
    CheckpointId(u64), "chk-");
id_newtype!(
    /// A generation of a subtask's state database: each run of a subtask writes its own, so an
    /// old run and a new one never share a writer.
    AttemptNumber(u32), "attempt-");
id_newtype!(
    /// One attempt of a job on workers, numbered from 1 by the leader: a new attempt is always
    /// higher than any before it, which fences the older ones.
    JobAttempt(u64), "attempt-");

/// A job, named by a string the control plane hands out (or `local` for `weir run`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker process registered with the control plane.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result partition one producing subtask writes for one job edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// The edge index in the job graph.
    pub edge: u32,
    /// The producing subtask.
    pub producer: SubtaskIndex,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}{}", self.edge, self.producer)
    }
}

/// One channel: a partition's sub-partition read by one consuming subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId {
    pub partition: PartitionId,
    pub consumer: SubtaskIndex,
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.partition, self.consumer)
    }
}

impl JobAttempt {
    /// The attempt after this one.
    pub fn next(self) -> JobAttempt {
        JobAttempt(self.0 + 1)
    }
}
