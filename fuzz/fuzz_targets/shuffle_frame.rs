//! Arbitrary bytes as a shuffle wire frame ([`weir_shuffle_service::wire::decode`]), as a
//! consumer decodes what the shuffle server relays. The first input byte picks how the rest is
//! read: odd, as `[kind][payload…]` with the checksum filled in (to reach the Arrow IPC reader);
//! even, as a raw frame (to exercise the header and checksum checks). A frame that decodes must
//! encode again and decode to the same event.
//!
//! Arrow's schema conversion panics on some malformed schemas, and `wire::decode` contains that
//! with `catch_unwind` by design: a panic it contains counts as the error it becomes; a panic
//! that escapes `decode` (or the checks here) is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_dataflow::event::StreamEvent;
use weir_fuzz::CappedAllocator;
use weir_shuffle_service::wire;

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 64 << 20 }> = CappedAllocator;

fuzz_target!(
    init: {
        weir_fuzz::seeds::write_if_asked("shuffle_frame");
        weir_fuzz::tolerate_contained_panics();
    },
    |data: &[u8]| weir_fuzz::report_escaped_panics(|| check_frame(data))
);

fn check_frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let frame = if mode % 2 == 1 { weir_fuzz::shuffle_frame_with_checksum(rest) } else { rest.to_vec() };
    let Ok(event) = wire::decode(&frame) else { return };
    let mut again = Vec::new();
    wire::encode(&event, &mut again).expect("a decoded event encodes again");
    let decoded_again = wire::decode(&again).expect("a re-encoded event decodes");
    assert!(same_event(&event, &decoded_again), "an event changed across encode and decode: {event:?}");
}

fn same_event(a: &StreamEvent, b: &StreamEvent) -> bool {
    match (a, b) {
        (StreamEvent::Data(a), StreamEvent::Data(b)) => a.data == b.data && a.kinds == b.kinds,
        (StreamEvent::Watermark(a), StreamEvent::Watermark(b)) => a == b,
        (StreamEvent::Barrier(a), StreamEvent::Barrier(b)) => a == b,
        (StreamEvent::Idle, StreamEvent::Idle) | (StreamEvent::EndOfPartition, StreamEvent::EndOfPartition) => true,
        _ => false,
    }
}
