//! Group commit of renewal attempts: many supervisors' attempts written together
//! still each answer for themselves. Every attempt that returns `Ok` is in the
//! store, one under a superseded fence is refused and leaves nothing, and (on
//! Postgres, which refuses a NUL byte in text) one the database refuses fails
//! alone while the rest of its batch is written.

use crate::support::{Backend, Harness, on_both_backends, on_test_db, uuid};
use chrono::{SubsecRound as _, TimeDelta, Utc};
use futures_util::future::join_all;
use subkeeper_actors::domain::{
    AttemptKind, HealthState, ProviderId, RenewalAction, RenewalResult, TenantId,
};
use subkeeper_actors::ports::{AttemptRecord, Fence, LifecycleStore as _, StoreError};

on_both_backends!(concurrent_attempts_are_each_recorded_or_refused_on_their_own);

/// Attempts per provider, all in flight at once.
const PER_PROVIDER: usize = 40;

async fn concurrent_attempts_are_each_recorded_or_refused_on_their_own(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let mut providers = Vec::new();
    for mailbox in ["alice", "bob", "carol"] {
        let id = h.create_provider("acme", "acme-aad", mailbox).await;
        h.wait_provider("acme", &id, "registered", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
        providers.push(id);
    }
    let store = h.store().clone();

    // Renewals of each provider's live subscription, marked so they can be
    // told from the service's own attempts.
    let marker = "group-commit-test";
    let start = (Utc::now() + TimeDelta::days(1)).trunc_subsecs(0);
    let mut records = Vec::new();
    for id in &providers {
        let provider = ProviderId(uuid(id));
        let fence: i64 = on_test_db!(h, pool => sqlx::query_scalar(
            "SELECT lease_token FROM providers WHERE id = $1",
        )
        .bind(provider.0)
        .fetch_one(pool)
        .await
        .unwrap());
        let state = store.provider_state(provider).await.unwrap();
        let live = state.subscription.expect("registered above");
        let health = state.health.expect("registered above");
        for n in 0..PER_PROVIDER {
            let at = start + TimeDelta::seconds(n as i64);
            let mut subscription = live.clone();
            subscription.renewed_at = Some(at);
            subscription.expires_at = at + TimeDelta::days(6);
            let result = RenewalResult {
                provider_id: provider,
                tenant: TenantId::parse("acme").unwrap(),
                kind: live_kind(&h, id).await,
                success: true,
                attempt: AttemptKind::Renew,
                action: RenewalAction::Renewed,
                new_expiration: Some(subscription.expires_at),
                subscription_id: Some(subscription.external_id.clone()),
                history_id: None,
                error_class: None,
                error_message: Some(format!("{marker} {n}")),
                http_status: Some(200),
                consecutive_failures: 0,
                status: HealthState::Healthy,
                previous_status: HealthState::Healthy,
                attempted_at: at,
                scheduled_at: Some(at),
                duration_ms: 1,
            };
            let mut health = health.clone();
            health.last_renewal_attempt_at = Some(at);
            health.subscription_expires_at = Some(subscription.expires_at);
            records.push((
                Fence(fence),
                AttemptRecord {
                    result,
                    subscription: Some(subscription),
                    replaced: None,
                    health,
                },
            ));
        }
    }
    let good = records.len();
    // One under a claim that is not the provider's current one.
    let (fence, mut stale) = records[0].clone();
    stale.result.error_message = Some(format!("{marker} stale"));
    records.push((Fence(fence.0 + 1_000), stale));
    // On Postgres, one the database refuses (text cannot hold NUL).
    if backend == Backend::PostgresNats {
        let (fence, mut refused) = records[1].clone();
        refused.result.error_message = Some(format!("{marker} refused\0"));
        records.push((fence, refused));
    }

    let outcomes = join_all(
        records
            .iter()
            .map(|(fence, record)| store.record_attempt(*fence, record)),
    )
    .await;

    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            i if i < good => assert_eq!(outcome, &Ok(()), "attempt {i}"),
            i if i == good => assert!(
                matches!(outcome, Err(StoreError::Conflict(_))),
                "the stale fence's attempt: {outcome:?}"
            ),
            _ => assert!(
                matches!(outcome, Err(StoreError::Rejected(_))),
                "the refused attempt: {outcome:?}"
            ),
        }
    }
    let like = format!("{marker}%");
    let recorded: i64 = on_test_db!(h, pool => sqlx::query_scalar(
        "SELECT count(*) FROM renewal_attempts WHERE error_message LIKE $1",
    )
    .bind(&like)
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!(
        recorded, good as i64,
        "every accepted attempt is recorded, the refused ones are not"
    );
    // Each provider's subscription and health carry its last attempt.
    let last = start + TimeDelta::seconds(PER_PROVIDER as i64 - 1);
    for id in &providers {
        let state = store.provider_state(ProviderId(uuid(id))).await.unwrap();
        assert_eq!(
            state
                .subscription
                .unwrap()
                .renewed_at
                .map(|t| t.timestamp()),
            Some(last.timestamp())
        );
        assert_eq!(
            state
                .health
                .unwrap()
                .last_renewal_attempt_at
                .map(|t| t.timestamp()),
            Some(last.timestamp())
        );
    }

    // One attempt per provider: the batch is written as sets (one statement
    // per kind of row on Postgres). A stale fence among them is refused and
    // the others are written; on Postgres a refused value fails only its own
    // attempt (the set write fails whole and each is written again alone).
    let template: Vec<(Fence, AttemptRecord)> = (0..providers.len())
        .map(|p| records[p * PER_PROVIDER + PER_PROVIDER - 1].clone())
        .collect();
    let round = |n: i64, tweak: &dyn Fn(usize, &mut Fence, &mut AttemptRecord)| {
        template
            .iter()
            .enumerate()
            .map(|(p, (fence, record))| {
                let (mut fence, mut record) = (*fence, record.clone());
                let at = last + TimeDelta::hours(n);
                record.result.attempted_at = at;
                record.result.error_message = Some(format!("{marker} round {n}"));
                record.health.last_renewal_attempt_at = Some(at);
                if let Some(s) = record.subscription.as_mut() {
                    s.renewed_at = Some(at);
                }
                tweak(p, &mut fence, &mut record);
                (fence, record)
            })
            .collect::<Vec<_>>()
    };
    let mut rounds = vec![
        (round(1, &|_, _, _| {}), vec!["ok", "ok", "ok"]),
        (
            round(2, &|p, fence, _| {
                if p == 0 {
                    fence.0 += 1_000;
                }
            }),
            vec!["conflict", "ok", "ok"],
        ),
    ];
    if backend == Backend::PostgresNats {
        rounds.push((
            round(3, &|p, _, record| {
                if p == 1 {
                    record.result.error_message = Some(format!("{marker} round 3\0"));
                }
            }),
            vec!["ok", "rejected", "ok"],
        ));
    }
    for (n, (batch, expected)) in rounds.into_iter().enumerate() {
        let outcomes = join_all(batch.iter().map(|(f, r)| store.record_attempt(*f, r))).await;
        for (p, (outcome, expected)) in outcomes.iter().zip(expected).enumerate() {
            let seen = match outcome {
                Ok(()) => "ok",
                Err(StoreError::Conflict(_)) => "conflict",
                Err(StoreError::Rejected(_)) => "rejected",
                Err(_) => "other",
            };
            assert_eq!(seen, expected, "round {}, provider {p}: {outcome:?}", n + 1);
            let state = store
                .provider_state(batch[p].1.result.provider_id)
                .await
                .unwrap();
            let written = state.health.unwrap().last_renewal_attempt_at
                == Some(batch[p].1.result.attempted_at);
            assert_eq!(
                written,
                expected == "ok",
                "round {}, provider {p}: health written",
                n + 1
            );
        }
    }
    h.stop().await;
}

/// The provider's kind as the API shows it.
async fn live_kind(h: &Harness, id: &str) -> subkeeper_actors::domain::ProviderKind {
    let view = h.provider("acme", id).await;
    view["kind"].as_str().unwrap().parse().unwrap()
}
