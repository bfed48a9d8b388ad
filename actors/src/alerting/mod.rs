//! `AlertingActor`: tells a human, once, when a provider needs them. It reads
//! every [`RenewalResult`] from the renewal stream and hears of silences from the
//! notification actor, and publishes alert events:
//!
//! - `firing` when a provider enters `error` or `needs_reauth` (a result whose
//!   `previous_status` was neither and whose `status` is one), with the reason and
//!   a remediation list;
//! - `resolved` when it leaves them, or when a webhook ends a silence;
//! - `escalated` once it has stayed unhealthy longer than `escalate_after`;
//! - `silent` when the notification actor marks it silent.
//!
//! Every alert has a stable id derived from its cause (the attempt, or when the
//! condition began), published as the message id: a redelivered renewal result, a
//! retried publish or a second instance produces the same id, which the alert
//! stream stores once. Core-NATS subscribers see every publish, so the actor also
//! remembers the ids it published lately and does not send one again. Firing and resolving need no memory — the transition is in
//! the result — so the per-provider state kept here (unhealthy since when,
//! escalated or not, the escalation timer) only drives escalation, and is rebuilt
//! from the store at start. Before escalating, the store is asked whether the
//! provider is still unhealthy, so a recovery handled elsewhere is respected.
//!
//! No I/O of its own: the alert sink, the store and the clock are ports.
//!
//! Split in three: [`alert`] owns the alert types and how their ids and contents
//! are derived from a cause (pure); [`remediation`] owns the text that tells an
//! operator what to do (pure); [`actor`] owns the actor, its ports and its state.
//! The pure parts must not reach the actor, its ports or the clock.

mod actor;
mod alert;
mod remediation;

pub use actor::{AlertingActor, AlertingConfig, AlertingPorts, MISSED_ESCALATION_GRACE};
pub use alert::{
    Alert, AlertCondition, AlertEvent, PushBrokenFound, Unhealthy, alert_for, escalation,
    push_broken_alert, silence_alert,
};
pub use remediation::remediation;
