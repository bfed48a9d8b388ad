//! The admin API under `/api/v1/tenants/{tenant}/`: create, list, read, patch,
//! delete providers, replace their credentials, read their health and attempts,
//! and force a renewal of one provider or of every provider of the tenant.
//! Bearer-token protected (constant-time compare); every route is tenant-scoped,
//! so another tenant's provider answers 404.

use super::{AppState, Body, HttpError};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use subkeeper_actors::domain::{ProviderId, TenantId};
use subkeeper_actors::ports::{NewCredentials, NewProvider, ProviderPatch};
use subtle::ConstantTimeEq;

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
            "/tenants/{tenant}/providers/{id}/credentials",
            web::put().to(credentials),
        )
        .route(
            "/tenants/{tenant}/providers/{id}/renew",
            web::post().to(renew),
        )
        .route("/tenants/{tenant}/renew", web::post().to(renew_tenant));
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is
/// case-insensitive (RFC 7235 §2.1); the token is taken as given.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Checks the bearer token in constant time. No configured token: nothing passes.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), HttpError> {
    let Some(expected) = state.config.admin_token.as_deref() else {
        return Err(HttpError::Unauthorized);
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(HttpError::Unauthorized)
    }
}

fn tenant(raw: &str) -> Result<TenantId, HttpError> {
    TenantId::parse(raw).map_err(|e| HttpError::BadRequest(e.to_string()))
}

/// Parses `{tenant}/{id}`; a malformed id cannot name a provider, so it is a 404.
fn key(path: &(String, String)) -> Result<(TenantId, ProviderId), HttpError> {
    let tenant = tenant(&path.0)?;
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
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let tenant = tenant(&path)?;
    let new: NewProvider = body(&bytes)?;
    new.validate().map_err(HttpError::Unprocessable)?;
    let view = state
        .admin
        .create_provider(&tenant, &new, &crate::store::request_hash(&bytes))
        .await?;
    tracing::info!(tenant = %tenant, provider = %view.id, kind = %view.kind, "provider created");
    state.fleet.reconcile();
    Ok(HttpResponse::Created().json(view))
}

async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let tenant = tenant(&path)?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "providers": state.admin.list_providers(&tenant).await? })))
}

async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    let view = state
        .admin
        .provider_view(&tenant, id)
        .await?
        .ok_or_else(|| not_found(&tenant, id))?;
    Ok(HttpResponse::Ok().json(view))
}

async fn health(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
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
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    let patch: ProviderPatch = body(&bytes)?;
    patch.validate().map_err(HttpError::Unprocessable)?;
    let view = state
        .admin
        .patch_provider(&tenant, id, &patch, &crate::store::request_hash(&bytes))
        .await?
        .ok_or_else(|| not_found(&tenant, id))?;
    state.fleet.reconcile();
    Ok(HttpResponse::Ok().json(view))
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    if !state
        .admin
        .delete_provider(&tenant, id, &crate::store::request_hash(b""))
        .await?
    {
        return Err(not_found(&tenant, id));
    }
    tracing::info!(tenant = %tenant, provider = %id, "provider deleted; its subscription will be deleted at the provider");
    state.fleet.reconcile();
    Ok(HttpResponse::NoContent().finish())
}

async fn credentials(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Body(bytes): Body,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    let new: NewCredentials = body(&bytes)?;
    // What a provider needs depends on its kind (which never changes).
    let Some(provider) = state.admin.provider_view(&tenant, id).await? else {
        return Err(not_found(&tenant, id));
    };
    new.validate_for(provider.kind)
        .map_err(HttpError::Unprocessable)?;
    if !state
        .admin
        .replace_credentials(&tenant, id, &new, &crate::store::request_hash(&bytes))
        .await?
    {
        return Err(not_found(&tenant, id));
    }
    state.fleet.reconcile();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct AttemptsQuery {
    limit: Option<i64>,
}

async fn attempts(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<AttemptsQuery>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    if state.admin.provider_view(&tenant, id).await?.is_none() {
        return Err(not_found(&tenant, id));
    }
    let rows = state
        .admin
        .attempts(&tenant, id, query.limit.unwrap_or(50))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "attempts": rows })))
}

async fn renew(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let (tenant, id) = key(&path)?;
    let result = state.fleet.renew(tenant, id).await?;
    Ok(HttpResponse::Ok().json(result))
}

/// Renews every provider of the tenant now and answers with their results (what
/// `subkeeper renew --tenant T` asks an embedded service for).
async fn renew_tenant(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &state)?;
    let tenant = tenant(&path)?;
    let results = state.fleet.renew_all(tenant, None).await?;
    Ok(HttpResponse::Ok().json(results))
}
