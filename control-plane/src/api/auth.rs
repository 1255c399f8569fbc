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

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
pub use weir_dataflow::auth::{RootToken, RootTokenError};
use weir_dataflow::auth::{bearer_secret, sha256_hex};
use weir_dataflow::wire::ErrorCode;

use super::ApiState;
use super::problem::ApiError;
use crate::metadata::ids::{TenantId, TokenDigest, TokenId};
use crate::metadata::records::TokenRole;

/// The digest under which a token's secret is stored: SHA-256 of the secret's bytes, in hex.
pub fn digest_secret(secret: &str) -> TokenDigest {
    TokenDigest(sha256_hex(secret))
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
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::new(ErrorCode::Unauthorized, "this route needs an `Authorization: Bearer <token>` header")
    })?;
    let secret =
        header.to_str().ok().and_then(bearer_secret).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "the Authorization header must be `Bearer <token>`")
        })?;
    if state.root_token.as_ref().is_some_and(|root| root.accepts(secret)) {
        return Ok(Caller::Root);
    }
    let digest = digest_secret(secret);
    let token = state.replica.reader().read(|metadata| metadata.token_by_digest(&digest).cloned());
    match token {
        Some(token) => Ok(Caller::Tenant(TenantCaller { tenant: token.tenant, token: token.id, role: token.role })),
        None => Err(ApiError::new(ErrorCode::Unauthorized, "the token is not valid (unknown or revoked)")),
    }
}

fn tenant_token_required() -> ApiError {
    ApiError::new(ErrorCode::TenantTokenRequired, "the root token manages tenants; use a tenant's token for jobs")
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
            Caller::Tenant(_) => {
                Err(ApiError::new(ErrorCode::ReadOnlyToken, "this token may read but not change jobs"))
            }
            Caller::Root => Err(tenant_token_required()),
        }
    }
}

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::Root => Ok(Operator),
            Caller::Tenant(_) if state.root_token.is_none() => Err(ApiError::new(
                ErrorCode::RootTokenRequired,
                "only the operator's root token manages tenants, and this replica has none \
                 (--root-token-file or WEIR_ROOT_TOKEN)",
            )),
            Caller::Tenant(_) => {
                Err(ApiError::new(ErrorCode::RootTokenRequired, "only the operator's root token manages tenants"))
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
}
