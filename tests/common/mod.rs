//! What the end-to-end tests share: real `weir` processes they start and kill.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A `weir shuffle` process on a free loopback port, killed when the test ends.
#[allow(dead_code, reason = "not every test binary starts a shuffle server")]
pub struct ShuffleServer {
    pub child: Child,
    pub addr: String,
}

#[allow(dead_code, reason = "not every test binary starts a shuffle server")]
impl ShuffleServer {
    pub fn start() -> ShuffleServer {
        Self::start_with(&[])
    }

    /// A server with extra `weir shuffle` flags.
    pub fn start_with(flags: &[&std::ffi::OsStr]) -> ShuffleServer {
        Self::start_on("127.0.0.1:0", flags)
    }

    /// A server listening on `addr` (a killed server's, to stand in for it).
    pub fn start_on(addr: &str, flags: &[&std::ffi::OsStr]) -> ShuffleServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["shuffle", "--listen", addr])
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the shuffle server starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its address");
        let addr = line.trim().rsplit(' ').next().expect("an address").to_string();
        ShuffleServer { child, addr }
    }

    pub fn kill_9(&mut self) {
        kill_9(&mut self.child);
    }
}

impl Drop for ShuffleServer {
    fn drop(&mut self) {
        kill_9(&mut self.child);
    }
}

/// Kills `child` as `kill -9` does (`Child::kill` sends SIGKILL on Unix) and reaps it; a child
/// that already exited is only reaped.
#[allow(dead_code, reason = "not every test binary kills a process")]
pub fn kill_9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Every published (visible) line of a filesystem sink's folder, counted; hidden in-progress
/// and pending files are not published.
#[allow(dead_code, reason = "not every test binary reads a sink's folder")]
pub fn published(out: &std::path::Path) -> std::collections::BTreeMap<String, u32> {
    let mut lines = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(out).expect("output folder") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).expect("part file").lines() {
            *lines.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    lines
}

/// How often each `id` appears in a sink's published JSON rows (as [`published`] counts them).
#[allow(dead_code, reason = "not every test binary reads ids")]
pub fn ids(lines: &std::collections::BTreeMap<String, u32>) -> std::collections::BTreeMap<u64, u32> {
    let mut ids = std::collections::BTreeMap::new();
    for (line, count) in lines {
        let row: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
        *ids.entry(row["id"].as_u64().expect("an id")).or_insert(0) += count;
    }
    ids
}
