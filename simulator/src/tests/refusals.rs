//! What the real services refuse, the simulator refuses the same way — and
//! what they accept, it accepts: app-only tokens on `me/...`, plain-http
//! notification URLs, unknown apps, wrong secrets, client credentials on
//! `/common`; client authentication by HTTP Basic. All over real HTTP.

use super::support::{
    CLIENT_ID, CLIENT_SECRET, Harness, INBOX, Reply, TENANT, basic, reply, test_config,
};
use crate::{IdentityProvider, RegisteredApp, SimulatorConfig};
use reqwest::Method;
use serde_json::{Value, json};

/// A mailbox addressed through the signed-in user.
const MY_INBOX: &str = "me/mailFolders('Inbox')/messages";

/// A client-credentials form without client authentication in it.
const APP_GRANT: &[(&str, &str)] = &[
    ("grant_type", "client_credentials"),
    ("scope", "https://graph.microsoft.com/.default"),
];

/// POSTs `form` to `tenant`'s token endpoint with `authorization`.
async fn token_with_header(
    h: &Harness,
    tenant: &str,
    authorization: &str,
    form: &[(&str, &str)],
) -> Reply {
    let response = h
        .http
        .post(h.token_url(tenant))
        .header("authorization", authorization)
        .form(form)
        .send()
        .await
        .unwrap();
    reply(response).await
}

/// Client credentials for `client_id` / `secret` in the form body.
async fn app_grant(h: &Harness, tenant: &str, client_id: &str, secret: &str) -> Reply {
    let mut form = APP_GRANT.to_vec();
    form.extend([("client_id", client_id), ("client_secret", secret)]);
    h.token_request(tenant, &form).await
}

/// Asserts an identity-platform error: status, `error`, the one AADSTS code
/// in `error_codes` and at the head of `error_description`.
fn assert_aad_error(reply: &Reply, status: u16, error: &str, code: u32) -> String {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"], error, "{:?}", reply.body);
    assert_eq!(reply.body["error_codes"], json!([code]));
    let description = reply.body["error_description"].as_str().unwrap().to_owned();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(reply.body[field].is_string(), "{field}");
    }
    description
}

#[actix_web::test]
async fn unknown_apps_wrong_secrets_and_common_get_the_identity_platforms_errors() {
    let h = Harness::start().await;

    let unknown = app_grant(
        &h,
        TENANT,
        "99999999-0000-0000-0000-000000000000",
        CLIENT_SECRET,
    )
    .await;
    let description = assert_aad_error(&unknown, 400, "unauthorized_client", 700_016);
    assert!(
        description.contains(&format!(
            "Application with identifier '99999999-0000-0000-0000-000000000000' was not found in the directory '{TENANT}'"
        )),
        "{description}"
    );

    let wrong = app_grant(&h, TENANT, CLIENT_ID, "not-the-secret").await;
    let description = assert_aad_error(&wrong, 401, "invalid_client", 7_000_215);
    assert!(
        description.contains(&format!("for a secret added to app '{CLIENT_ID}'")),
        "{description}"
    );

    // A confidential client that sends no credential at all.
    let no_secret = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    let description = assert_aad_error(&no_secret, 401, "invalid_client", 7_000_218);
    assert!(
        description.contains("'client_assertion' or 'client_secret'"),
        "{description}"
    );

    for tenant in ["common", "consumers", "Common"] {
        let no_directory = app_grant(&h, tenant, CLIENT_ID, CLIENT_SECRET).await;
        assert_aad_error(&no_directory, 400, "invalid_request", 9_001_023);
    }

    // A delegated refresh on /common is fine (it has a user), and it names
    // no secret: a public client.
    let delegated = h
        .token_request(
            "common",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", "0.Arefresh"),
            ],
        )
        .await;
    assert_eq!(delegated.status, 200, "{:?}", delegated.body);
    // But not for an app nobody registered, nor with a wrong secret.
    let stranger = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "stranger"),
                ("refresh_token", "0.Arefresh"),
            ],
        )
        .await;
    assert_aad_error(&stranger, 400, "unauthorized_client", 700_016);

    // Every refusal is journaled with the status it was answered with.
    let journal = h.sim.requests();
    let statuses: Vec<u16> = journal.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400, 401, 401, 400, 400, 400, 200, 400]);
    h.stop().await;
}

#[actix_web::test]
async fn basic_client_authentication_is_accepted_and_must_agree_with_the_body() {
    let h = Harness::start().await;
    // A secret with every character RFC 6749 makes the client encode.
    let secret = "p@ss:w+rd/ with%=&";
    h.sim.register_app(RegisteredApp {
        provider: IdentityProvider::Microsoft,
        client_id: "basic-app".to_owned(),
        client_secret: secret.to_owned(),
    });

    let granted = token_with_header(&h, TENANT, &basic("basic-app", secret), APP_GRANT).await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    let token = granted.body["access_token"].as_str().unwrap();
    let listed = h
        .call(Method::GET, "/subscriptions", Some(token), None)
        .await;
    assert_eq!(listed.status, 200);

    // The id may be repeated in the body when it agrees.
    let mut with_id = APP_GRANT.to_vec();
    with_id.push(("client_id", "basic-app"));
    let agreeing = token_with_header(&h, TENANT, &basic("basic-app", secret), &with_id).await;
    assert_eq!(agreeing.status, 200, "{:?}", agreeing.body);

    // Two methods that disagree: invalid_request, no token.
    let mut with_other_secret = APP_GRANT.to_vec();
    with_other_secret.push(("client_secret", "something-else"));
    let conflicting =
        token_with_header(&h, TENANT, &basic("basic-app", secret), &with_other_secret).await;
    assert_aad_error(&conflicting, 400, "invalid_request", 90_100);

    // Basic is checked like the body: a wrong secret is a wrong secret.
    let wrong = token_with_header(&h, TENANT, &basic("basic-app", "nope"), APP_GRANT).await;
    assert_aad_error(&wrong, 401, "invalid_client", 7_000_215);

    // The secret from the header never reaches the journal either.
    let journal = serde_json::to_string(&h.sim.requests()).unwrap();
    assert!(!journal.contains("p@ss"), "{journal}");
    h.stop().await;
}

#[actix_web::test]
async fn accept_any_credentials_lets_made_up_apps_and_common_through() {
    let h = Harness::with_config(SimulatorConfig {
        accept_any_credentials: true,
        ..test_config()
    })
    .await;
    let made_up = app_grant(&h, "common", "made-up-app", "made-up-secret").await;
    assert_eq!(made_up.status, 200, "{:?}", made_up.body);
    let basic_made_up = token_with_header(&h, TENANT, &basic("other", "x"), APP_GRANT).await;
    assert_eq!(basic_made_up.status, 200, "{:?}", basic_made_up.body);
    h.stop().await;
}

#[actix_web::test]
async fn apps_registered_over_the_control_api_get_tokens_and_secrets_stay_hidden() {
    let h = Harness::start().await;
    let control = format!("{}/_sim/apps", h.server.base_url);
    let before = app_grant(&h, TENANT, "late-app", "late-secret").await;
    assert_eq!(before.status, 400);

    let registered = reply(
        h.http
            .post(&control)
            .json(&json!({"provider": "microsoft", "client_id": "late-app", "client_secret": "late-secret"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(registered.status, 200, "{:?}", registered.body);
    assert_eq!(registered.body["microsoft"], json!([CLIENT_ID, "late-app"]));
    assert!(!registered.body.to_string().contains("late-secret"));
    let after = app_grant(&h, TENANT, "late-app", "late-secret").await;
    assert_eq!(after.status, 200, "{:?}", after.body);

    let empty_secret = reply(
        h.http
            .post(&control)
            .json(&json!({"provider": "google", "client_id": "g", "client_secret": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(empty_secret.status, 400);
    h.stop().await;
}

#[actix_web::test]
async fn an_app_only_token_on_me_is_graphs_400_and_a_delegated_one_is_served() {
    let h = Harness::start().await;
    let app = h.app_token(TENANT).await;
    let assert_me_refused = |reply: &Reply| {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(reply.code(), "BadRequest");
        assert_eq!(
            reply.message(),
            "/me request is only valid with delegated authentication flow."
        );
    };
    let created = h
        .call(
            Method::POST,
            "/subscriptions",
            Some(&app),
            Some(&h.subscription_body(MY_INBOX, 60)),
        )
        .await;
    assert_me_refused(&created);
    assert!(h.sim.subscriptions().is_empty());
    assert!(
        h.receiver.validations().is_empty(),
        "no handshake for a refused create"
    );
    let read = h.call(Method::GET, "/me/messages", Some(&app), None).await;
    assert_me_refused(&read);

    // The same app's `users/{id}/...` is fine with that token.
    h.create_ok(&app, &h.subscription_body(INBOX, 60)).await;

    // A delegated token (refresh-token grant) has a user behind `me`.
    let delegated = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", "0.Arefresh"),
            ],
        )
        .await;
    let user = delegated.body["access_token"].as_str().unwrap();
    let mine = h.create_ok(user, &h.subscription_body(MY_INBOX, 60)).await;
    assert_eq!(mine["resource"], MY_INBOX);
    h.stop().await;
}

#[actix_web::test]
async fn plain_http_notification_urls_are_refused_unless_loopback_is_allowed() {
    let strict = Harness::with_config(SimulatorConfig::default()).await;
    let token = strict.app_token(TENANT).await;
    let create = |h: &Harness, token: String, body: Value| {
        let http = h.http.clone();
        let url = h.graph("/subscriptions");
        async move {
            reply(
                http.post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // The receiver on http://127.0.0.1 is refused by default, as Graph would.
    let refused = create(&strict, token.clone(), strict.subscription_body(INBOX, 60)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.code(), "InvalidRequest");
    assert_eq!(
        refused.message(),
        "NotificationUrl scheme='http' is not supported."
    );
    // An https notificationUrl with an http lifecycle URL: refused for that URL.
    let mut lifecycle = strict.subscription_body(INBOX, 60);
    lifecycle["notificationUrl"] = json!("https://hooks.example.com/graph");
    let refused = create(&strict, token, lifecycle).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.message(),
        "LifecycleNotificationUrl scheme='http' is not supported."
    );
    assert!(strict.receiver.validations().is_empty());
    assert!(strict.sim.subscriptions().is_empty());
    strict.stop().await;

    // Allowed for loopback: the same body is created...
    let lenient = Harness::start().await;
    let token = lenient.app_token(TENANT).await;
    lenient
        .create_ok(&token, &lenient.subscription_body(INBOX, 60))
        .await;
    // ...but http to any other host is still refused.
    let mut elsewhere = lenient.subscription_body(INBOX, 60);
    elsewhere["notificationUrl"] = json!("http://hooks.example.com/graph");
    let refused = create(&lenient, token, elsewhere).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.message(),
        "NotificationUrl scheme='http' is not supported."
    );
    lenient.stop().await;
}
