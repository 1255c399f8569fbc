//! A `weir shuffle` server process: keyed (it opens a namespace only to its token, as in a
//! cluster), or open to any client on this machine (`--insecure-no-auth`, for `weir run`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus};

use crate::{Error, Process, Result, Weir};

/// A `weir shuffle` process; killed when dropped.
pub struct ShuffleServer {
    process: Process,
    /// Where it listens (`host:port`), as it printed.
    pub addr: String,
}

impl ShuffleServer {
    /// Starts it on `addr` with the shuffle key `key` (`weir key shuffle`), or open without one;
    /// its stderr goes to `log` (appended) if given, else to the caller's.
    pub(crate) fn start_on(
        weir: &Weir,
        addr: &str,
        flags: &[&OsStr],
        log: Option<&Path>,
        key: Option<&str>,
    ) -> Result<ShuffleServer> {
        let mut command = Command::new(weir.exe());
        command.args(["shuffle", "--listen", addr]).args(flags).env_remove("WEIR_SHUFFLE_KEY");
        match key {
            Some(key) => command.env("WEIR_SHUFFLE_KEY", key),
            None => command.arg("--insecure-no-auth"),
        };
        if let Some(log) = log {
            crate::process::log_stderr_to(&mut command, log)?;
        }
        let process = Process::spawn(&mut command, "weir shuffle")?
            .ok_or_else(|| Error::new(format!("weir shuffle on {addr} exited before printing its address")))?;
        // `shuffle server listening on <addr>`
        let addr = match process.first_line().rsplit(' ').next() {
            Some(printed) if !printed.is_empty() => printed.to_string(),
            _ => return Err(Error::new(format!("weir shuffle printed {:?}, not its address", process.first_line()))),
        };
        Ok(ShuffleServer { process, addr })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// `kill -9`.
    pub fn kill_9(&mut self) {
        self.process.kill_9();
    }

    /// SIGTERM, and how it exited.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.process.terminate()
    }
}
