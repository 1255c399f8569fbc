//! A `weir standalone` process: every role in one, with its HTTP API and admin token.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Process, Result, Weir};

/// `weir standalone` on a free loopback port; killed when dropped.
pub struct Standalone {
    process: Process,
    /// `http://host:port`, or `https://` when started with `--tls-cert`.
    pub url: String,
    /// The admin token of tenant `default`, as the process wrote it to `<data>/admin-token`.
    pub token: String,
    /// Where its stderr goes (appended: a restart's follows the first's).
    pub log: PathBuf,
}

impl Standalone {
    pub(crate) fn start(weir: &Weir, data: &Path, log: &Path, extra: &[&str]) -> Result<Standalone> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::new(format!("cannot open the log {}: {e}", log.display())))?;
        let mut command = Command::new(weir.exe());
        // Run from the folder that holds the data directory, as an operator would from a
        // project's folder: that folder is where the jobs' storage may be (the sandbox's root).
        if let Some(folder) = data.parent().filter(|_| data.is_absolute()) {
            command.current_dir(folder);
        }
        command
            .args(["standalone", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("WEIR_LOG", "info")
            .stderr(stderr);
        let exited =
            || Error::new(format!("weir standalone exited before printing its address; log {}", log.display()));
        let process = Process::spawn(&mut command, "weir standalone")?.ok_or_else(exited)?;
        let line = process.first_line();
        let addr = match line.strip_prefix("weir standalone listening on ") {
            Some(addr) => addr.to_string(),
            None => return Err(Error::new(format!("unexpected first line {line:?}; log {}", log.display()))),
        };
        let token_file = data.join("admin-token");
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| Error::new(format!("the admin token is not written to {}: {e}", token_file.display())))?;
        Ok(Standalone {
            process,
            url: format!("{}://{addr}", if extra.contains(&"--tls-cert") { "https" } else { "http" }),
            token: token.trim().to_string(),
            log: log.to_path_buf(),
        })
    }

    /// `kill -9`: the whole process, every role in it.
    pub fn kill_9(&mut self) {
        self.process.kill_9();
    }
}
