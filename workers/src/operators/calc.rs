//! Calc: a filter and a projection, evaluated by DataFusion physical expressions over the
//! whole batch.

use arrow::array::{Array, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use weir_dataflow::event::ChangeBatch;
use weir_dataflow::plan::PhysExpr;

use super::{Operator, Output};
use crate::error::TaskResult;

pub struct Calc {
    filter: Option<PhysExpr>,
    exprs: Option<Vec<PhysExpr>>,
    schema: SchemaRef,
}

impl Calc {
    pub fn new(filter: Option<PhysExpr>, exprs: Option<Vec<PhysExpr>>, schema: SchemaRef) -> Self {
        Calc { filter, exprs, schema }
    }
}

/// Applies a filter expression: only rows where it is true (not false, not null) remain.
pub fn apply_filter(filter: &PhysExpr, batch: ChangeBatch) -> TaskResult<ChangeBatch> {
    let mask = filter.evaluate(&batch.data)?.into_array(batch.num_rows())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| datafusion_common::DataFusionError::Internal("a filter must evaluate to BOOLEAN".to_string()))?;
    if mask.true_count() == batch.num_rows() && mask.null_count() == 0 {
        return Ok(batch);
    }
    Ok(batch.filter(mask)?)
}

/// Evaluates expressions into a batch with `schema`.
pub fn project(exprs: &[PhysExpr], schema: &SchemaRef, batch: &ChangeBatch) -> TaskResult<ChangeBatch> {
    let rows = batch.num_rows();
    let columns = exprs
        .iter()
        .map(|e| e.evaluate(&batch.data).and_then(|v| v.into_array(rows)))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    let data = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
    Ok(batch.with_data(data))
}

impl Operator for Calc {
    fn checkpointable(&self) -> Result<(), String> {
        super::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        let batch = match &self.filter {
            Some(f) => apply_filter(f, batch)?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = match &self.exprs {
            Some(exprs) => project(exprs, &self.schema, &batch)?,
            None => batch,
        };
        out.batch(batch);
        Ok(())
    }
}
