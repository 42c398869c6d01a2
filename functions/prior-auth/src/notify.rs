//! Notifications: which subscriptions hear about a case change (enqueued in the change's own transaction), and
//! delivering one job (used by the `worker` function and by the local runner's in-process worker).

use exchange_core::domain::notifications::{enqueue, NotificationJob};
use exchange_core::domain::prior_auth::PaCase;
use exchange_core::domain::subscriptions::SubscriptionRecord;
use exchange_core::ports::{Delivery, Key, PortError, WriteOp};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::pas::response::{response_bundle, Flavor};
use crate::PriorAuth;

/// The PAS subscription topic.
pub const TOPIC: &str = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic";

/// Whether `sub` hears about `case`: the submitter's own subscriptions (not switched off) whose organisation
/// identifier is the case's requester.
fn wants(sub: &SubscriptionRecord, case: &PaCase) -> bool {
    sub.owner == case.submitter && sub.status != "off" && sub.org_identifier == case.requester.id
}

/// The outbox writes for a change to `case`: one job per interested subscription.
pub async fn jobs_for(pa: &PriorAuth, case: &PaCase, now: OffsetDateTime) -> Result<Vec<WriteOp>, PortError> {
    let subs = pa.subscriptions.of_owner(&case.submitter).await?;
    let matching: Vec<&SubscriptionRecord> = subs.iter().filter(|s| wants(s, case)).collect();
    matching.into_iter().map(|s| enqueue(exchange_core::auth::random_id(), &case.id, &s.id, now)).collect()
}

/// The notification Bundle (R4 backport `history` Bundle): SubscriptionStatus Parameters, then the full PAS
/// response Bundle (`full-resource`).
pub fn notification_bundle(sub: &SubscriptionRecord, event_number: u64, case: &PaCase, now: OffsetDateTime) -> Value {
    let response = response_bundle(case, Flavor::Submit, now);
    let focus = format!("urn:uuid:{}", exchange_core::auth::random_id());
    let at = exchange_core::domain::prior_auth::rfc3339(now);
    json!({
        "resourceType": "Bundle",
        "id": exchange_core::auth::random_id(),
        "meta": { "profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"] },
        "type": "history",
        "timestamp": at,
        "entry": [
            {
                "fullUrl": format!("urn:uuid:{}", exchange_core::auth::random_id()),
                "resource": {
                    "resourceType": "Parameters",
                    "meta": { "profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"] },
                    "parameter": [
                        { "name": "subscription", "valueReference": { "reference": format!("Subscription/{}", sub.id) } },
                        { "name": "topic", "valueCanonical": TOPIC },
                        { "name": "status", "valueCode": "active" },
                        { "name": "type", "valueCode": "event-notification" },
                        { "name": "events-since-subscription-start", "valueString": event_number.to_string() },
                        { "name": "notification-event", "part": [
                            { "name": "event-number", "valueString": event_number.to_string() },
                            { "name": "timestamp", "valueInstant": at },
                            { "name": "focus", "valueReference": { "reference": focus } }
                        ] }
                    ]
                },
                "request": { "method": "GET", "url": format!("Subscription/{}/$status", sub.id) },
                "response": { "status": "200" }
            },
            {
                "fullUrl": focus,
                "resource": response,
                "request": { "method": "POST", "url": "Bundle" },
                "response": { "status": "200" }
            }
        ]
    })
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Delivered (2xx).
    Delivered,
    /// Failed; retried later.
    Retrying,
    /// Failed too often: a dead letter now.
    DeadLettered,
    /// The case or subscription is gone: dropped.
    Dropped,
    /// Another worker pass is delivering it.
    Skipped,
}

/// Delivers one job. Never panics; store failures are returned (the job stays due and is tried again).
pub async fn deliver(pa: &PriorAuth, job: &NotificationJob, version: u64) -> Result<JobOutcome, PortError> {
    let now = pa.core.clock().now();
    // Claimed for twice the delivery timeout: if this pass dies mid-delivery, the job comes due again after that.
    let hold = time::Duration::try_from(exchange_core::adapters::notifier::DELIVERY_TIMEOUT * 2).unwrap_or_default();
    let Some(version) = pa.outbox.claim(job, version, now + hold).await? else {
        return Ok(JobOutcome::Skipped);
    };
    let (sub, sub_version) = match pa.subscriptions.get(&job.subscription_id).await? {
        Some(s) if s.0.status != "off" => s,
        _ => {
            pa.outbox.complete(job, version).await?;
            return Ok(JobOutcome::Dropped);
        }
    };
    let Some((case, _)) = pa.cases.get(&job.case_id).await? else {
        pa.outbox.complete(job, version).await?;
        return Ok(JobOutcome::Dropped);
    };
    // Event numbers come from a per-subscription counter, so concurrent deliveries never send the same number; a
    // job takes its number at its first attempt and keeps it (it is saved with the job when an attempt fails).
    let event_number = match job.event_number {
        Some(number) => number,
        None => pa.core.store().increment(&Key::new(format!("SUBSCRIPTION#{}", sub.id), "EVENT-NUMBERS")).await?,
    };
    let job = &NotificationJob { event_number: Some(event_number), ..job.clone() };
    let body = serde_json::to_vec(&notification_bundle(&sub, event_number, &case, now)).unwrap_or_default();
    let result = pa.notifier.post(&sub.endpoint, &sub.header_pairs(), body).await;
    let error = match result {
        Ok(Delivery::Delivered(_)) => {
            pa.outbox.complete(job, version).await?;
            let mut updated = sub.clone();
            updated.events_delivered = updated.events_delivered.max(event_number);
            updated.status = "active".into();
            // A status report only: losing a race with another delivery's save changes nothing that matters.
            let _ = pa.subscriptions.save(&updated, sub_version).await;
            tracing::info!(job = %job.id, case = %case.id, subscription = %sub.id, "notification delivered");
            return Ok(JobOutcome::Delivered);
        }
        Ok(Delivery::Refused(status)) => format!("HTTP {status}"),
        Err(PortError::Unavailable(_)) => "unreachable".to_owned(),
        Err(e) => format!("{e}"),
    };
    let dead = pa.outbox.failed(job, version, error.clone(), now, pa.settings.retry_base).await?;
    tracing::warn!(job = %job.id, subscription = %sub.id, attempts = job.attempts + 1, error = %error, dead, "notification failed");
    if dead {
        let mut updated = sub;
        updated.status = "error".into();
        let _ = pa.subscriptions.save(&updated, sub_version).await;
        return Ok(JobOutcome::DeadLettered);
    }
    Ok(JobOutcome::Retrying)
}
