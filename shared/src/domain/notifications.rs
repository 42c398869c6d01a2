//! The notification outbox: a case change that subscribers must hear about is written as a job in the same
//! transaction as the change (so no decision is ever lost or announced without being saved). The `worker`
//! delivers due jobs, retries failures with exponential backoff and parks a job that keeps failing as a
//! dead letter for an operator.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::prior_auth::rfc3339;
use crate::ports::{Item, Key, PortError, Query, StateStore, WriteOp};

/// Deliveries tried before a job becomes a dead letter.
pub const MAX_ATTEMPTS: u32 = 5;

const OUTBOX: &str = "OUTBOX";
const DEAD_LETTERS: &str = "DEADLETTER";

/// One pending delivery: a case's current answer to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationJob {
    /// Id.
    pub id: String,
    /// The case whose answer is delivered.
    pub case_id: String,
    /// The subscription it goes to.
    pub subscription_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it is next due (RFC 3339).
    pub due: String,
    /// Why the last attempt failed (status code or a transport error class; never content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when the job became a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_since: Option<String>,
    /// The subscription's event number of this notification, taken at its first attempt and kept through its
    /// retries (and a re-drive): a subscriber counting events sees one number per event, not per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_number: Option<u64>,
}

fn key(id: &str) -> Key {
    Key::new(format!("NOTIFY#{id}"), "NOTIFY")
}

fn to_item(job: &NotificationJob, index: &str, sort: &str) -> Result<Item, PortError> {
    let body = serde_json::to_value(job).map_err(|e| PortError::Invalid(e.to_string()))?;
    Ok(Item::new(key(&job.id), body).with_gsi1(Key::new(index, format!("{sort}#{}", job.id))))
}

/// The write that enqueues a new job (part of the transaction that changes the case).
pub fn enqueue(id: String, case_id: &str, subscription_id: &str, now: OffsetDateTime) -> Result<WriteOp, PortError> {
    let job = NotificationJob {
        id,
        case_id: case_id.to_owned(),
        subscription_id: subscription_id.to_owned(),
        attempts: 0,
        due: rfc3339(now),
        last_error: None,
        dead_since: None,
        event_number: None,
    };
    Ok(WriteOp::PutNew(to_item(&job, OUTBOX, &job.due)?))
}

/// The outbox in the state store.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

fn decode(items: Vec<Item>) -> Result<Vec<(NotificationJob, u64)>, PortError> {
    items
        .into_iter()
        .map(|i| {
            let v = i.version;
            serde_json::from_value(i.body).map(|j| (j, v)).map_err(|e| PortError::undecodable("notification job", &e))
        })
        .collect()
}

/// The delay before attempt `attempts + 1`: `base`, doubling per failure.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    base * 2i32.saturating_pow(attempts.saturating_sub(1).min(16))
}

impl Outbox {
    /// The outbox over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Outbox { store }
    }

    /// Jobs due at `now`, oldest first.
    pub async fn due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<(NotificationJob, u64)>, PortError> {
        let page = self.store.query_gsi1(&Query::prefix(OUTBOX, "", limit)).await?;
        let now = rfc3339(now);
        Ok(decode(page.items)?.into_iter().filter(|(j, _)| j.due <= now).collect())
    }

    /// Jobs waiting (due now or later).
    pub async fn pending(&self, limit: usize) -> Result<Vec<NotificationJob>, PortError> {
        let page = self.store.query_gsi1(&Query::prefix(OUTBOX, "", limit)).await?;
        Ok(decode(page.items)?.into_iter().map(|(j, _)| j).collect())
    }

    /// Dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<NotificationJob>, PortError> {
        let page = self.store.query_gsi1(&Query::prefix(DEAD_LETTERS, "", limit)).await?;
        Ok(decode(page.items)?.into_iter().map(|(j, _)| j).collect())
    }

    /// Claims a due job for one delivery attempt: moves it out of the due window until `until`, so an overlapping
    /// worker pass does not post it too. `None` when another pass claimed (or finished) it first; otherwise the
    /// version to complete or fail it with.
    pub async fn claim(
        &self,
        job: &NotificationJob,
        version: u64,
        until: OffsetDateTime,
    ) -> Result<Option<u64>, PortError> {
        let mut claimed = job.clone();
        claimed.due = rfc3339(until);
        match self.store.update(to_item(&claimed, OUTBOX, &claimed.due)?, version).await {
            Ok(v) => Ok(Some(v)),
            Err(PortError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts a dead letter back in the outbox, due at `now` with its attempts reset (its event number kept): for
    /// when its endpoint is back. `NotFound` when `id` is no dead letter.
    pub async fn redrive(&self, id: &str, now: OffsetDateTime) -> Result<NotificationJob, PortError> {
        let not_found = || PortError::NotFound(format!("dead letter {id}"));
        let item = self.store.get(&key(id)).await?.ok_or_else(not_found)?;
        let version = item.version;
        let mut job: NotificationJob =
            serde_json::from_value(item.body).map_err(|e| PortError::undecodable("notification job", &e))?;
        if job.dead_since.is_none() {
            return Err(not_found());
        }
        job.dead_since = None;
        job.attempts = 0;
        job.due = rfc3339(now);
        self.store.update(to_item(&job, OUTBOX, &job.due)?, version).await?;
        Ok(job)
    }

    /// A delivered job leaves the outbox. `Conflict` when another worker got to it first.
    pub async fn complete(&self, job: &NotificationJob, version: u64) -> Result<(), PortError> {
        self.store.transact(vec![WriteOp::Delete { key: key(&job.id), expected_version: version }]).await
    }

    /// A failed attempt: retried after the backoff, or parked as a dead letter after [`MAX_ATTEMPTS`].
    /// Returns whether the job is now a dead letter.
    pub async fn failed(
        &self,
        job: &NotificationJob,
        version: u64,
        error: String,
        now: OffsetDateTime,
        base: Duration,
    ) -> Result<bool, PortError> {
        let mut job = job.clone();
        job.attempts += 1;
        job.last_error = Some(error);
        let item = if job.attempts >= MAX_ATTEMPTS {
            job.dead_since = Some(rfc3339(now));
            to_item(&job, DEAD_LETTERS, &rfc3339(now))?
        } else {
            job.due = rfc3339(now + backoff(base, job.attempts));
            to_item(&job, OUTBOX, &job.due)?
        };
        self.store.update(item, version).await?;
        Ok(job.dead_since.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;
    use time::macros::datetime;

    #[tokio::test]
    async fn jobs_retry_with_backoff_then_become_dead_letters() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::default());
        let outbox = Outbox::new(store.clone());
        let at = datetime!(2026-11-25 10:00 UTC);
        store.transact(vec![enqueue("J1".into(), "PA1", "S1", at).unwrap()]).await.unwrap();
        let base = Duration::seconds(30);
        let mut now = at;
        for attempt in 1..=MAX_ATTEMPTS {
            let due = outbox.due(now, 10).await.unwrap();
            assert_eq!(due.len(), 1, "attempt {attempt} is due");
            assert!(outbox.due(now - Duration::seconds(1), 10).await.unwrap().is_empty() || attempt == 1);
            let (job, v) = &due[0];
            let dead = outbox.failed(job, *v, "503".into(), now, base).await.unwrap();
            assert_eq!(dead, attempt == MAX_ATTEMPTS);
            now += backoff(base, attempt);
        }
        assert!(outbox.pending(10).await.unwrap().is_empty());
        let dead = outbox.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, MAX_ATTEMPTS);
        assert_eq!(backoff(base, 1), Duration::seconds(30));
        assert_eq!(backoff(base, 3), Duration::seconds(120));
    }
}
