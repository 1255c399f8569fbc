//! Bearer tokens: who is calling, and whether they may.
//!
//! A presented secret is hashed (SHA-256, lowercase hex: a [`TokenDigest`]) and looked up in this
//! replica's metadata; secrets never reach the Raft log or the logs. Two kinds of caller exist:
//! - a tenant's token, `admin` (read and write the tenant's jobs) or `read-only`;
//! - the operator's root token ([`RootToken`]), configured on the replica process, not stored in
//!   the metadata. It creates tenants and their tokens and reads cluster-wide routes (`/cluster`,
//!   `/workers`); it is not a tenant, so job routes refuse it (403).
//!
//! The checks run in a fixed order — authenticate (401), role (403), then the job's owner (404,
//! in the handlers) — so a caller learns nothing about jobs it may not see.
//!
//! A token created on the leader is usable on a follower once that follower applied it
//! (normally within milliseconds); until then the follower answers 401.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::ids::to_hex;
use super::problem::ApiError;
use crate::metadata::ids::{TenantId, TokenDigest, TokenId};
use crate::metadata::records::TokenRole;

/// The digest under which a token's secret is stored: SHA-256 of the secret's bytes, in hex. A
/// plain (unsalted, fast) hash is enough: secrets are 256 random bits, not passwords.
pub fn digest_secret(secret: &str) -> TokenDigest {
    TokenDigest(to_hex(&Sha256::digest(secret.as_bytes())))
}

/// The operator's root token, held as its digest only. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RootToken {
    digest: TokenDigest,
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
        Ok(RootToken { digest: digest_secret(secret) })
    }

    /// Whether `secret` is this token's (surrounding whitespace ignored).
    pub fn accepts(&self, secret: &str) -> bool {
        digest_secret(secret.trim()) == self.digest
    }
}

impl fmt::Debug for RootToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootToken(<redacted>)")
    }
}

/// A tenant's authenticated token.
#[derive(Clone, Debug)]
pub(crate) struct TenantCaller {
    pub tenant: TenantId,
    /// Named in the log of every write (never the secret).
    pub token: TokenId,
    pub role: TokenRole,
}

/// Whoever presented a valid token.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    Root,
    Tenant(TenantCaller),
}

fn authenticate(parts: &Parts, state: &ApiState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("this route needs an `Authorization: Bearer <token>` header"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let digest = digest_secret(secret);
    if state.root_token.as_ref().is_some_and(|root| root.digest == digest) {
        return Ok(Caller::Root);
    }
    let token = state.replica.reader().read(|metadata| metadata.token_by_digest(&digest).cloned());
    match token {
        Some(token) => Ok(Caller::Tenant(TenantCaller { tenant: token.tenant, token: token.id, role: token.role })),
        None => Err(ApiError::unauthorized("the token is not valid (unknown or revoked)")),
    }
}

fn tenant_token_required() -> ApiError {
    ApiError::forbidden("tenant-token-required", "the root token manages tenants; use a tenant's token for jobs")
}

/// Any valid token.
pub(crate) struct AnyCaller;

/// A tenant's token of either role.
pub(crate) struct TenantReader(pub TenantCaller);

/// A tenant's admin token.
pub(crate) struct TenantWriter(pub TenantCaller);

/// The operator's root token.
pub(crate) struct Operator;

impl FromRequestParts<ApiState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate(parts, state).map(|_| AnyCaller)
    }
}

impl FromRequestParts<ApiState> for TenantReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::Tenant(tenant) => Ok(TenantReader(tenant)),
            Caller::Root => Err(tenant_token_required()),
        }
    }
}

impl FromRequestParts<ApiState> for TenantWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::Tenant(tenant) if tenant.role == TokenRole::Admin => Ok(TenantWriter(tenant)),
            Caller::Tenant(_) => Err(ApiError::forbidden("read-only-token", "this token may read but not change jobs")),
            Caller::Root => Err(tenant_token_required()),
        }
    }
}

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::Root => Ok(Operator),
            Caller::Tenant(_) if state.root_token.is_none() => Err(ApiError::forbidden(
                "root-token-required",
                "only the operator's root token manages tenants, and this replica has none \
                 (--root-token-file or WEIR_ROOT_TOKEN)",
            )),
            Caller::Tenant(_) => {
                Err(ApiError::forbidden("root-token-required", "only the operator's root token manages tenants"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex() {
        // SHA-256("abc"), from FIPS 180-2.
        assert_eq!(digest_secret("abc").0, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn root_tokens_are_trimmed_refused_when_short_and_redacted() {
        assert_eq!(
            RootToken::from_secret("short\n"),
            Err(RootTokenError::TooShort { len: 5, min: RootToken::MIN_LEN })
        );
        let secret = "0123456789abcdef0123456789abcdef";
        let root = RootToken::from_secret(&format!("{secret}\n")).expect("long enough");
        assert_eq!(root.digest, digest_secret(secret));
        assert_eq!(format!("{root:?}"), "RootToken(<redacted>)");
    }
}
