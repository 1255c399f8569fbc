//! Barrier alignment, as pure decision logic: which channels to hold back and when a task has a
//! checkpoint's barrier from all of its inputs.
//!
//! Aligned checkpoints (Flink's default): once a barrier arrives on a channel, that channel's
//! later events wait until the barrier has arrived on every channel still open; then the task
//! snapshots and releases them. A channel that has ended counts as aligned: everything it will
//! ever send is in front of its end. A barrier of a newer checkpoint while an older one is
//! still aligning abandons the older one (it can no longer complete).
//!
//! Unaligned checkpoints (`execution.checkpointing.unaligned`): the first barrier makes the task
//! snapshot at once and nothing is held back; instead, what the other channels deliver before
//! their barrier is in flight across the snapshot and is recorded with it, to be replayed on
//! restore. The recording ends when every open channel has delivered the barrier.

use weir_dataflow::ids::CheckpointId;

#[derive(Debug, PartialEq, Eq)]
pub enum AlignStep {
    /// Every open channel has delivered the barrier: snapshot now, then release held events.
    Complete(CheckpointId),
    /// Unaligned: the first barrier arrived; snapshot now and start recording the channels
    /// that have not delivered it.
    SnapshotNow(CheckpointId),
    /// Unaligned: every open channel has delivered the barrier; the recording is complete.
    InFlightRecorded(CheckpointId),
    /// A newer barrier overtook this checkpoint; release held events, then keep aligning the new one.
    Abandoned(CheckpointId),
}

#[derive(Debug)]
pub struct BarrierAligner {
    ended: Vec<bool>,
    current: Option<CheckpointId>,
    received: Vec<bool>,
    /// The newest checkpoint this task has snapshotted or abandoned: older barriers are stale.
    last: Option<CheckpointId>,
    unaligned: bool,
}

impl BarrierAligner {
    pub fn new(channels: usize) -> Self {
        BarrierAligner {
            ended: vec![false; channels],
            current: None,
            received: vec![false; channels],
            last: None,
            unaligned: false,
        }
    }

    /// Unaligned checkpoints: snapshot at the first barrier and record what is in flight.
    pub fn unaligned(mut self) -> Self {
        self.unaligned = true;
        self
    }

    /// Whether events of `channel` must wait: it delivered the barrier being aligned.
    pub fn is_blocked(&self, channel: usize) -> bool {
        !self.unaligned && self.current.is_some() && self.received[channel]
    }

    /// Unaligned: whether `channel`'s events are in flight across the snapshot being taken (it
    /// has not delivered the barrier yet), so they must be recorded.
    pub fn is_recording(&self, channel: usize) -> bool {
        self.unaligned && self.current.is_some() && !self.received[channel] && !self.ended[channel]
    }

    pub fn on_barrier(&mut self, channel: usize, id: CheckpointId) -> Vec<AlignStep> {
        let mut steps = Vec::new();
        if self.last.is_some_and(|last| id <= last) {
            return steps;
        }
        match self.current {
            Some(current) if current == id => {}
            Some(current) if current > id => return steps,
            Some(current) => {
                steps.push(AlignStep::Abandoned(current));
                self.last = Some(current);
                self.start(id);
            }
            None => self.start(id),
        }
        if self.unaligned && !self.received.iter().any(|r| *r) {
            steps.push(AlignStep::SnapshotNow(id));
        }
        self.received[channel] = true;
        steps.extend(self.check());
        steps
    }

    /// `channel` ended; if that completes an alignment, says so.
    pub fn on_end(&mut self, channel: usize) -> Option<AlignStep> {
        self.ended[channel] = true;
        self.check()
    }

    fn start(&mut self, id: CheckpointId) {
        self.current = Some(id);
        self.received.iter_mut().for_each(|r| *r = false);
    }

    fn check(&mut self) -> Option<AlignStep> {
        let id = self.current?;
        if self.received.iter().zip(&self.ended).all(|(r, e)| *r || *e) {
            self.current = None;
            self.last = Some(id);
            self.received.iter_mut().for_each(|r| *r = false);
            return Some(if self.unaligned { AlignStep::InFlightRecorded(id) } else { AlignStep::Complete(id) });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: CheckpointId = CheckpointId(1);
    const C2: CheckpointId = CheckpointId(2);

    #[test]
    fn completes_when_every_open_channel_has_the_barrier() {
        let mut a = BarrierAligner::new(3);
        assert!(a.on_barrier(0, C1).is_empty());
        assert!(a.is_blocked(0) && !a.is_blocked(1));
        assert!(a.on_end(2).is_none());
        assert_eq!(a.on_barrier(1, C1), vec![AlignStep::Complete(C1)]);
        assert!(!a.is_blocked(0) && !a.is_blocked(1));
        // A duplicate or stale barrier changes nothing.
        assert!(a.on_barrier(0, C1).is_empty());
        assert!(!a.is_blocked(0));
    }

    #[test]
    fn an_ending_channel_can_complete_an_alignment() {
        let mut a = BarrierAligner::new(2);
        assert!(a.on_barrier(0, C1).is_empty());
        assert_eq!(a.on_end(1), Some(AlignStep::Complete(C1)));
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_checkpoint() {
        let mut a = BarrierAligner::new(2);
        assert!(a.on_barrier(0, C1).is_empty());
        assert_eq!(a.on_barrier(1, C2), vec![AlignStep::Abandoned(C1)]);
        assert!(a.is_blocked(1) && !a.is_blocked(0));
        assert_eq!(a.on_barrier(0, C2), vec![AlignStep::Complete(C2)]);
        assert!(a.on_barrier(0, C1).is_empty(), "the abandoned checkpoint's late barrier is stale");
    }

    #[test]
    fn unaligned_snapshots_at_the_first_barrier_and_records_the_others_until_theirs() {
        let mut a = BarrierAligner::new(3).unaligned();
        assert_eq!(a.on_barrier(1, C1), vec![AlignStep::SnapshotNow(C1)]);
        assert!((0..3).all(|c| !a.is_blocked(c)), "nothing is held back");
        assert!(a.is_recording(0) && !a.is_recording(1) && a.is_recording(2));
        assert!(a.on_end(2).is_none());
        assert!(!a.is_recording(2), "an ended channel has nothing more in flight");
        assert_eq!(a.on_barrier(0, C1), vec![AlignStep::InFlightRecorded(C1)]);
        assert!(!a.is_recording(0));
        assert!(a.on_barrier(1, C1).is_empty(), "stale");
    }

    #[test]
    fn unaligned_with_one_channel_records_nothing() {
        let mut a = BarrierAligner::new(1).unaligned();
        assert_eq!(a.on_barrier(0, C1), vec![AlignStep::SnapshotNow(C1), AlignStep::InFlightRecorded(C1)]);
    }

    #[test]
    fn unaligned_newer_barrier_abandons_the_recording() {
        let mut a = BarrierAligner::new(2).unaligned();
        assert_eq!(a.on_barrier(0, C1), vec![AlignStep::SnapshotNow(C1)]);
        assert_eq!(a.on_barrier(1, C2), vec![AlignStep::Abandoned(C1), AlignStep::SnapshotNow(C2)]);
        assert!(a.is_recording(0));
    }

    #[test]
    fn one_channel_completes_at_once() {
        let mut a = BarrierAligner::new(1);
        assert_eq!(a.on_barrier(0, C1), vec![AlignStep::Complete(C1)]);
    }
}
