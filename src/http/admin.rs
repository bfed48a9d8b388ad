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
use super::page::{self, KeyKind, PageQuery};
use super::{AppState, Body, HttpError};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use subkeeper_actors::domain::{ProviderId, TenantId};
use subkeeper_actors::ports::{
    AuditRecord, NewCredentials, NewProvider, PageRequest, ProviderPatch,
};
use uuid::Uuid;

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

async fn list(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let request = query.request(KeyKind::Uuid)?;
    let providers = state.admin.list_providers(&tenant, &request).await?;
    Ok(HttpResponse::Ok().json(page::json("providers", providers)))
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "provider_id": view.id,
        "status": view.status,
        "error_message": view.error_message,
        "subscription": view.subscription,
        "health": view.health,
    })))
}

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
    let rows = state.admin.attempts(&tenant, id, &request).await?;
    Ok(HttpResponse::Ok().json(page::json("attempts", rows)))
}

/// A page of the provider's delivery log, newest first.
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
    let rows = state.deliveries.deliveries(&tenant, id, &request).await?;
    Ok(HttpResponse::Ok().json(page::json("deliveries", rows)))
}

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
async fn audit_log(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, HttpError> {
    let tenant = tenant(&principal, &path)?;
    let request = query.request(KeyKind::Seq)?;
    let rows = state.admin.audit_log(&tenant, &request).await?;
    Ok(HttpResponse::Ok().json(page::json("audit", rows)))
}

/// `POST /tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The tenant the token acts for.
    tenant: String,
    /// What the operator calls it.
    name: String,
}

/// Makes a tenant token and shows it, once (admin only).
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
    let mut body = serde_json::to_value(&view).map_err(|e| {
        tracing::error!(error = %e, "a token view could not be encoded");
        HttpError::Internal("the answer could not be encoded".into())
    })?;
    body["token"] = token.into();
    Ok(HttpResponse::Created().json(body))
}

/// `GET /tokens?tenant=` query.
#[derive(Deserialize)]
struct TokensQuery {
    tenant: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Lists tokens, of one tenant or all (admin only); never the tokens themselves.
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
    let tokens = state.admin.tokens(tenant.as_ref(), &request).await?;
    Ok(HttpResponse::Ok().json(page::json("tokens", tokens)))
}

/// Revokes a token (admin only); revoking a revoked token changes nothing.
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
#[derive(Deserialize)]
struct OffboardQuery {
    confirm: Option<String>,
}

/// Offboards a tenant (admin only): revokes its tokens now, then the
/// housekeeping job retires its providers (their subscriptions deleted at the
/// providers, through the fleet), and removes its rows in batches, dependents
/// first; one audit record is kept. Idempotent: asking again resumes.
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
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "tenant": tenant,
        "status": "offboarding",
        "message": "tokens revoked; providers are being retired (subscriptions deleted at the providers), then every row of the tenant is removed; the audit keeps one record (action tenant.offboard, outcome ok once finished)",
    })))
}
