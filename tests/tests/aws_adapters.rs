//! The AWS adapters (DynamoDB, S3, KMS) against a local AWS emulator (moto, started by `scripts/test`).
//!
//! Each run provisions its own table (with the `gsi1` index and TTL on `ttl`), bucket, symmetric KMS key and
//! `ECC_NIST_P384` signing key under unique names, builds the adapters with [`AwsAdapters::from_env`] exactly as the
//! Lambda functions do, and runs the same contract checks as the embedded adapters, then the AWS-specific checks
//! (SSE-KMS on every object, ciphertext at rest, the table's item shape, lazy TTL deletion, error mapping).
//!
//! Without `AWS_ENDPOINT_URL` the test is skipped loudly, or fails when `EXCHANGE_REQUIRE_AWS_TESTS=1` (as
//! `scripts/test` sets it), so CI can never pass by skipping it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_s3::types::ServerSideEncryption;
use exchange_core::adapters::aws::{AwsAdapters, DynamoStateStore};
use exchange_core::adapters::contract;
use exchange_core::ports::{BlobStore, EncryptionContext, Item, Key, KeyService, PortError, Query, StateStore};
use exchange_core::vault::DocumentVault;
use exchange_tests::aws_fixture::{endpoint_or_skip, provision, run_id, s3_client, Fixture, NAME_VARS};
use serde_json::json;

fn now_epoch() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

#[tokio::test]
async fn aws_adapters_pass_the_contracts() {
    let Some(endpoint) = endpoint_or_skip() else { return };
    let run = run_id();
    let ns = format!("run-{run}");
    println!("aws_adapters: emulator at {endpoint}, run {run}");

    // Missing configuration is reported by name, before any AWS call. This runs on the test's single thread
    // (a current-thread runtime), so changing the environment races with nothing.
    for var in NAME_VARS {
        std::env::remove_var(var);
    }
    match AwsAdapters::from_env().await {
        Err(PortError::Invalid(message)) => {
            assert!(message.contains("TABLE_NAME"), "the error must name the missing variable: {message}")
        }
        other => panic!("from_env without TABLE_NAME must be Invalid, got {:?}", other.map(|_| ())),
    }

    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let fixture = provision(&config, &run).await;
    std::env::set_var("TABLE_NAME", &fixture.table);
    std::env::set_var("BUCKET_NAME", &fixture.bucket);
    std::env::set_var("DATA_KEY_ID", &fixture.data_key_id);
    std::env::set_var("SIGNING_KEY_ID", "");
    match AwsAdapters::from_env().await {
        Err(PortError::Invalid(message)) => {
            assert!(message.contains("SIGNING_KEY_ID"), "the error must name the empty variable: {message}")
        }
        other => panic!("from_env with an empty SIGNING_KEY_ID must be Invalid, got {:?}", other.map(|_| ())),
    }
    std::env::set_var("SIGNING_KEY_ID", &fixture.signing_key_id);
    let adapters = AwsAdapters::from_env().await.expect("AwsAdapters::from_env with every variable set");

    // The shared contracts: the same checks the embedded adapters and the fakes pass.
    contract::state_store_contract(adapters.store.as_ref(), &ns).await;
    contract::state_store_ttl_contract(adapters.store.as_ref(), &format!("{ns}-ttl")).await;
    contract::blob_store_contract(adapters.blobs.as_ref(), &ns).await;
    contract::key_service_contract(adapters.keys.as_ref()).await;
    // The vault exactly as the functions build it, and one built by hand from the ports.
    contract::vault_contract(&adapters.vault(), &format!("{ns}-own")).await;
    let blobs: Arc<dyn BlobStore> = adapters.blobs.clone();
    let keys: Arc<dyn KeyService> = adapters.keys.clone();
    let vault = DocumentVault::new(blobs, keys);
    contract::vault_contract(&vault, &ns).await;

    // AWS-specific behaviour.
    objects_are_sse_kms_encrypted_ciphertext(&fixture, &vault, &ns).await;
    presigned_urls_move_documents_past_the_function(&fixture, &adapters, &ns).await;
    items_have_the_single_table_shape(&fixture, &adapters.store, &ns).await;
    expired_items_stay_in_the_table_but_not_in_reads(&fixture, &adapters.store, &ns).await;
    signatures_verify_with_kms(&fixture, adapters.keys.as_ref()).await;
    errors_map_to_port_errors(&fixture).await;
    audit_chains_hold_in_dynamodb(&adapters, &ns).await;
}

/// The audit trail over DynamoDB, S3 and KMS: records are written each on a key of its own (no head: six
/// concurrent appends of one partner all commit), the sealer writes a KMS-signed digest into S3 listing them, the
/// trail verifies, and a record edited in the table is reported with its digest and key.
async fn audit_chains_hold_in_dynamodb(adapters: &AwsAdapters, ns: &str) {
    use exchange_core::domain::audit::seal::Sealer;
    use exchange_core::domain::audit::{AuditAction, AuditEntry, AuditLog};
    let store: Arc<dyn exchange_core::ports::StateStore> = adapters.store.clone();
    // A clock behind every entry: the records keep the times given below.
    let log = AuditLog::new(store.clone())
        .with_clock(Arc::new(exchange_core::ports::FixedClock(time::OffsetDateTime::UNIX_EPOCH)));
    let partner = format!("{ns}-audited");
    let appends = (0..6).map(|i| {
        let entry = AuditEntry {
            at: format!("2026-03-10T10:00:0{i}.000Z"),
            partner: partner.clone(),
            client_id: partner.clone(),
            action: AuditAction::R,
            operation: "GET /attachments/{id}".into(),
            resources: vec![format!("attachment/a{i}")],
            members: vec!["M-1".into()],
            outcome: 200,
            request_id: "same-request".into(),
        };
        let log = log.clone();
        tokio::spawn(async move { log.append(entry).await })
    });
    let mut records = Vec::new();
    for task in appends.collect::<Vec<_>>() {
        records.push(task.await.expect("task").expect("append"));
    }
    assert_eq!(log.member_history("M-1", 10).await.expect("member history").len(), 6);
    assert_eq!(log.partner_history(&partner, 10).await.expect("partner history").len(), 6);

    let sealer = Sealer::new(store.clone(), adapters.blobs.clone(), adapters.keys.clone());
    let now = time::macros::datetime!(2026-03-10 10:05 UTC);
    let pass = sealer.seal(now).await.expect("seal");
    assert_eq!((pass.records, pass.digests), (6, 1), "{pass:?}");
    let report = sealer.verify(now).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.sealed, report.records), (6, 6));

    let edited_rec = &records[3];
    let item = store.get(&edited_rec.key()).await.expect("get").expect("record");
    let mut edited = item.clone();
    edited.body["entry"]["operation"] = serde_json::Value::from("GET /health");
    store.update(edited, item.version).await.expect("edit");
    let report = sealer.verify(now).await.expect("verify");
    let problem = report.problems.iter().find(|p| p.kind == "changed").expect("the edit is reported");
    assert_eq!(problem.digest, Some(1));
    assert_eq!(problem.record.as_deref(), Some(format!("{}/{}", edited_rec.pk, edited_rec.sk).as_str()));
}

/// Every object is written with SSE-KMS under the configured key and an S3 Bucket Key, and what S3 holds is the
/// vault's ciphertext, never the plaintext.
async fn objects_are_sse_kms_encrypted_ciphertext(fixture: &Fixture, vault: &DocumentVault, ns: &str) {
    let s3 = s3_client(&fixture.config);
    let path = format!("{ns}/aws/sse.bin");
    let context = EncryptionContext::for_document(&path, "payer-1");
    let plaintext = b"ISA*00*PLAINTEXT-AT-REST-MARKER~".repeat(40);
    let stored = vault.put(&path, &context, &plaintext).await.expect("vault put");

    let head = s3.head_object().bucket(&fixture.bucket).key(&path).send().await.expect("HeadObject");
    assert_eq!(head.server_side_encryption(), Some(&ServerSideEncryption::AwsKms), "objects must use SSE-KMS");
    let key_id = head.ssekms_key_id().unwrap_or_default();
    assert!(
        key_id.contains(&fixture.data_key_id),
        "objects must be encrypted under the configured key {}, got {key_id:?}",
        fixture.data_key_id
    );
    assert_eq!(head.bucket_key_enabled(), Some(true), "objects must use an S3 Bucket Key");

    let raw = s3.get_object().bucket(&fixture.bucket).key(&path).send().await.expect("GetObject");
    let raw = raw.body.collect().await.expect("object body").into_bytes();
    assert_ne!(raw.as_ref(), plaintext.as_slice(), "S3 must not hold the plaintext");
    let marker = b"PLAINTEXT-AT-REST-MARKER";
    assert!(!raw.windows(marker.len()).any(|w| w == marker), "the S3 object must not contain any plaintext");
    assert!(raw.starts_with(b"PPXV1"), "the S3 object must be a vault envelope");

    let read = vault.get(&path, &context, Some(&stored.sha256)).await.expect("vault get");
    assert_eq!(read, plaintext, "the vault must read back the plaintext through S3 and KMS");
    vault.delete(&path).await.expect("vault delete");
}

/// A presigned upload URL accepts a `PUT` straight to S3 (with the signed SSE-KMS headers, so the object is
/// encrypted under the project's key), and a presigned download URL serves the object with the media type asked.
async fn presigned_urls_move_documents_past_the_function(fixture: &Fixture, adapters: &AwsAdapters, ns: &str) {
    use exchange_core::ports::TransferUrls as _;
    let path = format!("transfer/uploads/{ns}-presigned");
    let now = time::OffsetDateTime::now_utc();
    let ttl = Duration::from_secs(300);
    let document = b"%PDF-1.7 uploaded past the function".repeat(100);

    let up = adapters.transfers.upload_url(&path, "application/pdf", now, ttl).await.expect("presign PUT");
    assert_eq!(up.method, "PUT");
    assert!(up.url.contains("X-Amz-Signature="), "a SigV4 query-signed URL: {}", up.url);
    assert!(up.url.contains("X-Amz-Expires=300"), "valid for the TTL asked: {}", up.url);
    assert_eq!(up.expires_at, now + ttl);
    let header = |name: &str| up.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    assert_eq!(header("x-amz-server-side-encryption"), Some("aws:kms"), "{:?}", up.headers);
    assert!(header("x-amz-server-side-encryption-aws-kms-key-id").is_some_and(|k| k.contains(&fixture.data_key_id)));
    let (status, _) = http_request("PUT", &up.url, &up.headers, &document).await;
    assert_eq!(status, 200, "S3 accepts the presigned PUT");

    let s3 = s3_client(&fixture.config);
    let head = s3.head_object().bucket(&fixture.bucket).key(&path).send().await.expect("HeadObject");
    assert_eq!(head.server_side_encryption(), Some(&ServerSideEncryption::AwsKms), "uploads are SSE-KMS");
    assert_eq!(adapters.blobs.size(&path).await.expect("size"), document.len() as u64);
    assert_eq!(adapters.blobs.get(&path).await.expect("get"), document);

    let down = adapters.transfers.download_url(&path, "application/pdf", now, ttl).await.expect("presign GET");
    assert_eq!(down.method, "GET");
    let (status, body) = http_request("GET", &down.url, &down.headers, b"").await;
    assert_eq!(status, 200);
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    assert!(head.contains("content-type: application/pdf"), "served as the media type asked: {head}");
    assert!(body.windows(document.len()).any(|w| w == document), "the presigned GET serves the object");
    adapters.blobs.delete(&path).await.expect("delete");
}

/// A minimal HTTP/1.1 client for the emulator on loopback (the test must not trust the SDK to make the call the
/// caller will make). Returns the status and the raw response (headers and body).
async fn http_request(method: &str, url: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").expect("the emulator is plain HTTP on loopback");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect to the emulator");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let status = std::str::from_utf8(&response[..response.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Items are stored with the attribute names and types the template, the GSI and the stream consumers rely on.
async fn items_have_the_single_table_shape(fixture: &Fixture, store: &DynamoStateStore, ns: &str) {
    let item = Item::new(Key::new(format!("{ns}#shape"), "ITEM#1"), json!({"a": "O’BRIEN", "n": [1, 2]}))
        .with_gsi1(Key::new(format!("{ns}#shape-index"), "2026-11-25"))
        .with_ttl(4_102_444_800);
    store.put_new(item.clone()).await.expect("put_new");
    store.update(item.clone(), 1).await.expect("update");

    let dynamodb = aws_sdk_dynamodb::Client::new(&fixture.config);
    let raw = dynamodb
        .get_item()
        .table_name(&fixture.table)
        .key("pk", AttributeValue::S(item.key.pk.clone()))
        .key("sk", AttributeValue::S(item.key.sk.clone()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    let attrs: &HashMap<String, AttributeValue> = raw.item().expect("the item exists");
    let s = |name: &str| attrs.get(name).and_then(|v| v.as_s().ok()).cloned();
    let n = |name: &str| attrs.get(name).and_then(|v| v.as_n().ok()).cloned();
    assert_eq!(s("pk").as_deref(), Some(item.key.pk.as_str()), "pk (S)");
    assert_eq!(s("sk").as_deref(), Some("ITEM#1"), "sk (S)");
    assert_eq!(s("gsi1pk"), item.gsi1.as_ref().map(|g| g.pk.clone()), "gsi1pk (S)");
    assert_eq!(s("gsi1sk").as_deref(), Some("2026-11-25"), "gsi1sk (S)");
    assert_eq!(n("version").as_deref(), Some("2"), "version (N) after one update");
    assert_eq!(n("ttl").as_deref(), Some("4102444800"), "ttl (N, epoch seconds)");
    let body: serde_json::Value = serde_json::from_str(&s("body").expect("body (S)")).expect("body is JSON text");
    assert_eq!(body, item.body, "body round trips as JSON text");
}

/// DynamoDB deletes expired items lazily and moto never does: the adapter must filter them, including when they
/// fill whole DynamoDB pages of a query.
async fn expired_items_stay_in_the_table_but_not_in_reads(fixture: &Fixture, store: &DynamoStateStore, ns: &str) {
    let pk = format!("{ns}#expiry");
    let past = now_epoch() - 3600;
    for i in 0..12 {
        let mut item = Item::new(Key::new(&pk, format!("ITEM#{i:02}")), json!({ "i": i }));
        // Items 1, 2, 4, 5, 6, 7 and 9 are expired: some pages of two are entirely expired.
        if [1, 2, 4, 5, 6, 7, 9].contains(&i) {
            item = item.with_ttl(past);
        }
        store.put_new(item).await.expect("put_new");
    }

    let dynamodb = aws_sdk_dynamodb::Client::new(&fixture.config);
    let raw = dynamodb
        .get_item()
        .table_name(&fixture.table)
        .key("pk", AttributeValue::S(pk.clone()))
        .key("sk", AttributeValue::S("ITEM#01".to_owned()))
        .send()
        .await
        .expect("GetItem");
    assert!(raw.item().is_some(), "the expired item is still physically in the table");
    assert!(store.get(&Key::new(&pk, "ITEM#01")).await.expect("get").is_none(), "but reads skip it");

    for limit in [1, 2, 3, 10] {
        let mut query = Query::prefix(&pk, "ITEM#", limit);
        let mut seen = Vec::new();
        for _ in 0..20 {
            let page = store.query(&query).await.expect("query page");
            assert!(page.items.len() <= limit, "a page holds at most {limit} items");
            seen.extend(page.items.iter().map(|item| item.body["i"].as_i64().unwrap_or(-1)));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, [0, 3, 8, 10, 11], "paging with limit {limit} must skip expired items and repeat none");
    }
}

/// The RS256 signature is a valid RSASSA_PKCS1_V1_5_SHA_256 signature of the message in KMS's own eyes.
async fn signatures_verify_with_kms(fixture: &Fixture, keys: &dyn KeyService) {
    let kms = aws_sdk_kms::Client::new(&fixture.config);
    let message = b"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJleGNoYW5nZSJ9";
    let signature = keys.sign_rs256(message).await.expect("sign_rs256");
    assert_eq!(signature.len(), 256, "RSA-2048");
    let verify = |message: &'static [u8], signature: Vec<u8>| {
        kms.verify()
            .key_id(&fixture.signing_key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signature(Blob::new(signature))
            .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
            .send()
    };
    let verified = verify(message, signature.clone()).await.expect("KMS Verify");
    assert!(verified.signature_valid(), "KMS must accept the signature");
    let other = verify(b"another message", signature).await;
    assert!(other.map(|o| !o.signature_valid()).unwrap_or(true), "KMS must reject the signature over another message");
}

/// Unreachable or misconfigured resources are `Unavailable` (retryable), not `NotFound` or a panic.
async fn errors_map_to_port_errors(fixture: &Fixture) {
    let dynamodb = aws_sdk_dynamodb::Client::new(&fixture.config);
    let missing = DynamoStateStore::new(dynamodb, format!("{}-missing", fixture.table));
    match missing.get(&Key::new("p", "s")).await {
        Err(PortError::Unavailable(_)) => {}
        other => panic!("a missing table must be Unavailable, got {other:?}"),
    }
    match missing.query(&Query::prefix("p", "", 0)).await {
        Err(PortError::Invalid(_)) => {}
        other => panic!("a zero-limit query must be Invalid, got {other:?}"),
    }
}
