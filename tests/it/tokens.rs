//! Tenant-scoped API tokens: made and revoked by the admin token only, kept as
//! a hash, and confined to their tenant — a tenant token on any route of another
//! tenant is 403, another tenant's provider id under its own tenant is 404, and
//! nothing changes in either case.

use crate::support::{Backend, Harness, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    a_tenant_token_is_confined_to_its_tenant_on_every_route_and_changes_nothing_elsewhere,
    tokens_are_shown_once_kept_hashed_audited_and_dead_once_revoked,
    the_tokens_cli_creates_lists_and_revokes_tokens_the_running_service_honours,
);

/// `method /api/v1{path}` with `token`; the status and the JSON body.
pub async fn call(
    h: &Harness,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = h
        .http
        .request(method, format!("{}/api/v1{path}", h.base_url))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Makes a token for `tenant` with the admin token; `(id, token)`.
pub async fn make_token(h: &Harness, tenant: &str, name: &str) -> (String, String) {
    let (status, body) = h
        .admin(
            Method::POST,
            "/tokens",
            Some(json!({"tenant": tenant, "name": name})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

/// A valid Graph provider body (what `create` would accept).
fn provider_body(name: &str) -> Value {
    subkeeper_testkit::admin::graph_mail_provider(name, &format!("users/{name}/messages"), "x-aad")
}

/// Valid replacement credentials for a Graph provider.
fn credentials_body() -> Value {
    json!({"flow": "client_credentials", "authority_tenant": "x-aad",
           "client_id": subkeeper_testkit::admin::GRAPH_CLIENT_ID, "client_secret": "another-secret-value-42"})
}

/// Every tenant-scoped route of the API, for `tenant` and provider `id`, with a
/// body each would accept.
pub fn tenant_routes(tenant: &str, id: &str) -> Vec<(Method, String, Option<Value>)> {
    let p = format!("/tenants/{tenant}/providers/{id}");
    vec![
        (Method::GET, format!("/tenants/{tenant}/providers"), None),
        (
            Method::POST,
            format!("/tenants/{tenant}/providers"),
            Some(provider_body("intruder")),
        ),
        (Method::GET, p.clone(), None),
        (
            Method::PATCH,
            p.clone(),
            Some(json!({"display_name": "renamed", "enabled": false})),
        ),
        (Method::DELETE, p.clone(), None),
        (Method::GET, format!("{p}/health"), None),
        (Method::GET, format!("{p}/attempts"), None),
        (Method::GET, format!("{p}/deliveries"), None),
        (
            Method::PUT,
            format!("{p}/credentials"),
            Some(credentials_body()),
        ),
        (Method::POST, format!("{p}/renew"), None),
        (Method::POST, format!("/tenants/{tenant}/renew"), None),
        (Method::GET, format!("/tenants/{tenant}/audit"), None),
        (
            Method::DELETE,
            format!("/tenants/{tenant}?confirm={tenant}"),
            None,
        ),
    ]
}

/// The routes only the admin token may use.
fn admin_routes(token_id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/tokens".into(),
            Some(json!({"tenant": "acme", "name": "more"})),
        ),
        (Method::GET, "/tokens".into(), None),
        (Method::GET, "/tokens?tenant=acme".into(), None),
        (Method::DELETE, format!("/tokens/{token_id}"), None),
        (Method::DELETE, "/tenants/acme?confirm=acme".into(), None),
    ]
}

/// Everything a tenant could see changed: rows per table, and contoso's
/// provider and audit trail as the admin reads them.
async fn snapshot(h: &Harness, contoso: &str) -> Value {
    let mut rows = serde_json::Map::new();
    for table in [
        "providers",
        "oauth_credentials",
        "subscriptions",
        "audit_log",
        "api_tokens",
        "tenant_offboardings",
    ] {
        rows.insert(table.into(), h.rows(table).await.into());
    }
    let revoked: i64 = crate::support::on_test_db!(h, pool => sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL")
        .fetch_one(pool).await.unwrap());
    let mut provider = h.provider("contoso", contoso).await;
    // Health timestamps move on their own; what an intruder could change is the rest.
    provider["health"] = Value::Null;
    let (_, audit) = h.admin(Method::GET, "/tenants/contoso/audit", None).await;
    json!({"rows": rows, "revoked": revoked, "provider": provider, "audit": audit})
}

async fn a_tenant_token_is_confined_to_its_tenant_on_every_route_and_changes_nothing_elsewhere(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let frank = h.create_provider("acme", "acme-aad", "frank").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    for (tenant, id) in [("acme", &frank), ("contoso", &carol)] {
        h.wait_provider(tenant, id, "registered", |v| !v["subscription"].is_null())
            .await;
    }
    let (acme_token_id, acme_token) = make_token(&h, "acme", "acme ops").await;
    let before = snapshot(&h, &carol).await;

    // Another tenant's URL: 403 on every route, whatever the provider id.
    for id in [carol.as_str(), frank.as_str(), "not-a-uuid"] {
        for (method, path, body) in tenant_routes("contoso", id) {
            let (status, answer) = call(&h, &acme_token, method.clone(), &path, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_eq!(
                answer["error"]["code"], "forbidden",
                "{method} {path}: {answer}"
            );
        }
    }
    // Its own tenant's URL with the other tenant's provider id: 404.
    for (method, path, body) in tenant_routes("acme", &carol) {
        if !path.contains(&carol) {
            continue;
        }
        let (status, answer) = call(&h, &acme_token, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"]["code"], "not_found",
            "{method} {path}: {answer}"
        );
    }
    // The admin's routes: 403.
    for (method, path, body) in admin_routes(&acme_token_id) {
        let (status, answer) = call(&h, &acme_token, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    assert_eq!(
        snapshot(&h, &carol).await,
        before,
        "a refused request changed something"
    );

    // Its own tenant: it sees only its providers, and what it does is audited
    // under its token id.
    let (status, list) = call(
        &h,
        &acme_token,
        Method::GET,
        "/tenants/acme/providers",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![frank.as_str()]);
    let (status, body) = call(
        &h,
        &acme_token,
        Method::PATCH,
        &format!("/tenants/acme/providers/{frank}"),
        Some(json!({"display_name": "Frank's inbox"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, audit) = call(&h, &acme_token, Method::GET, "/tenants/acme/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let newest = &audit["audit"][0];
    assert_eq!(newest["action"], "provider.update", "{audit}");
    assert_eq!(newest["actor"], format!("token:{acme_token_id}"), "{audit}");
    assert_eq!(newest["target"], frank.as_str());
    assert_eq!(newest["outcome"], "ok");
    assert!(!audit.to_string().contains(&acme_token), "{audit}");
    h.stop().await;
}

async fn tokens_are_shown_once_kept_hashed_audited_and_dead_once_revoked(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let (id, token) = make_token(&h, "acme", "deploys").await;
    assert!(token.starts_with("skt_"), "{token}");
    let (_, other) = make_token(&h, "contoso", "contoso ops").await;

    // Listed without the token, per tenant or all.
    let (status, list) = h.admin(Method::GET, "/tokens?tenant=acme", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["tokens"][0]["id"], id.as_str());
    assert_eq!(list["tokens"][0]["name"], "deploys");
    assert!(list["tokens"][0]["revoked_at"].is_null());
    let (_, all) = h.admin(Method::GET, "/tokens", None).await;
    assert_eq!(all["tokens"].as_array().unwrap().len(), 2, "{all}");
    assert!(!all.to_string().contains(&token) && !all.to_string().contains(&other));

    // The database holds neither token, only their hashes.
    let stored: Vec<(String, String)> = crate::support::on_test_db!(h, pool => sqlx::query_as(
        "SELECT token_hash, name FROM api_tokens").fetch_all(pool).await.unwrap());
    let dump = format!("{stored:?}");
    assert!(
        !dump.contains(&token[4..]) && !dump.contains(&other[4..]),
        "{dump}"
    );
    assert!(
        stored
            .iter()
            .any(|(hash, _)| *hash == subkeeper::tokens::hash(&token))
    );

    // Its creation is in the tenant's audit trail, by the admin.
    let (_, audit) = h.admin(Method::GET, "/tenants/acme/audit", None).await;
    assert_eq!(audit["audit"][0]["action"], "token.create", "{audit}");
    assert_eq!(audit["audit"][0]["actor"], "admin");
    assert_eq!(audit["audit"][0]["target"], id.as_str());

    // Bad requests: clear 4xx, nothing made.
    for (body, status) in [
        (
            json!({"tenant": "a.b", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"tenant": "acme", "name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"tenant": "acme"}), StatusCode::BAD_REQUEST),
        (
            json!({"tenant": "acme", "name": "x", "scope": "admin"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, answer) = h.admin(Method::POST, "/tokens", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    assert_eq!(h.rows("api_tokens").await, 2);

    // It works until revoked; then it is a 401 like any unknown token.
    let (status, _) = call(&h, &token, Method::GET, "/tenants/acme/providers", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, revoked) = h
        .admin(Method::DELETE, &format!("/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, answer) = call(&h, &token, Method::GET, "/tenants/acme/providers", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");
    // Revoking again changes nothing; an unknown token is a 404.
    let audit_rows = h.rows("audit_log").await;
    let (status, _) = h
        .admin(Method::DELETE, &format!("/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.rows("audit_log").await, audit_rows);
    let (status, _) = h
        .admin(
            Method::DELETE,
            &format!("/tokens/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = h.admin(Method::GET, "/tenants/acme/audit", None).await;
    assert_eq!(audit["audit"][0]["action"], "token.revoke", "{audit}");
    // The other tenant's token still works.
    let (status, _) = call(&h, &other, Method::GET, "/tenants/contoso/providers", None).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

/// `subkeeper tokens create|list|revoke` against the service's store, as an
/// operator on its machine would run it; the running service honours the
/// result at once.
async fn the_tokens_cli_creates_lists_and_revokes_tokens_the_running_service_honours(
    backend: Backend,
) {
    use crate::startup::{output, subkeeper_binary};
    let h = Harness::start(backend, |_| {}).await;
    let cli = |args: &[&str]| {
        let mut command = subkeeper_binary(&[&["tokens"], args].concat());
        match (h.backend.database(), h.backend.data_dir()) {
            (Some(db), _) => command.env("SUBKEEPER_DATABASE_URL", &db.url),
            (None, Some(dir)) => command.env("SUBKEEPER_DATA_DIR", dir),
            (None, None) => unreachable!("a backend has a store"),
        };
        command
    };
    let out = output(cli(&[
        "create",
        "--tenant",
        "acme",
        "--name",
        "acme on-call",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout
        .lines()
        .find(|l| l.starts_with("skt_"))
        .unwrap_or_else(|| panic!("no token printed: {stdout}"))
        .to_owned();
    let id = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let (status, _) = call(&h, &token, Method::GET, "/tenants/acme/providers", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&h, &token, Method::GET, "/tenants/contoso/providers", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let out = output(cli(&["list", "--tenant", "acme"])).await;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(
        listed.contains(&id) && listed.contains("acme on-call") && listed.contains("active"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token),
        "the list shows the token: {listed}"
    );
    // A bad tenant or an unknown id: refused, naming why.
    let out = output(cli(&["create", "--tenant", "a.b", "--name", "x"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenant id"));
    let out = output(cli(&["revoke", &uuid::Uuid::new_v4().to_string()])).await;
    assert!(!out.status.success());

    let out = output(cli(&["revoke", &id])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = call(&h, &token, Method::GET, "/tenants/acme/providers", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let out = output(cli(&["list"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let (_, audit) = h.admin(Method::GET, "/tenants/acme/audit", None).await;
    let actions: Vec<(&str, &str)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![("token.revoke", "cli"), ("token.create", "cli")]
    );
    h.stop().await;
}
