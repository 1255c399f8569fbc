//! The client side of the remote shuffle: a [`ShuffleService`] whose channels run through a
//! shuffle server. Each gate and each partition is one TCP connection. Encoding happens in the
//! producing task and decoding in a reader task beside the consuming one, so the two ends of a
//! channel work in parallel with the server in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use weir_dataflow::event::StreamEvent;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};
use weir_dataflow::wire::{ErrorCode, Failure};
use weir_net::{ReadHalf, Transport};

use super::proto::{ClientMessage, MessageReader, Outbound, ProtoError, ServerMessage, write_loop};
use crate::wire::{self, PROTOCOL_VERSION};
use crate::{GateId, InputGate, PartitionKind, PartitionWriter, ShuffleError, ShuffleService, WithheldCredits};

/// Events a consumer lets the server have in flight to it on each channel.
pub const DEFAULT_CONSUMER_CREDITS: u32 = 4;

/// A [`ShuffleService`] backed by one shuffle server.
pub struct RemoteShuffle {
    addr: String,
    namespace: String,
    /// The namespace's token (the shuffle key's signature of it); empty for an open server.
    token: String,
    /// Plain TCP, or TLS trusting the cluster's CA.
    transport: Transport,
    consumer_credits: u32,
}

impl RemoteShuffle {
    /// Channels live in `namespace` on the server (one job attempt), so jobs sharing a server
    /// never see each other's channels.
    pub fn new(addr: impl Into<String>, namespace: impl Into<String>) -> Self {
        RemoteShuffle {
            addr: addr.into(),
            namespace: namespace.into(),
            token: String::new(),
            transport: Transport::Plain,
            consumer_credits: DEFAULT_CONSUMER_CREDITS,
        }
    }

    /// Presents `token` for the namespace (what the control plane issued for this attempt, or
    /// `ClusterKey::sign` of the namespace with the shuffle key).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Connects over `transport` (TLS, for a server that presents a certificate).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn with_consumer_credits(mut self, credits: u32) -> Self {
        assert!(credits > 0, "a channel needs at least one credit");
        self.consumer_credits = credits;
        self
    }

    /// Connects and says hello; returns the reader and the writer task's queue.
    async fn connect(&self) -> Result<(MessageReader<ReadHalf>, mpsc::UnboundedSender<Outbound>), ShuffleError> {
        let stream = self
            .transport
            .connect(&self.addr)
            .await
            .map_err(|e| remote(&self.addr, ErrorCode::Unreachable, e.to_string()))?;
        let (read, write) = stream.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, queue));
        let mut reader = MessageReader::new(read);
        let hello = ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            namespace: self.namespace.clone(),
            token: self.token.clone(),
        };
        let _ = outbox.send(hello.encode());
        self.expect_ok(&mut reader).await?;
        Ok((reader, outbox))
    }

    async fn expect_ok(&self, reader: &mut MessageReader<ReadHalf>) -> Result<(), ShuffleError> {
        match self.reply(reader).await? {
            ServerMessage::Ok => Ok(()),
            ServerMessage::Error { code, message, .. } => Err(remote(&self.addr, code, message)),
            other => Err(unexpected(&self.addr, &other)),
        }
    }

    /// The server's next message on a connection that waits for a reply.
    async fn reply(&self, reader: &mut MessageReader<ReadHalf>) -> Result<ServerMessage, ShuffleError> {
        let failure = match reader.next().await {
            Ok(Some(body)) => match ServerMessage::decode(body) {
                Ok(message) => return Ok(message),
                Err(e) => unreadable(e),
            },
            Ok(None) => closed(),
            Err(e) => unreadable(e),
        };
        Err(ShuffleError::Remote { addr: self.addr.clone(), failure })
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
            match self.reply(&mut reader).await? {
                ServerMessage::Ok => {}
                // Its consumer has not registered yet: the caller may wait for it and try again.
                ServerMessage::Error { code: ErrorCode::UnknownChannel, detail, .. } => {
                    return Err(ShuffleError::UnknownChannel(ChannelId { partition, consumer: SubtaskIndex(detail) }));
                }
                ServerMessage::Error { code, message, .. } => return Err(remote(&self.addr, code, message)),
                other => return Err(unexpected(&self.addr, &other)),
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
            tokio::spawn(read_grants(reader, credits.clone()));
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

/// The server (or the connection to it) failed with `code` of the one table.
fn remote(addr: &str, code: ErrorCode, message: impl Into<String>) -> ShuffleError {
    ShuffleError::Remote { addr: addr.to_string(), failure: Failure::new(code, message) }
}

/// The server sent a message the protocol does not allow here.
fn unexpected(addr: &str, message: &ServerMessage) -> ShuffleError {
    remote(addr, ErrorCode::ProtocolViolation, format!("unexpected message {message:?}"))
}

/// A message from the server that cannot be read: the connection broke, or the server sent
/// what the protocol does not allow.
fn unreadable(e: ProtoError) -> Failure {
    let code = match e {
        ProtoError::Io(_) | ProtoError::Truncated { .. } => ErrorCode::Unreachable,
        ProtoError::TooLarge(_) | ProtoError::Malformed { .. } | ProtoError::UnknownTag(_) => {
            ErrorCode::ProtocolViolation
        }
    };
    Failure::new(code, e.to_string())
}

fn closed() -> Failure {
    Failure::new(ErrorCode::Unreachable, "the server closed the connection")
}

/// Decodes what the server relays to a gate, in order, until the connection ends.
async fn read_events(
    mut reader: MessageReader<ReadHalf>,
    events: mpsc::UnboundedSender<Delivery>,
    addr: String,
    channels: Vec<ChannelId>,
) {
    let lost = |failure: Failure| ShuffleError::Remote { addr: addr.clone(), failure };
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
                Ok(ServerMessage::Error { code, message, .. }) => Err(remote(&addr, code, message)),
                Ok(other) => Err(unexpected(&addr, &other)),
                Err(e) => Err(lost(unreadable(e))),
            },
            Ok(None) => Err(lost(closed())),
            Err(e) => Err(lost(unreadable(e))),
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
            let delivery = self
                .queue
                .recv()
                .await
                .unwrap_or_else(|| Err(remote("", ErrorCode::Internal, "the gate's reader stopped")));
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
    /// Set when the connection to the server broke, or the server failed the partition.
    lost: Option<Failure>,
}

struct Credits {
    state: Mutex<CreditState>,
    changed: Notify,
}

/// Applies the server's grants and failure notices to a partition's credit counts.
async fn read_grants(mut reader: MessageReader<ReadHalf>, credits: Arc<Credits>) {
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
                Ok(ServerMessage::Error { code, message, .. }) => break Failure::new(code, message),
                Ok(other) => break Failure::new(ErrorCode::ProtocolViolation, format!("unexpected message {other:?}")),
                Err(e) => break unreadable(e),
            },
            Ok(None) => break closed(),
            Err(e) => break unreadable(e),
        }
        credits.changed.notify_waiters();
    };
    credits.state.lock().lost = Some(lost);
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
                    return Err(ShuffleError::Remote { addr: self.addr.clone(), failure: lost.clone() });
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
            wire::encode(&event, &mut frame)
                .map_err(|e| remote(&self.addr, ErrorCode::Internal, format!("cannot encode an event: {e}")))?;
            self.frame_size_hint = frame.len();
            let frame = Bytes::from(frame);
            self.outbox
                .send(ClientMessage::Data { subpartition, frame }.encode())
                .map_err(|_| remote(&self.addr, ErrorCode::Unreachable, "the connection is closed"))
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
                        return Err(ShuffleError::Remote { addr: self.addr.clone(), failure: lost.clone() });
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
