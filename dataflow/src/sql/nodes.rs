//! Logical plan extension nodes for what DataFusion has no node for: a table's watermark
//! assigner and a window table-valued function.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field};
use datafusion_common::{DFSchema, DFSchemaRef, Result};
use datafusion_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

use crate::plan::WindowKind;
use crate::sql::types::TIMESTAMP_TYPE;

/// Assigns watermarks to a table's rows: `WATERMARK FOR rowtime AS expr`. Passes rows through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatermarkNode {
    pub input: LogicalPlan,
    /// Index of the rowtime column in the input (and output) schema.
    pub rowtime: usize,
    pub expr: Expr,
}

impl PartialOrd for WatermarkNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.rowtime.partial_cmp(&other.rowtime)
    }
}

impl UserDefinedLogicalNodeCore for WatermarkNode {
    fn name(&self) -> &str {
        "WatermarkAssigner"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![self.expr.clone()]
    }

    /// A filter must never move below the watermark assigner: the watermark is computed over
    /// every row the table produces, as Flink does, not only over the rows a query keeps.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.input
            .schema()
            .columns()
            .iter()
            .map(|c| c.flat_name())
            .chain(self.input.schema().fields().iter().map(|f| f.name().clone()))
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WatermarkAssigner: rowtime={}, watermark={}",
            self.input.schema().field(self.rowtime).name(),
            self.expr
        )
    }

    fn with_exprs_and_inputs(&self, mut exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = inputs.swap_remove(0);
        // Projection push-down may have pruned columns: find the rowtime column again.
        let name = self.input.schema().field(self.rowtime).name();
        let rowtime =
            input.schema().fields().iter().position(|f| f.name() == name).ok_or_else(|| {
                datafusion_common::DataFusionError::Internal(format!("rowtime column {name} was pruned"))
            })?;
        Ok(WatermarkNode { input, rowtime, expr: exprs.swap_remove(0) })
    }

    /// Rows pass through: the input columns needed are the output columns asked for plus the
    /// rowtime column and what the watermark expression reads.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let schema = self.input.schema();
        let mut needed: Vec<usize> = output_columns.to_vec();
        needed.push(self.rowtime);
        for c in self.expr.column_refs() {
            needed.push(schema.index_of_column(c).ok()?);
        }
        needed.sort_unstable();
        needed.dedup();
        Some(vec![needed])
    }
}

/// `TUMBLE`/`HOP`/`CUMULATE`/`SESSION` over a table: the input's columns plus `window_start`,
/// `window_end` and `window_time`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowTvfNode {
    pub input: LogicalPlan,
    pub window: WindowKind,
    /// Index of the time attribute column in the input.
    pub time_col: usize,
    /// `SESSION(TABLE t PARTITION BY k, …)`: columns of the input.
    pub partition_by: Vec<usize>,
    pub schema: DFSchemaRef,
}

impl PartialOrd for WindowTvfNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.time_col.partial_cmp(&other.time_col)
    }
}

pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";
pub const WINDOW_TIME: &str = "window_time";

impl WindowTvfNode {
    pub fn try_new(input: LogicalPlan, window: WindowKind, time_col: usize, partition_by: Vec<usize>) -> Result<Self> {
        let mut fields: Vec<(Option<datafusion_common::TableReference>, Arc<Field>)> =
            input.schema().iter().map(|(q, f)| (q.cloned(), f.clone())).collect();
        for name in [WINDOW_START, WINDOW_END] {
            fields.push((None, Arc::new(Field::new(name, TIMESTAMP_TYPE, false))));
        }
        fields.push((None, Arc::new(Field::new(WINDOW_TIME, TIMESTAMP_TYPE, false))));
        let schema = DFSchema::new_with_metadata(fields, input.schema().metadata().clone())?;
        Ok(WindowTvfNode { input, window, time_col, partition_by, schema: Arc::new(schema) })
    }

    pub fn input_width(&self) -> usize {
        self.input.schema().fields().len()
    }
}

impl UserDefinedLogicalNodeCore for WindowTvfNode {
    fn name(&self) -> &str {
        "WindowTableFunction"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        [WINDOW_START, WINDOW_END, WINDOW_TIME].iter().map(|s| s.to_string()).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowTableFunction: {} on {}", self.window, self.input.schema().field(self.time_col).name())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = inputs.swap_remove(0);
        // Projection push-down may have pruned columns: find ours again by name.
        let find =
            |old: usize| -> Result<usize> {
                let name = self.input.schema().field(old).name();
                input.schema().fields().iter().position(|f| f.name() == name).ok_or_else(|| {
                    datafusion_common::DataFusionError::Internal(format!("window column {name} was pruned"))
                })
            };
        let time_col = find(self.time_col)?;
        let partition_by = self.partition_by.iter().map(|c| find(*c)).collect::<Result<Vec<_>>>()?;
        WindowTvfNode::try_new(input, self.window, time_col, partition_by)
    }

    /// The input columns needed: those passed through to the requested outputs, the time
    /// column and the partition keys.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let width = self.input_width();
        let mut needed: Vec<usize> = output_columns.iter().copied().filter(|c| *c < width).collect();
        needed.push(self.time_col);
        needed.extend(&self.partition_by);
        needed.sort_unstable();
        needed.dedup();
        Some(vec![needed])
    }
}

/// A view named in a query, standing for the view's planned (typed and optimised) plan until
/// the query is expanded with [`expand_views`] for translation. Planning a query over a view
/// then types, analyses and optimises the query's own nodes only, not again every view below
/// it: a chain of `n` views built on one another plans in time linear in `n`, not quadratic.
#[derive(Debug, Clone)]
pub struct ViewNode {
    pub name: String,
    pub plan: Arc<LogicalPlan>,
}

// Identity, not structure: comparing or hashing a view's whole plan would walk all of it.
impl PartialEq for ViewNode {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.plan, &other.plan)
    }
}

impl Eq for ViewNode {}

impl std::hash::Hash for ViewNode {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.plan).hash(state);
    }
}

impl PartialOrd for ViewNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.name.partial_cmp(&other.name)
    }
}

impl UserDefinedLogicalNodeCore for ViewNode {
    fn name(&self) -> &str {
        "View"
    }

    /// None: the view's plan is done, and optimiser rules must not walk into it.
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.plan.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "View: {}", self.name)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// `plan` with every [`ViewNode`] replaced by its view's plan, views within views included.
pub fn expand_views(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion_common::tree_node::Transformed;
    plan.transform_up_with_subqueries(|node| {
        if let LogicalPlan::Extension(extension) = &node
            && let Some(view) = extension.node.as_any().downcast_ref::<ViewNode>()
        {
            return Ok(Transformed::yes(expand_views(view.plan.as_ref().clone())?));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The data type a time attribute must have.
pub fn is_timestamp(ty: &DataType) -> bool {
    matches!(ty, DataType::Timestamp(_, _))
}
