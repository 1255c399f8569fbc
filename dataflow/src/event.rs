//! What flows along the edges of a job: batches of changelog rows and in-band control events.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int8Array, RecordBatch};
use arrow::array::{BooleanArray, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::error::ArrowError;

use crate::ids::CheckpointId;

/// Event time and watermarks: milliseconds since the Unix epoch, as Flink's `TIMESTAMP(3)`.
pub type Timestamp = i64;

/// A watermark that has passed every event: sent when a bounded input ends.
pub const MAX_WATERMARK: Timestamp = i64::MAX;
/// No watermark yet.
pub const MIN_WATERMARK: Timestamp = i64::MIN;

/// The kind of change one row carries, as Flink's `RowKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// `+I` and `+U` add a row; `-U` and `-D` take one away.
    pub fn is_accumulate(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }

    pub fn from_i8(v: i8) -> RowKind {
        match v {
            0 => RowKind::Insert,
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            _ => RowKind::Delete,
        }
    }
}

/// A batch of rows, each with its [`RowKind`]. `kinds == None` means every row is an insert,
/// the common case of append-only streams, which then pay nothing for the changelog.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub kinds: Option<Arc<Int8Array>>,
}

impl ChangeBatch {
    pub fn inserts(data: RecordBatch) -> Self {
        ChangeBatch { data, kinds: None }
    }

    pub fn with_kinds(data: RecordBatch, kinds: Vec<RowKind>) -> Self {
        debug_assert_eq!(data.num_rows(), kinds.len(), "one kind per row");
        if kinds.iter().all(|k| *k == RowKind::Insert) {
            return ChangeBatch::inserts(data);
        }
        let kinds = Int8Array::from_iter_values(kinds.into_iter().map(|k| k as i8));
        ChangeBatch { data, kinds: Some(Arc::new(kinds)) }
    }

    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    pub fn is_append_only(&self) -> bool {
        self.kinds.is_none()
    }

    pub fn kind(&self, row: usize) -> RowKind {
        match &self.kinds {
            None => RowKind::Insert,
            Some(k) => RowKind::from_i8(k.value(row)),
        }
    }

    /// Keeps the rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> Result<ChangeBatch, ArrowError> {
        let data = filter_record_batch(&self.data, mask)?;
        let kinds = match &self.kinds {
            None => None,
            Some(k) => {
                let filtered = arrow::compute::filter(k.as_ref(), mask)?;
                Some(Arc::new(downcast_kinds(filtered)))
            }
        };
        Ok(ChangeBatch { data, kinds })
    }

    /// Gathers the rows at `indices`.
    pub fn take(&self, indices: &UInt32Array) -> Result<ChangeBatch, ArrowError> {
        let data = take_record_batch(&self.data, indices)?;
        let kinds = match &self.kinds {
            None => None,
            Some(k) => {
                let taken = arrow::compute::take(k.as_ref(), indices, None)?;
                Some(Arc::new(downcast_kinds(taken)))
            }
        };
        Ok(ChangeBatch { data, kinds })
    }

    /// Replaces the columns, keeping the kinds.
    pub fn with_data(&self, data: RecordBatch) -> ChangeBatch {
        debug_assert_eq!(data.num_rows(), self.num_rows(), "projection keeps the row count");
        ChangeBatch { data, kinds: self.kinds.clone() }
    }
}

fn downcast_kinds(array: ArrayRef) -> Int8Array {
    array.as_any().downcast_ref::<Int8Array>().expect("row kinds are an Int8Array").clone()
}

/// Everything that travels along a channel, in order.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    Data(ChangeBatch),
    /// Event time has advanced to this point on this channel.
    Watermark(Timestamp),
    /// The channel has no data for now and must not hold back the watermark.
    Idle,
    /// Snapshot marker for a checkpoint.
    Barrier(CheckpointId),
    /// The producer has finished: nothing follows on this channel.
    EndOfPartition,
}
