//! Translates DataFusion's optimized logical plan into Weir's physical stream plan.
//!
//! Along the way it tracks what DataFusion does not: which columns are event-time attributes
//! (rowtime), which columns are the `window_start`/`window_end` of a window TVF, and whether a
//! stream is append-only or a changelog. Those decide which streaming operator a logical node
//! becomes (a `GROUP BY window_start, window_end, …` is a window aggregation, fired by the
//! watermark; any other `GROUP BY` an updating aggregation).

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion_common::{Column, DFSchema, DFSchemaRef, Result, not_impl_err, plan_err};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::expr::AggregateFunction;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, cast};
use datafusion_physical_expr::create_physical_expr;

use super::catalog::{Catalog, PhysicalScan, TableEntry};
use super::context::flink_aggregate_type;
use super::hints::StateTtlHints;
use super::nodes::{WatermarkNode, WindowTvfNode};
use crate::config::{JobConfig, RuntimeMode};
use crate::plan::{
    AggKind, AggregateCall, ChangelogMode, IntervalBounds, JoinKind, NodeId, OperatorSpec, OverFrame, Partitioning,
    PhysExpr, PlanInput, PlanNode, RankSpec, SessionOutput, SinkSpec, SortKey, SourceSpec, StreamPlan, WindowKind,
};

/// Where a query's rows go.
#[derive(Clone, Debug)]
pub enum SinkTarget {
    Collect,
    Table(Arc<TableEntry>),
}

/// The window columns of a stream produced by a window TVF.
#[derive(Clone, Copy, Debug)]
struct WindowColumns {
    start: usize,
    end: usize,
    time: Option<usize>,
}

/// A translated logical node: the physical node producing it plus the stream properties.
#[derive(Clone, Debug)]
struct Stream {
    node: NodeId,
    schema: DFSchemaRef,
    /// Per column: is it an event-time attribute?
    rowtime: Vec<bool>,
    window: Option<WindowColumns>,
    /// A SESSION window TVF not yet applied: its window columns are placeholders until the
    /// aggregation above assigns sessions.
    session: Option<SessionWindow>,
    changelog: ChangelogMode,
    parallelism: u32,
}

#[derive(Clone, Copy, Debug)]
struct SessionWindow {
    gap: i64,
}

pub struct Translator<'a> {
    catalog: &'a Catalog,
    config: &'a JobConfig,
    nodes: Vec<PlanNode>,
    props: ExecutionProps,
    /// Per table: the columns all of its scans read, and the one source node reading them.
    /// A table read several times (a self-join, two views of one table) is read once.
    sources: std::collections::HashMap<String, (Vec<usize>, Option<NodeId>)>,
    /// The job runs in batch mode (`execution.runtime-mode`): aggregations emit final rows.
    batch: bool,
    /// The `STATE_TTL` hints of the query being translated.
    hints: StateTtlHints,
}

impl<'a> Translator<'a> {
    pub fn new(catalog: &'a Catalog, config: &'a JobConfig) -> Self {
        Translator {
            catalog,
            config,
            nodes: Vec::new(),
            props: ExecutionProps::new(),
            sources: Default::default(),
            batch: false,
            hints: StateTtlHints::default(),
        }
    }

    /// Notes every table scan of the plans about to be added, so that each table gets one
    /// source reading the union of the columns its scans need.
    pub fn prepare<'p>(&mut self, plans: impl IntoIterator<Item = &'p LogicalPlan>) {
        use datafusion_common::tree_node::TreeNodeRecursion;
        for plan in plans {
            let _ = plan.apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node
                    && let Some(physical) = scan.source.downcast_ref::<PhysicalScan>()
                {
                    let all: Vec<usize> = (0..physical.schema.fields().len()).collect();
                    let wanted = scan.projection.clone().unwrap_or(all);
                    let entry = self.sources.entry(physical.table.clone()).or_default();
                    entry.0.extend(wanted);
                    entry.0.sort_unstable();
                    entry.0.dedup();
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        let bounded = self.sources.keys().all(|table| {
            self.catalog.table(table).is_some_and(|entry| super::connectors::is_bounded(&entry.def.options))
        });
        self.batch = match self.config.runtime_mode() {
            RuntimeMode::Streaming => false,
            // An unbounded source in batch mode is refused where its scan is translated.
            RuntimeMode::Batch => true,
            RuntimeMode::Automatic => bounded,
        };
    }

    pub fn finish(self) -> StreamPlan {
        StreamPlan {
            nodes: self.nodes,
            max_parallelism: self.config.max_parallelism(),
            max_parallelism_configured: self.config.configured_max_parallelism.is_some(),
            batch: self.batch,
        }
    }

    /// Adds the operators of the query `plan` writing to `target`, `hints` (its `STATE_TTL`
    /// hints) applied; a hinted name that no join or aggregation reads is an error.
    pub fn add_sink(&mut self, plan: &LogicalPlan, target: SinkTarget, hints: StateTtlHints) -> Result<()> {
        self.hints = hints;
        let stream = self.translate(plan)?;
        std::mem::take(&mut self.hints).check_all_used().map_err(datafusion_common::DataFusionError::Plan)?;
        match target {
            SinkTarget::Collect => {
                let arrow = arrow_schema(&stream.schema);
                self.add(
                    OperatorSpec::Sink(SinkSpec::Collect),
                    vec![PlanInput { node: stream.node, partitioning: Partitioning::Global }],
                    arrow,
                    1,
                    stream.changelog,
                    "collect".into(),
                );
            }
            SinkTarget::Table(entry) => {
                let table_schema = entry.physical_schema.clone();
                if table_schema.fields().len() != stream.schema.fields().len() {
                    return plan_err!(
                        "INSERT INTO {}: the query produces {} columns but the table has {}",
                        entry.def.name,
                        stream.schema.fields().len(),
                        table_schema.fields().len()
                    );
                }
                let mut input = stream.clone();
                let needs_cast = table_schema
                    .fields()
                    .iter()
                    .zip(stream.schema.fields())
                    .any(|(t, q)| t.data_type() != q.data_type());
                if needs_cast {
                    let exprs = table_schema
                        .fields()
                        .iter()
                        .zip(stream.schema.columns())
                        .map(|(target, column)| {
                            cast(Expr::Column(column), target.data_type().clone()).alias(target.name())
                        })
                        .collect::<Vec<_>>();
                    input = self.calc(&stream, None, Some(exprs))?;
                }
                let parallelism = input.parallelism;
                self.add(
                    OperatorSpec::Sink(SinkSpec::Table {
                        table: entry.def.name.clone(),
                        connector: entry.def.options.get("connector").cloned().unwrap_or_default(),
                        options: entry.def.options.clone(),
                    }),
                    vec![PlanInput { node: input.node, partitioning: Partitioning::Forward }],
                    table_schema,
                    parallelism,
                    stream.changelog,
                    format!("table={}", entry.def.name),
                );
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        op: OperatorSpec,
        inputs: Vec<PlanInput>,
        schema: SchemaRef,
        parallelism: u32,
        changelog: ChangelogMode,
        description: String,
    ) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(PlanNode { id, op, inputs, schema, parallelism, changelog, description });
        id
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<PhysExpr> {
        use datafusion_common::tree_node::TreeNode;
        let subquery = expr.exists(|e| {
            Ok(matches!(e, Expr::InSubquery(_) | Expr::Exists(_) | Expr::ScalarSubquery(_) | Expr::SetComparison(_)))
        })?;
        if subquery {
            return not_impl_err!(
                "subqueries inside expressions (IN (SELECT …), EXISTS, a scalar subquery) are not supported yet; \
                 write them as a JOIN"
            );
        }
        // The optimizer rebuilds conjunctions left-deep; the workers evaluate them recursively.
        let expr = balance_long_chains(expr.clone())?;
        create_physical_expr(&expr, schema, &self.props, &PhysicalPlanningContext::default())
    }

    fn translate(&mut self, plan: &LogicalPlan) -> Result<Stream> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let Some(physical) = scan.source.downcast_ref::<PhysicalScan>() else {
                    return plan_err!("cannot read table {}: it is not a table of this script", scan.table_name);
                };
                let wanted = scan.projection.clone().unwrap_or_else(|| (0..physical.schema.fields().len()).collect());
                let (union, shared) = self.sources.get(&physical.table).cloned().unwrap_or_default();
                let union = if union.is_empty() { wanted.clone() } else { union };
                let source = match shared {
                    Some(node) => node,
                    None => {
                        let node = self.source_node(physical, &union)?;
                        self.sources.insert(physical.table.clone(), (union.clone(), Some(node)));
                        node
                    }
                };
                let parallelism = self.nodes[source].parallelism;
                let node = if union == wanted {
                    source
                } else {
                    // This scan's columns out of the shared source's.
                    let exprs: Vec<PhysExpr> = wanted
                        .iter()
                        .map(|c| {
                            let at = union.iter().position(|u| u == c).expect("the union holds every scan's columns");
                            Arc::new(datafusion_physical_expr::expressions::Column::new(
                                physical.schema.field(*c).name(),
                                at,
                            )) as PhysExpr
                        })
                        .collect();
                    self.add(
                        OperatorSpec::Calc { filter: None, exprs: Some(exprs) },
                        vec![PlanInput { node: source, partitioning: Partitioning::Forward }],
                        arrow_schema(&scan.projected_schema),
                        parallelism,
                        ChangelogMode::Append,
                        format!(
                            "select={:?}",
                            wanted.iter().map(|c| physical.schema.field(*c).name()).collect::<Vec<_>>()
                        ),
                    )
                };
                Ok(Stream {
                    node,
                    schema: scan.projected_schema.clone(),
                    rowtime: vec![false; scan.projected_schema.fields().len()],
                    window: None,
                    session: None,
                    changelog: ChangelogMode::Append,
                    parallelism,
                })
            }
            LogicalPlan::Projection(p) => {
                let (input, filter) = match p.input.as_ref() {
                    LogicalPlan::Filter(f) => match self.try_rank(f)? {
                        Some(ranked) => (ranked, None),
                        None => (self.translate(&f.input)?, Some(f.predicate.clone())),
                    },
                    other => (self.translate(other)?, None),
                };
                let mut out = self.calc(&input, filter, Some(p.expr.clone()))?;
                out.schema = p.schema.clone();
                Ok(out)
            }
            LogicalPlan::Filter(f) => {
                if let Some(ranked) = self.try_rank(f)? {
                    return Ok(ranked);
                }
                let input = self.translate(&f.input)?;
                self.calc(&input, Some(f.predicate.clone()), None)
            }
            LogicalPlan::Join(j) => self.join(j),
            LogicalPlan::Window(w) => self.over(w),
            LogicalPlan::SubqueryAlias(a) => {
                let mut s = self.translate(&a.input)?;
                s.schema = a.schema.clone();
                Ok(s)
            }
            LogicalPlan::Extension(ext) => {
                if let Some(wm) = ext.node.as_any().downcast_ref::<WatermarkNode>() {
                    let input = self.translate(&wm.input)?;
                    if input.changelog == ChangelogMode::Retract {
                        return not_impl_err!("watermarks on a changelog stream");
                    }
                    let expr = self.physical(&wm.expr, wm.input.schema())?;
                    let node = self.add(
                        OperatorSpec::WatermarkAssigner { expr, rowtime: wm.rowtime },
                        vec![PlanInput { node: input.node, partitioning: Partitioning::Forward }],
                        arrow_schema(&input.schema),
                        input.parallelism,
                        ChangelogMode::Append,
                        format!("rowtime={}, watermark={}", wm.input.schema().field(wm.rowtime).name(), wm.expr),
                    );
                    let mut rowtime = input.rowtime.clone();
                    rowtime[wm.rowtime] = true;
                    return Ok(Stream { node, rowtime, session: None, ..input });
                }
                if let Some(tvf) = ext.node.as_any().downcast_ref::<WindowTvfNode>() {
                    return self.window_tvf(tvf);
                }
                not_impl_err!("unsupported plan node {}", ext.node.name())
            }
            LogicalPlan::Aggregate(agg) => self.aggregate(agg),
            LogicalPlan::Union(u) => {
                // Unions of unions (a long UNION ALL, planned as a balanced tree) are one union
                // of all their branches.
                let mut branches = Vec::with_capacity(u.inputs.len());
                let mut pending: Vec<&LogicalPlan> = u.inputs.iter().rev().map(|i| i.as_ref()).collect();
                while let Some(next) = pending.pop() {
                    match next {
                        LogicalPlan::Union(inner) => pending.extend(inner.inputs.iter().rev().map(|i| i.as_ref())),
                        branch => branches.push(branch),
                    }
                }
                let inputs = branches.into_iter().map(|i| self.translate(i)).collect::<Result<Vec<_>>>()?;
                let parallelism = self.config.parallelism;
                let changelog = if inputs.iter().any(|i| i.changelog == ChangelogMode::Retract) {
                    ChangelogMode::Retract
                } else {
                    ChangelogMode::Append
                };
                let width = u.schema.fields().len();
                let rowtime = (0..width).map(|c| inputs.iter().all(|i| i.rowtime[c])).collect();
                let plan_inputs = inputs
                    .iter()
                    .map(|i| PlanInput {
                        node: i.node,
                        partitioning: if i.parallelism == parallelism {
                            Partitioning::Forward
                        } else {
                            Partitioning::Rebalance
                        },
                    })
                    .collect();
                let node = self.add(
                    OperatorSpec::Union,
                    plan_inputs,
                    arrow_schema(&u.schema),
                    parallelism,
                    changelog,
                    "all".into(),
                );
                Ok(Stream {
                    node,
                    schema: u.schema.clone(),
                    rowtime,
                    window: None,
                    session: None,
                    changelog,
                    parallelism,
                })
            }
            other => not_impl_err!("{} is not supported in a streaming query yet", describe(other)),
        }
    }

    /// The source of a table, reading the physical columns `projection`.
    fn source_node(&mut self, physical: &PhysicalScan, projection: &[usize]) -> Result<NodeId> {
        let entry = self
            .catalog
            .table(&physical.table)
            .ok_or_else(|| datafusion_common::plan_datafusion_err!("unknown table {}", physical.table))?;
        if self.batch && !super::connectors::is_bounded(&entry.def.options) {
            return plan_err!(
                "execution.runtime-mode is BATCH but table '{}' is unbounded; a batch job reads files or \
                 generators with 'number-of-rows' / 'events.num'",
                physical.table
            );
        }
        let schema = Arc::new(physical.schema.project(projection)?);
        let connector = entry.def.options.get("connector").cloned().unwrap_or_default();
        let description = format!(
            "table={}, connector={connector}, fields=[{}]",
            physical.table,
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        );
        Ok(self.add(
            OperatorSpec::Source(SourceSpec {
                table: physical.table.clone(),
                connector,
                options: entry.def.options.clone(),
                physical_schema: entry.physical_schema.clone(),
                projection: projection.to_vec(),
                idle_timeout: self.config.idle_timeout,
            }),
            vec![],
            schema,
            self.config.parallelism,
            ChangelogMode::Append,
            description,
        ))
    }

    /// A stateless filter and/or projection; keeps time attributes and window columns that
    /// pass through as plain column references.
    fn calc(&mut self, input: &Stream, filter: Option<Expr>, exprs: Option<Vec<Expr>>) -> Result<Stream> {
        let filter_phys = filter.as_ref().map(|f| self.physical(f, &input.schema)).transpose()?;
        let (schema, rowtime, window, exprs_phys) = match &exprs {
            None => (input.schema.clone(), input.rowtime.clone(), input.window, None),
            Some(exprs) => {
                let fields = exprs.iter().map(|e| e.to_field(&input.schema)).collect::<Result<Vec<_>>>()?;
                let schema = Arc::new(DFSchema::new_with_metadata(fields, input.schema.metadata().clone())?);
                let sources: Vec<Option<usize>> = exprs.iter().map(|e| column_source(e, &input.schema)).collect();
                let rowtime = sources.iter().map(|s| s.is_some_and(|i| input.rowtime[i])).collect();
                let window = input.window.and_then(|w| {
                    let find = |col: usize| sources.iter().position(|s| *s == Some(col));
                    Some(WindowColumns { start: find(w.start)?, end: find(w.end)?, time: w.time.and_then(find) })
                });
                let phys = exprs.iter().map(|e| self.physical(e, &input.schema)).collect::<Result<Vec<_>>>()?;
                (schema, rowtime, window, Some(phys))
            }
        };
        let mut description = String::new();
        if let Some(f) = &filter {
            description.push_str(&format!("where={f}"));
        }
        if let Some(e) = &exprs {
            if !description.is_empty() {
                description.push_str(", ");
            }
            description
                .push_str(&format!("select=[{}]", e.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")));
        }
        let node = self.add(
            OperatorSpec::Calc { filter: filter_phys, exprs: exprs_phys },
            vec![PlanInput { node: input.node, partitioning: Partitioning::Forward }],
            arrow_schema(&schema),
            input.parallelism,
            input.changelog,
            description,
        );
        // A pending session window survives as long as its placeholder columns do.
        let session = input.session.filter(|_| window.is_some());
        Ok(Stream {
            node,
            schema,
            rowtime,
            window,
            session,
            changelog: input.changelog,
            parallelism: input.parallelism,
        })
    }

    fn window_tvf(&mut self, tvf: &WindowTvfNode) -> Result<Stream> {
        let input = self.translate(&tvf.input)?;
        if !input.rowtime[tvf.time_col] {
            return plan_err!(
                "the time column '{}' of a window function must be an event-time attribute (a column with a WATERMARK)",
                tvf.input.schema().field(tvf.time_col).name()
            );
        }
        if input.changelog == ChangelogMode::Retract {
            return not_impl_err!("window functions over a changelog (updating) stream");
        }
        if let WindowKind::Session { gap } = tvf.window {
            // Sessions are assigned by the aggregation; until then each window column holds the
            // row's event time, which the aggregation reads from `window_start` (the time
            // column itself may be pruned away before it).
            let time = Expr::Column(tvf.input.schema().columns()[tvf.time_col].clone());
            let mut exprs: Vec<Expr> = tvf.input.schema().columns().into_iter().map(Expr::Column).collect();
            for name in [super::nodes::WINDOW_START, super::nodes::WINDOW_END, super::nodes::WINDOW_TIME] {
                exprs.push(cast(time.clone(), crate::sql::types::TIMESTAMP_TYPE).alias(name));
            }
            let mut stream = self.calc(&input, None, Some(exprs))?;
            let width = tvf.input_width();
            stream.schema = tvf.schema.clone();
            stream.rowtime = input.rowtime.clone();
            stream.rowtime.extend([false, false, true]);
            stream.window = Some(WindowColumns { start: width, end: width + 1, time: Some(width + 2) });
            stream.session = Some(SessionWindow { gap });
            return Ok(stream);
        }
        let width = tvf.input_width();
        let node = self.add(
            OperatorSpec::WindowAssign { window: tvf.window, time_col: tvf.time_col },
            vec![PlanInput { node: input.node, partitioning: Partitioning::Forward }],
            arrow_schema(&tvf.schema),
            input.parallelism,
            ChangelogMode::Append,
            format!("{} on {}", tvf.window, tvf.input.schema().field(tvf.time_col).name()),
        );
        let mut rowtime = input.rowtime.clone();
        rowtime.extend([false, false, true]);
        Ok(Stream {
            node,
            schema: tvf.schema.clone(),
            rowtime,
            window: Some(WindowColumns { start: width, end: width + 1, time: Some(width + 2) }),
            session: None,
            changelog: ChangelogMode::Append,
            parallelism: input.parallelism,
        })
    }

    fn aggregate(&mut self, agg: &Aggregate) -> Result<Stream> {
        let input = self.translate(&agg.input)?;
        let input_schema = agg.input.schema();
        // Pre-project keys, aggregate arguments and filters into columns.
        let mut pre: Vec<Expr> = Vec::new();
        for (i, g) in agg.group_expr.iter().enumerate() {
            pre.push(g.clone().alias(format!("__key{i}")));
        }
        let mut calls = Vec::new();
        for (i, a) in agg.aggr_expr.iter().enumerate() {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(a) else {
                return not_impl_err!("unsupported aggregate expression {a}");
            };
            if !params.order_by.is_empty() {
                return not_impl_err!("ORDER BY inside an aggregate call");
            }
            let name = func.name().to_lowercase();
            let (kind, arg) = match (name.as_str(), params.args.as_slice()) {
                ("count", []) => (AggKind::CountStar, None),
                #[expect(deprecated, reason = "COUNT(*) still reaches the plan as a wildcard")]
                ("count", [Expr::Wildcard { .. }]) => (AggKind::CountStar, None),
                ("count", [Expr::Literal(v, _)]) if !v.is_null() && !params.distinct => (AggKind::CountStar, None),
                ("count", [arg]) => (AggKind::Count, Some(arg)),
                ("sum" | "sum0", [arg]) => (AggKind::Sum, Some(arg)),
                ("min", [arg]) => (AggKind::Min, Some(arg)),
                ("max", [arg]) => (AggKind::Max, Some(arg)),
                ("avg", [arg]) => (AggKind::Avg, Some(arg)),
                ("first_value", [arg]) => (AggKind::FirstValue, Some(arg)),
                ("last_value", [arg]) => (AggKind::LastValue, Some(arg)),
                _ => return not_impl_err!("aggregate {a} is not supported"),
            };
            let arg_col = match arg {
                Some(arg) => {
                    pre.push(arg.clone().alias(format!("__arg{i}")));
                    Some(pre.len() - 1)
                }
                None => None,
            };
            let arg_type = match arg {
                Some(arg) => arg.get_type(input_schema)?,
                None => DataType::Int64,
            };
            let filter_col = match &params.filter {
                Some(f) => {
                    pre.push(f.as_ref().clone().alias(format!("__filter{i}")));
                    Some(pre.len() - 1)
                }
                None => None,
            };
            let output_type = flink_aggregate_type(&name, arg.map(|_| &arg_type))?;
            calls.push(AggregateCall {
                kind,
                arg: arg_col,
                distinct: params.distinct,
                filter: filter_col,
                arg_type,
                output_type,
            });
        }
        if let Some(session) = input.session {
            return self.session_aggregate(agg, &input, session, pre, calls);
        }
        let projected = self.calc(&input, None, Some(pre))?;
        let group_count = agg.group_expr.len();
        let keys: Vec<usize> = (0..group_count).collect();
        let out_schema = agg.schema.clone();
        // Output types must be the aggregate node's; Flink's types are what the node declares.
        let arrow_out = arrow_schema(&out_schema);
        for (call, field) in calls.iter().zip(arrow_out.fields().iter().skip(group_count)) {
            if &call.output_type != field.data_type() {
                return plan_err!(
                    "internal: aggregate type {} differs from the planned {}",
                    call.output_type,
                    field.data_type()
                );
            }
        }
        let description = format!(
            "groupBy=[{}], select=[{}]",
            agg.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            agg.aggr_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
        );

        let window = projected.window.filter(|w| w.start < group_count && w.end < group_count);
        if let Some(w) = window {
            if input.changelog == ChangelogMode::Retract {
                return not_impl_err!("window aggregation over a changelog (updating) stream");
            }
            let partition_keys: Vec<usize> =
                keys.iter().copied().filter(|k| *k != w.start && *k != w.end && Some(*k) != w.time).collect();
            let (partitioning, parallelism) = self.keyed(partition_keys);
            let node = self.add(
                OperatorSpec::WindowAggregate { keys: keys.clone(), window_end: w.end, aggs: calls },
                vec![PlanInput { node: projected.node, partitioning }],
                arrow_out,
                parallelism,
                ChangelogMode::Append,
                description,
            );
            let mut rowtime = vec![false; out_schema.fields().len()];
            if let Some(t) = w.time {
                rowtime[t] = true;
            }
            return Ok(Stream {
                node,
                schema: out_schema,
                rowtime,
                window: Some(w),
                session: None,
                changelog: ChangelogMode::Append,
                parallelism,
            });
        }
        let (partitioning, parallelism) = self.keyed(keys.clone());
        // In batch mode the result is final once the input has ended: insert-only, as Flink's
        // batch aggregation.
        let final_only = self.batch;
        let changelog = if final_only { ChangelogMode::Append } else { ChangelogMode::Retract };
        // A batch aggregation's state lives as long as its input: no TTL.
        let hinted = self.hints.for_input(&input_names(&agg.input));
        let state_ttl = hinted.unwrap_or(self.config.state_ttl).filter(|_| !final_only);
        let description = match state_ttl {
            Some(ttl) => format!("{description}, stateTtl=[{}]", duration_text(ttl)),
            None => description,
        };
        let node = self.add(
            OperatorSpec::GroupAggregate { keys, aggs: calls, final_only, state_ttl },
            vec![PlanInput { node: projected.node, partitioning }],
            arrow_out,
            parallelism,
            changelog,
            description,
        );
        Ok(Stream {
            node,
            schema: out_schema.clone(),
            rowtime: vec![false; out_schema.fields().len()],
            window: None,
            session: None,
            changelog,
            parallelism,
        })
    }

    fn join(&mut self, j: &datafusion_expr::logical_plan::Join) -> Result<Stream> {
        use datafusion_common::JoinType;
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => return not_impl_err!("{other} joins (from IN / EXISTS subqueries) are not supported yet"),
        };
        let left = self.translate(&j.left)?;
        let right = self.translate(&j.right)?;
        let widths = [left.schema.fields().len(), right.schema.fields().len()];
        let (left, left_keys) = self.key_columns(left, j.on.iter().map(|(l, _)| l))?;
        let (right, right_keys) = self.key_columns(right, j.on.iter().map(|(_, r)| r))?;
        let filter = j.filter.as_ref().map(|f| self.physical(f, &j.schema)).transpose()?;
        let changelog = if kind != JoinKind::Inner
            || left.changelog == ChangelogMode::Retract
            || right.changelog == ChangelogMode::Retract
        {
            ChangelogMode::Retract
        } else {
            ChangelogMode::Append
        };
        // Inner joins of two window TVF results on both window bounds are window joins.
        let window_end = match (kind, left.window, right.window) {
            (JoinKind::Inner, Some(lw), Some(rw)) => {
                let pairs: Vec<(usize, usize)> = left_keys.iter().copied().zip(right_keys.iter().copied()).collect();
                (pairs.contains(&(lw.start, rw.start)) && pairs.contains(&(lw.end, rw.end))).then_some([lw.end, rw.end])
            }
            _ => None,
        };
        let interval = match (&j.filter, window_end) {
            (Some(f), None) => interval_bounds(f, &j.schema, widths[0], &left.rowtime, &right.rowtime),
            _ => None,
        };
        let (lp, parallelism) = self.keyed(left_keys.clone());
        let (rp, _) = self.keyed(right_keys.clone());
        // Only a regular join keeps rows for as long as rows of the other side may come; a
        // STATE_TTL hint naming a side sets that side's.
        let regular = window_end.is_none() && interval.is_none();
        let state_ttl = [&j.left, &j.right].map(|side| {
            let hinted = if regular { self.hints.for_input(&input_names(side)) } else { None };
            hinted.unwrap_or(self.config.state_ttl).filter(|_| regular)
        });
        let description = format!(
            "{}{kind:?}, on=[{}]{}{}",
            if window_end.is_some() {
                "window "
            } else if interval.is_some() {
                "interval "
            } else {
                ""
            },
            j.on.iter().map(|(l, r)| format!("{l} = {r}")).collect::<Vec<_>>().join(", "),
            j.filter.as_ref().map(|f| format!(", where={f}")).unwrap_or_default(),
            ["left", "right"]
                .into_iter()
                .zip(state_ttl)
                .filter_map(|(side, ttl)| Some(format!(", {side}StateTtl=[{}]", duration_text(ttl?))))
                .collect::<String>()
        );
        let node = self.add(
            OperatorSpec::Join { kind, left_keys, right_keys, widths, filter, window_end, interval, state_ttl },
            vec![PlanInput { node: left.node, partitioning: lp }, PlanInput { node: right.node, partitioning: rp }],
            arrow_schema(&j.schema),
            parallelism,
            changelog,
            description,
        );
        // A regular join's output is not ordered by time: its time columns are plain values. A
        // window join's output keeps the left side's window columns.
        let window = window_end.and(left.window);
        let mut rowtime = vec![false; j.schema.fields().len()];
        if let Some(t) = window.and_then(|w| w.time) {
            rowtime[t] = true;
        }
        Ok(Stream { node, schema: j.schema.clone(), rowtime, window, session: None, changelog, parallelism })
    }

    /// `agg(…) OVER (PARTITION BY … ORDER BY rowtime ROWS|RANGE BETWEEN … PRECEDING AND CURRENT ROW)`.
    fn over(&mut self, w: &datafusion_expr::logical_plan::Window) -> Result<Stream> {
        use datafusion_expr::{WindowFrameBound, WindowFrameUnits, expr::WindowFunction};
        let input = self.translate(&w.input)?;
        if input.changelog == ChangelogMode::Retract {
            return not_impl_err!("OVER aggregation over a changelog (updating) stream");
        }
        let in_schema = w.input.schema();
        let width = in_schema.fields().len();
        let mut pre: Vec<Expr> = in_schema.columns().into_iter().map(Expr::Column).collect();
        let mut calls = Vec::new();
        let mut shape: Option<(Vec<usize>, usize, OverFrame)> = None;
        for (i, e) in w.window_expr.iter().enumerate() {
            let Expr::WindowFunction(wf) = unalias(e) else {
                return not_impl_err!("unsupported window expression {e}");
            };
            let WindowFunction { fun, params } = wf.as_ref();
            let name = fun.name().to_lowercase();
            if !matches!(fun, datafusion_expr::WindowFunctionDefinition::AggregateUDF(_)) {
                return not_impl_err!("{name}() OVER is only supported as ROW_NUMBER() with a filter on it (Top-N)");
            }
            let partition: Vec<usize> =
                params.partition_by.iter().map(|p| column_source(p, in_schema)).collect::<Option<_>>().ok_or_else(
                    || {
                        datafusion_common::DataFusionError::NotImplemented(
                            "PARTITION BY expressions other than columns".into(),
                        )
                    },
                )?;
            let time_col = match params.order_by.as_slice() {
                [s] if s.asc => column_source(&s.expr, in_schema).filter(|c| input.rowtime[*c]),
                _ => None,
            };
            let Some(time_col) = time_col else {
                return plan_err!("OVER windows must be ordered by an event-time attribute in ascending order");
            };
            let frame = &params.window_frame;
            if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
                return not_impl_err!("OVER windows must end at CURRENT ROW");
            }
            let frame = match (&frame.units, &frame.start_bound) {
                (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => OverFrame::Rows {
                    preceding: if v.is_null() {
                        None
                    } else {
                        Some(
                            v.to_string()
                                .parse()
                                .map_err(|_| datafusion_common::DataFusionError::Plan(format!("bad ROWS bound {v}")))?,
                        )
                    },
                },
                (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows { preceding: Some(0) },
                (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => OverFrame::Range {
                    preceding: if v.is_null() {
                        None
                    } else {
                        Some(super::context::interval_millis(Expr::Literal(v.clone(), None))?)
                    },
                },
                (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range { preceding: Some(0) },
                _ => return not_impl_err!("OVER frame {}", params.window_frame),
            };
            match &shape {
                None => shape = Some((partition, time_col, frame)),
                Some(s) if *s == (partition.clone(), time_col, frame) => {}
                Some(_) => {
                    return not_impl_err!("OVER windows with different PARTITION BY, ORDER BY or frames in one SELECT");
                }
            }
            let (kind, arg) = match (name.as_str(), params.args.as_slice()) {
                ("count", []) => (AggKind::CountStar, None),
                #[expect(deprecated, reason = "COUNT(*) still reaches the plan as a wildcard")]
                ("count", [Expr::Wildcard { .. }]) => (AggKind::CountStar, None),
                ("count", [Expr::Literal(v, _)]) if !v.is_null() => (AggKind::CountStar, None),
                ("count", [a]) => (AggKind::Count, Some(a)),
                ("sum", [a]) => (AggKind::Sum, Some(a)),
                ("min", [a]) => (AggKind::Min, Some(a)),
                ("max", [a]) => (AggKind::Max, Some(a)),
                ("avg", [a]) => (AggKind::Avg, Some(a)),
                _ => return not_impl_err!("{name} OVER is not supported"),
            };
            let arg_col = arg.map(|a| {
                pre.push(a.clone().alias(format!("__over_arg{i}")));
                pre.len() - 1
            });
            let arg_type = match arg {
                Some(a) => a.get_type(in_schema)?,
                None => DataType::Int64,
            };
            let filter = params.filter.as_ref().map(|f| {
                pre.push(f.as_ref().clone().alias(format!("__over_filter{i}")));
                pre.len() - 1
            });
            let output_type = flink_aggregate_type(&name, arg.map(|_| &arg_type))?;
            calls.push(AggregateCall { kind, arg: arg_col, distinct: params.distinct, filter, arg_type, output_type });
        }
        let Some((partition, time_col, frame)) = shape else { return plan_err!("empty OVER window") };
        let projected = self.calc(&input, None, Some(pre))?;
        let (partitioning, parallelism) = self.keyed(partition.clone());
        let node = self.add(
            OperatorSpec::OverAggregate { partition: partition.clone(), time_col, frame, width, aggs: calls },
            vec![PlanInput { node: projected.node, partitioning }],
            arrow_schema(&w.schema),
            parallelism,
            ChangelogMode::Append,
            format!("partitionBy={partition:?}, orderBy={time_col}, frame={frame:?}"),
        );
        let mut rowtime = input.rowtime.clone();
        rowtime.resize(w.schema.fields().len(), false);
        Ok(Stream {
            node,
            schema: w.schema.clone(),
            rowtime,
            window: None,
            session: None,
            changelog: ChangelogMode::Append,
            parallelism,
        })
    }

    /// Key columns for `exprs` over `input`: plain columns as they are, anything else computed
    /// into extra columns appended after the input's own.
    fn key_columns<'e>(
        &mut self,
        input: Stream,
        exprs: impl Iterator<Item = &'e Expr>,
    ) -> Result<(Stream, Vec<usize>)> {
        let exprs: Vec<&Expr> = exprs.collect();
        let direct: Option<Vec<usize>> = exprs.iter().map(|e| column_source(e, &input.schema)).collect();
        if let Some(cols) = direct {
            return Ok((input, cols));
        }
        let width = input.schema.fields().len();
        let mut all: Vec<Expr> = input.schema.columns().into_iter().map(Expr::Column).collect();
        for (i, e) in exprs.iter().enumerate() {
            all.push((*e).clone().alias(format!("__join_key{i}")));
        }
        let projected = self.calc(&input, None, Some(all))?;
        Ok((projected, (width..width + exprs.len()).collect()))
    }

    /// `ROW_NUMBER() OVER (…)` under a filter on the row number: Top-N or deduplication.
    fn try_rank(&mut self, f: &datafusion_expr::logical_plan::Filter) -> Result<Option<Stream>> {
        use datafusion_expr::utils::{conjunction, split_conjunction};
        let mut chain: Vec<&LogicalPlan> = Vec::new();
        let mut node = f.input.as_ref();
        loop {
            match node {
                LogicalPlan::SubqueryAlias(a) => {
                    chain.push(node);
                    node = &a.input;
                }
                LogicalPlan::Projection(p) => {
                    chain.push(node);
                    node = &p.input;
                }
                _ => break,
            }
        }
        let LogicalPlan::Window(w) = node else { return Ok(None) };
        if w.window_expr.len() != 1 {
            return Ok(None);
        }
        let Expr::WindowFunction(wf) = unalias(&w.window_expr[0]) else { return Ok(None) };
        if wf.fun.name().to_lowercase() != "row_number" {
            return Ok(None);
        }
        let rn_index = w.input.schema().fields().len();
        // Follow a column of the filter's input down the chain to the window's output.
        let trace = |mut index: usize| -> Option<usize> {
            for n in &chain {
                if let LogicalPlan::Projection(p) = n {
                    index = column_source(&p.expr[index], p.input.schema())?;
                }
            }
            Some(index)
        };
        let mut limit: Option<usize> = None;
        let mut rest: Vec<Expr> = Vec::new();
        for conjunct in split_conjunction(&f.predicate) {
            match rank_bound(conjunct, f.input.schema(), &trace, rn_index) {
                Some(n) => limit = Some(limit.map_or(n, |l| l.min(n))),
                None => rest.push(conjunct.clone()),
            }
        }
        let Some(limit) = limit else { return Ok(None) };
        if limit == 0 {
            return not_impl_err!("a ROW_NUMBER filter that keeps no rows");
        }
        let params = &wf.params;
        let partition: Vec<usize> = params
            .partition_by
            .iter()
            .map(|e| column_source(e, w.input.schema()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                datafusion_common::DataFusionError::NotImplemented("PARTITION BY expressions other than columns".into())
            })?;
        let order: Vec<SortKey> = params
            .order_by
            .iter()
            .map(|s| {
                column_source(&s.expr, w.input.schema()).map(|column| SortKey {
                    column,
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                datafusion_common::DataFusionError::NotImplemented(
                    "ORDER BY expressions other than columns in ROW_NUMBER".into(),
                )
            })?;
        let input = self.translate(&w.input)?;
        let dedup_on_time = limit == 1 && order.len() == 1 && input.rowtime[order[0].column];
        let spec = RankSpec {
            partition: partition.clone(),
            order: order.clone(),
            limit,
            rank_column: true,
            newest_first_on_ties: dedup_on_time && order[0].descending,
        };
        let window = input.window.filter(|wc| partition.contains(&wc.start) && partition.contains(&wc.end));
        let description = format!(
            "partitionBy={:?}, orderBy={:?}, limit={limit}{}",
            partition,
            order.iter().map(|k| (k.column, if k.descending { "DESC" } else { "ASC" })).collect::<Vec<_>>(),
            if dedup_on_time { " (deduplicate)" } else { "" }
        );
        let (partitioning, parallelism) = self.keyed(partition);
        let mut stream = if let Some(wc) = window {
            if input.changelog == ChangelogMode::Retract {
                return not_impl_err!("window Top-N over a changelog (updating) stream");
            }
            let node = self.add(
                OperatorSpec::WindowRank { rank: spec, window_end: wc.end },
                vec![PlanInput { node: input.node, partitioning }],
                arrow_schema(&w.schema),
                parallelism,
                ChangelogMode::Append,
                description,
            );
            let mut rowtime = input.rowtime.clone();
            rowtime.push(false);
            Stream {
                node,
                schema: w.schema.clone(),
                rowtime,
                window: Some(wc),
                session: None,
                changelog: ChangelogMode::Append,
                parallelism,
            }
        } else {
            let node = self.add(
                OperatorSpec::Rank(spec),
                vec![PlanInput { node: input.node, partitioning }],
                arrow_schema(&w.schema),
                parallelism,
                ChangelogMode::Retract,
                description,
            );
            let width = w.schema.fields().len();
            Stream {
                node,
                schema: w.schema.clone(),
                rowtime: vec![false; width],
                window: None,
                session: None,
                changelog: ChangelogMode::Retract,
                parallelism,
            }
        };
        for n in chain.iter().rev() {
            match n {
                LogicalPlan::SubqueryAlias(a) => stream.schema = a.schema.clone(),
                LogicalPlan::Projection(p) => {
                    stream = self.calc(&stream, None, Some(p.expr.clone()))?;
                    stream.schema = p.schema.clone();
                }
                _ => unreachable!("the chain holds aliases and projections only"),
            }
        }
        if let Some(rest) = conjunction(rest) {
            stream = self.calc(&stream, Some(rest), None)?;
        }
        Ok(Some(stream))
    }

    fn session_aggregate(
        &mut self,
        agg: &Aggregate,
        input: &Stream,
        session: SessionWindow,
        pre: Vec<Expr>,
        calls: Vec<AggregateCall>,
    ) -> Result<Stream> {
        let Some(w) = input.window else { return plan_err!("internal: a session stream without window columns") };
        let mut output = Vec::new();
        let mut keys = Vec::new();
        let mut out_window = WindowColumns { start: usize::MAX, end: usize::MAX, time: None };
        for (i, g) in agg.group_expr.iter().enumerate() {
            let source = column_source(g, &input.schema);
            output.push(if source == Some(w.start) {
                out_window.start = i;
                SessionOutput::WindowStart
            } else if source == Some(w.end) {
                out_window.end = i;
                SessionOutput::WindowEnd
            } else if source.is_some() && source == w.time {
                out_window.time = Some(i);
                SessionOutput::WindowTime
            } else {
                keys.push(i);
                SessionOutput::Key(keys.len() - 1)
            });
        }
        if out_window.start == usize::MAX || out_window.end == usize::MAX {
            return plan_err!("a SESSION window must be grouped by window_start and window_end");
        }
        output.extend((0..calls.len()).map(SessionOutput::Aggregate));
        // The window_start placeholder holds each row's event time.
        let time_col = out_window.start;
        let projected = self.calc(input, None, Some(pre))?;
        let (partitioning, parallelism) = self.keyed(keys.clone());
        let description = format!(
            "gap={}ms, groupBy=[{}], select=[{}]",
            session.gap,
            agg.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            agg.aggr_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
        );
        let node = self.add(
            OperatorSpec::SessionAggregate { keys, time_col, gap: session.gap, aggs: calls, output },
            vec![PlanInput { node: projected.node, partitioning }],
            arrow_schema(&agg.schema),
            parallelism,
            ChangelogMode::Append,
            description,
        );
        let mut rowtime = vec![false; agg.schema.fields().len()];
        if let Some(t) = out_window.time {
            rowtime[t] = true;
        }
        Ok(Stream {
            node,
            schema: agg.schema.clone(),
            rowtime,
            window: Some(out_window),
            session: None,
            changelog: ChangelogMode::Append,
            parallelism,
        })
    }

    /// The exchange into a keyed operator: by hash of the keys, or everything to one subtask
    /// when there are none.
    fn keyed(&self, keys: Vec<usize>) -> (Partitioning, u32) {
        if keys.is_empty() { (Partitioning::Global, 1) } else { (Partitioning::Hash(keys), self.config.parallelism) }
    }
}

/// The bounds of an interval join, if the join condition bounds a left event-time column
/// against a right one from both sides (`l.t BETWEEN r.t - INTERVAL … AND r.t + INTERVAL …`, or
/// the same with `>=`/`<=`).
fn interval_bounds(
    filter: &Expr,
    schema: &DFSchema,
    left_width: usize,
    left_rowtime: &[bool],
    right_rowtime: &[bool],
) -> Option<IntervalBounds> {
    use datafusion_expr::utils::split_conjunction;
    use datafusion_expr::{Between, BinaryExpr, Operator};
    // A time attribute of one side plus a constant offset: (is left, column of that side, ms).
    let time_ref = |e: &Expr| -> Option<(bool, usize, i64)> {
        let (column, offset) = match unalias(e) {
            Expr::Column(c) => (c, 0),
            Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus), right }) => {
                let Expr::Column(c) = unalias(left) else { return None };
                let ms = super::context::interval_millis(right.as_ref().clone()).ok()?;
                (c, if *op == Operator::Plus { ms } else { -ms })
            }
            _ => return None,
        };
        let index = schema.index_of_column(column).ok()?;
        if index < left_width {
            left_rowtime.get(index).copied().unwrap_or(false).then_some((true, index, offset))
        } else {
            let i = index - left_width;
            right_rowtime.get(i).copied().unwrap_or(false).then_some((false, i, offset))
        }
    };
    let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
    let mut columns: Option<(usize, usize)> = None;
    // Records `a op b` where a and b are time references of opposite sides.
    let mut bound = |a: &Expr, op: Operator, b: &Expr| -> Option<()> {
        let (a_left, a_col, a_off) = time_ref(a)?;
        let (b_left, b_col, b_off) = time_ref(b)?;
        if a_left == b_left {
            return None;
        }
        // Normalise to left - right OP c.
        let (op, l, r, c) =
            if a_left { (op, a_col, b_col, b_off - a_off) } else { (op.swap()?, b_col, a_col, a_off - b_off) };
        if *columns.get_or_insert((l, r)) != (l, r) {
            return None;
        }
        match op {
            Operator::GtEq => lower = Some(lower.map_or(c, |x: i64| x.max(c))),
            Operator::Gt => lower = Some(lower.map_or(c + 1, |x: i64| x.max(c + 1))),
            Operator::LtEq => upper = Some(upper.map_or(c, |x: i64| x.min(c))),
            Operator::Lt => upper = Some(upper.map_or(c - 1, |x: i64| x.min(c - 1))),
            _ => return None,
        }
        Some(())
    };
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let _ = bound(left, *op, right);
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                let _ = bound(expr, Operator::GtEq, low);
                let _ = bound(expr, Operator::LtEq, high);
            }
            _ => {}
        }
    }
    let (left_time, right_time) = columns?;
    Some(IntervalBounds { left_time, right_time, lower: lower?, upper: upper? })
}

/// The `n` of a row-number bound `rn <= n`, `rn < n + 1` or `rn = 1`.
fn rank_bound(conjunct: &Expr, schema: &DFSchema, trace: &dyn Fn(usize) -> Option<usize>, rn: usize) -> Option<usize> {
    use datafusion_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else { return None };
    let literal = |e: &Expr| -> Option<i64> {
        match unalias(e) {
            Expr::Literal(v, _) => v.to_string().parse().ok(),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Literal(v, _) => v.to_string().parse().ok(),
                _ => None,
            },
            _ => None,
        }
    };
    let is_rn = |e: &Expr| -> bool {
        let e = match unalias(e) {
            Expr::Cast(c) => c.expr.as_ref(),
            other => other,
        };
        column_source(e, schema).and_then(trace) == Some(rn)
    };
    let (op, n) = if is_rn(left) {
        (*op, literal(right)?)
    } else if is_rn(right) {
        (op.swap()?, literal(left)?)
    } else {
        return None;
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(limit).ok()
}

/// Rebalances long chains of `AND`, `OR` and `||` (as [`super::rewrite`] does before planning):
/// the same operands in the same order, about log2(n) levels deep.
fn balance_long_chains(expr: Expr) -> Result<Expr> {
    use datafusion_common::tree_node::{Transformed, TreeNode};
    use datafusion_expr::{BinaryExpr, Operator};
    const LONGEST_UNBALANCED_CHAIN: usize = 32;
    expr.transform_down(|e| {
        let Expr::BinaryExpr(BinaryExpr { op: op @ (Operator::And | Operator::Or | Operator::StringConcat), .. }) = &e
        else {
            return Ok(Transformed::no(e));
        };
        let op = *op;
        let mut length = 1;
        let mut spine = &e;
        while let Expr::BinaryExpr(BinaryExpr { left, op: next, .. }) = spine
            && *next == op
        {
            length += 1;
            spine = left;
        }
        if length <= LONGEST_UNBALANCED_CHAIN {
            return Ok(Transformed::no(e));
        }
        let mut operands = Vec::with_capacity(length);
        let mut pending = vec![e];
        while let Some(next) = pending.pop() {
            match next {
                Expr::BinaryExpr(BinaryExpr { left, op: next_op, right }) if next_op == op => {
                    pending.push(*right);
                    pending.push(*left);
                }
                operand => operands.push(operand),
            }
        }
        fn balanced(mut operands: Vec<Expr>, op: Operator) -> Expr {
            if operands.len() == 1 {
                return operands.pop().expect("one operand");
            }
            let right = operands.split_off(operands.len() / 2);
            let left = balanced(operands, op);
            Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(balanced(right, op))))
        }
        Ok(Transformed::yes(balanced(operands, op)))
    })
    .map(|t| t.data)
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// The input column an expression merely passes through, if it is one.
fn column_source(expr: &Expr, schema: &DFSchema) -> Option<usize> {
    match unalias(expr) {
        Expr::Column(c) => index_of(schema, c),
        _ => None,
    }
}

fn index_of(schema: &DFSchema, c: &Column) -> Option<usize> {
    schema.index_of_column(c).ok()
}

pub fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(schema.as_arrow().fields().clone()))
}

fn describe(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Join(_) => "JOIN".into(),
        LogicalPlan::Window(_) => "OVER / ROW_NUMBER window".into(),
        LogicalPlan::Sort(_) => "ORDER BY".into(),
        LogicalPlan::Limit(_) => "LIMIT".into(),
        LogicalPlan::Values(_) => "VALUES".into(),
        LogicalPlan::EmptyRelation(_) => "SELECT without FROM".into(),
        other => other.display().to_string(),
    }
}

/// The names a join or aggregation input is known by in a `STATE_TTL` hint: its aliases and
/// the table or view it reads, through projections and filters.
fn input_names(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    let mut plan = plan;
    loop {
        plan = match plan {
            LogicalPlan::SubqueryAlias(a) => {
                names.push(a.alias.table().to_string());
                &a.input
            }
            LogicalPlan::Projection(p) => &p.input,
            LogicalPlan::Filter(f) => &f.input,
            LogicalPlan::TableScan(scan) => {
                names.push(scan.table_name.table().to_string());
                return names;
            }
            _ => return names,
        };
    }
}

/// A duration as `EXPLAIN` shows it: in the largest unit that divides it (`1 d`, `90 min`,
/// `1500 ms`).
fn duration_text(duration: std::time::Duration) -> String {
    let millis = duration.as_millis();
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1_000, "s")];
    match units.iter().find(|(size, _)| millis.is_multiple_of(*size)) {
        Some((size, unit)) => format!("{} {unit}", millis / size),
        None => format!("{millis} ms"),
    }
}
