//! The shuffle server: relays event frames from producers to consumers, per channel, in order.
//!
//! Each channel has a bounded queue on the server and two credit loops. The producer sends a
//! frame only against a grant from the server, and the server grants one back each time it
//! hands a queued frame to the consumer; the consumer in turn gives the server a credit per
//! event its task has taken. So a channel never holds more than `channel_capacity` frames here
//! plus the consumer's credits in flight, whatever the speeds on either side, and a slow
//! consumer holds back exactly the producers feeding it.
//!
//! Retained (blocking and hybrid) partitions go to the server's [`Store`] instead: their
//! producer is granted a credit back as soon as a frame is stored (the store spills to disk and
//! object storage past its memory budget, so memory stays bounded without holding the producer
//! to its consumers' pace), and each gate channel on one is fed by a task reading the
//! sub-partition from the store against the consumer's credits. A gate may be registered before
//! the retained partition exists, and again (a restarted consumer) to read it from the start.
//!
//! With a key ([`ServerConfig::key`], the cluster's shuffle key), a connection's hello must
//! present its namespace's token — the key's signature of the namespace, which the control
//! plane hands to the workers of that one attempt — or it is refused with `unauthorized`. Every
//! later message of the connection (channels, partitions, releases) is within that namespace, so
//! a token opens one attempt's channels and nothing else.
//!
//! One connection going wrong touches only its own channels: a consumer that leaves fails its
//! producers' sub-partitions, a producer that leaves (or sends a truncated or malformed message)
//! fails its consumers' channels (a retained partition it had not finished is marked failed),
//! and everything else carries on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use weir_dataflow::auth::ClusterKey;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};
use weir_dataflow::wire::ErrorCode;
use weir_net::{Connection, Listener, NetError, Plaintext, ServerTls};

use super::proto::{ClientMessage, MessageReader, Outbound, ServerMessage, write_loop};
use crate::PartitionKind;
use crate::store::{Partition, Store, StoreConfig, StoreError, SubpartitionReader};
use crate::wire::{END_OF_PARTITION, PROTOCOL_VERSION};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Frames a channel may queue on the server before its producer waits; for a retained
    /// partition, frames a producer may have in flight per sub-partition.
    pub channel_capacity: u32,
    /// Budgets and places of retained partitions.
    pub store: StoreConfig,
    /// The shuffle key: a hello must present its namespace's token signed with it. `None`: any
    /// client may use any namespace (`weir shuffle --insecure-no-auth`, for a trusted machine).
    pub key: Option<ClusterKey>,
    /// The certificate the server presents; `None`: plain TCP.
    pub tls: Option<ServerTls>,
    /// Where the server may listen without TLS.
    pub plaintext: Plaintext,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            channel_capacity: 4,
            store: StoreConfig::default(),
            key: None,
            tls: None,
            plaintext: Plaintext::LoopbackOnly,
        }
    }
}

/// A channel's key on a server shared by many jobs: the namespace the client named, then the id.
type ChannelKey = (Arc<str>, ChannelId);

type Outbox = mpsc::UnboundedSender<Outbound>;

struct Channel {
    /// Frames the consumer has no credit for yet.
    queue: VecDeque<Bytes>,
    consumer_credit: u32,
    consumer: Option<(Outbox, u32)>,
    /// The consumer's connection: a stale connection's clean-up leaves a newer gate's channel be.
    consumer_connection: u64,
    /// Set when the channel reads a retained partition: the credits of the task feeding it.
    feed: Option<Arc<Semaphore>>,
    producer: Option<(Outbox, u32)>,
    /// The producer has queued its end-of-partition frame: it may now leave.
    producer_done: bool,
}

impl Channel {
    /// Hands queued frames to the consumer while it has credit, granting each slot back to the
    /// producer.
    fn pump(&mut self) {
        let Some((consumer, index)) = &self.consumer else { return };
        while self.consumer_credit > 0 {
            let Some(frame) = self.queue.pop_front() else { break };
            self.consumer_credit -= 1;
            let _ = consumer.send(ServerMessage::Event { channel: *index, frame }.encode());
            if let Some((producer, subpartition)) = &self.producer {
                let _ = producer.send(ServerMessage::Grant { subpartition: *subpartition, n: 1 }.encode());
            }
        }
    }
}

struct Registry {
    channels: Mutex<HashMap<ChannelKey, Arc<Mutex<Channel>>>>,
    store: Store,
    next_connection: AtomicU64,
}

/// A bound shuffle server, ready to serve.
pub struct ShuffleServer {
    listener: Listener,
    config: ServerConfig,
    store: Store,
}

impl ShuffleServer {
    pub async fn bind(addr: &str, config: ServerConfig) -> Result<Self, NetError> {
        assert!(config.channel_capacity > 0, "a channel needs room for at least one frame");
        let store = Store::new(config.store.clone());
        let listener = Listener::bind(addr, config.tls.as_ref(), config.plaintext, "--tls-cert, --tls-key").await?;
        Ok(ShuffleServer { listener, config, store })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.address()
    }

    /// The store of retained partitions: [`Store::close`] it on a clean shutdown to delete its
    /// files and objects.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Accepts connections until the task is dropped; dropping it closes every connection.
    pub async fn serve(mut self) -> std::io::Result<()> {
        let registry = Arc::new(Registry {
            channels: Mutex::new(HashMap::new()),
            store: self.store.clone(),
            next_connection: AtomicU64::new(0),
        });
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                (stream, peer) = self.listener.next() => {
                    connections.spawn(serve_connection(stream, peer, registry.clone(), self.config.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// What a connection turned out to be, for the clean-up when it ends.
enum Role {
    Unknown,
    Consumer(Vec<ChannelKey>),
    Producer(Vec<ChannelKey>),
    RetainedProducer(Arc<Partition>),
}

async fn serve_connection(stream: Connection, peer: SocketAddr, registry: Arc<Registry>, config: ServerConfig) {
    let connection = registry.next_connection.fetch_add(1, Ordering::Relaxed);
    let (read, write) = stream.into_split();
    let (outbox, queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(write, queue));
    let mut reader = MessageReader::new(read);
    let mut role = Role::Unknown;
    let mut namespace: Option<Arc<str>> = None;
    let outcome = loop {
        let body = match reader.next().await {
            Ok(Some(body)) => body,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        let message = match ClientMessage::decode(body) {
            Ok(m) => m,
            Err(e) => break Err(refuse(&outbox, ErrorCode::ProtocolViolation, 0, e.to_string())),
        };
        let step = match (message, &namespace) {
            (ClientMessage::Hello { version, namespace: ns, token }, None) => {
                if version != PROTOCOL_VERSION {
                    let message = format!(
                        "protocol version {version} is not supported: this server speaks version {PROTOCOL_VERSION}"
                    );
                    break Err(refuse(&outbox, ErrorCode::ProtocolVersion, 0, message));
                }
                if config.key.as_ref().is_some_and(|key| !key.verifies(&ns, &token)) {
                    let message = format!("the token does not open namespace `{ns}` on this shuffle server");
                    break Err(refuse(&outbox, ErrorCode::Unauthorized, 0, message));
                }
                namespace = Some(ns.into());
                let _ = outbox.send(ServerMessage::Ok.encode());
                Ok(())
            }
            (_, None) => Err((ErrorCode::ProtocolViolation, 0, "a connection must start with hello".to_string())),
            (ClientMessage::RegisterGate { channels, credits }, Some(ns)) if matches!(role, Role::Unknown) => {
                register_gate(&registry, ns, channels, credits, &outbox, connection)
                    .map(|keys| role = Role::Consumer(keys))
            }
            (ClientMessage::CreatePartition { partition, subpartitions, kind }, Some(ns))
                if matches!(role, Role::Unknown) =>
            {
                if kind.is_retained() {
                    create_retained(&registry, ns, partition, subpartitions, kind, &outbox, config.channel_capacity)
                        .map(|p| role = Role::RetainedProducer(p))
                } else {
                    let keys: Vec<ChannelKey> = (0..subpartitions)
                        .map(|s| (ns.clone(), ChannelId { partition, consumer: SubtaskIndex(s) }))
                        .collect();
                    attach_producer(&registry, &keys, &outbox, config.channel_capacity)
                        .map(|()| role = Role::Producer(keys))
                }
            }
            (ClientMessage::Release { partitions }, Some(ns)) => {
                registry.store.release(ns, &partitions).await;
                let _ = outbox.send(ServerMessage::Ok.encode());
                Ok(())
            }
            (ClientMessage::ReleaseNamespace, Some(ns)) => {
                registry.store.release_namespace(ns).await;
                let _ = outbox.send(ServerMessage::Ok.encode());
                Ok(())
            }
            (ClientMessage::Credit { channel, n }, Some(_)) => match &role {
                Role::Consumer(keys) => match keys.get(channel as usize).and_then(|k| Some((k, lookup(&registry, k)?)))
                {
                    Some((key, c)) => {
                        let mut c = c.lock();
                        if c.consumer_connection != connection {
                            // A newer gate took the channel over; this one's credits are moot.
                        } else if let Some(feed) = &c.feed {
                            feed.add_permits(n as usize);
                        } else {
                            c.consumer_credit = c.consumer_credit.saturating_add(n);
                            c.pump();
                            retire_if_drained(&registry, key, c);
                        }
                        Ok(())
                    }
                    // The channel has ended and been retired; a late credit is harmless.
                    None if (channel as usize) < keys.len() => Ok(()),
                    None => {
                        Err((ErrorCode::ProtocolViolation, 0, format!("credit for unknown channel index {channel}")))
                    }
                },
                _ => {
                    Err((ErrorCode::ProtocolViolation, 0, "credit on a connection that is not a consumer".to_string()))
                }
            },
            (ClientMessage::Data { subpartition, frame }, Some(_)) => match &role {
                Role::Producer(keys) => match keys.get(subpartition as usize) {
                    Some(key) => accept_frame(&registry, key, frame, config.channel_capacity),
                    None => Err((
                        ErrorCode::ProtocolViolation,
                        0,
                        format!("sub-partition {subpartition} out of range: the partition has {}", keys.len()),
                    )),
                },
                Role::RetainedProducer(partition) => {
                    if subpartition >= partition.num_subpartitions() {
                        Err((
                            ErrorCode::ProtocolViolation,
                            0,
                            format!(
                                "sub-partition {subpartition} out of range: the partition has {}",
                                partition.num_subpartitions()
                            ),
                        ))
                    } else {
                        match registry.store.append(partition, subpartition, frame).await {
                            Ok(()) => {
                                let _ = outbox.send(ServerMessage::Grant { subpartition, n: 1 }.encode());
                                Ok(())
                            }
                            Err(e) => Err((ErrorCode::ShuffleStorage, 0, e.to_string())),
                        }
                    }
                }
                _ => Err((ErrorCode::ProtocolViolation, 0, "data on a connection that is not a producer".to_string())),
            },
            (other, Some(_)) => Err((ErrorCode::ProtocolViolation, 0, format!("unexpected {}", message_name(&other)))),
        };
        if let Err((code, detail, message)) = step {
            break Err(refuse(&outbox, code, detail, message));
        }
    };
    if let Err(reason) = &outcome {
        tracing::warn!(%peer, %reason, "shuffle connection closed with an error");
    }
    let reason = outcome.err().unwrap_or_else(|| "the connection closed".to_string());
    match role {
        Role::Consumer(keys) => detach_consumer(&registry, &keys, connection, &reason),
        Role::Producer(keys) => detach_producer(&registry, &keys, &reason),
        Role::RetainedProducer(partition) => {
            partition.fail_unless_finished(&format!("its producer went away before ending it: {reason}"))
        }
        Role::Unknown => {}
    }
    drop(outbox);
    let _ = writer.await;
}

fn message_name(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Hello { .. } => "second hello",
        ClientMessage::RegisterGate { .. } => "register-gate on a connection that already has a role",
        ClientMessage::CreatePartition { .. } => "create-partition on a connection that already has a role",
        ClientMessage::Data { .. } => "data",
        ClientMessage::Credit { .. } => "credit",
        ClientMessage::Release { .. } => "release",
        ClientMessage::ReleaseNamespace => "release-namespace",
    }
}

/// Tells the client why it is being refused; returns the reason for the log.
fn refuse(outbox: &Outbox, code: ErrorCode, detail: u32, message: String) -> String {
    let _ = outbox.send(ServerMessage::Error { code, detail, message: message.clone() }.encode());
    message
}

fn lookup(registry: &Registry, key: &ChannelKey) -> Option<Arc<Mutex<Channel>>> {
    registry.channels.lock().get(key).cloned()
}

type Refusal = (ErrorCode, u32, String);

fn register_gate(
    registry: &Registry,
    namespace: &Arc<str>,
    channels: Vec<ChannelId>,
    credits: u32,
    outbox: &Outbox,
    connection: u64,
) -> Result<Vec<ChannelKey>, Refusal> {
    let keys: Vec<ChannelKey> = channels.into_iter().map(|c| (namespace.clone(), c)).collect();
    let mut map = registry.channels.lock();
    for key in &keys {
        if let Some(existing) = map.get(key) {
            // A channel reading a retained partition may be taken over by a restarted consumer
            // (its old connection may not have been noticed closing yet); a pipelined one may not.
            if existing.lock().feed.is_none() {
                return Err((ErrorCode::DuplicateChannel, 0, format!("channel {} already has a consumer", key.1)));
            }
        }
    }
    for (index, key) in keys.iter().enumerate() {
        if let Some(old) = map.remove(key)
            && let Some(feed) = old.lock().feed.take()
        {
            feed.close();
        }
        let channel = Channel {
            queue: VecDeque::new(),
            consumer_credit: credits,
            consumer: Some((outbox.clone(), index as u32)),
            consumer_connection: connection,
            feed: None,
            producer: None,
            producer_done: false,
        };
        map.insert(key.clone(), Arc::new(Mutex::new(channel)));
    }
    // The reply goes first: a feed may send a failure at once, which must follow it. The map
    // stays locked until the feeds start, so a partition created meanwhile cannot feed twice.
    let _ = outbox.send(ServerMessage::Ok.encode());
    for key in &keys {
        if let Some(partition) = registry.store.get(namespace, key.1.partition)
            && let Some(channel) = map.get(key)
        {
            start_feed(&registry.store, &mut channel.lock(), &partition, key.1);
        }
    }
    drop(map);
    Ok(keys)
}

/// Creates a retained partition and starts feeding the gates already waiting for it.
fn create_retained(
    registry: &Registry,
    namespace: &Arc<str>,
    id: PartitionId,
    subpartitions: u32,
    kind: PartitionKind,
    outbox: &Outbox,
    capacity: u32,
) -> Result<Arc<Partition>, Refusal> {
    // Under the channel map's lock, as gates register, so a gate is fed exactly once.
    let map = registry.channels.lock();
    let partition = registry.store.create(namespace, id, subpartitions, kind).map_err(|e| match e {
        StoreError::DuplicatePartition(_) => (ErrorCode::DuplicatePartition, 0, e.to_string()),
        e => (ErrorCode::ShuffleStorage, 0, e.to_string()),
    })?;
    for s in 0..subpartitions {
        let channel = ChannelId { partition: id, consumer: SubtaskIndex(s) };
        if let Some(c) = map.get(&(namespace.clone(), channel)) {
            let mut c = c.lock();
            if c.consumer.is_some() && c.feed.is_none() {
                start_feed(&registry.store, &mut c, &partition, channel);
            }
        }
    }
    drop(map);
    let _ = outbox.send(ServerMessage::Ok.encode());
    for s in 0..subpartitions {
        let _ = outbox.send(ServerMessage::Grant { subpartition: s, n: capacity }.encode());
    }
    Ok(partition)
}

/// Starts the task that sends a retained sub-partition to the channel's consumer.
fn start_feed(store: &Store, channel: &mut Channel, partition: &Arc<Partition>, id: ChannelId) {
    let Some((consumer, index)) = channel.consumer.clone() else { return };
    let credits = Arc::new(Semaphore::new(channel.consumer_credit as usize));
    channel.feed = Some(credits.clone());
    match store.reader(partition, id.consumer.0) {
        Ok(reader) => {
            tokio::spawn(feed(reader, credits, consumer, index));
        }
        Err(e) => {
            let _ = consumer.send(ServerMessage::ChannelFailed { channel: index, message: e.to_string() }.encode());
        }
    }
}

/// Sends one retained sub-partition to a consumer, one frame per credit, until its end, an
/// error, or the consumer going away (its credits are closed).
async fn feed(mut reader: SubpartitionReader, credits: Arc<Semaphore>, consumer: Outbox, index: u32) {
    loop {
        match credits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        match reader.next().await {
            Ok(Some(frame)) => {
                let last = frame.first() == Some(&END_OF_PARTITION);
                if consumer.send(ServerMessage::Event { channel: index, frame }.encode()).is_err() || last {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a retained shuffle partition cannot be read");
                let _ = consumer.send(ServerMessage::ChannelFailed { channel: index, message: e.to_string() }.encode());
                return;
            }
        }
    }
}

fn attach_producer(registry: &Registry, keys: &[ChannelKey], outbox: &Outbox, capacity: u32) -> Result<(), Refusal> {
    let map = registry.channels.lock();
    let mut channels = Vec::with_capacity(keys.len());
    for (s, key) in keys.iter().enumerate() {
        let Some(channel) = map.get(key) else {
            return Err((ErrorCode::UnknownChannel, s as u32, format!("channel {} has no registered consumer", key.1)));
        };
        let c = channel.lock();
        if c.producer.is_some() || c.feed.is_some() {
            drop(c);
            return Err((ErrorCode::DuplicateChannel, s as u32, format!("channel {} already has a producer", key.1)));
        }
        channels.push(channel.clone());
    }
    drop(map);
    let _ = outbox.send(ServerMessage::Ok.encode());
    for (s, channel) in channels.iter().enumerate() {
        channel.lock().producer = Some((outbox.clone(), s as u32));
        let _ = outbox.send(ServerMessage::Grant { subpartition: s as u32, n: capacity }.encode());
    }
    Ok(())
}

fn accept_frame(registry: &Registry, key: &ChannelKey, frame: Bytes, capacity: u32) -> Result<(), Refusal> {
    // A channel that is gone has had its producer told so; frames already in flight are dropped.
    let Some(channel) = lookup(registry, key) else { return Ok(()) };
    let mut c = channel.lock();
    if c.queue.len() >= capacity as usize {
        return Err((ErrorCode::ProtocolViolation, 0, format!("channel {} sent a frame without credit", key.1)));
    }
    if frame.first() == Some(&END_OF_PARTITION) {
        c.producer_done = true;
    }
    c.queue.push_back(frame);
    c.pump();
    retire_if_drained(registry, key, c);
    Ok(())
}

/// Once the consumer has the end-of-partition frame nothing more can happen on a channel.
fn retire_if_drained(registry: &Registry, key: &ChannelKey, channel: parking_lot::MutexGuard<'_, Channel>) {
    let drained = channel.producer_done && channel.queue.is_empty();
    drop(channel);
    if drained {
        registry.channels.lock().remove(key);
    }
}

fn detach_consumer(registry: &Registry, keys: &[ChannelKey], connection: u64, reason: &str) {
    let mut map = registry.channels.lock();
    for key in keys {
        // A newer gate may have taken the channel over: it is not ours to remove.
        if map.get(key).is_some_and(|c| c.lock().consumer_connection != connection) {
            continue;
        }
        if let Some(channel) = map.remove(key) {
            let mut c = channel.lock();
            c.consumer = None;
            if let Some(feed) = c.feed.take() {
                feed.close();
            }
            if let Some((producer, subpartition)) = c.producer.take() {
                let message = format!("the consumer of channel {} went away: {reason}", key.1);
                let _ = producer.send(ServerMessage::ChannelFailed { channel: subpartition, message }.encode());
            }
        }
    }
}

fn detach_producer(registry: &Registry, keys: &[ChannelKey], reason: &str) {
    let map = registry.channels.lock();
    let channels: Vec<_> = keys.iter().filter_map(|k| map.get(k).cloned().map(|c| (k, c))).collect();
    drop(map);
    for (key, channel) in channels {
        let mut c = channel.lock();
        c.producer = None;
        if c.producer_done {
            // Ended cleanly; its last frames wait for the consumer's credit.
            continue;
        }
        c.queue.clear();
        if let Some((consumer, index)) = c.consumer.take() {
            let message = format!("its producer went away before ending it: {reason}");
            let _ = consumer.send(ServerMessage::ChannelFailed { channel: index, message }.encode());
        }
        drop(c);
        registry.channels.lock().remove(key);
    }
}
