//! The shuffle server: relays event frames from producers to consumers, per channel, in order.
//!
//! Each channel has a bounded queue on the server and two credit loops. The producer sends a
//! frame only against a grant from the server, and the server grants one back each time it
//! hands a queued frame to the consumer; the consumer in turn gives the server a credit per
//! event its task has taken. So a channel never holds more than `channel_capacity` frames here
//! plus the consumer's credits in flight, whatever the speeds on either side, and a slow
//! consumer holds back exactly the producers feeding it.
//!
//! One connection going wrong touches only its own channels: a consumer that leaves fails its
//! producers' sub-partitions, a producer that leaves (or sends a truncated or malformed message)
//! fails its consumers' channels, and everything else carries on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weir_dataflow::ids::{ChannelId, SubtaskIndex};

use super::proto::{ClientMessage, ErrorCode, MessageReader, Outbound, ServerMessage, write_loop};
use crate::wire::{END_OF_PARTITION, PROTOCOL_VERSION};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Frames a channel may queue on the server before its producer waits.
    pub channel_capacity: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { channel_capacity: 4 }
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

#[derive(Default)]
struct Registry {
    channels: Mutex<HashMap<ChannelKey, Arc<Mutex<Channel>>>>,
}

/// A bound shuffle server, ready to serve.
pub struct ShuffleServer {
    listener: TcpListener,
    config: ServerConfig,
}

impl ShuffleServer {
    pub async fn bind(addr: &str, config: ServerConfig) -> std::io::Result<Self> {
        assert!(config.channel_capacity > 0, "a channel needs room for at least one frame");
        Ok(ShuffleServer { listener: TcpListener::bind(addr).await?, config })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped; dropping it closes every connection.
    pub async fn serve(self) -> std::io::Result<()> {
        let registry = Arc::new(Registry::default());
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = accepted?;
                    let _ = stream.set_nodelay(true);
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
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, registry: Arc<Registry>, config: ServerConfig) {
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
            Err(e) => break Err(refuse(&outbox, ErrorCode::Protocol, 0, e.to_string())),
        };
        let step = match (message, &namespace) {
            (ClientMessage::Hello { version, namespace: ns }, None) => {
                if version != PROTOCOL_VERSION {
                    let message = format!(
                        "protocol version {version} is not supported: this server speaks version {PROTOCOL_VERSION}"
                    );
                    break Err(refuse(&outbox, ErrorCode::VersionMismatch, 0, message));
                }
                namespace = Some(ns.into());
                let _ = outbox.send(ServerMessage::Ok.encode());
                Ok(())
            }
            (_, None) => Err((ErrorCode::Protocol, 0, "a connection must start with hello".to_string())),
            (ClientMessage::RegisterGate { channels, credits }, Some(ns)) if matches!(role, Role::Unknown) => {
                register_gate(&registry, ns, channels, credits, &outbox).map(|keys| role = Role::Consumer(keys))
            }
            (ClientMessage::CreatePartition { partition, subpartitions }, Some(ns))
                if matches!(role, Role::Unknown) =>
            {
                let keys: Vec<ChannelKey> = (0..subpartitions)
                    .map(|s| (ns.clone(), ChannelId { partition, consumer: SubtaskIndex(s) }))
                    .collect();
                attach_producer(&registry, &keys, &outbox, config.channel_capacity)
                    .map(|()| role = Role::Producer(keys))
            }
            (ClientMessage::Credit { channel, n }, Some(_)) => match &role {
                Role::Consumer(keys) => match keys.get(channel as usize).and_then(|k| Some((k, lookup(&registry, k)?)))
                {
                    Some((key, c)) => {
                        let mut c = c.lock();
                        c.consumer_credit = c.consumer_credit.saturating_add(n);
                        c.pump();
                        retire_if_drained(&registry, key, c);
                        Ok(())
                    }
                    // The channel has ended and been retired; a late credit is harmless.
                    None if (channel as usize) < keys.len() => Ok(()),
                    None => Err((ErrorCode::Protocol, 0, format!("credit for unknown channel index {channel}"))),
                },
                _ => Err((ErrorCode::Protocol, 0, "credit on a connection that is not a consumer".to_string())),
            },
            (ClientMessage::Data { subpartition, frame }, Some(_)) => match &role {
                Role::Producer(keys) => match keys.get(subpartition as usize) {
                    Some(key) => accept_frame(&registry, key, frame, config.channel_capacity),
                    None => Err((
                        ErrorCode::Protocol,
                        0,
                        format!("sub-partition {subpartition} out of range: the partition has {}", keys.len()),
                    )),
                },
                _ => Err((ErrorCode::Protocol, 0, "data on a connection that is not a producer".to_string())),
            },
            (other, Some(_)) => Err((ErrorCode::Protocol, 0, format!("unexpected {}", message_name(&other)))),
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
        Role::Consumer(keys) => detach_consumer(&registry, &keys, &reason),
        Role::Producer(keys) => detach_producer(&registry, &keys, &reason),
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
) -> Result<Vec<ChannelKey>, Refusal> {
    let keys: Vec<ChannelKey> = channels.into_iter().map(|c| (namespace.clone(), c)).collect();
    let mut map = registry.channels.lock();
    if let Some((_, id)) = keys.iter().find(|k| map.contains_key(*k)) {
        return Err((ErrorCode::DuplicateChannel, 0, format!("channel {id} already has a consumer")));
    }
    for (index, key) in keys.iter().enumerate() {
        let channel = Channel {
            queue: VecDeque::new(),
            consumer_credit: credits,
            consumer: Some((outbox.clone(), index as u32)),
            producer: None,
            producer_done: false,
        };
        map.insert(key.clone(), Arc::new(Mutex::new(channel)));
    }
    drop(map);
    let _ = outbox.send(ServerMessage::Ok.encode());
    Ok(keys)
}

fn attach_producer(registry: &Registry, keys: &[ChannelKey], outbox: &Outbox, capacity: u32) -> Result<(), Refusal> {
    let map = registry.channels.lock();
    let mut channels = Vec::with_capacity(keys.len());
    for (s, key) in keys.iter().enumerate() {
        let Some(channel) = map.get(key) else {
            return Err((ErrorCode::UnknownChannel, s as u32, format!("channel {} has no registered consumer", key.1)));
        };
        if channel.lock().producer.is_some() {
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
        return Err((ErrorCode::Protocol, 0, format!("channel {} sent a frame without credit", key.1)));
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

fn detach_consumer(registry: &Registry, keys: &[ChannelKey], reason: &str) {
    let mut map = registry.channels.lock();
    for key in keys {
        if let Some(channel) = map.remove(key) {
            let mut c = channel.lock();
            c.consumer = None;
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
