//! Injected faults as a client sees them.

use super::support::{CALENDAR, Harness, INBOX, TENANT};
use crate::{Fault, FaultOperation, FaultRule, Operation};
use chrono::TimeDelta;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[actix_web::test]
async fn throttling_carries_retry_after_and_counts_down() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 429,
                code: "TooManyRequests".into(),
                retry_after_seconds: Some(7),
            },
        )
        .times(2),
    );
    let renew = json!({"expirationDateTime": (h.sim.now() + TimeDelta::minutes(90)).to_rfc3339()});

    // Other operations are not throttled.
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        200
    );
    for _ in 0..2 {
        let throttled = h
            .call(Method::PATCH, &path, Some(&token), Some(&renew))
            .await;
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.code(), "TooManyRequests");
        assert_eq!(throttled.header("retry-after"), Some("7"));
    }
    let renewed = h
        .call(Method::PATCH, &path, Some(&token), Some(&renew))
        .await;
    assert_eq!(renewed.status, 200);
    assert!(renewed.header("retry-after").is_none());
    assert!(h.sim.faults().is_empty());

    let renew_statuses: Vec<u16> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::Renew)
        .map(|r| r.status)
        .collect();
    assert_eq!(renew_statuses, [429, 429, 200]);
    h.stop().await;
}

#[actix_web::test]
async fn outage_filtered_by_resource_until_cleared() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 503,
                code: "ServiceUnavailable".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("/events"),
    );
    for _ in 0..3 {
        let down = h
            .call(
                Method::POST,
                "/subscriptions",
                Some(&token),
                Some(&h.subscription_body(CALENDAR, 60)),
            )
            .await;
        assert_eq!(down.status, 503);
        assert_eq!(down.code(), "ServiceUnavailable");
        assert!(down.header("retry-after").is_none());
    }
    // The outage happens before the handshake: the subscriber heard nothing.
    assert!(h.receiver.validations().is_empty());
    h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;

    h.sim.clear_faults();
    h.create_ok(&token, &h.subscription_body(CALENDAR, 60))
        .await;
    assert_eq!(h.sim.subscriptions().len(), 2);
    h.stop().await;
}

#[actix_web::test]
async fn a_hung_request_outlasts_the_clients_timeout_and_is_journaled_as_504() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Get, Fault::Timeout { seconds: 2 })
            .for_subscription(&id)
            .times(1),
    );
    let gave_up = h
        .http
        .get(h.graph(&format!("/subscriptions/{id}")))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(gave_up.is_timeout());
    let last = h.sim.requests().pop().unwrap();
    assert_eq!(last.operation, Operation::Get);
    assert_eq!(last.status, 504);
    assert_eq!(last.subscription_id.as_deref(), Some(id.as_str()));

    // A client that waits gets Graph's 504.
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Delete, Fault::Timeout { seconds: 0 }).times(1),
    );
    let timed_out = h
        .call(
            Method::DELETE,
            &format!("/subscriptions/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(timed_out.status, 504);
    assert_eq!(timed_out.code(), "GatewayTimeout");
    // ...and the subscription was not deleted.
    assert_eq!(h.sim.subscriptions().len(), 1);
    h.stop().await;
}

#[actix_web::test]
async fn expired_token_fault_answers_401_once() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    h.sim
        .inject_fault(FaultRule::new(FaultOperation::Any, Fault::ExpiredToken).times(1));
    // ExpiredToken never applies to the token endpoint itself.
    let fresh = h.app_token(TENANT).await;
    let rejected = h
        .call(Method::GET, "/subscriptions", Some(&token), None)
        .await;
    assert_eq!(rejected.status, 401);
    assert_eq!(rejected.code(), "InvalidAuthenticationToken");
    assert_eq!(
        rejected.message(),
        "Access token has expired or is not yet valid."
    );
    assert!(rejected.header("www-authenticate").is_some());
    let retried = h
        .call(Method::GET, "/subscriptions", Some(&fresh), None)
        .await;
    assert_eq!(retried.status, 200);
    h.stop().await;
}

#[actix_web::test]
async fn token_endpoint_outage_uses_aad_shape() {
    let h = Harness::start().await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Token,
            Fault::Status {
                status: 503,
                code: "temporarily_unavailable".into(),
                retry_after_seconds: Some(30),
            },
        )
        .times(1),
    );
    let down = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("client_secret", "s"),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body["error"], "temporarily_unavailable");
    assert!(
        down.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS")
    );
    assert_eq!(down.header("retry-after"), Some("30"));
    h.app_token(TENANT).await;
    h.stop().await;
}
