//! Between the parts of an attempt spread over several workers: the lead part runs the
//! attempt's checkpoint coordinator for every subtask; a member sends it its tasks' reports
//! (`POST` [`REPORT_PATH`] [`PartReport`]) and receives its checkpoint triggers and completions
//! (`POST` [`TRIGGER_PATH`], [`COMPLETE_PATH`] [`CheckpointNote`]). Every message carries the
//! worker key as its bearer, as the control plane's do. Both ends are workers, so these
//! types are the workers' own; the runtime sees them as channels ([`PartLink`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, UnboundedSender};
use weir_dataflow::ids::CheckpointId;
use weir_dataflow::wire::{AttemptRef, DeployPart, ErrorCode};

use super::Worker;
use super::endpoint::{EndpointError, request};
use crate::attempt::AttemptPart;
use crate::checkpoint::TaskReport;
use crate::runtime::PartLink;

/// A member's task report to the lead.
pub const REPORT_PATH: &str = "/checkpoints/report";
/// From the lead to the members: trigger a checkpoint at your sources.
pub const TRIGGER_PATH: &str = "/checkpoints/trigger";
/// From the lead to the members: a checkpoint completed (exactly-once sinks publish).
pub const COMPLETE_PATH: &str = "/checkpoints/complete";

/// A checkpoint message from the lead to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointNote {
    pub attempt: AttemptRef,
    pub checkpoint: CheckpointId,
}

/// A member's task report for the lead's coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartReport {
    pub attempt: AttemptRef,
    pub report: TaskReport,
}

/// Where a spread attempt's checkpoint messages from the other parts go in this process.
pub(super) enum Inbound {
    /// The lead part: members' task reports, for its coordinator.
    Lead { reports: UnboundedSender<TaskReport> },
    /// A member part: the lead's triggers and completions.
    Member { triggers: UnboundedSender<CheckpointId>, completed: UnboundedSender<CheckpointId> },
}

pub(super) fn routes() -> axum::Router<Arc<Worker>> {
    axum::Router::new()
        .route(REPORT_PATH, post(report))
        .route(TRIGGER_PATH, post(trigger))
        .route(COMPLETE_PATH, post(complete))
}

/// Wires this worker's part of a spread attempt: channels for its runtime, and tasks that carry
/// what goes out to the other parts over HTTP.
pub(super) fn link(worker: &Arc<Worker>, attempt: &AttemptRef, part: DeployPart) -> (AttemptPart, Inbound) {
    let subtasks = part.subtasks.iter().copied().collect();
    let (link, inbound) = match part.lead {
        None => {
            let (reports, from_members) = mpsc::unbounded_channel();
            let (to_trigger, triggers) = mpsc::unbounded_channel();
            let (to_complete, completions) = mpsc::unbounded_channel();
            for (mut notes, path) in [(triggers, TRIGGER_PATH), (completions, COMPLETE_PATH)] {
                let (worker, attempt, members) = (worker.clone(), attempt.clone(), part.members.clone());
                tokio::spawn(async move {
                    while let Some(checkpoint) = notes.recv().await {
                        let note = CheckpointNote { attempt: attempt.clone(), checkpoint };
                        for member in &members {
                            worker.send_to_part(member, path, &note).await;
                        }
                    }
                });
            }
            let link = PartLink::Lead { reports: from_members, triggers: to_trigger, completed: to_complete };
            (link, Inbound::Lead { reports })
        }
        Some(lead) => {
            let (to_lead, mut reports) = mpsc::unbounded_channel::<TaskReport>();
            let (triggers, from_lead) = mpsc::unbounded_channel();
            let (completed, completions) = mpsc::unbounded_channel();
            let (worker, attempt) = (worker.clone(), attempt.clone());
            tokio::spawn(async move {
                while let Some(report) = reports.recv().await {
                    let message = PartReport { attempt: attempt.clone(), report };
                    worker.send_to_part(&lead, REPORT_PATH, &message).await;
                }
            });
            let link = PartLink::Member { reports: to_lead, triggers: from_lead, completed: completions };
            (link, Inbound::Member { triggers, completed })
        }
    };
    let part = AttemptPart {
        subtasks,
        link,
        shuffle: part.shuffle,
        transport: worker.transport.clone(),
        namespace: part.namespace,
        token: part.token,
    };
    (part, inbound)
}

impl Worker {
    /// POSTs `body` to another part's task endpoint, trying again for a few seconds (the lead
    /// is deployed after its members, and may not know the attempt for a moment).
    async fn send_to_part<B: Serialize>(&self, address: &str, path: &str, body: &B) {
        let url = format!("{}{path}", self.transport.url(address));
        for _ in 0..50 {
            let sent = self.client.post(&url).bearer_auth(self.key.reveal()).json(body).send().await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => tracing::debug!(%url, status = %response.status(), "a part refused a message"),
                Err(error) => tracing::debug!(%url, %error, "a part is unreachable"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(%url, "a message to another part of the attempt was lost; the attempt will fail");
    }

    /// What `pick` takes of `attempt`'s inbound channels, when it is a part here.
    fn inbound<T>(&self, attempt: &AttemptRef, pick: impl FnOnce(&Inbound) -> Option<T>) -> Result<T, EndpointError> {
        let attempts = self.lock();
        attempts.get(attempt).and_then(|a| a.link.as_ref()).and_then(pick).ok_or_else(|| {
            let detail = format!("attempt {} of job {} has no such part here", attempt.attempt, attempt.job);
            EndpointError::new(ErrorCode::UnknownAttempt, detail)
        })
    }
}

async fn report(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    let message: PartReport = request(&worker, &headers, &body)?;
    let reports = worker.inbound(&message.attempt, |link| match link {
        Inbound::Lead { reports } => Some(reports.clone()),
        Inbound::Member { .. } => None,
    })?;
    let _ = reports.send(message.report);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn trigger(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    to_member(&worker, &headers, &body, Note::Trigger)
}

async fn complete(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, EndpointError> {
    to_member(&worker, &headers, &body, Note::Complete)
}

/// What a lead's checkpoint note to a member says.
enum Note {
    Trigger,
    Complete,
}

/// Hands a lead's checkpoint note to this member part's runtime.
fn to_member(worker: &Worker, headers: &HeaderMap, body: &[u8], kind: Note) -> Result<Response, EndpointError> {
    let note: CheckpointNote = request(worker, headers, body)?;
    let channel = worker.inbound(&note.attempt, |link| match (link, kind) {
        (Inbound::Member { triggers, .. }, Note::Trigger) => Some(triggers.clone()),
        (Inbound::Member { completed, .. }, Note::Complete) => Some(completed.clone()),
        (Inbound::Lead { .. }, _) => None,
    })?;
    let _ = channel.send(note.checkpoint);
    Ok(StatusCode::NO_CONTENT.into_response())
}
