//! Runs a script's statements in order: DDL fills the catalog, `SET` the configuration, and
//! every `INSERT INTO` plus an optional final `SELECT` become the sinks of one streaming job.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion_common::{DFSchema, DataFusionError, TableReference};
use datafusion_expr::planner::ContextProvider;
use datafusion_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, col};
use datafusion_optimizer::analyzer::Analyzer;
use datafusion_optimizer::optimizer::{Optimizer, OptimizerContext, OptimizerRule};
use datafusion_sql::planner::{PlannerContext, SqlToRel};
use sqlparser::ast;
use sqlparser::tokenizer::Location;

use super::SqlError;
use super::catalog::{Catalog, PhysicalScan, TableEntry};
use super::context::{FunctionRegistry, WeirContext};
use super::hints::StateTtlHints;
use super::limits::{check_expr_depth, check_query_depth, on_planner_thread, view_depth};
use super::nodes::{WatermarkNode, expand_views, is_timestamp};
use super::parser::{ColumnKind, Statement, TableDef, parse_script};
use super::rewrite::{rewrite_expr, rewrite_query};
use super::translate::{SinkTarget, Translator};
use super::types::{flink_type_name, supports_implicit_cast, with_sql_literals};
use crate::config::JobConfig;
use crate::plan::StreamPlan;

/// A script, planned.
pub struct PlannedScript {
    pub config: JobConfig,
    /// The job, if the script has an `INSERT INTO` or a final `SELECT`.
    pub plan: Option<StreamPlan>,
    /// `EXPLAIN` output, one entry per `EXPLAIN` statement.
    pub explains: Vec<String>,
    /// Column names and types of the final `SELECT`, if there is one.
    pub result_schema: Option<SchemaRef>,
}

/// Plans a whole script with `config` as the starting configuration (flags such as
/// `--parallelism` apply before the script's own `SET`s).
///
/// Planning runs on a thread with a large stack (see [`super::limits`]): however deep a script
/// nests, it plans or fails with an error, and never overflows the caller's stack.
pub fn plan_script(sql: &str, config: JobConfig) -> Result<PlannedScript, SqlError> {
    on_planner_thread(|| plan_statements(sql, config))
}

fn plan_statements(sql: &str, config: JobConfig) -> Result<PlannedScript, SqlError> {
    let statements = parse_script(sql)?;
    let mut planner = ScriptPlanner { catalog: Catalog::default(), functions: FunctionRegistry::new(), config };
    let mut sinks: Vec<(LogicalPlan, SinkTarget, Location, StateTtlHints)> = Vec::new();
    let mut explains = Vec::new();
    let mut result_schema = None;
    // Where the parallelism or max parallelism was last set: a parallelism the key groups
    // cannot be spread over is reported there (at the start when flags set it).
    let mut parallelism_set_at = Location::new(1, 1);
    for statement in statements {
        let location = statement.location;
        if let Statement::Set { key, .. } | Statement::Reset { key: Some(key) } = &statement.node
            && matches!(key.as_str(), "parallelism.default" | "pipeline.max-parallelism")
        {
            parallelism_set_at = location;
        }
        match statement.node {
            Statement::Explain(inner) => {
                let (plan, target, hints) = match inner.node {
                    Statement::Query(q) => {
                        let hints = hints_of(&q, inner.location)?;
                        (planner.plan_query(*q, inner.location)?, SinkTarget::Collect, hints)
                    }
                    Statement::Insert(insert) => {
                        let items = select_item_locations(&insert.query);
                        let hints = hints_of(&insert.query, inner.location)?;
                        let plan = planner.plan_query(*insert.query, inner.location)?;
                        let target =
                            planner.sink_target(&insert.table, &insert.columns, &plan, &items, inner.location)?;
                        (plan, target, hints)
                    }
                    _ => {
                        return Err(SqlError::at(inner.location, "EXPLAIN supports SELECT and INSERT INTO statements"));
                    }
                };
                let logical = format!("{}", plan.display_indent());
                let mut translator = Translator::new(&planner.catalog, &planner.config);
                translator.prepare([&plan]);
                translator.add_sink(&plan, target, hints).map_err(|e| SqlError::from_datafusion(location, e))?;
                let physical = translator.finish().explain();
                let explain =
                    format!("== Optimized Logical Plan ==\n{logical}\n\n== Physical Stream Plan ==\n{physical}");
                explains.push(with_sql_literals(&explain));
            }
            other => {
                if let Some(sink) = planner.execute(other, location)? {
                    if matches!(sink.1, SinkTarget::Collect) {
                        if result_schema.is_some() {
                            return Err(SqlError::at(
                                location,
                                "a script may end with one SELECT only; write the others as INSERT INTO a table",
                            ));
                        }
                        result_schema = Some(Arc::new(sink.0.schema().as_arrow().clone()));
                    }
                    sinks.push((sink.0, sink.1, location, sink.2));
                }
            }
        }
    }
    planner.config.check_parallelism().map_err(|e| SqlError::at(parallelism_set_at, e.to_string()))?;
    let plan = if sinks.is_empty() {
        None
    } else {
        let mut translator = Translator::new(&planner.catalog, &planner.config);
        translator.prepare(sinks.iter().map(|(plan, _, _, _)| plan));
        for (plan, target, location, hints) in sinks {
            translator.add_sink(&plan, target, hints).map_err(|e| SqlError::from_datafusion(location, e))?;
        }
        Some(translator.finish())
    };
    Ok(PlannedScript { config: planner.config, plan, explains, result_schema })
}

/// The `STATE_TTL` hints of `query`; a malformed one is an error at the statement.
fn hints_of(query: &ast::Query, location: Location) -> Result<StateTtlHints, SqlError> {
    StateTtlHints::of(query).map_err(|e| SqlError::at(location, e))
}

struct ScriptPlanner {
    catalog: Catalog,
    functions: FunctionRegistry,
    config: JobConfig,
}

impl ScriptPlanner {
    /// Applies a statement; returns the query and its sink when the statement produces output.
    fn execute(
        &mut self,
        statement: Statement,
        location: Location,
    ) -> Result<Option<(LogicalPlan, SinkTarget, StateTtlHints)>, SqlError> {
        match statement {
            Statement::CreateTable(def) => {
                self.create_table(*def, location)?;
                Ok(None)
            }
            Statement::CreateView(view) => {
                if self.catalog.contains(&view.name) {
                    return Err(SqlError::at(location, format!("table or view '{}' already exists", view.name)));
                }
                let depth = view_depth(&view.query, &self.catalog, location)?;
                let mut plan = self.plan_view_query(*view.query, location)?;
                if !view.columns.is_empty() {
                    if view.columns.len() != plan.schema().fields().len() {
                        return Err(SqlError::at(
                            location,
                            "the view's column list does not match its query's columns",
                        ));
                    }
                    let exprs: Vec<Expr> = plan
                        .schema()
                        .columns()
                        .into_iter()
                        .zip(&view.columns)
                        .map(|(c, name)| Expr::Column(c).alias(name))
                        .collect();
                    plan = LogicalPlanBuilder::from(plan)
                        .project(exprs)
                        .and_then(|b| b.build())
                        .map_err(|e| SqlError::from_datafusion(location, e))?;
                }
                self.catalog.add_view(view.name, plan, depth);
                Ok(None)
            }
            Statement::Set { key, value } => {
                self.config.set(&key, &value).map_err(|e| SqlError::at(location, e.to_string()))?;
                Ok(None)
            }
            Statement::Reset { key } => {
                self.config.reset(key.as_deref());
                Ok(None)
            }
            Statement::Insert(insert) => {
                let items = select_item_locations(&insert.query);
                let hints = hints_of(&insert.query, location)?;
                let plan = self.plan_query(*insert.query, location)?;
                let target = self.sink_target(&insert.table, &insert.columns, &plan, &items, location)?;
                Ok(Some((plan, target, hints)))
            }
            Statement::Query(query) => {
                let hints = hints_of(&query, location)?;
                Ok(Some((self.plan_query(*query, location)?, SinkTarget::Collect, hints)))
            }
            Statement::Explain(_) => unreachable!("handled by plan_script"),
        }
    }

    /// The table an `INSERT INTO` writes, once its columns are known to take the query's: each
    /// query column must cast to its table column implicitly, as Flink requires
    /// (`item_locations`: where each SELECT item is, to point at the one that does not fit).
    fn sink_target(
        &self,
        table: &str,
        columns: &[String],
        query: &LogicalPlan,
        item_locations: &[Location],
        location: Location,
    ) -> Result<SinkTarget, SqlError> {
        let entry = self.catalog.table(table).ok_or_else(|| {
            SqlError::at(location, format!("INSERT INTO: table '{table}' does not exist (a view cannot be written)"))
        })?;
        if !columns.is_empty() {
            return Err(SqlError::at(
                location,
                "INSERT INTO with a column list is not supported yet; select the columns in table order",
            ));
        }
        let sink_fields = entry.physical_schema.fields();
        let query_fields = query.schema().fields();
        if sink_fields.len() == query_fields.len() {
            for (position, (sink, column)) in sink_fields.iter().zip(query_fields.iter()).enumerate() {
                if supports_implicit_cast(column.data_type(), sink.data_type()) {
                    continue;
                }
                let (from, to) = (flink_type_name(column.data_type()), flink_type_name(sink.data_type()));
                return Err(SqlError::at(
                    item_locations.get(position).copied().filter(|at| at.line > 0).unwrap_or(location),
                    format!(
                        "incompatible types for sink column '{}' at position {position} of table '{}': the query \
                         gives {from} but the column is {to}; convert the value with CAST(… AS {to})",
                        sink.name(),
                        entry.def.name
                    ),
                ));
            }
        }
        Ok(SinkTarget::Table(entry.clone()))
    }

    fn context(&self) -> WeirContext<'_> {
        WeirContext::new(&self.catalog, &self.functions)
    }

    /// Plans a query whose rows go to a sink: with the views it reads expanded, and optimised
    /// as a whole (across the views' boundaries) once more.
    fn plan_query(&self, query: ast::Query, location: Location) -> Result<LogicalPlan, SqlError> {
        let plan = self.plan_view_query(query, location)?;
        let context = self.context();
        let plan = expand_views(plan)
            .and_then(|plan| optimize(plan, &context))
            .map_err(|e| SqlError::from_datafusion(location, e))?;
        tracing::debug!(plan = %plan.display_indent(), "optimized logical plan");
        Ok(plan)
    }

    /// Plans a query with the views it reads left as [`super::nodes::ViewNode`]s.
    fn plan_view_query(&self, mut query: ast::Query, location: Location) -> Result<LogicalPlan, SqlError> {
        rewrite_query(&mut query);
        check_query_depth(&query)?;
        let context = self.context();
        let sql_to_rel = SqlToRel::new(&context);
        let plan = sql_to_rel
            .sql_statement_to_plan(ast::Statement::Query(Box::new(query)))
            .and_then(|plan| super::typing::apply_flink_typing(plan, &self.functions))
            .map_err(|e| SqlError::from_datafusion(location, e))?;
        optimize(plan, &context).map_err(|e| SqlError::from_datafusion(location, e))
    }

    fn create_table(&mut self, def: TableDef, location: Location) -> Result<(), SqlError> {
        if self.catalog.contains(&def.name) {
            if def.if_not_exists {
                return Ok(());
            }
            return Err(SqlError::at(location, format!("table or view '{}' already exists", def.name)));
        }
        let mut physical = Vec::new();
        for c in &def.columns {
            match &c.kind {
                ColumnKind::Physical { data_type, nullable } => {
                    // Sources read missing or null fields as NULL whatever the declared nullability.
                    let _ = nullable;
                    physical.push(Field::new(&c.name, data_type.clone(), true))
                }
                ColumnKind::Metadata { .. } => {
                    return Err(SqlError::at(
                        c.location,
                        format!("metadata column '{}': no connector provides metadata yet", c.name),
                    ));
                }
                ColumnKind::Computed { .. } => {}
            }
        }
        let physical_schema = Arc::new(Schema::new(physical));
        let qualifier = TableReference::bare(def.name.clone());
        let scan_source = Arc::new(PhysicalScan { table: def.name.clone(), schema: physical_schema.clone() });
        let scan = LogicalPlanBuilder::scan(qualifier.clone(), scan_source, None)
            .and_then(|b| b.build())
            .map_err(|e| SqlError::from_datafusion(location, e))?;
        let scan_schema = DFSchema::try_from_qualified_schema(qualifier.clone(), &physical_schema)
            .map_err(|e| SqlError::from_datafusion(location, e))?;

        let context = self.context();
        let sql_to_rel = SqlToRel::new(&context);
        let mut exprs = Vec::new();
        for c in &def.columns {
            let expr = match &c.kind {
                ColumnKind::Physical { .. } => col(datafusion_common::Column::new(Some(qualifier.clone()), &c.name)),
                ColumnKind::Computed { expr } => {
                    let mut expr = expr.as_ref().clone();
                    rewrite_expr(&mut expr);
                    check_expr_depth(&expr)?;
                    sql_to_rel
                        .sql_to_expr(expr, &scan_schema, &mut PlannerContext::new())
                        .map_err(|e| SqlError::from_datafusion(c.location, e))?
                        .alias(&c.name)
                }
                ColumnKind::Metadata { .. } => unreachable!("rejected above"),
            };
            exprs.push(expr);
        }
        let mut plan = LogicalPlanBuilder::from(scan)
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(|e| SqlError::from_datafusion(location, e))?;
        if let Some(wm) = &def.watermark {
            let schema = plan.schema().clone();
            let rowtime = schema.fields().iter().position(|f| f.name() == &wm.column).ok_or_else(|| {
                SqlError::at(
                    wm.location,
                    format!("WATERMARK FOR '{}': no such column in table '{}'", wm.column, def.name),
                )
            })?;
            if !is_timestamp(schema.field(rowtime).data_type()) {
                return Err(SqlError::at(
                    wm.location,
                    format!("the rowtime column '{}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3)", wm.column),
                ));
            }
            let mut expr = wm.expr.clone();
            rewrite_expr(&mut expr);
            check_expr_depth(&expr)?;
            let expr = sql_to_rel
                .sql_to_expr(expr, &schema, &mut PlannerContext::new())
                .map_err(|e| SqlError::from_datafusion(wm.location, e))?;
            let ty = expr.get_type(&schema).map_err(|e| SqlError::from_datafusion(wm.location, e))?;
            if !is_timestamp(&ty) {
                return Err(SqlError::at(
                    wm.location,
                    format!("the watermark expression must return a timestamp, not {}", flink_type_name(&ty)),
                ));
            }
            plan = LogicalPlan::Extension(datafusion_expr::Extension {
                node: Arc::new(WatermarkNode { input: plan, rowtime, expr }),
            });
        }
        drop(sql_to_rel);
        drop(context);
        super::connectors::validate_table(&def, &physical_schema).map_err(|e| SqlError::at(location, e))?;
        self.catalog.add_table(TableEntry { def, physical_schema, plan });
        Ok(())
    }
}

/// Where each item of a query's SELECT list starts, when the list names its columns one by
/// one (none when it has a `*`, whose columns have no place of their own).
fn select_item_locations(query: &ast::Query) -> Vec<Location> {
    use sqlparser::ast::{SelectItem, SetExpr, Spanned};
    let SetExpr::Select(select) = query.body.as_ref() else { return vec![] };
    if select.projection.iter().any(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))) {
        return vec![];
    }
    select.projection.iter().map(|item| item.span().start).collect()
}

/// DataFusion's analyzer (type coercion) and the optimizer rules that are sound for streams.
fn optimize(plan: LogicalPlan, context: &WeirContext<'_>) -> Result<LogicalPlan, DataFusionError> {
    use datafusion_optimizer::{
        common_subexpr_eliminate::CommonSubexprEliminate, eliminate_cross_join::EliminateCrossJoin,
        eliminate_duplicated_expr::EliminateDuplicatedExpr, eliminate_filter::EliminateFilter,
        eliminate_outer_join::EliminateOuterJoin, extract_equijoin_predicate::ExtractEquijoinPredicate,
        filter_null_join_keys::FilterNullJoinKeys, optimize_projections::OptimizeProjections,
        push_down_filter::PushDownFilter, replace_distinct_aggregate::ReplaceDistinctWithAggregate,
        simplify_expressions::SimplifyExpressions,
    };
    let analyzed = Analyzer::new().execute_and_check(plan, context.options(), |_, _| {})?;
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(SimplifyExpressions::new()),
        Arc::new(ReplaceDistinctWithAggregate::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(EliminateDuplicatedExpr::new()),
        Arc::new(EliminateFilter::new()),
        Arc::new(EliminateCrossJoin::new()),
        Arc::new(FilterNullJoinKeys::default()),
        Arc::new(EliminateOuterJoin::new()),
        Arc::new(PushDownFilter::new()),
        Arc::new(CommonSubexprEliminate::new()),
        Arc::new(OptimizeProjections::new()),
    ];
    let config = OptimizerContext::new().with_max_passes(3);
    Optimizer::with_rules(rules).optimize(analyzed, &config, |_, _| {})
}
