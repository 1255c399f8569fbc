//! Credentials every role checks the same way: secret digests, the operator's root token (also
//! the cluster's secret, which workers and replicas present to each other), bearer headers, and
//! fresh ids and secrets from the operating system's random source.
//!
//! Secrets never leave this module in the clear: a [`RootToken`] holds a digest, and its `Debug`
//! is redacted.

use std::fmt::{self, Write};

use sha2::{Digest, Sha256};

/// SHA-256 of a secret's bytes, in lowercase hex. A plain (unsalted, fast) hash is enough: Weir's
/// secrets are 256 random bits, not passwords.
pub fn sha256_hex(secret: &str) -> String {
    to_hex(&Sha256::digest(secret.as_bytes()))
}

/// `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The operating system's random source failed: nothing secret or unique can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this process cannot draw random numbers ({0}); retry on another replica or machine")]
pub struct NoRandomness(String);

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, NoRandomness> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| NoRandomness(error.to_string()))?;
    Ok(to_hex(&buffer))
}

/// A fresh id: `prefix` then 16 hex digits (64 random bits: unique without coordination for any
/// number of jobs or workers a cluster will see; the state machine still refuses a duplicate).
pub fn fresh_id(prefix: &str) -> Result<String, NoRandomness> {
    Ok(format!("{prefix}-{}", random_hex(8)?))
}

/// A fresh token secret: 256 random bits; the prefix makes a leaked secret easy to recognise
/// (secret scanners).
pub fn fresh_token_secret() -> Result<String, NoRandomness> {
    Ok(format!("weir_{}", random_hex(32)?))
}

/// The secret of an `Authorization: Bearer …` header value, if it is one (the scheme is
/// case-insensitive, RFC 7235).
pub fn bearer_secret(authorization: &str) -> Option<&str> {
    authorization
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
        .filter(|secret| !secret.is_empty())
}

/// The operator's root token, held as its digest only. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RootToken {
    digest: String,
}

/// Why a root token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RootTokenError {
    #[error(
        "the root token must be at least {min} characters long (it has {len}); generate one with `openssl rand -hex 32`"
    )]
    TooShort { len: usize, min: usize },
}

impl RootToken {
    /// Guessable root tokens would hand out every tenant; refuse short ones.
    pub const MIN_LEN: usize = 24;

    /// The root token whose secret is `secret`, ignoring surrounding whitespace (a token file
    /// usually ends with a newline).
    pub fn from_secret(secret: &str) -> Result<RootToken, RootTokenError> {
        let secret = secret.trim();
        if secret.len() < Self::MIN_LEN {
            return Err(RootTokenError::TooShort { len: secret.len(), min: Self::MIN_LEN });
        }
        Ok(RootToken { digest: sha256_hex(secret) })
    }

    /// Whether `secret` is this token's (surrounding whitespace ignored).
    pub fn accepts(&self, secret: &str) -> bool {
        sha256_hex(secret.trim()) == self.digest
    }

    /// Whether an `Authorization` header value presents this token as a bearer.
    pub fn accepts_header(&self, authorization: Option<&str>) -> bool {
        authorization.and_then(bearer_secret).is_some_and(|secret| self.accepts(secret))
    }
}

impl fmt::Debug for RootToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootToken(<redacted>)")
    }
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

    #[test]
    fn the_root_token_accepts_its_secret_only_as_a_bearer() {
        let secret = "0123456789abcdef0123456789abcdef";
        let root = RootToken::from_secret(&format!("{secret}\n")).expect("long enough");
        assert!(root.accepts_header(Some(&format!("Bearer {secret}"))));
        assert!(root.accepts_header(Some(&format!("bearer {secret}"))));
        assert!(!root.accepts_header(Some(secret)));
        assert!(!root.accepts_header(Some("Bearer ")));
        assert!(!root.accepts_header(Some("Bearer 0123456789abcdef0123456789abcdeX")));
        assert!(!root.accepts_header(None));
        assert_eq!(format!("{root:?}"), "RootToken(<redacted>)");
        assert!(matches!(RootToken::from_secret("short"), Err(RootTokenError::TooShort { len: 5, .. })));
    }
}
