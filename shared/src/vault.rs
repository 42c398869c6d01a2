//! The document vault: envelope encryption over any [`BlobStore`] and [`KeyService`].
//!
//! Every document gets its own data key from the key service (KMS `GenerateDataKey`, or the local master key),
//! bound to an [`EncryptionContext`] naming the document and its payer. The document is encrypted with AES-256-GCM
//! under that key, and the SHA-256 of the plaintext is recorded at write and checked at every read. The AWS and
//! embedded deployments share this code; only the blob store and key service differ.
//!
//! # Object format (version 1)
//!
//! ```text
//! magic "PPXV1" (5) | wrapped-key length, u16 big-endian (2) | wrapped key | nonce (12) | SHA-256 of plaintext (32)
//! | AES-256-GCM ciphertext | GCM tag (16)
//! ```
//!
//! The associated data is the whole header followed by the context's canonical bytes, so changing any header byte
//! (the recorded hash, the nonce, the wrapped key) or reading under another context fails authentication.
//!
//! # Object format (version 2): documents of one exchange under one data key
//!
//! ```text
//! magic "PPXV2" (5) | wrapped-key length (2) | wrapped key | key-context length, u16 big-endian (2)
//! | key context, canonical bytes | nonce (12) | SHA-256 of plaintext (32) | AES-256-GCM ciphertext | GCM tag (16)
//! ```
//!
//! [`DocumentVault::put_exchange`] encrypts a request and its answer under one data key (one KMS `GenerateDataKey`
//! for both, not one each), bound to a key context naming the exchange and its payer; each document's own context
//! (its path and payer) is still the associated data of its ciphertext, so a document read under another name
//! fails exactly as in version 1. A reader accepts a key context only when it names the reader's payer and an
//! exchange the document's path ends with.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest::{digest, SHA256};
use bytes::Bytes;
use rand::rngs::OsRng;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::ports::{BlobStore, EncryptionContext, KeyService, PortError, PortResult};

/// Identifies a version-1 vault object.
const MAGIC: &[u8; 5] = b"PPXV1";
/// Identifies a version-2 vault object (a data key shared by the documents of one exchange).
const MAGIC_V2: &[u8; 5] = b"PPXV2";
const NONCE_LEN: usize = 12;
const SHA256_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Documents up to this size are encrypted on the calling task; larger ones on the blocking pool, so a 64 MB
/// attachment never stalls an async worker for tens of milliseconds.
const INLINE_CRYPTO_LIMIT: usize = 64 * 1024;

/// Where and what a stored document is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// The blob path the document was written to.
    pub path: String,
    /// SHA-256 of the plaintext, lowercase hex.
    pub sha256: String,
    /// Size of the plaintext in bytes.
    pub size: u64,
}

/// Envelope-encrypted document storage over a blob store and a key service.
#[derive(Clone)]
pub struct DocumentVault {
    blobs: Arc<dyn BlobStore>,
    keys: Arc<dyn KeyService>,
}

impl fmt::Debug for DocumentVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentVault").finish_non_exhaustive()
    }
}

impl DocumentVault {
    /// A vault storing encrypted objects in `blobs`, with data keys from `keys`.
    pub fn new(blobs: Arc<dyn BlobStore>, keys: Arc<dyn KeyService>) -> Self {
        DocumentVault { blobs, keys }
    }

    /// The raw blob store underneath, holding the encrypted objects (for tooling and tamper tests).
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Encrypts `plaintext` under a fresh data key bound to `context` and writes it at `path`, replacing any
    /// earlier object there. Returns the path, the plaintext's SHA-256 and its size, for the caller to record.
    pub async fn put(&self, path: &str, context: &EncryptionContext, plaintext: &[u8]) -> PortResult<StoredDocument> {
        let data_key = self.keys.generate_data_key(context).await?;
        let wrapped_len = u16::try_from(data_key.wrapped.len())
            .map_err(|_| PortError::Invalid("wrapped data key is longer than 65535 bytes".to_owned()))?;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);

        // Header with a zeroed hash slot, then the plaintext: the hash is filled in and the body encrypted in place,
        // so the document is copied once.
        let header_len = MAGIC.len() + 2 + data_key.wrapped.len() + NONCE_LEN + SHA256_LEN;
        let mut object = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
        object.extend_from_slice(MAGIC);
        object.extend_from_slice(&wrapped_len.to_be_bytes());
        object.extend_from_slice(&data_key.wrapped);
        object.extend_from_slice(&nonce);
        object.extend_from_slice(&[0u8; SHA256_LEN]);
        object.extend_from_slice(plaintext);

        let mut key = data_key.plaintext;
        drop(data_key);
        let context_bytes = context.canonical_bytes();
        let sealed = off_the_async_worker(plaintext.len(), move || {
            let sealed = seal(&mut object, header_len, &key, &context_bytes);
            key.fill(0);
            sealed.map(|sha256| (object, sha256))
        })
        .await;
        let (object, sha256) = sealed??;

        self.blobs.put(path, object).await?;
        Ok(StoredDocument { path: path.to_owned(), sha256: hex::encode(sha256), size: plaintext.len() as u64 })
    }

    /// Encrypts the documents of one exchange (each `(path, its context, plaintext)`) under one data key bound to
    /// `key_context` (naming the exchange and the payer; see the module docs), and writes them. When a write fails,
    /// the documents already written are removed. Returns each document's record, in order.
    pub async fn put_exchange(
        &self,
        key_context: &EncryptionContext,
        documents: &[(&str, &EncryptionContext, &[u8])],
    ) -> PortResult<Vec<StoredDocument>> {
        let data_key = self.keys.generate_data_key(key_context).await?;
        let wrapped_len = u16::try_from(data_key.wrapped.len())
            .map_err(|_| PortError::Invalid("wrapped data key is longer than 65535 bytes".to_owned()))?;
        let key_context_bytes = key_context.canonical_bytes();
        let key_context_len = u16::try_from(key_context_bytes.len())
            .map_err(|_| PortError::Invalid("key context is longer than 65535 bytes".to_owned()))?;
        let mut sealed = Vec::with_capacity(documents.len());
        for (path, context, plaintext) in documents {
            let mut nonce = [0u8; NONCE_LEN];
            OsRng.fill_bytes(&mut nonce);
            let header_len =
                MAGIC_V2.len() + 2 + data_key.wrapped.len() + 2 + key_context_bytes.len() + NONCE_LEN + SHA256_LEN;
            let mut object = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
            object.extend_from_slice(MAGIC_V2);
            object.extend_from_slice(&wrapped_len.to_be_bytes());
            object.extend_from_slice(&data_key.wrapped);
            object.extend_from_slice(&key_context_len.to_be_bytes());
            object.extend_from_slice(&key_context_bytes);
            object.extend_from_slice(&nonce);
            object.extend_from_slice(&[0u8; SHA256_LEN]);
            object.extend_from_slice(plaintext);
            let mut key = data_key.plaintext;
            let context_bytes = context.canonical_bytes();
            let done = off_the_async_worker(plaintext.len(), move || {
                let result = seal(&mut object, header_len, &key, &context_bytes);
                key.fill(0);
                result.map(|sha256| (object, sha256))
            })
            .await;
            let (object, sha256) = done??;
            sealed.push((*path, object, sha256, plaintext.len()));
        }
        drop(data_key);
        let mut stored = Vec::with_capacity(sealed.len());
        for (path, object, sha256, size) in sealed {
            if let Err(e) = self.blobs.put(path, object).await {
                for written in &stored {
                    let written: &StoredDocument = written;
                    let _ = self.blobs.delete(&written.path).await;
                }
                return Err(e);
            }
            stored.push(StoredDocument { path: path.to_owned(), sha256: hex::encode(sha256), size: size as u64 });
        }
        Ok(stored)
    }

    /// Reads and decrypts the document at `path`.
    ///
    /// Always checks the authentication tag and the SHA-256 recorded in the object; when `expected_sha256` (hex) is
    /// given, the plaintext must match it too. Any mismatch, a different `context`, or a malformed object fails with
    /// `Integrity`; a missing object with `NotFound`; an `expected_sha256` that is not 64 hex digits with `Invalid`.
    pub async fn get(
        &self,
        path: &str,
        context: &EncryptionContext,
        expected_sha256: Option<&str>,
    ) -> PortResult<Bytes> {
        let expected = expected_sha256.map(parse_sha256).transpose()?;
        let object = self.blobs.get(path).await?;
        let header = Header::parse(&object)?;
        let mut key = match header.key_context {
            None => self.keys.decrypt_data_key(header.wrapped, context).await?,
            Some(bytes) => {
                let key_context = shared_key_context(bytes, context)?;
                self.keys.decrypt_data_key(header.wrapped, &key_context).await?
            }
        };
        let context_bytes = context.canonical_bytes();
        let body_len = object.len();
        let opened = off_the_async_worker(body_len, move || {
            let opened = open(object, &key, &context_bytes);
            key.fill(0);
            opened
        })
        .await;
        let (plaintext, actual) = opened??;
        if let Some(expected) = expected {
            if expected != actual {
                return Err(PortError::Integrity(format!(
                    "document {path:?} has SHA-256 {}, expected {}",
                    hex::encode(actual),
                    hex::encode(expected)
                )));
            }
        }
        Ok(plaintext)
    }

    /// Deletes the document at `path`; deleting a missing document is not an error.
    pub async fn delete(&self, path: &str) -> PortResult<()> {
        self.blobs.delete(path).await
    }
}

/// The parsed header of a vault object, borrowing from it.
struct Header<'a> {
    wrapped: &'a [u8],
    /// Version 2: the canonical bytes of the context the data key is bound to.
    key_context: Option<&'a [u8]>,
    nonce: [u8; NONCE_LEN],
    sha256: [u8; SHA256_LEN],
    /// Length of the header in bytes; the ciphertext starts here.
    len: usize,
}

impl<'a> Header<'a> {
    /// Parses a header, checking every length before slicing: a truncated or foreign object is an `Integrity`
    /// error, never a panic.
    fn parse(object: &'a [u8]) -> PortResult<Self> {
        let malformed = |why: &str| PortError::Integrity(format!("malformed vault object: {why}"));
        let (v2, rest) = match (object.strip_prefix(MAGIC.as_slice()), object.strip_prefix(MAGIC_V2.as_slice())) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(malformed("unknown magic or version")),
        };
        let (length, rest) = rest.split_at_checked(2).ok_or_else(|| malformed("truncated key length"))?;
        let wrapped_len = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let (wrapped, rest) = rest.split_at_checked(wrapped_len).ok_or_else(|| malformed("truncated key"))?;
        let (key_context, rest) = if v2 {
            let (length, rest) = rest.split_at_checked(2).ok_or_else(|| malformed("truncated key context length"))?;
            let context_len = usize::from(u16::from_be_bytes([length[0], length[1]]));
            let (context, rest) =
                rest.split_at_checked(context_len).ok_or_else(|| malformed("truncated key context"))?;
            (Some(context), rest)
        } else {
            (None, rest)
        };
        let (nonce, rest) = rest.split_at_checked(NONCE_LEN).ok_or_else(|| malformed("truncated nonce"))?;
        let (sha256, rest) = rest.split_at_checked(SHA256_LEN).ok_or_else(|| malformed("truncated hash"))?;
        if rest.len() < TAG_LEN {
            return Err(malformed("truncated ciphertext"));
        }
        Ok(Header {
            wrapped,
            key_context,
            nonce: to_array(nonce)?,
            sha256: to_array(sha256)?,
            len: object.len() - rest.len(),
        })
    }
}

/// The key context of a version-2 object, accepted only when it names the reader's payer and an exchange that the
/// document's path ends with: the stored bytes cannot lend a document another payer's or another exchange's key.
fn shared_key_context(bytes: &[u8], reader: &EncryptionContext) -> PortResult<EncryptionContext> {
    let foreign = || PortError::Integrity("the document's key belongs to another exchange or payer".to_owned());
    let text = std::str::from_utf8(bytes).map_err(|_| foreign())?;
    let mut map = std::collections::BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').ok_or_else(foreign)?;
        map.insert(k.to_owned(), v.to_owned());
    }
    let key_context = EncryptionContext(map);
    if key_context.canonical_bytes() != bytes {
        return Err(foreign());
    }
    let (Some(exchange), Some(payer)) = (key_context.0.get("exchange"), key_context.0.get("payer")) else {
        return Err(foreign());
    };
    let document = reader.0.get("document").map(String::as_str).unwrap_or_default();
    if Some(payer) != reader.0.get("payer") || exchange.is_empty() || !document.ends_with(&format!("/{exchange}")) {
        return Err(foreign());
    }
    Ok(key_context)
}

/// The associated data: header bytes, then the context, so neither can be swapped without failing the tag.
fn associated_data(header: &[u8], context_bytes: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context_bytes.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context_bytes);
    aad
}

/// Incremental SHA-256 (aws-lc), for digests over several parts.
pub struct Sha256Hasher(aws_lc_rs::digest::Context);

impl Default for Sha256Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Hasher {
    /// An empty digest.
    pub fn new() -> Self {
        Sha256Hasher(aws_lc_rs::digest::Context::new(&SHA256))
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: impl AsRef<[u8]>) {
        self.0.update(bytes.as_ref());
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// SHA-256 of `bytes` (aws-lc's SHA-NI / ARMv8 implementation).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn cipher(key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key).ok().map(LessSafeKey::new)
}

/// Hashes the plaintext at `object[header_len..]` into the header's hash slot, encrypts it in place and appends the
/// tag. Returns the hash.
fn seal(object: &mut Vec<u8>, header_len: usize, key: &[u8; 32], context_bytes: &[u8]) -> PortResult<[u8; 32]> {
    let failed = || PortError::Unavailable("document encryption failed".to_owned());
    let (header, body) = object.split_at_mut(header_len);
    let sha256 = sha256(body);
    let nonce_at = header_len - SHA256_LEN - NONCE_LEN;
    header[header_len - SHA256_LEN..].copy_from_slice(&sha256);
    let nonce = Nonce::try_assume_unique_for_key(&header[nonce_at..nonce_at + NONCE_LEN]).map_err(|_| failed())?;
    let aad = associated_data(header, context_bytes);
    let cipher = cipher(key).ok_or_else(failed)?;
    let tag = cipher.seal_in_place_separate_tag(nonce, Aad::from(&aad), body).map_err(|_| failed())?;
    object.extend_from_slice(tag.as_ref());
    Ok(sha256)
}

/// Authenticates and decrypts a vault object in place and checks the recorded hash. Returns the plaintext (a view
/// into the decrypted object: a 64 MB document is not moved again) and its hash.
fn open(mut object: Vec<u8>, key: &[u8; 32], context_bytes: &[u8]) -> PortResult<(Bytes, [u8; 32])> {
    let tampered = || PortError::Integrity("document was altered or belongs to another encryption context".into());
    let header = Header::parse(&object)?;
    let (header_len, nonce, recorded) = (header.len, Nonce::assume_unique_for_key(header.nonce), header.sha256);
    let tag_at = object.len() - TAG_LEN;
    let aad = associated_data(&object[..header_len], context_bytes);
    let cipher = cipher(key).ok_or_else(tampered)?;
    let (body, tag) = object.split_at_mut(tag_at);
    cipher.open_in_place_separate_tag(nonce, Aad::from(&aad), tag, &mut body[header_len..]).map_err(|_| tampered())?;

    let plaintext = Bytes::from(object).slice(header_len..tag_at);
    let actual = sha256(&plaintext);
    if actual != recorded {
        // Unreachable without the key (the hash is authenticated), but the hash is the record callers rely on.
        return Err(PortError::Integrity("document does not match its recorded SHA-256".to_owned()));
    }
    Ok((plaintext, actual))
}

/// Copies a slice whose length was already checked into an array (an `Integrity` error if it was not).
fn to_array<const N: usize>(bytes: &[u8]) -> PortResult<[u8; N]> {
    <[u8; N]>::try_from(bytes).map_err(|_| PortError::Integrity("malformed vault object".to_owned()))
}

fn parse_sha256(hex_digest: &str) -> PortResult<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| PortError::Invalid(format!("expected SHA-256 {hex_digest:?} is not 64 hex digits")))?;
    Ok(digest)
}

/// Runs CPU-heavy crypto inline for small documents and on the blocking pool for large ones.
async fn off_the_async_worker<T, F>(size: usize, work: F) -> PortResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if size <= INLINE_CRYPTO_LIMIT {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PortError::Unavailable(format!("document crypto task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::LocalKeyService;
    use crate::adapters::memory::MemoryBlobStore;

    fn vault(dir: &tempfile::TempDir) -> DocumentVault {
        let keys = LocalKeyService::load_or_create(dir.path()).unwrap();
        DocumentVault::new(Arc::new(MemoryBlobStore::new()), Arc::new(keys))
    }

    #[tokio::test]
    async fn an_exchange_shares_one_data_key_and_each_document_keeps_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(&dir);
        let (req, resp) = ("inbound/x12/270/p/2026/01/02/r1", "outbound/x12/270/p/2026/01/02/r1");
        let key_context = EncryptionContext::for_exchange("x12/270/p/2026/01/02/r1", "payer-1");
        let (req_ctx, resp_ctx) =
            (EncryptionContext::for_document(req, "payer-1"), EncryptionContext::for_document(resp, "payer-1"));
        let stored = v
            .put_exchange(&key_context, &[(req, &req_ctx, b"ISA*request"), (resp, &resp_ctx, b"ISA*answer")])
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(v.get(req, &req_ctx, Some(&stored[0].sha256)).await.unwrap(), &b"ISA*request"[..]);
        assert_eq!(v.get(resp, &resp_ctx, Some(&stored[1].sha256)).await.unwrap(), &b"ISA*answer"[..]);
        // One data key: the two objects carry the same wrapped key.
        let (a, b) = (v.blobs.get(req).await.unwrap(), v.blobs.get(resp).await.unwrap());
        assert_eq!(Header::parse(&a).unwrap().wrapped, Header::parse(&b).unwrap().wrapped);

        // The answer's object moved over the request's name does not open as the request.
        v.blobs.put(req, b.clone()).await.unwrap();
        assert!(matches!(v.get(req, &req_ctx, None).await, Err(PortError::Integrity(_))));
        // Another payer, or a path of another exchange, does not get the key.
        v.blobs.put(req, a.clone()).await.unwrap();
        let other_payer = EncryptionContext::for_document(req, "payer-2");
        assert!(matches!(v.get(req, &other_payer, None).await, Err(PortError::Integrity(_))));
        let elsewhere = "inbound/x12/270/p/2026/01/02/r2";
        v.blobs.put(elsewhere, a.clone()).await.unwrap();
        let elsewhere_ctx = EncryptionContext::for_document(elsewhere, "payer-1");
        assert!(matches!(v.get(elsewhere, &elsewhere_ctx, None).await, Err(PortError::Integrity(_))));
        // Every truncation of a version-2 object is an integrity error, never a panic.
        for len in 0..a.len() {
            v.blobs.put(req, a[..len].to_vec()).await.unwrap();
            assert!(matches!(v.get(req, &req_ctx, None).await, Err(PortError::Integrity(_))), "length {len}");
        }
    }

    #[tokio::test]
    async fn every_truncation_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&dir);
        let context = EncryptionContext::for_document("d", "p");
        vault.put("d", &context, b"hello, payer").await.unwrap();
        let object = vault.blobs().get("d").await.unwrap();
        for len in 0..object.len() {
            vault.blobs().put("t", object[..len].to_vec()).await.unwrap();
            let result = vault.get("t", &context, None).await;
            assert!(matches!(result, Err(PortError::Integrity(_))), "truncation to {len} bytes gave {result:?}");
        }
    }

    #[tokio::test]
    async fn every_flipped_byte_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&dir);
        let context = EncryptionContext::for_document("d", "p");
        vault.put("d", &context, b"hello, payer").await.unwrap();
        let object = vault.blobs().get("d").await.unwrap();
        for at in 0..object.len() {
            let mut tampered = object.clone();
            tampered[at] ^= 0x01;
            vault.blobs().put("t", tampered).await.unwrap();
            let result = vault.get("t", &context, None).await;
            assert!(matches!(result, Err(PortError::Integrity(_))), "flip at byte {at} gave {result:?}");
        }
    }

    #[tokio::test]
    async fn large_documents_round_trip_through_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&dir);
        let context = EncryptionContext::for_document("big", "p");
        let plaintext: Vec<u8> = (0..(INLINE_CRYPTO_LIMIT * 3 + 7)).map(|i| (i % 251) as u8).collect();
        let stored = vault.put("big", &context, &plaintext).await.unwrap();
        assert_eq!(stored.size, plaintext.len() as u64);
        assert_eq!(stored.sha256, hex::encode(sha256(&plaintext)));
        assert_eq!(vault.get("big", &context, Some(&stored.sha256)).await.unwrap(), plaintext);
        let upper = stored.sha256.to_uppercase();
        assert_eq!(vault.get("big", &context, Some(&upper)).await.unwrap(), plaintext);
    }

    #[tokio::test]
    async fn a_malformed_expected_hash_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&dir);
        let context = EncryptionContext::for_document("d", "p");
        vault.put("d", &context, b"x").await.unwrap();
        assert!(matches!(vault.get("d", &context, Some("abc")).await, Err(PortError::Invalid(_))));
    }
}
