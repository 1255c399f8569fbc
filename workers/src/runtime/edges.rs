//! A task's output edges: each routes what the tail of the task's chain emits to the
//! subpartitions of the edge's partition, one per consumer subtask, as the edge's partitioning
//! says (forward, global, round robin, broadcast, or by key group of the key's hash), and
//! passes watermarks, barriers, idleness and the end of the stream to every consumer.

use arrow::array::{ArrayRef, UInt32Array};
use arrow_row::{RowConverter, SortField};
use weir_dataflow::event::StreamEvent;
use weir_dataflow::graph::{JobEdge, JobVertex};
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::keygroup::{key_group_for_hash, operator_index_for_key_group, stable_hash};
use weir_dataflow::plan::{Partitioning, StreamPlan};
use weir_shuffle_service::PartitionWriter;

use crate::error::TaskResult;
use crate::operators::Emitted;

/// One outgoing edge of a task: its partitioner and its partition writer.
pub(super) struct OutputEdge {
    writer: Box<dyn PartitionWriter>,
    partitioning: Partitioning,
    subtask: u32,
    next_round_robin: u32,
    max_parallelism: u32,
    hasher: Option<RowConverter>,
}

impl OutputEdge {
    pub(super) fn new(
        edge: &JobEdge,
        writer: Box<dyn PartitionWriter>,
        subtask: u32,
        plan: &StreamPlan,
        vertex: &JobVertex,
    ) -> TaskResult<Self> {
        let tail = &plan.nodes[*vertex.chain.last().expect("a vertex has nodes")];
        let hasher = match &edge.partitioning {
            Partitioning::Hash(cols) => Some(RowConverter::new(
                cols.iter().map(|c| SortField::new(tail.schema.field(*c).data_type().clone())).collect(),
            )?),
            _ => None,
        };
        Ok(OutputEdge {
            writer,
            partitioning: edge.partitioning.clone(),
            subtask,
            next_round_robin: subtask,
            max_parallelism: plan.max_parallelism,
            hasher,
        })
    }

    pub(super) async fn send(&mut self, item: &Emitted) -> TaskResult<()> {
        let n = self.writer.num_subpartitions();
        match item {
            Emitted::Watermark(w) => {
                for s in 0..n {
                    self.writer.send(s, StreamEvent::Watermark(*w)).await?;
                }
            }
            Emitted::Batch(batch) => match &self.partitioning {
                Partitioning::Forward => self.writer.send(self.subtask % n, StreamEvent::Data(batch.clone())).await?,
                Partitioning::Global => self.writer.send(0, StreamEvent::Data(batch.clone())).await?,
                Partitioning::Rebalance => {
                    let target = self.next_round_robin % n;
                    self.next_round_robin = self.next_round_robin.wrapping_add(1);
                    self.writer.send(target, StreamEvent::Data(batch.clone())).await?;
                }
                Partitioning::Broadcast => {
                    for s in 0..n {
                        self.writer.send(s, StreamEvent::Data(batch.clone())).await?;
                    }
                }
                Partitioning::Hash(cols) => {
                    if n == 1 {
                        return Ok(self.writer.send(0, StreamEvent::Data(batch.clone())).await?);
                    }
                    let columns: Vec<ArrayRef> = cols.iter().map(|c| batch.data.column(*c).clone()).collect();
                    let rows =
                        self.hasher.as_ref().expect("hash edges have a row converter").convert_columns(&columns)?;
                    let mut targets: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
                    for (r, row) in rows.iter().enumerate() {
                        let group = key_group_for_hash(stable_hash(row.as_ref()), self.max_parallelism);
                        targets[operator_index_for_key_group(group, self.max_parallelism, n) as usize].push(r as u32);
                    }
                    for (s, rows) in targets.into_iter().enumerate() {
                        if rows.is_empty() {
                            continue;
                        }
                        let part = if rows.len() == batch.num_rows() {
                            batch.clone()
                        } else {
                            batch.take(&UInt32Array::from(rows))?
                        };
                        self.writer.send(s as u32, StreamEvent::Data(part)).await?;
                    }
                }
            },
        }
        Ok(())
    }

    pub(super) async fn barrier(&mut self, id: CheckpointId) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::Barrier(id)).await?;
        }
        Ok(())
    }

    pub(super) async fn idle(&mut self) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::Idle).await?;
        }
        Ok(())
    }

    pub(super) async fn end(&mut self) -> TaskResult<()> {
        for s in 0..self.writer.num_subpartitions() {
            self.writer.send(s, StreamEvent::EndOfPartition).await?;
        }
        Ok(())
    }
}
