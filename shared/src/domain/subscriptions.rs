//! PAS notification subscriptions (FHIR R4 Subscriptions backport: rest-hook, `full-resource`), owned by the
//! provider organisation that created them and filtered by its organisation identifier.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ports::{Item, Key, PortError, Query, StateStore, WriteOp};

/// Subscriptions one trading partner may hold: every decision on its cases queues one notification per
/// subscription in the decision's own transaction, which must stay well under DynamoDB's 100 writes.
pub const MAX_SUBSCRIPTIONS_PER_OWNER: usize = 20;

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRecord {
    /// Id.
    pub id: String,
    /// The owning partner (the only one that may read, change or delete it).
    pub owner: String,
    /// The `orgIdentifier` filter: the submitter organisation's identifier (NPI).
    pub org_identifier: String,
    /// The rest-hook endpoint.
    pub endpoint: String,
    /// Headers sent with every notification (`Name: value`), e.g. the subscriber's own authorization.
    #[serde(default)]
    pub headers: Vec<String>,
    /// `active`, `error` (deliveries failing) or `off`.
    pub status: String,
    /// Free-text reason given by the subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Notifications delivered so far (the backport's `events-since-subscription-start`).
    #[serde(default)]
    pub events_delivered: u64,
}

impl SubscriptionRecord {
    /// Headers as name/value pairs (malformed entries are dropped at creation).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter_map(|h| h.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
            .collect()
    }
}

fn key(id: &str) -> Key {
    Key::new(format!("SUBSCRIPTION#{id}"), "SUBSCRIPTION")
}

fn owner_key(owner: &str, id: &str) -> Key {
    Key::new(format!("PARTNER#{owner}"), format!("SUBSCRIPTION#{id}"))
}

/// Where subscriptions live.
#[derive(Clone)]
pub struct SubscriptionRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for SubscriptionRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRepo").finish_non_exhaustive()
    }
}

fn decode(item: Item) -> Result<(SubscriptionRecord, u64), PortError> {
    let v = item.version;
    serde_json::from_value(item.body).map(|s| (s, v)).map_err(|e| PortError::undecodable("subscription", &e))
}

impl SubscriptionRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        SubscriptionRepo { store }
    }

    /// The writes that create a subscription and its owner index entry, for a caller's transaction.
    pub fn create_ops(sub: &SubscriptionRecord) -> Result<Vec<WriteOp>, PortError> {
        let body = serde_json::to_value(sub).map_err(|e| PortError::Invalid(e.to_string()))?;
        Ok(vec![
            WriteOp::PutNew(Item::new(key(&sub.id), body)),
            WriteOp::PutNew(Item::new(owner_key(&sub.owner, &sub.id), serde_json::json!({ "id": sub.id }))),
        ])
    }

    /// A subscription and its version.
    pub async fn get(&self, id: &str) -> Result<Option<(SubscriptionRecord, u64)>, PortError> {
        self.store.get(&key(id)).await?.map(decode).transpose()
    }

    /// Replaces a subscription read at `version`.
    pub async fn save(&self, sub: &SubscriptionRecord, version: u64) -> Result<u64, PortError> {
        let body = serde_json::to_value(sub).map_err(|e| PortError::Invalid(e.to_string()))?;
        self.store.update(Item::new(key(&sub.id), body), version).await
    }

    /// The write that replaces a subscription read at `version`, for a caller's transaction.
    pub fn save_op(sub: &SubscriptionRecord, version: u64) -> Result<WriteOp, PortError> {
        let body = serde_json::to_value(sub).map_err(|e| PortError::Invalid(e.to_string()))?;
        Ok(WriteOp::Update { item: Item::new(key(&sub.id), body), expected_version: version })
    }

    /// The writes that delete a subscription read at `version` and its index entry, for a caller's transaction.
    pub async fn delete_ops(&self, sub: &SubscriptionRecord, version: u64) -> Result<Vec<WriteOp>, PortError> {
        let index = self.store.get(&owner_key(&sub.owner, &sub.id)).await?;
        let mut ops = vec![WriteOp::Delete { key: key(&sub.id), expected_version: version }];
        if let Some(i) = index {
            ops.push(WriteOp::Delete { key: i.key, expected_version: i.version });
        }
        Ok(ops)
    }

    /// The subscriptions `owner` created (at most [`MAX_SUBSCRIPTIONS_PER_OWNER`]).
    pub async fn of_owner(&self, owner: &str) -> Result<Vec<SubscriptionRecord>, PortError> {
        let page = self.store.query(&Query::prefix(format!("PARTNER#{owner}"), "SUBSCRIPTION#", 100)).await?;
        let mut out = Vec::with_capacity(page.items.len());
        for p in page.items {
            if let Some(id) = p.body["id"].as_str() {
                if let Some((s, _)) = self.get(id).await? {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }
}
