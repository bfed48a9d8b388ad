//! The lifecycle as a user sees it: subscriptions registered, a 404 recreated, three
//! strikes into error and back, invalid_grant parked, a failed handshake explained.
//! Every scenario runs on both backends.

use crate::support::{Backend, Harness, on_both_backends, wait_until};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;
use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule, Operation};

fn status(view: &Value) -> &str {
    view["health"]["subscription_status"].as_str().unwrap_or("")
}

on_both_backends!(
    three_providers_in_two_tenants_live_through_404_three_strikes_and_invalid_grant,
    creation_fails_cleanly_when_the_webhook_does_not_answer_the_handshake,
    deleting_a_provider_deletes_its_subscription_at_graph,
    the_fleet_reads_its_providers_state_in_pages_in_id_order,
);

async fn three_providers_in_two_tenants_live_through_404_three_strikes_and_invalid_grant(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;

    // p3's Azure AD tenant has revoked consent before anything starts.
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Token, Fault::InvalidGrant).for_tenant("contoso-aad"),
    );
    // p2's creates fail with 500 until the simulator heals.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("users/bob/"),
    );

    let p1 = h.create_provider("acme", "acme-aad", "alice").await;
    let p2 = h.create_provider("acme", "acme-aad", "bob").await;
    let p3 = h.create_provider("contoso", "contoso-aad", "carol").await;

    // p1 registers: the subscription the simulator holds is the one stored.
    let view = h
        .wait_provider("acme", &p1, "p1 registered", |v| status(v) == "healthy")
        .await;
    let first_id = view["subscription"]["id"].as_str().unwrap().to_owned();
    assert!(
        h.sim
            .subscriptions()
            .iter()
            .any(|s| s.id == first_id && s.resource == "users/alice/messages")
    );

    // p3 goes straight to needs_reauth with a remediation, and is left alone.
    let view = h
        .wait_provider("contoso", &p3, "p3 needs_reauth", |v| {
            v["status"] == "needs_reauth"
        })
        .await;
    assert!(
        view["error_message"]
            .as_str()
            .unwrap()
            .contains("re-authorize"),
        "{view:#}"
    );
    let p3_calls = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.tenant.as_deref() == Some("contoso-aad"))
            .count()
    };
    let p3_calls_when_parked = p3_calls();

    // p2: three strikes → error, with an actionable reason; exactly one transition.
    let view = h
        .wait_provider("acme", &p2, "p2 in error", |v| v["status"] == "error")
        .await;
    assert_eq!(view["health"]["consecutive_failure_count"], 3, "{view:#}");
    let reason = view["health"]["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("transient") && reason.contains("500"),
        "{reason}"
    );
    // The simulator heals; the next cool-off retry succeeds and resets everything.
    h.sim.clear_faults();
    let view = h
        .wait_provider("acme", &p2, "p2 recovered", |v| status(v) == "healthy")
        .await;
    assert_eq!(view["status"], "connected");
    assert_eq!(view["health"]["consecutive_failure_count"], 0);
    assert!(view["health"]["failure_reason"].is_null());
    let statuses = h.statuses_after(&p2).await;
    let into_error = statuses
        .windows(2)
        .filter(|w| w[0] != "error" && w[1] == "error")
        .count()
        + usize::from(statuses.first().is_some_and(|s| s == "error"));
    assert_eq!(into_error, 1, "transitions: {statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("healthy"));

    // p1: Graph lost the subscription; a forced renewal gets 404 and recreates it in
    // the same turn; the new id is stored and the old one stays routable.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 404,
                code: "ResourceNotFound".into(),
                retry_after_seconds: None,
            },
        )
        .for_subscription(first_id.clone())
        .times(1),
    );
    let (code, result) = h.force_renewal("acme", &p1).await;
    assert_eq!(code, 200, "{result:#}");
    assert_eq!(result["action"], "recreated", "{result:#}");
    assert_eq!(result["success"], true);
    let new_id = result["subscription_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, first_id);
    let view = h.provider("acme", &p1).await;
    assert_eq!(view["subscription"]["id"], new_id.as_str());
    assert_eq!(status(&view), "healthy");
    assert_eq!(view["health"]["last_renewal_result"], "recreated");
    assert_eq!(h.subscription_state(&first_id).await, "gone");
    assert!(h.sim.subscriptions().iter().any(|s| s.id == new_id));

    // Through all of that, the parked provider was never called again.
    assert_eq!(
        p3_calls(),
        p3_calls_when_parked,
        "needs_reauth provider was called"
    );
    let view = h.provider("contoso", &p3).await;
    assert_eq!(view["status"], "needs_reauth");

    // Never two calls in flight for one provider: no two of p2's requests overlap
    // in the simulator's journal order (each create answered before the next).
    let p2_creates = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.operation == Operation::Create && r.resource.as_deref() == Some("users/bob/messages")
        })
        .count();
    let attempts = h.attempt_count(&p2).await;
    assert_eq!(
        p2_creates as i64, attempts,
        "every attempt is one provider call, recorded once"
    );

    h.stop().await;
}

async fn creation_fails_cleanly_when_the_webhook_does_not_answer_the_handshake(backend: Backend) {
    // The public URL points at a port where nothing answers the validation request.
    let h = Harness::start(backend, |c| c.public_url = "http://127.0.0.1:9".into()).await;
    let id = h.create_provider("acme", "acme-aad", "dave").await;
    let view = h
        .wait_provider("acme", &id, "a failed attempt", |v| {
            v["health"]["consecutive_failure_count"].as_u64() >= Some(1)
        })
        .await;
    let reason = view["health"]["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("permanent (HTTP 400)"), "{reason}");
    assert!(reason.contains("SUBKEEPER_PUBLIC_URL"), "{reason}");
    assert!(view["subscription"].is_null());
    assert!(
        h.sim.subscriptions().is_empty(),
        "nothing may be created without a handshake"
    );
    h.stop().await;
}

async fn deleting_a_provider_deletes_its_subscription_at_graph(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let id = h.create_provider("acme", "acme-aad", "erin").await;
    let view = h
        .wait_provider("acme", &id, "registered", |v| status(v) == "healthy")
        .await;
    let sub = view["subscription"]["id"].as_str().unwrap().to_owned();
    let (code, _) = h
        .admin(
            Method::DELETE,
            &format!("/tenants/acme/providers/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    wait_until(
        "subscription deleted at Graph",
        Duration::from_secs(10),
        || async { !h.sim.subscriptions().iter().any(|s| s.id == sub) },
    )
    .await;
    // The store records the delete after Graph has answered it: wait for that
    // write too, rather than read the row the moment Graph shows the delete.
    wait_until(
        "subscription recorded as deleted",
        Duration::from_secs(10),
        || async { h.subscription_state(&sub).await == "deleted" },
    )
    .await;
    let (code, _) = h
        .admin(Method::GET, &format!("/tenants/acme/providers/{id}"), None)
        .await;
    assert_eq!(code, 404);
    h.stop().await;
}

/// The paged load the fleet starts from: pages in id order, each provider with
/// its live subscription and health row, a short last page, and an empty page
/// after it — the same on both databases (ids compare as they are stored).
async fn the_fleet_reads_its_providers_state_in_pages_in_id_order(backend: Backend) {
    use subkeeper_actors::ports::LifecycleStore;
    let h = Harness::start(backend, |_| {}).await;
    let mut ids = Vec::new();
    for mailbox in ["ann", "ben", "cat"] {
        let id = h.create_provider("acme", "acme-aad", mailbox).await;
        h.wait_provider("acme", &id, "registered", |v| status(v) == "healthy")
            .await;
        ids.push(crate::support::uuid(&id));
    }
    ids.sort();
    let store = h.store();
    let first = store.load_owned(None, 2).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|l| l.owned.provider.id.0)
            .collect::<Vec<_>>(),
        ids[..2]
    );
    let rest = store
        .load_owned(Some(first[1].owned.provider.id), 2)
        .await
        .unwrap();
    assert_eq!(
        rest.iter()
            .map(|l| l.owned.provider.id.0)
            .collect::<Vec<_>>(),
        ids[2..]
    );
    assert!(
        store
            .load_owned(Some(rest[0].owned.provider.id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    for loaded in first.iter().chain(&rest) {
        let id = loaded.owned.provider.id;
        let state = &loaded.state;
        assert!(state.had_subscription);
        let sub = state.subscription.as_ref().expect("a live subscription");
        assert_eq!(sub.provider_id, id);
        let health = state.health.as_ref().expect("a health row");
        assert_eq!(health.provider_id, id);
        assert_eq!(health.subscription_expires_at, Some(sub.expires_at));
        assert_eq!(*state, store.provider_state(id).await.unwrap());
    }
    h.stop().await;
}
