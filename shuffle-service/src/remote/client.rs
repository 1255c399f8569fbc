//! The client side of the remote shuffle: a [`ShuffleService`] whose channels run through a
//! shuffle server. Each gate and each partition is one TCP connection. Encoding happens in the
//! producing task and decoding in a reader task beside the consuming one, so the two ends of a
//! channel work in parallel with the server in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, mpsc};
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};

use super::proto::{ClientMessage, ErrorCode, MessageReader, Outbound, ServerMessage, write_loop};
use crate::wire::{self, PROTOCOL_VERSION};
use crate::{GateId, InputGate, PartitionKind, PartitionWriter, ShuffleError, ShuffleService, WithheldCredits};

/// Events a consumer lets the server have in flight to it on each channel.
pub const DEFAULT_CONSUMER_CREDITS: u32 = 4;

/// A [`ShuffleService`] backed by one shuffle server.
pub struct RemoteShuffle {
    addr: String,
    namespace: String,
    consumer_credits: u32,
}

impl RemoteShuffle {
    /// Channels live in `namespace` on the server (one job attempt), so jobs sharing a server
    /// never see each other's channels.
    pub fn new(addr: impl Into<String>, namespace: impl Into<String>) -> Self {
        RemoteShuffle { addr: addr.into(), namespace: namespace.into(), consumer_credits: DEFAULT_CONSUMER_CREDITS }
    }

    pub fn with_consumer_credits(mut self, credits: u32) -> Self {
        assert!(credits > 0, "a channel needs at least one credit");
        self.consumer_credits = credits;
        self
    }

    fn remote_error(&self, message: impl std::fmt::Display) -> ShuffleError {
        ShuffleError::Remote { addr: self.addr.clone(), message: message.to_string() }
    }

    /// Connects and says hello; returns the reader and the writer task's queue.
    async fn connect(&self) -> Result<(MessageReader<OwnedReadHalf>, mpsc::UnboundedSender<Outbound>), ShuffleError> {
        let stream = TcpStream::connect(&self.addr).await.map_err(|e| self.remote_error(e))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, queue));
        let mut reader = MessageReader::new(read);
        let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, namespace: self.namespace.clone() };
        let _ = outbox.send(hello.encode());
        self.expect_ok(&mut reader).await?;
        Ok((reader, outbox))
    }

    async fn expect_ok(&self, reader: &mut MessageReader<OwnedReadHalf>) -> Result<(), ShuffleError> {
        match reader.next().await.map_err(|e| self.remote_error(e))? {
            None => Err(self.remote_error("the server closed the connection")),
            Some(body) => match ServerMessage::decode(body).map_err(|e| self.remote_error(e))? {
                ServerMessage::Ok => Ok(()),
                ServerMessage::Error { message, .. } => Err(self.remote_error(message)),
                other => Err(self.remote_error(format!("unexpected reply {other:?}"))),
            },
        }
    }

    /// Sends one request on a fresh connection and waits for its `Ok`.
    async fn request(&self, message: ClientMessage) -> Result<(), ShuffleError> {
        let (mut reader, outbox) = self.connect().await?;
        let _ = outbox.send(message.encode());
        self.expect_ok(&mut reader).await
    }
}

impl ShuffleService for RemoteShuffle {
    fn open_gate(
        &self,
        _gate: GateId,
        channels: Vec<ChannelId>,
    ) -> BoxFuture<'_, Result<Box<dyn InputGate>, ShuffleError>> {
        Box::pin(async move {
            let (mut reader, outbox) = self.connect().await?;
            let register = ClientMessage::RegisterGate { channels: channels.clone(), credits: self.consumer_credits };
            let _ = outbox.send(register.encode());
            self.expect_ok(&mut reader).await?;
            let (events, queue) = mpsc::unbounded_channel();
            let addr = self.addr.clone();
            let ids = channels.clone();
            tokio::spawn(read_events(reader, events, addr, ids));
            let open_count = channels.len();
            Ok(Box::new(RemoteGate {
                channels,
                withheld: WithheldCredits::new(open_count),
                queue,
                outbox,
                open: vec![true; open_count],
                open_count,
            }) as Box<dyn InputGate>)
        })
    }

    fn release_partitions(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(self.request(ClientMessage::Release { partitions }))
    }

    fn release_all(&self) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(self.request(ClientMessage::ReleaseNamespace))
    }

    fn create_partition(
        &self,
        partition: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    ) -> BoxFuture<'_, Result<Box<dyn PartitionWriter>, ShuffleError>> {
        Box::pin(async move {
            let (mut reader, outbox) = self.connect().await?;
            let _ = outbox.send(ClientMessage::CreatePartition { partition, subpartitions, kind }.encode());
            match reader.next().await.map_err(|e| self.remote_error(e))? {
                None => return Err(self.remote_error("the server closed the connection")),
                Some(body) => match ServerMessage::decode(body).map_err(|e| self.remote_error(e))? {
                    ServerMessage::Ok => {}
                    ServerMessage::Error { code: ErrorCode::UnknownChannel, detail, .. } => {
                        return Err(ShuffleError::UnknownChannel(ChannelId {
                            partition,
                            consumer: SubtaskIndex(detail),
                        }));
                    }
                    ServerMessage::Error { message, .. } => return Err(self.remote_error(message)),
                    other => return Err(self.remote_error(format!("unexpected reply {other:?}"))),
                },
            }
            let credits = Arc::new(Credits {
                state: Mutex::new(CreditState {
                    available: vec![0; subpartitions as usize],
                    first_grant: vec![None; subpartitions as usize],
                    granted: vec![0; subpartitions as usize],
                    sent: vec![0; subpartitions as usize],
                    failed: vec![None; subpartitions as usize],
                    lost: None,
                }),
                changed: Notify::new(),
            });
            tokio::spawn(read_grants(reader, credits.clone(), self.addr.clone()));
            Ok(Box::new(RemoteWriter {
                partition,
                subpartitions,
                credits,
                outbox,
                addr: self.addr.clone(),
                waited: Duration::ZERO,
                frame_size_hint: 64,
            }) as Box<dyn PartitionWriter>)
        })
    }
}

type Delivery = Result<(usize, StreamEvent), ShuffleError>;

/// Decodes what the server relays to a gate, in order, until the connection ends.
async fn read_events(
    mut reader: MessageReader<OwnedReadHalf>,
    events: mpsc::UnboundedSender<Delivery>,
    addr: String,
    channels: Vec<ChannelId>,
) {
    let remote = |message: String| ShuffleError::Remote { addr: addr.clone(), message };
    loop {
        let delivery = match reader.next().await {
            Ok(Some(body)) => match ServerMessage::decode(body) {
                Ok(ServerMessage::Event { channel, frame }) if (channel as usize) < channels.len() => {
                    wire::decode(&frame).map(|event| (channel as usize, event)).map_err(|e| {
                        ShuffleError::ChannelFailed { channel: channels[channel as usize], message: e.to_string() }
                    })
                }
                Ok(ServerMessage::ChannelFailed { channel, message }) if (channel as usize) < channels.len() => {
                    Err(ShuffleError::ChannelFailed { channel: channels[channel as usize], message })
                }
                Ok(ServerMessage::Error { message, .. }) => Err(remote(message)),
                Ok(other) => Err(remote(format!("unexpected message {other:?}"))),
                Err(e) => Err(remote(e.to_string())),
            },
            Ok(None) => Err(remote("the server closed the connection".to_string())),
            Err(e) => Err(remote(e.to_string())),
        };
        let fatal = delivery.is_err();
        if events.send(delivery).is_err() || fatal {
            return;
        }
    }
}

struct RemoteGate {
    channels: Vec<ChannelId>,
    withheld: WithheldCredits,
    queue: mpsc::UnboundedReceiver<Delivery>,
    outbox: mpsc::UnboundedSender<Outbound>,
    open: Vec<bool>,
    open_count: usize,
}

impl InputGate for RemoteGate {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<(usize, StreamEvent)>, ShuffleError>> {
        Box::pin(async move {
            if self.open_count == 0 {
                return Ok(None);
            }
            let delivery = self.queue.recv().await.unwrap_or_else(|| {
                Err(ShuffleError::Remote { addr: String::new(), message: "the gate's reader stopped".into() })
            });
            let (index, event) = delivery?;
            // The credit goes back as soon as the task has the event: the writer task batches
            // credits that pile up while it is busy into one write.
            if self.withheld.pass(index) {
                let _ = self.outbox.send(ClientMessage::Credit { channel: index as u32, n: 1 }.encode());
            }
            if matches!(event, StreamEvent::EndOfPartition) && self.open[index] {
                self.open[index] = false;
                self.open_count -= 1;
            }
            Ok(Some((index, event)))
        })
    }

    fn num_channels(&self) -> usize {
        self.channels.len()
    }

    fn pause(&mut self, channel: usize) {
        self.withheld.pause(channel);
    }

    fn resume(&mut self, channel: usize) {
        let n = self.withheld.resume(channel);
        if n > 0 {
            let _ = self.outbox.send(ClientMessage::Credit { channel: channel as u32, n }.encode());
        }
    }
}

struct CreditState {
    available: Vec<u32>,
    /// The server's first grant per sub-partition: its window. Once every later grant has
    /// come back for each frame sent, the server has accepted everything (see `finish`).
    first_grant: Vec<Option<u32>>,
    granted: Vec<u64>,
    sent: Vec<u64>,
    /// Set when a sub-partition's consumer went away.
    failed: Vec<Option<String>>,
    /// Set when the connection to the server broke.
    lost: Option<String>,
}

struct Credits {
    state: Mutex<CreditState>,
    changed: Notify,
}

/// Applies the server's grants and failure notices to a partition's credit counts.
async fn read_grants(mut reader: MessageReader<OwnedReadHalf>, credits: Arc<Credits>, addr: String) {
    let lost = loop {
        match reader.next().await {
            Ok(Some(body)) => match ServerMessage::decode(body) {
                Ok(ServerMessage::Grant { subpartition, n }) => {
                    let mut state = credits.state.lock();
                    let s = subpartition as usize;
                    if s < state.available.len() {
                        state.available[s] += n;
                        if state.first_grant[s].is_none() {
                            state.first_grant[s] = Some(n);
                        } else {
                            state.granted[s] += n as u64;
                        }
                    }
                }
                Ok(ServerMessage::ChannelFailed { channel, message }) => {
                    if let Some(f) = credits.state.lock().failed.get_mut(channel as usize) {
                        *f = Some(message);
                    }
                }
                Ok(ServerMessage::Error { message, .. }) => break message,
                Ok(other) => break format!("unexpected message {other:?}"),
                Err(e) => break e.to_string(),
            },
            Ok(None) => break "the server closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
        credits.changed.notify_waiters();
    };
    credits.state.lock().lost = Some(format!("shuffle server {addr}: {lost}"));
    credits.changed.notify_waiters();
}

struct RemoteWriter {
    partition: PartitionId,
    subpartitions: u32,
    credits: Arc<Credits>,
    outbox: mpsc::UnboundedSender<Outbound>,
    addr: String,
    waited: Duration,
    /// The size of the last frame: the next one's buffer starts that large.
    frame_size_hint: usize,
}

impl RemoteWriter {
    /// Takes one credit of `subpartition`, waiting for the server to grant it.
    async fn take_credit(&mut self, subpartition: u32) -> Result<(), ShuffleError> {
        let mut started = None;
        loop {
            let changed = self.credits.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.credits.state.lock();
                if let Some(lost) = &state.lost {
                    return Err(ShuffleError::Remote { addr: self.addr.clone(), message: lost.clone() });
                }
                if state.failed[subpartition as usize].is_some() {
                    return Err(ShuffleError::ConsumerGone(ChannelId {
                        partition: self.partition,
                        consumer: SubtaskIndex(subpartition),
                    }));
                }
                if state.available[subpartition as usize] > 0 {
                    state.available[subpartition as usize] -= 1;
                    state.sent[subpartition as usize] += 1;
                    if let Some(started) = started {
                        self.waited += Instant::now().duration_since(started);
                    }
                    return Ok(());
                }
            }
            started.get_or_insert_with(Instant::now);
            changed.await;
        }
    }
}

impl PartitionWriter for RemoteWriter {
    fn send(&mut self, subpartition: u32, event: StreamEvent) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            if subpartition >= self.subpartitions {
                return Err(ShuffleError::SubpartitionOutOfRange {
                    partition: self.partition,
                    subpartition,
                    count: self.subpartitions,
                });
            }
            self.take_credit(subpartition).await?;
            let mut frame = Vec::with_capacity(self.frame_size_hint);
            wire::encode(&event, &mut frame).map_err(|e| ShuffleError::Remote {
                addr: self.addr.clone(),
                message: format!("cannot encode an event: {e}"),
            })?;
            self.frame_size_hint = frame.len();
            let frame = Bytes::from(frame);
            self.outbox.send(ClientMessage::Data { subpartition, frame }.encode()).map_err(|_| ShuffleError::Remote {
                addr: self.addr.clone(),
                message: "the connection is closed".into(),
            })
        })
    }

    fn num_subpartitions(&self) -> u32 {
        self.subpartitions
    }

    fn backpressure(&self) -> Duration {
        self.waited
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(), ShuffleError>> {
        Box::pin(async move {
            loop {
                let changed = self.credits.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                {
                    let state = self.credits.state.lock();
                    if let Some(lost) = &state.lost {
                        return Err(ShuffleError::Remote { addr: self.addr.clone(), message: lost.clone() });
                    }
                    if (0..state.sent.len()).all(|s| state.granted[s] >= state.sent[s]) {
                        return Ok(());
                    }
                }
                changed.await;
            }
        })
    }
}
