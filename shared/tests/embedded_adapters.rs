//! The embedded adapters against the adapter contract, on real files in a temporary data directory, plus what only
//! real storage can show: durability across a reopen, private file modes, and ciphertext at rest.

use std::path::Path;
use std::sync::Arc;

use exchange_core::adapters::contract;
use exchange_core::adapters::embedded::{EmbeddedAdapters, FolderBlobStore, LocalKeyService, RedbStateStore};
use exchange_core::ports::{EncryptionContext, Item, Key, KeyService, Query, StateStore};
use exchange_core::vault::DocumentVault;
use serde_json::json;

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_state_store_passes_the_contract() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    contract::state_store_contract(adapters.store.as_ref(), "contract").await;
    contract::state_store_ttl_contract(adapters.store.as_ref(), "contract-ttl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_blob_store_passes_the_contract() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    contract::blob_store_contract(adapters.blobs.as_ref(), "contract").await;
}

#[tokio::test]
async fn local_key_service_passes_the_contract() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    contract::key_service_contract(adapters.keys.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_vault_passes_the_contract() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    contract::vault_contract(&adapters.vault(), "contract").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_documents_and_keys_survive_a_reopen() {
    let (_dir, data) = data_dir();
    let key = Key::new("PARTNER#demo", "INQUIRY#1");
    let counter = Key::new("COUNTER", "ISA13");
    let context = EncryptionContext::for_document("attachments/a1", "payer-1");
    let plaintext = b"durable attachment".to_vec();

    let stored = {
        let adapters = EmbeddedAdapters::open(&data).unwrap();
        let item = Item::new(key.clone(), json!({"status": "received"})).with_gsi1(Key::new("STATUS#received", "1"));
        adapters.store.put_new(item).await.unwrap();
        adapters.store.update(Item::new(key.clone(), json!({"status": "answered"})), 1).await.unwrap();
        assert_eq!(adapters.store.increment(&counter).await.unwrap(), 1);
        assert_eq!(adapters.store.increment(&counter).await.unwrap(), 2);
        adapters.vault().put("attachments/a1.bin", &context, &plaintext).await.unwrap()
        // Everything is dropped here: the database file is closed and its lock released.
    };

    let adapters = EmbeddedAdapters::open(&data).unwrap();
    let item = adapters.store.get(&key).await.unwrap().unwrap();
    assert_eq!((item.version, item.body), (2, json!({"status": "answered"})));
    let page = adapters.store.query(&Query::prefix("PARTNER#demo", "INQUIRY#", 10)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(adapters.store.query_gsi1(&Query::prefix("STATUS#received", "", 10)).await.unwrap().items.is_empty());
    assert_eq!(adapters.store.increment(&counter).await.unwrap(), 3, "counters must continue after a reopen");
    let read = adapters.vault().get(&stored.path, &context, Some(&stored.sha256)).await.unwrap();
    assert_eq!(read, plaintext, "documents must decrypt with the reloaded key");
}

#[tokio::test]
async fn adapters_can_be_opened_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStateStore::open(&dir.path().join("s.redb")).unwrap();
    let blobs = FolderBlobStore::open(&dir.path().join("blobs")).unwrap();
    let keys = LocalKeyService::load_or_create(&dir.path().join("keys")).unwrap();
    assert_eq!(blobs.root(), dir.path().join("blobs"));
    store.put_new(Item::new(Key::new("p", "s"), json!({}))).await.unwrap();
    let keys: Arc<dyn KeyService> = Arc::new(keys);
    let vault = DocumentVault::new(Arc::new(blobs), keys);
    let context = EncryptionContext::for_document("d", "p");
    vault.put("d.bin", &context, b"x").await.unwrap();
    assert_eq!(vault.get("d.bin", &context, None).await.unwrap(), &b"x"[..]);
}

#[cfg(unix)]
#[tokio::test]
async fn secrets_and_data_are_private_to_the_owner() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    let context = EncryptionContext::for_document("d", "p");
    // Past the small-document limit: a file of its own (small documents live in the database file).
    let large = vec![b'x'; exchange_core::adapters::embedded::redb_store::SMALL_BLOB_MAX + 1];
    adapters.vault().put("payer-1/d.bin", &context, &large).await.unwrap();

    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&data.join("keys/master.key")), 0o600, "master key");
    assert_eq!(mode(&data.join("keys/token-signing.p8")), 0o600, "token signing key");
    assert_eq!(mode(&data.join("state.redb")), 0o600, "state database");
    assert_eq!(mode(&data.join("documents/payer-1/d.bin")), 0o600, "document");
    assert_eq!(mode(&data.join("keys/audit/token-signing.p8")), 0o600, "audit signing key");
    for dir in ["", "keys", "keys/audit", "documents", "documents/payer-1", "audit-digests"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "directory {dir:?}");
    }
    assert_eq!(std::fs::read(data.join("keys/master.key")).unwrap().len(), 32, "master key is 256 bits");
    let der = std::fs::read(data.join("keys/token-signing.p8")).unwrap();
    assert!(aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).is_ok(), "the token key is a PKCS#8 DER RSA key");
}

#[tokio::test]
async fn stored_document_files_hold_no_plaintext() {
    let (_dir, data) = data_dir();
    let adapters = EmbeddedAdapters::open(&data).unwrap();
    let context = EncryptionContext::for_document("claims/c1", "payer-1");
    let plaintext = b"NM1*IL*1*O\xE2\x80\x99BRIEN*PATRICK****MI*W123456789~".repeat(50);
    adapters.vault().put("claims/c1.bin", &context, &plaintext).await.unwrap();
    // A large one too: small documents are kept in the database file, large ones as files.
    let large = plaintext.repeat(exchange_core::adapters::embedded::redb_store::SMALL_BLOB_MAX / plaintext.len() + 1);
    adapters.vault().put("claims/c2.bin", &context, &large).await.unwrap();

    let small = exchange_core::ports::BlobStore::get(adapters.blobs.as_ref(), "claims/c1.bin").await.unwrap();
    assert!(small.starts_with(b"PPXV1"), "documents are vault objects");
    let file = std::fs::read(data.join("documents/claims/c2.bin")).unwrap();
    assert!(file.starts_with(b"PPXV1"), "documents are vault objects");
    let database = std::fs::read(data.join("state.redb")).unwrap();
    for on_disk in [&file, &database] {
        for needle in [&b"BRIEN"[..], b"W123456789", b"NM1*IL"] {
            assert!(!on_disk.windows(needle.len()).any(|w| w == needle), "plaintext {needle:?} found on disk");
        }
    }
}
