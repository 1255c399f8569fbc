//! What the API stamps on the commands it proposes: fresh ids and secrets from the operating
//! system's random source, and the time. These stay at the edge: `MetadataState::apply` never
//! draws a random number or reads a clock.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::problem::ApiError;
use crate::metadata::ids::UnixMillis;

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| {
        tracing::error!(%error, "the operating system's random source failed");
        ApiError::internal("no-randomness", "this replica cannot draw random numbers; retry on another replica")
    })?;
    Ok(to_hex(&buffer))
}

/// A fresh id: `prefix` then 16 hex digits (64 random bits: unique without coordination for
/// any number of jobs a cluster will see; the state machine still refuses a duplicate).
pub fn fresh_id(prefix: &str) -> Result<String, ApiError> {
    Ok(format!("{prefix}-{}", random_hex(8)?))
}

/// A fresh token secret: 256 random bits; the prefix makes a leaked secret easy to recognise
/// (secret scanners).
pub(crate) fn fresh_token_secret() -> Result<String, ApiError> {
    Ok(format!("weir_{}", random_hex(32)?))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The proposer's clock, stamped into commands.
pub(crate) fn now() -> UnixMillis {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_differ_and_have_the_prefix() {
        let (a, b) = (fresh_id("job").expect("random"), fresh_id("job").expect("random"));
        assert_ne!(a, b);
        assert!(a.starts_with("job-") && a.len() == 4 + 16, "{a}");
        assert_eq!(to_hex(&[0, 15, 255]), "000fff");
    }
}
