//! Arbitrary bytes as the JSON bodies between the control plane's leader and the workers
//! ([`weir_dataflow::wire`]): what a worker's task endpoint reads (`Deploy`, `AttemptRef`,
//! `SavepointAsk`), what the leader reads (`Heartbeat`), and their answers and problem bodies.
//! The first input byte picks the message type. A body that deserializes must serialize and
//! deserialize again: the worker repeats its reports, and the leader forwards what it read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_dataflow::wire::{
    AttemptRef, Deploy, Failure, Heartbeat, HeartbeatReply, NotLeader, Problem, SavepointAsk, SavepointTaken,
};
use weir_fuzz::CappedAllocator;

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 64 << 20 }> = CappedAllocator;

/// The message types, in the order of the first input byte (modulo their number); the seed
/// writer uses the same order.
pub const MESSAGE_TYPES: usize = 9;

fuzz_target!(
    init: weir_fuzz::seeds::write_if_asked("worker_protocol"),
    |data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else { return };
        match usize::from(selector) % MESSAGE_TYPES {
            0 => round_trip::<Deploy>(body),
            1 => round_trip::<AttemptRef>(body),
            2 => round_trip::<SavepointAsk>(body),
            3 => round_trip::<SavepointTaken>(body),
            4 => round_trip::<Heartbeat>(body),
            5 => round_trip::<HeartbeatReply>(body),
            6 => round_trip::<NotLeader>(body),
            7 => round_trip::<Problem>(body),
            _ => round_trip::<Failure>(body),
        }
    }
);

fn round_trip<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(message) = serde_json::from_slice::<T>(body) else { return };
    let json = serde_json::to_vec(&message).expect("a message read from JSON writes as JSON");
    serde_json::from_slice::<T>(&json).expect("a message written as JSON reads back");
}
