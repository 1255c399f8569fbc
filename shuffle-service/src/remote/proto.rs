//! The messages between shuffle clients and a shuffle server, and how they are framed on a TCP
//! connection: `[length: u32 LE][tag: u8][body]`, little-endian throughout.
//!
//! A connection starts with `Hello` (protocol version, the namespace — one job attempt — its
//! channels live in, and the namespace's token, which a server with a key checks) and then has
//! one role: a *consumer* registers its gate's channels and
//! returns credits as its task takes events; a *producer* creates one partition and sends data
//! frames, one per credit the server has granted. Event frames are the [`crate::wire`] frames,
//! relayed by the server without being parsed. A connection may instead ask the server to
//! release retained partitions (some, or a whole namespace), one request and one reply each.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex};
use weir_dataflow::wire::ErrorCode;

use crate::PartitionKind;

/// Messages larger than this are refused: a garbage length prefix must not make a peer
/// allocate gigabytes.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

const HELLO: u8 = 1;
const REGISTER_GATE: u8 = 2;
const CREATE_PARTITION: u8 = 3;
const DATA: u8 = 4;
const CREDIT: u8 = 5;
const RELEASE: u8 = 6;
const RELEASE_NAMESPACE: u8 = 7;

const OK: u8 = 10;
const ERROR: u8 = 11;
const GRANT: u8 = 12;
const EVENT: u8 = 13;
const CHANNEL_FAILED: u8 = 14;

#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("truncated message: the connection closed after {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
}

/// The codes a shuffle server refuses a request with, from the one table of error codes. On the
/// wire a refusal carries the code's stable string, so a client maps it to the same code (and
/// retryability) as every other part of Weir does.
pub const SERVER_ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::ProtocolVersion,
    ErrorCode::ProtocolViolation,
    ErrorCode::Unauthorized,
    ErrorCode::UnknownChannel,
    ErrorCode::DuplicateChannel,
    ErrorCode::DuplicatePartition,
    ErrorCode::ShuffleStorage,
];

#[derive(Debug)]
pub enum ClientMessage {
    Hello {
        version: u16,
        namespace: String,
        /// The namespace's token, signed by the shuffle key (empty for a server without one).
        token: String,
    },
    /// A consumer's gate: its channels in order, each starting with `credits`.
    RegisterGate {
        channels: Vec<ChannelId>,
        credits: u32,
    },
    CreatePartition {
        partition: PartitionId,
        subpartitions: u32,
        kind: PartitionKind,
    },
    /// One wire frame for one sub-partition of this connection's partition.
    Data {
        subpartition: u32,
        frame: Bytes,
    },
    /// The consumer took `n` events of its channel `channel` (an index into its gate).
    Credit {
        channel: u32,
        n: u32,
    },
    /// Free these retained partitions of the connection's namespace.
    Release {
        partitions: Vec<PartitionId>,
    },
    /// Free every retained partition of the connection's namespace.
    ReleaseNamespace,
}

#[derive(Debug)]
pub enum ServerMessage {
    Ok,
    /// The request is refused. `detail` is the consumer index of the missing channel for
    /// `UnknownChannel`, else 0.
    Error {
        code: ErrorCode,
        detail: u32,
        message: String,
    },
    /// The producer may send `n` more frames on `subpartition`.
    Grant {
        subpartition: u32,
        n: u32,
    },
    Event {
        channel: u32,
        frame: Bytes,
    },
    /// The channel broke: to a consumer, its producer went away before ending it; to a producer,
    /// its consumer did (`channel` is then the sub-partition).
    ChannelFailed {
        channel: u32,
        message: String,
    },
}

/// Bytes queued for one connection's writer task. Frames are kept apart from their header so a
/// relayed payload is never copied into a new buffer.
#[derive(Debug)]
pub enum Outbound {
    Message(Vec<u8>),
    Frame { header: [u8; 9], frame: Bytes },
}

fn start(out: &mut Vec<u8>, tag: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(tag);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_channel(out: &mut Vec<u8>, c: &ChannelId) {
    out.extend_from_slice(&c.partition.edge.to_le_bytes());
    out.extend_from_slice(&c.partition.producer.0.to_le_bytes());
    out.extend_from_slice(&c.consumer.0.to_le_bytes());
}

/// The header of a frame-carrying message (`Data` or `Event`) whose frame follows separately.
pub fn frame_header(tag_is_event: bool, index: u32, frame_len: usize) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[..4].copy_from_slice(&((frame_len + 5) as u32).to_le_bytes());
    h[4] = if tag_is_event { EVENT } else { DATA };
    h[5..].copy_from_slice(&index.to_le_bytes());
    h
}

impl ClientMessage {
    pub fn encode(&self) -> Outbound {
        let mut out = Vec::new();
        let at = match self {
            ClientMessage::Hello { version, namespace, token } => {
                let at = start(&mut out, HELLO);
                out.extend_from_slice(&version.to_le_bytes());
                // A namespace names a job attempt, far below 64 KiB; a longer one is cut, and then
                // its token does not match: the server refuses it.
                let namespace_len = u16::try_from(namespace.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&namespace_len.to_le_bytes());
                out.extend_from_slice(&namespace.as_bytes()[..usize::from(namespace_len)]);
                out.extend_from_slice(token.as_bytes());
                at
            }
            ClientMessage::RegisterGate { channels, credits } => {
                let at = start(&mut out, REGISTER_GATE);
                out.extend_from_slice(&credits.to_le_bytes());
                for c in channels {
                    put_channel(&mut out, c);
                }
                at
            }
            ClientMessage::CreatePartition { partition, subpartitions, kind } => {
                let at = start(&mut out, CREATE_PARTITION);
                out.extend_from_slice(&partition.edge.to_le_bytes());
                out.extend_from_slice(&partition.producer.0.to_le_bytes());
                out.extend_from_slice(&subpartitions.to_le_bytes());
                out.push(kind.to_u8());
                at
            }
            ClientMessage::Release { partitions } => {
                let at = start(&mut out, RELEASE);
                for p in partitions {
                    out.extend_from_slice(&p.edge.to_le_bytes());
                    out.extend_from_slice(&p.producer.0.to_le_bytes());
                }
                at
            }
            ClientMessage::ReleaseNamespace => start(&mut out, RELEASE_NAMESPACE),
            ClientMessage::Data { subpartition, frame } => {
                return Outbound::Frame {
                    header: frame_header(false, *subpartition, frame.len()),
                    frame: frame.clone(),
                };
            }
            ClientMessage::Credit { channel, n } => {
                let at = start(&mut out, CREDIT);
                out.extend_from_slice(&channel.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
                at
            }
        };
        finish(&mut out, at);
        Outbound::Message(out)
    }

    pub fn decode(mut body: Bytes) -> Result<ClientMessage, ProtoError> {
        let tag = take_u8(&mut body, "empty")?;
        Ok(match tag {
            HELLO => {
                let version = take_u16(&mut body, "hello")?;
                let namespace_len = usize::from(take_u16(&mut body, "hello")?);
                if body.len() < namespace_len {
                    return Err(ProtoError::Malformed { what: "hello" });
                }
                let text = |bytes: Bytes| {
                    String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::Malformed { what: "hello" })
                };
                let namespace = text(body.split_to(namespace_len))?;
                ClientMessage::Hello { version, namespace, token: text(body)? }
            }
            REGISTER_GATE => {
                let credits = take_u32(&mut body, "register-gate")?;
                if !body.len().is_multiple_of(12) {
                    return Err(ProtoError::Malformed { what: "register-gate" });
                }
                let mut channels = Vec::with_capacity(body.len() / 12);
                while body.has_remaining() {
                    let edge = body.get_u32_le();
                    let producer = SubtaskIndex(body.get_u32_le());
                    let consumer = SubtaskIndex(body.get_u32_le());
                    channels.push(ChannelId { partition: PartitionId { edge, producer }, consumer });
                }
                ClientMessage::RegisterGate { channels, credits }
            }
            CREATE_PARTITION => {
                let edge = take_u32(&mut body, "create-partition")?;
                let producer = SubtaskIndex(take_u32(&mut body, "create-partition")?);
                let subpartitions = take_u32(&mut body, "create-partition")?;
                let kind = PartitionKind::from_u8(take_u8(&mut body, "create-partition")?)
                    .ok_or(ProtoError::Malformed { what: "create-partition" })?;
                ClientMessage::CreatePartition { partition: PartitionId { edge, producer }, subpartitions, kind }
            }
            RELEASE => {
                if !body.len().is_multiple_of(8) {
                    return Err(ProtoError::Malformed { what: "release" });
                }
                let mut partitions = Vec::with_capacity(body.len() / 8);
                while body.has_remaining() {
                    let edge = body.get_u32_le();
                    let producer = SubtaskIndex(body.get_u32_le());
                    partitions.push(PartitionId { edge, producer });
                }
                ClientMessage::Release { partitions }
            }
            RELEASE_NAMESPACE => ClientMessage::ReleaseNamespace,
            DATA => {
                let subpartition = take_u32(&mut body, "data")?;
                ClientMessage::Data { subpartition, frame: body }
            }
            CREDIT => {
                let channel = take_u32(&mut body, "credit")?;
                let n = take_u32(&mut body, "credit")?;
                ClientMessage::Credit { channel, n }
            }
            other => return Err(ProtoError::UnknownTag(other)),
        })
    }
}

impl ServerMessage {
    pub fn encode(&self) -> Outbound {
        let mut out = Vec::new();
        let at = match self {
            ServerMessage::Ok => start(&mut out, OK),
            ServerMessage::Error { code, detail, message } => {
                // `[code length: u16][detail: u32][code][message]`. Protocol version 2 had a
                // number private to this protocol where the length is: a version-2 client
                // refused for its version still reads the detail, and the code and message as
                // its message.
                let at = start(&mut out, ERROR);
                let code = code.as_str().as_bytes();
                out.extend_from_slice(&(code.len() as u16).to_le_bytes());
                out.extend_from_slice(&detail.to_le_bytes());
                out.extend_from_slice(code);
                out.extend_from_slice(message.as_bytes());
                at
            }
            ServerMessage::Grant { subpartition, n } => {
                let at = start(&mut out, GRANT);
                out.extend_from_slice(&subpartition.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
                at
            }
            ServerMessage::Event { channel, frame } => {
                return Outbound::Frame { header: frame_header(true, *channel, frame.len()), frame: frame.clone() };
            }
            ServerMessage::ChannelFailed { channel, message } => {
                let at = start(&mut out, CHANNEL_FAILED);
                out.extend_from_slice(&channel.to_le_bytes());
                out.extend_from_slice(message.as_bytes());
                at
            }
        };
        finish(&mut out, at);
        Outbound::Message(out)
    }

    pub fn decode(mut body: Bytes) -> Result<ServerMessage, ProtoError> {
        let tag = take_u8(&mut body, "empty")?;
        let text = |body: Bytes| String::from_utf8_lossy(&body).into_owned();
        Ok(match tag {
            OK => ServerMessage::Ok,
            ERROR => {
                let code_len = take_u16(&mut body, "error")? as usize;
                let detail = take_u32(&mut body, "error")?;
                if body.remaining() < code_len {
                    return Err(ProtoError::Malformed { what: "error" });
                }
                let code = body.split_to(code_len);
                // A code a newer server knows and this client does not reads as internal, as
                // everywhere else the table's codes cross a process (`ErrorCode`'s serde).
                let code = std::str::from_utf8(&code).ok().and_then(ErrorCode::parse).unwrap_or(ErrorCode::Internal);
                ServerMessage::Error { code, detail, message: text(body) }
            }
            GRANT => {
                let subpartition = take_u32(&mut body, "grant")?;
                let n = take_u32(&mut body, "grant")?;
                ServerMessage::Grant { subpartition, n }
            }
            EVENT => {
                let channel = take_u32(&mut body, "event")?;
                ServerMessage::Event { channel, frame: body }
            }
            CHANNEL_FAILED => {
                let channel = take_u32(&mut body, "channel-failed")?;
                ServerMessage::ChannelFailed { channel, message: text(body) }
            }
            other => return Err(ProtoError::UnknownTag(other)),
        })
    }
}

fn take_u8(body: &mut Bytes, what: &'static str) -> Result<u8, ProtoError> {
    if body.remaining() < 1 {
        return Err(ProtoError::Malformed { what });
    }
    Ok(body.get_u8())
}

fn take_u16(body: &mut Bytes, what: &'static str) -> Result<u16, ProtoError> {
    if body.remaining() < 2 {
        return Err(ProtoError::Malformed { what });
    }
    Ok(body.get_u16_le())
}

fn take_u32(body: &mut Bytes, what: &'static str) -> Result<u32, ProtoError> {
    if body.remaining() < 4 {
        return Err(ProtoError::Malformed { what });
    }
    Ok(body.get_u32_le())
}

/// Reads length-prefixed messages off a stream, handing out each body without copying it.
pub struct MessageReader<R> {
    inner: R,
    buf: BytesMut,
}

/// How much a reader asks the socket for at once: big reads keep syscalls per byte low.
const READ_CHUNK: usize = 256 << 10;

/// The most a reader reserves beyond the bytes it has buffered. A message's length prefix is
/// the peer's word, not bytes that arrived: reserving the whole message up front let four bytes
/// claiming 256 MiB make the reader allocate 256 MiB, per connection. A large message grows the
/// buffer as it arrives instead (amortised doubling), so a peer costs memory only for what it sends.
const MAX_RESERVE_AHEAD: usize = 4 << 20;

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R) -> Self {
        MessageReader { inner, buf: BytesMut::with_capacity(READ_CHUNK) }
    }

    /// The next message body; `None` when the peer closed the connection between messages.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ProtoError> {
        if !self.fill(4).await? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("four bytes are buffered")) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(ProtoError::TooLarge(len));
        }
        if !self.fill(4 + len).await? {
            return Err(ProtoError::Truncated { got: self.buf.len().saturating_sub(4), expected: len });
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Buffers at least `n` bytes; false if the stream ended first (with nothing buffered when
    /// `n` is a length prefix, which is a clean end).
    async fn fill(&mut self, n: usize) -> Result<bool, ProtoError> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).clamp(READ_CHUNK, MAX_RESERVE_AHEAD));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() || n > 4 {
                    return Ok(false);
                }
                return Err(ProtoError::Truncated { got: self.buf.len(), expected: 4 });
            }
        }
        Ok(true)
    }
}

/// Writes everything queued for one connection, coalescing what has piled up into one flush.
/// Ends when every sender is gone or the connection breaks.
pub async fn write_loop<W: AsyncWrite + Unpin>(inner: W, mut queue: mpsc::UnboundedReceiver<Outbound>) {
    let mut out = BufWriter::with_capacity(READ_CHUNK, inner);
    let mut pending = Vec::with_capacity(64);
    while queue.recv_many(&mut pending, 64).await > 0 {
        for item in pending.drain(..) {
            let written = match item {
                Outbound::Message(bytes) => out.write_all(&bytes).await,
                Outbound::Frame { header, frame } => match out.write_all(&header).await {
                    Ok(()) => out.write_all(&frame).await,
                    Err(e) => Err(e),
                },
            };
            if written.is_err() {
                return;
            }
        }
        if queue.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(o: Outbound) -> Bytes {
        match o {
            Outbound::Message(m) => Bytes::from(m[4..].to_vec()),
            Outbound::Frame { header, frame } => {
                let mut v = header[4..].to_vec();
                v.extend_from_slice(&frame);
                Bytes::from(v)
            }
        }
    }

    #[test]
    fn messages_round_trip() {
        let hello = ClientMessage::Hello { version: 4, namespace: "job-1-attempt-2".into(), token: "ab12".into() };
        let m = ClientMessage::decode(body(hello.encode())).unwrap();
        assert!(matches!(m, ClientMessage::Hello { version: 4, ref namespace, ref token }
            if namespace == "job-1-attempt-2" && token == "ab12"));
        // A namespace length beyond the body is malformed, not a panic.
        let short = Bytes::from_static(&[HELLO, 4, 0, 200, 0, b'x']);
        assert!(matches!(ClientMessage::decode(short), Err(ProtoError::Malformed { what: "hello" })));
        let c = ChannelId { partition: PartitionId { edge: 3, producer: SubtaskIndex(1) }, consumer: SubtaskIndex(2) };
        let m = ClientMessage::decode(body(ClientMessage::RegisterGate { channels: vec![c, c], credits: 4 }.encode()))
            .unwrap();
        assert!(matches!(m, ClientMessage::RegisterGate { ref channels, credits: 4 } if channels == &vec![c, c]));
        let m = ClientMessage::decode(body(
            ClientMessage::Data { subpartition: 9, frame: Bytes::from_static(b"xyz") }.encode(),
        ))
        .unwrap();
        assert!(matches!(m, ClientMessage::Data { subpartition: 9, ref frame } if &frame[..] == b"xyz"));
        let p = c.partition;
        let m = ClientMessage::decode(body(
            ClientMessage::CreatePartition { partition: p, subpartitions: 3, kind: PartitionKind::HybridSelective }
                .encode(),
        ))
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::CreatePartition { partition, subpartitions: 3, kind: PartitionKind::HybridSelective }
                if partition == p
        ));
        let m = ClientMessage::decode(body(ClientMessage::Release { partitions: vec![p, p] }.encode())).unwrap();
        assert!(matches!(m, ClientMessage::Release { ref partitions } if partitions == &vec![p, p]));
        assert!(matches!(
            ClientMessage::decode(body(ClientMessage::ReleaseNamespace.encode())).unwrap(),
            ClientMessage::ReleaseNamespace
        ));
        let m = ServerMessage::decode(body(
            ServerMessage::Error { code: ErrorCode::UnknownChannel, detail: 5, message: "no".into() }.encode(),
        ))
        .unwrap();
        assert!(
            matches!(m, ServerMessage::Error { code: ErrorCode::UnknownChannel, detail: 5, ref message } if message == "no")
        );
    }

    #[test]
    fn a_refusal_carries_the_tables_code_string() {
        let encoded = body(
            ServerMessage::Error { code: ErrorCode::ShuffleStorage, detail: 0, message: "disk full".into() }.encode(),
        );
        assert_eq!(&encoded[..], &b"\x0b\x0f\x00\x00\x00\x00\x00shuffle-storagedisk full"[..]);
        // A code this side does not know reads as internal, its message kept.
        let mut future = vec![ERROR, 4, 0, 0, 0, 0, 0];
        future.extend_from_slice(b"nopesaid so");
        let m = ServerMessage::decode(Bytes::from(future)).unwrap();
        assert!(
            matches!(m, ServerMessage::Error { code: ErrorCode::Internal, ref message, .. } if message == "said so")
        );
        // A code longer than the message is malformed, not a panic.
        assert!(ServerMessage::decode(Bytes::from_static(&[ERROR, 9, 0, 0, 0, 0, 0, b'x'])).is_err());
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(ClientMessage::decode(Bytes::new()).is_err());
        assert!(ClientMessage::decode(Bytes::from_static(&[CREDIT, 1, 2])).is_err());
        assert!(ClientMessage::decode(Bytes::from_static(&[REGISTER_GATE, 1, 0, 0, 0, 7])).is_err());
        assert!(matches!(ClientMessage::decode(Bytes::from_static(&[200])), Err(ProtoError::UnknownTag(200))));
    }

    #[tokio::test]
    async fn reader_tells_a_clean_end_from_a_truncated_message() {
        let mut whole = Vec::new();
        for o in [ClientMessage::Credit { channel: 1, n: 2 }.encode(), ServerMessage::Ok.encode()] {
            let Outbound::Message(m) = o else { unreachable!() };
            whole.extend_from_slice(&m);
        }
        let mut r = MessageReader::new(&whole[..]);
        assert!(r.next().await.unwrap().is_some());
        assert!(r.next().await.unwrap().is_some());
        assert!(r.next().await.unwrap().is_none());
        let cut = &whole[..whole.len() - 1];
        let mut r = MessageReader::new(cut);
        assert!(r.next().await.unwrap().is_some());
        assert!(matches!(r.next().await, Err(ProtoError::Truncated { .. })));
        let mut r = MessageReader::new(&[0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(r.next().await, Err(ProtoError::TooLarge(_))));
    }

    /// Found by the `shuffle_message` fuzz target: a length prefix alone made the reader
    /// reserve the whole claimed message.
    #[tokio::test]
    async fn a_length_prefix_alone_does_not_reserve_the_message() {
        let claimed = (MAX_MESSAGE_BYTES as u32).to_le_bytes();
        let mut r = MessageReader::new(&claimed[..]);
        assert!(matches!(r.next().await, Err(ProtoError::Truncated { got: 0, .. })));
        assert!(r.buf.capacity() <= 2 * MAX_RESERVE_AHEAD, "reserved {} bytes for 4 sent", r.buf.capacity());
        // A message larger than the reservation still arrives whole.
        let big = ClientMessage::Data { subpartition: 0, frame: Bytes::from(vec![7u8; 3 * MAX_RESERVE_AHEAD]) };
        let Outbound::Frame { header, frame } = big.encode() else { unreachable!() };
        let stream = [&header[..], &frame[..]].concat();
        let mut r = MessageReader::new(&stream[..]);
        let body = r.next().await.unwrap().expect("one message");
        assert_eq!(body.len(), 5 + 3 * MAX_RESERVE_AHEAD);
        assert!(r.next().await.unwrap().is_none());
    }
}
