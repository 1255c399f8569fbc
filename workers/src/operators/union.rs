//! Union: rows of all inputs, unchanged. The task merges the inputs' watermarks.

use weir_dataflow::event::ChangeBatch;

use super::{Operator, Output};
use crate::error::TaskResult;

pub struct Union;

impl Operator for Union {
    fn checkpointable(&self) -> Result<(), String> {
        super::stateless()
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> TaskResult<()> {
        out.batch(batch);
        Ok(())
    }
}
