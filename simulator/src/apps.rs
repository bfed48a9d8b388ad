//! Registered OAuth clients (client id → secret) of both identity providers,
//! and client authentication as RFC 6749 §2.3.1 allows it: HTTP Basic
//! (`client_secret_basic`) or the form body (`client_secret_post`).
//!
//! Owns only who is registered and how a token request presented itself; each
//! token endpoint decides what an unknown client or a wrong secret answers in
//! its own provider's shape. Secrets never leave this module except to be
//! compared.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which identity provider an app is registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityProvider {
    /// The Microsoft identity platform (`/{tenant}/oauth2/v2.0/token`); an app
    /// registered here is multi-tenant: its id and secret work in every tenant.
    Microsoft,
    /// Google's OAuth 2.0 token endpoint (`/token`).
    Google,
}

/// An app registration: what a provider's token endpoint knows of a client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredApp {
    /// The identity provider it is registered with.
    pub provider: IdentityProvider,
    /// The client (application) id.
    pub client_id: String,
    /// The one secret the token endpoint accepts for it.
    pub client_secret: String,
}

impl std::fmt::Debug for RegisteredApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredApp")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// Every registered app, by provider and client id.
#[derive(Debug, Default)]
pub(crate) struct AppRegistry {
    /// (provider, client id) → secret.
    secrets: HashMap<(IdentityProvider, String), String>,
}

impl AppRegistry {
    /// Registers (or re-registers, replacing the secret) an app.
    pub(crate) fn register(&mut self, app: RegisteredApp) {
        self.secrets
            .insert((app.provider, app.client_id), app.client_secret);
    }

    /// The registered secret of `client_id`, or `None` for an unknown client.
    pub(crate) fn secret_of(&self, provider: IdentityProvider, client_id: &str) -> Option<&str> {
        self.secrets
            .get(&(provider, client_id.to_owned()))
            .map(String::as_str)
    }

    /// Registered client ids of `provider`, sorted (never the secrets).
    pub(crate) fn client_ids(&self, provider: IdentityProvider) -> Vec<String> {
        let mut ids: Vec<String> = self
            .secrets
            .keys()
            .filter(|(p, _)| *p == provider)
            .map(|(_, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}

/// The client a token request names, from the `Authorization: Basic` header,
/// the form body, or both where they agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PresentedClient {
    /// `client_id`, when given.
    pub(crate) client_id: Option<String>,
    /// `client_secret`, when given.
    pub(crate) client_secret: Option<String>,
}

/// Why the presented client authentication is not usable at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientAuthError {
    /// `Authorization: Basic` that is not base64 of `id:secret`.
    #[error("malformed Basic client authentication")]
    MalformedBasic,
    /// Basic and the body name different ids or secrets: two methods at once
    /// (RFC 6749 §2.3: a client MUST NOT use more than one).
    #[error("client authentication in both the Authorization header and the body, disagreeing")]
    Conflicting,
}

/// Reads the client from `authorization` (an `Authorization` header value) and
/// the form. Non-Basic schemes are ignored (they are not client authentication).
pub(crate) fn presented_client(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<PresentedClient, ClientAuthError> {
    let field = |name: &str| form.get(name).filter(|v| !v.is_empty()).cloned();
    let body = PresentedClient {
        client_id: field("client_id"),
        client_secret: field("client_secret"),
    };
    let Some(basic) = authorization.and_then(basic_credentials) else {
        return Ok(body);
    };
    let (id, secret) = decode_basic(basic)?;
    let merge = |from_header: String, from_body: Option<String>| match from_body {
        Some(b) if b != from_header => Err(ClientAuthError::Conflicting),
        _ => Ok(Some(from_header)),
    };
    Ok(PresentedClient {
        client_id: merge(id, body.client_id)?,
        client_secret: merge(secret, body.client_secret)?,
    })
}

/// The credentials part of a `Basic` authorization value (scheme is
/// case-insensitive, RFC 7617).
fn basic_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
}

/// `base64(urlencode(id) ":" urlencode(secret))` back into id and secret.
fn decode_basic(encoded: &str) -> Result<(String, String), ClientAuthError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ClientAuthError::MalformedBasic)?;
    let text = String::from_utf8(bytes).map_err(|_| ClientAuthError::MalformedBasic)?;
    let (id, secret) = text
        .split_once(':')
        .ok_or(ClientAuthError::MalformedBasic)?;
    let id = form_decode(id)?;
    if id.is_empty() {
        return Err(ClientAuthError::MalformedBasic);
    }
    Ok((id, form_decode(secret)?))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value.
fn form_decode(raw: &str) -> Result<String, ClientAuthError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let [Some(hi), Some(lo)] = hex else {
                    return Err(ClientAuthError::MalformedBasic);
                };
                let digit = |c: u8| (c as char).to_digit(16);
                let (Some(hi), Some(lo)) = (digit(hi), digit(lo)) else {
                    return Err(ClientAuthError::MalformedBasic);
                };
                out.push(u8::try_from(hi * 16 + lo).map_err(|_| ClientAuthError::MalformedBasic)?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| ClientAuthError::MalformedBasic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let joined = format!("{}:{}", encode(id), encode(secret));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(joined)
        )
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn basic_credentials_are_form_decoded_and_agreeing_body_fields_are_fine() {
        let header = basic("app id", "s3:cr+et%");
        let client = presented_client(Some(&header), &form(&[("client_id", "app id")])).unwrap();
        assert_eq!(client.client_id.as_deref(), Some("app id"));
        assert_eq!(client.client_secret.as_deref(), Some("s3:cr+et%"));
    }

    #[test]
    fn disagreeing_or_malformed_basic_is_refused() {
        let header = basic("app", "one");
        assert_eq!(
            presented_client(Some(&header), &form(&[("client_secret", "two")])),
            Err(ClientAuthError::Conflicting)
        );
        assert_eq!(
            presented_client(Some("Basic !!!"), &form(&[])),
            Err(ClientAuthError::MalformedBasic)
        );
        // A bearer header is not client authentication.
        let client = presented_client(Some("Bearer x"), &form(&[("client_id", "a")])).unwrap();
        assert_eq!(client.client_id.as_deref(), Some("a"));
    }
}
