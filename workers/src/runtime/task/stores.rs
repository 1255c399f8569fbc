//! Where a task's operators keep keyed state beyond their memory budgets: the task's
//! checkpoint database when it has one, else a scratch database of its own in a temporary
//! folder, opened the first time an operator writes state out and deleted with the task.

use weir_dataflow::ids::{AttemptNumber, JobId, SubtaskIndex, VertexId};
use weir_dataflow::keygroup::KeyGroupRange;
use weir_state_store::{KeyedStateBackend, OperatorId, StateLocation, StateOptions, StateStore, SubtaskStateId};

use weir_dataflow::graph::JobGraph;
use weir_dataflow::plan::StreamPlan;

use crate::error::{TaskError, TaskResult};
use crate::operators::keeps_budgeted_state;

/// The memory a task may use for keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMemory {
    /// Bytes shared by the working sets of the task's budgeted operators.
    pub operators: u64,
    /// The memtable size of the task's database (see `StateOptions::memtable_bytes`).
    pub memtable: usize,
}

/// The memory a process gives keyed state, Flink's managed memory: `taskmanager.memory.managed.size`
/// for `weir run`, `weir worker --managed-memory`. A quarter is the block cache the process's
/// databases share, a sixteenth their memtables (with those being written out, about twice that),
/// and five eighths the operators' working sets, shared
/// evenly by the tasks (a worker's slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagedMemory {
    pub bytes: u64,
}

/// Of managed memory, what Flink takes by default: `taskmanager.memory.managed.fraction`.
const DEFAULT_FRACTION: f64 = 0.4;

impl ManagedMemory {
    /// 40% of the machine's memory (or of the cgroup's limit, when lower), as Flink's default
    /// fraction; 1 GiB when neither can be read.
    pub fn machine_default() -> ManagedMemory {
        let total = physical_memory().unwrap_or(5 << 30 >> 1);
        ManagedMemory { bytes: (total as f64 * DEFAULT_FRACTION) as u64 }
    }

    /// The block cache all state databases of the process share.
    pub fn block_cache_bytes(&self) -> u64 {
        (self.bytes / 4).max(8 << 20)
    }

    /// What each of `tasks` tasks gets.
    pub fn per_task(&self, tasks: u64) -> TaskMemory {
        let tasks = tasks.max(1);
        let memtable = (self.bytes / 16 / tasks).clamp(1 << 20, 64 << 20);
        TaskMemory { operators: self.bytes / 8 * 5 / tasks, memtable: usize::try_from(memtable).unwrap_or(64 << 20) }
    }
}

/// How many tasks of `graph` keep state under a budget: a `weir run` process shares its
/// managed memory among them. With `per_slot`, how many one slot holds (a subtask of each such
/// vertex), among which a worker shares a slot's memory.
pub fn budgeted_tasks(plan: &StreamPlan, graph: &JobGraph, per_slot: bool) -> u64 {
    graph
        .vertices
        .iter()
        .filter(|v| v.chain.iter().any(|n| keeps_budgeted_state(&plan.nodes[*n].op)))
        .map(|v| if per_slot { 1 } else { u64::from(v.parallelism) })
        .sum()
}

/// The machine's memory, or its cgroup's limit when that is lower.
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let total = kib * 1024;
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|l| l.trim().parse::<u64>().ok());
    Some(limit.map_or(total, |l| l.min(total)))
}

pub(super) struct ChainStores {
    /// Per operator of the chain: its handle on the task's database, once there is one.
    per_op: Vec<Option<StateStore>>,
    /// The plan node of each operator: its id in the database.
    nodes: Vec<usize>,
    scratch: Option<Scratch>,
    vertex: VertexId,
    subtask: u32,
    max_parallelism: u32,
    memtable: Option<usize>,
}

struct Scratch {
    backend: KeyedStateBackend,
    _folder: tempfile::TempDir,
}

impl ChainStores {
    pub(super) fn new(
        nodes: Vec<usize>,
        vertex: VertexId,
        subtask: u32,
        max_parallelism: u32,
        memtable: Option<usize>,
    ) -> ChainStores {
        ChainStores {
            per_op: vec![None; nodes.len()],
            nodes,
            scratch: None,
            vertex,
            subtask,
            max_parallelism,
            memtable,
        }
    }

    /// The memtable size the task's databases take.
    pub(super) fn memtable(&self) -> Option<usize> {
        self.memtable
    }

    /// The task's checkpoint database: every operator's state goes there.
    pub(super) fn use_backend(&mut self, backend: &KeyedStateBackend) {
        for (store, node) in self.per_op.iter_mut().zip(&self.nodes) {
            *store = Some(backend.state_store(OperatorId(*node as u32)));
        }
    }

    /// Operator `at`'s handle, opening the scratch database if the task has none.
    pub(super) async fn store(&mut self, at: usize) -> TaskResult<&StateStore> {
        if self.per_op[at].is_none() {
            let folder = tempfile::Builder::new()
                .prefix("weir-state-")
                .tempdir()
                .map_err(|e| TaskError::Config(format!("cannot make a folder for state beyond memory: {e}")))?;
            let location = StateLocation::parse(&folder.path().to_string_lossy())?;
            let id = SubtaskStateId {
                job: JobId("scratch".into()),
                vertex: self.vertex,
                subtask: SubtaskIndex(self.subtask),
                attempt: AttemptNumber(0),
            };
            let options = StateOptions {
                max_parallelism: self.max_parallelism,
                working_set_capacity: 0,
                memtable_bytes: self.memtable,
                ..StateOptions::default()
            };
            let all = KeyGroupRange { start: 0, end: self.max_parallelism - 1 };
            let backend = KeyedStateBackend::open(&location, id, all, options).await?;
            tracing::debug!(vertex = %self.vertex, subtask = self.subtask, folder = %folder.path().display(),
                "keyed state goes beyond memory: opened a scratch database");
            self.use_backend(&backend);
            self.scratch = Some(Scratch { backend, _folder: folder });
        }
        Ok(self.per_op[at].as_ref().expect("set above"))
    }

    /// Closes the scratch database, if one was opened, and deletes its folder.
    pub(super) async fn close(&mut self) {
        if let Some(scratch) = self.scratch.take()
            && let Err(e) = scratch.backend.close().await
        {
            tracing::warn!(error = %e, "closing a scratch state database failed");
        }
    }
}
