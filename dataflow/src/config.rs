//! A job's configuration: Flink's option names (`SET 'key' = 'value'`), typed, with defaults in
//! one place.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::graph::ExchangeMode;
use crate::keygroup::{UPPER_BOUND_MAX_PARALLELISM, default_max_parallelism};
use crate::restart::{ExponentialDelay, RestartStrategy};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{key}': {reason}")]
    InvalidValue { key: String, value: String, reason: String },
    #[error(
        "the parallelism {parallelism} is above the max parallelism {max_parallelism}; lower \
         'parallelism.default' or raise 'pipeline.max-parallelism' (at most 32768)"
    )]
    ParallelismAboveMax { parallelism: u32, max_parallelism: u32 },
    #[error("the parallelism {parallelism} is above 32768, the most Flink allows; lower 'parallelism.default'")]
    ParallelismTooLarge { parallelism: u32 },
}

/// The options that name storage: where a job's state goes and where it restores from.
pub const LOCATION_KEYS: &[&str] = &["state.checkpoints.dir", "state.savepoints.dir", "execution.savepoint.path"];

/// A storage location a job names, and the option that names it (as an error would say it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedLocation {
    /// `'state.checkpoints.dir'`, or `table 'orders' option 'path'`.
    pub option: String,
    pub location: String,
}

/// The options Weir understands. Others are kept (so scripts written for Flink run unchanged)
/// and reported by [`JobConfig::unknown_keys`].
pub const KNOWN_KEYS: &[&str] = &[
    "parallelism.default",
    "pipeline.max-parallelism",
    "pipeline.name",
    "table.local-time-zone",
    "table.exec.source.idle-timeout",
    "execution.runtime-mode",
    "execution.checkpointing.interval",
    "execution.checkpointing.unaligned",
    "execution.checkpointing.tolerable-failed-checkpoints",
    "execution.savepoint.path",
    "execution.batch-shuffle-mode",
    "restart-strategy.type",
    "restart-strategy.fixed-delay.attempts",
    "restart-strategy.fixed-delay.delay",
    "restart-strategy.exponential-delay.initial-backoff",
    "restart-strategy.exponential-delay.max-backoff",
    "restart-strategy.exponential-delay.backoff-multiplier",
    "restart-strategy.exponential-delay.reset-backoff-threshold",
    "restart-strategy.exponential-delay.jitter-factor",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
    "state.checkpoints.dir",
    "state.savepoints.dir",
    "state.checkpoints.num-retained",
    "table.exec.state.ttl",
    "taskmanager.memory.managed.size",
    "sql-client.execution.result-mode",
    "table.exec.mini-batch.enabled",
    "table.exec.mini-batch.allow-latency",
    "table.exec.mini-batch.size",
];

#[derive(Clone, Debug)]
pub struct JobConfig {
    pub values: BTreeMap<String, String>,
    /// Keys set on the command line: a `SET` in the script does not override them.
    pub pinned: Vec<String>,
    pub parallelism: u32,
    /// `pipeline.max-parallelism`, if set; see [`JobConfig::max_parallelism`].
    pub configured_max_parallelism: Option<u32>,
    pub checkpoint_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// `table.exec.state.ttl`: how long a key's state of a regular join or group aggregation is
    /// kept after its last write (processing time); `None` (the default, or `0`): forever.
    pub state_ttl: Option<Duration>,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            values: BTreeMap::new(),
            pinned: Vec::new(),
            parallelism: 1,
            configured_max_parallelism: None,
            checkpoint_interval: None,
            idle_timeout: None,
            state_ttl: None,
        }
    }
}

impl JobConfig {
    /// Keeps `key`'s current value when a script later sets it.
    pub fn pin(&mut self, key: &str) {
        self.pinned.push(key.to_string());
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if self.pinned.iter().any(|k| k == key) && self.values.contains_key(key) {
            return Ok(());
        }
        let invalid = |reason: &str| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match key {
            "parallelism.default" => {
                self.parallelism = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| invalid("expected a positive integer"))?;
            }
            "pipeline.max-parallelism" => {
                self.configured_max_parallelism = Some(
                    value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|p| (1..=UPPER_BOUND_MAX_PARALLELISM).contains(p))
                        .ok_or_else(|| invalid("expected an integer between 1 and 32768"))?,
                );
            }
            "execution.checkpointing.interval" => {
                let d = parse_duration(value).map_err(|e| invalid(&e))?;
                self.checkpoint_interval = (!d.is_zero()).then_some(d);
            }
            "execution.checkpointing.unaligned" => {
                parse_bool(value).map_err(|e| invalid(&e))?;
            }
            "state.checkpoints.num-retained" => {
                value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("expected an integer ≥ 1"))?;
            }
            "execution.checkpointing.tolerable-failed-checkpoints" => {
                value.trim().parse::<u32>().map_err(|_| invalid("expected a non-negative integer"))?;
            }
            "table.exec.source.idle-timeout" => {
                let d = parse_duration(value).map_err(|e| invalid(&e))?;
                self.idle_timeout = (!d.is_zero()).then_some(d);
            }
            "table.exec.state.ttl" => {
                let d = parse_duration(value).map_err(|e| invalid(&e))?;
                self.state_ttl = (!d.is_zero()).then_some(d);
            }
            "taskmanager.memory.managed.size" => {
                parse_memory_size(value).map_err(|e| invalid(&e))?;
            }
            "execution.runtime-mode" => {
                RuntimeMode::parse(value).map_err(|e| invalid(&e))?;
            }
            "execution.batch-shuffle-mode" => {
                ExchangeMode::parse_batch_shuffle_mode(value).map_err(|e| invalid(&e))?;
            }
            "restart-strategy.type" if RestartStrategy::kind(value).is_none() => {
                return Err(invalid("expected none, fixed-delay or exponential-delay"));
            }
            "restart-strategy.exponential-delay.initial-backoff"
            | "restart-strategy.exponential-delay.max-backoff"
            | "restart-strategy.exponential-delay.reset-backoff-threshold" => {
                parse_duration(value).map_err(|e| invalid(&e))?;
            }
            "restart-strategy.exponential-delay.backoff-multiplier" => {
                let m: f64 = value.trim().parse().map_err(|_| invalid("expected a number"))?;
                if !(m >= 1.0 && m.is_finite()) {
                    return Err(invalid("the multiplier must be at least 1"));
                }
            }
            "restart-strategy.exponential-delay.jitter-factor" => {
                let j: f64 = value.trim().parse().map_err(|_| invalid("expected a number"))?;
                if !(0.0..=1.0).contains(&j) {
                    return Err(invalid("the jitter factor must be between 0 and 1"));
                }
            }
            "restart-strategy.exponential-delay.attempts-before-reset-backoff" => {
                value.trim().parse::<u32>().map_err(|_| invalid("expected a non-negative integer"))?;
            }
            "restart-strategy.fixed-delay.attempts" => {
                value.trim().parse::<u32>().map_err(|_| invalid("expected a non-negative integer"))?;
            }
            "restart-strategy.fixed-delay.delay" => {
                parse_duration(value).map_err(|e| invalid(&e))?;
            }
            "table.local-time-zone" if !matches!(value, "UTC" | "Z" | "GMT" | "Etc/UTC") => {
                return Err(invalid("only UTC is supported"));
            }
            _ if crate::autoscale::is_option(key) => crate::autoscale::check(key, value).map_err(|e| invalid(&e))?,
            _ => {}
        }
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub fn reset(&mut self, key: Option<&str>) {
        match key {
            None => *self = JobConfig::default(),
            Some(k) => {
                if !self.pinned.iter().any(|p| p == k) {
                    self.values.remove(k);
                }
                let values = std::mem::take(&mut self.values);
                let pinned = std::mem::take(&mut self.pinned);
                *self = JobConfig::default();
                for (k, v) in values {
                    // Values were valid when set; re-applying them cannot fail.
                    let _ = self.set(&k, &v);
                }
                self.pinned = pinned;
            }
        }
    }

    /// The number of key groups: `pipeline.max-parallelism`, or when it is not set Flink's
    /// default for the parallelism (at least 128, see [`default_max_parallelism`]).
    pub fn max_parallelism(&self) -> u32 {
        self.configured_max_parallelism.unwrap_or_else(|| default_max_parallelism(self.parallelism))
    }

    /// Refuses a parallelism that key groups cannot be spread over, as Flink does when it
    /// builds the job graph.
    pub fn check_parallelism(&self) -> Result<(), ConfigError> {
        if self.parallelism > UPPER_BOUND_MAX_PARALLELISM {
            return Err(ConfigError::ParallelismTooLarge { parallelism: self.parallelism });
        }
        let max_parallelism = self.max_parallelism();
        if self.parallelism > max_parallelism {
            return Err(ConfigError::ParallelismAboveMax { parallelism: self.parallelism, max_parallelism });
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn unknown_keys(&self) -> Vec<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k) && !crate::autoscale::is_option(k))
            .collect()
    }
}

/// How a job takes checkpoints, from Flink's option names; `None` when checkpointing is off
/// (`execution.checkpointing.interval` unset or zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    pub interval: Duration,
    /// `execution.checkpointing.unaligned`: snapshot on the first barrier, with in-flight data.
    pub unaligned: bool,
    /// `state.checkpoints.dir`: a folder, `file:///…` or `s3://bucket/prefix`.
    pub dir: String,
    /// `state.checkpoints.num-retained`.
    pub num_retained: usize,
    /// `execution.checkpointing.tolerable-failed-checkpoints`: consecutive failed checkpoints
    /// the job survives.
    pub tolerable_failures: u32,
}

/// Where checkpoints go when `state.checkpoints.dir` is not set: beside where the job runs.
pub const DEFAULT_CHECKPOINTS_DIR: &str = "weir-checkpoints";

impl JobConfig {
    /// The checkpointing options. Values were validated when set.
    pub fn checkpointing(&self) -> Option<CheckpointConfig> {
        let interval = self.checkpoint_interval?;
        Some(CheckpointConfig {
            interval,
            unaligned: self.get("execution.checkpointing.unaligned").and_then(|v| parse_bool(v).ok()).unwrap_or(false),
            dir: self.get("state.checkpoints.dir").unwrap_or(DEFAULT_CHECKPOINTS_DIR).to_string(),
            num_retained: self.get("state.checkpoints.num-retained").and_then(|v| v.trim().parse().ok()).unwrap_or(1),
            tolerable_failures: self
                .get("execution.checkpointing.tolerable-failed-checkpoints")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        })
    }

    /// The storage locations the job's options name ([`LOCATION_KEYS`]).
    pub fn locations(&self) -> Vec<NamedLocation> {
        LOCATION_KEYS
            .iter()
            .filter_map(|key| {
                let value = self.get(key).map(str::trim).filter(|value| !value.is_empty())?;
                Some(NamedLocation { option: format!("'{key}'"), location: value.to_string() })
            })
            .collect()
    }

    /// `execution.savepoint.path`: the checkpoint or savepoint to start from.
    pub fn savepoint_path(&self) -> Option<&str> {
        self.get("execution.savepoint.path").map(str::trim).filter(|p| !p.is_empty())
    }

    /// `pipeline.name`, which names the job's folder under `state.checkpoints.dir`.
    pub fn pipeline_name(&self) -> Option<&str> {
        self.get("pipeline.name").map(str::trim).filter(|p| !p.is_empty())
    }
}

/// `execution.runtime-mode`, as in Flink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeMode {
    /// Unbounded semantics: updating results, pipelined exchanges, checkpoints.
    Streaming,
    /// A bounded job: every source must end. Aggregations emit final rows only, exchanges follow
    /// `execution.batch-shuffle-mode`, and the job may run stage by stage.
    Batch,
    /// Batch when every source is bounded, streaming otherwise.
    Automatic,
}

impl RuntimeMode {
    fn parse(value: &str) -> Result<RuntimeMode, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "streaming" => Ok(RuntimeMode::Streaming),
            "batch" => Ok(RuntimeMode::Batch),
            "automatic" => Ok(RuntimeMode::Automatic),
            _ => Err("expected STREAMING, BATCH or AUTOMATIC".to_string()),
        }
    }
}

impl ExchangeMode {
    /// Flink's `execution.batch-shuffle-mode` values.
    fn parse_batch_shuffle_mode(value: &str) -> Result<ExchangeMode, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ALL_EXCHANGES_PIPELINED" => Ok(ExchangeMode::Pipelined),
            "ALL_EXCHANGES_BLOCKING" => Ok(ExchangeMode::Blocking),
            "ALL_EXCHANGES_HYBRID_FULL" => Ok(ExchangeMode::HybridFull),
            "ALL_EXCHANGES_HYBRID_SELECTIVE" => Ok(ExchangeMode::HybridSelective),
            _ => Err("expected ALL_EXCHANGES_PIPELINED, ALL_EXCHANGES_BLOCKING, ALL_EXCHANGES_HYBRID_FULL or \
                 ALL_EXCHANGES_HYBRID_SELECTIVE"
                .to_string()),
        }
    }
}

impl JobConfig {
    /// `execution.runtime-mode`; streaming unless set. Values were validated when set.
    /// `taskmanager.memory.managed.size`: the memory a `weir run` process gives keyed state
    /// (operators' working sets, the state databases' caches and memtables); `None` when unset.
    pub fn managed_memory(&self) -> Option<u64> {
        self.values.get("taskmanager.memory.managed.size").and_then(|v| parse_memory_size(v).ok())
    }

    pub fn runtime_mode(&self) -> RuntimeMode {
        self.get("execution.runtime-mode").and_then(|v| RuntimeMode::parse(v).ok()).unwrap_or(RuntimeMode::Streaming)
    }

    /// `restart-strategy.*`: `none`, `fixed-delay` (the default when unset: 3 attempts, 1 s
    /// apart; Flink restarts only checkpointed jobs by default, but Weir's batch jobs re-run
    /// stages, so restarting is cheap) or `exponential-delay`, with Flink's defaults for what is
    /// not set. A [`RestartBackoff`](crate::restart::RestartBackoff) applies it. Values were
    /// validated when set.
    pub fn restart_strategy(&self) -> RestartStrategy {
        let option = |name: &str| self.get(&format!("restart-strategy.{name}"));
        match self.get("restart-strategy.type").and_then(RestartStrategy::kind) {
            Some("none") => RestartStrategy::None,
            Some("exponential-delay") => {
                let mut e = ExponentialDelay::default();
                let duration = |name: &str, d: &mut Duration| {
                    if let Some(v) = option(name).and_then(|v| parse_duration(v).ok()) {
                        *d = v;
                    }
                };
                duration("exponential-delay.initial-backoff", &mut e.initial);
                duration("exponential-delay.max-backoff", &mut e.max);
                duration("exponential-delay.reset-backoff-threshold", &mut e.reset_threshold);
                if let Some(v) = option("exponential-delay.backoff-multiplier").and_then(|v| v.trim().parse().ok()) {
                    e.multiplier = v;
                }
                if let Some(v) = option("exponential-delay.jitter-factor").and_then(|v| v.trim().parse().ok()) {
                    e.jitter = v;
                }
                if let Some(v) =
                    option("exponential-delay.attempts-before-reset-backoff").and_then(|v| v.trim().parse().ok())
                {
                    e.attempts_before_reset = v;
                }
                RestartStrategy::ExponentialDelay(e)
            }
            _ => RestartStrategy::FixedDelay {
                attempts: option("fixed-delay.attempts").and_then(|v| v.trim().parse().ok()).unwrap_or(3),
                delay: option("fixed-delay.delay")
                    .and_then(|v| parse_duration(v).ok())
                    .unwrap_or(Duration::from_secs(1)),
            },
        }
    }

    /// `execution.batch-shuffle-mode`: how a batch job's exchanges keep their data; blocking
    /// unless set, as in Flink.
    pub fn batch_shuffle_mode(&self) -> ExchangeMode {
        self.get("execution.batch-shuffle-mode")
            .and_then(|v| ExchangeMode::parse_batch_shuffle_mode(v).ok())
            .unwrap_or(ExchangeMode::Blocking)
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

/// Flink's duration syntax: `10 s`, `1s`, `500ms`, `1 min`, `2h`, `1d`, a bare number of ms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as '10 s' or '500 ms'"))?;
    let millis_per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(format!("unknown time unit '{other}'")),
    };
    // A script's `SET` is user input: a product past u64 must be refused, not wrap (or panic).
    let ms = n.checked_mul(millis_per_unit).ok_or_else(|| format!("'{text}' is too long a duration"))?;
    Ok(Duration::from_millis(ms))
}

/// Parses a memory size as Flink's `MemorySize` does: a whole number with an optional unit,
/// every unit a power of 1024 (`b`/`bytes`, `k`/`kb`/`kibibytes`, `m`/`mb`/`mebibytes`,
/// `g`/`gb`/`gibibytes`, `t`/`tb`/`tebibytes`), so `512 mb` is 512 MiB.
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{trimmed}` is not a memory size (a number and a unit, like 512 mb)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        other => return Err(format!("unknown memory unit `{other}` in `{trimmed}`; use b, kb, mb, gb or tb")),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("`{trimmed}` is too large"))
}

/// Parses a byte count: a number with an optional K, M, G (powers of 1000) or KiB, MiB, GiB
/// (powers of 1024) suffix.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a byte count"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_are_read_as_flink_reads_them() {
        assert_eq!(parse_memory_size("512 mb"), Ok(512 << 20));
        assert_eq!(parse_memory_size("512m"), Ok(512 << 20));
        assert_eq!(parse_memory_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_memory_size("64 kibibytes"), Ok(64 << 10));
        assert_eq!(parse_memory_size("4096"), Ok(4096));
        assert!(parse_memory_size("lots").is_err());
        assert!(parse_memory_size("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_memory_size("99999999999 tb").is_err());
        let mut config = JobConfig::default();
        assert_eq!(config.managed_memory(), None);
        config.set("taskmanager.memory.managed.size", "256 mb").unwrap();
        assert_eq!(config.managed_memory(), Some(256 << 20));
        assert!(config.set("taskmanager.memory.managed.size", "a lot").is_err());
    }

    #[test]
    fn restart_strategy_is_fixed_delay_unless_set_otherwise() {
        let mut config = JobConfig::default();
        let flinks = RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_secs(1) };
        assert_eq!(config.restart_strategy(), flinks);
        config.set("restart-strategy.fixed-delay.attempts", "5").unwrap();
        config.set("restart-strategy.fixed-delay.delay", "200 ms").unwrap();
        let fixed = RestartStrategy::FixedDelay { attempts: 5, delay: Duration::from_millis(200) };
        assert_eq!(config.restart_strategy(), fixed);
        config.set("restart-strategy.type", "fixed-delay").unwrap();
        assert_eq!(config.restart_strategy(), fixed);
        for none in ["none", "off", "disable"] {
            config.set("restart-strategy.type", none).unwrap();
            assert_eq!(config.restart_strategy(), RestartStrategy::None);
        }
    }

    #[test]
    fn exponential_delay_takes_flinks_option_names_and_defaults() {
        let mut config = JobConfig::default();
        config.set("restart-strategy.type", "exponential-delay").unwrap();
        assert_eq!(config.restart_strategy(), RestartStrategy::ExponentialDelay(ExponentialDelay::default()));
        config.set("restart-strategy.exponential-delay.initial-backoff", "2 s").unwrap();
        config.set("restart-strategy.exponential-delay.backoff-multiplier", "2.0").unwrap();
        let expected =
            ExponentialDelay { initial: Duration::from_secs(2), multiplier: 2.0, ..ExponentialDelay::default() };
        assert_eq!(config.restart_strategy(), RestartStrategy::ExponentialDelay(expected));
        assert!(config.set("restart-strategy.exponential-delay.backoff-multiplier", "0.5").is_err());
        assert!(config.set("restart-strategy.exponential-delay.jitter-factor", "2").is_err());
        assert!(config.set("restart-strategy.type", "sometimes").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10 s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2 min").unwrap(), Duration::from_secs(120));
        // Used to overflow (a panic with overflow checks, a wrong duration without).
        assert!(parse_duration("18446744073709552 s").unwrap_err().contains("too long"));
        assert!(parse_duration("213503982335 days").is_err());
        assert_eq!(parse_duration("18446744073709551615 ms").unwrap(), Duration::from_millis(u64::MAX));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn typed_values() {
        let mut c = JobConfig::default();
        c.set("parallelism.default", "4").unwrap();
        assert_eq!(c.parallelism, 4);
        assert!(c.set("parallelism.default", "0").is_err());
        c.set("table.exec.mini-batch.enabled", "true").unwrap();
        assert!(c.unknown_keys().is_empty());
        c.set("foo.bar", "1").unwrap();
        assert_eq!(c.unknown_keys(), vec!["foo.bar"]);
        c.reset(Some("parallelism.default"));
        assert_eq!(c.parallelism, 1);
    }

    #[test]
    fn max_parallelism_follows_the_parallelism_unless_set() {
        let mut c = JobConfig::default();
        assert_eq!(c.max_parallelism(), 128);
        c.set("parallelism.default", "200").unwrap();
        assert_eq!(c.max_parallelism(), 512);
        c.check_parallelism().unwrap();
        c.set("pipeline.max-parallelism", "150").unwrap();
        assert_eq!(c.max_parallelism(), 150);
        assert_eq!(
            c.check_parallelism().unwrap_err().to_string(),
            "the parallelism 200 is above the max parallelism 150; lower 'parallelism.default' or raise \
             'pipeline.max-parallelism' (at most 32768)"
        );
        c.reset(Some("pipeline.max-parallelism"));
        assert_eq!(c.max_parallelism(), 512);
        c.set("parallelism.default", "40000").unwrap();
        assert_eq!(
            c.check_parallelism().unwrap_err().to_string(),
            "the parallelism 40000 is above 32768, the most Flink allows; lower 'parallelism.default'"
        );
    }
}
