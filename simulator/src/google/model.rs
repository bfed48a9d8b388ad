//! Google's state as pure data: OAuth access tokens, Calendar watch channels and
//! Gmail watches, with the rules Google applies to them.
//!
//! Owns validation of watch/stop bodies and expiry on provider time. Knows
//! nothing of HTTP or the outgoing POSTs; callers pass `now` from the sim clock.

use crate::graph::model::random_token;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use url::Url;

/// Seconds a Google access token lives; what Google's token endpoint answers as
/// `expires_in`.
pub const ACCESS_TOKEN_LIFETIME_SECONDS: i64 = 3599;

/// `params.ttl` Calendar applies when none is given, in seconds (documented:
/// "Default is 604800 seconds").
pub const CALENDAR_DEFAULT_TTL_SECONDS: i64 = 604_800;

/// Longest Calendar channel life the simulator grants, in seconds. Google does
/// not document a maximum for Calendar; a longer `ttl` is capped here (30 days),
/// not rejected, as Google caps rather than rejects.
pub const CALENDAR_MAX_TTL_SECONDS: i64 = 2_592_000;

/// How long a Gmail watch lasts: Google lets it lapse after 7 days unless
/// `users.watch` is called again.
pub const GMAIL_WATCH_LIFETIME_SECONDS: i64 = 604_800;

/// Account a refresh token belongs to when none was registered, so `users/me`
/// resolves to a stable mailbox.
pub const DEFAULT_GOOGLE_ACCOUNT: &str = "sim-user@gmail.com";

/// Channel properties a watch body may carry (the Channel schema); anything else
/// is rejected as Google's JSON parser rejects unknown names.
const CHANNEL_PROPERTIES: &[&str] = &[
    "address",
    "expiration",
    "id",
    "kind",
    "params",
    "payload",
    "resourceId",
    "resourceUri",
    "token",
    "type",
];

/// WatchRequest properties (the Gmail schema).
const WATCH_REQUEST_PROPERTIES: &[&str] = &[
    "labelFilterAction",
    "labelFilterBehavior",
    "labelIds",
    "topicName",
];

/// An error as a Google API reports it: HTTP status plus the first entry of
/// `error.errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleError {
    /// HTTP status (also `error.code`).
    pub status: u16,
    /// `errors[0].reason`, e.g. `notFound`, `rateLimitExceeded`.
    pub reason: String,
    /// `error.message` and `errors[0].message`.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after_seconds: Option<u64>,
}

impl GoogleError {
    /// An error without `Retry-After`.
    pub fn new(status: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// 401 as Google answers a missing, unknown or expired access token.
    pub fn unauthenticated() -> Self {
        Self::new(401, "authError", "Invalid Credentials")
    }

    fn bad_request(reason: &str, message: impl Into<String>) -> Self {
        Self::new(400, reason, message)
    }

    fn invalid_json(name: &str) -> Self {
        Self::bad_request(
            "invalid",
            format!("Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."),
        )
    }
}

/// What an access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleAccessToken {
    /// OAuth client it was issued to (Google's "project" for channel ownership).
    pub client_id: String,
    /// Account (Gmail address) the refresh token belonged to.
    pub account: String,
    /// Provider time after which APIs answer 401.
    pub expires_at: DateTime<Utc>,
}

/// Who calls, from a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleCaller {
    /// OAuth client id.
    pub client_id: String,
    /// Account email, what `users/me` means.
    pub account: String,
}

/// A Calendar watch channel as Google stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChannel {
    /// Client-chosen channel id (unique).
    pub id: String,
    /// Opaque id of the watched resource, stable per calendar.
    pub resource_id: String,
    /// Version-specific URI of the watched resource.
    pub resource_uri: String,
    /// Calendar id from the path.
    pub calendar_id: String,
    /// Echoed in `X-Goog-Channel-Token`.
    pub token: Option<String>,
    /// Where messages go.
    pub address: String,
    /// When Google stops sending and forgets it.
    pub expiration: DateTime<Utc>,
    /// Provider time of creation.
    pub created_at: DateTime<Utc>,
    /// OAuth client that created it; only it may stop it.
    pub client_id: String,
    /// `channels.stop` was called.
    pub stopped: bool,
    /// Last `X-Goog-Message-Number` sent (1 is the sync message).
    pub message_number: u64,
}

impl StoredChannel {
    /// Alive at `now`: not stopped and not expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.stopped && now < self.expiration
    }
}

/// A validated `events.watch` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    /// Channel id.
    pub id: String,
    /// Channel token.
    pub token: Option<String>,
    /// Delivery address.
    pub address: String,
    /// Granted lifetime.
    pub ttl: TimeDelta,
}

/// A Gmail watch on one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWatch {
    /// Mailbox address (what the push `emailAddress` carries).
    pub email: String,
    /// `userId` as the path named it (`me` or the address).
    pub user_id: String,
    /// `projects/*/topics/*`.
    pub topic_name: String,
    /// Label filter.
    pub label_ids: Vec<String>,
    /// `include` or `exclude`, when given.
    pub label_filter_behavior: Option<String>,
    /// When the watch lapses.
    pub expiration: DateTime<Utc>,
    /// Provider time of the (latest) watch call.
    pub created_at: DateTime<Utc>,
    /// OAuth client that watched.
    pub client_id: String,
    /// `users.stop` was called.
    pub stopped: bool,
}

impl StoredWatch {
    /// Alive at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.stopped && now < self.expiration
    }
}

/// A validated `users.watch` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWatch {
    /// Topic.
    pub topic_name: String,
    /// Labels.
    pub label_ids: Vec<String>,
    /// Filter behaviour.
    pub label_filter_behavior: Option<String>,
}

/// All of Google's state in the simulator.
#[derive(Debug, Default)]
pub struct GoogleState {
    /// Access token → grant.
    tokens: HashMap<String, GoogleAccessToken>,
    /// Refresh token → account email, registered by tests.
    accounts: HashMap<String, String>,
    /// Refresh tokens revoked by tests: `invalid_grant` from then on.
    revoked: Vec<String>,
    /// Channel id → channel, stopped and expired ones included (ids stay taken).
    channels: HashMap<String, StoredChannel>,
    /// Channel ids in creation order, for stable listings.
    channel_order: Vec<String>,
    /// Calendar id → resourceId, stable as Google's is per resource.
    resource_ids: HashMap<String, String>,
    /// Mailbox email → watch.
    watches: HashMap<String, StoredWatch>,
    /// Mailbox email → current historyId.
    history_ids: HashMap<String, u64>,
    /// Mailbox email → the first historyId it had: nothing before it was ever
    /// retained, so `history.list` answers 404 for a start before it.
    first_history_ids: HashMap<String, u64>,
    /// Pub/Sub message ids handed out.
    next_message_id: u64,
}

impl GoogleState {
    /// Maps a refresh token to a Gmail address (what `users/me` resolves to).
    pub fn register_account(&mut self, refresh_token: &str, email: &str) {
        self.accounts
            .insert(refresh_token.to_owned(), email.to_owned());
    }

    /// Makes a refresh token fail with `invalid_grant` from now on.
    pub fn revoke(&mut self, refresh_token: &str) {
        self.revoked.push(refresh_token.to_owned());
    }

    /// Whether the refresh token was revoked.
    pub fn is_revoked(&self, refresh_token: &str) -> bool {
        self.revoked.iter().any(|r| r == refresh_token)
    }

    /// Issues an access token for `client_id` acting as the refresh token's
    /// account.
    pub fn issue_token(
        &mut self,
        client_id: &str,
        refresh_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> String {
        let account = refresh_token
            .and_then(|r| self.accounts.get(r))
            .cloned()
            .unwrap_or_else(|| DEFAULT_GOOGLE_ACCOUNT.to_owned());
        let token = format!("ya29.{}", random_token(120));
        self.tokens.insert(
            token.clone(),
            GoogleAccessToken {
                client_id: client_id.to_owned(),
                account,
                expires_at: now + TimeDelta::seconds(ACCESS_TOKEN_LIFETIME_SECONDS),
            },
        );
        token
    }

    /// The client id a token was issued to, valid or not, for journaling.
    pub fn client_of(&self, bearer: Option<&str>) -> Option<String> {
        bearer
            .and_then(|b| self.tokens.get(b))
            .map(|t| t.client_id.clone())
    }

    /// Resolves a bearer token.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<GoogleCaller, GoogleError> {
        let token = bearer
            .filter(|b| !b.is_empty())
            .and_then(|b| self.tokens.get(b))
            .ok_or_else(GoogleError::unauthenticated)?;
        if now >= token.expires_at {
            return Err(GoogleError::unauthenticated());
        }
        Ok(GoogleCaller {
            client_id: token.client_id.clone(),
            account: token.account.clone(),
        })
    }

    /// Checks an `events.watch` body; `http_allowed` says whether an
    /// `http://` address may stand (Google takes only HTTPS).
    pub fn validate_watch(
        &self,
        body: &Value,
        http_allowed: &dyn Fn(&Url) -> bool,
    ) -> Result<NewChannel, GoogleError> {
        let Some(object) = body.as_object() else {
            return Err(GoogleError::bad_request(
                "parseError",
                "Invalid JSON payload received.",
            ));
        };
        reject_unknown(object, CHANNEL_PROPERTIES)?;
        let id = string_field(object, "id")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GoogleError::bad_request("required", "Required"))?;
        let kind = string_field(object, "type")?
            .ok_or_else(|| GoogleError::bad_request("required", "Required"))?;
        if !matches!(kind.as_str(), "web_hook" | "webhook") {
            return Err(GoogleError::bad_request(
                "invalid",
                format!("Invalid value for: {kind} is not a valid value"),
            ));
        }
        let address = string_field(object, "address")?
            .ok_or_else(|| GoogleError::bad_request("required", "Required"))?;
        let url = Url::parse(&address).map_err(|_| {
            GoogleError::bad_request(
                "push.webhookUrlUnparseable",
                format!("Unparseable WebHook callback url: {address}"),
            )
        })?;
        let secure = url.scheme() == "https";
        if !(secure || (url.scheme() == "http" && http_allowed(&url))) {
            return Err(GoogleError::bad_request(
                "push.webhookUrlNotHttps",
                format!("WebHook callback must be HTTPS: {address}"),
            ));
        }
        if self.channels.contains_key(&id) {
            return Err(GoogleError::bad_request(
                "channelIdNotUnique",
                format!("Channel id {id} not unique"),
            ));
        }
        let ttl = match object.get("params") {
            None | Some(Value::Null) => CALENDAR_DEFAULT_TTL_SECONDS,
            Some(Value::Object(params)) => match params.get("ttl") {
                None => CALENDAR_DEFAULT_TTL_SECONDS,
                Some(Value::String(text)) => {
                    text.parse::<i64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                        GoogleError::bad_request("invalid", format!("Invalid ttl value: {text}"))
                    })?
                }
                Some(_) => return Err(GoogleError::bad_request("invalid", "Invalid ttl value")),
            },
            Some(_) => return Err(GoogleError::invalid_json("params")),
        };
        Ok(NewChannel {
            id,
            token: string_field(object, "token")?,
            address,
            ttl: TimeDelta::seconds(ttl.min(CALENDAR_MAX_TTL_SECONDS)),
        })
    }

    /// Stores a new channel on `calendar_id`; returns it.
    pub fn insert_channel(
        &mut self,
        caller: &GoogleCaller,
        calendar_id: &str,
        new: NewChannel,
        now: DateTime<Utc>,
    ) -> StoredChannel {
        let resource_id = self
            .resource_ids
            .entry(calendar_id.to_owned())
            .or_insert_with(|| random_token(27))
            .clone();
        let encoded: String =
            url::form_urlencoded::byte_serialize(calendar_id.as_bytes()).collect();
        let channel = StoredChannel {
            resource_uri: format!(
                "https://www.googleapis.com/calendar/v3/calendars/{encoded}/events?alt=json"
            ),
            id: new.id,
            resource_id,
            calendar_id: calendar_id.to_owned(),
            token: new.token,
            address: new.address,
            // Google reports expiration in whole milliseconds.
            expiration: truncate_millis(now + new.ttl),
            created_at: now,
            client_id: caller.client_id.clone(),
            stopped: false,
            message_number: 1,
        };
        self.channel_order.push(channel.id.clone());
        self.channels.insert(channel.id.clone(), channel.clone());
        channel
    }

    /// The calendar a channel watches, for fault matching and the journal.
    pub fn calendar_of(&self, channel_id: &str) -> Option<String> {
        self.channels.get(channel_id).map(|c| c.calendar_id.clone())
    }

    /// `channels.stop`: id and resourceId must name a live channel of the caller's
    /// client.
    pub fn stop_channel(
        &mut self,
        caller: &GoogleCaller,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), GoogleError> {
        let Some(object) = body.as_object() else {
            return Err(GoogleError::bad_request(
                "parseError",
                "Invalid JSON payload received.",
            ));
        };
        reject_unknown(object, CHANNEL_PROPERTIES)?;
        let id = string_field(object, "id")?.unwrap_or_default();
        let resource_id = string_field(object, "resourceId")?.unwrap_or_default();
        let not_found = || {
            GoogleError::new(
                404,
                "notFound",
                format!(
                    "Channel '{id}' not found for project '{}'",
                    caller.client_id
                ),
            )
        };
        let channel = self.channels.get_mut(&id).ok_or_else(not_found)?;
        if channel.resource_id != resource_id
            || channel.client_id != caller.client_id
            || !channel.is_live(now)
        {
            return Err(not_found());
        }
        channel.stopped = true;
        Ok(())
    }

    /// A live channel by id.
    pub fn live_channel(&self, id: &str, now: DateTime<Utc>) -> Option<StoredChannel> {
        self.channels.get(id).filter(|c| c.is_live(now)).cloned()
    }

    /// Bumps and returns a live channel's message number.
    pub fn next_message_number(&mut self, id: &str, now: DateTime<Utc>) -> Option<StoredChannel> {
        let channel = self.channels.get_mut(id).filter(|c| c.is_live(now))?;
        channel.message_number += 1;
        Some(channel.clone())
    }

    /// Every channel ever created, oldest first.
    pub fn all_channels(&self) -> Vec<StoredChannel> {
        self.channel_order
            .iter()
            .filter_map(|id| self.channels.get(id))
            .cloned()
            .collect()
    }

    /// Resolves a Gmail `userId` for `caller` (`me` is the token's account).
    pub fn mailbox(caller: &GoogleCaller, user_id: &str) -> String {
        if user_id == "me" {
            caller.account.clone()
        } else {
            user_id.to_owned()
        }
    }

    /// Checks a `users.watch` body.
    pub fn validate_gmail_watch(&self, body: &Value) -> Result<NewWatch, GoogleError> {
        let Some(object) = body.as_object() else {
            return Err(GoogleError::bad_request(
                "parseError",
                "Invalid JSON payload received.",
            ));
        };
        reject_unknown(object, WATCH_REQUEST_PROPERTIES)?;
        let topic_name = string_field(object, "topicName")?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| GoogleError::bad_request("invalidArgument", "No topic name provided"))?;
        if !is_topic_name(&topic_name) {
            return Err(GoogleError::bad_request(
                "invalidArgument",
                format!(
                    "Invalid topicName does not match projects/SOME_PROJECT/topics/SOME_TOPIC: {topic_name}"
                ),
            ));
        }
        let label_ids = match object.get("labelIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| GoogleError::bad_request("invalid", "Invalid labelIds"))?,
            Some(_) => return Err(GoogleError::bad_request("invalid", "Invalid labelIds")),
        };
        let mut behaviors = Vec::new();
        for field in ["labelFilterBehavior", "labelFilterAction"] {
            if let Some(value) = string_field(object, field)? {
                if !matches!(value.as_str(), "include" | "exclude") {
                    return Err(GoogleError::bad_request(
                        "invalid",
                        format!("Invalid value at '{field}': \"{value}\""),
                    ));
                }
                behaviors.push(value);
            }
        }
        Ok(NewWatch {
            topic_name,
            label_ids,
            label_filter_behavior: behaviors.into_iter().next(),
        })
    }

    /// Starts (or replaces) the watch on `email`; returns it with the mailbox's
    /// current historyId.
    pub fn insert_watch(
        &mut self,
        caller: &GoogleCaller,
        email: &str,
        user_id: &str,
        new: NewWatch,
        now: DateTime<Utc>,
    ) -> (StoredWatch, u64) {
        let watch = StoredWatch {
            email: email.to_owned(),
            user_id: user_id.to_owned(),
            topic_name: new.topic_name,
            label_ids: new.label_ids,
            label_filter_behavior: new.label_filter_behavior,
            expiration: truncate_millis(now + TimeDelta::seconds(GMAIL_WATCH_LIFETIME_SECONDS)),
            created_at: now,
            client_id: caller.client_id.clone(),
            stopped: false,
        };
        self.watches.insert(email.to_owned(), watch.clone());
        let history_id = self.history_id(email);
        (watch, history_id)
    }

    /// `users.stop`: ends the mailbox's watch if there is one (Google answers 204
    /// either way).
    pub fn stop_watch(&mut self, email: &str) {
        if let Some(watch) = self.watches.get_mut(email) {
            watch.stopped = true;
        }
    }

    /// Every watch, live or not, by email.
    pub fn all_watches(&self) -> Vec<StoredWatch> {
        let mut all: Vec<StoredWatch> = self.watches.values().cloned().collect();
        all.sort_by(|a, b| a.email.cmp(&b.email));
        all
    }

    /// A new mailbox change: bumps the historyId of `email` if its watch is live;
    /// returns the watch, the new historyId and a Pub/Sub message id.
    pub fn mailbox_changed(
        &mut self,
        email: &str,
        now: DateTime<Utc>,
    ) -> Option<(StoredWatch, u64, u64)> {
        let watch = self.watches.get(email).filter(|w| w.is_live(now))?.clone();
        let history = self.history_id(email) + 1 + u64::from(rand::random::<u8>() % 50);
        self.history_ids.insert(email.to_owned(), history);
        self.next_message_id += 1;
        Some((watch, history, 2_070_443_601_311_540 + self.next_message_id))
    }

    /// The mailbox's current historyId, if it ever had one.
    pub fn current_history_id(&self, email: &str) -> Option<u64> {
        self.history_ids.get(email).copied()
    }

    fn history_id(&mut self, email: &str) -> u64 {
        let current = *self
            .history_ids
            .entry(email.to_owned())
            .or_insert_with(|| 9_000 + u64::from(rand::random::<u16>()));
        self.first_history_ids
            .entry(email.to_owned())
            .or_insert(current);
        current
    }

    /// A change in `email`'s mailbox, watched or not: moves its historyId on
    /// (by a random step, as Gmail's ids have gaps) and returns the new one.
    pub fn advance_history_id(&mut self, email: &str) -> u64 {
        let history = self.history_id(email) + 1 + u64::from(rand::random::<u8>() % 50);
        self.history_ids.insert(email.to_owned(), history);
        history
    }

    /// The mailbox's current and first historyIds, giving it one if it had
    /// none (as any Gmail mailbox has a history).
    pub fn history_span(&mut self, email: &str) -> (u64, u64) {
        let current = self.history_id(email);
        let first = self
            .first_history_ids
            .get(email)
            .copied()
            .unwrap_or(current);
        (current, first)
    }

    /// A new Pub/Sub message id for a push.
    pub fn next_push_message_id(&mut self) -> u64 {
        self.next_message_id += 1;
        2_070_443_601_311_540 + self.next_message_id
    }
}

/// `projects/{project}/topics/{topic}` with non-empty segments.
fn is_topic_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == "topics"
        && !parts[1].is_empty()
        && !parts[3].is_empty()
}

fn reject_unknown(object: &Map<String, Value>, known: &[&str]) -> Result<(), GoogleError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => Err(GoogleError::invalid_json(name)),
        None => Ok(()),
    }
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, GoogleError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(GoogleError::bad_request(
            "invalid",
            format!("Invalid value at '{name}': expected a string"),
        )),
    }
}

/// Drops sub-millisecond precision: Google's expirations are ms since the epoch.
pub fn truncate_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}
