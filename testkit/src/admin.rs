//! The service's admin API (`/api/v1/…`) as tests and benches call it, and the
//! provider bodies they create providers with.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The app registration every Graph provider of a test or bench uses; the
/// simulator accepts any.
pub const GRAPH_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// The client secret that goes with `GRAPH_CLIENT_ID`.
pub const GRAPH_CLIENT_SECRET: &str = "not-a-real-secret";

/// The secret of every Google OAuth client a test provider connects through (the
/// simulator is told it with `sim::register_google_client`).
pub const GOOGLE_CLIENT_SECRET: &str = "not-a-real-google-secret";

/// A client of one service's admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the service.
    pub base_url: String,
    /// The bearer token the service was configured with (`admin_token`).
    pub token: String,
}

impl Admin {
    /// A client of the service at `base_url` with bearer token `token`.
    pub fn new(http: &reqwest::Client, base_url: &str, token: &str) -> Self {
        Self {
            http: http.clone(),
            base_url: base_url.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `method /api/v1{path}` with the bearer token and an optional JSON body;
    /// the status and the body as JSON (as a JSON string when it is not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Creates a provider of `tenant` from `body`; its id.
    pub async fn create_provider(&self, tenant: &str, body: Value) -> anyhow::Result<String> {
        let (status, body) = self
            .request(
                Method::POST,
                &format!("/tenants/{tenant}/providers"),
                Some(body),
            )
            .await?;
        if status != StatusCode::CREATED {
            anyhow::bail!("creating a provider of {tenant}: {status} {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
    }
}

/// The body that creates a Graph mail provider watching `resource`
/// (`users/{mailbox}/messages`) whose app lives in Azure AD tenant `authority`.
pub fn graph_mail_provider(display_name: &str, resource: &str, authority: &str) -> Value {
    json!({
        "kind": "graph_mail",
        "display_name": display_name,
        "resource": resource,
        "credentials": {
            "flow": "client_credentials",
            "authority_tenant": authority,
            "client_id": GRAPH_CLIENT_ID,
            "client_secret": GRAPH_CLIENT_SECRET,
        }
    })
}
