//! The status page as an operator uses it, in a real browser: Debian's headless
//! Chromium driven through chromedriver's WebDriver protocol (plain HTTP, spoken
//! here with reqwest). Sign in with a tenant token; the page lists that tenant's
//! providers only; a provider in error shows its reason; Retry renewal after
//! Graph heals turns it healthy on the page; Delete (after its confirmation)
//! removes it and its subscription disappears at Graph. The security rules are
//! checked over plain HTTP: the cookie's flags, the headers, CSRF, another
//! tenant's pages.
//!
//! Times on the page ("expires in", "last renewal") are counted on the
//! service's clock, the one the store and the fleet read, not the wall clock.
//!
//! `UPDATE_DOCS_SCREENSHOT=1` writes the page's screenshot to
//! `docs/status-page.png`.

use crate::support::{Backend, Harness, on_both_backends, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule};

on_both_backends!(
    a_tenant_operator_signs_in_sees_the_error_retries_it_healthy_and_deletes_a_provider
);

/// Signs in over plain HTTP with `token`: a client that does not follow
/// redirects, and the `Set-Cookie` header the sign-in answered with.
async fn sign_in(h: &Harness, token: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed = http
        .post(format!("{}/sign-in", h.base_url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let set_cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    (http, set_cookie)
}

/// The text of the first element `<tag class="class" …>` after `from` in `html`.
fn text_of<'a>(html: &'a str, from: &str, open: &str) -> &'a str {
    let at = html
        .find(from)
        .unwrap_or_else(|| panic!("{from} not in {html}"));
    let rest = &html[at..];
    let cell = &rest[rest
        .find(open)
        .unwrap_or_else(|| panic!("{open} after {from}"))..];
    let time = &cell[cell.find("<time").unwrap()..];
    let text = &time[time.find('>').unwrap() + 1..];
    &text[..text.find('<').unwrap()]
}

#[actix_web::test]
async fn expires_in_is_counted_on_the_service_clock() {
    // The service and Graph on the simulator's clock, a month ahead of the
    // wall clock: a subscription Graph grants for days expires a month and
    // those days from now by the wall clock, in those days by the service's.
    let h = Harness::start_on_sim_clock(Backend::Embedded, |_| {}).await;
    h.sim.advance(chrono::TimeDelta::days(30));
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let view = h
        .wait_provider("acme", &alice, "alice healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    let expires: chrono::DateTime<chrono::Utc> = view["subscription"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days = (expires - h.sim.now()).num_days();
    assert!((1..=8).contains(&days), "{view}");

    let (http, set_cookie) = sign_in(&h, h.admin_token()).await;
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // The session, made on the service's clock, is valid on it.
    let page = http
        .get(format!("{}/", h.base_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    // The counts by status say how old they are (counted by this view).
    assert!(page.contains("counted now"), "{page}");
    let row = format!("data-provider=\"{alice}\"");
    let expires_in = text_of(&page, &row, "class=\"expires\"");
    assert!(
        expires_in.starts_with(&format!("in {days} d ")),
        "expires {expires_in}, not in {days} days"
    );
    // Its registration happened moments ago by the service's clock.
    let renewed = text_of(&page, &row, "class=\"renewal\"");
    assert!(
        renewed.ends_with(" s ago") || renewed == "1 min ago",
        "{renewed}"
    );

    // The detail page counts on the same clock.
    let detail = http
        .get(format!("{}/providers/acme/{alice}", h.base_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        detail.contains(&format!(">in {days} d ")),
        "the detail page does not say it expires in {days} days: {detail}"
    );
    h.stop().await;
}

/// The WebDriver element reference key (W3C).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port, stopped (and its profile removed) on drop.
struct Driver {
    child: std::process::Child,
    base: String,
    profile: std::path::PathBuf,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/test-services (Debian's chromium-driver)");
        let profile =
            std::env::temp_dir().join(format!("subkeeper-chromium-{}", uuid::Uuid::new_v4()));
        let mut driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            profile,
            http: reqwest::Client::new(),
            session: String::new(),
        };
        let status = format!("{}/status", driver.base);
        let http = driver.http.clone();
        wait_until("chromedriver ready", Duration::from_secs(20), || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                match http.get(&status).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1600,1000",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", driver.profile.display())])
        .collect::<Vec<_>>();
        let created = driver
            .call(
                Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
                }}})),
            )
            .await;
        driver.session = created["sessionId"].as_str().unwrap().to_owned();
        driver
    }

    /// Ends the WebDriver session, which closes the browser (killing
    /// chromedriver alone would leave Chromium running), then stops the driver
    /// and removes the profile.
    async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    async fn session_call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    async fn goto(&self, url: &str) {
        self.session_call(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .session_call(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        self.session_call(
            Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .unwrap()
        .len()
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.session_call(Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn value(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.session_call(Method::GET, &format!("/element/{id}/property/value"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_call(
            Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.session_call(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Waits until the browser is on a page whose URL ends with `suffix` (a
    /// click that submits a form may return before the next page loaded).
    async fn wait_url(&self, suffix: &str) {
        wait_until(
            &format!("the browser at …{suffix}"),
            Duration::from_secs(20),
            || async { self.url().await.ends_with(suffix) },
        )
        .await;
    }

    async fn url(&self) -> String {
        self.session_call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.session_call(Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let png = self.session_call(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap()
    }
}

async fn a_tenant_operator_signs_in_sees_the_error_retries_it_healthy_and_deletes_a_provider(
    backend: Backend,
) {
    // A provider in error is retried only by hand within this test.
    let h = Harness::start(backend, |c| c.error_retry_seconds = 3600).await;
    // bob's creates fail with 500 until Graph heals: three strikes, error.
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
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    let carol = h.create_provider("globex", "globex-aad", "carol").await;
    let alice_sub = h
        .wait_provider("acme", &alice, "alice healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_view = h
        .wait_provider("acme", &bob, "bob in error", |v| v["status"] == "error")
        .await;
    let reason = bob_view["error_message"].as_str().unwrap().to_owned();
    h.wait_provider("globex", &carol, "carol healthy", |v| {
        v["health"]["subscription_status"] == "healthy"
    })
    .await;
    let (status, token) = h
        .admin(
            Method::POST,
            "/tokens",
            Some(json!({"tenant": "acme", "name": "status page test"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();

    let browser = Driver::start().await;
    browser.goto(&format!("{}/", h.base_url)).await;
    assert!(
        browser.url().await.ends_with("/sign-in"),
        "not signed in: to the form"
    );
    browser.type_into("input[name=token]", &token).await;
    browser.click("form button[type=submit]").await;
    browser.wait_url(&format!("{}/", h.base_url)).await;

    // acme's providers only, the one in error first, with its reason.
    assert_eq!(browser.count("tr.provider").await, 2);
    let source = browser.source().await;
    assert!(
        !source.contains(&carol) && !source.contains("globex"),
        "another tenant's provider is shown"
    );
    assert!(
        browser
            .text("tr.provider:first-child td.name")
            .await
            .contains("bob inbox")
    );
    let bob_row = format!("tr[data-provider='{bob}']");
    assert_eq!(browser.text(&format!("{bob_row} td.status")).await, "error");
    assert_eq!(
        browser.value(&format!("{bob_row} textarea.copy")).await,
        reason
    );
    let alice_row = format!("tr[data-provider='{alice}']");
    assert_eq!(
        browser.text(&format!("{alice_row} td.substatus")).await,
        "healthy"
    );
    assert!(
        browser
            .text(&format!("{alice_row} td.expires"))
            .await
            .starts_with("in 6 d")
    );
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::write(docs, browser.screenshot().await).unwrap();
    }

    // Graph heals; Retry renewal shows the RenewalResult and bob healthy.
    h.sim.clear_faults();
    browser.click(&format!("{bob_row} button.retry")).await;
    browser
        .wait_url(&format!("/providers/acme/{bob}/renew"))
        .await;
    assert_eq!(browser.text("section.result dd.success").await, "true");
    assert_eq!(browser.text("dd.substatus").await, "healthy");
    browser.goto(&format!("{}/", h.base_url)).await;
    assert_eq!(
        browser.text(&format!("{bob_row} td.status")).await,
        "connected"
    );
    assert_eq!(
        browser.text(&format!("{bob_row} td.substatus")).await,
        "healthy"
    );

    // Delete alice: the confirmation names the subscription it removes.
    browser.click(&format!("{alice_row} a.delete")).await;
    browser
        .wait_url(&format!("/providers/acme/{alice}/delete"))
        .await;
    let confirm = browser.text("section.confirm").await;
    assert!(
        confirm.contains(&alice_sub) && confirm.contains("deleted at Microsoft Graph"),
        "{confirm}"
    );
    browser.click("button.danger").await;
    browser.wait_url("/?tenant=acme").await;
    assert_eq!(
        browser.count("tr.provider").await,
        1,
        "{}\n{}",
        browser.url().await,
        browser.source().await
    );
    assert_eq!(browser.count(&alice_row).await, 0);
    wait_until(
        "alice's subscription deleted at Graph",
        Duration::from_secs(20),
        || async { !h.sim.subscriptions().iter().any(|s| s.id == alice_sub) },
    )
    .await;
    browser.quit().await;

    // Over plain HTTP: the cookie, the headers, CSRF, another tenant.
    let (http, set_cookie) = sign_in(&h, &token).await;
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let get = |path: String| {
        http.get(format!("{}{path}", h.base_url))
            .header("cookie", &cookie)
            .send()
    };
    let board = get("/".into()).await.unwrap();
    assert_eq!(board.status(), StatusCode::OK);
    let headers = board.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(
        get(format!("/providers/globex/{carol}"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("/?tenant=globex".into()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(format!("/providers/acme/{carol}"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // A renewal without the form's CSRF token, or from another site, changes nothing.
    let attempts = h.attempt_count(&bob).await;
    for (csrf, site) in [("forged", "same-origin"), ("", "same-origin")] {
        let refused = http
            .post(format!("{}/providers/acme/{bob}/renew", h.base_url))
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let page = get("/".into()).await.unwrap().text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let cross_site = http
        .post(format!("{}/providers/acme/{bob}/renew", h.base_url))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        h.attempt_count(&bob).await,
        attempts,
        "a refused form renewed"
    );
    // Not signed in: to the form, and no list.
    let anonymous = http.get(format!("{}/", h.base_url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()["location"], "/sign-in");
    h.stop().await;
}
