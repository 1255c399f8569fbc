//! The in-process shuffle: channels between tasks of one process. Batches are handed over by
//! moving them (Arrow buffers are reference-counted), never copied or serialised.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};

use crate::{GateId, InputGate, PartitionWriter, ShuffleError, ShuffleService};

/// Credits each channel starts with: the events a producer may have in flight on it.
pub const DEFAULT_CREDITS: usize = 4;

/// The queue all channels of one gate deliver into, tagged with the channel's index.
struct GateQueue {
    events: Mutex<VecDeque<(usize, StreamEvent)>>,
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
    channels: Mutex<HashMap<ChannelId, Arc<ChannelEnd>>>,
}

impl LocalShuffle {
    pub fn new() -> Self {
        Self::with_credits(DEFAULT_CREDITS)
    }

    pub fn with_credits(credits: usize) -> Self {
        assert!(credits > 0, "a channel needs at least one credit");
        LocalShuffle { credits, channels: Mutex::new(HashMap::new()) }
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
        Box::pin(std::future::ready(Ok(self.register_gate(channels))))
    }

    fn create_partition(
        &self,
        partition: PartitionId,
        subpartitions: u32,
    ) -> BoxFuture<'_, Result<Box<dyn PartitionWriter>, ShuffleError>> {
        Box::pin(std::future::ready(self.writer(partition, subpartitions)))
    }
}

impl LocalShuffle {
    fn register_gate(&self, channels: Vec<ChannelId>) -> Box<dyn InputGate> {
        let queue = Arc::new(GateQueue { events: Mutex::new(VecDeque::new()), notify: Notify::new() });
        let mut registry = self.channels.lock();
        let mut credits = Vec::with_capacity(channels.len());
        for (index, id) in channels.iter().enumerate() {
            let semaphore = Arc::new(Semaphore::new(self.credits));
            registry.insert(*id, Arc::new(ChannelEnd { gate: queue.clone(), index, credits: semaphore.clone() }));
            credits.push(semaphore);
        }
        Box::new(LocalGate { queue, credits, open: vec![true; channels.len()], open_count: channels.len() })
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
            channel.gate.events.lock().push_back((channel.index, event));
            channel.gate.notify.notify_one();
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
                        self.credits[index].add_permits(1);
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
        crate::testing::run_all(&|| Arc::new(LocalShuffle::with_credits(2)) as Arc<dyn ShuffleService>, 2).await;
    }
}
