//! One process's part of a job whose subtasks run in several processes, over a shuffle service
//! they share: which subtasks it runs ([`JobPart`]), and how its checkpoint traffic crosses to
//! the other parts ([`PartLink`]). The lead part runs the checkpoint coordinator for every
//! subtask of the job; the others forward their tasks' reports to it and pass its triggers and
//! completions on to their tasks. `service::parts` carries the links' channels over the wire.

use std::collections::BTreeSet;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use weir_dataflow::ids::CheckpointId;

use crate::checkpoint::TaskReport;

/// One process's part of a job whose subtasks run in several processes (over a shuffle service
/// they share): the subtask indices it runs, and how its checkpoint traffic crosses to the
/// others. Slot sharing: a process runs subtask `i` of every vertex for each `i` it holds.
pub struct JobPart {
    pub subtasks: BTreeSet<u32>,
    /// Taken by [`run_local`](super::run_local) when it starts.
    pub link: Option<PartLink>,
}

/// How a part's checkpoints cross processes; the caller carries the channels' ends over the
/// wire.
pub enum PartLink {
    /// The part that runs the checkpoint coordinator, for every subtask of the job.
    Lead {
        /// Reports of the other parts' tasks.
        reports: UnboundedReceiver<TaskReport>,
        /// Checkpoints to trigger at the other parts' sources.
        triggers: UnboundedSender<CheckpointId>,
        /// Checkpoints completed, for the other parts' tasks.
        completed: UnboundedSender<CheckpointId>,
    },
    /// Another part: its tasks report to the lead, which triggers and completes checkpoints.
    Member {
        reports: UnboundedSender<TaskReport>,
        triggers: UnboundedReceiver<CheckpointId>,
        completed: UnboundedReceiver<CheckpointId>,
    },
}

impl JobPart {
    /// Whether subtask index `subtask` of every vertex runs in this part.
    pub(super) fn runs(&self, subtask: u32) -> bool {
        self.subtasks.contains(&subtask)
    }
}

/// A member part's checkpoint traffic: its tasks' reports go to the lead; the lead's triggers
/// reach its sources and its completions its tasks.
pub(super) fn forward_member(
    mut reports: UnboundedReceiver<TaskReport>,
    to_lead: UnboundedSender<TaskReport>,
    sources: Vec<UnboundedSender<CheckpointId>>,
    mut triggers: UnboundedReceiver<CheckpointId>,
    completed: watch::Sender<Option<CheckpointId>>,
    mut completed_at_lead: UnboundedReceiver<CheckpointId>,
) {
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            if to_lead.send(report).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(id) = triggers.recv().await {
            for source in &sources {
                let _ = source.send(id);
            }
        }
    });
    tokio::spawn(async move {
        while let Some(id) = completed_at_lead.recv().await {
            completed.send_if_modified(|newest| {
                let newer = newest.is_none_or(|n| n < id);
                if newer {
                    *newest = Some(id);
                }
                newer
            });
        }
    });
}

/// The lead part's side of the other parts' checkpoint traffic: their reports join its
/// coordinator's queue, and every completion goes out to them.
pub(super) fn forward_lead(
    mut from_members: UnboundedReceiver<TaskReport>,
    queue: UnboundedSender<TaskReport>,
    mut completed: watch::Receiver<Option<CheckpointId>>,
    to_members: UnboundedSender<CheckpointId>,
) {
    tokio::spawn(async move {
        while let Some(report) = from_members.recv().await {
            if queue.send(report).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while completed.changed().await.is_ok() {
            let newest = *completed.borrow_and_update();
            if let Some(id) = newest
                && to_members.send(id).is_err()
            {
                break;
            }
        }
    });
}
