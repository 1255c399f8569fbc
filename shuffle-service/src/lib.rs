//! The shuffle service: every exchange between tasks goes through [`ShuffleService`].
//!
//! A producing subtask writes one result partition per outgoing edge, split into one
//! sub-partition per consuming subtask; a consuming subtask reads through one input gate, the
//! union of its channels (one per producer and edge). Flow control is credit-based on every
//! channel: a producer sends only against a credit, and the consumer returns the credit when
//! its task takes the event, so a slow task holds back exactly the producers that feed it.
//!
//! A partition has a [`PartitionKind`]: pipelined partitions stream and keep nothing; blocking
//! and hybrid ones are retained in a [`store`] (memory, then disk, then object storage) so a
//! consumer can start later or read again, and are freed by [`ShuffleService::release_partitions`].
//!
//! This crate holds the trait, the in-process implementation ([`local`]) and the remote one
//! ([`remote`]: a shuffle server process and the client workers use), which share the wire
//! format in [`wire`], the storage of retained partitions in [`store`] and the test suite in
//! [`testing`].

pub mod local;
pub mod remote;
pub mod store;
pub mod testing;
pub mod wire;

use std::time::Duration;

use futures::future::BoxFuture;
use thiserror::Error;
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};
use weir_dataflow::wire::Failure;

pub use local::LocalShuffle;

#[derive(Debug, Error)]
pub enum ShuffleError {
    #[error("channel {0} has no registered consumer")]
    UnknownChannel(ChannelId),
    #[error("partition {0} is already registered")]
    DuplicatePartition(PartitionId),
    #[error("sub-partition {subpartition} out of range for partition {partition} with {count}")]
    SubpartitionOutOfRange { partition: PartitionId, subpartition: u32, count: u32 },
    #[error("the consumer of channel {0} has gone away")]
    ConsumerGone(ChannelId),
    /// The shuffle server refused a request, or could not be reached or kept. `failure` carries
    /// the code from the one table: the server's own for a refusal, `unreachable` for a lost
    /// connection, `protocol-violation` for a message the client cannot read.
    #[error("shuffle server {addr}: {failure}")]
    Remote { addr: String, failure: Failure },
    #[error("channel {channel} failed: {message}")]
    ChannelFailed { channel: ChannelId, message: String },
    #[error("shuffle storage: {0}")]
    Storage(#[from] store::StoreError),
}

/// How a result partition's data lives, after Flink's `ResultPartitionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKind {
    /// Flink's `PIPELINED`: streamed to consumers as produced, with bounded memory per channel
    /// (credits), and not kept. Every channel's consumer must have opened its gate when the
    /// partition is created.
    Pipelined,
    /// Flink's `BLOCKING`: written in full (memory, then disk, then object storage) before any
    /// consumer reads; readable once every sub-partition has ended, and re-readable until
    /// released, so a failed consumer reads again without re-running its producer.
    Blocking,
    /// Flink's `HYBRID_FULL`: consumers may read while the producer runs (or later); everything
    /// is kept, so it is re-readable until released.
    HybridFull,
    /// Flink's `HYBRID_SELECTIVE`: consumers may read while the producer runs; only what has not
    /// been read is kept (spilled under memory pressure), so each sub-partition is read once.
    HybridSelective,
}

impl PartitionKind {
    /// Whether the partition's data is kept in the store (every kind but pipelined).
    pub fn is_retained(self) -> bool {
        self != PartitionKind::Pipelined
    }

    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            PartitionKind::Pipelined => 0,
            PartitionKind::Blocking => 1,
            PartitionKind::HybridFull => 2,
            PartitionKind::HybridSelective => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<PartitionKind> {
        Some(match v {
            0 => PartitionKind::Pipelined,
            1 => PartitionKind::Blocking,
            2 => PartitionKind::HybridFull,
            3 => PartitionKind::HybridSelective,
            _ => return None,
        })
    }
}

/// Identifies the input gate of one consuming subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GateId {
    pub vertex: VertexId,
    pub subtask: SubtaskIndex,
}

/// Where a producer sends: one writer per result partition.
pub trait PartitionWriter: Send {
    /// Sends an event to one sub-partition, waiting for a credit on that channel.
    fn send(&mut self, subpartition: u32, event: StreamEvent) -> BoxFuture<'_, Result<(), ShuffleError>>;

    fn num_subpartitions(&self) -> u32;

    /// Total time spent waiting for credit: the producer's backpressure.
    fn backpressure(&self) -> Duration;

    /// Waits until everything sent has been accepted by the service (for a retained partition:
    /// stored). A producer of a blocking partition calls it after ending every sub-partition to
    /// know its output is complete.
    fn finish(&mut self) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What a consumer reads: all its input channels, merged, each in order.
pub trait InputGate: Send {
    /// The next event and the index of the channel it came on; `None` when every channel has
    /// ended. Taking an event returns its credit to the producer. An error means a channel
    /// broke before its end (its producer or the server went away): the task must fail rather
    /// than take the silence for the end of its input.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<(usize, StreamEvent)>, ShuffleError>>;

    fn num_channels(&self) -> usize;

    /// Keeps back the credits of `channel`'s events from now on, so its producer stops once it
    /// has spent the ones it holds: a task aligning a checkpoint's barriers holds back the
    /// channels that delivered theirs, and must not buffer what they send meanwhile.
    fn pause(&mut self, channel: usize);

    /// Returns the credits kept back while `channel` was paused.
    fn resume(&mut self, channel: usize);
}

/// The credits a gate keeps back for its paused channels.
#[derive(Debug, Default)]
pub(crate) struct WithheldCredits {
    /// Per channel: `None` when running, else the credits kept back so far.
    withheld: Vec<Option<u32>>,
}

impl WithheldCredits {
    pub(crate) fn new(channels: usize) -> Self {
        WithheldCredits { withheld: vec![None; channels] }
    }

    /// Whether the credit of an event just taken from `channel` goes back now; if not, it is
    /// kept for [`resume`](Self::resume).
    pub(crate) fn pass(&mut self, channel: usize) -> bool {
        match &mut self.withheld[channel] {
            Some(n) => {
                *n += 1;
                false
            }
            None => true,
        }
    }

    pub(crate) fn pause(&mut self, channel: usize) {
        self.withheld[channel].get_or_insert(0);
    }

    /// The credits to give back now that `channel` runs again.
    pub(crate) fn resume(&mut self, channel: usize) -> u32 {
        self.withheld[channel].take().unwrap_or(0)
    }
}

/// The exchange between tasks.
pub trait ShuffleService: Send + Sync {
    /// Registers a consuming subtask's gate over `channels`, in that order. A gate over a
    /// pipelined partition is opened before the partition is created; over a retained one, at
    /// any time: each such channel reads its sub-partition from the beginning (a blocking one once
    /// the partition is complete). Channels may come from partitions of different kinds.
    fn open_gate(
        &self,
        gate: GateId,
        channels: Vec<ChannelId>,
    ) -> BoxFuture<'_, Result<Box<dyn InputGate>, ShuffleError>>;

    /// Creates a producer's partition with one sub-partition per consuming subtask. A
    /// retained partition's writer is never held back by its consumers: it writes to the store,
    /// whose memory budget bounds memory by spilling.
    fn create_partition(
        &self,
        partition: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    ) -> BoxFuture<'_, Result<Box<dyn PartitionWriter>, ShuffleError>>;

    /// Frees retained partitions (memory, files, objects); readers still on them fail. Unknown
    /// and pipelined partitions are ignored, so releasing twice is harmless.
    fn release_partitions(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Result<(), ShuffleError>>;

    /// Frees every retained partition of this service's namespace (the job attempt): what a
    /// job master calls when a job ends.
    fn release_all(&self) -> BoxFuture<'_, Result<(), ShuffleError>>;
}
