//! The admin API's edges: authentication, tenant isolation, bad input.

use crate::support::Harness;
use reqwest::{Method, StatusCode};
use serde_json::json;

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
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_secret")
    );
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
