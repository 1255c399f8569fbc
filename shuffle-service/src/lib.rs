//! The shuffle service: every exchange between tasks goes through [`ShuffleService`].
//!
//! A producing subtask writes one result partition per outgoing edge, split into one
//! sub-partition per consuming subtask; a consuming subtask reads through one input gate, the
//! union of its channels (one per producer and edge). Flow control is credit-based on every
//! channel: a producer sends only against a credit, and the consumer returns the credit when
//! its task takes the event, so a slow task holds back exactly the producers that feed it.
//!
//! This crate holds the trait, the in-process implementation ([`local`]) and the remote one
//! ([`remote`]: a shuffle server process and the client workers use), which share the wire
//! format in [`wire`] and the test suite in [`testing`].

pub mod local;
pub mod remote;
pub mod testing;
pub mod wire;

use std::time::Duration;

use futures::future::BoxFuture;
use thiserror::Error;
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};

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
    #[error("shuffle server {addr}: {message}")]
    Remote { addr: String, message: String },
    #[error("channel {channel} failed: {message}")]
    ChannelFailed { channel: ChannelId, message: String },
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
}

/// What a consumer reads: all its input channels, merged, each in order.
pub trait InputGate: Send {
    /// The next event and the index of the channel it came on; `None` when every channel has
    /// ended. Taking an event returns its credit to the producer. An error means a channel
    /// broke before its end (its producer or the server went away): the task must fail rather
    /// than take the silence for the end of its input.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<(usize, StreamEvent)>, ShuffleError>>;

    fn num_channels(&self) -> usize;
}

/// The exchange between tasks.
pub trait ShuffleService: Send + Sync {
    /// Registers a consuming subtask's gate over `channels`, in that order. Gates are opened
    /// before the partitions that feed them are created.
    fn open_gate(
        &self,
        gate: GateId,
        channels: Vec<ChannelId>,
    ) -> BoxFuture<'_, Result<Box<dyn InputGate>, ShuffleError>>;

    /// Creates a producer's partition with one sub-partition per consuming subtask.
    fn create_partition(
        &self,
        partition: PartitionId,
        subpartitions: u32,
    ) -> BoxFuture<'_, Result<Box<dyn PartitionWriter>, ShuffleError>>;
}
