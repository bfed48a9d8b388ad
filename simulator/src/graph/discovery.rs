//! The identity platform's OpenID Connect metadata:
//! `GET /{tenant}/v2.0/.well-known/openid-configuration` and the signing keys at
//! its `jwks_uri`, `GET /{tenant}/discovery/v2.0/keys`, so MSAL-style clients
//! that discover their endpoints can be pointed at the simulator.
//!
//! Every URL is built from the base the request came in on (scheme and
//! `Host`), so the document is right on 127.0.0.1:PORT and behind a compose
//! service name alike. Owns no state: the simulator's access tokens are opaque,
//! so the key only has to be a well-formed public key, never used to sign.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

/// The `kid` of the one signing key published.
const KEY_ID: &str = "subkeeper-simulator-rs256-1";

/// Modulus of a 2048-bit RSA public key (base64url, no padding); generated once
/// for the simulator. Its private half was never kept.
const KEY_MODULUS: &str = "kprRm9tHipMXZ4heKXgIBrrAAsNwBRXx0FSXMi2j6bqtY-u8qVhC9M4A32EJjoYkQyxUGJDn3aRpNzviA6XxbWNlha-S-xSkTghksIcdQcgtvRC7444W1J_Ac4yIemXzI6Cp8fs7_zgRU74BpSAp_Wg__3ELrXlaTC6WzA1e1qn0g-x_faxAT8CanIWDcnNynp1LzviCP1azvzT6pp50OpnconJgx-gFVm-ooxFoHTonlihpxbooDzhv_fdl1csvJaOidpK7UCDZ9O7mWt5u019srORSoz82PjIJn5vSm9A7AfnCP2dRF-SLy0XXr3NdUhBQdE3mJ7mBFvvqy6G2VQ";

/// Public exponent 65537, base64url.
const KEY_EXPONENT: &str = "AQAB";

/// Tenant segments that are not a directory: the issuer then names the
/// `{tenantid}` placeholder, as the identity platform's metadata does.
const MULTI_TENANT_SEGMENTS: &[&str] = &["common", "organizations", "consumers"];

/// Mounts the discovery document and the key set.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            web::get().to(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", web::get().to(keys));
}

/// The scheme and authority the client used to reach the simulator.
fn request_base(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
async fn openid_configuration(req: HttpRequest, tenant: web::Path<String>) -> HttpResponse {
    let base = request_base(&req);
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(configuration_json(&base, &tenant).to_string())
}

/// `GET /{tenant}/discovery/v2.0/keys`.
async fn keys(req: HttpRequest, tenant: web::Path<String>) -> HttpResponse {
    let base = request_base(&req);
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(keys_json(&issuer(&base, &tenant)).to_string())
}

/// The issuer for `tenant` on `base`.
fn issuer(base: &str, tenant: &str) -> String {
    let directory = if MULTI_TENANT_SEGMENTS.contains(&tenant.to_ascii_lowercase().as_str()) {
        "{tenantid}"
    } else {
        tenant
    };
    format!("{base}/{directory}/v2.0")
}

/// The metadata document, with the fields the identity platform publishes.
pub(crate) fn configuration_json(base: &str, tenant: &str) -> Value {
    let oauth = format!("{base}/{tenant}/oauth2/v2.0");
    json!({
        "issuer": issuer(base, tenant),
        "authorization_endpoint": format!("{oauth}/authorize"),
        "token_endpoint": format!("{oauth}/token"),
        "device_authorization_endpoint": format!("{oauth}/devicecode"),
        "end_session_endpoint": format!("{oauth}/logout"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": [
            "code", "id_token", "code id_token", "id_token token"
        ],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat",
            "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
            "ver", "at_hash", "c_hash", "email"
        ],
        "request_uri_parameter_supported": false,
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

/// The JSON Web Key Set with the one RSA signing key.
fn keys_json(issuer: &str) -> Value {
    json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "kid": KEY_ID,
            "n": KEY_MODULUS,
            "e": KEY_EXPONENT,
            "issuer": issuer,
        }]
    })
}
