//! Which feed a change belongs to: the names callers use ([`FeedRef`]) and the
//! canonical key the change log files it under ([`FeedKey`]), plus the reading
//! of Graph resource paths that both subscriptions and delta URLs are written
//! in.
//!
//! Owns naming only: two spellings of one Graph mailbox folder
//! (`users/U/mailFolders('Inbox')/messages`, `users/u/mailfolders/inbox/messages`)
//! are one feed. Holds no state and must not look at subscriptions, channels or
//! watches beyond their resource strings.

use crate::changes::ChangeError;
use serde::{Deserialize, Serialize};

/// Whose change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedProvider {
    /// Microsoft Graph: a mail folder's messages or a user's primary calendar.
    Graph,
    /// Google Calendar: one calendar's events.
    GoogleCalendar,
    /// Gmail: one mailbox's history.
    Gmail,
}

/// A feed as callers name it.
///
/// `resource` is, for `graph`, a resource path as a subscription names it
/// (`users/{id}/mailFolders('Inbox')/messages`, `users/{id}/messages` — the
/// Inbox —, `users/{id}/events`, `me/...`); for `google_calendar`, the
/// calendarId; for `gmail`, the mailbox address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedRef {
    /// Whose feed.
    pub provider: FeedProvider,
    /// The resource within that provider.
    pub resource: String,
}

impl FeedRef {
    /// A Graph mail folder's messages or a user's calendar, by resource path.
    pub fn graph(resource: impl Into<String>) -> Self {
        Self {
            provider: FeedProvider::Graph,
            resource: resource.into(),
        }
    }

    /// A Google calendar's events, by calendarId.
    pub fn google_calendar(calendar_id: impl Into<String>) -> Self {
        Self {
            provider: FeedProvider::GoogleCalendar,
            resource: calendar_id.into(),
        }
    }

    /// A Gmail mailbox's history, by address.
    pub fn gmail(email: impl Into<String>) -> Self {
        Self {
            provider: FeedProvider::Gmail,
            resource: email.into(),
        }
    }
}

/// The canonical name of a feed in the change log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FeedKey {
    /// One Graph mail folder.
    GraphMessages {
        /// Lower-cased user id or UPN, or `me`.
        user: String,
        /// Well-known folder names lower-cased; folder ids as given.
        folder: String,
    },
    /// One Graph user's primary calendar.
    GraphEvents {
        /// Lower-cased user id or UPN, or `me`.
        user: String,
    },
    /// One Google calendar.
    CalendarEvents {
        /// The calendarId exactly as the path names it.
        calendar_id: String,
    },
    /// One Gmail mailbox.
    GmailHistory {
        /// The mailbox address.
        email: String,
    },
}

impl FeedKey {
    /// The key a caller's name stands for.
    pub(crate) fn parse(feed: &FeedRef) -> Result<Self, ChangeError> {
        let invalid = |reason: &str| ChangeError::InvalidFeed {
            provider: feed.provider,
            resource: feed.resource.clone(),
            reason: reason.to_owned(),
        };
        let resource = feed.resource.trim();
        if resource.is_empty() {
            return Err(invalid("empty resource"));
        }
        match feed.provider {
            FeedProvider::Graph => {
                let path = GraphPath::parse(resource)
                    .filter(|p| !p.delta)
                    .ok_or_else(|| invalid("not a Graph mail folder, messages or events path"))?;
                Ok(match path.scope {
                    GraphScope::Messages { folder } => Self::GraphMessages {
                        user: path.user,
                        folder: folder.unwrap_or_else(|| "inbox".to_owned()),
                    },
                    GraphScope::Events | GraphScope::CalendarView => {
                        Self::GraphEvents { user: path.user }
                    }
                })
            }
            FeedProvider::GoogleCalendar => Ok(Self::CalendarEvents {
                calendar_id: resource.to_owned(),
            }),
            FeedProvider::Gmail => Ok(Self::GmailHistory {
                email: resource.to_owned(),
            }),
        }
    }

    /// Whose feed this is.
    pub(crate) fn provider(&self) -> FeedProvider {
        match self {
            Self::GraphMessages { .. } | Self::GraphEvents { .. } => FeedProvider::Graph,
            Self::CalendarEvents { .. } => FeedProvider::GoogleCalendar,
            Self::GmailHistory { .. } => FeedProvider::Gmail,
        }
    }

    /// The canonical resource string: what the journal and fault rules see.
    pub(crate) fn resource(&self) -> String {
        match self {
            Self::GraphMessages { user, folder } => {
                format!("{}/mailFolders('{folder}')/messages", user_prefix(user))
            }
            Self::GraphEvents { user } => format!("{}/events", user_prefix(user)),
            Self::CalendarEvents { calendar_id } => calendar_id.clone(),
            Self::GmailHistory { email } => email.clone(),
        }
    }

    /// Whether a Graph subscription on `resource` is told about this feed's
    /// changes: the folder itself or all of the user's messages, the user's
    /// events.
    pub(crate) fn covers_subscription(&self, resource: &str) -> bool {
        let Some(path) = GraphPath::parse(resource).filter(|p| !p.delta) else {
            return false;
        };
        match (self, &path.scope) {
            (Self::GraphMessages { user, folder }, GraphScope::Messages { folder: watched }) => {
                *user == path.user && watched.as_ref().is_none_or(|w| w == folder)
            }
            (Self::GraphEvents { user }, GraphScope::Events) => *user == path.user,
            _ => false,
        }
    }
}

/// `users/{user}` or `me`.
fn user_prefix(user: &str) -> String {
    if user == "me" {
        "me".to_owned()
    } else {
        format!("users/{user}")
    }
}

/// What a Graph path names, as far as change feeds go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphPath {
    /// Lower-cased user id or UPN, or `me`.
    pub(crate) user: String,
    /// Which collection.
    pub(crate) scope: GraphScope,
    /// The path ends in the delta function (`/delta`, `/microsoft.graph.delta()`).
    pub(crate) delta: bool,
}

/// The collection a Graph path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GraphScope {
    /// Messages of one folder, or of the whole mailbox (`None`).
    Messages {
        /// Normalised folder: well-known names lower-cased, ids as given.
        folder: Option<String>,
    },
    /// `events` or `calendar/events`.
    Events,
    /// `calendarView` or `calendar/calendarView`.
    CalendarView,
}

/// Well-known mail folder names, which Graph takes in any case.
const WELL_KNOWN_FOLDERS: &[&str] = &[
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

impl GraphPath {
    /// Reads a resource path or a request path after `/v1.0/` (query ignored).
    /// Path segments are matched case-insensitively, as Graph does, and keys
    /// may be written `users/{id}` or `users('{id}')`.
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let path = path.trim().trim_start_matches('/').split('?').next()?;
        let mut segments: Vec<(&str, Option<&str>)> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(split_key)
            .collect();
        let delta = segments.last().is_some_and(|(name, key)| {
            key.is_none()
                && (name.eq_ignore_ascii_case("delta")
                    || name.eq_ignore_ascii_case("microsoft.graph.delta"))
        });
        if delta {
            segments.pop();
        }
        let is = |segment: &(&str, Option<&str>), name: &str| segment.0.eq_ignore_ascii_case(name);
        let (user, rest) = match segments.as_slice() {
            [me, rest @ ..] if is(me, "me") && me.1.is_none() => ("me".to_owned(), rest),
            [users, rest @ ..] if is(users, "users") && users.1.is_some() => {
                (users.1.unwrap_or_default().to_lowercase(), rest)
            }
            [users, (id, None), rest @ ..] if is(users, "users") && users.1.is_none() => {
                (id.to_lowercase(), rest)
            }
            _ => return None,
        };
        if user.is_empty() {
            return None;
        }
        let scope = match rest {
            [folders, messages] if is(folders, "mailfolders") && is(messages, "messages") => {
                GraphScope::Messages {
                    folder: Some(normalise_folder(folders.1?)),
                }
            }
            [folders, (folder, None), messages]
                if is(folders, "mailfolders")
                    && folders.1.is_none()
                    && is(messages, "messages") =>
            {
                GraphScope::Messages {
                    folder: Some(normalise_folder(folder)),
                }
            }
            [messages] if is(messages, "messages") => GraphScope::Messages { folder: None },
            [events] if is(events, "events") => GraphScope::Events,
            [calendar, events] if is(calendar, "calendar") && is(events, "events") => {
                GraphScope::Events
            }
            [view] if is(view, "calendarview") => GraphScope::CalendarView,
            [calendar, view] if is(calendar, "calendar") && is(view, "calendarview") => {
                GraphScope::CalendarView
            }
            _ => return None,
        };
        Some(Self { user, scope, delta })
    }
}

/// `mailFolders('Inbox')` → (`mailFolders`, `Inbox`); `delta()` → (`delta`,
/// none); `messages` → (`messages`, none).
fn split_key(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once('(') {
        Some((name, rest)) => {
            let key = rest
                .trim_end_matches(')')
                .trim_matches('\'')
                .trim_matches('"');
            (name, Some(key).filter(|k| !k.is_empty()))
        }
        None => (segment, None),
    }
}

fn normalise_folder(folder: &str) -> String {
    let lowered = folder.to_ascii_lowercase();
    if WELL_KNOWN_FOLDERS.contains(&lowered.as_str()) {
        lowered
    } else {
        folder.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_folder_are_one_feed() {
        let a = FeedKey::parse(&FeedRef::graph("users/U-1/mailFolders('Inbox')/messages")).unwrap();
        let b = FeedKey::parse(&FeedRef::graph("/users/u-1/mailfolders/inbox/messages")).unwrap();
        let c = FeedKey::parse(&FeedRef::graph("users('u-1')/messages")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.resource(), "users/u-1/mailFolders('inbox')/messages");
        // Folder ids keep their case.
        let id = FeedKey::parse(&FeedRef::graph("me/mailFolders/AQMkADNk/messages")).unwrap();
        assert_eq!(id.resource(), "me/mailFolders('AQMkADNk')/messages");
        let events = FeedKey::parse(&FeedRef::graph("users/u-1/calendar/events")).unwrap();
        assert_eq!(events.resource(), "users/u-1/events");
        assert!(FeedKey::parse(&FeedRef::graph("users/u-1/contacts")).is_err());
        assert!(FeedKey::parse(&FeedRef::graph("users/u-1/messages/delta")).is_err());
    }

    #[test]
    fn delta_paths_and_subscriptions_resolve_to_their_feed() {
        let path =
            GraphPath::parse("users/u-1/mailFolders('Inbox')/messages/microsoft.graph.delta()")
                .unwrap();
        assert!(path.delta);
        assert_eq!(
            path.scope,
            GraphScope::Messages {
                folder: Some("inbox".into())
            }
        );
        let view = GraphPath::parse("me/calendarView/delta").unwrap();
        assert_eq!(
            (view.user.as_str(), view.scope),
            ("me", GraphScope::CalendarView)
        );

        let inbox =
            FeedKey::parse(&FeedRef::graph("users/u-1/mailFolders/inbox/messages")).unwrap();
        assert!(inbox.covers_subscription("users/U-1/messages"));
        assert!(inbox.covers_subscription("users/u-1/mailFolders('Inbox')/messages"));
        assert!(!inbox.covers_subscription("users/u-1/mailFolders('SentItems')/messages"));
        assert!(!inbox.covers_subscription("users/u-2/messages"));
        assert!(!inbox.covers_subscription("users/u-1/events"));
        let calendar = FeedKey::parse(&FeedRef::graph("users/u-1/events")).unwrap();
        assert!(calendar.covers_subscription("users/u-1/calendar/events"));
    }
}
