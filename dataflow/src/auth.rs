//! Credentials every role checks the same way: secret digests, the operator's root token, the
//! cluster keys derived from it, bearer headers, and fresh ids and secrets from the operating
//! system's random source.
//!
//! The root token opens the API's operator routes and nothing else. The parts of a cluster
//! present keys derived from it ([`ClusterKey`], HMAC-SHA256 of the root secret and a label), one
//! per purpose, so a credential that leaks opens one door: replicas to each other (Raft, forwarded
//! writes), workers and the leader to each other, and the shuffle server's tokens. The raw root
//! token is never sent between processes.
//!
//! Secrets never leave this module in the clear by accident: a [`RootToken`] holds a digest, and
//! the `Debug` of every credential is redacted.

use std::fmt::{self, Write};

use hmac::{Hmac, Mac};
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

/// What a [`ClusterKey`] opens; each purpose derives its own key from the root secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Replicas to each other: the Raft RPCs, forwarded writes and reads, membership.
    Peer,
    /// Workers to the control plane's leader (heartbeats) and back (deploy, cancel, savepoint),
    /// and workers to each other.
    Worker,
    /// The shuffle server's: it signs one token per namespace ([`ClusterKey::sign`]).
    Shuffle,
}

impl KeyPurpose {
    /// The label the key is derived with; changing one invalidates every key of that purpose.
    fn label(self) -> &'static str {
        match self {
            KeyPurpose::Peer => "weir cluster key v1: replica peers",
            KeyPurpose::Worker => "weir cluster key v1: workers",
            KeyPurpose::Shuffle => "weir cluster key v1: shuffle",
        }
    }

    /// How the key is named to an operator (`weir key NAME`, the `WEIR_…_KEY` variables).
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::Peer => "peer",
            KeyPurpose::Worker => "worker",
            KeyPurpose::Shuffle => "shuffle",
        }
    }
}

/// HMAC-SHA256 of `message` under `key`, in lowercase hex.
fn hmac_hex(key: &[u8], message: &str) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// A credential one part of a cluster presents to another as a bearer token. Derived from the
/// operator's root secret ([`ClusterKey::derive`]), or given as the derived text itself to a
/// process that must not hold the root token (a worker, the shuffle server).
#[derive(Clone)]
pub struct ClusterKey {
    secret: String,
    digest: String,
}

/// Why a cluster key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterKeyError {
    #[error(transparent)]
    Root(#[from] RootTokenError),
    #[error("a cluster key is 64 hex digits (as `weir key` prints it); this one has {0} characters")]
    Malformed(usize),
}

impl ClusterKey {
    /// The key for `purpose` derived from the operator's root secret (surrounding whitespace
    /// ignored, and as short a secret refused as [`RootToken::from_secret`] refuses).
    pub fn derive(root_secret: &str, purpose: KeyPurpose) -> Result<ClusterKey, ClusterKeyError> {
        let root = root_secret.trim();
        RootToken::from_secret(root)?;
        Ok(ClusterKey::from_derived(hmac_hex(root.as_bytes(), purpose.label())))
    }

    /// A key given as its text (64 hex digits, surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<ClusterKey, ClusterKeyError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClusterKeyError::Malformed(text.chars().count()));
        }
        Ok(ClusterKey::from_derived(text.to_ascii_lowercase()))
    }

    fn from_derived(secret: String) -> ClusterKey {
        let digest = sha256_hex(&secret);
        ClusterKey { secret, digest }
    }

    /// The key's text: what a process sends as its bearer, and what `weir key` prints.
    pub fn reveal(&self) -> &str {
        &self.secret
    }

    /// The `Authorization` header value that presents this key.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    /// Whether an `Authorization` header value presents this key. Digests are compared, so the
    /// comparison's time says nothing about how much of the key a guess got right.
    pub fn accepts_header(&self, authorization: Option<&str>) -> bool {
        authorization.and_then(bearer_secret).is_some_and(|secret| sha256_hex(secret) == self.digest)
    }

    /// A token for `subject` signed with this key (HMAC-SHA256): the shuffle server's key signs
    /// one token per namespace, so a token opens that namespace only.
    pub fn sign(&self, subject: &str) -> String {
        hmac_hex(self.secret.as_bytes(), subject)
    }

    /// Whether `token` is this key's signature of `subject`.
    pub fn verifies(&self, subject: &str, token: &str) -> bool {
        sha256_hex(&self.sign(subject)) == sha256_hex(token)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
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

    #[test]
    fn cluster_keys_are_derived_per_purpose_and_never_the_root_secret() {
        let root = "0123456789abcdef0123456789abcdef";
        let peer = ClusterKey::derive(root, KeyPurpose::Peer).expect("long enough");
        let worker = ClusterKey::derive(&format!("{root}\n"), KeyPurpose::Worker).expect("long enough");
        assert_ne!(peer.reveal(), worker.reveal());
        assert!(!peer.reveal().contains(root) && peer.reveal().len() == 64);
        assert_eq!(ClusterKey::derive(root, KeyPurpose::Worker).expect("same").reveal(), worker.reveal());
        assert!(peer.accepts_header(Some(&peer.bearer())));
        assert!(!peer.accepts_header(Some(&worker.bearer())));
        assert!(!peer.accepts_header(Some(&format!("Bearer {root}"))));
        assert!(!peer.accepts_header(None));
        let given = ClusterKey::from_text(&format!(" {}\n", worker.reveal().to_uppercase())).expect("64 hex digits");
        assert!(given.accepts_header(Some(&worker.bearer())));
        assert_eq!(ClusterKey::from_text("abc").map(|_| ()), Err(ClusterKeyError::Malformed(3)));
        assert!(ClusterKey::derive("short", KeyPurpose::Peer).is_err());
        assert_eq!(format!("{peer:?}"), "ClusterKey(<redacted>)");

        let shuffle = ClusterKey::derive(root, KeyPurpose::Shuffle).expect("long enough");
        let token = shuffle.sign("job-1/7");
        assert!(shuffle.verifies("job-1/7", &token));
        assert!(!shuffle.verifies("job-2/7", &token));
        assert!(!peer.verifies("job-1/7", &token));
    }
}
