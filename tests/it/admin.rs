//! The admin API's edges: authentication, tenant isolation, bad input.

use crate::support::{GOOGLE_CLIENT_SECRET, Harness};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

/// A 422 whose message names `field`.
fn assert_unprocessable(status: StatusCode, body: &serde_json::Value, field: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(field), "{body}");
}

#[actix_web::test]
async fn another_tenants_provider_is_not_found_and_bad_input_changes_nothing() {
    let h = Harness::start(|_| {}).await;
    let id = h.create_provider("acme", "acme-aad", "frank").await;

    for (method, path) in [
        (Method::GET, format!("/tenants/contoso/providers/{id}")),
        (Method::DELETE, format!("/tenants/contoso/providers/{id}")),
        (
            Method::POST,
            format!("/tenants/contoso/providers/{id}/renew"),
        ),
        (Method::GET, "/tenants/acme/providers/not-a-uuid".to_owned()),
    ] {
        let (status, body) = h.admin(method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    // Still there for its own tenant.
    let (status, _) = h
        .admin(Method::GET, &format!("/tenants/acme/providers/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // No token, wrong token.
    let resp = h
        .http
        .get(format!("{}/api/v1/tenants/acme/providers", h.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = h
        .http
        .get(format!("{}/api/v1/tenants/acme/providers", h.base_url))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Malformed JSON, unknown kind, missing secret, bad tenant id: clear errors.
    let resp = h
        .http
        .post(format!("{}/api/v1/tenants/acme/providers", h.base_url))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, body) = h
        .admin(Method::POST, "/tenants/acme/providers", Some(json!({"kind": "exchange", "display_name": "x", "resource": "users/x/messages", "credentials": {}})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = h
        .admin(Method::POST, "/tenants/acme/providers", Some(json!({
            "kind": "graph_mail", "display_name": "x", "resource": "users/x/messages",
            "credentials": {"flow": "client_credentials", "authority_tenant": "a", "client_id": "c"}
        })))
        .await;
    assert_unprocessable(status, &body, "client_secret");
    let (status, _) = h.admin(Method::GET, "/tenants/a.b/providers", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Only the one good provider exists.
    let (_, list) = h.admin(Method::GET, "/tenants/acme/providers", None).await;
    assert_eq!(list["providers"].as_array().unwrap().len(), 1);
    h.stop().await;
}

#[actix_web::test]
async fn graph_handshake_echoes_the_decoded_token_as_plain_text() {
    let h = Harness::start(|_| {}).await;
    for path in ["/webhooks/microsoft", "/webhooks/microsoft/lifecycle"] {
        let resp = h
            .http
            .post(format!(
                "{}{path}?validationToken=Validation%3A%20Testing%20client%20application",
                h.base_url
            ))
            .header("content-type", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(
            resp.text().await.unwrap(),
            "Validation: Testing client application"
        );
    }
    let long = "a".repeat(2000);
    let resp = h
        .http
        .post(format!(
            "{}/webhooks/microsoft?validationToken={long}",
            h.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    h.stop().await;
}

/// Credentials are checked against the provider's kind, on create and on
/// replacement: Microsoft needs its directory tenant, Google needs a user's
/// refresh token and no tenant at all. A refused replacement changes nothing.
#[actix_web::test]
async fn credentials_are_checked_against_the_providers_kind() {
    let h = Harness::start(|_| {}).await;
    h.sim.register_google_account("rt-kind", "kind@example.com");
    h.sim.register_app(subkeeper_simulator::RegisteredApp {
        provider: subkeeper_simulator::IdentityProvider::Google,
        client_id: "client-acme".into(),
        client_secret: GOOGLE_CLIENT_SECRET.into(),
    });
    let google = json!({
        "flow": "refresh_token", "client_id": "client-acme",
        "client_secret": "not-a-real-google-secret", "refresh_token": "rt-kind"
    });
    // Google without authority_tenant: accepted, stored as `google`, and it works.
    let (status, body) = h
        .admin(
            Method::POST,
            "/tenants/acme/providers",
            Some(json!({
                "kind": "google_calendar", "display_name": "kind", "resource": "kind@example.com",
                "credentials": google
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    h.wait_provider("acme", &id, "healthy", |v| {
        v["health"]["subscription_status"] == "healthy"
    })
    .await;
    let authority: String = sqlx::query(
        "SELECT c.authority_tenant FROM oauth_credentials c JOIN providers p ON p.credentials_id = c.id WHERE p.id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap()
    .get("authority_tenant");
    assert_eq!(authority, "google");

    // Microsoft without one: refused, naming the field.
    let (status, body) = h
        .admin(Method::POST, "/tenants/acme/providers", Some(json!({
            "kind": "graph_mail", "display_name": "x", "resource": "users/x/messages",
            "credentials": {"flow": "client_credentials", "client_id": "c", "client_secret": "s"}
        })))
        .await;
    assert_unprocessable(status, &body, "authority_tenant");

    // App-only credentials for the Google provider: refused, nothing changes.
    let version = |pool: sqlx::PgPool, id: String| async move {
        sqlx::query("SELECT credentials_version, credentials_id FROM providers WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .map(|r| {
                (
                    r.get::<i64, _>("credentials_version"),
                    r.get::<uuid::Uuid, _>("credentials_id"),
                )
            })
            .unwrap()
    };
    let before = version(h.pool.clone(), id.clone()).await;
    let (status, body) = h
        .admin(
            Method::PUT,
            &format!("/tenants/acme/providers/{id}/credentials"),
            Some(json!({"flow": "client_credentials", "authority_tenant": "a", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert_unprocessable(status, &body, "refresh_token");
    assert_eq!(version(h.pool.clone(), id.clone()).await, before);
    // Another tenant's provider is not found, whatever the body.
    let (status, _) = h
        .admin(
            Method::PUT,
            &format!("/tenants/contoso/providers/{id}/credentials"),
            Some(json!({"flow": "refresh_token", "client_id": "c", "refresh_token": "r"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(version(h.pool.clone(), id.clone()).await, before);
    h.stop().await;
}
