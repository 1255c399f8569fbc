//! Weir's process harness: real `weir` processes on loopback, shared by the end-to-end tests
//! (`tests/`) and the benchmarks (`weir-bench`).
//!
//! It owns how a process is started and found (free ports, the first line of stdout each role
//! prints, the admin token `weir standalone` writes), how it is killed (`kill -9`, SIGTERM) and
//! restarted, where its logs go, and what is cleaned up: [`ShuffleServer`], [`Standalone`] and
//! [`Cluster`] (control-plane replicas, workers and optionally a shuffle server, with the
//! cluster's leader, writes retried through elections, tenants and tokens). It also reads what a
//! filesystem sink published ([`published`], [`ids`]).
//!
//! It knows the `weir` binary only by its command line and HTTP API, never by the roles' crates,
//! so tests and benchmarks run exactly what an operator runs. Every process is killed when its
//! handle is dropped. Fallible steps answer [`Error`]: a benchmark reports it, a test fails on it.
//! Misuse (a replica id the cluster does not have, killing a process that does not run) panics.

mod cluster;
mod process;
mod shuffle;
mod standalone;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub use cluster::{Cluster, ClusterBuilder, Logs};
pub use process::{Process, children_of, free_loopback_address, kill_9};
pub use shuffle::ShuffleServer;
pub use standalone::Standalone;

/// Why the harness could not do what it was asked; the message says what and where.
pub struct Error(String);

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// As its message, so a test's `expect` shows the message as it is.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The `weir` binary the harness starts processes from.
#[derive(Clone, Debug)]
pub struct Weir {
    exe: PathBuf,
}

impl Weir {
    /// The binary at `exe` (a test passes `env!("CARGO_BIN_EXE_weir")`).
    pub fn at(exe: impl Into<PathBuf>) -> Weir {
        Weir { exe: exe.into() }
    }

    /// The binary of this process (a benchmark runs inside `weir bench`).
    pub fn current_exe() -> Result<Weir> {
        let exe = std::env::current_exe().map_err(|e| Error::new(format!("the weir binary's path: {e}")))?;
        Ok(Weir::at(exe))
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// What `weir key NAME` prints for `root_token` (`peer`, `worker`, `shuffle`).
    pub fn key(&self, name: &str, root_token: &str) -> Result<String> {
        let output = std::process::Command::new(&self.exe)
            .args(["key", name])
            .env("WEIR_ROOT_TOKEN", root_token)
            .output()
            .map_err(|e| Error::new(format!("`weir key {name}` does not run: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::new(format!("`weir key {name}` failed: {stderr}")));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// A `weir shuffle` server open to any client (`--insecure-no-auth`) on a free loopback
    /// port, with extra `weir shuffle` flags; its stderr is the caller's.
    pub fn shuffle_server(&self, flags: &[&OsStr]) -> Result<ShuffleServer> {
        ShuffleServer::start_on(self, "127.0.0.1:0", flags, None, None)
    }

    /// A `weir shuffle` server that opens a namespace only to a token signed with `key` (`weir
    /// key shuffle`), on a free loopback port.
    pub fn keyed_shuffle_server(&self, key: &str, flags: &[&OsStr]) -> Result<ShuffleServer> {
        ShuffleServer::start_on(self, "127.0.0.1:0", flags, None, Some(key))
    }

    /// An open `weir shuffle` server listening on `addr` (a killed server's, to stand in for it).
    pub fn shuffle_server_on(&self, addr: &str, flags: &[&OsStr]) -> Result<ShuffleServer> {
        ShuffleServer::start_on(self, addr, flags, None, None)
    }

    /// `weir standalone` on a free loopback port over `data`, its stderr appended to `log`,
    /// with `extra` arguments (`--submit FILE`).
    pub fn standalone(&self, data: &Path, log: &Path, extra: &[&str]) -> Result<Standalone> {
        Standalone::start(self, data, log, extra)
    }

    /// A cluster of control-plane replicas, configured before it starts.
    pub fn cluster(&self) -> ClusterBuilder {
        ClusterBuilder::new(self.clone())
    }
}

/// Every published (visible) line of a filesystem sink's folder, counted; hidden in-progress
/// and pending files are not published.
pub fn published(out: &Path) -> Result<BTreeMap<String, u32>> {
    let unreadable = |e: std::io::Error| Error::new(format!("cannot read the sink's folder {}: {e}", out.display()));
    let mut lines = BTreeMap::new();
    for entry in std::fs::read_dir(out).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| Error::new(format!("cannot read the part file {}: {e}", entry.path().display())))?;
        for line in text.lines() {
            *lines.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    Ok(lines)
}

/// How often each `id` appears in a sink's published JSON rows (as [`published`] counts them).
pub fn ids(lines: &BTreeMap<String, u32>) -> Result<BTreeMap<u64, u32>> {
    let mut ids = BTreeMap::new();
    for (line, count) in lines {
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::new(format!("not a JSON row ({e}): {line}")))?;
        let id = row["id"].as_u64().ok_or_else(|| Error::new(format!("a row without an id: {line}")))?;
        *ids.entry(id).or_insert(0) += count;
    }
    Ok(ids)
}
