//! A first tenant and its admin token, so that a single-user deployment (`weir standalone` on a
//! laptop) works without an operator creating them through the root token. The caller keeps
//! the secret (a file beside the data); only its digest is proposed, as the API does.

use crate::api::digest_secret;
use crate::api::ids::{fresh_id, fresh_token_secret, now};
use crate::handle::{ProposeError, ReplicaHandle};
use crate::metadata::ids::{TenantId, TokenId};
use crate::metadata::records::TokenRole;
use crate::metadata::{Command, Rejection};

/// Why the first tenant or its token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Unavailable(#[from] ProposeError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    NoRandomness(String),
}

/// Makes sure `tenant` exists and that `known_secret` (the secret kept from an earlier start) is
/// one of its admin tokens. Answers a new secret when one had to be made (no secret kept, or
/// one the metadata no longer knows), `None` when the kept one is still good.
pub async fn ensure_tenant_admin(
    replica: &dyn ReplicaHandle,
    tenant: &TenantId,
    known_secret: Option<&str>,
) -> Result<Option<String>, BootstrapError> {
    let (tenant_exists, secret_valid) = replica.reader().read(|metadata| {
        let valid = known_secret.is_some_and(|secret| {
            metadata
                .token_by_digest(&digest_secret(secret.trim()))
                .is_some_and(|token| &token.tenant == tenant && token.role == TokenRole::Admin)
        });
        (metadata.tenant(tenant).is_some(), valid)
    });
    if secret_valid {
        return Ok(None);
    }
    if !tenant_exists {
        let command = Command::CreateTenant { tenant: tenant.clone(), display_name: tenant.0.clone(), at: now() };
        replica.propose(command).await?.into_result()?;
    }
    let no_randomness = |error: crate::api::ApiError| BootstrapError::NoRandomness(error.detail().to_string());
    let token = TokenId(fresh_id("tok").map_err(no_randomness)?);
    let secret = fresh_token_secret().map_err(no_randomness)?;
    let command = Command::CreateToken {
        token,
        tenant: tenant.clone(),
        digest: digest_secret(&secret),
        role: TokenRole::Admin,
        at: now(),
    };
    replica.propose(command).await?.into_result()?;
    Ok(Some(secret))
}
