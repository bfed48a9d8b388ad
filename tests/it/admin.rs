//! The admin API's edges: authentication, tenant isolation, bad input. Every
//! scenario runs on both backends.

use crate::support::{Backend, GOOGLE_CLIENT_SECRET, Harness, on_both_backends, on_test_db};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    another_tenants_provider_is_not_found_and_bad_input_changes_nothing,
    graph_handshake_echoes_the_decoded_token_as_plain_text,
    credentials_are_checked_against_the_providers_kind,
    nul_in_any_text_field_is_refused_naming_the_field_and_nothing_is_written,
    extractor_and_routing_errors_have_the_one_json_error_shape,
    the_bearer_scheme_is_case_insensitive_and_the_token_is_not,
);

/// A 422 whose message names `field`.
fn assert_unprocessable(status: StatusCode, body: &serde_json::Value, field: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(field), "{body}");
}

async fn another_tenants_provider_is_not_found_and_bad_input_changes_nothing(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
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
        .bearer_auth(h.admin_token())
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

async fn graph_handshake_echoes_the_decoded_token_as_plain_text(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
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
async fn credentials_are_checked_against_the_providers_kind(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
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
    let authority: String = on_test_db!(h, pool => sqlx::query_scalar(
        "SELECT c.authority_tenant FROM oauth_credentials c JOIN providers p ON p.credentials_id = c.id WHERE p.id = $1",
    )
    .bind(crate::support::uuid(&id))
    .fetch_one(pool)
    .await
    .unwrap());
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
    let version = || async {
        on_test_db!(h, pool => sqlx::query_as::<_, (i64, uuid::Uuid)>(
            "SELECT credentials_version, credentials_id FROM providers WHERE id = $1",
        )
        .bind(crate::support::uuid(&id))
        .fetch_one(pool)
        .await
        .unwrap())
    };
    let before = version().await;
    let (status, body) = h
        .admin(
            Method::PUT,
            &format!("/tenants/acme/providers/{id}/credentials"),
            Some(json!({"flow": "client_credentials", "authority_tenant": "a", "client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert_unprocessable(status, &body, "refresh_token");
    assert_eq!(version().await, before);
    // Another tenant's provider is not found, whatever the body.
    let (status, _) = h
        .admin(
            Method::PUT,
            &format!("/tenants/contoso/providers/{id}/credentials"),
            Some(json!({"flow": "refresh_token", "client_id": "c", "refresh_token": "r"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(version().await, before);
    h.stop().await;
}

/// A NUL character cannot be stored in a Postgres text column (and is refused the
/// same way on the embedded store): in any string field
/// it is the caller's mistake (422 naming the field, nothing written), never a
/// database outage. Names are limited in characters, not bytes.
async fn nul_in_any_text_field_is_refused_naming_the_field_and_nothing_is_written(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    // The webhook endpoints look ids and mailboxes up in the store: a NUL there
    // names nothing of ours (dropped, or a malformed push), not an outage that
    // makes the provider retry for hours.
    let item = json!({"value": [{"subscriptionId": "sub\u{0}id", "clientState": "x", "changeType": "created"}]});
    let resp = h
        .http
        .post(format!("{}/webhooks/microsoft", h.base_url))
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    use base64::Engine as _;
    let data = json!({"emailAddress": "erin\u{0}@example.com", "historyId": "1"}).to_string();
    let push = json!({"message": {
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "messageId": "m1",
    }});
    let resp = h
        .http
        .post(format!(
            "{}/webhooks/gmail?token={}",
            h.base_url,
            crate::support::GMAIL_PUSH_SECRET
        ))
        .json(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let graph = || {
        json!({
            "kind": "graph_mail", "display_name": "frank inbox", "resource": "users/frank/messages",
            "credentials": {
                "flow": "client_credentials", "authority_tenant": "acme-aad",
                "client_id": "c", "client_secret": "s", "scope": "https://graph.microsoft.com/.default"
            }
        })
    };
    let delegated = || {
        json!({
            "kind": "graph_mail", "display_name": "frank inbox", "resource": "users/frank/messages",
            "credentials": {
                "flow": "refresh_token", "authority_tenant": "acme-aad",
                "client_id": "c", "refresh_token": "r"
            }
        })
    };
    for (mut body, pointer, field) in [
        (graph(), "/display_name", "display_name"),
        (graph(), "/resource", "resource"),
        (graph(), "/credentials/flow", "flow"),
        (graph(), "/credentials/authority_tenant", "authority_tenant"),
        (graph(), "/credentials/client_id", "client_id"),
        (graph(), "/credentials/client_secret", "client_secret"),
        (graph(), "/credentials/scope", "scope"),
        (delegated(), "/credentials/refresh_token", "refresh_token"),
    ] {
        let value = body.pointer_mut(pointer).unwrap();
        *value = json!(format!("{}\u{0}x", value.as_str().unwrap()));
        let (status, answer) = h
            .admin(Method::POST, "/tenants/acme/providers", Some(body))
            .await;
        assert_unprocessable(status, &answer, field);
    }
    for table in ["providers", "oauth_credentials", "audit_log"] {
        assert_eq!(h.rows(table).await, 0, "{table} was written");
    }

    // 101 × "é" is 101 characters (202 bytes): a fine name, on create and on patch.
    let mut body = graph();
    body["display_name"] = json!("é".repeat(101));
    let (status, created) = h
        .admin(Method::POST, "/tenants/acme/providers", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["display_name"], "é".repeat(101).as_str());
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/tenants/acme/providers/{id}");
    let (status, patched) = h
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"display_name": "ü".repeat(200)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (status, answer) = h
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"display_name": "ü".repeat(201)})),
        )
        .await;
    assert_unprocessable(status, &answer, "display_name");

    // A NUL in a patch or a credentials replacement changes nothing either.
    let audited = h.rows("audit_log").await;
    let (status, answer) = h
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"display_name": "new\u{0}name"})),
        )
        .await;
    assert_unprocessable(status, &answer, "display_name");
    assert_eq!(
        h.provider("acme", &id).await["display_name"],
        "ü".repeat(200).as_str()
    );
    let (status, answer) = h
        .admin(
            Method::PUT,
            &format!("{path}/credentials"),
            Some(json!({"flow": "client_credentials", "authority_tenant": "acme-aad", "client_id": "c", "client_secret": "s\u{0}"})),
        )
        .await;
    assert_unprocessable(status, &answer, "client_secret");
    assert_eq!(h.rows("oauth_credentials").await, 1);
    assert_eq!(h.rows("audit_log").await, audited);
    h.stop().await;
}

/// Asserts `resp` is `status` with the API's one error shape,
/// `{"error": {"code", "message"}}`, and that its body gives nothing away.
async fn assert_error_shape(resp: reqwest::Response, status: StatusCode, what: &str) {
    assert_eq!(resp.status(), status, "{what}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}, body {text:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {text}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {text}");
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty())
            && error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {text}"
    );
    for leak in [
        "sqlx",
        "serde",
        "actix",
        "deserialize",
        "Error(",
        crate::support::ADMIN_TOKEN,
        crate::support::GMAIL_PUSH_SECRET,
    ] {
        assert!(
            !text.to_lowercase().contains(&leak.to_lowercase()),
            "{what} leaks {leak:?}: {text}"
        );
    }
}

/// Every error of the admin API and the webhook endpoints — also the ones actix's
/// extractors and router produce — has the one JSON shape.
async fn extractor_and_routing_errors_have_the_one_json_error_shape(backend: Backend) {
    let h = Harness::start(backend, |c| c.webhook_max_body_bytes = 4096).await;
    let id = h.create_provider("acme", "acme-aad", "frank").await;
    let url = |path: &str| format!("{}{path}", h.base_url);
    let admin = |method: Method, path: &str| {
        h.http
            .request(method, url(&format!("/api/v1{path}")))
            .bearer_auth(h.admin_token())
    };
    let big = "x".repeat(5000);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            admin(
                Method::GET,
                &format!("/tenants/acme/providers/{id}/attempts?limit=abc"),
            ),
            StatusCode::BAD_REQUEST,
            "attempts?limit=abc",
        ),
        (
            admin(Method::POST, "/tenants/acme/providers")
                .header("content-type", "application/json")
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized admin body",
        ),
        (
            admin(Method::POST, "/tenants/acme/providers")
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "malformed admin body",
        ),
        (
            admin(Method::GET, "/tenants/acme/nothing-here"),
            StatusCode::NOT_FOUND,
            "unknown admin route",
        ),
        (
            h.http.get(url("/api/v1/tenants/acme/providers")),
            StatusCode::UNAUTHORIZED,
            "no token",
        ),
        (
            h.http
                .post(url("/webhooks/microsoft"))
                .header("content-type", "application/json")
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized Graph notification",
        ),
        (
            h.http
                .post(url("/webhooks/microsoft/lifecycle"))
                .header("content-type", "application/json")
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized lifecycle notification",
        ),
        (
            h.http
                .post(url(&format!(
                    "/webhooks/gmail?token={}",
                    crate::support::GMAIL_PUSH_SECRET
                )))
                .header("content-type", "application/json")
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized Gmail push",
        ),
        (
            h.http
                .post(url("/webhooks/microsoft"))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "malformed Graph notification",
        ),
        (
            h.http.post(url(&format!(
                "/webhooks/microsoft?validationToken={}",
                "a".repeat(2000)
            ))),
            StatusCode::BAD_REQUEST,
            "overlong validationToken",
        ),
        (
            h.http.post(url("/webhooks/google")),
            StatusCode::BAD_REQUEST,
            "Calendar message without headers",
        ),
        (
            h.http.post(url("/webhooks/gmail")),
            StatusCode::UNAUTHORIZED,
            "Gmail push without token",
        ),
        (
            h.http.get(url("/webhooks/microsoft")),
            StatusCode::NOT_FOUND,
            "GET on a webhook endpoint",
        ),
        (
            h.http.get(url("/no/such/path")),
            StatusCode::NOT_FOUND,
            "unknown path",
        ),
    ];
    for (request, status, what) in cases {
        assert_error_shape(request.send().await.unwrap(), status, what).await;
    }
    h.stop().await;
}

/// RFC 7235: the auth scheme is case-insensitive; the token is not.
async fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let list = |authorization: String| {
        h.http
            .get(format!("{}/api/v1/tenants/acme/providers", h.base_url))
            .header("authorization", authorization)
            .send()
    };
    let token = crate::support::ADMIN_TOKEN;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = list(format!("{scheme} {token}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "scheme {scheme}");
    }
    for (authorization, what) in [
        (
            format!("bearer {}", token.to_uppercase()),
            "token in another case",
        ),
        ("bearer wrong-token-wrong-token".to_owned(), "wrong token"),
        (format!("Basic {token}"), "another scheme"),
        (format!("bearer{token}"), "no space after the scheme"),
    ] {
        let resp = list(authorization).await.unwrap();
        assert_error_shape(resp, StatusCode::UNAUTHORIZED, what).await;
    }
    h.stop().await;
}
