//! Graph's side of the request limits: what a `/subscriptions` request is
//! charged (tenant, app, the mailbox of an Outlook resource, write or read) and
//! how Graph words a refusal.
//!
//! Owns the mailbox reading of a resource path and the refusal bodies; the
//! counting is `limits/`. Wordings: a mailbox over its concurrency is answered
//! `429 ApplicationThrottled` "Application is over its MailboxConcurrency
//! limit." (as Outlook answers, seen in many client reports); the subscription
//! service's throttle is `429 TooManyRequests` with the message shape of its
//! own throttle answers ("Too many requests … under
//! category:throttle.aad.ags.subscriptionservice… Please try again later.").

use crate::graph::model::{Caller, GraphError};
use crate::journal::Operation;
use crate::limits::{Api, Charge, LimitKind, Throttle};

/// Entity sets under a user or group that Outlook serves (mail, calendar,
/// contacts, group conversations): a request on one of them is a request on
/// that mailbox.
const OUTLOOK_SEGMENTS: &[&str] = &[
    "messages",
    "mailfolders",
    "events",
    "calendar",
    "calendars",
    "calendarview",
    "calendargroups",
    "contacts",
    "contactfolders",
    "conversations",
    "threads",
    "mailboxsettings",
    "inferenceclassification",
    "outlook",
];

/// What a Graph request is charged. On `/subscriptions`: the subscription
/// service's rates for the token's tenant and app, and a mailbox slot when the
/// subscription's resource is an Outlook resource; POST (create, reauthorize),
/// PATCH and DELETE are writes. On any other path (an Outlook resource served
/// directly, such as a delta query): a mailbox slot for the mailbox the path
/// names.
pub(crate) fn charge(
    caller: &Caller,
    operation: Operation,
    path: &str,
    resource: Option<&str>,
) -> Charge {
    let under_v1 = path.strip_prefix("/v1.0/").unwrap_or(path);
    let subscriptions = under_v1
        .split('/')
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case("subscriptions"));
    let (api, user) = if subscriptions {
        (Api::GraphSubscriptions, resource.and_then(outlook_mailbox))
    } else {
        (Api::GraphOutlook, outlook_mailbox(under_v1))
    };
    Charge {
        api,
        tenant: caller.tenant.clone(),
        app: caller.application_id.clone(),
        user,
        write: matches!(
            operation,
            Operation::Create | Operation::Renew | Operation::Delete | Operation::Reauthorize
        ),
        units: 1,
    }
}

/// The mailbox an Outlook resource path names: the user id or UPN of
/// `users/{id}/…` or `users('{id}')/…` (lowercased: Graph matches them
/// case-insensitively), `me` for `me/…` (the signed-in user of a delegated
/// token; the simulator knows one per app and tenant), the group id of
/// `groups/{id}/…`. `None` for anything that is not an Outlook resource.
pub(crate) fn outlook_mailbox(resource: &str) -> Option<String> {
    let path = resource
        .trim()
        .trim_start_matches('/')
        .split('?')
        .next()
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let first = segments.first()?;
    let lowered = first.to_lowercase();
    let (owner, rest) = if lowered == "me" {
        ("me".to_owned(), &segments[1..])
    } else if lowered == "users" || lowered == "groups" {
        (segments.get(1)?.to_lowercase(), segments.get(2..)?)
    } else if let Some(key) = lowered
        .strip_prefix("users(")
        .or_else(|| lowered.strip_prefix("groups("))
    {
        (
            key.trim_end_matches(')').trim_matches('\'').to_owned(),
            &segments[1..],
        )
    } else {
        return None;
    };
    let outlook = rest.first().is_some_and(|segment| {
        let set = segment.split('(').next().unwrap_or(segment).to_lowercase();
        OUTLOOK_SEGMENTS.contains(&set.as_str())
    });
    (outlook && !owner.is_empty()).then_some(owner)
}

/// Graph's answer to a request a limit refused.
pub(crate) fn throttle_error(throttle: Throttle) -> GraphError {
    let message = match throttle.limit {
        LimitKind::MailboxConcurrency => {
            return GraphError {
                status: 429,
                code: "ApplicationThrottled".to_owned(),
                message: "Application is over its MailboxConcurrency limit.".to_owned(),
                retry_after_seconds: throttle.retry_after_seconds,
            };
        }
        LimitKind::SubscriptionWritesPerApp | LimitKind::SubscriptionRequestsPerApp => {
            "Too many requests from this application in this tenant under category:throttle.aad.ags.subscriptionservice. Please try again later."
        }
        LimitKind::SubscriptionWritesPerTenant | LimitKind::SubscriptionRequestsPerTenant => {
            "Too many requests from this tenant under category:throttle.aad.ags.subscriptionservice. Please try again later."
        }
        _ => "Too many requests. Retry after the number of seconds in the Retry-After header.",
    };
    GraphError {
        status: 429,
        code: "TooManyRequests".to_owned(),
        message: message.to_owned(),
        retry_after_seconds: throttle.retry_after_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_of_outlook_resources_only() {
        let cases = [
            ("users/U-1/mailFolders('Inbox')/messages", Some("u-1")),
            ("/users/alex@contoso.com/events", Some("alex@contoso.com")),
            (
                "users('Alex@Contoso.com')/messages",
                Some("alex@contoso.com"),
            ),
            ("me/mailFolders('Inbox')/messages", Some("me")),
            ("groups/g1/conversations", Some("g1")),
            ("users/u1/drive/root", None),
            ("users", None),
            ("users/u1", None),
            ("communications/presences?$filter=id in ('a')", None),
            ("security/alerts", None),
        ];
        for (resource, mailbox) in cases {
            assert_eq!(outlook_mailbox(resource).as_deref(), mailbox, "{resource}");
        }
    }

    #[test]
    fn subscription_calls_and_outlook_calls_are_charged_apart() {
        let caller = Caller {
            tenant: "t".into(),
            application_id: "app".into(),
            creator_id: "sp".into(),
            app_only: true,
        };
        let create = charge(
            &caller,
            Operation::Create,
            "/v1.0/subscriptions",
            Some("users/U1/messages"),
        );
        assert_eq!(create.api, Api::GraphSubscriptions);
        assert_eq!(create.user.as_deref(), Some("u1"));
        assert!(create.write);
        let delta = charge(
            &caller,
            Operation::Other,
            "/v1.0/users/U1/mailFolders/inbox/messages/delta",
            None,
        );
        assert_eq!(delta.api, Api::GraphOutlook);
        assert_eq!(delta.user.as_deref(), Some("u1"));
    }
}
