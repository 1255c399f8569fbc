//! The checkpoint coordinator of one job: the async shell around the pure
//! [`super::protocol::Protocol`]. It reads the clock, triggers checkpoints every interval at the
//! sources, feeds the tasks' reports to the protocol, and carries out what it decides: commits a
//! completed checkpoint (create-only, with monotonic ids, so a zombie coordinator can never
//! overwrite a newer one), announces it, writes the savepoints asked for, or fails the job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use weir_dataflow::clock::{Clock, SystemClock};
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::wire::SavepointFormat;
use weir_state_store::{CheckpointStore, CompletedCheckpoint, StateLocation};

use super::protocol::{Decision, Protocol, TaskKey};
use super::{CheckpointSetup, TaskReport};
use crate::error::{TaskError, TaskResult};

/// How long a checkpoint may take before it is declined (Flink's `execution.checkpointing.timeout`).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// A user's request for a savepoint: written to `target` from the next checkpoint that
/// completes; the reply is the savepoint or why there is none.
pub struct SavepointRequest {
    pub target: StateLocation,
    /// The job stops after this savepoint: no checkpoint may commit past it meanwhile.
    pub stop: bool,
    pub format: SavepointFormat,
    pub reply: oneshot::Sender<TaskResult<CompletedCheckpoint>>,
}

pub struct Coordinator {
    setup: CheckpointSetup,
    store: CheckpointStore,
    protocol: Protocol,
    clock: Arc<dyn Clock>,
    /// One per source subtask: where checkpoints are triggered.
    triggers: Vec<mpsc::UnboundedSender<CheckpointId>>,
    reports: mpsc::UnboundedReceiver<TaskReport>,
    completed: watch::Sender<Option<CheckpointId>>,
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
        let protocol = Protocol::new(tasks.len(), next_id, setup.config.tolerable_failures, CHECKPOINT_TIMEOUT);
        Ok(Coordinator {
            setup,
            store,
            protocol,
            clock: Arc::new(SystemClock),
            triggers,
            reports,
            completed,
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
            let decisions = tokio::select! {
                _ = ticker.tick() => self.protocol.trigger(self.clock.now_millis()),
                Some(request) = next_request(&mut self.savepoint_requests) => {
                    self.savepoints_wanted.push(request);
                    // Now rather than at the next tick, unless one is under way already.
                    if self.protocol.is_pending() { Vec::new() } else { self.protocol.trigger(self.clock.now_millis()) }
                }
                report = self.reports.recv() => match report {
                    Some(report) => self.protocol.report(report, self.clock.now_millis()),
                    // Every task is gone without finishing: the job failed and says why elsewhere.
                    None => return Ok(None),
                },
            };
            let last = self.carry_out(decisions).await?;
            if self.protocol.all_finished() {
                return Ok(last);
            }
        }
    }

    /// Carries out the protocol's decisions; answers the checkpoint committed, if one was.
    async fn carry_out(&mut self, decisions: Vec<Decision>) -> TaskResult<Option<CompletedCheckpoint>> {
        let mut committed = None;
        let mut queue = std::collections::VecDeque::from(decisions);
        while let Some(decision) = queue.pop_front() {
            match decision {
                Decision::Trigger { id } => {
                    for trigger in &self.triggers {
                        // A source that has ended has reported so; its part is its final position.
                        let _ = trigger.send(id);
                    }
                    tracing::debug!(checkpoint = %id, "checkpoint triggered");
                }
                Decision::Commit(checkpoint) => match self.store.commit(&checkpoint).await {
                    Ok(_) => {
                        self.protocol.committed();
                        self.announce(&checkpoint).await;
                        committed = Some(checkpoint);
                    }
                    Err(e) => queue.extend(self.protocol.commit_failed(checkpoint.id, &TaskError::from(e).failure())),
                },
                Decision::Fail(failure) => return Err(TaskError::Failed(failure)),
            }
        }
        Ok(committed)
    }

    /// Tells the tasks, the listener and the savepoints waiting that `checkpoint` is committed.
    async fn announce(&mut self, checkpoint: &CompletedCheckpoint) {
        let elapsed_ms = self.clock.now_millis().saturating_sub(checkpoint.timestamp_millis);
        tracing::info!(checkpoint = %checkpoint.id, elapsed_ms, "checkpoint completed");
        let _ = self.completed.send(Some(checkpoint.id));
        if let Some(listener) = &self.listener {
            let _ = listener.send(checkpoint.clone());
        }
        for request in std::mem::take(&mut self.savepoints_wanted) {
            // Pinned now, before retention may retire the checkpoint. Made self-contained beside
            // the job, which checkpoints on meanwhile; unless the job stops at this savepoint.
            match weir_state_store::savepoint::begin(&self.setup.location, &request.target, checkpoint).await {
                Ok(pinned) if request.format == SavepointFormat::Native => {
                    let _ = request.reply.send(pinned.by_reference().await.map_err(TaskError::from));
                }
                Ok(pinned) if request.stop => {
                    let _ = request.reply.send(pinned.finish().await.map_err(TaskError::from));
                }
                Ok(pinned) => {
                    tokio::spawn(async move {
                        let _ = request.reply.send(pinned.finish().await.map_err(TaskError::from));
                    });
                }
                Err(e) => {
                    let _ = request.reply.send(Err(TaskError::from(e)));
                }
            }
        }
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
