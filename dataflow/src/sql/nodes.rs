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
        Ok(WatermarkNode { input: inputs.swap_remove(0), rowtime: self.rowtime, expr: exprs.swap_remove(0) })
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
        WindowTvfNode::try_new(inputs.swap_remove(0), self.window, self.time_col, self.partition_by.clone())
    }
}

/// The data type a time attribute must have.
pub fn is_timestamp(ty: &DataType) -> bool {
    matches!(ty, DataType::Timestamp(_, _))
}
