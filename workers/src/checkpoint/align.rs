//! Barrier alignment, as pure decision logic: which channels to hold back and when a task has a
//! checkpoint's barrier from all of its inputs.
//!
//! Aligned checkpoints (Flink's default): once a barrier arrives on a channel, that channel's
//! later events wait until the barrier has arrived on every channel still open; then the task
//! snapshots and releases them. A channel that has ended counts as aligned: everything it will
//! ever send is in front of its end. A barrier of a newer checkpoint while an older one is
//! still aligning abandons the older one (it can no longer complete).

use weir_dataflow::ids::CheckpointId;

#[derive(Debug, PartialEq, Eq)]
pub enum AlignStep {
    /// Every open channel has delivered the barrier: snapshot now, then release held events.
    Complete(CheckpointId),
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
}

impl BarrierAligner {
    pub fn new(channels: usize) -> Self {
        BarrierAligner { ended: vec![false; channels], current: None, received: vec![false; channels], last: None }
    }

    /// Whether events of `channel` must wait: it delivered the barrier being aligned.
    pub fn is_blocked(&self, channel: usize) -> bool {
        self.current.is_some() && self.received[channel]
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
            return Some(AlignStep::Complete(id));
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
    fn one_channel_completes_at_once() {
        let mut a = BarrierAligner::new(1);
        assert_eq!(a.on_barrier(0, C1), vec![AlignStep::Complete(C1)]);
    }
}
