//! The worker Lambda: delivers due prior-auth notifications, flags pended cases near their decision deadline, and
//! sweeps the clean-up ledger (documents of submissions that never committed, expired transfer copies), and seals
//! the audit trail into signed digests (the only sealer: reserved concurrency 1).
//!
//! It is invoked by DynamoDB Streams batches (new `NOTIFY#` outbox records: deliver what is due) and by an
//! EventBridge schedule (deliveries whose retry has come due, the deadline sweep and the clean-up sweep). The records' content is not
//! read: a stream batch only says "there is new work". The state is built once per cold start. A failed pass is
//! returned as a Lambda error, so the stream batch is retried (and, after the configured attempts, recorded on the
//! event source's failure destination).

use std::sync::Arc;

use exchange_core::adapters::notifier::{HttpNotifier, DELIVERY_TIMEOUT};
use exchange_core::domain::cleanup::CleanupLedger;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use prior_auth::worker::{deliver_due, run_once, Pass};
use prior_auth::{PriorAuth, Settings};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    exchange_core::telemetry::init();
    let core = Arc::new(exchange_core::app::App::from_aws_env().await?);
    let notifier = Arc::new(HttpNotifier::new(DELIVERY_TIMEOUT)?);
    let pa = Arc::new(PriorAuth::new(core, notifier, Settings::default()));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let pa = Arc::clone(&pa);
        async move {
            // Stream batches carry `Records`; the schedule's event does not.
            let from_stream = event.payload.get("Records").is_some();
            let pass = if from_stream { deliver_due(&pa).await? } else { run_once(&pa).await? };
            let sealed = seal_audit(&pa.core).await;
            let cleaned = if from_stream {
                0
            } else {
                CleanupLedger::new(pa.core.store().clone())
                    .sweep(pa.core.vault().blobs().as_ref(), pa.core.clock().now())
                    .await?
            };
            tracing::info!(
                delivered = pass.delivered,
                retrying = pass.retrying,
                dead_lettered = pass.dead_lettered,
                flagged = pass.flagged,
                cleaned,
                sealed,
                "worker pass"
            );
            let mut out = summary(&pass, cleaned);
            out["auditSealed"] = json!(sealed);
            Ok::<Value, Error>(out)
        }
    }))
    .await
}

/// Seals the audit records into digests (when this deployment has the digest bucket). Runs on every invocation:
/// stream batches of new audit records wake it within seconds under traffic, and the minute schedule seals the last
/// records of a burst, so a record is sealed within about a minute of its write. A failed pass is logged, not
/// returned: it must not fail (and replay) a batch of notification deliveries, and the next pass takes its records.
async fn seal_audit(core: &exchange_core::app::App) -> usize {
    let Ok(sealer) = core.sealer() else {
        return 0;
    };
    let mut sealed = 0;
    loop {
        match sealer.seal(core.clock().now()).await {
            Ok(pass) => {
                sealed += pass.records;
                if !pass.more {
                    return sealed;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit seal pass failed; the next invocation retries");
                return sealed;
            }
        }
    }
}

/// The invocation's result: what the pass did, in the JSON casing the rest of the API uses.
fn summary(pass: &Pass, cleaned: usize) -> Value {
    json!({
        "cleanedUp": cleaned,
        "delivered": pass.delivered,
        "retrying": pass.retrying,
        "deadLettered": pass.dead_lettered,
        "flagged": pass.flagged,
    })
}
