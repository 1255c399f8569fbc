//! The decision function against simulated jobs in simulated time: a pipeline whose vertices
//! each process a fixed number of records per second per subtask (with noise), fed by a source
//! whose input follows a schedule, restarted for a while after each rescale.

use std::time::Duration;

use super::*;

const SECOND: i64 = 1000;
const HOUR: i64 = 3600 * SECOND;

/// xorshift64*: noise that is the same on every run.
struct Noise(u64);

impl Noise {
    /// A factor in `1 ± spread`.
    fn factor(&mut self, spread: f64) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + spread * (2.0 * unit - 1.0)
    }
}

/// A linear pipeline `v0 (source) → v1 → …`, every vertex passing on each record it reads.
struct Job {
    shape: Vec<VertexShape>,
    /// Records per second one subtask of each vertex processes when busy.
    per_subtask: Vec<f64>,
    counters: Vec<VertexCounters>,
    backlog: f64,
    /// No record is processed before this (the restart after a rescale).
    down_until: i64,
    noise: Noise,
}

impl Job {
    fn new(parallelism: &[u32], per_subtask: &[f64]) -> Job {
        let shape = parallelism
            .iter()
            .enumerate()
            .map(|(i, &p)| VertexShape {
                id: VertexId(i as u32),
                inputs: if i == 0 { vec![] } else { vec![VertexId(i as u32 - 1)] },
                parallelism: p,
                max_parallelism: 128,
                keyed: i > 0,
            })
            .collect();
        Job {
            shape,
            per_subtask: per_subtask.to_vec(),
            counters: vec![VertexCounters { backlog: None, ..Default::default() }; parallelism.len()],
            backlog: 0.0,
            down_until: 0,
            noise: Noise(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// `seconds` of input at `rate` records/s (with `spread` of noise on rate and speed).
    fn run(&mut self, seconds: f64, rate: f64, spread: f64, now: i64) -> Sample {
        let arriving = rate * self.noise.factor(spread) * seconds;
        self.backlog += arriving;
        if now >= self.down_until {
            let speeds: Vec<f64> =
                self.shape.iter().zip(&self.per_subtask).map(|(v, c)| c * f64::from(v.parallelism)).collect();
            let slowest = speeds.iter().copied().fold(f64::INFINITY, f64::min) * self.noise.factor(spread / 2.0);
            let processed = self.backlog.min(slowest * seconds).floor();
            self.backlog -= processed;
            for (counters, per_subtask) in self.counters.iter_mut().zip(&self.per_subtask) {
                counters.records_in += processed as u64;
                counters.records_out += processed as u64;
                counters.busy_ms += (processed / per_subtask * 1000.0) as u64;
            }
        }
        self.counters[0].backlog = Some(self.backlog as u64);
        Sample { at_ms: now, vertices: self.shape.iter().map(|v| v.id).zip(self.counters.iter().copied()).collect() }
    }

    fn apply(&mut self, parallelism: &BTreeMap<VertexId, u32>, now: i64, restart: i64) {
        for vertex in &mut self.shape {
            if let Some(&p) = parallelism.get(&vertex.id) {
                vertex.parallelism = p;
            }
        }
        self.down_until = now + restart;
    }

    fn parallelism(&self) -> Vec<u32> {
        self.shape.iter().map(|v| v.parallelism).collect()
    }
}

/// What a replay did: when each rescale happened and to what.
struct Replay {
    rescales: Vec<(i64, Vec<u32>)>,
    suspended_at: Option<i64>,
    max_backlog_after: f64,
}

/// Replays `hours` of input whose rate at time `t` is `rate(t)`, sampled every `step`.
fn replay(job: &mut Job, options: AutoscalerOptions, span: i64, step: i64, rate: impl Fn(i64) -> f64) -> Replay {
    let mut scaler = Autoscaler::new(options, 0);
    let mut replay = Replay { rescales: Vec::new(), suspended_at: None, max_backlog_after: 0.0 };
    let mut now = 0;
    while now < span {
        now += step;
        let sample = job.run(step as f64 / 1000.0, rate(now), 0.15, now);
        scaler.observe(sample);
        match scaler.decide(now, &job.shape) {
            Decision::Keep => {}
            Decision::Rescale { parallelism, reasons } => {
                assert_eq!(reasons.len(), parallelism.len());
                job.apply(&parallelism, now, 20 * SECOND);
                scaler.rescaled(now);
                replay.rescales.push((now, job.parallelism()));
            }
            Decision::Suspend { .. } => {
                replay.suspended_at = Some(now);
                return replay;
            }
        }
        if now > span / 2 {
            replay.max_backlog_after = replay.max_backlog_after.max(job.backlog);
        }
    }
    replay
}

/// Most rescales in any hour, and whether a vertex went up then down (or down then up) within
/// an hour: oscillation.
fn churn(rescales: &[(i64, Vec<u32>)], start: &[u32]) -> (usize, bool) {
    let most = rescales
        .iter()
        .map(|(at, _)| rescales.iter().filter(|(other, _)| (*at..*at + HOUR).contains(other)).count())
        .max()
        .unwrap_or(0);
    let mut before = start.to_vec();
    let mut last_move: Vec<Option<(i64, bool)>> = vec![None; start.len()];
    let mut oscillates = false;
    for (at, after) in rescales {
        for (i, (&old, &new)) in before.iter().zip(after).enumerate() {
            if old == new {
                continue;
            }
            let up = new > old;
            if let Some((when, was_up)) = last_move[i]
                && was_up != up
                && at - when < HOUR
            {
                oscillates = true;
            }
            last_move[i] = Some((*at, up));
        }
        before = after.clone();
    }
    (most, oscillates)
}

fn enabled() -> AutoscalerOptions {
    AutoscalerOptions { enabled: true, ..AutoscalerOptions::default() }
}

#[test]
fn steady_noisy_load_for_a_day_sizes_the_job_once_and_then_holds() {
    // 40k records/s ± 15%; the aggregation does 10k per subtask, started at 2: far too few.
    let mut job = Job::new(&[1, 2], &[200_000.0, 10_000.0]);
    let replay = replay(&mut job, enabled(), 24 * HOUR, 10 * SECOND, |_| 40_000.0);
    let (most_per_hour, oscillates) = churn(&replay.rescales, &[1, 2]);
    assert!(most_per_hour <= 1, "{:?}", replay.rescales);
    assert!(!oscillates, "{:?}", replay.rescales);
    // 40k at 70% of 10k per subtask is 5.7: the next divisor of 128 is 8.
    assert_eq!(job.parallelism(), vec![1, 8], "{:?}", replay.rescales);
    assert!(replay.rescales.len() <= 2, "{:?}", replay.rescales);
    assert!(replay.max_backlog_after < 40_000.0 * 60.0, "it keeps up: backlog {}", replay.max_backlog_after);
}

#[test]
fn a_daily_cycle_is_followed_without_oscillating() {
    // Between 10k and 70k records/s over the day, with noise.
    let mut job = Job::new(&[1, 4], &[500_000.0, 10_000.0]);
    let daily = |t: i64| 40_000.0 - 30_000.0 * (2.0 * std::f64::consts::PI * t as f64 / (24 * HOUR) as f64).cos();
    let replay = replay(&mut job, enabled(), 48 * HOUR, 10 * SECOND, daily);
    let (most_per_hour, oscillates) = churn(&replay.rescales, &[1, 4]);
    assert!(most_per_hour <= 1, "{:?}", replay.rescales);
    assert!(!oscillates, "{:?}", replay.rescales);
    let peak = replay.rescales.iter().map(|(_, p)| p[1]).max().unwrap_or(4);
    let trough = replay.rescales.iter().map(|(_, p)| p[1]).min().unwrap_or(4);
    assert!(peak >= 8 && trough <= 4, "it follows the load: {:?}", replay.rescales);
}

#[test]
fn a_backlog_scales_up_after_one_window_with_the_catch_up_in_the_target() {
    let options = AutoscalerOptions {
        metrics_window: Duration::from_secs(20),
        stabilization_interval: Duration::ZERO,
        catch_up_duration: Duration::from_secs(60),
        ..enabled()
    };
    let mut scaler = Autoscaler::new(options, 0);
    let mut job = Job::new(&[1, 2], &[1_000_000.0, 10_000.0]);
    // The input rate is what two subtasks take at 70%, and a backlog of 1.2M records waits.
    job.backlog = 1_200_000.0;
    let mut now = 0;
    let mut decided = None;
    while now < 60 * SECOND && decided.is_none() {
        now += 5 * SECOND;
        scaler.observe(job.run(5.0, 14_000.0, 0.0, now));
        if let Decision::Rescale { parallelism, reasons } = scaler.decide(now, &job.shape) {
            decided = Some((now, parallelism, reasons));
        }
    }
    let (at, parallelism, reasons) = decided.expect("a rescale");
    assert!(at <= 30 * SECOND, "decided at {at} ms");
    // 14k/s plus the ~1.05M left over 60 s = ~31.5k/s at 70% of 10k per subtask: 4.5, so 8
    // (the next divisor of 128).
    assert_eq!(parallelism.get(&VertexId(1)), Some(&8), "{reasons:?}");
    assert!(reasons[0].contains("target 31500 records/s"), "the catch-up is in the target: {reasons:?}");
}

#[test]
fn load_inside_the_boundary_never_rescales() {
    let options = AutoscalerOptions { metrics_window: Duration::from_secs(60), ..enabled() };
    // Utilisation 0.45 and 0.8 (with ±15% noise) are both inside 0.7 ± 0.3.
    for rate in [9_000.0, 16_000.0] {
        let mut job = Job::new(&[1, 2], &[1_000_000.0, 10_000.0]);
        let replay = replay(&mut job, options.clone(), 6 * HOUR, 10 * SECOND, |_| rate);
        assert!(replay.rescales.is_empty(), "at {rate}/s: {:?}", replay.rescales);
    }
}

#[test]
fn a_scale_down_waits_for_its_interval_and_takes_the_highest_parallelism_wanted() {
    let options = AutoscalerOptions {
        metrics_window: Duration::from_secs(60),
        stabilization_interval: Duration::ZERO,
        scale_down_interval: Duration::from_secs(600),
        scale_down_max_factor: 1.0,
        ..enabled()
    };
    let mut scaler = Autoscaler::new(options, 0);
    let mut job = Job::new(&[1, 16], &[1_000_000.0, 10_000.0]);
    let mut now = 0;
    let mut rescale = None;
    while now < 20 * 60 * SECOND && rescale.is_none() {
        now += 10 * SECOND;
        // 7k/s wants 1 subtask; for one minute in the middle 28k/s wants 4.
        let rate = if (300 * SECOND..360 * SECOND).contains(&now) { 28_000.0 } else { 7_000.0 };
        scaler.observe(job.run(10.0, rate, 0.0, now));
        if let Decision::Rescale { parallelism, .. } = scaler.decide(now, &job.shape) {
            rescale = Some((now, parallelism));
        }
    }
    let (at, parallelism) = rescale.expect("a scale-down");
    assert!(at >= 600 * SECOND, "not before the interval: {at}");
    assert_eq!(parallelism.get(&VertexId(1)), Some(&4), "the highest wanted meanwhile");
}

#[test]
fn sources_without_input_suspend_the_job_after_the_idle_timeout() {
    let options = AutoscalerOptions {
        scale_to_zero_idle_timeout: Some(Duration::from_secs(60)),
        stabilization_interval: Duration::ZERO,
        ..enabled()
    };
    let mut job = Job::new(&[1, 2], &[1_000_000.0, 10_000.0]);
    // Input for 5 minutes, then none.
    let replay =
        replay(&mut job, options.clone(), 2 * HOUR, 5 * SECOND, |t| if t < 300 * SECOND { 5_000.0 } else { 0.0 });
    let suspended = replay.suspended_at.expect("suspended");
    assert!((355 * SECOND..=365 * SECOND).contains(&suspended), "suspended at {suspended} ms");

    // Input now and then (every 50 s) keeps it awake.
    let mut job = Job::new(&[1, 2], &[1_000_000.0, 10_000.0]);
    let trickle = |t: i64| if t % (50 * SECOND) == 0 { 1_000.0 } else { 0.0 };
    assert_eq!(replay_suspension(&mut job, options, trickle), None);
}

fn replay_suspension(job: &mut Job, options: AutoscalerOptions, rate: impl Fn(i64) -> f64) -> Option<i64> {
    replay(job, options, HOUR, 5 * SECOND, rate).suspended_at
}

#[test]
fn nothing_is_decided_while_disabled_or_stabilising() {
    let mut job = Job::new(&[1, 1], &[1_000_000.0, 1_000.0]);
    let replay_off = replay(&mut job, AutoscalerOptions::default(), 2 * HOUR, 10 * SECOND, |_| 50_000.0);
    assert!(replay_off.rescales.is_empty());

    let options = AutoscalerOptions { metrics_window: Duration::from_secs(30), ..enabled() };
    let mut job = Job::new(&[1, 1], &[1_000_000.0, 1_000.0]);
    let replay_on = replay(&mut job, options, 20 * 60 * SECOND, 10 * SECOND, |_| 50_000.0);
    let (first, _) = replay_on.rescales.first().expect("a rescale");
    assert!(*first >= 5 * 60 * SECOND + 30 * SECOND, "not before stabilisation and a window: {first}");
}
