//! The identity platform's OpenID discovery document and signing keys, as an
//! MSAL-style client that is pointed at the simulator reads them: every URL
//! names the simulator's own base and resolves.

use super::support::{CLIENT_ID, CLIENT_SECRET, Harness, TENANT, basic, reply};
use base64::Engine;
use serde_json::json;

#[actix_web::test]
async fn discovery_document_points_at_the_simulator_and_its_urls_resolve() {
    let h = Harness::start().await;
    let base = h.server.login_base_url();
    let fetch = |url: String| {
        let http = h.http.clone();
        async move { reply(http.get(url).send().await.unwrap()).await }
    };
    let doc = fetch(format!(
        "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["issuer"], format!("{base}/{TENANT}/v2.0"));
    assert_eq!(doc.body["token_endpoint"], h.token_url(TENANT));
    assert_eq!(
        doc.body["authorization_endpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/authorize")
    );
    let methods = doc.body["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("client_secret_post")));
    assert!(methods.contains(&json!("client_secret_basic")));

    // jwks_uri serves a well-formed RSA signing key.
    let keys = fetch(doc.body["jwks_uri"].as_str().unwrap().to_owned()).await;
    assert_eq!(keys.status, 200);
    let key = &keys.body["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["e"], "AQAB");
    assert!(key["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(modulus.len(), 256, "a 2048-bit modulus");
    assert!(modulus[0] & 0x80 != 0, "no leading zero byte");

    // token_endpoint is the one that issues tokens, by both methods it names.
    let token_endpoint = doc.body["token_endpoint"].as_str().unwrap();
    let grant = [
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let in_body = reply(
        h.http
            .post(token_endpoint)
            .form(&[
                grant[0],
                grant[1],
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(in_body.status, 200, "{:?}", in_body.body);
    let by_basic = reply(
        h.http
            .post(token_endpoint)
            .header("authorization", basic(CLIENT_ID, CLIENT_SECRET))
            .form(&grant)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(by_basic.status, 200, "{:?}", by_basic.body);

    // Multi-tenant segments name the `{tenantid}` placeholder, as Microsoft's do.
    let common = fetch(format!(
        "{base}/common/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(common.body["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    assert_eq!(common.body["token_endpoint"], h.token_url("common"));
    h.stop().await;
}
