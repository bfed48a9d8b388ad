//! The story the demo tells, as pure state: what has been seen on the bus (and
//! in the replies and the simulator), which steps of the story that tells, and
//! what the demo must do next to move it on (lose a subscription, send a new
//! message, re-authorize, force a renewal, watch for a stopped channel). No I/O
//! and no printing: `mod.rs` feeds it and carries its actions out.

use super::cast::Role;
use std::collections::{BTreeSet, HashMap, HashSet};
use subkeeper_actors::alerting::{Alert, AlertCondition, AlertEvent};
use subkeeper_actors::domain::{
    DomainEvent, DomainEventType, HealthState, ProviderId, RenewalAction, RenewalResult,
    WebhookEnvelope,
};

/// One step of the story, in the order it is usually told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Every provider registered.
    Registered,
    /// A Graph subscription renewed on schedule.
    Renewed,
    /// A subscription Graph lost (404) recreated.
    Recreated,
    /// Three strikes: a provider in `error`.
    Error,
    /// Its alert firing.
    AlertFiring,
    /// Its alert resolved.
    AlertResolved,
    /// invalid_grant: a provider in `needs_reauth`.
    NeedsReauth,
    /// It registered after the operator re-authorized it.
    Reauthorized,
    /// A Graph change notification accepted onto the bus.
    WebhookAccepted,
    /// Its domain event (`mail_received` / `mail_changed`).
    MailEvent,
    /// A forced renewal answered on the bus's retry subject.
    ForcedRenewal,
    /// A Calendar channel replaced by a new one.
    ChannelRotated,
    /// The old channel stopped.
    OldChannelStopped,
    /// A Gmail watch renewed.
    GmailRenewed,
}

impl Step {
    /// Every step.
    pub const ALL: [Self; 14] = [
        Self::Registered,
        Self::Renewed,
        Self::Recreated,
        Self::Error,
        Self::AlertFiring,
        Self::AlertResolved,
        Self::NeedsReauth,
        Self::Reauthorized,
        Self::WebhookAccepted,
        Self::MailEvent,
        Self::ForcedRenewal,
        Self::ChannelRotated,
        Self::OldChannelStopped,
        Self::GmailRenewed,
    ];

    /// What it is, for "still waiting for …".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Registered => "every provider registered",
            Self::Renewed => "a renewal on schedule",
            Self::Recreated => "404 → recreated",
            Self::Error => "three strikes → error",
            Self::AlertFiring => "the error alert firing",
            Self::AlertResolved => "the error alert resolved",
            Self::NeedsReauth => "invalid_grant → needs_reauth",
            Self::Reauthorized => "re-authorized",
            Self::WebhookAccepted => "a Graph change notification on the bus",
            Self::MailEvent => "its mail_received event",
            Self::ForcedRenewal => "the forced renewal's reply on control.renew",
            Self::ChannelRotated => "a Calendar channel rotated",
            Self::OldChannelStopped => "the old channel stopped",
            Self::GmailRenewed => "a Gmail watch renewed",
        }
    }
}

/// Something the demo must do to move the story on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Make the simulated Graph answer the next renewal of `subscription_id` 404.
    LoseSubscription {
        /// The provider.
        provider: ProviderId,
        /// Its live subscription.
        subscription_id: String,
    },
    /// A new message in the provider's mailbox, announced by Graph.
    NewMail {
        /// The provider.
        provider: ProviderId,
    },
    /// Replace the provider's credentials through the admin API.
    Reauthorize {
        /// The provider.
        provider: ProviderId,
    },
    /// Send the bus's retry message for the provider.
    ForceRenewal {
        /// The provider.
        provider: ProviderId,
    },
    /// Tell when the simulated Google has stopped `channel_id`.
    AwaitChannelStop {
        /// The provider.
        provider: ProviderId,
        /// Its rotated-out channel.
        channel_id: String,
    },
}

/// Something seen.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A renewal result on `{prefix}.renewal.…`.
    Renewal(&'a RenewalResult),
    /// An alert event on `{prefix}.alert.…`.
    Alert(&'a Alert),
    /// An accepted notification on `{prefix}.webhook.…`.
    Webhook(&'a WebhookEnvelope),
    /// A domain event on `{prefix}.event.…`.
    Event(&'a DomainEvent),
    /// The reply to a forced renewal.
    Reply(&'a RenewalResult),
    /// The simulated Google stopped this channel.
    ChannelStopped(&'a str),
}

/// The story so far.
#[derive(Debug)]
pub struct Story {
    roles: HashMap<ProviderId, Role>,
    told: BTreeSet<Step>,
    /// Providers that have registered at least once.
    registered: HashSet<ProviderId>,
    /// Each provider's live subscription id, as last reported.
    subscriptions: HashMap<ProviderId, String>,
    /// The `Strikes` provider's error alert has fired.
    firing: bool,
    /// The forced renewal was asked for.
    forced: bool,
    /// The subscription to lose was chosen.
    lost: bool,
    /// The rotated-out channel waited for.
    rotated_out: Option<String>,
}

impl Story {
    /// A story played by `roles`.
    pub fn new(roles: HashMap<ProviderId, Role>) -> Self {
        Self {
            roles,
            told: BTreeSet::new(),
            registered: HashSet::new(),
            subscriptions: HashMap::new(),
            firing: false,
            forced: false,
            lost: false,
            rotated_out: None,
        }
    }

    /// Every step has been seen.
    pub fn is_told(&self) -> bool {
        self.told.len() == Step::ALL.len()
    }

    /// The steps not seen yet, in story order.
    pub fn untold(&self) -> Vec<Step> {
        Step::ALL
            .into_iter()
            .filter(|s| !self.told.contains(s))
            .collect()
    }

    /// The subscription the provider had before the latest result (for "replaces
    /// …"); call before [`Story::see`] with that result.
    pub fn subscription(&self, provider: ProviderId) -> Option<&str> {
        self.subscriptions.get(&provider).map(String::as_str)
    }

    fn provider_of(&self, role: Role) -> Option<ProviderId> {
        self.roles
            .iter()
            .find_map(|(id, r)| (*r == role).then_some(*id))
    }

    /// Takes in what was seen; what to do next.
    pub fn see(&mut self, seen: Seen<'_>) -> Vec<Act> {
        let mut acts = Vec::new();
        match seen {
            Seen::Renewal(r) => self.renewal(r, &mut acts),
            Seen::Alert(a) => {
                if self.roles.get(&a.provider_id) == Some(&Role::Strikes)
                    && a.condition == AlertCondition::Error
                {
                    match a.event {
                        AlertEvent::Firing => {
                            self.firing = true;
                            self.told.insert(Step::AlertFiring);
                        }
                        AlertEvent::Resolved if self.firing => {
                            self.told.insert(Step::AlertResolved);
                        }
                        _ => {}
                    }
                }
            }
            Seen::Webhook(w) => {
                if self.roles.get(&w.provider_id) == Some(&Role::Lost) {
                    self.told.insert(Step::WebhookAccepted);
                }
            }
            Seen::Event(e) => {
                if self.roles.get(&e.provider_id) == Some(&Role::Lost)
                    && matches!(
                        e.event_type,
                        DomainEventType::MailReceived | DomainEventType::MailChanged
                    )
                {
                    self.told.insert(Step::MailEvent);
                }
            }
            Seen::Reply(r) => {
                if self.roles.get(&r.provider_id) == Some(&Role::Forced) && r.success {
                    self.told.insert(Step::ForcedRenewal);
                }
            }
            Seen::ChannelStopped(id) => {
                if self.rotated_out.as_deref() == Some(id) {
                    self.told.insert(Step::OldChannelStopped);
                }
            }
        }
        acts.extend(self.force_when_ready());
        acts
    }

    fn renewal(&mut self, r: &RenewalResult, acts: &mut Vec<Act>) {
        let Some(&role) = self.roles.get(&r.provider_id) else {
            return;
        };
        let before = match &r.subscription_id {
            Some(id) => self.subscriptions.insert(r.provider_id, id.clone()),
            None => self.subscriptions.get(&r.provider_id).cloned(),
        };
        if r.success && r.action == RenewalAction::Registered {
            self.registered.insert(r.provider_id);
            if self.registered.len() == self.roles.len() {
                self.told.insert(Step::Registered);
            }
            if role == Role::Reauth && r.previous_status == HealthState::NeedsReauth {
                self.told.insert(Step::Reauthorized);
            }
            if role == Role::Lost && !self.lost {
                self.lost = true;
                acts.push(Act::NewMail {
                    provider: r.provider_id,
                });
                if let Some(subscription_id) = r.subscription_id.clone() {
                    acts.push(Act::LoseSubscription {
                        provider: r.provider_id,
                        subscription_id,
                    });
                }
            }
        }
        if r.success && r.action == RenewalAction::Renewed {
            let scheduled = r.scheduled_at.is_some();
            match role {
                Role::Rotation => {
                    if let (Some(old), Some(new)) = (before, &r.subscription_id)
                        && old != *new
                    {
                        self.told.insert(Step::ChannelRotated);
                        self.rotated_out = Some(old.clone());
                        acts.push(Act::AwaitChannelStop {
                            provider: r.provider_id,
                            channel_id: old,
                        });
                    }
                }
                Role::Gmail => {
                    self.told.insert(Step::GmailRenewed);
                }
                _ if scheduled && r.kind.is_graph() => {
                    self.told.insert(Step::Renewed);
                }
                _ => {}
            }
        }
        if r.success && r.action == RenewalAction::Recreated && role == Role::Lost {
            self.told.insert(Step::Recreated);
        }
        if role == Role::Strikes && r.status == HealthState::Error {
            self.told.insert(Step::Error);
        }
        if role == Role::Reauth
            && r.status == HealthState::NeedsReauth
            && r.previous_status != HealthState::NeedsReauth
        {
            self.told.insert(Step::NeedsReauth);
            acts.push(Act::Reauthorize {
                provider: r.provider_id,
            });
        }
    }

    /// The forced renewal goes out once the change notification has reached the
    /// bus as an event and its provider has a subscription to renew.
    fn force_when_ready(&mut self) -> Option<Act> {
        let provider = self.provider_of(Role::Forced)?;
        if self.forced || !self.told.contains(&Step::MailEvent) {
            return None;
        }
        if !self.registered.contains(&provider) {
            return None;
        }
        self.forced = true;
        Some(Act::ForceRenewal { provider })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use subkeeper_actors::domain::{AttemptKind, ErrorClass, ProviderKind, TenantId};

    fn result(
        provider: ProviderId,
        kind: ProviderKind,
        attempt: AttemptKind,
        action: RenewalAction,
        sub: Option<&str>,
        (previous, status): (HealthState, HealthState),
    ) -> RenewalResult {
        let success = action != RenewalAction::Failed;
        RenewalResult {
            provider_id: provider,
            tenant: TenantId::parse("t").unwrap(),
            kind,
            success,
            attempt,
            action,
            new_expiration: success.then(Utc::now),
            subscription_id: sub.map(str::to_owned),
            history_id: None,
            error_class: (!success).then_some(ErrorClass::Transient),
            error_message: None,
            http_status: None,
            consecutive_failures: 0,
            status,
            previous_status: previous,
            attempted_at: Utc::now(),
            scheduled_at: (attempt == AttemptKind::Renew).then(Utc::now),
            duration_ms: 1,
        }
    }

    const OK: (HealthState, HealthState) = (HealthState::Healthy, HealthState::Healthy);

    #[test]
    fn the_story_is_told_only_once_every_step_is_seen_and_asks_for_each_act() {
        let ids: Vec<ProviderId> = (0..6).map(|_| ProviderId::new()).collect();
        let roles = [
            Role::Lost,
            Role::Strikes,
            Role::Reauth,
            Role::Forced,
            Role::Rotation,
            Role::Gmail,
        ];
        let mut story = Story::new(ids.iter().copied().zip(roles).collect());
        let [alice, bob, carol, dan, erin, frank] = ids[..] else {
            unreachable!()
        };
        let (reg, ren) = (AttemptKind::Register, AttemptKind::Renew);
        use ProviderKind::*;
        use RenewalAction::*;

        let acts = story.see(Seen::Renewal(&result(
            alice,
            GraphMail,
            reg,
            Registered,
            Some("a1"),
            OK,
        )));
        assert_eq!(
            acts,
            vec![
                Act::NewMail { provider: alice },
                Act::LoseSubscription {
                    provider: alice,
                    subscription_id: "a1".into()
                }
            ]
        );
        let acts = story.see(Seen::Renewal(&result(
            carol,
            GraphMail,
            reg,
            Failed,
            None,
            (HealthState::Healthy, HealthState::NeedsReauth),
        )));
        assert_eq!(acts, vec![Act::Reauthorize { provider: carol }]);
        for (id, kind, sub) in [
            (bob, GraphCalendar, "b1"),
            (carol, GraphMail, "c1"),
            (dan, GraphCalendar, "d1"),
            (erin, GoogleCalendar, "e1"),
            (frank, Gmail, "f@x"),
        ] {
            let before = if id == carol {
                HealthState::NeedsReauth
            } else {
                HealthState::Healthy
            };
            story.see(Seen::Renewal(&result(
                id,
                kind,
                reg,
                Registered,
                Some(sub),
                (before, HealthState::Healthy),
            )));
        }
        assert!(story.untold().contains(&Step::Error));
        story.see(Seen::Renewal(&result(
            bob,
            GraphCalendar,
            reg,
            Failed,
            None,
            (HealthState::Failing, HealthState::Error),
        )));

        let envelope = WebhookEnvelope {
            tenant: TenantId::parse("t").unwrap(),
            provider_id: alice,
            kind: GraphMail,
            subscription_id: "a1".into(),
            received_at: Utc::now(),
            notification: serde_json::Value::Null,
        };
        assert!(story.see(Seen::Webhook(&envelope)).is_empty());
        let event = DomainEvent {
            event_type: DomainEventType::MailReceived,
            tenant: TenantId::parse("t").unwrap(),
            provider_id: alice,
            kind: GraphMail,
            reason: None,
            at: Utc::now(),
            resource: None,
            change_type: Some("created".into()),
            history_id: None,
            source: None,
            item_id: None,
            version: None,
            window: None,
        };
        assert_eq!(
            story.see(Seen::Event(&event)),
            vec![Act::ForceRenewal { provider: dan }]
        );
        assert!(
            story.see(Seen::Event(&event)).is_empty(),
            "forced only once"
        );
        story.see(Seen::Reply(&result(
            dan,
            GraphCalendar,
            ren,
            Renewed,
            Some("d1"),
            OK,
        )));
        story.see(Seen::Renewal(&result(
            carol,
            GraphMail,
            ren,
            Renewed,
            Some("c1"),
            OK,
        )));
        story.see(Seen::Renewal(&result(
            alice,
            GraphMail,
            AttemptKind::Recreate,
            Recreated,
            Some("a2"),
            OK,
        )));
        assert_eq!(
            story.see(Seen::Renewal(&result(
                erin,
                GoogleCalendar,
                ren,
                Renewed,
                Some("e2"),
                OK
            ))),
            vec![Act::AwaitChannelStop {
                provider: erin,
                channel_id: "e1".into()
            }]
        );
        story.see(Seen::ChannelStopped("e1"));
        story.see(Seen::Renewal(&result(
            frank,
            Gmail,
            ren,
            Renewed,
            Some("f@x"),
            OK,
        )));
        assert_eq!(story.untold(), vec![Step::AlertFiring, Step::AlertResolved]);
        assert!(!story.is_told());

        let mut alert = Alert {
            id: "x".into(),
            event: AlertEvent::Resolved,
            condition: AlertCondition::Error,
            tenant: TenantId::parse("t").unwrap(),
            provider_id: bob,
            kind: GraphCalendar,
            state: None,
            reason: None,
            remediation: Vec::new(),
            since: None,
            at: Utc::now(),
            consecutive_failures: None,
        };
        story.see(Seen::Alert(&alert));
        assert!(
            story.untold().contains(&Step::AlertResolved),
            "a resolved before any firing tells nothing"
        );
        alert.event = AlertEvent::Firing;
        story.see(Seen::Alert(&alert));
        alert.event = AlertEvent::Resolved;
        story.see(Seen::Alert(&alert));
        assert!(story.is_told(), "{:?}", story.untold());
    }

    #[test]
    fn a_rotation_needs_a_new_channel_and_a_renewal_on_demand_is_not_one_on_schedule() {
        let (dan, erin) = (ProviderId::new(), ProviderId::new());
        let mut story = Story::new([(dan, Role::Forced), (erin, Role::Rotation)].into());
        let register = |id, kind, sub| {
            result(
                id,
                kind,
                AttemptKind::Register,
                RenewalAction::Registered,
                Some(sub),
                OK,
            )
        };
        story.see(Seen::Renewal(&register(
            erin,
            ProviderKind::GoogleCalendar,
            "e1",
        )));
        story.see(Seen::Renewal(&register(
            dan,
            ProviderKind::GraphCalendar,
            "d1",
        )));
        let mut same = result(
            erin,
            ProviderKind::GoogleCalendar,
            AttemptKind::Renew,
            RenewalAction::Renewed,
            Some("e1"),
            OK,
        );
        assert!(story.see(Seen::Renewal(&same)).is_empty());
        same.provider_id = dan;
        same.kind = ProviderKind::GraphCalendar;
        same.scheduled_at = None;
        story.see(Seen::Renewal(&same));
        let untold = story.untold();
        assert!(untold.contains(&Step::ChannelRotated), "{untold:?}");
        assert!(untold.contains(&Step::Renewed), "{untold:?}");
    }
}
