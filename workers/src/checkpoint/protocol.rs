//! The checkpoint protocol's decisions, as plain functions over plain data: when to trigger a
//! checkpoint, when one is complete, when a failure ends the job. No clock, no store, no
//! channels: the caller passes the time in and carries the [`Decision`]s out (the
//! [`super::coordinator::Coordinator`] is that shell), so every rule is tested without a runtime.
//!
//! One checkpoint is in flight at a time (Flink's default `max-concurrent-checkpoints`). A
//! checkpoint that a task declines, that times out, or whose metadata cannot be committed is
//! dropped and the job goes on, until more than `tolerable` fail in a row — or at once when a
//! task declines with a failure that no later checkpoint can mend (its state was fenced by a
//! newer writer): a job that can no longer checkpoint fails visibly instead of running on
//! without checkpoints.

use std::collections::HashMap;
use std::time::Duration;

use weir_dataflow::ids::{CheckpointId, SubtaskIndex, VertexId};
use weir_dataflow::wire::{ErrorCode, Failure};
use weir_state_store::{CompletedCheckpoint, SourcePosition, StateHandle};

use super::TaskReport;

/// A task of the job, by vertex and subtask.
pub type TaskKey = (VertexId, SubtaskIndex);

/// What the protocol decided; the shell carries it out.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Trigger checkpoint `id` at every source subtask.
    Trigger { id: CheckpointId },
    /// Every task acknowledged: commit this checkpoint (then report
    /// [`Protocol::committed`] or [`Protocol::commit_failed`]).
    Commit(CompletedCheckpoint),
    /// The job must fail.
    Fail(Failure),
}

struct Pending {
    id: CheckpointId,
    started_ms: i64,
    acks: HashMap<TaskKey, (Option<StateHandle>, serde_json::Value)>,
}

/// The state of one job's checkpointing.
pub struct Protocol {
    tasks: usize,
    finished: HashMap<TaskKey, serde_json::Value>,
    pending: Option<Pending>,
    next_id: CheckpointId,
    /// Checkpoints failed in a row.
    failures: u32,
    tolerable: u32,
    timeout: Duration,
}

impl Protocol {
    /// The protocol for a job of `tasks` tasks whose next checkpoint is `next_id`.
    pub fn new(tasks: usize, next_id: CheckpointId, tolerable: u32, timeout: Duration) -> Protocol {
        Protocol { tasks, finished: HashMap::new(), pending: None, next_id, failures: 0, tolerable, timeout }
    }

    /// Whether a checkpoint is in flight.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether every task has finished (the last checkpoint has been decided).
    pub fn all_finished(&self) -> bool {
        self.finished.len() == self.tasks
    }

    /// The interval has passed (or a savepoint is wanted): trigger the next checkpoint, unless
    /// one is in flight and has not timed out.
    pub fn trigger(&mut self, now_ms: i64) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if let Some(pending) = &self.pending {
            if now_ms.saturating_sub(pending.started_ms) < self.timeout.as_millis() as i64 {
                return decisions;
            }
            let id = pending.id;
            self.pending = None;
            decisions.extend(self.failed(id, &Failure::new(ErrorCode::TaskFailed, "it timed out")));
        }
        let id = self.start(now_ms);
        decisions.push(Decision::Trigger { id });
        decisions
    }

    /// A task's report at `now_ms`.
    pub fn report(&mut self, report: TaskReport, now_ms: i64) -> Vec<Decision> {
        match report {
            TaskReport::Ack { checkpoint, vertex, subtask, handle, position } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == checkpoint) {
                    p.acks.insert((vertex, subtask), (handle, position));
                }
            }
            TaskReport::Decline { checkpoint, failure } => {
                if self.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                    self.pending = None;
                    return self.failed(checkpoint, &failure);
                }
            }
            TaskReport::Finished { vertex, subtask, position, last_barrier } => {
                // A checkpoint whose barrier the task did emit gets its own acknowledgement.
                if let Some(p) = self.pending.as_mut().filter(|p| last_barrier.is_none_or(|b| b < p.id)) {
                    p.acks.entry((vertex, subtask)).or_insert((None, position.clone()));
                }
                self.finished.insert((vertex, subtask), position);
                if self.all_finished() {
                    // The job is done: one last checkpoint records that every task finished.
                    self.pending = None;
                    self.start(now_ms);
                }
            }
        }
        self.complete_if_acknowledged().into_iter().collect()
    }

    /// The checkpoint was committed: the failure count starts again.
    pub fn committed(&mut self) {
        self.failures = 0;
    }

    /// The checkpoint's metadata could not be committed.
    pub fn commit_failed(&mut self, id: CheckpointId, failure: &Failure) -> Vec<Decision> {
        let reason =
            Failure { message: format!("its metadata could not be committed: {}", failure.message), ..failure.clone() };
        self.failed(id, &reason)
    }

    fn start(&mut self, now_ms: i64) -> CheckpointId {
        let id = self.next_id;
        self.next_id = CheckpointId(id.0 + 1);
        let mut pending = Pending { id, started_ms: now_ms, acks: HashMap::new() };
        for (task, position) in &self.finished {
            // A task that has finished stands in with its final position.
            pending.acks.insert(*task, (None, position.clone()));
        }
        self.pending = Some(pending);
        id
    }

    fn complete_if_acknowledged(&mut self) -> Option<Decision> {
        if self.pending.as_ref().is_none_or(|p| p.acks.len() < self.tasks) {
            return None;
        }
        let p = self.pending.take().expect("checked above");
        let mut checkpoint = CompletedCheckpoint {
            id: p.id,
            // Flink's checkpoint timestamp: when it was triggered.
            timestamp_millis: p.started_ms,
            is_savepoint: false,
            source_positions: Vec::with_capacity(p.acks.len()),
            state_handles: Vec::new(),
        };
        let mut acks: Vec<_> = p.acks.into_iter().collect();
        acks.sort_by_key(|((v, s), _)| (*v, *s));
        for ((vertex, subtask), (handle, position)) in acks {
            checkpoint.source_positions.push(SourcePosition { vertex, subtask, position });
            checkpoint.state_handles.extend(handle);
        }
        Some(Decision::Commit(checkpoint))
    }

    fn failed(&mut self, id: CheckpointId, failure: &Failure) -> Vec<Decision> {
        self.failures += 1;
        tracing::warn!(checkpoint = %id, reason = %failure.message, failures = self.failures, "checkpoint failed");
        if failure.code == ErrorCode::StateFenced {
            let message = format!(
                "checkpoint {id} failed because {}; the job can no longer checkpoint (another writer took over its \
                 state) and stops",
                failure.message
            );
            return vec![Decision::Fail(Failure::new(ErrorCode::StateFenced, message))];
        }
        if self.failures > self.tolerable {
            let message = format!(
                "checkpoint {id} failed because {}; {} checkpoints failed in a row, more than \
                 execution.checkpointing.tolerable-failed-checkpoints = {}",
                failure.message, self.failures, self.tolerable
            );
            return vec![Decision::Fail(Failure::new(ErrorCode::TaskFailed, message))];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn task(v: u32, s: u32) -> TaskKey {
        (VertexId(v), SubtaskIndex(s))
    }

    fn ack(id: u64, (vertex, subtask): TaskKey) -> TaskReport {
        TaskReport::Ack {
            checkpoint: CheckpointId(id),
            vertex,
            subtask,
            handle: None,
            position: serde_json::json!({ "at": id }),
        }
    }

    fn decline(id: u64, code: ErrorCode) -> TaskReport {
        TaskReport::Decline { checkpoint: CheckpointId(id), failure: Failure::new(code, "no") }
    }

    fn committed_id(decisions: &[Decision]) -> Option<CheckpointId> {
        decisions.iter().find_map(|d| match d {
            Decision::Commit(c) => Some(c.id),
            _ => None,
        })
    }

    #[test]
    fn a_checkpoint_completes_once_every_task_acknowledged_it() {
        let mut protocol = Protocol::new(2, CheckpointId(5), 0, MINUTE);
        assert_eq!(protocol.trigger(1_000), vec![Decision::Trigger { id: CheckpointId(5) }]);
        // One at a time: a tick while it is in flight triggers nothing.
        assert!(protocol.trigger(2_000).is_empty());
        assert!(protocol.report(ack(5, task(0, 0)), 2_100).is_empty());
        // An acknowledgement of another checkpoint counts for nothing.
        assert!(protocol.report(ack(4, task(0, 1)), 2_150).is_empty());
        let decisions = protocol.report(ack(5, task(0, 1)), 2_200);
        assert_eq!(committed_id(&decisions), Some(CheckpointId(5)));
        protocol.committed();
        assert!(!protocol.is_pending());
        assert_eq!(protocol.trigger(3_000), vec![Decision::Trigger { id: CheckpointId(6) }]);
    }

    #[test]
    fn failures_are_tolerated_up_to_the_limit_then_fail_the_job() {
        let mut protocol = Protocol::new(1, CheckpointId(1), 1, MINUTE);
        protocol.trigger(0);
        assert!(protocol.report(decline(1, ErrorCode::TaskFailed), 1).is_empty(), "the first is tolerated");
        protocol.trigger(2);
        let decisions = protocol.report(decline(2, ErrorCode::TaskFailed), 3);
        assert!(matches!(&decisions[..], [Decision::Fail(f)] if f.message.contains("2 checkpoints failed in a row")));
    }

    #[test]
    fn a_fenced_task_fails_the_job_at_once() {
        let mut protocol = Protocol::new(1, CheckpointId(1), 10, MINUTE);
        protocol.trigger(0);
        let decisions = protocol.report(decline(1, ErrorCode::StateFenced), 1);
        assert!(matches!(&decisions[..], [Decision::Fail(f)] if f.code == ErrorCode::StateFenced && !f.retryable));
    }

    #[test]
    fn a_checkpoint_that_times_out_is_dropped_and_the_next_one_triggered() {
        let mut protocol = Protocol::new(1, CheckpointId(1), 5, Duration::from_secs(10));
        protocol.trigger(0);
        assert!(protocol.trigger(9_999).is_empty());
        assert_eq!(protocol.trigger(10_000), vec![Decision::Trigger { id: CheckpointId(2) }]);
        assert!(protocol.report(ack(1, task(0, 0)), 10_001).is_empty(), "the timed-out one is gone");
        assert_eq!(committed_id(&protocol.report(ack(2, task(0, 0)), 10_002)), Some(CheckpointId(2)));
    }

    #[test]
    fn when_every_task_finishes_a_last_checkpoint_covers_them() {
        let mut protocol = Protocol::new(2, CheckpointId(1), 0, MINUTE);
        protocol.trigger(0);
        let finished = |(vertex, subtask): TaskKey, last_barrier| TaskReport::Finished {
            vertex,
            subtask,
            position: serde_json::json!("end"),
            last_barrier,
        };
        // The first task emitted checkpoint 1's barrier before it finished: it still acknowledges 1.
        assert!(protocol.report(finished(task(0, 0), Some(CheckpointId(1))), 1).is_empty());
        assert!(protocol.report(ack(1, task(0, 0)), 2).is_empty());
        let decisions = protocol.report(finished(task(0, 1), None), 3);
        assert!(protocol.all_finished());
        let Some(Decision::Commit(last)) = decisions.into_iter().next() else { panic!("a last checkpoint") };
        assert_eq!(last.id, CheckpointId(2));
        assert_eq!(last.source_positions.len(), 2);
    }
}
