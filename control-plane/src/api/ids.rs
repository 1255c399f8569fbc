//! What the API stamps on the commands it proposes: fresh ids and secrets from the operating
//! system's random source, and the time. These stay at the edge: `MetadataState::apply` never
//! draws a random number or reads a clock.

use weir_dataflow::auth::{self, NoRandomness};
use weir_dataflow::wire::ErrorCode;

use super::problem::ApiError;
use crate::metadata::ids::UnixMillis;

fn no_randomness(error: NoRandomness) -> ApiError {
    tracing::error!(%error, "the operating system's random source failed");
    ApiError::new(ErrorCode::NoRandomness, "this replica cannot draw random numbers; retry on another replica")
}

/// A fresh id: `prefix` then 16 random hex digits (see `weir_dataflow::auth::fresh_id`).
pub fn fresh_id(prefix: &str) -> Result<String, ApiError> {
    auth::fresh_id(prefix).map_err(no_randomness)
}

/// A fresh token secret (see `weir_dataflow::auth::fresh_token_secret`).
pub(crate) fn fresh_token_secret() -> Result<String, ApiError> {
    auth::fresh_token_secret().map_err(no_randomness)
}

/// The proposer's clock, stamped into commands.
pub(crate) fn now() -> UnixMillis {
    UnixMillis(weir_dataflow::clock::unix_millis())
}
