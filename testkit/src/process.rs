//! One `weir` process: started with its stdout piped, known by the first line it prints, and
//! killed with SIGKILL when its handle is dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

use crate::{Error, Result};

/// A running process; killed (`kill -9`) and reaped when dropped.
pub struct Process {
    child: Child,
    /// Kept open: a process may print more after its first line, and must never see a closed
    /// pipe.
    _stdout: BufReader<ChildStdout>,
    first_line: String,
}

impl Process {
    /// Starts `command` with its stdout piped and waits for the first line it prints (every
    /// role prints where it listens). `Ok(None)` when the process exited before printing one:
    /// the usual cause is a port another process took meanwhile. `what` names it in errors.
    pub fn spawn(command: &mut Command, what: &str) -> Result<Option<Process>> {
        let mut child =
            command.stdout(Stdio::piped()).spawn().map_err(|e| Error::new(format!("{what} does not start: {e}")))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout was set to piped above"));
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            kill_9(&mut child);
            return Ok(None);
        }
        Ok(Some(Process { child, _stdout: stdout, first_line: line.trim().to_string() }))
    }

    /// The first line it printed, trimmed.
    pub fn first_line(&self) -> &str {
        &self.first_line
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`: the process gets no chance to clean up. It is reaped.
    pub fn kill_9(&mut self) {
        kill_9(&mut self.child);
    }

    /// SIGTERM, then waits for it to exit: how an operator stops it cleanly.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.as_ref().is_ok_and(ExitStatus::success) {
            return Err(Error::new(format!("kill -TERM {pid} failed: {sent:?}")));
        }
        self.child.wait().map_err(|e| Error::new(format!("waiting for process {pid} to exit: {e}")))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        kill_9(&mut self.child);
    }
}

/// Kills `child` as `kill -9` does (`Child::kill` sends SIGKILL on Unix) and reaps it; a child
/// that already exited is only reaped.
pub fn kill_9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback address whose port was free a moment ago. Another process may take it before
/// ours binds it: a caller starts again on another port when its process exits at once.
pub fn free_loopback_address() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::new(format!("cannot bind loopback: {e}")))?;
    let address = listener.local_addr().map_err(|e| Error::new(format!("a bound listener's address: {e}")))?;
    Ok(address.to_string())
}

/// Sends `command`'s stderr to the file `log` (appended; created if missing), without colours:
/// logs are files to read, not a terminal.
pub(crate) fn log_stderr_to(command: &mut Command, log: &std::path::Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::new(format!("cannot open the log {}: {e}", log.display())))?;
    command.env("NO_COLOR", "1").stderr(file);
    Ok(())
}

/// The processes whose parent is `pid` and whose command line contains `word` (Linux: read
/// from `/proc`), e.g. the workers a control plane started.
pub fn children_of(pid: u32, word: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `pid (comm) state ppid …`: the fields after the last ')'.
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let parent =
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            parent == Some(pid) && String::from_utf8_lossy(&cmdline).contains(word)
        })
        .collect()
}
