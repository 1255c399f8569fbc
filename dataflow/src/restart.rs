//! Restart strategies with Flink's option names (`restart-strategy.*`): how long a failed job
//! waits before its next attempt, and when it gives up. Pure: the caller passes the clock and
//! the jitter's random draw, so the rules are tested without sleeping.

use std::time::Duration;

/// What `restart-strategy.type` and its options ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartStrategy {
    /// `none`: a failure fails the job.
    None,
    /// `fixed-delay`: up to `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// `exponential-delay`.
    ExponentialDelay(ExponentialDelay),
}

/// `exponential-delay`: the delay grows by `multiplier` per failure from `initial` up to `max`,
/// varied by ± `jitter` of itself; after `reset_threshold` without a failure it starts again
/// from `initial`. More than `attempts_before_reset` failures without a reset fail the job.
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialDelay {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub reset_threshold: Duration,
    pub jitter: f64,
    pub attempts_before_reset: u32,
}

impl Default for ExponentialDelay {
    /// Flink's defaults.
    fn default() -> Self {
        ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            reset_threshold: Duration::from_secs(3600),
            jitter: 0.1,
            attempts_before_reset: u32::MAX,
        }
    }
}

impl RestartStrategy {
    /// Normalises a `restart-strategy.type` value as Flink accepts it; `None` if unknown.
    pub fn kind(value: &str) -> Option<&'static str> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "disable" => Some("none"),
            "fixed-delay" | "fixeddelay" => Some("fixed-delay"),
            "exponential-delay" | "exponentialdelay" => Some("exponential-delay"),
            _ => None,
        }
    }
}

/// The failures of one job so far, and the delay its strategy gives the next restart.
#[derive(Clone, Debug)]
pub struct RestartBackoff {
    strategy: RestartStrategy,
    /// Failures counted against the strategy's limit (since the last reset).
    failures: u32,
    /// When the last failure happened, in the caller's milliseconds.
    last_failure_ms: Option<u64>,
}

impl RestartBackoff {
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartBackoff { strategy, failures: 0, last_failure_ms: None }
    }

    /// A failure now, by the wall clock, whose nanoseconds also draw the jitter (random enough
    /// to spread restarts): what a running job calls; [`Self::on_failure`] is the rule.
    pub fn on_failure_now(&mut self) -> Option<Duration> {
        let now = crate::clock::since_epoch();
        self.on_failure(now.as_millis() as u64, now.subsec_nanos() as f64 / 1e9)
    }

    /// A failure at `now_ms`: the delay before restarting, or `None` when the job must fail.
    /// `random` is a uniform draw in [0, 1) for the jitter.
    pub fn on_failure(&mut self, now_ms: u64, random: f64) -> Option<Duration> {
        let since_last = self.last_failure_ms.map(|t| now_ms.saturating_sub(t));
        self.last_failure_ms = Some(now_ms);
        match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                self.failures += 1;
                (self.failures <= *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay(e) => {
                if since_last.is_some_and(|ms| ms >= e.reset_threshold.as_millis() as u64) {
                    self.failures = 0;
                }
                self.failures += 1;
                if self.failures > e.attempts_before_reset {
                    return None;
                }
                let grown =
                    e.initial.as_secs_f64() * e.multiplier.powi(self.failures.saturating_sub(1).min(1024) as i32);
                let base = grown.min(e.max.as_secs_f64());
                let varied = base * (1.0 + e.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0));
                Some(Duration::from_secs_f64(varied.clamp(0.0, e.max.as_secs_f64())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_gives_up_after_its_attempts() {
        let mut b = RestartBackoff::new(RestartStrategy::FixedDelay { attempts: 2, delay: Duration::from_secs(3) });
        assert_eq!(b.on_failure(0, 0.5), Some(Duration::from_secs(3)));
        assert_eq!(b.on_failure(10, 0.5), Some(Duration::from_secs(3)));
        assert_eq!(b.on_failure(20, 0.5), None);
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets_after_a_quiet_spell() {
        let strategy = RestartStrategy::ExponentialDelay(ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            reset_threshold: Duration::from_secs(60),
            jitter: 0.0,
            attempts_before_reset: 10,
        });
        let mut b = RestartBackoff::new(strategy);
        let delays: Vec<u64> = (0..5).map(|i| b.on_failure(i * 1000, 0.5).unwrap().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
        // A minute without failures: back to the initial delay.
        assert_eq!(b.on_failure(4000 + 60_000, 0.5), Some(Duration::from_secs(1)));
    }

    #[test]
    fn exponential_delay_jitter_stays_within_its_factor_and_attempts_are_bounded() {
        let strategy = RestartStrategy::ExponentialDelay(ExponentialDelay {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(100),
            multiplier: 1.5,
            reset_threshold: Duration::from_secs(3600),
            jitter: 0.1,
            attempts_before_reset: 2,
        });
        let mut b = RestartBackoff::new(strategy);
        assert_eq!(b.on_failure(0, 0.0), Some(Duration::from_secs(9)));
        assert_eq!(b.on_failure(1, 1.0), Some(Duration::from_secs_f64(16.5)));
        assert_eq!(b.on_failure(2, 0.5), None);
    }

    #[test]
    fn none_never_restarts() {
        assert_eq!(RestartBackoff::new(RestartStrategy::None).on_failure(0, 0.5), None);
    }
}
