//! Bootstrapping tenants and their tokens, with the operator's root token only.
//!
//! The first tokens cannot come from a tenant token, so the operator starts each replica with a
//! root token (`--root-token-file` or `WEIR_ROOT_TOKEN`; the same on every replica) and uses it
//! to create tenants and their tokens. A token's secret is drawn here, answered once, and only
//! its digest is proposed: it is never stored, replicated or logged. A lost secret is replaced by
//! creating a new token and revoking the old one.
//!
//! The root token also sets a tenant's own quota (`PUT /tenants/{tenant}/quota`), replicated in
//! the tenant's record so every replica enforces the same; what it leaves unset is the
//! operator's default of each replica's flags.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_dataflow::wire::ErrorCode;

use super::auth::{Operator, digest_secret};
use super::body::{ApiJson, ApiPath, JsonU32};
use super::ids::{fresh_id, fresh_token_secret, now};
use super::jobs::check_name;
use super::problem::ApiError;
use super::{ApiState, propose};
use crate::metadata::Command;
use crate::metadata::ids::{TenantId, TokenId};
use crate::metadata::records::{QuotaOverride, TokenRole};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    id: String,
    /// Absent or null: the id. A name as job names are (printable, 1 to 200 characters).
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    role: TokenRole,
}

/// A tenant's own limits; an absent or null one is the operator's default. A rate of zero would
/// never refill (stop the tenant with `max_running_jobs: 0` instead), so it is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetQuota {
    #[serde(default)]
    max_running_jobs: Option<JsonU32>,
    #[serde(default)]
    max_slots: Option<JsonU32>,
    #[serde(default)]
    submissions_per_minute: Option<JsonU32>,
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
    let display_name = match &request.display_name {
        Some(name) => check_name(name)?.to_owned(),
        None => tenant.0.clone(),
    };
    propose(&state, Command::CreateTenant { tenant: tenant.clone(), display_name, at: now() }).await?;
    tracing::info!(%tenant, "tenant created");
    Ok((StatusCode::CREATED, Json(json!({ "id": tenant }))))
}

pub(crate) async fn create_token(
    State(state): State<ApiState>,
    _operator: Operator,
    ApiPath(tenant): ApiPath<String>,
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
    ApiPath((tenant, token)): ApiPath<(String, String)>,
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

/// The tenant's quota: the limits in force, the tenant's own among them (`own`, when just set:
/// a follower may not have applied it yet), and what its jobs hold now (as this replica has
/// applied the metadata).
fn quota_view(state: &ApiState, tenant: &TenantId, own: Option<QuotaOverride>) -> Result<Value, ApiError> {
    state
        .replica
        .reader()
        .read(|metadata| {
            let own = own.unwrap_or(metadata.tenant(tenant)?.quota);
            let quota = own.over(state.quota);
            let (running_jobs, slots) = metadata.usage_of(tenant);
            Some(json!({
                "tenant": tenant,
                "max_running_jobs": quota.max_running_jobs,
                "max_slots": quota.max_slots,
                "submissions_per_minute": quota.submissions_per_minute,
                "submission_burst": quota.submission_burst(),
                "own": own,
                "running_jobs": running_jobs,
                "slots": slots,
            }))
        })
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("tenant {tenant} does not exist")))
}

pub(crate) async fn quota(
    State(state): State<ApiState>,
    _operator: Operator,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    quota_view(&state, &TenantId(tenant), None).map(Json)
}

pub(crate) async fn set_quota(
    State(state): State<ApiState>,
    _operator: Operator,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(request): ApiJson<SetQuota>,
) -> Result<Json<Value>, ApiError> {
    let tenant = TenantId(tenant);
    if request.submissions_per_minute.is_some_and(|JsonU32(rate)| rate == 0) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "submissions_per_minute is at least 1; stop a tenant's submissions with max_running_jobs: 0",
        ));
    }
    let quota = QuotaOverride {
        max_running_jobs: request.max_running_jobs.map(|n| n.0),
        max_slots: request.max_slots.map(|n| n.0),
        submissions_per_minute: request.submissions_per_minute.map(|n| n.0),
    };
    propose(&state, Command::SetTenantQuota { tenant: tenant.clone(), quota }).await?;
    tracing::info!(%tenant, ?quota, "tenant quota set");
    quota_view(&state, &tenant, Some(quota)).map(Json)
}
