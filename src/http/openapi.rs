//! The OpenAPI document of the admin API, served at `/api/v1/openapi.json`:
//! generated from the handlers' `#[utoipa::path]` attributes and the types they
//! exchange, so it cannot drift from what the routes do. A test validates it
//! and runs schemathesis against the live service with it.

use super::admin;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "subkeeper admin API",
        description = "Providers, their health and renewal attempts, forced renewals, the audit trail, tenant tokens and tenant offboarding. Bearer-token protected: the admin token acts for every tenant; a tenant token (`skt_…`) for its one tenant only (another tenant's URL answers 403). Every error has the shape `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        admin::create,
        admin::list,
        admin::get,
        admin::patch,
        admin::delete,
        admin::health,
        admin::attempts,
        admin::deliveries,
        admin::credentials,
        admin::renew,
        admin::renew_tenant,
        admin::audit_log,
        admin::offboard,
        admin::create_token,
        admin::list_tokens,
        admin::revoke_token,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the bearer scheme the operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(document));
}

/// `GET /api/v1/openapi.json` (no token needed: it describes, it reveals nothing).
async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
