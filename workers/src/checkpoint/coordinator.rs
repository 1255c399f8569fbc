//! The checkpoint coordinator of one job: triggers a checkpoint every interval at the sources,
//! collects every subtask's acknowledgement, commits the completed checkpoint (create-only, with
//! monotonic ids, so a zombie coordinator can never overwrite a newer one) and announces it.
//! A checkpoint that a task declines, or that fails to commit, is dropped and the job goes on,
//! until more than `execution.checkpointing.tolerable-failed-checkpoints` fail in a row.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use weir_dataflow::ids::{CheckpointId, SubtaskIndex, VertexId};
use weir_state_store::{CheckpointStore, CompletedCheckpoint, SourcePosition, StateHandle, StateLocation};

use super::{CheckpointSetup, TaskReport};
use crate::error::{TaskError, TaskResult};

/// How long a checkpoint may take before it is declined (Flink's `execution.checkpointing.timeout`).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

type TaskKey = (VertexId, SubtaskIndex);

struct Pending {
    id: CheckpointId,
    started: tokio::time::Instant,
    timestamp_millis: i64,
    acks: HashMap<TaskKey, (Option<StateHandle>, serde_json::Value)>,
}

/// A user's request for a savepoint: written to `target` from the next checkpoint that
/// completes; the reply is the savepoint or why there is none.
pub struct SavepointRequest {
    pub target: StateLocation,
    pub reply: oneshot::Sender<TaskResult<CompletedCheckpoint>>,
}

pub struct Coordinator {
    setup: CheckpointSetup,
    store: CheckpointStore,
    tasks: Vec<TaskKey>,
    /// One per source subtask: where checkpoints are triggered.
    triggers: Vec<mpsc::UnboundedSender<CheckpointId>>,
    reports: mpsc::UnboundedReceiver<TaskReport>,
    completed: watch::Sender<Option<CheckpointId>>,
    finished: HashMap<TaskKey, serde_json::Value>,
    pending: Option<Pending>,
    next_id: CheckpointId,
    failures: u32,
    savepoint_requests: Option<mpsc::UnboundedReceiver<SavepointRequest>>,
    /// Requests waiting for the next completed checkpoint.
    savepoints_wanted: Vec<SavepointRequest>,
    /// Told of every committed checkpoint: whoever manages the job (the control plane's
    /// dispatcher) records it beside the state store's own metadata.
    listener: Option<mpsc::UnboundedSender<CompletedCheckpoint>>,
}

impl Coordinator {
    pub async fn new(
        setup: CheckpointSetup,
        tasks: Vec<TaskKey>,
        triggers: Vec<mpsc::UnboundedSender<CheckpointId>>,
        reports: mpsc::UnboundedReceiver<TaskReport>,
        completed: watch::Sender<Option<CheckpointId>>,
    ) -> TaskResult<Coordinator> {
        let store = CheckpointStore::new(setup.location.clone(), setup.job.clone(), setup.config.num_retained);
        // Ids only grow, across runs too: the next id is past every id ever committed here.
        let newest = store.list_ids().await?.last().copied();
        let restored = setup.restore.as_ref().map(|c| c.id);
        let next_id = CheckpointId(newest.max(restored).map_or(1, |id| id.0 + 1));
        Ok(Coordinator {
            setup,
            store,
            tasks,
            triggers,
            reports,
            completed,
            finished: HashMap::new(),
            pending: None,
            next_id,
            failures: 0,
            savepoint_requests: None,
            savepoints_wanted: Vec::new(),
            listener: None,
        })
    }

    /// Takes savepoint requests from `requests` while the job runs.
    pub fn with_savepoints(mut self, requests: mpsc::UnboundedReceiver<SavepointRequest>) -> Self {
        self.savepoint_requests = Some(requests);
        self
    }

    /// Tells `listener` of every checkpoint once it is committed (a closed listener is ignored:
    /// the job does not depend on anyone watching it).
    pub fn with_listener(mut self, listener: mpsc::UnboundedSender<CompletedCheckpoint>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Runs until every task has finished; commits a last checkpoint then, so what the tasks did
    /// last is covered, and returns it.
    pub async fn run(mut self) -> TaskResult<Option<CompletedCheckpoint>> {
        let mut ticker = tokio::time::interval(self.setup.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.trigger()?,
                Some(request) = next_request(&mut self.savepoint_requests) => {
                    self.savepoints_wanted.push(request);
                    // Now rather than at the next tick, unless one is under way already.
                    if self.pending.is_none() {
                        self.trigger()?;
                    }
                }
                report = self.reports.recv() => match report {
                    Some(report) => {
                        if let Some(done) = self.handle(report).await? {
                            return Ok(done);
                        }
                    }
                    // Every task is gone without finishing: the job failed and says why elsewhere.
                    None => return Ok(None),
                },
            }
        }
    }

    fn trigger(&mut self) -> TaskResult<()> {
        if let Some(p) = &self.pending {
            if p.started.elapsed() < CHECKPOINT_TIMEOUT {
                // One checkpoint at a time (Flink's default max-concurrent-checkpoints).
                return Ok(());
            }
            let id = p.id;
            self.pending = None;
            self.failed(id, "it timed out")?;
        }
        let id = self.next_id;
        self.next_id = CheckpointId(id.0 + 1);
        let timestamp_millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut pending = Pending { id, started: tokio::time::Instant::now(), timestamp_millis, acks: HashMap::new() };
        for (task, position) in &self.finished {
            pending.acks.insert(*task, (None, position.clone()));
        }
        self.pending = Some(pending);
        for trigger in &self.triggers {
            // A source that has ended has reported so; its part is its final position.
            let _ = trigger.send(id);
        }
        tracing::debug!(checkpoint = %id, "checkpoint triggered");
        Ok(())
    }

    /// Handles one report; returns `Some` when the job has finished.
    async fn handle(&mut self, report: TaskReport) -> TaskResult<Option<Option<CompletedCheckpoint>>> {
        match report {
            TaskReport::Ack { checkpoint, vertex, subtask, handle, position } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == checkpoint) {
                    p.acks.insert((vertex, subtask), (handle, position));
                }
            }
            TaskReport::Decline { checkpoint, reason } => {
                if self.pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                    self.pending = None;
                    self.failed(checkpoint, &reason)?;
                }
            }
            TaskReport::Finished { vertex, subtask, position, last_barrier } => {
                // A checkpoint whose barrier the task did emit gets its own acknowledgement.
                if let Some(p) = self.pending.as_mut().filter(|p| last_barrier.is_none_or(|b| b < p.id)) {
                    p.acks.entry((vertex, subtask)).or_insert((None, position.clone()));
                }
                self.finished.insert((vertex, subtask), position);
                if self.finished.len() == self.tasks.len() {
                    // The job is done: one last checkpoint records that every task finished.
                    self.pending = None;
                    self.trigger()?;
                    let last = self.try_complete().await?;
                    return Ok(Some(last));
                }
            }
        }
        self.try_complete().await?;
        Ok(None)
    }

    async fn try_complete(&mut self) -> TaskResult<Option<CompletedCheckpoint>> {
        if self.pending.as_ref().is_none_or(|p| p.acks.len() < self.tasks.len()) {
            return Ok(None);
        }
        let p = self.pending.take().expect("checked above");
        let mut checkpoint = CompletedCheckpoint {
            id: p.id,
            timestamp_millis: p.timestamp_millis,
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
        match self.store.commit(&checkpoint).await {
            Ok(_) => {
                self.failures = 0;
                tracing::info!(checkpoint = %checkpoint.id, elapsed_ms = p.started.elapsed().as_millis() as u64, "checkpoint completed");
                let _ = self.completed.send(Some(checkpoint.id));
                if let Some(listener) = &self.listener {
                    let _ = listener.send(checkpoint.clone());
                }
                for request in std::mem::take(&mut self.savepoints_wanted) {
                    let written = weir_state_store::checkpoint::write_savepoint(
                        &self.setup.location,
                        &request.target,
                        &checkpoint,
                    )
                    .await
                    .map_err(TaskError::from);
                    let _ = request.reply.send(written);
                }
                Ok(Some(checkpoint))
            }
            Err(e) => {
                self.failed(checkpoint.id, &format!("its metadata could not be committed: {e}"))?;
                Ok(None)
            }
        }
    }

    fn failed(&mut self, id: CheckpointId, reason: &str) -> TaskResult<()> {
        self.failures += 1;
        tracing::warn!(checkpoint = %id, reason, failures = self.failures, "checkpoint failed");
        if self.failures > self.setup.config.tolerable_failures {
            return Err(TaskError::Checkpoint(format!(
                "checkpoint {id} failed because {reason}; {} checkpoints failed in a row, more than \
                 execution.checkpointing.tolerable-failed-checkpoints = {}",
                self.failures, self.setup.config.tolerable_failures
            )));
        }
        Ok(())
    }
}

/// The next savepoint request, or never when there is no channel (or it has closed).
async fn next_request(requests: &mut Option<mpsc::UnboundedReceiver<SavepointRequest>>) -> Option<SavepointRequest> {
    match requests {
        Some(r) => match r.recv().await {
            Some(request) => Some(request),
            None => {
                *requests = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}
