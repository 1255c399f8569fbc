//! Bootstrapping tenants and their tokens, with the operator's root token only.
//!
//! The first tokens cannot come from a tenant token, so the operator starts each replica with a
//! root token (`--root-token-file` or `WEIR_ROOT_TOKEN`; the same on every replica) and uses it
//! to create tenants and their tokens. A token's secret is drawn here, answered once, and only
//! its digest is proposed: it is never stored, replicated or logged. A lost secret is replaced by
//! creating a new token and revoking the old one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_dataflow::wire::ErrorCode;

use super::auth::{Operator, digest_secret};
use super::body::ApiJson;
use super::ids::{fresh_id, fresh_token_secret, now};
use super::problem::ApiError;
use super::{ApiState, propose};
use crate::metadata::Command;
use crate::metadata::ids::{TenantId, TokenId};
use crate::metadata::records::TokenRole;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    id: String,
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    role: TokenRole,
}

/// Tenant ids appear in URLs, logs and metric labels: keep them to DNS-label characters.
fn check_tenant_id(id: &str) -> Result<TenantId, ApiError> {
    let valid = (1..=63).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if valid {
        Ok(TenantId::from(id))
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidTenantId,
            "a tenant id has 1 to 63 lowercase letters, digits or inner dashes",
        ))
    }
}

/// The checks of a tenant's creation before it is proposed.
pub(super) fn check_create_tenant(request: &CreateTenant) -> Result<(), ApiError> {
    check_tenant_id(&request.id).map(|_| ())
}

pub(crate) async fn create_tenant(
    State(state): State<ApiState>,
    _operator: Operator,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = check_tenant_id(&request.id)?;
    let display_name = request.display_name.unwrap_or_else(|| tenant.0.clone());
    propose(&state, Command::CreateTenant { tenant: tenant.clone(), display_name, at: now() }).await?;
    tracing::info!(%tenant, "tenant created");
    Ok((StatusCode::CREATED, Json(json!({ "id": tenant }))))
}

pub(crate) async fn create_token(
    State(state): State<ApiState>,
    _operator: Operator,
    Path(tenant): Path<String>,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = TenantId(tenant);
    let token = TokenId(fresh_id("tok")?);
    let secret = fresh_token_secret()?;
    let command = Command::CreateToken {
        token: token.clone(),
        tenant: tenant.clone(),
        digest: digest_secret(&secret),
        role: request.role,
        at: now(),
    };
    propose(&state, command).await?;
    tracing::info!(%tenant, %token, role = ?request.role, "token created");
    Ok((StatusCode::CREATED, Json(json!({ "id": token, "tenant": tenant, "role": request.role, "secret": secret }))))
}

pub(crate) async fn revoke_token(
    State(state): State<ApiState>,
    _operator: Operator,
    Path((tenant, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (tenant, token) = (TenantId(tenant), TokenId(token));
    let belongs = state.replica.reader().read(|metadata| metadata.token(&token).is_some_and(|t| t.tenant == tenant));
    if !belongs {
        return Err(ApiError::new(ErrorCode::UnknownToken, format!("tenant {tenant} has no token {token}")));
    }
    propose(&state, Command::RevokeToken { token: token.clone() }).await?;
    tracing::info!(%tenant, %token, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
