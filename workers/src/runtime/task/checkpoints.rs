//! The checkpoint side of a task: opening its keyed state and restoring what a checkpoint
//! recorded of it (operator state, the source's position, rows in flight), taking its part of a
//! checkpoint when the barrier comes, and acknowledging it once its state is stored. The rows
//! in flight of an unaligned checkpoint are stored beside the checkpoints, in the format of
//! [`encode_in_flight`].

use serde_json::Value;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use weir_dataflow::event::{ChangeBatch, StreamEvent};
use weir_dataflow::graph::JobVertex;
use weir_dataflow::ids::{CheckpointId, JobId, SubtaskIndex};
use weir_dataflow::keygroup::key_group_range_for_subtask;
use weir_dataflow::wire::Failure;
use weir_state_store::{
    CheckpointStore, KeyedStateBackend, OperatorId, PendingSnapshot, StateLocation, StateOptions, SubtaskStateId,
};

use super::Task;
use crate::checkpoint::{CheckpointSetup, RestoredState, SnapshotContext, TaskReport};
use crate::connectors;
use crate::error::{TaskError, TaskResult};
use crate::runtime::driver::LocalJob;

/// The checkpoint side of a task.
pub(super) struct TaskCheckpointing {
    pub(super) reports: UnboundedSender<TaskReport>,
    /// Completed checkpoints; `None` once the coordinator has gone.
    pub(super) completed: Option<watch::Receiver<Option<CheckpointId>>>,
    /// A source task's checkpoint triggers.
    pub(super) triggers: Option<UnboundedReceiver<CheckpointId>>,
    /// Keyed state, when an operator of the chain keeps some.
    pub(super) backend: Option<KeyedStateBackend>,
    /// The newest checkpoint whose barrier this task has emitted.
    pub(super) last_barrier: Option<CheckpointId>,
    /// `execution.checkpointing.unaligned`.
    pub(super) unaligned: bool,
    /// Where in-flight data of unaligned checkpoints goes: the job's folder.
    pub(super) location: StateLocation,
    pub(super) job: String,
    /// An unaligned snapshot taken, waiting for its in-flight data to be recorded.
    pub(super) unaligned_part: Option<SnapshotPart>,
}

/// A task's part of a checkpoint, taken and waiting to be acknowledged.
pub(super) struct SnapshotPart {
    pub(super) id: CheckpointId,
    position: Value,
    /// The keyed state's upload, when the task has keyed state.
    pending: Option<PendingSnapshot>,
}

impl Task {
    /// Opens the task's keyed state (restoring it when the job starts from a checkpoint), checks
    /// every operator can be checkpointed, and restores operator state and the source position.
    pub(in crate::runtime) async fn enable_checkpoints(
        &mut self,
        job: &LocalJob,
        setup: &CheckpointSetup,
        vertex: &JobVertex,
        triggers: Option<UnboundedReceiver<CheckpointId>>,
        reports: UnboundedSender<TaskReport>,
        completed: watch::Receiver<Option<CheckpointId>>,
    ) -> TaskResult<()> {
        for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
            op.track_changes();
            op.checkpointable().map_err(|why| {
                TaskError::Unsupported(format!(
                    "checkpointing is on (execution.checkpointing.interval) but {why} (operator {node}: {})",
                    job.plan.nodes[*node].op.name()
                ))
            })?;
        }
        let key_groups = key_group_range_for_subtask(job.plan.max_parallelism, vertex.parallelism, self.subtask);
        let restore = setup.restore.as_ref();
        let backend = if self.chain.iter().any(|op| op.keeps_keyed_state()) {
            let id = SubtaskStateId {
                job: setup.job.clone(),
                vertex: self.vertex,
                subtask: SubtaskIndex(self.subtask),
                attempt: setup.attempt,
            };
            let options = StateOptions {
                max_parallelism: job.plan.max_parallelism,
                // Operators keep their working set themselves: write-back is all this is for.
                working_set_capacity: 0,
                memtable_bytes: self.stores.memtable(),
                ..StateOptions::default()
            };
            let handles = restore.map(|r| r.handles_of(self.vertex)).unwrap_or_default();
            Some(KeyedStateBackend::restore(&setup.location, id, key_groups, options, &handles).await?)
        } else {
            None
        };
        if let Some(backend) = &backend {
            self.stores.use_backend(backend);
        }
        if let Some(restore) = restore {
            let mut records: Vec<_> = restore.source_positions.iter().filter(|p| p.vertex == self.vertex).collect();
            records.sort_by_key(|r| r.subtask);
            // Old subtask k's operator state goes to new subtask k mod parallelism: one owner each.
            let mine: Vec<&Value> = records
                .iter()
                .filter(|r| r.subtask.0 % vertex.parallelism == self.subtask)
                .map(|r| &r.position)
                .collect();
            let same = records.len() as u32 == vertex.parallelism;
            let in_flight: Vec<&str> = mine.iter().filter_map(|r| r.get("in_flight").and_then(Value::as_str)).collect();
            if !in_flight.is_empty() && !same {
                return Err(TaskError::Unsupported(format!(
                    "the checkpoint is unaligned and holds rows in flight at parallelism {}; restore it at that \
                     parallelism (or take an aligned checkpoint or a savepoint to rescale)",
                    records.len()
                )));
            }
            for path in in_flight {
                self.replay.extend(decode_in_flight(&setup.location.read(path).await?, path)?);
            }
            if let Some(source) = self.source.as_mut() {
                let position = if same {
                    mine.first().and_then(|p| p.get("source")).cloned()
                } else {
                    connectors::merge_positions(records.iter().filter_map(|r| r.position.get("source")))?
                };
                if let Some(position) = position {
                    source.seek(&position)?;
                }
            }
            for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
                let mut state = RestoredState::default();
                for record in &mine {
                    if let Some(s) = record.get("operators").and_then(|o| o.get(node.to_string())) {
                        state.operator_states.push(s.clone());
                    }
                }
                // An operator keeping state beyond memory reads its keys when rows need them.
                let lazy = op.spill().is_some();
                if let (Some(backend), false) = (&backend, lazy) {
                    for (state_id, kg, key, value) in
                        weir_state_store::scan::operator_values(backend, OperatorId(*node as u32)).await?
                    {
                        state.keyed.entry(state_id).or_default().push((kg, key, value));
                    }
                }
                op.restore(state)?;
                if let (Some(spill), true) = (op.spill(), backend.is_some()) {
                    spill.restore_lazily();
                }
            }
        }
        self.checkpointing = Some(TaskCheckpointing {
            reports,
            completed: Some(completed),
            triggers,
            backend,
            last_barrier: None,
            unaligned: setup.config.unaligned,
            location: setup.location.clone(),
            job: setup.job.0.clone(),
            unaligned_part: None,
        });
        Ok(())
    }

    /// What the task records besides keyed state: its source's position and its operators'
    /// per-subtask state. With `keyed`, operators also write their keyed state to the backend.
    pub(super) fn record(&mut self, id: CheckpointId, source: Option<Value>, keyed: bool) -> TaskResult<Value> {
        let mut operators = serde_json::Map::new();
        let mut backend = self.checkpointing.as_mut().and_then(|c| c.backend.as_mut()).filter(|_| keyed);
        for (op, node) in self.chain.iter_mut().zip(&self.chain_nodes) {
            let mut ctx = SnapshotContext {
                checkpoint: id,
                backend: backend.as_deref_mut(),
                operator: OperatorId(*node as u32),
                operator_state: None,
                memory: None,
            };
            op.snapshot(&mut ctx)?;
            if let Some(state) = ctx.operator_state {
                operators.insert(node.to_string(), state);
            }
        }
        let mut record = serde_json::Map::new();
        if let Some(source) = source {
            record.insert("source".into(), source);
        }
        record.insert("operators".into(), Value::Object(operators));
        Ok(Value::Object(record))
    }

    /// Takes this task's part of checkpoint `id` and passes the barrier on. The keyed state's
    /// upload finishes in the background; the acknowledgement goes when it is stored.
    pub(super) async fn checkpoint(&mut self, id: CheckpointId, source: Option<Value>) -> TaskResult<()> {
        if let Some(part) = self.snapshot_part(id, source).await? {
            self.acknowledge(part, None);
        }
        Ok(())
    }

    /// Snapshots the chain for checkpoint `id` and passes the barrier on; `None` when the
    /// snapshot could not start (the checkpoint is declined).
    pub(super) async fn snapshot_part(
        &mut self,
        id: CheckpointId,
        source: Option<Value>,
    ) -> TaskResult<Option<SnapshotPart>> {
        tracing::debug!(vertex = %self.vertex, subtask = self.subtask, checkpoint = %id, "snapshot");
        let position = self.record(id, source, true)?;
        let c = self.checkpointing.as_mut().expect("checkpoints are only taken when enabled");
        let pending = match c.backend.as_mut() {
            Some(backend) => match backend.snapshot(id).await {
                Ok(pending) => Some(pending),
                Err(e) => {
                    let failure = TaskError::from(e).failure();
                    let _ = c.reports.send(TaskReport::Decline { checkpoint: id, failure });
                    None
                }
            },
            None => None,
        };
        c.last_barrier = Some(id);
        let declined = c.backend.is_some() && pending.is_none();
        for output in &mut self.outputs {
            output.barrier(id).await?;
        }
        Ok((!declined).then_some(SnapshotPart { id, position, pending }))
    }

    /// Acknowledges a checkpoint part once its keyed state (and the in-flight rows of an
    /// unaligned checkpoint, stored beside the checkpoints) is stored.
    pub(super) fn acknowledge(&self, part: SnapshotPart, in_flight: Option<Vec<u8>>) {
        let c = self.checkpointing.as_ref().expect("checkpoints are only taken when enabled");
        let (vertex, subtask) = (self.vertex, SubtaskIndex(self.subtask));
        let reports = c.reports.clone();
        let SnapshotPart { id, mut position, pending } = part;
        let target = in_flight.filter(|b| !b.is_empty()).map(|bytes| {
            let store = CheckpointStore::new(c.location.clone(), JobId(c.job.clone()), 1);
            let path = store.in_flight_path(id, &format!("{vertex}-{}", subtask.0));
            (c.location.clone(), path, bytes)
        });
        tokio::spawn(async move {
            let mut failure = None;
            if let Some((location, path, bytes)) = target {
                match location.write(&path, bytes).await {
                    Ok(()) => {
                        if let Some(record) = position.as_object_mut() {
                            record.insert("in_flight".into(), Value::String(path.to_string()));
                        }
                    }
                    Err(e) => {
                        let message = format!("its in-flight rows could not be stored at {path}: {e}");
                        failure = Some(Failure { message, ..TaskError::from(e).failure() })
                    }
                }
            }
            let report = match (failure, pending) {
                (Some(failure), _) => TaskReport::Decline { checkpoint: id, failure },
                (None, None) => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: None, position },
                (None, Some(pending)) => match pending.wait().await {
                    Ok(handle) => TaskReport::Ack { checkpoint: id, vertex, subtask, handle: Some(handle), position },
                    Err(e) => TaskReport::Decline { checkpoint: id, failure: TaskError::from(e).failure() },
                },
            };
            let _ = reports.send(report);
        });
    }

    pub(super) fn checkpoint_complete(&mut self, id: CheckpointId) -> TaskResult<()> {
        for op in &mut self.chain {
            op.checkpoint_complete(id)?;
        }
        Ok(())
    }
}

/// The rows of an unaligned checkpoint in flight: `[input u32][length u32][frame]`, little
/// endian, each frame the shuffle wire format (checksummed).
pub(super) fn encode_in_flight(rows: &[(usize, ChangeBatch)]) -> TaskResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut frame = Vec::new();
    for (input, batch) in rows {
        frame.clear();
        weir_shuffle_service::wire::encode(&StreamEvent::Data(batch.clone()), &mut frame)
            .map_err(|e| TaskError::Checkpoint(format!("cannot encode in-flight rows: {e}")))?;
        out.extend_from_slice(&(*input as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

fn decode_in_flight(bytes: &[u8], path: &str) -> TaskResult<Vec<(usize, ChangeBatch)>> {
    let corrupt = |why: &str| TaskError::Checkpoint(format!("in-flight rows at {path} are corrupt: {why}"));
    let mut rows = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(8).ok_or_else(|| corrupt("truncated header"))?;
        let input = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        let (frame, tail) = tail.split_at_checked(len).ok_or_else(|| corrupt("truncated frame"))?;
        match weir_shuffle_service::wire::decode(frame).map_err(|e| corrupt(&e.to_string()))? {
            StreamEvent::Data(batch) => rows.push((input, batch)),
            _ => return Err(corrupt("a frame that is not rows")),
        }
        rest = tail;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    fn rows(values: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from(values.to_vec()));
        ChangeBatch::inserts(RecordBatch::try_new(schema, vec![column]).expect("a valid batch"))
    }

    #[test]
    fn in_flight_rows_come_back_with_their_inputs() {
        let recorded = vec![(0, rows(&[1, 2, 3])), (1, rows(&[4])), (0, rows(&[]))];
        let bytes = encode_in_flight(&recorded).expect("encodes");
        let decoded = decode_in_flight(&bytes, "in-flight").expect("decodes");
        assert_eq!(decoded.len(), recorded.len());
        for ((input, batch), (decoded_input, decoded_batch)) in recorded.iter().zip(&decoded) {
            assert_eq!(input, decoded_input);
            assert_eq!(batch.data, decoded_batch.data);
        }
        assert!(decode_in_flight(&[], "in-flight").expect("nothing recorded").is_empty());
    }

    #[test]
    fn truncated_in_flight_rows_are_corrupt() {
        let bytes = encode_in_flight(&[(0, rows(&[1, 2, 3]))]).expect("encodes");
        for cut in [3, 8, bytes.len() - 1] {
            let error = decode_in_flight(&bytes[..cut], "chk-1/in-flight").expect_err("corrupt");
            assert!(error.to_string().contains("chk-1/in-flight are corrupt"), "{error}");
        }
    }
}
