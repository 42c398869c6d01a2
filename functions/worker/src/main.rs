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
            let sealed = seal_audit(&pa.core, from_stream).await?;
            let cleaned = if from_stream {
                0
            } else {
                CleanupLedger::new(pa.core.store.clone())
                    .sweep(pa.core.vault.blobs().as_ref(), pa.core.clock.now())
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

/// Seals the audit records into digests (when this deployment has the digest bucket). A stream batch that brought
/// records still inside the grace period waits for them and seals again, so a record is sealed within about
/// `SEAL_GRACE` of its write rather than at the next scheduled pass.
async fn seal_audit(core: &exchange_core::app::App, from_stream: bool) -> Result<usize, Error> {
    let Ok(sealer) = core.sealer() else {
        return Ok(0);
    };
    let mut sealed = 0;
    for round in 0..2 {
        loop {
            let pass = sealer.seal(core.clock.now()).await?;
            sealed += pass.records;
            if !pass.more {
                let grace = exchange_core::domain::audit::seal::SEAL_GRACE.as_secs() as i64;
                match pass.oldest_unsealed_secs {
                    Some(age) if from_stream && round == 0 && age <= grace => {
                        let wait = u64::try_from(grace - age + 1).unwrap_or(1);
                        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    }
                    _ => return Ok(sealed),
                }
                break;
            }
        }
    }
    Ok(sealed)
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
