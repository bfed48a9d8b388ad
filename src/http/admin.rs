//! The admin API under `/api/v1/`: per tenant, create, list, read, patch and
//! delete providers, replace their credentials, read their health, attempts and
//! the audit trail, and force a renewal of one provider or of every provider of
//! the tenant; for the admin token only, tenant tokens and tenant offboarding.
//!
//! Every handler takes a [`Principal`] (401 without a valid token) and calls
//! [`Principal::authorize`] for the tenant in the URL before it reads or writes
//! anything: a tenant token on another tenant's URL is 403, and another
//! tenant's provider under one's own tenant is 404. Every change leaves an audit
//! row naming the caller by token id.

use super::auth::Principal;
use super::error::ErrorBody;
use super::page::{self, KeyKind, PageQuery};
use super::{AppState, Body, HttpError};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subkeeper_actors::domain::{
    ProviderHealth, ProviderId, ProviderStatus, RenewalResult, TenantId,
};
use subkeeper_actors::ports::{
    AttemptView, AuditRecord, AuditView, NewCredentials, NewProvider, PageRequest, ProviderPatch,
    ProviderView, SubscriptionView, TokenView,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The refusals every admin route may answer, in the API's one error shape.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only its schema is used.
pub enum Refusals {
    /// Malformed input: a bad tenant id, JSON, cursor or limit.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or not a valid one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A tenant token on another tenant's URL, or on an admin-only route.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such provider (or token) for this tenant, or no such route.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is larger than the admin API accepts.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// Well-formed but refused (a missing credential, a bad name…).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// A dependency (the database, the fleet) is unavailable; retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A page of providers.
#[derive(Serialize, ToSchema)]
pub struct ProvidersPage {
    /// Oldest first.
    providers: Vec<ProviderView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A page of renewal attempts.
#[derive(Serialize, ToSchema)]
pub struct AttemptsPage {
    /// Newest first.
    attempts: Vec<AttemptView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A page of a provider's delivery log.
#[derive(Serialize, ToSchema)]
pub struct DeliveriesPage {
    /// Newest first.
    deliveries: Vec<subkeeper_actors::ports::DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A page of the audit trail.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    audit: Vec<AuditView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A page of tokens.
#[derive(Serialize, ToSchema)]
pub struct TokensPage {
    /// Oldest first.
    tokens: Vec<TokenView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A provider's health.
#[derive(Serialize, ToSchema)]
pub struct HealthAnswer {
    /// The provider.
    provider_id: ProviderId,
    /// connected / error / needs_reauth / disabled.
    status: ProviderStatus,
    /// Actionable message while in error or needs_reauth.
    error_message: Option<String>,
    /// The live subscription.
    subscription: Option<SubscriptionView>,
    /// The health row, once the first attempt ran.
    health: Option<ProviderHealth>,
}

/// A token just made: the only answer that holds the token itself.
#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    /// Token id (what the audit trail names).
    id: Uuid,
    /// The one tenant it may act for.
    tenant: TenantId,
    /// What the operator called it.
    name: String,
    /// When it was made.
    created_at: DateTime<Utc>,
    /// Always `null` for a new token.
    revoked_at: Option<DateTime<Utc>>,
    /// The bearer token, `skt_…`. Shown once: only its SHA-256 is kept.
    token: String,
}

/// An offboarding accepted.
#[derive(Serialize, ToSchema)]
pub struct OffboardingAccepted {
    /// The tenant.
    tenant: TenantId,
    /// Always `offboarding`.
    status: String,
    /// What happens now.
    message: String,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/providers", web::post().to(create))
        .route("/tenants/{tenant}/providers", web::get().to(list))
        .route("/tenants/{tenant}/providers/{id}", web::get().to(get))
        .route("/tenants/{tenant}/providers/{id}", web::patch().to(patch))
        .route("/tenants/{tenant}/providers/{id}", web::delete().to(delete))
        .route(
            "/tenants/{tenant}/providers/{id}/health",
            web::get().to(health),
        )
        .route(
            "/tenants/{tenant}/providers/{id}/attempts",
            web::get().to(attempts),
        )
        .route(
            "/tenants/{tenant}/providers/{id}/deliveries",
            web::get().to(deliveries),
        )
        .route(
            "/tenants/{tenant}/providers/{id}/credentials",
            web::put().to(credentials),
        )
        .route(
            "/tenants/{tenant}/providers/{id}/renew",
            web::post().to(renew),
        )
        .route("/tenants/{tenant}/renew", web::post().to(renew_tenant))
        .route("/tenants/{tenant}/audit", web::get().to(audit_log))
        .route("/tenants/{tenant}", web::delete().to(offboard))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens", web::get().to(list_tokens))
        .route("/tokens/{id}", web::delete().to(revoke_token));
}

/// The tenant of the URL, which the caller must be allowed to act for.
fn tenant(principal: &Principal, raw: &str) -> Result<TenantId, HttpError> {
    let tenant = TenantId::parse(raw).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    principal.authorize(&tenant)?;
    Ok(tenant)
}

/// Parses `{tenant}/{id}` for `principal`; a malformed id cannot name a
/// provider, so it is a 404.
fn key(
    principal: &Principal,
    path: &(String, String),
) -> Result<(TenantId, ProviderId), HttpError> {
    let tenant = tenant(principal, &path.0)?;
    let id = path
        .1
        .parse()
        .map_err(|_| HttpError::NotFound(format!("no provider {} for tenant {tenant}", path.1)))?;
    Ok((tenant, id))
}

fn not_found(tenant: &TenantId, id: ProviderId) -> HttpError {
    HttpError::NotFound(format!("no provider {id} for tenant {tenant}"))
}

/// Parses a JSON body with a clear message (serde's, which names the field).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(bytes)
        .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/providers", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = NewProvider, responses((status = 201, description = "Created; its subscription is registered next", body = ProviderView), Refusals), security(("bearer" = [])))]
async fn create(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let new: NewProvider = body(&bytes)?;
    new.validate().map_err(HttpError::Unprocessable)?;
    let view = state
        .admin
        .create_provider(&tenant, &new, &principal.audit(&bytes))
        .await?;
    tracing::info!(tenant = %tenant, provider = %view.id, kind = %view.kind, "provider created");
    state.fleet.reconcile();
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/providers", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), PageQuery), responses((status = 200, description = "A page of the tenant's providers, oldest first", body = ProvidersPage), Refusals), security(("bearer" = [])))]
async fn list(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let request = query.request(KeyKind::Uuid)?;
    let page = state.admin.list_providers(&tenant, &request).await?;
    Ok(HttpResponse::Ok().json(ProvidersPage {
        providers: page.items,
        next_cursor: page.next.map(page::encode),
    }))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), responses((status = 200, description = "The provider", body = ProviderView), Refusals), security(("bearer" = [])))]
async fn get(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let view = state
        .admin
        .provider_view(&tenant, id)
        .await?
        .ok_or_else(|| not_found(&tenant, id))?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/providers/{id}/health", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), responses((status = 200, description = "Its health", body = HealthAnswer), Refusals), security(("bearer" = [])))]
async fn health(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let view = state
        .admin
        .provider_view(&tenant, id)
        .await?
        .ok_or_else(|| not_found(&tenant, id))?;
    Ok(HttpResponse::Ok().json(HealthAnswer {
        provider_id: view.id,
        status: view.status,
        error_message: view.error_message,
        subscription: view.subscription,
        health: view.health,
    }))
}

#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), request_body = ProviderPatch, responses((status = 200, description = "Changed", body = ProviderView), Refusals), security(("bearer" = [])))]
async fn patch(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let patch: ProviderPatch = body(&bytes)?;
    patch.validate().map_err(HttpError::Unprocessable)?;
    let view = state
        .admin
        .patch_provider(&tenant, id, &patch, &principal.audit(&bytes))
        .await?
        .ok_or_else(|| not_found(&tenant, id))?;
    state.fleet.reconcile();
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/providers/{id}", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), responses((status = 204, description = "Deleted; its subscription is deleted at the provider next"), Refusals), security(("bearer" = [])))]
async fn delete(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    if !state
        .admin
        .delete_provider(&tenant, id, &principal.audit(b""))
        .await?
    {
        return Err(not_found(&tenant, id));
    }
    tracing::info!(tenant = %tenant, provider = %id, "provider deleted; its subscription will be deleted at the provider");
    state.fleet.reconcile();
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/providers/{id}/credentials", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), request_body = NewCredentials, responses((status = 204, description = "Replaced (takes the provider out of needs_reauth)"), Refusals), security(("bearer" = [])))]
async fn credentials(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let new: NewCredentials = body(&bytes)?;
    // What a provider needs depends on its kind (which never changes).
    let Some(provider) = state.admin.provider_view(&tenant, id).await? else {
        return Err(not_found(&tenant, id));
    };
    new.validate_for(provider.kind)
        .map_err(HttpError::Unprocessable)?;
    if !state
        .admin
        .replace_credentials(&tenant, id, &new, &principal.audit(&bytes))
        .await?
    {
        return Err(not_found(&tenant, id));
    }
    state.fleet.reconcile();
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/providers/{id}/attempts", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)"), PageQuery), responses((status = 200, description = "A page of its renewal attempts, newest first", body = AttemptsPage), Refusals), security(("bearer" = [])))]
async fn attempts(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let request = query.request(KeyKind::Seq)?;
    if state.admin.provider_view(&tenant, id).await?.is_none() {
        return Err(not_found(&tenant, id));
    }
    let page = state.admin.attempts(&tenant, id, &request).await?;
    Ok(HttpResponse::Ok().json(AttemptsPage {
        attempts: page.items,
        next_cursor: page.next.map(page::encode),
    }))
}

/// A page of the provider's delivery log, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/providers/{id}/deliveries", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)"), PageQuery), responses((status = 200, description = "A page of its delivery log (hashes, never payloads), newest first", body = DeliveriesPage), Refusals), security(("bearer" = [])))]
async fn deliveries(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let request = query.request(KeyKind::Seq)?;
    if state.admin.provider_view(&tenant, id).await?.is_none() {
        return Err(not_found(&tenant, id));
    }
    let page = state.deliveries.deliveries(&tenant, id, &request).await?;
    Ok(HttpResponse::Ok().json(DeliveriesPage {
        deliveries: page.items,
        next_cursor: page.next.map(page::encode),
    }))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/providers/{id}/renew", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("id" = String, Path, format = Uuid, description = "Provider id (a UUID)")), responses((status = 200, description = "Renewed now: the RenewalResult (success false if the attempt failed)", body = RenewalResult), Refusals), security(("bearer" = [])))]
async fn renew(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (tenant, id) = key(&principal, &path)?;
    let result = state.fleet.renew(tenant.clone(), id).await;
    let outcome = match &result {
        Ok(r) if r.success => "ok",
        Ok(_) => "failed",
        Err(_) => "refused",
    };
    // A renewal of nothing changes nothing and is not worth a record.
    if !matches!(
        result,
        Err(subkeeper_actors::fleet::FleetError::UnknownProvider { .. })
    ) {
        audit(
            &state,
            &principal,
            &tenant,
            "provider.renew",
            id.to_string(),
            outcome,
        )
        .await;
    }
    Ok(HttpResponse::Ok().json(result?))
}

/// Renews every provider of the tenant now and answers with their results (what
/// `subkeeper renew --tenant T` asks an embedded service for).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/renew", tag = "providers", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$")), responses((status = 200, description = "Every provider of the tenant renewed now", body = Vec<RenewalResult>), Refusals), security(("bearer" = [])))]
async fn renew_tenant(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let results = state.fleet.renew_all(tenant.clone(), None).await;
    let outcome = match &results {
        Ok(r) if r.iter().all(|r| r.success) => "ok",
        Ok(_) => "failed",
        Err(_) => "refused",
    };
    if results.is_ok() {
        audit(
            &state,
            &principal,
            &tenant,
            "tenant.renew",
            tenant.to_string(),
            outcome,
        )
        .await;
    }
    Ok(HttpResponse::Ok().json(results?))
}

/// Records an action that changes no row of its own. The action happened
/// whatever the store says, so a failure to record it is logged, not answered.
async fn audit(
    state: &AppState,
    principal: &Principal,
    tenant: &TenantId,
    action: &str,
    target: String,
    outcome: &str,
) {
    let record = AuditRecord {
        tenant: tenant.clone(),
        actor: principal.actor(),
        action: action.into(),
        target,
        outcome: outcome.into(),
        request_hash: crate::store::request_hash(b""),
    };
    if let Err(e) = state.admin.record_audit(&record).await {
        tracing::error!(error = %e, tenant = %tenant, action, "an operator action could not be audited");
    }
}

/// The tenant's audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), PageQuery), responses((status = 200, description = "A page of the tenant's audit trail, newest first", body = AuditPage), Refusals), security(("bearer" = [])))]
async fn audit_log(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let request = query.request(KeyKind::Seq)?;
    let page = state.admin.audit_log(&tenant, &request).await?;
    Ok(HttpResponse::Ok().json(AuditPage {
        audit: page.items,
        next_cursor: page.next.map(page::encode),
    }))
}

/// `POST /tokens` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The tenant the token acts for.
    tenant: String,
    /// What the operator calls it.
    name: String,
}

/// Makes a tenant token and shows it, once (admin only).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, description = "Made; the token is in this answer only", body = TokenCreated), Refusals), security(("bearer" = [])))]
async fn create_token(
    principal: Principal,
    state: web::Data<AppState>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    principal.require_admin()?;
    let new: NewToken = body(&bytes)?;
    let tenant =
        TenantId::parse(&new.tenant).map_err(|e| HttpError::Unprocessable(e.to_string()))?;
    crate::tokens::check_name(&new.name).map_err(HttpError::Unprocessable)?;
    let (token, hash) = crate::tokens::mint().map_err(|e| {
        tracing::error!(error = %e, "no token could be made");
        HttpError::Internal("no token could be made".into())
    })?;
    let view = state
        .admin
        .create_token(&tenant, new.name.trim(), &hash, &principal.audit(&bytes))
        .await?;
    tracing::info!(tenant = %tenant, token_id = %view.id, "tenant token created");
    Ok(HttpResponse::Created().json(TokenCreated {
        id: view.id,
        tenant: view.tenant,
        name: view.name,
        created_at: view.created_at,
        revoked_at: view.revoked_at,
        token,
    }))
}

/// `GET /tokens?tenant=` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokensQuery {
    /// Only this tenant's tokens.
    tenant: Option<String>,
    /// Rows per page, at least 1; larger than 500 is capped at 500; default 50.
    #[param(value_type = Option<u32>, minimum = 1)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; absent for the first page.
    cursor: Option<String>,
}

/// Lists tokens, of one tenant or all (admin only); never the tokens themselves.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(TokensQuery), responses((status = 200, description = "A page of tokens, oldest first (never the tokens themselves)", body = TokensPage), Refusals), security(("bearer" = [])))]
async fn list_tokens(
    principal: Principal,
    state: web::Data<AppState>,
    query: web::Query<TokensQuery>,
) -> Result<HttpResponse, HttpError> {
    principal.require_admin()?;
    let tenant = query
        .tenant
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let request: PageRequest = PageQuery {
        limit: query.limit.clone(),
        cursor: query.cursor.clone(),
    }
    .request(KeyKind::Uuid)?;
    let page = state.admin.tokens(tenant.as_ref(), &request).await?;
    Ok(HttpResponse::Ok().json(TokensPage {
        tokens: page.items,
        next_cursor: page.next.map(page::encode),
    }))
}

/// Revokes a token (admin only); revoking a revoked token changes nothing.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, format = Uuid, description = "Token id (a UUID)")), responses((status = 200, description = "Revoked (again: unchanged)", body = TokenView), Refusals), security(("bearer" = [])))]
async fn revoke_token(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    principal.require_admin()?;
    let not_found = || HttpError::NotFound(format!("no token {}", path.as_str()));
    let id: Uuid = path.parse().map_err(|_| not_found())?;
    let view = state
        .admin
        .revoke_token(id, &principal.audit(b""))
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(tenant = %view.tenant, token_id = %view.id, "tenant token revoked");
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /tenants/{tenant}` query: the tenant id again, so a slip of the
/// keyboard cannot offboard a tenant.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OffboardQuery {
    /// The tenant id again (required).
    confirm: Option<String>,
}

/// Offboards a tenant (admin only): revokes its tokens now, then the
/// housekeeping job retires its providers (their subscriptions deleted at the
/// providers, through the fleet), and removes its rows in batches, dependents
/// first; one audit record is kept. Idempotent: asking again resumes.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path, description = "Tenant id: 1-64 of A-Z a-z 0-9 _ -", pattern = "^[A-Za-z0-9_-]{1,64}$"), OffboardQuery), responses((status = 202, description = "Offboarding: tokens revoked now, the rest in the background", body = OffboardingAccepted), Refusals), security(("bearer" = [])))]
async fn offboard(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<OffboardQuery>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    principal.require_admin()?;
    if query.confirm.as_deref() != Some(tenant.as_str()) {
        return Err(HttpError::BadRequest(format!(
            "offboarding removes every provider, subscription, token and row of tenant {tenant}: repeat the tenant id as ?confirm={tenant}"
        )));
    }
    let request = format!("DELETE /api/v1/tenants/{tenant}?confirm={tenant}");
    state
        .admin
        .begin_offboarding(&tenant, &principal.audit(request.as_bytes()))
        .await?;
    crate::telemetry::events::TenantOffboarding {
        tenant: tenant.as_str(),
        step: "started",
    }
    .emit();
    state.housekeeping.wake();
    Ok(HttpResponse::Accepted().json(OffboardingAccepted {
        tenant,
        status: "offboarding".into(),
        message: "tokens revoked; providers are being retired (subscriptions deleted at the providers), then every row of the tenant is removed; the audit keeps one record (action tenant.offboard, outcome ok once finished)".into(),
    }))
}
