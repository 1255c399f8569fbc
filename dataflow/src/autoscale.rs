//! The autoscaler's options, `job.autoscaler.*`, with the Flink Kubernetes operator's names and
//! defaults; Weir adds `job.autoscaler.scale-to-zero.idle-timeout`. The decisions themselves are
//! the control plane's (`weir_control_plane::autoscaler`).

use std::time::Duration;

use crate::config::{JobConfig, parse_duration};

/// How a job's parallelism follows its load.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerOptions {
    /// `job.autoscaler.enabled` (false).
    pub enabled: bool,
    /// `job.autoscaler.target.utilization` (0.7): the busy share each vertex is sized for.
    pub target_utilization: f64,
    /// `job.autoscaler.target.utilization.boundary` (0.3): utilisation may stray this far from
    /// the target before the vertex is rescaled, so steady load does not rescale.
    pub utilization_boundary: f64,
    /// `job.autoscaler.metrics.window` (15 min): the span of metrics a decision averages.
    pub metrics_window: Duration,
    /// `job.autoscaler.stabilization.interval` (5 min): after a rescale, metrics are ignored
    /// this long while the job settles.
    pub stabilization_interval: Duration,
    /// `job.autoscaler.scale-down.interval` (1 h): a scale-down is made only once it has been
    /// wanted this long, to the highest parallelism wanted meanwhile.
    pub scale_down_interval: Duration,
    /// `job.autoscaler.scale-down.max-factor` (0.6): at most this share of a vertex's subtasks
    /// go in one scale-down.
    pub scale_down_max_factor: f64,
    /// `job.autoscaler.scale-up.max-factor` (100000): a scale-up multiplies parallelism by at
    /// most 1 + this.
    pub scale_up_max_factor: f64,
    /// `job.autoscaler.catch-up.duration` (30 min): a source's backlog is sized to be read in
    /// this long on top of its input rate.
    pub catch_up_duration: Duration,
    /// `job.autoscaler.vertex.min-parallelism` (1).
    pub vertex_min_parallelism: u32,
    /// `job.autoscaler.vertex.max-parallelism` (200); never above the job's max parallelism.
    pub vertex_max_parallelism: u32,
    /// `job.autoscaler.scale-to-zero.idle-timeout` (off): a job whose sources had no input and
    /// no backlog this long is suspended, and wakes when a backlog appears.
    pub scale_to_zero_idle_timeout: Option<Duration>,
}

impl Default for AutoscalerOptions {
    fn default() -> Self {
        AutoscalerOptions {
            enabled: false,
            target_utilization: 0.7,
            utilization_boundary: 0.3,
            metrics_window: Duration::from_secs(15 * 60),
            stabilization_interval: Duration::from_secs(5 * 60),
            scale_down_interval: Duration::from_secs(60 * 60),
            scale_down_max_factor: 0.6,
            scale_up_max_factor: 100_000.0,
            catch_up_duration: Duration::from_secs(30 * 60),
            vertex_min_parallelism: 1,
            vertex_max_parallelism: 200,
            scale_to_zero_idle_timeout: None,
        }
    }
}

/// Whether `key` is an autoscaler option.
pub fn is_option(key: &str) -> bool {
    key.starts_with("job.autoscaler.")
}

impl AutoscalerOptions {
    /// The options a job's configuration sets; values were checked by [`check`] when set.
    pub fn of(config: &JobConfig) -> AutoscalerOptions {
        let mut options = AutoscalerOptions::default();
        for (key, value) in config.values.iter().filter(|(key, _)| is_option(key)) {
            // Checked when set; a value that fails here keeps its default.
            let _ = options.apply(key, value);
        }
        options
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let fraction = |v: &str| -> Result<f64, String> {
            let x: f64 = v.trim().parse().map_err(|_| format!("'{v}' is not a number"))?;
            if (0.0..=1.0).contains(&x) { Ok(x) } else { Err("expected a number between 0 and 1".into()) }
        };
        let count = |v: &str| -> Result<u32, String> {
            v.trim().parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| "expected a positive integer".to_string())
        };
        match key {
            "job.autoscaler.enabled" => {
                self.enabled = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err("expected true or false".into()),
                }
            }
            "job.autoscaler.target.utilization" => {
                let x = fraction(value)?;
                if x == 0.0 {
                    return Err("the target utilization must be above 0".into());
                }
                self.target_utilization = x;
            }
            "job.autoscaler.target.utilization.boundary" => self.utilization_boundary = fraction(value)?,
            "job.autoscaler.metrics.window" => {
                self.metrics_window = parse_duration(value)?;
                if self.metrics_window.is_zero() {
                    return Err("the metrics window must be longer than 0".into());
                }
            }
            "job.autoscaler.stabilization.interval" => self.stabilization_interval = parse_duration(value)?,
            "job.autoscaler.scale-down.interval" => self.scale_down_interval = parse_duration(value)?,
            "job.autoscaler.scale-down.max-factor" => self.scale_down_max_factor = fraction(value)?,
            "job.autoscaler.scale-up.max-factor" => {
                let x: f64 = value.trim().parse().map_err(|_| format!("'{value}' is not a number"))?;
                if !(x > 0.0 && x.is_finite()) {
                    return Err("expected a positive number".into());
                }
                self.scale_up_max_factor = x;
            }
            "job.autoscaler.catch-up.duration" => self.catch_up_duration = parse_duration(value)?,
            "job.autoscaler.vertex.min-parallelism" => self.vertex_min_parallelism = count(value)?,
            "job.autoscaler.vertex.max-parallelism" => self.vertex_max_parallelism = count(value)?,
            "job.autoscaler.scale-to-zero.idle-timeout" => {
                let d = parse_duration(value)?;
                self.scale_to_zero_idle_timeout = (!d.is_zero()).then_some(d);
            }
            _ => return Err("unknown autoscaler option".into()),
        }
        Ok(())
    }
}

/// Checks one `job.autoscaler.*` value as a `SET` gives it.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    AutoscalerOptions::default().apply(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_names_and_defaults_and_bad_values_named() {
        let mut config = JobConfig::default();
        assert_eq!(AutoscalerOptions::of(&config), AutoscalerOptions::default());
        for (key, value) in [
            ("job.autoscaler.enabled", "true"),
            ("job.autoscaler.target.utilization", "0.6"),
            ("job.autoscaler.metrics.window", "30 s"),
            ("job.autoscaler.scale-down.interval", "10 min"),
            ("job.autoscaler.vertex.max-parallelism", "8"),
            ("job.autoscaler.scale-to-zero.idle-timeout", "60 s"),
        ] {
            config.set(key, value).unwrap();
        }
        let options = AutoscalerOptions::of(&config);
        assert!(options.enabled);
        assert_eq!(options.target_utilization, 0.6);
        assert_eq!(options.metrics_window, Duration::from_secs(30));
        assert_eq!(options.scale_down_interval, Duration::from_secs(600));
        assert_eq!(options.vertex_max_parallelism, 8);
        assert_eq!(options.scale_to_zero_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(options.utilization_boundary, 0.3, "unset options keep Flink's defaults");

        for (key, value) in [
            ("job.autoscaler.enabled", "yes"),
            ("job.autoscaler.target.utilization", "1.5"),
            ("job.autoscaler.target.utilization", "0"),
            ("job.autoscaler.metrics.window", "0 s"),
            ("job.autoscaler.vertex.max-parallelism", "0"),
            ("job.autoscaler.scale-up.max-factor", "-1"),
            ("job.autoscaler.no-such-option", "1"),
        ] {
            let err = config.set(key, value).expect_err(key).to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
