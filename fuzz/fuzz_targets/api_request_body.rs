//! Arbitrary bytes as a JSON request body of the control plane's API, read and checked as the
//! server does ([`check_request_body`]: the same JSON reading, size limit and checks the
//! handlers apply, up to where a handler would read or write the metadata). The first input
//! byte picks the route. The answer must be an `ApiError` with a 4xx status, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_control_plane::api::{RequestBody, check_request_body};
use weir_fuzz::CappedAllocator;

#[global_allocator]
static ALLOCATOR: CappedAllocator<{ 512 << 20 }> = CappedAllocator;

fuzz_target!(
    init: weir_fuzz::seeds::write_if_asked("api_request_body"),
    |data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else { return };
        let kind = RequestBody::ALL[usize::from(selector) % RequestBody::ALL.len()];
        if let Err(error) = check_request_body(kind, body) {
            assert!(error.status().is_client_error(), "{kind:?} body refused with {}: {}", error.status(), error.detail());
        }
    }
);
