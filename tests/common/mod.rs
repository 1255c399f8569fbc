//! What the end-to-end tests share: the `weir` binary of this build, in the process harness
//! (`weir-testkit`), and the harness's readers of a sink's folder, failing the test on an error.

use std::collections::BTreeMap;
use std::path::Path;

pub use weir_testkit::Weir;

/// The `weir` binary cargo built for these tests.
#[allow(dead_code, reason = "not every test binary starts a process through the harness")]
pub fn weir() -> Weir {
    Weir::at(env!("CARGO_BIN_EXE_weir"))
}

/// A `weir shuffle` server on a free loopback port, killed when the test ends.
#[allow(dead_code, reason = "not every test binary starts a shuffle server")]
pub fn shuffle_server() -> weir_testkit::ShuffleServer {
    weir().shuffle_server(&[]).expect("the shuffle server starts")
}

/// Every published (visible) line of a filesystem sink's folder, counted.
#[allow(dead_code, reason = "not every test binary reads a sink's folder")]
pub fn published(out: &Path) -> BTreeMap<String, u32> {
    weir_testkit::published(out).expect("the sink's folder reads")
}

/// How often each `id` appears in a sink's published JSON rows.
#[allow(dead_code, reason = "not every test binary reads ids")]
pub fn ids(lines: &BTreeMap<String, u32>) -> BTreeMap<u64, u32> {
    weir_testkit::ids(lines).expect("JSON rows with ids")
}
