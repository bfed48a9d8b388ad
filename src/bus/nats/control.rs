//! Forced renewal over NATS request/reply on `{prefix}.control.renew`: a queue
//! group every instance joins, so each request is answered once, at most
//! [`MAX_IN_FLIGHT`] worked on at a time by one instance. What a request means and
//! how it is answered is `bus::control`'s; this module only carries it.

use super::super::control::{
    ControlHandle, MAX_IN_FLIGHT, RenewReply, RenewRequest, ReplyError, answer,
};
use super::{BusError, Topology};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::fleet::FleetHandle;
use tokio::sync::Semaphore;

/// Queue group shared by every instance on the control subject.
const QUEUE_GROUP: &str = "subkeeper";

/// Sends `reply` to `to`; a reply that cannot be sent is logged (the requester times
/// out and may ask again).
async fn respond(client: &async_nats::Client, to: async_nats::Subject, reply: &RenewReply) {
    let body = match serde_json::to_vec(reply) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a control reply");
            return;
        }
    };
    if let Err(e) = client.publish(to, body.into()).await {
        tracing::warn!(error = %e, "cannot send a control reply");
    }
}

/// Subscribes to the control subject and answers requests until stopped.
pub(super) async fn serve(
    client: async_nats::Client,
    topology: &Topology,
    fleet: FleetHandle,
) -> Result<ControlHandle, BusError> {
    let subject = topology.control_renew_subject();
    let failed = |e: &dyn std::fmt::Display| BusError::Subscribe {
        subject: subject.clone(),
        reason: e.to_string(),
    };
    let mut requests = client
        .queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| failed(&e))?;
    // The server has the subscription once it answered a PING sent after it: from
    // here on a request finds a responder.
    client.flush().await.map_err(|e| failed(&e))?;
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let task = actix_rt::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else {
                tracing::warn!(
                    subject = %message.subject,
                    "control message without a reply subject ignored; send it as a request"
                );
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(
                    limit = MAX_IN_FLIGHT,
                    "forced renewal refused: too many in flight"
                );
                let error = ReplyError::new(
                    "unavailable",
                    format!(
                        "{MAX_IN_FLIGHT} forced renewals are already in flight on this instance; retry shortly"
                    ),
                );
                respond(&client, reply_to, &RenewReply::Error { error }).await;
                continue;
            };
            let (client, fleet) = (client.clone(), fleet.clone());
            actix_rt::spawn(async move {
                let reply = answer(&fleet, &message.payload).await;
                respond(&client, reply_to, &reply).await;
                drop(permit);
            });
        }
    });
    tracing::info!(subject = %subject, queue_group = QUEUE_GROUP, "answering forced renewals");
    Ok(ControlHandle::new(Some(task)))
}

/// Sends `request` on the control subject and returns the reply, parsed as JSON.
pub(super) async fn request(
    client: &async_nats::Client,
    topology: &Topology,
    request: &RenewRequest,
    timeout: Duration,
) -> Result<serde_json::Value, BusError> {
    let subject = topology.control_renew_subject();
    let body = serde_json::to_vec(request).map_err(|e| BusError::Request {
        subject: subject.clone(),
        reason: e.to_string(),
    })?;
    let reply = client
        .send_request(
            subject.clone(),
            async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(timeout)),
        )
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                subject: subject.clone(),
            },
            async_nats::RequestErrorKind::TimedOut => BusError::TimedOut {
                subject: subject.clone(),
                seconds: timeout.as_secs(),
            },
            _ => BusError::Request {
                subject: subject.clone(),
                reason: e.to_string(),
            },
        })?;
    serde_json::from_slice(&reply.payload).map_err(|e| BusError::Request {
        subject,
        reason: format!("the reply is not JSON: {e}"),
    })
}
