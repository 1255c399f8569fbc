//! Counters and live figures of a job's tasks: [`JobCounters`], shared by every task of a job,
//! and each task's [`TaskFigures`], which its task updates without a lock and which
//! [`JobCounters::vertex_figures`] sums per vertex for progress, `--stats-json` and the API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_dataflow::event::{MIN_WATERMARK, Timestamp};
use weir_dataflow::graph::JobGraph;
use weir_dataflow::ids::VertexId;

/// Counters shared by all tasks of a job, read by the client for progress and metrics.
#[derive(Debug, Default)]
pub struct JobCounters {
    pub source_rows: AtomicU64,
    pub late_records_dropped: AtomicU64,
    pub output_rows: AtomicU64,
    /// Malformed records skipped under `*.ignore-parse-errors`.
    pub records_skipped: AtomicU64,
    /// The most tasks running at once (a batch job run stage by stage needs fewer).
    pub peak_running_tasks: AtomicU64,
    /// Every task's live figures, in the order the tasks were built.
    tasks: Mutex<Vec<Arc<TaskFigures>>>,
}

/// One subtask's live figures: its task updates them (relaxed atomics, no lock), and whoever
/// reports the job's figures reads them.
#[derive(Debug)]
pub struct TaskFigures {
    vertex: VertexId,
    /// Rows into the head of the chain (a source's: rows its connector read).
    pub(super) records_in: AtomicU64,
    /// Rows out of the tail of the chain, to the vertex's outputs.
    pub(super) records_out: AtomicU64,
    /// The newest watermark the task received or emitted; `MIN_WATERMARK` while it has none.
    pub(super) watermark: AtomicI64,
    /// Nanoseconds spent in sends to the outputs: waiting for downstream credit, mostly.
    pub(super) blocked_nanos: AtomicU64,
    /// Nanoseconds spent waiting for input (a source: for its next row to be due).
    pub(super) idle_nanos: AtomicU64,
    /// A source's records waiting to be read, as it last said; [`UNKNOWN`] when it cannot say.
    backlog: AtomicU64,
    started: Instant,
}

/// A backlog not known.
const UNKNOWN: u64 = u64::MAX;

/// A vertex's live figures, over its subtasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VertexFigures {
    pub records_in: u64,
    pub records_out: u64,
    /// The lowest watermark of its subtasks; `None` while one has none.
    pub watermark: Option<Timestamp>,
    /// The highest share of wall time a subtask spent blocked sending (0.0 – 1.0), since it
    /// started; `None` for a vertex without outputs.
    pub backpressure: Option<f64>,
    /// Milliseconds its subtasks were busy since they started (wall time less idle and
    /// blocked), summed.
    pub busy_ms: u64,
    /// A source's records waiting to be read, summed over the subtasks that know theirs.
    pub backlog: Option<u64>,
}

impl TaskFigures {
    /// Adds time spent waiting for input.
    pub(super) fn add_idle(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.idle_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A source's records waiting to be read (files not yet read, a queue's depth).
    pub(super) fn set_backlog(&self, backlog: Option<u64>) {
        self.backlog.store(backlog.map_or(UNKNOWN, |b| b.min(UNKNOWN - 1)), Ordering::Relaxed);
    }

    fn busy_ms(&self) -> u64 {
        let waited = self.idle_nanos.load(Ordering::Relaxed).saturating_add(self.blocked_nanos.load(Ordering::Relaxed));
        let alive = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        alive.saturating_sub(waited) / 1_000_000
    }
}

impl JobCounters {
    /// Figures for a new task of `vertex`; a region run again adds new ones.
    pub(super) fn task_figures(&self, vertex: VertexId) -> Arc<TaskFigures> {
        let figures = Arc::new(TaskFigures {
            vertex,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: AtomicI64::new(MIN_WATERMARK),
            blocked_nanos: AtomicU64::new(0),
            idle_nanos: AtomicU64::new(0),
            backlog: AtomicU64::new(UNKNOWN),
            started: Instant::now(),
        });
        self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(figures.clone());
        figures
    }

    /// Live figures per vertex, over its subtasks running or finished (the latest deployment of
    /// each: a region run again replaces its tasks' figures).
    pub fn vertex_figures(&self, graph: &JobGraph) -> BTreeMap<VertexId, VertexFigures> {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut by_vertex: BTreeMap<VertexId, Vec<&TaskFigures>> = Default::default();
        for task in tasks.iter() {
            by_vertex.entry(task.vertex).or_default().push(task);
        }
        let mut figures = BTreeMap::new();
        for vertex in &graph.vertices {
            let Some(all) = by_vertex.get(&vertex.id) else { continue };
            // The newest task of each subtask index: the last `parallelism` built.
            let latest = &all[all.len().saturating_sub(vertex.parallelism as usize)..];
            let watermarks: Vec<Timestamp> = latest.iter().map(|t| t.watermark.load(Ordering::Relaxed)).collect();
            let has_outputs = !vertex.outputs.is_empty();
            figures.insert(
                vertex.id,
                VertexFigures {
                    records_in: latest.iter().map(|t| t.records_in.load(Ordering::Relaxed)).sum(),
                    records_out: latest.iter().map(|t| t.records_out.load(Ordering::Relaxed)).sum(),
                    busy_ms: latest.iter().map(|t| t.busy_ms()).sum(),
                    backlog: latest
                        .iter()
                        .map(|t| t.backlog.load(Ordering::Relaxed))
                        .filter(|b| *b != UNKNOWN)
                        .reduce(u64::saturating_add),
                    watermark: watermarks.iter().min().copied().filter(|w| *w > MIN_WATERMARK),
                    backpressure: has_outputs.then(|| {
                        latest
                            .iter()
                            .map(|t| {
                                let blocked = Duration::from_nanos(t.blocked_nanos.load(Ordering::Relaxed));
                                (blocked.as_secs_f64() / t.started.elapsed().as_secs_f64().max(1e-9)).min(1.0)
                            })
                            .fold(0.0, f64::max)
                    }),
                },
            );
        }
        figures
    }
}
