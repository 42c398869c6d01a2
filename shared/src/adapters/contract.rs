//! The behaviour every adapter must show, as reusable checks.
//!
//! The embedded adapters' tests, the AWS adapters' tests (against a local AWS emulator) and the in-memory fakes'
//! unit tests all run these same functions, so the adapters cannot drift apart. Each check panics with a message
//! naming the rule that broke; they are test support, not production code.
//!
//! `ns` prefixes every key and path a check writes. Pass a value unique to the run (for example with a random
//! suffix) so checks against a shared table or bucket never meet another run's data. For blob stores `ns` must be a
//! valid relative path (no leading `/`, no `..`).
//!
//! The state-store checks read secondary-index results right after writing, so they expect read-your-writes on the
//! index: true of the embedded store, the fakes and the emulator, not guaranteed by a real DynamoDB GSI.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::ports::{BlobStore, EncryptionContext, Item, Key, KeyService, Page, PortError, PortResult, Query};
use crate::ports::{StateStore, WriteOp};
use crate::vault::DocumentVault;

/// Runs every state-store check: conditional creates, optimistic updates, prefix queries with paging, the
/// secondary index, all-or-nothing transactions and atomic counters (100 increments from 20 concurrent workers).
pub async fn state_store_contract(store: &dyn StateStore, ns: &str) {
    conditional_writes(store, ns).await;
    prefix_queries(store, ns).await;
    secondary_index(store, ns).await;
    transactions(store, ns).await;
    counters(store, ns).await;
}

/// Checks expiry: an item whose `ttl` (epoch seconds) has passed is absent to `get`, `query` and `query_gsi1`, and
/// a new item may be created at its key. Separate from [`state_store_contract`] because an adapter over a store
/// that deletes expired items lazily (DynamoDB) must filter them itself to pass it.
pub async fn state_store_ttl_contract(store: &dyn StateStore, ns: &str) {
    let pk = format!("{ns}#ttl");
    let index = format!("{ns}#ttl-index");
    let past = 1_000_000_000; // 2001
    let future = 4_102_444_800; // 2100
    let expired = Item::new(Key::new(&pk, "expired"), json!({"n": 1})).with_ttl(past).with_gsi1(Key::new(&index, "a"));
    let live = Item::new(Key::new(&pk, "live"), json!({"n": 2})).with_ttl(future).with_gsi1(Key::new(&index, "b"));
    ok("put_new of an already expired item", store.put_new(expired.clone()).await);
    ok("put_new of an item expiring in 2100", store.put_new(live.clone()).await);

    let got = ok("get of an expired item", store.get(&expired.key).await);
    assert!(got.is_none(), "get must treat an expired item as absent, got {got:?}");
    let got = ok("get of a live item with a ttl", store.get(&live.key).await);
    assert_eq!(got.map(|item| item.ttl), Some(Some(future)), "get must return a live item with its ttl");

    let page = ok("query over an expired item", store.query(&Query::prefix(&pk, "", 10)).await);
    assert_eq!(sort_keys(&page), ["live"], "query must skip expired items");
    let page = ok("query_gsi1 over an expired item", store.query_gsi1(&Query::prefix(&index, "", 10)).await);
    assert_eq!(sort_keys(&page), ["live"], "query_gsi1 must skip expired items");

    conflict("update of an expired item", store.update(expired.clone(), 1).await);
    let again = Item::new(expired.key.clone(), json!({"n": 3}));
    ok("put_new over an expired item (it is absent)", store.put_new(again).await);
    let got = ok("get of the re-created item", store.get(&expired.key).await);
    assert_eq!(got.map(|item| (item.version, item.body)), Some((1, json!({"n": 3}))), "re-created item");
}

async fn conditional_writes(store: &dyn StateStore, ns: &str) {
    let pk = format!("{ns}#conditional");
    let key = Key::new(&pk, "ITEM#1");
    assert!(ok("get of a missing item", store.get(&key).await).is_none(), "get of a missing item must be None");

    let mut first = Item::new(key.clone(), json!({"n": 1, "text": "O’BRIEN"}))
        .with_gsi1(Key::new(format!("{ns}#conditional-index"), "x"))
        .with_ttl(4_102_444_800);
    first.version = 7;
    ok("put_new of a new item", store.put_new(first.clone()).await);
    let stored =
        ok("get after put_new", store.get(&key).await).unwrap_or_else(|| panic!("get after put_new returned None"));
    assert_eq!(stored.version, 1, "put_new must store version 1 whatever the item says");
    assert_eq!(stored.body, first.body, "put_new must store the body as given");
    assert_eq!(stored.gsi1, first.gsi1, "put_new must store the secondary-index key");
    assert_eq!(stored.ttl, first.ttl, "put_new must store the ttl");

    let second = Item::new(key.clone(), json!({"n": 2}));
    conflict("put_new of an existing key", store.put_new(second.clone()).await);
    assert_body(store, &key, 1, &first.body, "a losing put_new must change nothing").await;

    let version = ok("update at the current version", store.update(second.clone(), 1).await);
    assert_eq!(version, 2, "update must return expected_version + 1");
    assert_body(store, &key, 2, &second.body, "update must replace the item and bump its version").await;

    let third = Item::new(key.clone(), json!({"n": 3}));
    conflict("update with a stale version", store.update(third.clone(), 1).await);
    conflict("update with a future version", store.update(third.clone(), 3).await);
    assert_body(store, &key, 2, &second.body, "a losing update must change nothing").await;

    let version = ok("second update", store.update(third.clone(), 2).await);
    assert_eq!(version, 3, "a second update must return 3");
    assert_body(store, &key, 3, &third.body, "second update").await;

    let missing = Item::new(Key::new(&pk, "ITEM#missing"), json!({}));
    conflict("update of a missing item", store.update(missing.clone(), 1).await);
    assert!(
        ok("get after a losing update of a missing item", store.get(&missing.key).await).is_none(),
        "update of a missing item must not create it"
    );
}

async fn prefix_queries(store: &dyn StateStore, ns: &str) {
    let pk = format!("{ns}#query");
    for sk in ["ORDER#003", "ORDER#001", "ORDER#010", "ORDER#002", "OTHER#1"] {
        ok("put_new for queries", store.put_new(Item::new(Key::new(&pk, sk), json!({ "sk": sk }))).await);
    }
    // Neighbouring partitions whose names extend or precede this one must never leak into its results.
    for neighbour in [format!("{pk}x"), format!("{pk}#"), format!("{ns}#quer")] {
        ok(
            "put_new in a neighbouring partition",
            store.put_new(Item::new(Key::new(neighbour, "ORDER#000"), json!({}))).await,
        );
    }

    let page = ok("query by prefix", store.query(&Query::prefix(&pk, "ORDER#", 10)).await);
    assert_eq!(
        sort_keys(&page),
        ["ORDER#001", "ORDER#002", "ORDER#003", "ORDER#010"],
        "query must return the prefix's items, ascending"
    );
    assert!(page.next.is_none(), "a query that returned everything must not offer a cursor");
    assert!(
        page.items.iter().all(|item| item.body == json!({ "sk": item.key.sk }) && item.version == 1),
        "query must return items as stored"
    );

    let page = ok("query with an empty prefix", store.query(&Query::prefix(&pk, "", 10)).await);
    assert_eq!(
        sort_keys(&page),
        ["ORDER#001", "ORDER#002", "ORDER#003", "ORDER#010", "OTHER#1"],
        "empty prefix must match the whole partition"
    );

    let page = ok("query with an unmatched prefix", store.query(&Query::prefix(&pk, "NOPE", 10)).await);
    assert!(page.items.is_empty() && page.next.is_none(), "unmatched prefix must give an empty page, got {page:?}");

    let first = ok("first page", store.query(&Query::prefix(&pk, "ORDER#", 2)).await);
    assert_eq!(sort_keys(&first), ["ORDER#001", "ORDER#002"], "a limited query must return the first items");
    assert!(first.next.is_some(), "a limited query with more matches must return a cursor");
    let all = collect_pages(&Query::prefix(&pk, "ORDER#", 2), |query| async move { store.query(&query).await }).await;
    assert_eq!(
        all,
        ["ORDER#001", "ORDER#002", "ORDER#003", "ORDER#010"],
        "paging with the cursor must visit every item once, in order"
    );
    let all = collect_pages(&Query::prefix(&pk, "", 1), |query| async move { store.query(&query).await }).await;
    assert_eq!(all.len(), 5, "paging one item at a time must visit every item once: {all:?}");
}

async fn secondary_index(store: &dyn StateStore, ns: &str) {
    let index = format!("{ns}#G");
    let (p1, p2) = (format!("{ns}#gsi-a"), format!("{ns}#gsi-b"));
    let items = [
        Item::new(Key::new(&p1, "S1"), json!({"i": 1})).with_gsi1(Key::new(&index, "2026-01-02")),
        Item::new(Key::new(&p1, "S2"), json!({"i": 2})).with_gsi1(Key::new(&index, "2026-01-01")),
        // The same index sort key as the first item: the cursor must still tell them apart.
        Item::new(Key::new(&p2, "S1"), json!({"i": 3})).with_gsi1(Key::new(&index, "2026-01-02")),
        Item::new(Key::new(&p2, "S2"), json!({"i": 4})).with_gsi1(Key::new(&index, "2026-02-01")),
        Item::new(Key::new(&p1, "S3"), json!({"i": 5})),
        Item::new(Key::new(&p1, "S4"), json!({"i": 6})).with_gsi1(Key::new(format!("{index}x"), "2026-01-01")),
    ];
    for item in &items {
        ok("put_new for the secondary index", store.put_new(item.clone()).await);
    }

    let page = ok("query_gsi1 by prefix", store.query_gsi1(&Query::prefix(&index, "2026-01", 10)).await);
    assert_index_page(&page, &[2, 1, 3], "query_gsi1 must return the prefix's items ordered by gsi1sk");
    assert!(page.next.is_none(), "a query_gsi1 that returned everything must not offer a cursor");
    let page = ok("query_gsi1 with an empty prefix", store.query_gsi1(&Query::prefix(&index, "", 10)).await);
    assert_index_page(&page, &[2, 1, 3, 4], "empty prefix must match the whole index partition");

    let mut seen = Vec::new();
    let mut query = Query::prefix(&index, "2026-01", 1);
    for _ in 0..10 {
        let page = ok("query_gsi1 page", store.query_gsi1(&query).await);
        assert!(page.items.len() <= 1, "query_gsi1 must honour the limit");
        seen.extend(body_ids(&page));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3], "paging query_gsi1 one at a time must visit each item once, got {seen:?}");
    assert_eq!(seen[0], 2, "query_gsi1 paging must start at the lowest gsi1sk");

    // Moving an item's index key moves it in the index; dropping the key takes it out.
    let moved = Item::new(Key::new(&p2, "S2"), json!({"i": 4})).with_gsi1(Key::new(&index, "2026-01-03"));
    ok("update moving the index key", store.update(moved, 1).await);
    let dropped = Item::new(Key::new(&p1, "S2"), json!({"i": 2}));
    ok("update dropping the index key", store.update(dropped, 1).await);
    let page = ok("query_gsi1 after updates", store.query_gsi1(&Query::prefix(&index, "2026-01", 10)).await);
    assert_index_page(&page, &[1, 3, 4], "updates must move and remove index entries");
    let versions: Vec<u64> = page.items.iter().map(|item| item.version).collect();
    assert_eq!(versions, [1, 1, 2], "query_gsi1 must return the current version of each item");
}

async fn transactions(store: &dyn StateStore, ns: &str) {
    let pk = format!("{ns}#tx");
    let existing = Item::new(Key::new(&pk, "EXISTING"), json!({"v": "e1"}));
    let updated = Item::new(Key::new(&pk, "UPDATED"), json!({"v": "u1"}));
    let deleted = Item::new(Key::new(&pk, "DELETED"), json!({"v": "d1"}));
    for item in [&existing, &updated, &deleted] {
        ok("put_new before transactions", store.put_new(item.clone()).await);
    }
    let created = Item::new(Key::new(&pk, "CREATED"), json!({"v": "c1"}));
    let new_update = Item::new(updated.key.clone(), json!({"v": "u2"}));

    let failing: [(&str, Vec<WriteOp>); 4] = [
        (
            "a transaction whose last put_new hits an existing key",
            vec![
                WriteOp::PutNew(created.clone()),
                WriteOp::Update { item: new_update.clone(), expected_version: 1 },
                WriteOp::PutNew(Item::new(existing.key.clone(), json!({"v": "e2"}))),
            ],
        ),
        (
            "a transaction with a stale update",
            vec![WriteOp::PutNew(created.clone()), WriteOp::Update { item: new_update.clone(), expected_version: 5 }],
        ),
        (
            "a transaction deleting at the wrong version",
            vec![
                WriteOp::Update { item: new_update.clone(), expected_version: 1 },
                WriteOp::Delete { key: deleted.key.clone(), expected_version: 2 },
            ],
        ),
        (
            "a transaction deleting a missing item",
            vec![
                WriteOp::PutNew(created.clone()),
                WriteOp::Delete { key: Key::new(&pk, "MISSING"), expected_version: 1 },
            ],
        ),
    ];
    for (what, ops) in failing {
        conflict(what, store.transact(ops).await);
        let rule = format!("{what} must write nothing");
        assert!(ok("get after a failed transaction", store.get(&created.key).await).is_none(), "{rule}");
        assert_body(store, &updated.key, 1, &updated.body, &rule).await;
        assert_body(store, &deleted.key, 1, &deleted.body, &rule).await;
        assert_body(store, &existing.key, 1, &existing.body, &rule).await;
    }

    let ops = vec![
        WriteOp::PutNew(created.clone()),
        WriteOp::Update { item: new_update.clone(), expected_version: 1 },
        WriteOp::Delete { key: deleted.key.clone(), expected_version: 1 },
    ];
    ok("a transaction whose conditions all hold", store.transact(ops).await);
    assert_body(store, &created.key, 1, &created.body, "a successful transaction must create").await;
    assert_body(store, &updated.key, 2, &new_update.body, "a successful transaction must update").await;
    assert!(
        ok("get after a successful delete", store.get(&deleted.key).await).is_none(),
        "a successful transaction must delete"
    );
}

async fn counters(store: &dyn StateStore, ns: &str) {
    let key = Key::new(format!("{ns}#counter"), "SEQ");
    assert_eq!(ok("first increment", store.increment(&key).await), 1, "a new counter must start at 0 and return 1");
    assert_eq!(ok("second increment", store.increment(&key).await), 2, "increment must add one");
    let other = Key::new(format!("{ns}#counter"), "OTHER");
    assert_eq!(ok("increment of another counter", store.increment(&other).await), 1, "counters must be independent");

    let race = Key::new(format!("{ns}#counter"), "RACE");
    let workers = (0..20).map(|_| {
        let race = race.clone();
        async move {
            let mut values = Vec::with_capacity(5);
            for _ in 0..5 {
                values.push(ok("concurrent increment", store.increment(&race).await));
            }
            values
        }
    });
    let mut values: Vec<u64> = join_all(workers.collect()).await.into_iter().flatten().collect();
    values.sort_unstable();
    let expected: Vec<u64> = (1..=100).collect();
    assert_eq!(values, expected, "100 concurrent increments must return 1..=100, each exactly once");
}

/// Checks a blob store: round trips of binary, empty and large objects, overwrite, `NotFound` for missing
/// objects, and idempotent delete.
pub async fn blob_store_contract(blobs: &dyn BlobStore, ns: &str) {
    let path = format!("{ns}/blobs/a.bin");
    not_found("get of a missing blob", blobs.get(&path).await);
    not_found("size of a missing blob", blobs.size(&path).await);

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    ok("put of a new blob", blobs.put(&path, all_bytes.clone()).await);
    assert_eq!(ok("get after put", blobs.get(&path).await), all_bytes, "get must return the bytes put");

    let longer = vec![0xA5; 10_000];
    ok("put over an existing blob", blobs.put(&path, longer.clone()).await);
    assert_eq!(ok("get after overwrite", blobs.get(&path).await), longer, "put must replace the object");
    ok("put of a shorter blob", blobs.put(&path, vec![1, 2, 3]).await);
    assert_eq!(ok("get after shrinking", blobs.get(&path).await), [1, 2, 3], "a shorter put must not keep old bytes");

    let empty = format!("{ns}/blobs/empty.bin");
    ok("put of an empty blob", blobs.put(&empty, Vec::new()).await);
    assert!(ok("get of an empty blob", blobs.get(&empty).await).is_empty(), "an empty blob must stay empty");

    let nested = format!("{ns}/blobs/x/y/z/large.bin");
    let large: Vec<u8> = (0..(1usize << 20)).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    ok("put of a 1 MiB blob in nested folders", blobs.put(&nested, large.clone()).await);
    assert!(ok("get of a 1 MiB blob", blobs.get(&nested).await) == large, "a 1 MiB blob must round trip");
    assert_eq!(ok("size of a 1 MiB blob", blobs.size(&nested).await), 1 << 20, "size without reading");
    assert_eq!(ok("size of a shrunk blob", blobs.size(&path).await), 3, "size after a shorter put");
    assert_eq!(ok("size of an empty blob", blobs.size(&empty).await), 0, "size of an empty blob");

    for p in [&path, &empty, &nested] {
        ok("delete of a blob", blobs.delete(p).await);
        not_found("get after delete", blobs.get(p).await);
    }
    ok("delete of a missing blob", blobs.delete(&path).await);
}

/// Checks a key service: data keys round trip under their context only, tampered wrapped keys are refused, and
/// ES384 signatures verify with the published public key.
pub async fn key_service_contract(keys: &dyn KeyService) {
    let context = EncryptionContext::for_document("contract/doc-1", "payer-1");
    let data_key = ok("generate_data_key", keys.generate_data_key(&context).await);
    assert_ne!(data_key.plaintext, [0u8; 32], "a data key must be random, not zero");
    assert!(!data_key.wrapped.is_empty(), "a data key must come with its wrapped form");
    assert!(
        !data_key.wrapped.windows(32).any(|w| w == data_key.plaintext),
        "the wrapped data key must not contain the plaintext key"
    );
    let unwrapped = ok("decrypt_data_key", keys.decrypt_data_key(&data_key.wrapped, &context).await);
    assert_eq!(unwrapped, data_key.plaintext, "decrypt_data_key must return the generated key");

    let other = ok("second generate_data_key", keys.generate_data_key(&context).await);
    assert_ne!(other.plaintext, data_key.plaintext, "every data key must be fresh");

    let wrong = [
        ("another document", EncryptionContext::for_document("contract/doc-2", "payer-1")),
        ("another payer", EncryptionContext::for_document("contract/doc-1", "payer-2")),
        ("an empty context", EncryptionContext::default()),
    ];
    for (name, wrong) in wrong {
        integrity(&format!("decrypt_data_key under {name}"), keys.decrypt_data_key(&data_key.wrapped, &wrong).await);
    }
    let mut tampered = data_key.wrapped.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0x01;
    }
    integrity("decrypt_data_key of a tampered key", keys.decrypt_data_key(&tampered, &context).await);

    let public = ok("token_public_key", keys.token_public_key().await);
    assert_eq!(ok("second token_public_key", keys.token_public_key().await), public, "the public key must be stable");
    let verifying = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
        .unwrap_or_else(|e| panic!("the public key is not a DER RSAPublicKey of 2048+ bits: {e}"));
    assert!(public.len() >= 256, "the token key must have at least 2048 bits");

    let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZW1vIn0";
    let signature = ok("sign_rs256", keys.sign_rs256(message).await);
    assert!(signature.len() >= 256, "an RS256 signature is as long as the modulus");
    assert!(verifying.verify_sig(message, &signature).is_ok(), "the signature must verify with the public key");
    assert!(
        verifying.verify_sig(b"another message", &signature).is_err(),
        "the signature must not verify another message"
    );
}

/// Checks a document vault: round trip with the recorded SHA-256, ciphertext at rest, and `Integrity` for a wrong
/// context, a wrong expected hash, and tampered or truncated objects.
pub async fn vault_contract(vault: &DocumentVault, ns: &str) {
    let path = format!("{ns}/vault/doc-1.bin");
    let context = EncryptionContext::for_document(&format!("{ns}/doc-1"), "payer-1");
    let plaintext = [
        &b"ISA*00*          *00*          *ZZ*SUBMITTER      *ZZ*PAYER          ~"[..],
        b"PLAINTEXT-MARKER-0123456789~IEA*1*000000001~",
    ]
    .concat();
    let digest = hex::encode(Sha256::digest(&plaintext));

    let stored = ok("vault put", vault.put(&path, &context, &plaintext).await);
    assert_eq!(stored.path, path, "put must report the path written");
    assert_eq!(stored.sha256, digest, "put must report the plaintext's SHA-256 in lowercase hex");
    assert_eq!(stored.size, plaintext.len() as u64, "put must report the plaintext size");

    assert_eq!(ok("vault get", vault.get(&path, &context, None).await), plaintext, "get must return the plaintext");
    assert_eq!(
        ok("vault get with the expected hash", vault.get(&path, &context, Some(&digest)).await),
        plaintext,
        "get with the right expected hash must succeed"
    );
    let raw = ok("raw get of a vault object", vault.blobs().get(&path).await);
    assert!(
        !raw.windows(b"PLAINTEXT-MARKER".len()).any(|w| w == b"PLAINTEXT-MARKER"),
        "the stored object must not contain the plaintext"
    );

    integrity(
        "vault get under another document's context",
        vault.get(&path, &EncryptionContext::for_document(&format!("{ns}/doc-2"), "payer-1"), None).await,
    );
    integrity(
        "vault get under another payer's context",
        vault.get(&path, &EncryptionContext::for_document(&format!("{ns}/doc-1"), "payer-2"), None).await,
    );
    let other_digest = hex::encode(Sha256::digest(b"another document"));
    integrity("vault get with a wrong expected hash", vault.get(&path, &context, Some(&other_digest)).await);

    let positions = [("magic", 0), ("tag", raw.len() - 1), ("ciphertext", raw.len() - 30), ("header", raw.len() / 3)];
    for (what, at) in positions {
        let mut tampered = raw.clone();
        tampered[at] ^= 0x01;
        ok("raw put of a tampered object", vault.blobs().put(&path, tampered).await);
        integrity(&format!("vault get with a flipped {what} byte"), vault.get(&path, &context, None).await);
    }
    for len in [0, 4, raw.len() / 2, raw.len() - 1] {
        ok("raw put of a truncated object", vault.blobs().put(&path, raw[..len].to_vec()).await);
        integrity(&format!("vault get of an object truncated to {len} bytes"), vault.get(&path, &context, None).await);
    }
    ok("raw put of the original object", vault.blobs().put(&path, raw.clone()).await);
    assert_eq!(ok("vault get after restoring", vault.get(&path, &context, None).await), plaintext, "restored object");

    let empty_path = format!("{ns}/vault/empty.bin");
    let stored = ok("vault put of an empty document", vault.put(&empty_path, &context, b"").await);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(b"")), "empty document hash");
    assert!(
        ok("vault get of an empty document", vault.get(&empty_path, &context, Some(&stored.sha256)).await).is_empty()
    );

    let replacement = b"a replacement".to_vec();
    ok("vault put over an existing document", vault.put(&path, &context, &replacement).await);
    assert_eq!(ok("vault get after replacement", vault.get(&path, &context, None).await), replacement, "replacement");

    for p in [&path, &empty_path] {
        ok("vault delete", vault.delete(p).await);
        not_found("vault get after delete", vault.get(p, &context, None).await);
    }
    ok("vault delete of a missing document", vault.delete(&path).await);
}

/// Follows cursors from `first` until the adapter offers none, returning every sort key seen. An adapter may end
/// on an empty page (DynamoDB returns a cursor whenever a page is full), but never loop or repeat items.
async fn collect_pages<F, Fut>(first: &Query, mut run: F) -> Vec<String>
where
    F: FnMut(Query) -> Fut,
    Fut: Future<Output = PortResult<Page>>,
{
    let mut query = first.clone();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let page = ok("query page", run(query.clone()).await);
        assert!(page.items.len() <= query.limit, "a page must hold at most `limit` items, got {}", page.items.len());
        seen.extend(sort_keys(&page).into_iter().map(str::to_owned));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return seen,
        }
    }
    panic!("paging did not end after 20 pages: {seen:?}");
}

fn sort_keys(page: &Page) -> Vec<&str> {
    page.items.iter().map(|item| item.key.sk.as_str()).collect()
}

/// Checks a secondary-index page holds exactly the fixtures `expected` (by their `i` attribute, listed in one valid
/// order) sorted by `gsi1sk`. Items sharing a `gsi1sk` may come in any order: DynamoDB does not order index ties.
#[track_caller]
fn assert_index_page(page: &Page, expected: &[i64], rule: &str) {
    let index_keys: Vec<&str> =
        page.items.iter().map(|item| item.gsi1.as_ref().map_or("", |k| k.sk.as_str())).collect();
    assert!(index_keys.is_sorted(), "{rule}: gsi1sk out of order: {index_keys:?}");
    let (mut got, mut want) = (body_ids(page), expected.to_vec());
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{rule}: wrong items (by `i`)");
}

/// The `i` attribute of each item, naming the secondary-index fixtures.
fn body_ids(page: &Page) -> Vec<i64> {
    page.items.iter().map(|item| item.body["i"].as_i64().unwrap_or(-1)).collect()
}

async fn assert_body(store: &dyn StateStore, key: &Key, version: u64, body: &serde_json::Value, rule: &str) {
    let item =
        ok("get", store.get(key).await).unwrap_or_else(|| panic!("{rule}: item {}/{} is missing", key.pk, key.sk));
    assert_eq!((item.version, &item.body), (version, body), "{rule}: item {}/{}", key.pk, key.sk);
}

/// Drives futures concurrently on the current task. The contract gets `&dyn` ports, which `tokio::spawn` cannot
/// take; polling them together still keeps many requests in flight at once.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[track_caller]
fn ok<T>(what: &str, result: PortResult<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: expected success, got {error:?}"),
    }
}

#[track_caller]
fn expect_error<T: Debug>(what: &str, result: PortResult<T>, kind: &str, matches_kind: fn(&PortError) -> bool) {
    match result {
        Err(error) if matches_kind(&error) => {}
        other => panic!("{what}: expected PortError::{kind}, got {other:?}"),
    }
}

#[track_caller]
fn conflict<T: Debug>(what: &str, result: PortResult<T>) {
    expect_error(what, result, "Conflict", |e| matches!(e, PortError::Conflict(_)));
}

#[track_caller]
fn integrity<T: Debug>(what: &str, result: PortResult<T>) {
    expect_error(what, result, "Integrity", |e| matches!(e, PortError::Integrity(_)));
}

#[track_caller]
fn not_found<T: Debug>(what: &str, result: PortResult<T>) {
    expect_error(what, result, "NotFound", |e| matches!(e, PortError::NotFound(_)));
}
