//! The token endpoint and bearer tokens on Graph calls.

use super::support::{CLIENT_ID, Harness, OTHER_TENANT, TENANT};
use crate::{Fault, FaultOperation, FaultRule, Operation};
use chrono::TimeDelta;
use reqwest::Method;

#[actix_web::test]
async fn client_credentials_and_refresh_token_grants_answer_the_identity_platforms_shape() {
    let h = Harness::start().await;
    let app = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", "s3cret"),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    assert_eq!(app.status, 200);
    assert_eq!(app.body["token_type"], "Bearer");
    assert_eq!(app.body["expires_in"], 3599);
    assert_eq!(app.body["ext_expires_in"], 3599);
    assert!(app.body["access_token"].as_str().unwrap().len() > 32);
    assert!(app.body.get("refresh_token").is_none());

    let first = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", "0.Aold-refresh-token"),
                (
                    "scope",
                    "https://graph.microsoft.com/Mail.Read offline_access",
                ),
            ],
        )
        .await;
    assert_eq!(first.status, 200);
    let rotated = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, "0.Aold-refresh-token");
    let second = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", &rotated),
            ],
        )
        .await;
    assert_eq!(second.status, 200);
    assert_ne!(second.body["refresh_token"].as_str().unwrap(), rotated);

    // The token works on Graph, for its tenant.
    let token = first.body["access_token"].as_str().unwrap();
    let listed = h
        .call(Method::GET, "/subscriptions", Some(token), None)
        .await;
    assert_eq!(listed.status, 200);
    let journal = h.sim.requests();
    assert_eq!(journal.last().unwrap().tenant.as_deref(), Some(TENANT));

    // Secrets never reach the journal.
    let token_requests: Vec<_> = journal
        .iter()
        .filter(|r| r.operation == Operation::Token)
        .collect();
    assert_eq!(token_requests.len(), 3);
    assert_eq!(
        token_requests[0].body.as_ref().unwrap()["client_secret"],
        "<redacted>"
    );
    assert_eq!(
        token_requests[0].path,
        format!("/{TENANT}/oauth2/v2.0/token")
    );
    h.stop().await;
}

#[actix_web::test]
async fn malformed_token_requests_get_aad_errors() {
    let h = Harness::start().await;
    let missing = h.token_request(TENANT, &[("client_id", CLIENT_ID)]).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "invalid_request");
    assert_eq!(missing.body["error_codes"], serde_json::json!([900144]));
    assert!(
        missing.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with(
                "AADSTS900144: The request body must contain the following parameter: 'grant_type'."
            )
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(missing.body[field].is_string(), "{field}");
    }

    let no_refresh = h
        .token_request(
            TENANT,
            &[("grant_type", "refresh_token"), ("client_id", CLIENT_ID)],
        )
        .await;
    assert_eq!(no_refresh.status, 400);
    assert_eq!(no_refresh.body["error"], "invalid_request");

    let bad_scope = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", "s3cret"),
                ("scope", "Mail.Read"),
            ],
        )
        .await;
    assert_eq!(bad_scope.status, 400);
    assert_eq!(bad_scope.body["error"], "invalid_scope");

    let odd_grant = h
        .token_request(
            TENANT,
            &[("grant_type", "password"), ("client_id", CLIENT_ID)],
        )
        .await;
    assert_eq!(odd_grant.body["error"], "unsupported_grant_type");
    h.stop().await;
}

#[actix_web::test]
async fn graph_rejects_missing_unknown_and_expired_tokens() {
    let h = Harness::start().await;
    let none = h.call(Method::GET, "/subscriptions", None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.code(), "InvalidAuthenticationToken");
    assert_eq!(none.message(), "Access token is empty.");
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );

    let forged = h
        .call(
            Method::GET,
            "/subscriptions",
            Some("eyJ0eXAiOiJKV1Qi.forged"),
            None,
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.code(), "InvalidAuthenticationToken");

    let token = h.app_token(TENANT).await;
    assert_eq!(
        h.call(Method::GET, "/subscriptions", Some(&token), None)
            .await
            .status,
        200
    );
    h.sim.advance(TimeDelta::seconds(3599));
    let expired = h
        .call(Method::GET, "/subscriptions", Some(&token), None)
        .await;
    assert_eq!(expired.status, 401);
    assert_eq!(
        expired.message(),
        "Access token has expired or is not yet valid."
    );
    let inner = &expired.body["error"]["innerError"];
    assert!(inner["date"].is_string());
    assert_eq!(inner["request-id"].as_str(), expired.header("request-id"));

    // A fresh token works again.
    let fresh = h.app_token(TENANT).await;
    assert_eq!(
        h.call(Method::GET, "/subscriptions", Some(&fresh), None)
            .await
            .status,
        200
    );
    h.stop().await;
}

#[actix_web::test]
async fn invalid_grant_fault_hits_only_its_tenant_and_counts_down() {
    let h = Harness::start().await;
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Token, Fault::InvalidGrant)
            .for_tenant(TENANT)
            .times(2),
    );
    let refresh = [
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT_ID),
        ("refresh_token", "0.Arevoked"),
    ];
    for _ in 0..2 {
        let denied = h.token_request(TENANT, &refresh).await;
        assert_eq!(denied.status, 400);
        assert_eq!(denied.body["error"], "invalid_grant");
        assert_eq!(denied.body["error_codes"], serde_json::json!([70000]));
        assert!(
            denied.body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS70000: ")
        );
    }
    assert_eq!(h.token_request(OTHER_TENANT, &refresh).await.status, 200);
    assert_eq!(h.token_request(TENANT, &refresh).await.status, 200);
    let statuses: Vec<u16> = h.sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 200, 200]);
    h.stop().await;
}
