//! The asynchronous work: delivering due notifications and sweeping pended cases near their deadline. In AWS the
//! `worker` function runs [`deliver_due`] on each DynamoDB Streams batch (new outbox records) and [`run_once`]
//! (deliveries, retries come due, and the sweep) on a one-minute schedule; the local runner runs [`run_forever`]
//! in-process.

use std::sync::Arc;
use std::time::Duration;

use exchange_core::ports::PortError;

use crate::notify::{deliver, JobOutcome};
use crate::PriorAuth;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Notifications delivered.
    pub delivered: usize,
    /// Failed, to be retried.
    pub retrying: usize,
    /// Became dead letters.
    pub dead_lettered: usize,
    /// Cases newly flagged as close to their deadline.
    pub flagged: usize,
}

/// Jobs handled per pass.
const BATCH: usize = 25;

/// Delivers every due notification (concurrently, up to [`BATCH`]) and sweeps deadlines: the scheduled pass.
pub async fn run_once(pa: &PriorAuth) -> Result<Pass, PortError> {
    let mut pass = deliver_due(pa).await?;
    pass.flagged = sweep_deadlines(pa).await?;
    Ok(pass)
}

/// Delivers every due notification (concurrently, up to [`BATCH`]): the pass a new outbox record triggers.
pub async fn deliver_due(pa: &PriorAuth) -> Result<Pass, PortError> {
    let mut pass = Pass::default();
    let due = pa.outbox.due(pa.core.clock().now(), BATCH).await?;
    let results = futures_util::future::join_all(due.iter().map(|(job, v)| deliver(pa, job, *v))).await;
    for r in results {
        match r {
            Ok(JobOutcome::Delivered) => pass.delivered += 1,
            Ok(JobOutcome::Retrying) => pass.retrying += 1,
            Ok(JobOutcome::DeadLettered) => pass.dead_lettered += 1,
            Ok(JobOutcome::Dropped | JobOutcome::Skipped) => {}
            Err(e) => tracing::warn!(error = %e, "notification job left due"),
        }
    }
    Ok(pass)
}

/// Flags pended cases whose deadline is within the warning window (or past). Returns how many were flagged now.
pub async fn sweep_deadlines(pa: &PriorAuth) -> Result<usize, PortError> {
    let Some(data) = pa.core.repo().current().await? else { return Ok(0) };
    let now = pa.core.clock().now();
    let mut flagged = 0;
    // Page by page: cases flagged earlier keep their place at the head of the list (their deadlines are the
    // soonest), so a single page could hold nothing but them.
    let mut after = None;
    loop {
        let (cases, next) = pa.cases.pended_page(&data.payer.id, 200, after).await?;
        for (mut case, version) in cases {
            let Some(left) = case.time_left(now) else { continue };
            if left > pa.settings.deadline_warning {
                return Ok(flagged); // The work list is ordered by deadline: the rest are further away.
            }
            if case.deadline_flagged {
                continue;
            }
            case.deadline_flagged = true;
            let note = if left.is_negative() { "deadline passed" } else { "deadline approaching" };
            case.history.push(exchange_core::domain::prior_auth::StatusChange {
                at: exchange_core::domain::prior_auth::rfc3339(now),
                by: "worker".into(),
                item: None,
                action: "flagged".into(),
                note: Some(note.into()),
            });
            match pa.cases.save(&case, version).await {
                Ok(_) => {
                    flagged += 1;
                    tracing::warn!(case = %case.id, hours_left = left.whole_hours(), "{note}");
                }
                Err(PortError::Conflict(_)) => {} // Decided meanwhile, or flagged by another sweep.
                Err(e) => return Err(e),
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(flagged)
}

/// The local runner's worker: a pass whenever a job is enqueued, and at least every `interval`.
pub async fn run_forever(pa: Arc<PriorAuth>, interval: Duration) {
    loop {
        if let Err(e) = run_once(&pa).await {
            tracing::warn!(error = %e, "worker pass failed");
        }
        let _ = tokio::time::timeout(interval, pa.wake.notified()).await;
    }
}
