//! The in-process shuffle: channels between tasks of one process. Pipelined batches are handed
//! over by moving them (Arrow buffers are reference-counted), never copied or serialised.
//! Retained (blocking and hybrid) partitions are encoded into frames and kept in a
//! [`Store`] (memory, then a temporary directory by default); each gate channel on one is fed
//! by a task that reads its sub-partition from the store against the channel's credits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};

use crate::store::{Partition, Store, StoreConfig, SubpartitionReader};
use crate::{GateId, InputGate, PartitionKind, PartitionWriter, ShuffleError, ShuffleService, WithheldCredits, wire};

/// Credits each channel starts with: the events a producer may have in flight on it.
pub const DEFAULT_CREDITS: usize = 4;

/// The queue all channels of one gate deliver into, tagged with the channel's index.
struct GateQueue {
    events: Mutex<VecDeque<(usize, Result<StreamEvent, ShuffleError>)>>,
    notify: Notify,
}

struct ChannelEnd {
    gate: Arc<GateQueue>,
    index: usize,
    credits: Arc<Semaphore>,
}

/// The in-process [`ShuffleService`].
pub struct LocalShuffle {
    credits: usize,
    /// Gate channels waiting for their partition: every channel of a pipelined partition, and
    /// those of a retained one opened before it was created.
    channels: Mutex<HashMap<ChannelId, Arc<ChannelEnd>>>,
    store: Store,
    /// The store is shared by design with the server; in-process there is one namespace.
    namespace: Arc<str>,
}

/// Bytes of retained frames an in-process shuffle holds before spilling. Smaller than a
/// server's: in-process, the memory is the job's own, and spilled frames sit in the page cache,
/// which reads them back about as fast.
pub const LOCAL_MEMORY_BUDGET: u64 = 32 << 20;

impl LocalShuffle {
    pub fn new() -> Self {
        Self::with_credits(DEFAULT_CREDITS)
    }

    pub fn with_credits(credits: usize) -> Self {
        Self::with_config(credits, StoreConfig { memory_budget: LOCAL_MEMORY_BUDGET, ..StoreConfig::default() })
    }

    /// `store` sets the memory and disk budgets and places of retained partitions.
    pub fn with_config(credits: usize, store: StoreConfig) -> Self {
        assert!(credits > 0, "a channel needs at least one credit");
        LocalShuffle {
            credits,
            channels: Mutex::new(HashMap::new()),
            store: Store::new(store),
            namespace: Arc::from("local"),
        }
    }

    /// The store of retained partitions (for usage figures).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl Default for LocalShuffle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShuffleService for LocalShuffle {
    fn open_gate(
        &self,
        _gate: GateId,
        channels: Vec<ChannelId>,
    ) -> BoxFuture<'_, Result<Box<dyn InputGate>, ShuffleError>> {
        // Async so the feeding tasks of retained channels are spawned on the caller's runtime.
        Box::pin(async move { Ok(self.register_gate(channels)) })
    }

    fn create_partition(
        &self,
        partition: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    ) -> BoxFuture<'_, Result<Box<dyn PartitionWriter>, ShuffleError>> {
        Box::pin(async move {
            if kind.is_retained() {
                self.retained_writer(partition, subpartitions, kind)
            } else {
                self.writer(partition, subpartitions)
            }
        })
    }

    fn release_partitions(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            self.store.release(&self.namespace, &partitions).await;
            Ok(())
        })
    }

    fn release_all(&self) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            self.store.release_namespace(&self.namespace).await;
            Ok(())
        })
    }
}

impl LocalShuffle {
    fn register_gate(&self, channels: Vec<ChannelId>) -> Box<dyn InputGate> {
        let queue = Arc::new(GateQueue { events: Mutex::new(VecDeque::new()), notify: Notify::new() });
        let mut registry = self.channels.lock();
        let mut credits = Vec::with_capacity(channels.len());
        for (index, id) in channels.iter().enumerate() {
            let semaphore = Arc::new(Semaphore::new(self.credits));
            let end = Arc::new(ChannelEnd { gate: queue.clone(), index, credits: semaphore.clone() });
            match self.store.get(&self.namespace, id.partition) {
                // The store is looked up under the registry lock, as partitions are created, so
                // a channel is either fed now or found by its partition's creation.
                Some(partition) => self.feed_from_store(*id, &partition, end),
                None => {
                    registry.insert(*id, end);
                }
            }
            credits.push(semaphore);
        }
        Box::new(LocalGate {
            queue,
            credits,
            withheld: WithheldCredits::new(channels.len()),
            open: vec![true; channels.len()],
            open_count: channels.len(),
        })
    }

    fn writer(&self, partition: PartitionId, subpartitions: u32) -> Result<Box<dyn PartitionWriter>, ShuffleError> {
        let registry = self.channels.lock();
        let channels = (0..subpartitions)
            .map(|s| {
                let id = ChannelId { partition, consumer: SubtaskIndex(s) };
                registry.get(&id).cloned().ok_or(ShuffleError::UnknownChannel(id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(LocalWriter { partition, channels, waited: Duration::ZERO }))
    }

    fn retained_writer(
        &self,
        id: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    ) -> Result<Box<dyn PartitionWriter>, ShuffleError> {
        let mut registry = self.channels.lock();
        let partition = self.store.create(&self.namespace, id, subpartitions, kind)?;
        for s in 0..subpartitions {
            let channel = ChannelId { partition: id, consumer: SubtaskIndex(s) };
            if let Some(end) = registry.remove(&channel) {
                self.feed_from_store(channel, &partition, end);
            }
        }
        drop(registry);
        Ok(Box::new(RetainedWriter { store: self.store.clone(), partition, frame_size_hint: 64 }))
    }

    /// Starts the task that reads a retained sub-partition into a gate channel.
    fn feed_from_store(&self, channel: ChannelId, partition: &Arc<Partition>, end: Arc<ChannelEnd>) {
        match self.store.reader(partition, channel.consumer.0) {
            Ok(reader) => {
                tokio::spawn(feed(channel, reader, end));
            }
            Err(e) => deliver(&end, Err(ShuffleError::ChannelFailed { channel, message: e.to_string() })),
        }
    }
}

fn deliver(end: &ChannelEnd, item: Result<StreamEvent, ShuffleError>) {
    end.gate.events.lock().push_back((end.index, item));
    end.gate.notify.notify_one();
}

/// Moves one retained sub-partition into its gate, one event per credit, until its end, an
/// error, or the gate going away.
async fn feed(channel: ChannelId, mut reader: SubpartitionReader, end: Arc<ChannelEnd>) {
    loop {
        match end.credits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        let item = match reader.next().await {
            Ok(Some(frame)) => wire::decode(&frame)
                .map_err(|e| ShuffleError::ChannelFailed { channel, message: format!("stored frame: {e}") }),
            Ok(None) => return,
            Err(e) => Err(ShuffleError::ChannelFailed { channel, message: e.to_string() }),
        };
        let last = matches!(item, Ok(StreamEvent::EndOfPartition) | Err(_));
        deliver(&end, item);
        if last {
            return;
        }
    }
}

/// Writes a retained partition: encodes each event and appends it to the store.
struct RetainedWriter {
    store: Store,
    partition: Arc<Partition>,
    frame_size_hint: usize,
}

impl PartitionWriter for RetainedWriter {
    fn send(&mut self, subpartition: u32, event: StreamEvent) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            let count = self.partition.num_subpartitions();
            if subpartition >= count {
                return Err(ShuffleError::SubpartitionOutOfRange { partition: self.partition.id, subpartition, count });
            }
            let mut frame = Vec::with_capacity(self.frame_size_hint);
            wire::encode(&event, &mut frame).map_err(|e| ShuffleError::ChannelFailed {
                channel: ChannelId { partition: self.partition.id, consumer: SubtaskIndex(subpartition) },
                message: format!("cannot encode an event: {e}"),
            })?;
            self.frame_size_hint = frame.len();
            self.store.append(&self.partition, subpartition, Bytes::from(frame)).await?;
            Ok(())
        })
    }

    fn num_subpartitions(&self) -> u32 {
        self.partition.num_subpartitions()
    }

    fn backpressure(&self) -> Duration {
        Duration::ZERO
    }
}

struct LocalWriter {
    partition: PartitionId,
    channels: Vec<Arc<ChannelEnd>>,
    waited: Duration,
}

impl PartitionWriter for LocalWriter {
    fn send(&mut self, subpartition: u32, event: StreamEvent) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            let Some(channel) = self.channels.get(subpartition as usize).cloned() else {
                return Err(ShuffleError::SubpartitionOutOfRange {
                    partition: self.partition,
                    subpartition,
                    count: self.channels.len() as u32,
                });
            };
            match channel.credits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    let started = Instant::now();
                    let permit = channel.credits.acquire().await.map_err(|_| {
                        ShuffleError::ConsumerGone(ChannelId {
                            partition: self.partition,
                            consumer: SubtaskIndex(subpartition),
                        })
                    })?;
                    permit.forget();
                    self.waited += started.elapsed();
                }
            }
            deliver(&channel, Ok(event));
            Ok(())
        })
    }

    fn num_subpartitions(&self) -> u32 {
        self.channels.len() as u32
    }

    fn backpressure(&self) -> Duration {
        self.waited
    }
}

struct LocalGate {
    queue: Arc<GateQueue>,
    credits: Vec<Arc<Semaphore>>,
    withheld: WithheldCredits,
    open: Vec<bool>,
    open_count: usize,
}

impl InputGate for LocalGate {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<(usize, StreamEvent)>, ShuffleError>> {
        Box::pin(async move {
            loop {
                if self.open_count == 0 {
                    return Ok(None);
                }
                let popped = self.queue.events.lock().pop_front();
                match popped {
                    Some((index, event)) => {
                        let event = event?;
                        if self.withheld.pass(index) {
                            self.credits[index].add_permits(1);
                        }
                        if matches!(event, StreamEvent::EndOfPartition) && self.open[index] {
                            self.open[index] = false;
                            self.open_count -= 1;
                        }
                        return Ok(Some((index, event)));
                    }
                    None => self.queue.notify.notified().await,
                }
            }
        })
    }

    fn num_channels(&self) -> usize {
        self.credits.len()
    }

    fn pause(&mut self, channel: usize) {
        self.withheld.pause(channel);
    }

    fn resume(&mut self, channel: usize) {
        let n = self.withheld.resume(channel);
        if n > 0 {
            self.credits[channel].add_permits(n as usize);
        }
    }
}

impl Drop for LocalGate {
    fn drop(&mut self) {
        // Wake producers blocked on credit so they see the consumer has gone.
        for credits in &self.credits {
            credits.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_shuffle_suite() {
        let spilling = || {
            let store = StoreConfig { memory_budget: 16 << 10, ..StoreConfig::default() };
            Arc::new(LocalShuffle::with_config(2, store)) as Arc<dyn ShuffleService>
        };
        crate::testing::run_all(&|| Arc::new(LocalShuffle::with_credits(2)) as Arc<dyn ShuffleService>, &spilling, 2)
            .await;
    }
}
