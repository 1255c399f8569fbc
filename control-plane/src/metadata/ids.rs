//! Identifiers that only the control plane hands out: tenants, their API tokens and savepoints.
//! Job, worker and checkpoint ids live in `weir_dataflow::ids` because workers use them too.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// A tenant: the owner of jobs and API tokens; a tenant sees only its own jobs.
    TenantId
);
string_id!(
    /// The public, non-secret name of an API token (shown in listings, used to revoke it).
    TokenId
);
string_id!(
    /// A savepoint, named by the control plane when the user asks for one.
    SavepointId
);

/// A digest of an API token's secret. The secret itself never enters the Raft log: the API layer
/// hashes a presented bearer token and looks the digest up.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenDigest(pub String);

impl fmt::Debug for TokenDigest {
    // A digest is not the secret, but it still should not end up in logs wholesale.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// A control-plane replica: a Raft node id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica-{}", self.0)
    }
}

impl From<u64> for ReplicaId {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

/// Milliseconds since the Unix epoch, as stamped by the replica that proposed a command. The state
/// machine never reads a clock: applying the same log must give the same state on every replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);
