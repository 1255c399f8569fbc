//! Where workers come from (DESIGN §8). The leader decides how many workers it wants
//! ([`WorkerDemand`], pure) and a [`Provisioner`] makes that many run:
//! - [`FixedWorkers`]: the workers someone started; nothing to start or stop;
//! - [`LocalProcesses`]: `weir worker` processes on this host, children of the control plane;
//! - (to come) ECS: the desired count of the worker service.
//!
//! Workers are stateless: one that is let go holds no task (the demand only shrinks to what the
//! running jobs' slots need), and one that dies is started again on the next reconcile.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::handle::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot start a worker ({program}): {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Makes a number of workers run.
pub trait Provisioner: Send + Sync {
    /// `local`, `fixed`, `ecs`: what `--provisioner` names.
    fn name(&self) -> &'static str;

    /// Makes `count` workers run, starting or stopping some; answers how many run now.
    fn scale_to(&self, count: u32) -> BoxFuture<'_, Result<u32, ProvisionError>>;
}

/// The workers that register by themselves: the count is theirs, not ours.
#[derive(Debug, Default)]
pub struct FixedWorkers;

impl Provisioner for FixedWorkers {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn scale_to(&self, _count: u32) -> BoxFuture<'_, Result<u32, ProvisionError>> {
        Box::pin(async { Err(ProvisionError::Other("fixed workers: start or stop `weir worker` by hand".into())) })
    }
}

/// Worker processes on this host: `program args…`, each a child of this process. A child that
/// exited is reaped and replaced on the next [`Provisioner::scale_to`]; the newest are stopped
/// first. Dropping the provisioner stops them all.
#[derive(Debug)]
pub struct LocalProcesses {
    program: PathBuf,
    args: Vec<OsString>,
    children: Mutex<VecDeque<Child>>,
}

impl LocalProcesses {
    /// Workers started as `program args…` (e.g. the running `weir` with `worker
    /// --control-plane …`); their output goes to this process's stderr.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> LocalProcesses {
        LocalProcesses {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            children: Mutex::new(VecDeque::new()),
        }
    }

    /// The process ids of the workers running now.
    pub fn pids(&self) -> Vec<u32> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        reap(&mut children);
        children.iter().map(Child::id).collect()
    }

    fn scale_now(&self, count: u32) -> Result<u32, ProvisionError> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        reap(&mut children);
        while children.len() > count as usize {
            if let Some(mut child) = children.pop_back() {
                stop(&mut child);
            }
        }
        while children.len() < count as usize {
            let child = Command::new(&self.program)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|source| ProvisionError::Start { program: self.program.display().to_string(), source })?;
            tracing::info!(pid = child.id(), "started a local worker");
            children.push_back(child);
        }
        Ok(children.len() as u32)
    }
}

impl Provisioner for LocalProcesses {
    fn name(&self) -> &'static str {
        "local"
    }

    fn scale_to(&self, count: u32) -> BoxFuture<'_, Result<u32, ProvisionError>> {
        // Quick system calls: spawn, reap, and a stop's wait for a child killed with SIGKILL.
        Box::pin(async move { self.scale_now(count) })
    }
}

impl Drop for LocalProcesses {
    fn drop(&mut self) {
        let children = self.children.get_mut().unwrap_or_else(|p| p.into_inner());
        for mut child in children.drain(..) {
            stop(&mut child);
        }
    }
}

/// Drops the children that have exited, saying so.
fn reap(children: &mut VecDeque<Child>) {
    children.retain_mut(|child| match child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            tracing::warn!(pid = child.id(), %status, "a local worker exited");
            false
        }
        Err(_) => false,
    });
}

/// Stops an idle worker: it holds no task, so nothing is lost by killing it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    tracing::info!(pid = child.id(), "stopped a local worker");
}

/// How many workers the leader wants: enough for the slots its jobs need at once, and when the
/// need falls, fewer only after it has stayed lower for the cool-down (to the most needed
/// meanwhile), so a job restarting or rescaling does not let workers go and ask for them again.
#[derive(Clone, Debug)]
pub struct WorkerDemand {
    slots_per_worker: u32,
    cool_down_ms: i64,
    /// Since when fewer workers than now have been enough, and the most needed since.
    lower_since: Option<(i64, u32)>,
    wanted: u32,
}

impl WorkerDemand {
    pub fn new(slots_per_worker: u32, cool_down: Duration) -> WorkerDemand {
        WorkerDemand {
            slots_per_worker: slots_per_worker.max(1),
            cool_down_ms: i64::try_from(cool_down.as_millis()).unwrap_or(i64::MAX),
            lower_since: None,
            wanted: 0,
        }
    }

    /// The workers wanted at `now_ms` when the jobs need `slots` slots.
    pub fn wanted(&mut self, now_ms: i64, slots: u32) -> u32 {
        let needed = slots.div_ceil(self.slots_per_worker);
        if needed >= self.wanted {
            self.lower_since = None;
            self.wanted = needed;
            return needed;
        }
        let (since, most) = self.lower_since.get_or_insert((now_ms, needed));
        *most = (*most).max(needed);
        if now_ms - *since >= self.cool_down_ms {
            self.wanted = *most;
            self.lower_since = None;
        }
        self.wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_grows_at_once_and_shrinks_after_the_cool_down_to_the_most_needed() {
        let mut demand = WorkerDemand::new(4, Duration::from_secs(60));
        assert_eq!(demand.wanted(0, 0), 0);
        assert_eq!(demand.wanted(1_000, 9), 3, "9 slots at 4 a worker");
        assert_eq!(demand.wanted(2_000, 4), 3, "not before the cool-down");
        assert_eq!(demand.wanted(30_000, 5), 3);
        assert_eq!(demand.wanted(61_000, 0), 3, "the cool-down started at 2 s");
        assert_eq!(demand.wanted(62_000, 0), 2, "the most needed during the cool-down (5 slots)");
        assert_eq!(demand.wanted(63_000, 0), 2, "a new cool-down starts");
        assert_eq!(demand.wanted(123_000, 0), 0, "scale to zero");
        assert_eq!(demand.wanted(124_000, 1), 1, "wakes at once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_processes_follow_the_count_and_a_killed_one_is_replaced() {
        let workers = LocalProcesses::new("sleep", ["600"]);
        assert_eq!(workers.name(), "local");
        assert_eq!(workers.scale_to(3).await.unwrap(), 3);
        let pids = workers.pids();
        assert_eq!(pids.len(), 3);
        for pid in &pids {
            assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} runs");
        }

        // A worker killed from outside is replaced.
        let victim = pids[0];
        let killed = Command::new("sh").args(["-c", &format!("kill -9 {victim}")]).status().unwrap();
        assert!(killed.success());
        for _ in 0..100 {
            if !workers.pids().contains(&victim) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!workers.pids().contains(&victim), "the killed worker is reaped");
        assert_eq!(workers.scale_to(3).await.unwrap(), 3);
        assert!(!workers.pids().contains(&victim));

        // Down to one, then none: the newest go first, and the stopped ones are gone.
        let before = workers.pids();
        assert_eq!(workers.scale_to(1).await.unwrap(), 1);
        assert_eq!(workers.pids(), vec![before[0]]);
        for pid in &before[1..] {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} stopped");
        }
        assert_eq!(workers.scale_to(0).await.unwrap(), 0);
        assert!(!std::path::Path::new(&format!("/proc/{}", before[0])).exists());

        let missing = LocalProcesses::new("/nonexistent/weir", ["worker"]);
        assert!(matches!(missing.scale_to(1).await, Err(ProvisionError::Start { .. })));
    }
}
