//! The remote shuffle: a shuffle server process ([`server`], run by `weir shuffle`) that relays
//! channels between tasks in different processes, the client workers use ([`client`]), and the
//! connection protocol between them ([`proto`]).

pub mod client;
pub mod proto;
pub mod server;

pub use client::RemoteShuffle;
pub use server::{ServerConfig, ShuffleServer};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ShuffleService;

    /// Starts a server on a free loopback port; dropping the handle's task kills it.
    async fn start(capacity: u32) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        start_with(ServerConfig { channel_capacity: capacity, ..ServerConfig::default() }).await
    }

    async fn start_with(config: ServerConfig) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let server = ShuffleServer::bind("127.0.0.1:0", config).await.expect("bind");
        let addr = server.local_addr().to_string();
        (addr, tokio::spawn(server.serve()))
    }

    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use weir_dataflow::event::StreamEvent;
    use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};

    use weir_dataflow::wire::{ErrorCode, Failure};

    use super::proto::{ClientMessage, MessageReader, Outbound, SERVER_ERROR_CODES, ServerMessage};
    use crate::store::StoreConfig;
    use crate::wire::PROTOCOL_VERSION;
    use crate::{GateId, PartitionKind, ShuffleError};

    fn channel(edge: u32, producer: u32, consumer: u32) -> ChannelId {
        ChannelId {
            partition: PartitionId { edge, producer: SubtaskIndex(producer) },
            consumer: SubtaskIndex(consumer),
        }
    }

    fn gate(subtask: u32) -> GateId {
        GateId { vertex: VertexId(1), subtask: SubtaskIndex(subtask) }
    }

    async fn send_raw(stream: &mut TcpStream, message: ClientMessage) {
        match message.encode() {
            Outbound::Message(bytes) => stream.write_all(&bytes).await.expect("write"),
            Outbound::Frame { header, frame } => {
                stream.write_all(&header).await.expect("write");
                stream.write_all(&frame).await.expect("write");
            }
        }
    }

    async fn reply(stream: &mut TcpStream) -> ServerMessage {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.expect("reply length");
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        stream.read_exact(&mut body).await.expect("reply body");
        ServerMessage::decode(Bytes::from(body)).expect("a well-formed reply")
    }

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_protocol_version_is_refused_and_the_server_stays_up() {
        let (addr, server) = start(2).await;
        let mut raw = TcpStream::connect(&addr).await.expect("connect");
        send_raw(
            &mut raw,
            ClientMessage::Hello { version: PROTOCOL_VERSION + 1, namespace: "x".into(), token: String::new() },
        )
        .await;
        match reply(&mut raw).await {
            ServerMessage::Error { code: ErrorCode::ProtocolVersion, message, .. } => {
                assert!(message.contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{message}");
                assert!(message.contains(&format!("speaks version {PROTOCOL_VERSION}")), "{message}");
            }
            other => panic!("expected a version error, got {other:?}"),
        }
        // The server closes that connection and serves the next client.
        assert_eq!(raw.read(&mut [0u8; 1]).await.expect("read"), 0);
        let shuffle = RemoteShuffle::new(addr, "after");
        crate::testing::batches_and_row_kinds_arrive_intact(Arc::new(shuffle)).await;
        server.abort();
    }

    /// A server with the shuffle key opens a namespace only to its token: no token, another
    /// namespace's token, or a token of another key is refused with `unauthorized` (and nothing
    /// is created or released), while the right token works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keyed_server_opens_a_namespace_only_to_its_token() {
        use weir_dataflow::auth::{ClusterKey, KeyPurpose};
        let key = ClusterKey::derive("shuffle-test-root-secret-0123456789", KeyPurpose::Shuffle).expect("long enough");
        let other = ClusterKey::derive("another-root-secret-0123456789abcd", KeyPurpose::Shuffle).expect("long enough");
        let (addr, server) = start_with(ServerConfig { key: Some(key.clone()), ..ServerConfig::default() }).await;
        for token in [String::new(), key.sign("job-b"), other.sign("job-a")] {
            let refused = RemoteShuffle::new(addr.clone(), "job-a").with_token(&token);
            let err = refused.release_all().await.expect_err("refused");
            let ShuffleError::Remote { failure, .. } = err else { panic!("unexpected {err}") };
            assert_eq!(failure.code, ErrorCode::Unauthorized, "{failure:?}");
            let err = refused.open_gate(gate(0), vec![channel(0, 0, 0)]).await.err().expect("refused");
            assert!(err.to_string().contains("does not open namespace `job-a`"), "{err}");
        }
        let shuffle = RemoteShuffle::new(addr, "job-a").with_token(key.sign("job-a"));
        crate::testing::batches_and_row_kinds_arrive_intact(Arc::new(shuffle)).await;
        server.abort();
    }

    async fn send_reply(stream: &mut tokio::net::tcp::OwnedWriteHalf, message: ServerMessage) {
        let Outbound::Message(bytes) = message.encode() else { unreachable!("a reply is not a frame") };
        stream.write_all(&bytes).await.expect("write");
    }

    /// Every code a shuffle server refuses with crosses the wire as the table's string and
    /// reaches the client's caller as a `Failure` with that code and its retryability.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_shuffle_refusal_round_trips_through_the_error_table() {
        for &code in SERVER_ERROR_CODES {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code), "{code} is in the table");
            // A server that accepts the hello and refuses the request that follows.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.expect("accept");
                let (read, mut write) = stream.into_split();
                let mut reader = MessageReader::new(read);
                reader.next().await.expect("a hello").expect("a hello");
                send_reply(&mut write, ServerMessage::Ok).await;
                reader.next().await.expect("a request").expect("a request");
                let message = format!("refused with {code}");
                send_reply(&mut write, ServerMessage::Error { code, detail: 0, message }).await;
            });
            let err = RemoteShuffle::new(addr.clone(), "refusals").release_all().await.expect_err("refused");
            let ShuffleError::Remote { addr: from, failure } = err else { panic!("{code}: unexpected {err}") };
            assert_eq!(from, addr);
            assert_eq!(failure, Failure::new(code, format!("refused with {code}")));
            assert_eq!(failure.retryable, code.retryable(), "{code}");
            server.await.expect("the fake server");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_frame_fails_only_its_own_channel() {
        let (addr, server) = start(2).await;
        let shuffle = RemoteShuffle::new(addr.clone(), "job");
        let mut broken = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
        let mut healthy = shuffle.open_gate(gate(1), vec![channel(1, 0, 0)]).await.expect("gate");
        let mut writer = shuffle
            .create_partition(PartitionId { edge: 1, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
            .await
            .expect("partition");
        // A producer that promises 1000 bytes, sends 10 and hangs up.
        let mut raw = TcpStream::connect(&addr).await.expect("connect");
        send_raw(
            &mut raw,
            ClientMessage::Hello { version: PROTOCOL_VERSION, namespace: "job".into(), token: String::new() },
        )
        .await;
        assert!(matches!(reply(&mut raw).await, ServerMessage::Ok));
        let partition = PartitionId { edge: 0, producer: SubtaskIndex(0) };
        send_raw(
            &mut raw,
            ClientMessage::CreatePartition { partition, subpartitions: 1, kind: PartitionKind::Pipelined },
        )
        .await;
        assert!(matches!(reply(&mut raw).await, ServerMessage::Ok));
        assert!(matches!(reply(&mut raw).await, ServerMessage::Grant { subpartition: 0, .. }));
        raw.write_all(&1000u32.to_le_bytes()).await.expect("write");
        raw.write_all(&[4, 0, 0, 0, 0, 1, 2, 3, 4, 5]).await.expect("write");
        raw.shutdown().await.expect("half-close");
        let err = tokio::time::timeout(LIMIT, broken.next()).await.expect("in time").expect_err("a broken channel");
        let ShuffleError::ChannelFailed { channel: failed, message } = err else { panic!("unexpected {err}") };
        assert_eq!(failed, channel(0, 0, 0));
        assert!(message.contains("truncated"), "{message}");
        writer.send(0, StreamEvent::Watermark(1)).await.expect("send");
        let got = tokio::time::timeout(LIMIT, healthy.next()).await.expect("in time").expect("healthy");
        assert!(matches!(got, Some((0, StreamEvent::Watermark(1)))));
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_that_vanishes_fails_its_consumers() {
        let (addr, server) = start(2).await;
        let shuffle = RemoteShuffle::new(addr, "job");
        let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
        let mut w = shuffle
            .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
            .await
            .expect("w");
        w.send(0, StreamEvent::Watermark(1)).await.expect("send");
        drop(w);
        let first = tokio::time::timeout(LIMIT, input.next()).await.expect("in time");
        // The frame sent before the producer left may or may not still be delivered; the end
        // of the channel must be an error, never a clean end.
        let end = match first {
            Ok(Some((0, StreamEvent::Watermark(1)))) => {
                tokio::time::timeout(LIMIT, input.next()).await.expect("in time")
            }
            other => other,
        };
        assert!(matches!(end, Err(ShuffleError::ChannelFailed { .. })), "unexpected {end:?}");
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn losing_the_server_mid_stream_fails_both_ends() {
        let (addr, server) = start(2).await;
        let shuffle = RemoteShuffle::new(addr, "job");
        let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
        let mut w = shuffle
            .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
            .await
            .expect("w");
        let producer = tokio::spawn(async move {
            let mut i = 0;
            loop {
                if let Err(e) = w.send(0, StreamEvent::Watermark(i)).await {
                    return (i, e);
                }
                i += 1;
            }
        });
        let mut received = 0;
        while received < 100 {
            let got = tokio::time::timeout(LIMIT, input.next()).await.expect("in time").expect("streaming");
            assert!(got.is_some());
            received += 1;
        }
        server.abort();
        let end = loop {
            match tokio::time::timeout(LIMIT, input.next()).await.expect("the consumer notices in time") {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        assert!(matches!(end, Err(ShuffleError::Remote { .. })), "unexpected {end:?}");
        let (_, err) =
            tokio::time::timeout(LIMIT, producer).await.expect("the producer notices in time").expect("task");
        assert!(matches!(err, ShuffleError::Remote { .. }), "unexpected {err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_shuffle_suite() {
        suite(None, weir_net::Transport::Plain).await;
    }

    /// The same suite with every connection over TLS: a server presenting a certificate, and
    /// clients trusting the CA that signed it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_shuffle_suite_over_tls() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let certs = weir_net::dev_certs::write(dir.path(), &["127.0.0.1".into()]).expect("certificates");
        let tls = weir_net::ServerTls::from_pem_files(&certs.certificate, &certs.key).expect("the certificate");
        let ca = weir_net::ClientTls::from_ca_file(&certs.ca).expect("the CA");
        suite(Some(tls), weir_net::Transport::Tls(ca)).await;
    }

    /// Runs [`crate::testing::run_all`] against two servers (one that spills), reached over
    /// `transport`.
    async fn suite(tls: Option<weir_net::ServerTls>, transport: weir_net::Transport) {
        let (addr, server) =
            start_with(ServerConfig { channel_capacity: 1, tls: tls.clone(), ..ServerConfig::default() }).await;
        let counter = std::sync::atomic::AtomicU32::new(0);
        // A fresh namespace per check: one server, many independent jobs.
        let client = |addr: &str, prefix: &str| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(
                RemoteShuffle::new(addr, format!("{prefix}-{n}"))
                    .with_consumer_credits(1)
                    .with_transport(transport.clone()),
            ) as Arc<dyn ShuffleService>
        };
        let make = || client(&addr, "suite");
        let store = StoreConfig { memory_budget: 16 << 10, ..StoreConfig::default() };
        let (spilling_addr, spilling_server) =
            start_with(ServerConfig { channel_capacity: 1, store, tls, ..ServerConfig::default() }).await;
        let make_spilling = || client(&spilling_addr, "spill");
        // One frame queued on the server plus one in flight to the consumer.
        crate::testing::run_all(&make, &make_spilling, 2).await;
        server.abort();
        spilling_server.abort();
    }
}
