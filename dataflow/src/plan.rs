//! The physical stream plan: what the SQL planner produces and the runtime executes.
//!
//! A plan is a DAG of [`PlanNode`]s in topological order. Each node is one streaming operator;
//! each input edge says how rows are distributed between the producer's and the consumer's
//! subtasks. [`crate::graph::JobGraph`] chains forward-connected nodes into vertices.
//!
//! Operators refer to input columns by index; the planner puts every expression an operator
//! needs (keys, aggregate arguments, filters) into columns with a [`OperatorSpec::Calc`] before
//! it, so stateful operators never evaluate SQL expressions themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion_physical_expr::PhysicalExpr;

use crate::event::Timestamp;

pub type NodeId = usize;
pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// How a producer's rows reach the consumer's subtasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i to subtask i; requires equal parallelism. Chains when possible.
    Forward,
    /// By the hash of these columns' values, through key groups.
    Hash(Vec<usize>),
    /// Round robin.
    Rebalance,
    /// Every row to every subtask.
    Broadcast,
    /// Everything to subtask 0.
    Global,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Forward => f.write_str("FORWARD"),
            Partitioning::Hash(cols) => write!(f, "HASH{cols:?}"),
            Partitioning::Rebalance => f.write_str("REBALANCE"),
            Partitioning::Broadcast => f.write_str("BROADCAST"),
            Partitioning::Global => f.write_str("GLOBAL"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PlanInput {
    pub node: NodeId,
    pub partitioning: Partitioning,
}

/// Whether a node's output may retract rows it emitted earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangelogMode {
    /// Only `+I`.
    Append,
    /// `+I`, `-U`, `+U`, `-D`.
    Retract,
}

#[derive(Clone)]
pub struct PlanNode {
    pub id: NodeId,
    pub op: OperatorSpec,
    pub inputs: Vec<PlanInput>,
    pub schema: SchemaRef,
    pub parallelism: u32,
    pub changelog: ChangelogMode,
    /// One line for `EXPLAIN`.
    pub description: String,
}

impl PlanNode {
    pub fn name(&self) -> &'static str {
        self.op.name()
    }
}

#[derive(Clone)]
pub struct StreamPlan {
    pub nodes: Vec<PlanNode>,
    pub max_parallelism: u32,
    /// `max_parallelism` was set (`pipeline.max-parallelism`), not derived from the parallelism:
    /// a derived one gives way to a restored checkpoint's, as in Flink.
    pub max_parallelism_configured: bool,
    /// Planned for batch execution (`execution.runtime-mode`): every source is bounded and
    /// aggregations emit final rows only.
    pub batch: bool,
}

/// Table options that name storage (the filesystem connector's `path`).
pub const TABLE_LOCATION_OPTIONS: &[&str] = &["path"];

impl StreamPlan {
    /// The storage locations the job's source and sink tables name ([`TABLE_LOCATION_OPTIONS`]).
    pub fn table_locations(&self) -> Vec<crate::config::NamedLocation> {
        let tables = self.nodes.iter().filter_map(|node| match &node.op {
            OperatorSpec::Source(source) => Some((&source.table, &source.options)),
            OperatorSpec::Sink(SinkSpec::Table { table, options, .. }) => Some((table, options)),
            _ => None,
        });
        let mut locations = Vec::new();
        for (table, options) in tables {
            for key in TABLE_LOCATION_OPTIONS {
                if let Some(value) = options.get(*key) {
                    let option = format!("table '{table}' option '{key}'");
                    let named = crate::config::NamedLocation { option, location: value.clone() };
                    if !locations.contains(&named) {
                        locations.push(named);
                    }
                }
            }
        }
        locations
    }

    /// Nodes that read the output of `id`.
    pub fn consumers(&self, id: NodeId) -> impl Iterator<Item = &PlanNode> {
        self.nodes.iter().filter(move |n| n.inputs.iter().any(|i| i.node == id))
    }

    /// A readable tree of the plan, sinks first.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let sinks: Vec<&PlanNode> = self.nodes.iter().filter(|n| self.consumers(n.id).next().is_none()).collect();
        for sink in sinks {
            self.explain_node(sink.id, 0, None, &mut out);
        }
        out
    }

    fn explain_node(&self, id: NodeId, depth: usize, partitioning: Option<&Partitioning>, out: &mut String) {
        let node = &self.nodes[id];
        let exchange = match partitioning {
            Some(Partitioning::Forward) | None => String::new(),
            Some(p) => format!(" <- {p}"),
        };
        let mode = if node.changelog == ChangelogMode::Retract { " [changelog]" } else { "" };
        out.push_str(&format!(
            "{}{}: {} (parallelism {}){mode}{exchange}\n",
            "  ".repeat(depth),
            node.name(),
            node.description,
            node.parallelism
        ));
        for input in &node.inputs {
            self.explain_node(input.node, depth + 1, Some(&input.partitioning), out);
        }
    }
}

/// Where rows come from.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub table: String,
    pub connector: String,
    pub options: BTreeMap<String, String>,
    /// Every physical column the table declares.
    pub physical_schema: SchemaRef,
    /// The physical columns this job reads, in output order; nested struct fields not read
    /// are pruned from the output schema.
    pub projection: Vec<usize>,
    /// `table.exec.source.idle-timeout`: a subtask with no rows for this long is marked idle,
    /// so that it does not hold back the watermark downstream.
    pub idle_timeout: Option<std::time::Duration>,
}

/// Where rows go.
#[derive(Clone, Debug)]
pub enum SinkSpec {
    /// The result of a bare `SELECT`, handed to the client (terminal, `--output` file).
    Collect,
    /// A table's connector.
    Table { table: String, connector: String, options: BTreeMap<String, String> },
}

/// Window assignment of a window TVF, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd)]
pub enum WindowKind {
    Tumble { size: i64, offset: i64 },
    Hop { size: i64, slide: i64, offset: i64 },
    Cumulate { step: i64, max_size: i64, offset: i64 },
    Session { gap: i64 },
}

impl WindowKind {
    /// The windows `[start, end)` a row at `ts` belongs to (not for sessions).
    pub fn assign(&self, ts: Timestamp, mut f: impl FnMut(Timestamp, Timestamp)) {
        match *self {
            WindowKind::Tumble { size, offset } => {
                let start = window_start(ts, offset, size);
                f(start, start + size);
            }
            WindowKind::Hop { size, slide, offset } => {
                let last_start = window_start(ts, offset, slide);
                let mut start = last_start;
                while start > ts - size {
                    f(start, start + size);
                    start -= slide;
                }
            }
            WindowKind::Cumulate { step, max_size, offset } => {
                let start = window_start(ts, offset, max_size);
                let mut end = window_start(ts, offset, step) + step;
                while end <= start + max_size {
                    f(start, end);
                    end += step;
                }
            }
            WindowKind::Session { gap } => f(ts, ts + gap),
        }
    }
}

/// Flink's `TimeWindow.getWindowStartWithOffset`.
pub fn window_start(ts: Timestamp, offset: i64, size: i64) -> Timestamp {
    let remainder = (ts - offset) % size;
    if remainder < 0 { ts - (remainder + size) } else { ts - remainder }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::Tumble { size, .. } => write!(f, "TUMBLE(size={size}ms)"),
            WindowKind::Hop { size, slide, .. } => write!(f, "HOP(size={size}ms, slide={slide}ms)"),
            WindowKind::Cumulate { step, max_size, .. } => write!(f, "CUMULATE(step={step}ms, max={max_size}ms)"),
            WindowKind::Session { gap } => write!(f, "SESSION(gap={gap}ms)"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    FirstValue,
    LastValue,
}

/// One aggregate call over pre-projected columns.
#[derive(Clone, Debug)]
pub struct AggregateCall {
    pub kind: AggKind,
    pub arg: Option<usize>,
    pub distinct: bool,
    /// A boolean column: only rows where it is true count (`FILTER (WHERE …)`).
    pub filter: Option<usize>,
    pub arg_type: DataType,
    pub output_type: DataType,
}

/// A column of a session aggregate's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionOutput {
    /// The i-th key column.
    Key(usize),
    WindowStart,
    WindowEnd,
    WindowTime,
    /// The i-th aggregate call.
    Aggregate(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

/// The time bounds of an interval join: rows match when
/// `lower <= left[left_time] - right[right_time] <= upper` (milliseconds). A row is kept only as
/// long as rows of the other side can still arrive in time to match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalBounds {
    pub left_time: usize,
    pub right_time: usize,
    pub lower: i64,
    pub upper: i64,
}

/// One key of an ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// The frame of an `OVER` window; it always ends at the current row. `None` is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverFrame {
    Rows {
        preceding: Option<u64>,
    },
    /// Milliseconds of event time before the current row's.
    Range {
        preceding: Option<i64>,
    },
}

#[derive(Clone, Debug)]
pub struct RankSpec {
    pub partition: Vec<usize>,
    pub order: Vec<SortKey>,
    pub limit: usize,
    /// Output the row number as a last column.
    pub rank_column: bool,
    /// Among rows equal in the order, the newest ranks first (deduplication keeping the last
    /// row); otherwise the oldest does.
    pub newest_first_on_ties: bool,
}

#[derive(Clone)]
pub enum OperatorSpec {
    Source(SourceSpec),
    /// Filter then project, by DataFusion physical expressions over whole batches.
    /// `exprs == None` keeps the input's columns.
    Calc {
        filter: Option<PhysExpr>,
        exprs: Option<Vec<PhysExpr>>,
    },
    /// Generates the watermark `max(expr)` over the rows seen so far and emits it after every
    /// batch that advances it.
    WatermarkAssigner {
        expr: PhysExpr,
        rowtime: usize,
    },
    /// Adds window_start, window_end, window_time to every row (copies a row per window).
    WindowAssign {
        window: WindowKind,
        time_col: usize,
    },
    /// Aggregation per key and event-time window, fired when the watermark passes the window's
    /// end. The keys include the window columns; output is keys then aggregates.
    WindowAggregate {
        keys: Vec<usize>,
        window_end: usize,
        aggs: Vec<AggregateCall>,
    },
    /// Session windows per key: rows of a key closer than `gap` form one session, emitted when
    /// the watermark passes its end. Output columns follow `output`.
    SessionAggregate {
        keys: Vec<usize>,
        time_col: usize,
        gap: i64,
        aggs: Vec<AggregateCall>,
        output: Vec<SessionOutput>,
    },
    /// Updating aggregation per key (`GROUP BY` without a window); output is keys then aggregates.
    /// With `final_only` (batch mode) it emits each key's final row when the input ends, and
    /// nothing before.
    GroupAggregate {
        keys: Vec<usize>,
        aggs: Vec<AggregateCall>,
        final_only: bool,
        /// How long a key's state lives after its last write (`table.exec.state.ttl`, processing
        /// time); `None`: forever.
        state_ttl: Option<Duration>,
    },
    /// A regular join on equal keys (input 0 is the left side). Each side's keys are columns of
    /// that side; only its first `widths[side]` columns are output. `filter` is evaluated over
    /// the output row.
    /// With `window_end` (the column on each side), a window join: both sides are window TVF
    /// results joined on their windows; a window's rows are dropped once the watermark passes
    /// its end, and rows for a closed window are late.
    Join {
        kind: JoinKind,
        left_keys: Vec<usize>,
        right_keys: Vec<usize>,
        widths: [usize; 2],
        filter: Option<PhysExpr>,
        window_end: Option<[usize; 2]>,
        /// An interval join: `lower <= left.time - right.time <= upper` on event-time columns.
        interval: Option<IntervalBounds>,
        /// A regular join: how long each side keeps a row after its last write
        /// (`table.exec.state.ttl`, processing time); `None`: forever. Window and interval joins
        /// drop rows by the watermark instead, and have none.
        state_ttl: [Option<Duration>; 2],
    },
    /// Top-N per partition (`ROW_NUMBER() … <= n`), updating; appends the row number when
    /// `rank_column`.
    Rank(RankSpec),
    /// Top-N per partition and window, emitted once when the window's end passes.
    WindowRank {
        rank: RankSpec,
        window_end: usize,
    },
    /// `OVER` aggregation ordered by the event-time column `time_col`; output is the first
    /// `width` input columns then one column per call.
    OverAggregate {
        partition: Vec<usize>,
        time_col: usize,
        frame: OverFrame,
        width: usize,
        aggs: Vec<AggregateCall>,
    },
    /// Merges its inputs.
    Union,
    Sink(SinkSpec),
}

impl OperatorSpec {
    pub fn name(&self) -> &'static str {
        match self {
            OperatorSpec::Source(_) => "Source",
            OperatorSpec::Calc { .. } => "Calc",
            OperatorSpec::WatermarkAssigner { .. } => "WatermarkAssigner",
            OperatorSpec::WindowAssign { .. } => "WindowTableFunction",
            OperatorSpec::WindowAggregate { .. } => "WindowAggregate",
            OperatorSpec::GroupAggregate { .. } => "GroupAggregate",
            OperatorSpec::SessionAggregate { .. } => "SessionWindowAggregate",
            OperatorSpec::Join { .. } => "Join",
            OperatorSpec::Rank(_) => "Rank",
            OperatorSpec::WindowRank { .. } => "WindowRank",
            OperatorSpec::OverAggregate { .. } => "OverAggregate",
            OperatorSpec::Union => "Union",
            OperatorSpec::Sink(_) => "Sink",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(kind: WindowKind, ts: i64) -> Vec<(i64, i64)> {
        let mut v = vec![];
        kind.assign(ts, |s, e| v.push((s, e)));
        v.sort();
        v
    }

    #[test]
    fn window_assignment() {
        assert_eq!(windows(WindowKind::Tumble { size: 10, offset: 0 }, 15), vec![(10, 20)]);
        assert_eq!(windows(WindowKind::Tumble { size: 10, offset: 0 }, -5), vec![(-10, 0)]);
        assert_eq!(windows(WindowKind::Hop { size: 10, slide: 5, offset: 0 }, 12), vec![(5, 15), (10, 20)]);
        assert_eq!(windows(WindowKind::Cumulate { step: 2, max_size: 6, offset: 0 }, 3), vec![(0, 4), (0, 6)]);
        assert_eq!(
            windows(WindowKind::Cumulate { step: 2, max_size: 6, offset: 0 }, 6),
            vec![(6, 8), (6, 10), (6, 12)]
        );
    }
}
