//! Where workers come from (DESIGN §8). The leader decides how many workers it wants
//! ([`workers_needed`] and [`WorkerDemand`], pure) and a [`Provisioner`] makes that many run:
//! - [`LocalProcesses`]: `weir worker` processes on this host, children of the control plane
//!   (`--provisioner local`);
//! - [`EcsService`]: the desired count of the workers' ECS service (`--provisioner ecs`);
//! - no provisioner at all for `--provisioner fixed`: the workers someone started register
//!   themselves, and nothing is started or stopped.
//!
//! Workers are stateless, and the ones let go are idle ones first: the demand only shrinks to
//! what the jobs' slots need, and [`Provisioner::scale_to`] is told which workers run attempts.
//! A worker that dies is started again on the next reconcile.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_dataflow::auth::ClusterKey;
use weir_dataflow::ids::WorkerId;

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
    /// `local`, `ecs`: what `--provisioner` names.
    fn name(&self) -> &'static str;

    /// Makes `count` workers run, starting or stopping some (never one of `busy`, the workers
    /// running attempts, while another can go); answers how many run now.
    fn scale_to<'a>(&'a self, count: u32, busy: &'a BTreeSet<WorkerId>) -> BoxFuture<'a, Result<u32, ProvisionError>>;
}

/// Worker processes on this host: `program args…`, each a child of this process, given the
/// worker key in `WEIR_WORKER_KEY`. A child that exited is reaped and replaced on the next
/// [`Provisioner::scale_to`]; idle ones are stopped before busy ones, the newest first.
/// Dropping the provisioner stops them all.
#[derive(Debug)]
pub struct LocalProcesses {
    program: PathBuf,
    args: Vec<OsString>,
    key: Option<ClusterKey>,
    children: Mutex<VecDeque<LocalWorker>>,
}

/// A child worker, and the id it named itself with (its first line of output), once known.
#[derive(Debug)]
struct LocalWorker {
    child: Child,
    id: Arc<Mutex<Option<WorkerId>>>,
}

impl LocalWorker {
    fn id(&self) -> Option<WorkerId> {
        self.id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl LocalProcesses {
    /// Workers started as `program args…` (e.g. the running `weir` with `worker
    /// --control-plane …`); their logs go to this process's stderr.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> LocalProcesses {
        LocalProcesses {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            key: None,
            children: Mutex::new(VecDeque::new()),
        }
    }

    /// Gives each worker `key` (in `WEIR_WORKER_KEY`, never on its command line).
    pub fn with_key(mut self, key: ClusterKey) -> LocalProcesses {
        self.key = Some(key);
        self
    }

    /// The process ids of the workers running now.
    pub fn pids(&self) -> Vec<u32> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        reap(&mut children);
        children.iter().map(|w| w.child.id()).collect()
    }

    fn scale_now(&self, count: u32, busy: &BTreeSet<WorkerId>) -> Result<u32, ProvisionError> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        reap(&mut children);
        while children.len() > count as usize {
            // The newest idle one, else the newest.
            let idle = children.iter().rposition(|w| w.id().is_none_or(|id| !busy.contains(&id)));
            let index = idle.unwrap_or(children.len() - 1);
            if let Some(mut worker) = children.remove(index) {
                stop(&mut worker.child);
            }
        }
        while children.len() < count as usize {
            let mut command = Command::new(&self.program);
            command.args(&self.args).stdin(Stdio::null()).stdout(Stdio::piped());
            if let Some(key) = &self.key {
                command.env("WEIR_WORKER_KEY", key.reveal());
            }
            let mut child = command
                .spawn()
                .map_err(|source| ProvisionError::Start { program: self.program.display().to_string(), source })?;
            let id = Arc::new(Mutex::new(None));
            if let Some(stdout) = child.stdout.take() {
                watch_first_line(stdout, id.clone());
            }
            tracing::info!(pid = child.id(), "started a local worker");
            children.push_back(LocalWorker { child, id });
        }
        Ok(children.len() as u32)
    }
}

/// Reads a worker's `weir worker ID listening on ADDR` into `id`, then drains its output until
/// it exits (a worker writing to a closed pipe would fail).
fn watch_first_line(stdout: impl Read + Send + 'static, id: Arc<Mutex<Option<WorkerId>>>) {
    let spawned = std::thread::Builder::new().name("local-worker-stdout".into()).spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        if lines.read_line(&mut first).is_ok()
            && let ["weir", "worker", named, "listening", "on", _] = first.split_whitespace().collect::<Vec<_>>()[..]
        {
            *id.lock().unwrap_or_else(|p| p.into_inner()) = Some(WorkerId(named.to_string()));
        }
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot watch a local worker's output: it is stopped as if idle");
    }
}

impl Provisioner for LocalProcesses {
    fn name(&self) -> &'static str {
        "local"
    }

    fn scale_to<'a>(&'a self, count: u32, busy: &'a BTreeSet<WorkerId>) -> BoxFuture<'a, Result<u32, ProvisionError>> {
        // Quick system calls: spawn, reap, and a stop's wait for a child killed with SIGKILL.
        Box::pin(async move { self.scale_now(count, busy) })
    }
}

impl Drop for LocalProcesses {
    fn drop(&mut self) {
        let children = self.children.get_mut().unwrap_or_else(|p| p.into_inner());
        for mut worker in children.drain(..) {
            stop(&mut worker.child);
        }
    }
}

/// Drops the children that have exited, saying so.
fn reap(children: &mut VecDeque<LocalWorker>) {
    children.retain_mut(|worker| match worker.child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            tracing::warn!(pid = worker.child.id(), %status, "a local worker exited");
            false
        }
        Err(_) => false,
    });
}

/// Stops a worker. An idle one holds no task; a busy one's attempts restart elsewhere from
/// their latest checkpoint.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    tracing::info!(pid = child.id(), "stopped a local worker");
}

/// The workers' ECS service: `scale_to` sets its desired count (ECS starts and stops the
/// tasks) and answers how many run. The count is set when it changes and again every
/// [`EcsService::REASSERT`] (an operator's or another tool's change is undone); otherwise the
/// last answer stands, so the leader's frequent reconciles cost no API calls. ECS chooses
/// which tasks a lower count stops: a busy worker may go, and its attempt then restarts
/// elsewhere from its latest checkpoint (nothing is lost; `busy` is not used).
pub struct EcsService {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
    /// The count last set, when, and how many ran then.
    last: tokio::sync::Mutex<Option<(u32, std::time::Instant, u32)>>,
}

impl EcsService {
    /// How often the desired count is set again though it did not change.
    pub const REASSERT: Duration = Duration::from_secs(30);

    pub fn new(client: aws_sdk_ecs::Client, cluster: impl Into<String>, service: impl Into<String>) -> EcsService {
        EcsService { client, cluster: cluster.into(), service: service.into(), last: tokio::sync::Mutex::new(None) }
    }

    /// A client configured as the AWS SDK's defaults are (`AWS_REGION`, credentials from the
    /// environment or the task role, `AWS_ENDPOINT_URL_ECS` or `AWS_ENDPOINT_URL`).
    pub async fn from_env(cluster: impl Into<String>, service: impl Into<String>) -> EcsService {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        EcsService::new(aws_sdk_ecs::Client::new(&config), cluster, service)
    }

    async fn set(&self, count: u32) -> Result<u32, ProvisionError> {
        let desired = i32::try_from(count).unwrap_or(i32::MAX);
        let updated = self
            .client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(desired)
            .send()
            .await
            .map_err(|e| self.error("UpdateService", e))?;
        let service = updated.service().ok_or_else(|| {
            ProvisionError::Other(format!(
                "ECS service {} of cluster {}: UpdateService answered no service",
                self.service, self.cluster
            ))
        })?;
        Ok(u32::try_from(service.running_count()).unwrap_or(0))
    }

    fn error(&self, call: &str, e: impl std::error::Error + Send + Sync + 'static) -> ProvisionError {
        // The SDK's Display is terse; its context says what went wrong (no credentials in it).
        let context = aws_sdk_ecs::error::DisplayErrorContext(e);
        ProvisionError::Other(format!("ECS service {} of cluster {}: {call}: {context}", self.service, self.cluster))
    }
}

impl std::fmt::Debug for EcsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsService").field("cluster", &self.cluster).field("service", &self.service).finish()
    }
}

impl Provisioner for EcsService {
    fn name(&self) -> &'static str {
        "ecs"
    }

    fn scale_to<'a>(&'a self, count: u32, _busy: &'a BTreeSet<WorkerId>) -> BoxFuture<'a, Result<u32, ProvisionError>> {
        Box::pin(async move {
            let mut last = self.last.lock().await;
            if let Some((set, at, running)) = *last
                && set == count
                && at.elapsed() < Self::REASSERT
            {
                return Ok(running);
            }
            let running = self.set(count).await?;
            *last = Some((count, std::time::Instant::now(), running));
            Ok(running)
        })
    }
}

/// How many workers of `slots_per_worker` slots the jobs of these parallelisms need at once.
/// With a shuffle server an attempt spreads over workers, so slots add up; without one each
/// attempt must fit on one worker, and they are packed first-fit, largest first (an attempt
/// larger than a worker gets workers enough for its slots, though it cannot run whole).
pub fn workers_needed(parallelisms: &[u32], slots_per_worker: u32, spread: bool) -> u32 {
    let size = slots_per_worker.max(1);
    if spread {
        return parallelisms.iter().sum::<u32>().div_ceil(size);
    }
    let mut sorted: Vec<u32> = parallelisms.iter().copied().filter(|p| *p > 0).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut free: Vec<u32> = Vec::new();
    let mut oversized = 0;
    for p in sorted {
        if p > size {
            oversized += p.div_ceil(size);
        } else if let Some(room) = free.iter_mut().find(|room| **room >= p) {
            *room -= p;
        } else {
            free.push(size - p);
        }
    }
    free.len() as u32 + oversized
}

/// How many workers the leader wants: as many as needed at once, and when the need falls,
/// fewer only after it has stayed lower for the cool-down (to the most needed meanwhile), so a
/// job restarting or rescaling does not let workers go and ask for them again.
#[derive(Clone, Debug)]
pub struct WorkerDemand {
    cool_down_ms: i64,
    /// Since when fewer workers than now have been enough, and the most needed since.
    lower_since: Option<(i64, u32)>,
    wanted: u32,
}

impl WorkerDemand {
    pub fn new(cool_down: Duration) -> WorkerDemand {
        WorkerDemand {
            cool_down_ms: i64::try_from(cool_down.as_millis()).unwrap_or(i64::MAX),
            lower_since: None,
            wanted: 0,
        }
    }

    /// The workers wanted at `now_ms` when `needed` are needed.
    pub fn wanted(&mut self, now_ms: i64, needed: u32) -> u32 {
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
        let mut demand = WorkerDemand::new(Duration::from_secs(60));
        assert_eq!(demand.wanted(0, 0), 0);
        assert_eq!(demand.wanted(1_000, 3), 3);
        assert_eq!(demand.wanted(2_000, 1), 3, "not before the cool-down");
        assert_eq!(demand.wanted(30_000, 2), 3);
        assert_eq!(demand.wanted(61_000, 0), 3, "the cool-down started at 2 s");
        assert_eq!(demand.wanted(62_000, 0), 2, "the most needed during the cool-down");
        assert_eq!(demand.wanted(63_000, 0), 2, "a new cool-down starts");
        assert_eq!(demand.wanted(123_000, 0), 0, "scale to zero");
        assert_eq!(demand.wanted(124_000, 1), 1, "wakes at once");
    }

    #[test]
    fn workers_needed_packs_attempts_whole_unless_they_can_spread() {
        assert_eq!(workers_needed(&[], 4, false), 0);
        assert_eq!(workers_needed(&[3, 3], 4, true), 2, "6 slots at 4 a worker");
        assert_eq!(workers_needed(&[3, 3], 4, false), 2);
        assert_eq!(workers_needed(&[2, 1, 3, 2], 4, false), 2, "3+1 and 2+2");
        assert_eq!(workers_needed(&[2, 2, 2], 4, false), 2);
        assert_eq!(workers_needed(&[2, 2, 2], 4, true), 2);
        assert_eq!(workers_needed(&[5], 4, false), 2, "larger than a worker: its slots' worth");
        assert_eq!(workers_needed(&[5, 3], 4, true), 2);
        assert_eq!(workers_needed(&[1, 1, 1], 0, false), 3, "a worker has at least one slot");
    }

    /// A stand-in for `weir worker`: names itself as a worker does, then sleeps.
    fn fake_worker(name: &str) -> LocalProcesses {
        let script = format!("echo \"weir worker {name}-$$ listening on 127.0.0.1:1\"; exec sleep 600");
        LocalProcesses::new("sh", ["-c".to_string(), script])
    }

    fn ids(workers: &LocalProcesses) -> Vec<Option<WorkerId>> {
        let children = workers.children.lock().unwrap();
        children.iter().map(LocalWorker::id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_processes_follow_the_count_stop_idle_ones_first_and_replace_a_killed_one() {
        let workers = fake_worker("w");
        let none = BTreeSet::new();
        assert_eq!(workers.name(), "local");
        assert_eq!(workers.scale_to(3, &none).await.unwrap(), 3);
        let pids = workers.pids();
        assert_eq!(pids.len(), 3);
        for pid in &pids {
            assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} runs");
        }
        for _ in 0..200 {
            if ids(&workers).iter().all(Option::is_some) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let named: Vec<WorkerId> = ids(&workers).into_iter().map(|id| id.expect("each named itself")).collect();
        assert_eq!(named[0], WorkerId(format!("w-{}", pids[0])), "the id from the first line");

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
        assert_eq!(workers.scale_to(3, &none).await.unwrap(), 3);
        assert!(!workers.pids().contains(&victim));

        // Down to one: the idle ones go, though the busy one is the newest.
        let before = workers.pids();
        for _ in 0..200 {
            if ids(&workers).iter().all(Option::is_some) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let newest = ids(&workers)[2].clone().expect("named");
        let busy = BTreeSet::from([newest]);
        assert_eq!(workers.scale_to(1, &busy).await.unwrap(), 1);
        assert_eq!(workers.pids(), vec![before[2]], "the busy one stays");
        for pid in &before[..2] {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} stopped");
        }
        // Down to none: busy or not.
        assert_eq!(workers.scale_to(0, &busy).await.unwrap(), 0);
        assert!(!std::path::Path::new(&format!("/proc/{}", before[2])).exists());

        let missing = LocalProcesses::new("/nonexistent/weir", ["worker"]);
        assert!(matches!(missing.scale_to(1, &none).await, Err(ProvisionError::Start { .. })));
    }
}
