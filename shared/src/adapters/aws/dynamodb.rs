//! [`StateStore`] over one DynamoDB table (single-table design).
//!
//! Table shape (see `infra/template.yaml`): partition key `pk` (S), sort key `sk` (S), a global secondary index
//! `gsi1` on `gsi1pk` (S) / `gsi1sk` (S) projecting ALL attributes, TTL enabled on `ttl` (N, epoch seconds).
//! Each item also carries `version` (N) and `body` (S, the JSON text); counters carry `seq` (N).
//!
//! DynamoDB deletes expired items lazily (typically within days) and moto never does, so this adapter treats an item
//! whose `ttl` is before now as absent, like the embedded store: reads skip it, a create may replace it, and an
//! update or delete of it is a conflict.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::classify_error;
use crate::adapters::embedded::{check_distinct_keys, check_query};
use crate::ports::{Item, Key, Page, PortError, PortResult, Query, StateStore, WriteOp};

/// Name of the secondary index over `gsi1pk` / `gsi1sk`.
const GSI1: &str = "gsi1";
/// DynamoDB's limit on the number of writes in one `TransactWriteItems`.
const MAX_TRANSACT_ITEMS: usize = 100;
/// Upper bound on the `Limit` of one `Query` call (a page is assembled from several calls when needed).
const MAX_QUERY_LIMIT: usize = 1000;

/// Error codes that mean "a condition of the write did not hold".
const CONFLICT_CODES: &[&str] = &["ConditionalCheckFailedException", "TransactionConflictException"];

/// Condition for a create: the key is free, or the item there has expired.
const PUT_NEW_CONDITION: &str = "attribute_not_exists(pk) OR #ttl < :now";
/// Condition for an update or delete: the version matches and the item has not expired.
const VERSION_CONDITION: &str = "#v = :expected AND (attribute_not_exists(#ttl) OR #ttl >= :now)";
/// Server-side filter that drops expired items from query results.
const NOT_EXPIRED_FILTER: &str = "attribute_not_exists(#ttl) OR #ttl >= :now";

type Attrs = HashMap<String, AttributeValue>;

/// The [`StateStore`] port over one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

impl DynamoStateStore {
    /// A state store over `table`, using `client` (built once per cold start).
    pub fn new(client: Client, table: String) -> Self {
        DynamoStateStore { client, table }
    }

    /// The table this store reads and writes.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn query_index(&self, query: &Query, index: Option<&str>) -> PortResult<Page> {
        check_query(query)?;
        let (pk_attr, sk_attr) = match index {
            Some(_) => ("gsi1pk", "gsi1sk"),
            None => ("pk", "sk"),
        };
        let mut start_key = match &query.after {
            Some(cursor) => Some(decode_cursor(cursor, pk_attr, &query.pk, index.is_some())?),
            // A table query may start after any sort key of its partition, stored or not.
            None => match (&query.start_after_sk, index) {
                (Some(sk), None) => Some(key_attrs(&Key::new(query.pk.clone(), sk.clone()))),
                _ => None,
            },
        };
        let key_condition = if query.sk_prefix.is_empty() {
            format!("{pk_attr} = :pk")
        } else {
            format!("{pk_attr} = :pk AND begins_with({sk_attr}, :prefix)")
        };

        let mut items: Vec<Item> = Vec::new();
        loop {
            let need = query.limit - items.len();
            // Ask for one more than needed, so that `next` is only set when another item exists.
            let limit = need.saturating_add(1).min(MAX_QUERY_LIMIT);
            let now = now_epoch();
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(&key_condition)
                .filter_expression(NOT_EXPIRED_FILTER)
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":pk", s(&query.pk))
                .expression_attribute_values(":now", n(now))
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start_key.take());
            if !query.sk_prefix.is_empty() {
                request = request.expression_attribute_values(":prefix", s(&query.sk_prefix));
            }
            request = match index {
                Some(name) => request.index_name(name),
                None => request.consistent_read(true),
            };
            let output = request.send().await.map_err(|e| classify_error("Query", &e, CONFLICT_CODES, &[]))?;

            for attrs in output.items() {
                let item = item_from_attrs(attrs)?;
                if is_expired(item.ttl, now) {
                    continue;
                }
                if items.len() == query.limit {
                    // There is at least one more item: the cursor points after the last one returned.
                    let next = items.last().map(|last| encode_cursor(&cursor_attrs(last, index.is_some())));
                    return Ok(Page { items, next });
                }
                items.push(item);
            }
            match output.last_evaluated_key() {
                Some(last) if !last.is_empty() => {
                    if items.len() == query.limit {
                        // The page is full and DynamoDB stopped exactly here: continue from its position.
                        return Ok(Page { items, next: Some(encode_cursor(last)) });
                    }
                    start_key = Some(last.clone());
                }
                _ => return Ok(Page { items, next: None }),
            }
        }
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_error("GetItem", &e, CONFLICT_CODES, &[]))?;
        match output.item() {
            Some(attrs) if !attrs.is_empty() => {
                let item = item_from_attrs(attrs)?;
                Ok(if is_expired(item.ttl, now_epoch()) { None } else { Some(item) })
            }
            _ => Ok(None),
        }
    }

    async fn put_new(&self, item: Item) -> PortResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_attrs(&item, 1)?))
            .condition_expression(PUT_NEW_CONDITION)
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(now_epoch()))
            .send()
            .await
            .map_err(|e| classify_error("PutItem", &e, CONFLICT_CODES, &[]))?;
        Ok(())
    }

    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
        let new_version = next_version(expected_version)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_attrs(&item, new_version)?))
            .condition_expression(VERSION_CONDITION)
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":now", n(now_epoch()))
            .send()
            .await
            .map_err(|e| classify_error("PutItem", &e, CONFLICT_CODES, &[]))?;
        Ok(new_version)
    }

    async fn query(&self, query: &Query) -> PortResult<Page> {
        self.query_index(query, None).await
    }

    async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
        self.query_index(query, Some(GSI1)).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
        check_distinct_keys(&ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        if ops.len() > MAX_TRANSACT_ITEMS {
            return Err(PortError::Invalid(format!(
                "a transaction holds at most {MAX_TRANSACT_ITEMS} writes, got {}",
                ops.len()
            )));
        }
        let now = n(now_epoch());
        let mut writes = Vec::with_capacity(ops.len());
        for op in &ops {
            let write = match op {
                WriteOp::PutNew(item) => {
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item_attrs(item, 1)?))
                        .condition_expression(PUT_NEW_CONDITION)
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(":now", now.clone())
                        .build()
                        .map_err(|e| PortError::Invalid(format!("TransactWriteItems put: {e}")))?;
                    TransactWriteItem::builder().put(put).build()
                }
                WriteOp::Update { item, expected_version } => {
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item_attrs(item, next_version(*expected_version)?)?))
                        .condition_expression(VERSION_CONDITION)
                        .expression_attribute_names("#v", "version")
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(":expected", n(expected_version))
                        .expression_attribute_values(":now", now.clone())
                        .build()
                        .map_err(|e| PortError::Invalid(format!("TransactWriteItems put: {e}")))?;
                    TransactWriteItem::builder().put(put).build()
                }
                WriteOp::Delete { key, expected_version } => {
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attrs(key)))
                        .condition_expression(VERSION_CONDITION)
                        .expression_attribute_names("#v", "version")
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(":expected", n(expected_version))
                        .expression_attribute_values(":now", now.clone())
                        .build()
                        .map_err(|e| PortError::Invalid(format!("TransactWriteItems delete: {e}")))?;
                    TransactWriteItem::builder().delete(delete).build()
                }
            };
            writes.push(write);
        }
        match self.client.transact_write_items().set_transact_items(Some(writes)).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
                    let reasons: Vec<&str> = cancelled.cancellation_reasons().iter().filter_map(|r| r.code()).collect();
                    let message = cancelled.message().unwrap_or_default();
                    let has = |code: &str| reasons.contains(&code) || message.contains(code);
                    if has("ConditionalCheckFailed") || has("TransactionConflict") {
                        return Err(PortError::Conflict(format!(
                            "TransactWriteItems cancelled: [{}]",
                            reasons.join(", ")
                        )));
                    }
                    if has("ValidationError") {
                        return Err(PortError::Invalid(format!(
                            "TransactWriteItems cancelled: [{}] {message}",
                            reasons.join(", ")
                        )));
                    }
                    return Err(PortError::Unavailable(format!(
                        "TransactWriteItems cancelled: [{}]",
                        reasons.join(", ")
                    )));
                }
                Err(classify_error("TransactWriteItems", &err, CONFLICT_CODES, &[]))
            }
        }
    }

    async fn increment(&self, key: &Key) -> PortResult<u64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .update_expression("ADD #seq :one")
            .expression_attribute_names("#seq", "seq")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| classify_error("UpdateItem", &e, CONFLICT_CODES, &[]))?;
        let value = output
            .attributes()
            .and_then(|attrs| attrs.get("seq"))
            .ok_or_else(|| PortError::Unavailable("UpdateItem returned no counter value".to_owned()))?;
        match value {
            AttributeValue::N(text) => text
                .parse::<u64>()
                .map_err(|_| PortError::Integrity(format!("counter value {text:?} is not an unsigned integer"))),
            _ => Err(PortError::Integrity("counter attribute `seq` is not a number".to_owned())),
        }
    }
}

fn now_epoch() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// An item is expired when its `ttl` is strictly before `now` (the embedded store's rule).
fn is_expired(ttl: Option<i64>, now: i64) -> bool {
    ttl.is_some_and(|ttl| ttl < now)
}

fn next_version(expected: u64) -> PortResult<u64> {
    expected.checked_add(1).ok_or_else(|| PortError::Invalid("version overflow".to_owned()))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_attrs(key: &Key) -> Attrs {
    let mut attrs = HashMap::with_capacity(2);
    attrs.insert("pk".to_owned(), s(&key.pk));
    attrs.insert("sk".to_owned(), s(&key.sk));
    attrs
}

fn item_attrs(item: &Item, version: u64) -> PortResult<Attrs> {
    if item.key.pk.is_empty() || item.key.sk.is_empty() {
        return Err(PortError::Invalid("item keys must not be empty".to_owned()));
    }
    let body = serde_json::to_string(&item.body).map_err(|e| PortError::Invalid(format!("item body: {e}")))?;
    let mut attrs = key_attrs(&item.key);
    if let Some(gsi1) = &item.gsi1 {
        if gsi1.pk.is_empty() || gsi1.sk.is_empty() {
            return Err(PortError::Invalid("secondary index keys must not be empty".to_owned()));
        }
        attrs.insert("gsi1pk".to_owned(), s(&gsi1.pk));
        attrs.insert("gsi1sk".to_owned(), s(&gsi1.sk));
    }
    attrs.insert("version".to_owned(), n(version));
    if let Some(ttl) = item.ttl {
        attrs.insert("ttl".to_owned(), n(ttl));
    }
    attrs.insert("body".to_owned(), AttributeValue::S(body));
    Ok(attrs)
}

fn get_s<'a>(attrs: &'a Attrs, name: &str) -> Option<&'a str> {
    match attrs.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

fn get_n<T: std::str::FromStr>(attrs: &Attrs, name: &str) -> PortResult<Option<T>> {
    match attrs.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(text)) => text
            .parse::<T>()
            .map(Some)
            .map_err(|_| PortError::Integrity(format!("stored attribute `{name}` is not a valid number"))),
        Some(_) => Err(PortError::Integrity(format!("stored attribute `{name}` is not a number"))),
    }
}

fn item_from_attrs(attrs: &Attrs) -> PortResult<Item> {
    let missing = |name: &str| PortError::Integrity(format!("stored item lacks string attribute `{name}`"));
    let pk = get_s(attrs, "pk").ok_or_else(|| missing("pk"))?;
    let sk = get_s(attrs, "sk").ok_or_else(|| missing("sk"))?;
    let gsi1 = match (get_s(attrs, "gsi1pk"), get_s(attrs, "gsi1sk")) {
        (Some(gpk), Some(gsk)) => Some(Key::new(gpk, gsk)),
        _ => None,
    };
    let body = match get_s(attrs, "body") {
        Some(text) => serde_json::from_str(text)
            .map_err(|_| PortError::Integrity("stored item body is not valid JSON".to_owned()))?,
        None => serde_json::Value::Null,
    };
    Ok(Item {
        key: Key::new(pk, sk),
        gsi1,
        version: get_n::<u64>(attrs, "version")?.unwrap_or(0),
        ttl: get_n::<i64>(attrs, "ttl")?,
        body,
    })
}

/// The key attributes DynamoDB expects in `ExclusiveStartKey` to resume after `item`.
fn cursor_attrs(item: &Item, on_gsi1: bool) -> Attrs {
    let mut attrs = key_attrs(&item.key);
    if on_gsi1 {
        if let Some(gsi1) = &item.gsi1 {
            attrs.insert("gsi1pk".to_owned(), s(&gsi1.pk));
            attrs.insert("gsi1sk".to_owned(), s(&gsi1.sk));
        }
    }
    attrs
}

/// Encodes a (last evaluated) key as an opaque cursor: URL-safe base64 of a JSON object of its string attributes.
fn encode_cursor(key: &Attrs) -> String {
    let map: std::collections::BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(name, value)| match value {
            AttributeValue::S(text) => Some((name.as_str(), text.as_str())),
            _ => None,
        })
        .collect();
    // Serializing a map of strings cannot fail.
    let json = serde_json::to_vec(&map).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode_cursor`], checking that it belongs to a query of partition `pk`.
fn decode_cursor(cursor: &str, pk_attr: &str, pk: &str, on_gsi1: bool) -> PortResult<Attrs> {
    let invalid = || PortError::Invalid("malformed page cursor".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(cursor.as_bytes()).map_err(|_| invalid())?;
    let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let allowed: &[&str] = if on_gsi1 { &["pk", "sk", "gsi1pk", "gsi1sk"] } else { &["pk", "sk"] };
    if map.keys().any(|name| !allowed.contains(&name.as_str())) || map.len() != allowed.len() {
        return Err(invalid());
    }
    if map.get(pk_attr).map(String::as_str) != Some(pk) {
        return Err(PortError::Invalid("page cursor belongs to another query".to_owned()));
    }
    Ok(map.into_iter().map(|(name, value)| (name, AttributeValue::S(value))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_round_trips_through_attributes() {
        let item = Item::new(Key::new("P#1", "S#1"), serde_json::json!({"a": [1, "two"]}))
            .with_gsi1(Key::new("G#1", "GS#1"))
            .with_ttl(1_900_000_000);
        let attrs = item_attrs(&item, 7).expect("attrs");
        let back = item_from_attrs(&attrs).expect("item");
        assert_eq!(back.version, 7);
        assert_eq!(back.key, item.key);
        assert_eq!(back.gsi1, item.gsi1);
        assert_eq!(back.ttl, item.ttl);
        assert_eq!(back.body, item.body);
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_partition() {
        let item = Item::new(Key::new("P#1", "S#1"), serde_json::Value::Null).with_gsi1(Key::new("G#1", "GS#1"));
        let cursor = encode_cursor(&cursor_attrs(&item, true));
        let attrs = decode_cursor(&cursor, "gsi1pk", "G#1", true).expect("decodes");
        assert_eq!(attrs.len(), 4);
        assert!(matches!(decode_cursor(&cursor, "gsi1pk", "G#2", true), Err(PortError::Invalid(_))));
        assert!(matches!(decode_cursor(&cursor, "pk", "P#1", false), Err(PortError::Invalid(_))));
        assert!(matches!(decode_cursor("!!", "pk", "P#1", false), Err(PortError::Invalid(_))));
    }

    #[test]
    fn expiry_is_strictly_before_now() {
        assert!(is_expired(Some(9), 10));
        assert!(!is_expired(Some(10), 10));
        assert!(!is_expired(None, 10));
    }
}
