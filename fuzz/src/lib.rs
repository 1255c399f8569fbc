//! What Weir's fuzz targets share: an allocator that turns an outsized allocation into a crash
//! the fuzzer reports, the checksum fix-ups that let inputs reach past a CRC, and the seed
//! writer that produces the committed corpora with Weir's own encoders.
//!
//! The targets are built without a sanitizer (docs/fuzzing.md says why), so libFuzzer's own
//! `-malloc_limit_mb` — which needs a sanitizer's allocator hooks — does not work. A decoder
//! that lets a few bytes of input reserve hundreds of megabytes is a denial of service, so each
//! target installs [`CappedAllocator`] instead.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub mod seeds;

/// The system allocator, aborting (which libFuzzer reports as a crash, with the input) on any
/// single allocation larger than `LIMIT` bytes.
pub struct CappedAllocator<const LIMIT: usize>;

impl<const LIMIT: usize> CappedAllocator<LIMIT> {
    fn check(size: usize) {
        if size > LIMIT {
            // No formatting: it could allocate, and this runs inside the allocator.
            let _ = std::io::stderr().write_all(b"weir-fuzz: one allocation exceeds the target's cap\n");
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the cap only adds a check before it.
unsafe impl<const LIMIT: usize> GlobalAlloc for CappedAllocator<LIMIT> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// `[kind][payload…]` as a shuffle wire frame `[kind][crc32 of payload][payload…]`, so that a
/// mutated payload reaches the Arrow IPC reader instead of stopping at the checksum.
pub fn shuffle_frame_with_checksum(kind_and_payload: &[u8]) -> Vec<u8> {
    let Some((&kind, payload)) = kind_and_payload.split_first() else { return Vec::new() };
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(kind);
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `body` as checkpoint metadata with a matching header line, so that a mutated JSON body
/// reaches the deserializer instead of stopping at the checksum.
pub fn checkpoint_metadata_with_checksum(body: &[u8]) -> Vec<u8> {
    let mut out = format!("weir-checkpoint-v1 crc32={:08x}\n", crc32fast::hash(body)).into_bytes();
    out.extend_from_slice(body);
    out
}

thread_local! {
    /// The message and place of the last panic on this thread, for [`report_escaped_panics`].
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// For targets whose code under test contains panics by design (`wire::decode` runs Arrow's IPC
/// reader behind `catch_unwind`, because Arrow's schema conversion panics on malformed input):
/// replaces libfuzzer-sys's panic hook, which aborts on every panic, with one that only records
/// it. Wrap the target's body in [`report_escaped_panics`] so that a panic that is *not*
/// contained still aborts with its message. Call it from the target's `init`.
pub fn tolerate_contained_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("{info}");
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
    }));
}

/// Runs `body`; if a panic escapes it, prints that panic and aborts (libFuzzer reports a crash).
pub fn report_escaped_panics(body: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(body)).is_err() {
        let message = LAST_PANIC.with(|last| last.borrow_mut().take()).unwrap_or_default();
        eprintln!("weir-fuzz: a panic escaped the code under test: {message}");
        std::process::abort();
    }
}
