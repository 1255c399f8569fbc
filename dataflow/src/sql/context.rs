//! What DataFusion's SQL planner asks about while planning a query: tables and views of the
//! [`Catalog`], functions (DataFusion's built-ins overridden by Flink's), Flink's aggregate
//! result types, and planners for Flink syntax (window TVFs, nested field access).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{DFSchema, Result, ScalarValue, TableReference, plan_datafusion_err, plan_err};
use datafusion_expr::expr::ScalarFunction;
use datafusion_expr::function::AccumulatorArgs;
use datafusion_expr::planner::{
    ContextProvider, ExprPlanner, PlannedRelation, PlannerResult, RelationPlanner, RelationPlannerContext,
    RelationPlanning,
};
use datafusion_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, HigherOrderUDF, LogicalPlan, LogicalPlanBuilder, ScalarUDF,
    Signature, TableSource, Volatility, WindowUDF, lit,
};
use sqlparser::ast::{self, FunctionArg, FunctionArgExpr, FunctionArguments, TableFactor};

use super::catalog::Catalog;
use super::dialect::{PARTITION_BY_FUNCTION, TABLE_ARG_FUNCTION};
use super::nodes::{WindowTvfNode, is_timestamp};
use crate::plan::WindowKind;

/// The functions a query may call, by lower-case name.
#[derive(Debug, Clone)]
pub struct FunctionRegistry {
    pub scalars: HashMap<String, Arc<ScalarUDF>>,
    pub aggregates: HashMap<String, Arc<AggregateUDF>>,
    pub windows: HashMap<String, Arc<WindowUDF>>,
}

impl FunctionRegistry {
    pub fn new() -> Self {
        let mut scalars = HashMap::new();
        for f in datafusion_functions::all_default_functions() {
            register_scalar(&mut scalars, f);
        }
        for f in super::functions::flink_scalar_functions() {
            register_scalar(&mut scalars, f);
        }
        let mut aggregates = HashMap::new();
        for (name, kind) in [
            ("count", FlinkAggKind::Count),
            ("sum", FlinkAggKind::Sum),
            ("sum0", FlinkAggKind::Sum),
            ("min", FlinkAggKind::MinMax),
            ("max", FlinkAggKind::MinMax),
            ("avg", FlinkAggKind::Avg),
            ("first_value", FlinkAggKind::MinMax),
            ("last_value", FlinkAggKind::MinMax),
        ] {
            let udaf = Arc::new(AggregateUDF::new_from_impl(FlinkAggregate::new(name, kind)));
            aggregates.insert(name.to_string(), udaf);
        }
        let mut windows = HashMap::new();
        for f in datafusion_functions_window::all_default_window_functions() {
            windows.insert(f.name().to_lowercase(), f.clone());
            for alias in f.aliases() {
                windows.insert(alias.to_lowercase(), f.clone());
            }
        }
        FunctionRegistry { scalars, aggregates, windows }
    }

    pub fn scalar(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalars.get(&name.to_lowercase()).cloned()
    }
}

impl Default for FunctionRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn register_scalar(map: &mut HashMap<String, Arc<ScalarUDF>>, f: Arc<ScalarUDF>) {
    map.insert(f.name().to_lowercase(), f.clone());
    for alias in f.aliases() {
        map.insert(alias.to_lowercase(), f.clone());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FlinkAggKind {
    Count,
    Sum,
    MinMax,
    Avg,
}

/// An aggregate function as the planner sees it: a name, any arguments, and Flink's result type.
/// Weir's operators compute aggregates themselves; DataFusion never runs these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlinkAggregate {
    name: String,
    kind: FlinkAggKind,
    signature: Signature,
}

impl FlinkAggregate {
    fn new(name: &str, kind: FlinkAggKind) -> Self {
        FlinkAggregate { name: name.to_string(), kind, signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

/// Flink's result type of an aggregate over `arg` (`LogicalTypeMerging`, `SumAggFunction`,
/// `AvgAggFunction`): SUM and AVG keep integer types, decimals widen to precision 38, AVG of a
/// decimal has at least 6 fraction digits.
pub fn flink_aggregate_type(name: &str, arg: Option<&DataType>) -> Result<DataType> {
    let kind = match name {
        "count" => return Ok(DataType::Int64),
        "sum" | "sum0" => FlinkAggKind::Sum,
        "avg" => FlinkAggKind::Avg,
        _ => FlinkAggKind::MinMax,
    };
    let Some(arg) = arg else {
        return plan_err!("{name} needs an argument");
    };
    Ok(match (kind, arg) {
        (FlinkAggKind::Sum, DataType::Decimal128(_, s)) => DataType::Decimal128(38, *s),
        (FlinkAggKind::Avg, DataType::Decimal128(_, s)) => DataType::Decimal128(38, (*s).max(6)),
        (FlinkAggKind::Sum | FlinkAggKind::Avg, t) if t.is_numeric() => t.clone(),
        (FlinkAggKind::Sum | FlinkAggKind::Avg, DataType::Null) => DataType::Int32,
        (FlinkAggKind::Sum | FlinkAggKind::Avg, t) => {
            return plan_err!(
                "{}({}) is not supported: the argument must be numeric",
                name.to_uppercase(),
                super::types::flink_type_name(t)
            );
        }
        (_, t) => t.clone(),
    })
}

impl AggregateUDFImpl for FlinkAggregate {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if self.kind != FlinkAggKind::Count && arg_types.len() != 1 {
            return plan_err!("{} takes exactly one argument", self.name.to_uppercase());
        }
        flink_aggregate_type(&self.name, arg_types.first())
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let types: Vec<DataType> = arg_fields.iter().map(|f| f.data_type().clone()).collect();
        let ty = self.return_type(&types)?;
        Ok(Arc::new(Field::new(self.name(), ty, self.kind != FlinkAggKind::Count)))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        plan_err!("{} is evaluated by Weir's streaming operators, not by DataFusion", self.name)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        if self.kind == FlinkAggKind::Count {
            return Ok(ScalarValue::Int64(Some(0)));
        }
        ScalarValue::try_from(data_type)
    }
}

/// The [`ContextProvider`] over Weir's catalog.
pub struct WeirContext<'a> {
    pub catalog: &'a Catalog,
    pub functions: &'a FunctionRegistry,
    pub options: ConfigOptions,
    expr_planners: Vec<Arc<dyn ExprPlanner>>,
    relation_planners: Vec<Arc<dyn RelationPlanner>>,
}

impl<'a> WeirContext<'a> {
    pub fn new(catalog: &'a Catalog, functions: &'a FunctionRegistry) -> Self {
        let mut options = ConfigOptions::default();
        options.sql_parser.enable_ident_normalization = false;
        options.sql_parser.parse_float_as_decimal = true;
        options.sql_parser.map_string_types_to_utf8view = false;
        // Column references keep where they are in the script, so an unknown one is reported there.
        options.sql_parser.collect_spans = true;
        options.execution.time_zone = Some("UTC".to_string());
        WeirContext {
            catalog,
            functions,
            options,
            expr_planners: vec![Arc::new(FlinkExprPlanner { functions: functions.clone() })],
            relation_planners: vec![Arc::new(WindowTvfPlanner)],
        }
    }
}

impl ContextProvider for WeirContext<'_> {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        self.catalog.table_source(name.table()).ok_or_else(|| {
            let mut known: Vec<&str> = self.catalog.names().collect();
            known.sort();
            plan_datafusion_err!(
                "table or view '{}' does not exist; known: {}",
                name.table(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.expr_planners
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        &self.relation_planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.scalar(name)
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.functions.aggregates.get(&name.to_lowercase()).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.functions.windows.get(&name.to_lowercase()).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.functions.scalars.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        vec![]
    }

    fn udaf_names(&self) -> Vec<String> {
        self.functions.aggregates.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.functions.windows.keys().cloned().collect()
    }
}

/// Nested field access (`person.id`), `EXTRACT`, `POSITION` and `SUBSTRING` with Flink's
/// functions.
#[derive(Debug)]
struct FlinkExprPlanner {
    functions: FunctionRegistry,
}

impl FlinkExprPlanner {
    fn call(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        let f = self.functions.scalar(name).ok_or_else(|| plan_datafusion_err!("function {name} is not available"))?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(f, args)))
    }
}

impl ExprPlanner for FlinkExprPlanner {
    fn plan_compound_identifier(
        &self,
        field: &Field,
        qualifier: Option<&TableReference>,
        nested_names: &[String],
    ) -> Result<PlannerResult<Vec<Expr>>> {
        let mut expr = Expr::Column(datafusion_common::Column::from((qualifier, field)));
        for name in nested_names {
            expr = self.call("get_field", vec![expr, lit(name.clone())])?;
        }
        Ok(PlannerResult::Planned(expr))
    }

    fn plan_extract(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(self.call("date_part", args)?))
    }

    fn plan_position(&self, mut args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        // DataFusion passes (haystack, needle); Flink's POSITION takes the needle first.
        args.reverse();
        Ok(PlannerResult::Planned(self.call("weir_position", args)?))
    }

    fn plan_substring(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(self.call("substr", args)?))
    }
}

/// Plans `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL …))` and its siblings `HOP`,
/// `CUMULATE` and `SESSION` into a [`WindowTvfNode`].
#[derive(Debug)]
struct WindowTvfPlanner;

impl RelationPlanner for WindowTvfPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let TableFactor::TableFunction { expr: ast::Expr::Function(function), alias } = &relation else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let name = function.name.to_string().to_uppercase();
        let expected: &[&str] = match name.as_str() {
            "TUMBLE" => &["DATA", "TIMECOL", "SIZE", "OFFSET"],
            "HOP" => &["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
            "CUMULATE" => &["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"],
            "SESSION" => &["DATA", "TIMECOL", "GAP"],
            _ => return plan_err!("unknown table function {name}; expected TUMBLE, HOP, CUMULATE or SESSION"),
        };
        let args = tvf_arguments(&name, function, expected)?;
        let required = if name == "TUMBLE" || name == "SESSION" { 3 } else { 4 };
        if args.iter().take(required).any(Option::is_none) {
            return plan_err!(
                "{name} expects ({}), e.g. {name}(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND{})",
                expected[..required].join(", "),
                if required == 4 { ", INTERVAL '1' MINUTE" } else { "" }
            );
        }
        let (table, partition_by) = table_argument(args[0].as_ref().expect("checked above"))?;
        let source = context.context_provider().get_table_source(TableReference::bare(table.clone()))?;
        let input = LogicalPlanBuilder::scan(table.clone(), source, None)?.build()?;
        let time_name = descriptor_column(args[1].as_ref().expect("checked above"))?;
        let schema = input.schema().clone();
        let time_col = column_index(&schema, &time_name, &table)?;
        if !is_timestamp(schema.field(time_col).data_type()) {
            return plan_err!(
                "the time column of {name} must be a TIMESTAMP(3) or TIMESTAMP_LTZ(3) time attribute, but '{time_name}' is {}",
                super::types::flink_type_name(schema.field(time_col).data_type())
            );
        }
        let mut interval = |i: usize| -> Result<Option<i64>> {
            match &args[i] {
                None => Ok(None),
                Some(e) => interval_millis(context.sql_to_expr(e.clone(), &DFSchema::empty())?).map(Some),
            }
        };
        let window = match name.as_str() {
            "TUMBLE" => WindowKind::Tumble { size: positive(interval(2)?, "SIZE")?, offset: interval(3)?.unwrap_or(0) },
            "HOP" => {
                let slide = positive(interval(2)?, "SLIDE")?;
                let size = positive(interval(3)?, "SIZE")?;
                WindowKind::Hop { size, slide, offset: interval(4)?.unwrap_or(0) }
            }
            "CUMULATE" => {
                let step = positive(interval(2)?, "STEP")?;
                let max_size = positive(interval(3)?, "SIZE")?;
                if max_size % step != 0 {
                    return plan_err!("CUMULATE: the max window size must be an integral multiple of the step");
                }
                WindowKind::Cumulate { step, max_size, offset: interval(4)?.unwrap_or(0) }
            }
            _ => WindowKind::Session { gap: positive(interval(2)?, "GAP")? },
        };
        let partition_cols =
            partition_by.iter().map(|p| column_index(&schema, p, &table)).collect::<Result<Vec<_>>>()?;
        if !partition_cols.is_empty() && !matches!(window, WindowKind::Session { .. }) {
            return plan_err!("PARTITION BY in a table argument is only supported by SESSION windows");
        }
        let node = WindowTvfNode::try_new(input, window, time_col, partition_cols)?;
        let plan = LogicalPlan::Extension(datafusion_expr::Extension { node: Arc::new(node) });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, alias.clone()))))
    }
}

/// The TVF's arguments in declaration order, positional or named (`SIZE => INTERVAL …`).
fn tvf_arguments(name: &str, function: &ast::Function, expected: &[&str]) -> Result<Vec<Option<ast::Expr>>> {
    let FunctionArguments::List(list) = &function.args else {
        return plan_err!("{name} needs arguments");
    };
    let mut out: Vec<Option<ast::Expr>> = vec![None; expected.len()];
    for (position, arg) in list.args.iter().enumerate() {
        let (slot, expr) = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (position, e),
            FunctionArg::Named { name: n, arg: FunctionArgExpr::Expr(e), .. } => {
                let upper = n.value.to_uppercase();
                match expected.iter().position(|x| *x == upper) {
                    Some(i) => (i, e),
                    None => {
                        return plan_err!("{name} has no parameter {}; parameters: {}", n.value, expected.join(", "));
                    }
                }
            }
            other => return plan_err!("unsupported argument {other} of {name}"),
        };
        if slot >= out.len() {
            return plan_err!("{name} takes at most {} arguments: {}", expected.len(), expected.join(", "));
        }
        out[slot] = Some(expr.clone());
    }
    Ok(out)
}

fn table_argument(expr: &ast::Expr) -> Result<(String, Vec<String>)> {
    let ast::Expr::Function(f) = expr else {
        return plan_err!("the first argument of a window function must be TABLE <name>, found {expr}");
    };
    if f.name.to_string() != TABLE_ARG_FUNCTION {
        return plan_err!("the first argument of a window function must be TABLE <name>, found {expr}");
    }
    let FunctionArguments::List(list) = &f.args else {
        return plan_err!("malformed table argument");
    };
    let mut table = None;
    let mut partition = vec![];
    for arg in &list.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::CompoundIdentifier(parts))) => {
                table = parts.last().map(|i| i.value.clone());
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Function(p)))
                if p.name.to_string() == PARTITION_BY_FUNCTION =>
            {
                if let FunctionArguments::List(keys) = &p.args {
                    for key in &keys.args {
                        match key {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Identifier(i))) => {
                                partition.push(i.value.clone())
                            }
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::CompoundIdentifier(parts))) => {
                                partition.extend(parts.last().map(|i| i.value.clone()))
                            }
                            other => {
                                return plan_err!("PARTITION BY of a table argument takes column names, found {other}");
                            }
                        }
                    }
                }
            }
            other => return plan_err!("malformed table argument {other}"),
        }
    }
    let table = table.ok_or_else(|| plan_datafusion_err!("table argument without a table name"))?;
    Ok((table, partition))
}

fn descriptor_column(expr: &ast::Expr) -> Result<String> {
    if let ast::Expr::Function(f) = expr
        && f.name.to_string().eq_ignore_ascii_case("DESCRIPTOR")
        && let FunctionArguments::List(list) = &f.args
        && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] = list.args.as_slice()
    {
        match e {
            ast::Expr::Identifier(i) => return Ok(i.value.clone()),
            ast::Expr::CompoundIdentifier(parts) if !parts.is_empty() => {
                return Ok(parts[parts.len() - 1].value.clone());
            }
            _ => {}
        }
    }
    plan_err!("the time column must be given as DESCRIPTOR(column), found {expr}")
}

fn column_index(schema: &DFSchema, name: &str, table: &str) -> Result<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name() == name)
        .ok_or_else(|| plan_datafusion_err!("column '{name}' not found in table '{table}'"))
}

fn positive(v: Option<i64>, what: &str) -> Result<i64> {
    match v {
        Some(ms) if ms > 0 => Ok(ms),
        _ => plan_err!("the window {what} must be a positive interval"),
    }
}

/// Milliseconds of an interval literal such as `INTERVAL '10' SECOND`.
pub fn interval_millis(expr: Expr) -> Result<i64> {
    let value = match expr {
        Expr::Literal(v, _) => v,
        Expr::Alias(a) => return interval_millis(*a.expr),
        Expr::Cast(c) => return interval_millis(*c.expr),
        other => return plan_err!("expected an interval literal such as INTERVAL '10' SECOND, found {other}"),
    };
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Ok(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => Ok(v.days as i64 * 86_400_000 + v.milliseconds as i64),
        ScalarValue::IntervalYearMonth(_) | ScalarValue::IntervalMonthDayNano(_) => {
            plan_err!("window sizes in months or years are not supported")
        }
        other => plan_err!("expected an interval literal such as INTERVAL '10' SECOND, found {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_expr::col;

    #[test]
    fn planner_routes_syntax_to_flink_functions() {
        let planner = FlinkExprPlanner { functions: FunctionRegistry::new() };
        let PlannerResult::Planned(Expr::ScalarFunction(f)) =
            planner.plan_extract(vec![lit("HOUR"), col("ts")]).unwrap()
        else {
            panic!("EXTRACT was not planned");
        };
        assert_eq!(f.func.name(), "date_part");
        let PlannerResult::Planned(Expr::ScalarFunction(f)) =
            planner.plan_position(vec![col("haystack"), col("needle")]).unwrap()
        else {
            panic!("POSITION was not planned");
        };
        assert_eq!(f.func.name(), "weir_position");
        assert_eq!(f.args, vec![col("needle"), col("haystack")]);
    }

    #[test]
    fn flink_aggregate_types() {
        assert_eq!(flink_aggregate_type("avg", Some(&DataType::Int64)).unwrap(), DataType::Int64);
        assert_eq!(
            flink_aggregate_type("avg", Some(&DataType::Decimal128(10, 2))).unwrap(),
            DataType::Decimal128(38, 6)
        );
        assert_eq!(
            flink_aggregate_type("sum", Some(&DataType::Decimal128(10, 2))).unwrap(),
            DataType::Decimal128(38, 2)
        );
        assert_eq!(flink_aggregate_type("count", None).unwrap(), DataType::Int64);
        assert!(flink_aggregate_type("sum", Some(&DataType::Utf8)).is_err());
    }
}
