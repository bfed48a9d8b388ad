//! The `/_sim/` control API, driven over HTTP as the demo and scripts drive it.

use super::support::{Harness, INBOX, TENANT, reply};
use crate::{DeliveryReport, FaultRule, RecordedRequest, SimSubscription};
use reqwest::Method;
use serde_json::{Value, json};

impl Harness {
    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> super::support::Reply {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.server.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.unwrap()).await
    }
}

#[actix_web::test]
async fn control_api_mirrors_the_rust_api() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let id = created["id"].as_str().unwrap().to_owned();

    // Subscriptions.
    let subs = h.control(Method::GET, "/subscriptions", None).await;
    let subs: Vec<SimSubscription> = serde_json::from_value(subs.body).unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].id, id);

    // Notify and lifecycle.
    let notified = h
        .control(
            Method::POST,
            "/notify",
            Some(json!({"subscription_id": id, "change_type": "updated", "times": 2})),
        )
        .await;
    assert_eq!(notified.status, 200);
    let report: DeliveryReport = serde_json::from_value(notified.body).unwrap();
    assert_eq!(report.attempts.len(), 2);
    assert!(report.all_accepted());
    assert_eq!(report.body["value"][0]["changeType"], "updated");
    h.assert_notification(&report.body);

    let missing = h
        .control(
            Method::POST,
            "/notify",
            Some(json!({"subscription_id": "nope"})),
        )
        .await;
    assert_eq!(missing.status, 404);
    let malformed = h.control(Method::POST, "/notify", Some(json!({}))).await;
    assert_eq!(malformed.status, 400);

    let lifecycle = h
        .control(
            Method::POST,
            "/lifecycle",
            Some(json!({"subscription_id": id, "event": "reauthorizationRequired"})),
        )
        .await;
    assert_eq!(lifecycle.status, 200);
    let pending = h
        .control(
            Method::POST,
            "/notify",
            Some(json!({"subscription_id": id})),
        )
        .await;
    assert_eq!(pending.status, 409);

    // Faults.
    let rejected = h
        .control(
            Method::POST,
            "/faults",
            Some(json!({"fault": {"kind": "status", "status": 200, "code": "Ok"}})),
        )
        .await;
    assert_eq!(rejected.status, 400);
    let added = h
        .control(
            Method::POST,
            "/faults",
            Some(json!({
                "operation": "get",
                "fault": {"kind": "status", "status": 503, "code": "ServiceUnavailable", "retry_after_seconds": 4},
                "times": 1
            })),
        )
        .await;
    assert_eq!(added.status, 201);
    let faults = h.control(Method::GET, "/faults", None).await;
    let faults: Vec<FaultRule> = serde_json::from_value(faults.body).unwrap();
    assert_eq!(faults.len(), 1);
    let path = format!("/subscriptions/{id}");
    let failed = h.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.header("retry-after"), Some("4"));
    h.sim.inject_fault(FaultRule::new(
        crate::FaultOperation::Any,
        crate::Fault::ExpiredToken,
    ));
    assert_eq!(h.control(Method::DELETE, "/faults", None).await.status, 204);
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        200
    );

    // Requests.
    let requests = h.control(Method::GET, "/requests", None).await;
    let requests: Vec<RecordedRequest> = serde_json::from_value(requests.body).unwrap();
    assert!(requests.iter().any(|r| r.status == 503));
    assert_eq!(
        h.control(Method::DELETE, "/requests", None).await.status,
        204
    );
    assert!(h.sim.requests().is_empty());

    // Clock: jump past expiry.
    let before = h.control(Method::GET, "/clock", None).await;
    assert_eq!(before.body["offset_seconds"], 0);
    let after = h
        .control(
            Method::POST,
            "/clock/advance",
            Some(json!({"seconds": 3_700})),
        )
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body["offset_seconds"], 3_700);
    let subs = h.control(Method::GET, "/subscriptions", None).await;
    assert_eq!(subs.body, json!([]));
    h.stop().await;
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let sim = crate::Simulator::new(
        crate::SimulatorConfig::default(),
        std::sync::Arc::new(subkeeper_actors::ports::clock::SystemClock),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(sim.start(listener).is_err());
    assert_eq!(
        crate::Simulator::graph_base_url("http://127.0.0.1:8080/"),
        "http://127.0.0.1:8080/v1.0"
    );
}
