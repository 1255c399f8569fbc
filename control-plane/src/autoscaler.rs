//! The autoscaler's decisions: a pure function of a job's shape, its metrics and the time, with
//! no I/O (DESIGN §8). The leader feeds it samples and carries out what it decides.
//!
//! As Flink's Kubernetes-operator autoscaler, per vertex over the metrics window:
//! - the *true processing rate* is records in per second over the busy share of the subtasks'
//!   time: what the vertex could do at its parallelism were it never idle;
//! - the *target rate* of a source is its input rate (records read plus the growth of its
//!   backlog) plus its backlog spread over the catch-up duration; of any other vertex, the
//!   target rates of its inputs times their output-to-input ratios, in topological order;
//! - a vertex whose target rate would keep it busier than `target ± boundary` gets the
//!   parallelism that keeps it at the target utilisation: `ceil(target rate / (true rate per
//!   subtask × target utilisation))`, within the scale-up and scale-down factors and the
//!   vertex bounds, rounded up to a divisor of the max parallelism for a keyed vertex (even key
//!   groups per subtask) when one is in bounds.
//!
//! Against oscillation: the boundary is a dead band (steady load with noise never crosses it);
//! metrics from the stabilisation interval after a rescale are never used; a decision needs a
//! full window of metrics; and a scale-down is made only after it has been wanted for the whole
//! scale-down interval, to the highest parallelism wanted meanwhile (so a dip does not scale
//! down a vertex the next peak needs). A job whose sources have had no input and no backlog for
//! the scale-to-zero idle timeout is suspended.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use weir_dataflow::autoscale::AutoscalerOptions;
use weir_dataflow::ids::VertexId;

/// One vertex of the job as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct VertexShape {
    pub id: VertexId,
    /// The vertices whose output it reads.
    pub inputs: Vec<VertexId>,
    pub parallelism: u32,
    /// The job's max parallelism (key groups).
    pub max_parallelism: u32,
    /// Its input is partitioned by key: a parallelism dividing the key groups is even.
    pub keyed: bool,
}

/// A vertex's counters at one instant, summed over its subtasks; they only grow within a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VertexCounters {
    pub records_in: u64,
    pub records_out: u64,
    /// Milliseconds its subtasks spent processing (not waiting for input or for credit).
    pub busy_ms: u64,
    /// A source's records waiting to be read (files, queue depth, consumer lag).
    pub backlog: Option<u64>,
}

/// Every vertex's counters at `at_ms`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub vertices: BTreeMap<VertexId, VertexCounters>,
}

/// What to do with the job now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Keep,
    /// New parallelism of the vertices that change, and why, one line each.
    Rescale {
        parallelism: BTreeMap<VertexId, u32>,
        reasons: Vec<String>,
    },
    /// Suspend the job until a source's backlog appears (scale to zero).
    Suspend {
        reason: String,
        /// Since when the sources have had nothing: input arriving later wakes the job.
        idle_since_ms: i64,
    },
}

/// The autoscaler of one job.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    options: AutoscalerOptions,
    samples: VecDeque<Sample>,
    /// Samples from before this instant are not used (the last rescale plus stabilisation).
    usable_from_ms: i64,
    /// Vertices a scale-down is wanted for: since when, and the highest parallelism wanted.
    scale_down_wanted: BTreeMap<VertexId, (i64, u32)>,
    /// Since when every source has had no input and no backlog.
    idle_since_ms: Option<i64>,
}

/// How one vertex fared over the window.
#[derive(Clone, Copy, Debug)]
struct Observed {
    rate_in: f64,
    rate_out: f64,
    busy: f64,
    /// Sources: records arriving per second, and the backlog at the end of the window.
    arrival: Option<(f64, f64)>,
}

impl Autoscaler {
    /// An autoscaler for a job started (or rescaled) at `now_ms`.
    pub fn new(options: AutoscalerOptions, now_ms: i64) -> Autoscaler {
        let usable_from_ms = now_ms + millis(options.stabilization_interval);
        Autoscaler {
            options,
            samples: VecDeque::new(),
            usable_from_ms,
            scale_down_wanted: BTreeMap::new(),
            idle_since_ms: None,
        }
    }

    /// Takes a sample; samples older than the window are let go.
    pub fn observe(&mut self, sample: Sample) {
        if sample.at_ms < self.usable_from_ms || self.samples.back().is_some_and(|s| s.at_ms >= sample.at_ms) {
            return;
        }
        self.samples.push_back(sample);
        let window = millis(self.options.metrics_window);
        let newest = self.samples.back().map_or(0, |s| s.at_ms);
        // Keep the newest sample at least a window old, as the window's start.
        while self.samples.len() > 2 && self.samples[1].at_ms <= newest - window {
            self.samples.pop_front();
        }
    }

    /// The job was rescaled (or restarted) at `now_ms`: its old metrics no longer tell anything.
    pub fn rescaled(&mut self, now_ms: i64) {
        self.samples.clear();
        self.usable_from_ms = now_ms + millis(self.options.stabilization_interval);
        self.scale_down_wanted.clear();
        self.idle_since_ms = None;
    }

    /// What to do at `now_ms`, for a job of this shape.
    pub fn decide(&mut self, now_ms: i64, shape: &[VertexShape]) -> Decision {
        if let Some(suspend) = self.idle(now_ms, shape) {
            return suspend;
        }
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else { return Decision::Keep };
        let span_ms = last.at_ms - first.at_ms;
        if !self.options.enabled || span_ms <= 0 || span_ms < millis(self.options.metrics_window) {
            return Decision::Keep;
        }
        let observed = observe(shape, first, last, span_ms as f64 / 1000.0);

        let targets = target_rates(shape, &observed, self.options.catch_up_duration.as_secs_f64());
        let mut parallelism = BTreeMap::new();
        let mut reasons = Vec::new();
        for vertex in shape {
            let (Some(seen), Some(&target)) = (observed.get(&vertex.id), targets.get(&vertex.id)) else { continue };
            let wanted = self.wanted_parallelism(vertex, seen, target);
            let current = vertex.parallelism;
            let chosen = if wanted > current {
                self.scale_down_wanted.remove(&vertex.id);
                Some(wanted)
            } else if wanted < current {
                let interval = millis(self.options.scale_down_interval);
                let (since, highest) = self.scale_down_wanted.entry(vertex.id).or_insert((now_ms, wanted));
                *highest = (*highest).max(wanted);
                (now_ms - *since >= interval).then_some(*highest)
            } else {
                self.scale_down_wanted.remove(&vertex.id);
                None
            };
            if let Some(new) = chosen.filter(|&new| new != current) {
                parallelism.insert(vertex.id, new);
                reasons.push(reason(vertex, seen, target, new, &self.options));
            }
        }
        if parallelism.is_empty() {
            return Decision::Keep;
        }
        Decision::Rescale { parallelism, reasons }
    }

    /// The parallelism that keeps `vertex` at the target utilisation, or its own while its
    /// utilisation stays within the boundary.
    fn wanted_parallelism(&self, vertex: &VertexShape, seen: &Observed, target: f64) -> u32 {
        let o = &self.options;
        let current = vertex.parallelism.max(1);
        let upper = o.vertex_max_parallelism.min(vertex.max_parallelism).max(1);
        let lower = o.vertex_min_parallelism.min(upper);
        // An idle vertex has no measured rate: it needs only the least parallelism.
        let per_subtask = if seen.busy > 0.0 && seen.rate_in > 0.0 {
            seen.rate_in / seen.busy / f64::from(current)
        } else {
            return if target > 0.0 { current.clamp(lower, upper) } else { lower };
        };
        let utilisation = target / (per_subtask * f64::from(current));
        if (utilisation - o.target_utilization).abs() <= o.utilization_boundary {
            return current.clamp(lower, upper);
        }
        let exact = target / (per_subtask * o.target_utilization);
        let most = (f64::from(current) * (1.0 + o.scale_up_max_factor)).floor();
        let least = (f64::from(current) * (1.0 - o.scale_down_max_factor)).ceil();
        let wanted = exact.ceil().clamp(least.max(1.0), most.max(1.0)).min(f64::from(u32::MAX)) as u32;
        let wanted = wanted.clamp(lower, upper);
        if vertex.keyed {
            // The next divisor of the key groups, when one is in bounds: every subtask then
            // owns as many key groups.
            if let Some(even) = (wanted..=upper).find(|p| vertex.max_parallelism.is_multiple_of(*p)) {
                return even;
            }
        }
        wanted
    }

    /// Suspends the job once its sources had nothing for the idle timeout: no record read and
    /// no backlog between the two newest samples, since `idle_since_ms`.
    fn idle(&mut self, now_ms: i64, shape: &[VertexShape]) -> Option<Decision> {
        let timeout = self.options.scale_to_zero_idle_timeout?;
        let (before, last) = self.samples.len().checked_sub(2).map(|i| (&self.samples[i], &self.samples[i + 1]))?;
        let sources: Vec<&VertexShape> = shape.iter().filter(|v| v.inputs.is_empty()).collect();
        let quiet = !sources.is_empty()
            && sources.iter().all(|v| {
                let (Some(a), Some(b)) = (before.vertices.get(&v.id), last.vertices.get(&v.id)) else { return false };
                b.records_in == a.records_in && b.backlog.unwrap_or(0) == 0
            });
        if !quiet {
            self.idle_since_ms = None;
            return None;
        }
        let since = *self.idle_since_ms.get_or_insert(before.at_ms);
        (now_ms - since >= millis(timeout)).then(|| Decision::Suspend {
            reason: format!("no input and no backlog at any source for {} s", (now_ms - since) / 1000),
            idle_since_ms: since,
        })
    }
}

/// Each vertex's rates over the window from `first` to `last` (`seconds` apart).
fn observe(shape: &[VertexShape], first: &Sample, last: &Sample, seconds: f64) -> BTreeMap<VertexId, Observed> {
    let mut observed = BTreeMap::new();
    for vertex in shape {
        let (Some(a), Some(b)) = (first.vertices.get(&vertex.id), last.vertices.get(&vertex.id)) else { continue };
        let per_second = |from: u64, to: u64| to.saturating_sub(from) as f64 / seconds;
        let rate_in = per_second(a.records_in, b.records_in);
        let busy_ms = b.busy_ms.saturating_sub(a.busy_ms) as f64;
        let busy = (busy_ms / (seconds * 1000.0 * f64::from(vertex.parallelism.max(1)))).clamp(0.0, 1.0);
        let arrival = match (vertex.inputs.is_empty(), a.backlog, b.backlog) {
            (true, Some(from), Some(to)) => Some(((rate_in + (to as f64 - from as f64) / seconds).max(0.0), to as f64)),
            (true, _, _) => Some((rate_in, 0.0)),
            _ => None,
        };
        observed
            .insert(vertex.id, Observed { rate_in, rate_out: per_second(a.records_out, b.records_out), busy, arrival });
    }
    observed
}

/// Each vertex's target rate: a source's arrivals plus its backlog over the catch-up time, and
/// downstream what its inputs' targets make of it.
fn target_rates(
    shape: &[VertexShape],
    observed: &BTreeMap<VertexId, Observed>,
    catch_up_s: f64,
) -> BTreeMap<VertexId, f64> {
    let mut targets: BTreeMap<VertexId, f64> = BTreeMap::new();
    // Topological order: a vertex once all its inputs have a target (the shape is a DAG).
    let mut pending: Vec<&VertexShape> = shape.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|vertex| {
            let Some(seen) = observed.get(&vertex.id) else { return false };
            if vertex.inputs.is_empty() {
                let (arrival, backlog) = seen.arrival.unwrap_or((seen.rate_in, 0.0));
                targets.insert(vertex.id, arrival + backlog / catch_up_s.max(1.0));
                return false;
            }
            if !vertex.inputs.iter().all(|input| targets.contains_key(input)) {
                return true;
            }
            let target = vertex
                .inputs
                .iter()
                .map(|input| {
                    let upstream = &observed[input];
                    let ratio = if upstream.rate_in > 0.0 { upstream.rate_out / upstream.rate_in } else { 1.0 };
                    targets[input] * ratio
                })
                .sum();
            targets.insert(vertex.id, target);
            false
        });
        if pending.len() == before {
            break; // inputs without metrics: those vertices get no target
        }
    }
    targets
}

fn reason(vertex: &VertexShape, seen: &Observed, target: f64, new: u32, options: &AutoscalerOptions) -> String {
    let mut line = format!(
        "vertex {}: parallelism {} -> {}: target {:.0} records/s",
        vertex.id.0, vertex.parallelism, new, target
    );
    if let Some((_, backlog)) = seen.arrival.filter(|(_, backlog)| *backlog > 0.0) {
        let _ = write!(line, " (with a backlog of {backlog:.0} to read in {} s)", options.catch_up_duration.as_secs());
    }
    if seen.busy > 0.0 && seen.rate_in > 0.0 {
        let _ = write!(
            line,
            ", {:.0} records/s per subtask when busy, {:.0}% busy now, sized for {:.0}%",
            seen.rate_in / seen.busy / f64::from(vertex.parallelism.max(1)),
            seen.busy * 100.0,
            options.target_utilization * 100.0
        );
    } else {
        line.push_str(", idle");
    }
    line
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
