//! Arbitrary bytes as what a peer sends on a shuffle connection: length-prefixed messages read
//! by the [`MessageReader`] both the server and the client use, each body decoded as a client
//! message (what the server reads) and as a server message (what the client reads), and the
//! event frames inside decoded as wire frames. A message that decodes must encode again.
//!
//! Panics that `wire::decode` contains count as errors, as in `shuffle_frame`.
//!
//! The allocation cap is lower than the protocol's message limit on purpose: a peer must not be
//! able to make the reader reserve memory for bytes it has not sent.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_fuzz::CappedAllocator;
use weir_shuffle_service::remote::proto::{ClientMessage, MessageReader, ServerMessage};
use weir_shuffle_service::wire;

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 16 << 20 }> = CappedAllocator;

fuzz_target!(
    init: {
        weir_fuzz::seeds::write_if_asked("shuffle_message");
        weir_fuzz::tolerate_contained_panics();
    },
    |data: &[u8]| weir_fuzz::report_escaped_panics(|| check_stream(data))
);

fn check_stream(data: &[u8]) {
    let mut reader = MessageReader::new(data);
    while let Ok(Some(body)) = futures::executor::block_on(reader.next()) {
        check_client_message(body.clone());
        check_server_message(body);
    }
}

fn check_client_message(body: Bytes) {
    let Ok(message) = ClientMessage::decode(body) else { return };
    if let ClientMessage::Data { frame, .. } = &message {
        let _ = wire::decode(frame);
    }
    let _ = message.encode();
}

fn check_server_message(body: Bytes) {
    let Ok(message) = ServerMessage::decode(body) else { return };
    if let ServerMessage::Event { frame, .. } = &message {
        let _ = wire::decode(frame);
    }
    let _ = message.encode();
}
