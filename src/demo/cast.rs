//! The demo's providers — who they are and which part of the story each plays —
//! and the admin API calls that connect and re-authorize them, as an operator
//! would. Knows nothing of the bus or of the story's order.

use anyhow::Context as _;
use serde_json::{Value, json};
use std::time::Duration;
use subkeeper_actors::domain::{ProviderId, ProviderKind};

/// The part a provider plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Renews; a new message arrives (webhook → event); Graph then loses its
    /// subscription (404) and it is recreated.
    Lost,
    /// Graph answers 500 to its first creates: three strikes → error → alert
    /// firing, then recovery → alert resolved.
    Strikes,
    /// Consent revoked (invalid_grant) → needs_reauth, then re-authorized.
    Reauth,
    /// Renews on schedule; also renewed on demand through the bus's retry message.
    Forced,
    /// A Google Calendar channel, rotated: new channel, old one stopped.
    Rotation,
    /// A Gmail watch, renewed.
    Gmail,
}

/// One provider of the demo.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Its tenant.
    pub tenant: &'static str,
    /// Its short name, the mailbox's local part.
    pub name: &'static str,
    /// Its kind.
    pub kind: ProviderKind,
    /// The watched resource (Graph path, calendar id, mailbox).
    pub resource: &'static str,
    /// Who vouches for it: the Azure AD tenant, or Google's refresh token.
    pub authority: &'static str,
    /// Its part in the story.
    pub role: Role,
    /// That part, for the cast list.
    pub part: &'static str,
}

impl Member {
    /// `tenant/name`, as the lines show it.
    pub fn who(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }

    /// The credentials document the admin API takes for it (made-up secrets: the
    /// demo's simulator accepts any).
    pub fn credentials(&self, secret: &str) -> Value {
        if self.kind.is_graph() {
            json!({
                "flow": "client_credentials",
                "authority_tenant": self.authority,
                "client_id": "00000000-0000-0000-0000-00000000demo",
                "client_secret": secret,
            })
        } else {
            json!({
                "flow": "refresh_token",
                "client_id": "subkeeper-demo.apps.googleusercontent.com",
                "client_secret": secret,
                "refresh_token": self.authority,
            })
        }
    }
}

/// The Azure AD tenant whose token endpoint answers `invalid_grant` once.
pub const REVOKED_AUTHORITY: &str = "contoso-aad";

/// The Graph resource whose creates answer 500 until three strikes are done.
pub const FAILING_RESOURCE: &str = "users/bob/";

/// Creates of [`FAILING_RESOURCE`] that fail: three strikes, and one more retry in
/// `error` before it recovers.
pub const FAILING_CREATES: u32 = 4;

/// Everyone, in the order they are connected.
pub const CAST: [Member; 6] = [
    Member {
        tenant: "acme",
        name: "alice",
        kind: ProviderKind::GraphMail,
        resource: "users/alice/messages",
        authority: "acme-aad",
        role: Role::Lost,
        part: "registers; a new message arrives (webhook → mail_received); Graph loses her subscription (404) → recreated",
    },
    Member {
        tenant: "acme",
        name: "bob",
        kind: ProviderKind::GraphCalendar,
        resource: "users/bob/events",
        authority: "acme-aad",
        role: Role::Strikes,
        part: "Graph answers 500 four times: three strikes → error, alert firing; recovers, alert resolved",
    },
    Member {
        tenant: "contoso",
        name: "carol",
        kind: ProviderKind::GraphMail,
        resource: "users/carol/messages",
        authority: REVOKED_AUTHORITY,
        role: Role::Reauth,
        part: "consent revoked (invalid_grant) → needs_reauth; the operator re-authorizes",
    },
    Member {
        tenant: "contoso",
        name: "dan",
        kind: ProviderKind::GraphCalendar,
        resource: "users/dan/events",
        authority: "contoso-calendars-aad",
        role: Role::Forced,
        part: "renews on schedule, and once on demand through the bus's retry message (control.renew)",
    },
    Member {
        tenant: "globex",
        name: "erin",
        kind: ProviderKind::GoogleCalendar,
        resource: "erin@globex.example",
        authority: "demo-refresh-token-erin",
        role: Role::Rotation,
        part: "Google Calendar channel rotated: a new channel opened, the old one stopped",
    },
    Member {
        tenant: "globex",
        name: "frank",
        kind: ProviderKind::Gmail,
        resource: "frank@globex.example",
        authority: "demo-refresh-token-frank",
        role: Role::Gmail,
        part: "Gmail watch renewed",
    },
];

/// The service's admin API, as the demo's operator uses it. Cheap to clone.
#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/api/v1`.
    base: String,
    token: String,
}

/// How long one admin API call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

impl AdminApi {
    /// The admin API of the service at `service_url`, with its bearer token.
    pub fn new(service_url: &str, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .context("cannot build the demo's HTTP client")?;
        Ok(Self {
            http,
            base: format!("{service_url}/api/v1"),
            token,
        })
    }

    /// `POST /tenants/{tenant}/providers`: connects `member`; its id.
    pub async fn connect(&self, member: &Member) -> anyhow::Result<ProviderId> {
        let url = format!("{}/tenants/{}/providers", self.base, member.tenant);
        let body = json!({
            "kind": member.kind,
            "display_name": format!("{} ({})", member.name, member.kind),
            "resource": member.resource,
            "credentials": member.credentials("demo-secret"),
        });
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("the demo's service did not answer POST {url}"))?;
        let status = response.status();
        let view: Value = response
            .json()
            .await
            .with_context(|| format!("POST {url} answered {status} without JSON"))?;
        if !status.is_success() {
            anyhow::bail!("POST {url} answered {status}: {view}");
        }
        view["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("POST {url} answered without a provider id: {view}"))
    }

    /// The path of `PUT …/credentials` for a provider.
    pub fn credentials_path(tenant: &str, id: ProviderId) -> String {
        format!("/api/v1/tenants/{tenant}/providers/{id}/credentials")
    }

    /// `PUT /tenants/{tenant}/providers/{id}/credentials` with fresh credentials.
    pub async fn reauthorize(&self, member: &Member, id: ProviderId) -> anyhow::Result<()> {
        let url = format!(
            "{}{}",
            self.base.trim_end_matches("/api/v1"),
            Self::credentials_path(member.tenant, id)
        );
        let response = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .json(&member.credentials("demo-secret-renewed-consent"))
            .send()
            .await
            .with_context(|| format!("the demo's service did not answer PUT {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("PUT {url} answered {status}: {body}");
        }
        Ok(())
    }
}
