//! Arbitrary bytes as checkpoint or savepoint metadata (`_metadata`), as a restore reads it
//! from the object store ([`decode_metadata`]): a user may point `execution.savepoint.path`
//! anywhere. The first input byte picks how the rest is read: odd, as the JSON body with a
//! matching checksum header (to reach the deserializer); even, as the whole file (to exercise
//! the header checks). Metadata that decodes must encode and decode again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_fuzz::CappedAllocator;
use weir_state_store::checkpoint::{decode_metadata, encode_metadata};

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 64 << 20 }> = CappedAllocator;

fuzz_target!(
    init: weir_fuzz::seeds::write_if_asked("checkpoint_metadata"),
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else { return };
        let file = if mode % 2 == 1 { weir_fuzz::checkpoint_metadata_with_checksum(rest) } else { rest.to_vec() };
        let Ok(checkpoint) = decode_metadata(&file, "fuzz/_metadata") else { return };
        for handle in &checkpoint.state_handles {
            let _ = checkpoint.handles_of(handle.vertex);
        }
        let again = encode_metadata(&checkpoint);
        decode_metadata(&again, "fuzz/_metadata").expect("encoded metadata decodes");
    }
);
