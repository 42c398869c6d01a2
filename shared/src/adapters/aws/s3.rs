//! [`BlobStore`] over one S3 bucket.
//!
//! The vault hands this store bytes that are already envelope-encrypted; every `PutObject` additionally asks for
//! SSE-KMS under the project's key (with an S3 Bucket Key), as defence in depth and so that the bucket policy's
//! "deny unencrypted puts" statement is satisfied.

use async_trait::async_trait;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;

use super::classify_error;
use crate::adapters::embedded::validate_blob_path;
use crate::ports::{BlobStore, PortError, PortResult, TransferUrl, TransferUrls};
use time::OffsetDateTime;

/// Error codes S3 uses for a missing object.
const NOT_FOUND_CODES: &[&str] = &["NoSuchKey", "NotFound"];

/// The [`BlobStore`] port over one S3 bucket, with SSE-KMS on every write.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    kms_key_id: String,
}

impl S3BlobStore {
    /// A blob store over `bucket`, encrypting every object server-side under the KMS key `kms_key_id`.
    pub fn new(client: Client, bucket: String, kms_key_id: String) -> Self {
        S3BlobStore { client, bucket, kms_key_id }
    }

    /// The bucket this store reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// The folder store's path rules (so code that works locally works on AWS), plus S3's 1024-byte key limit.
fn check_path(path: &str) -> PortResult<()> {
    validate_blob_path(path)?;
    if path.len() > 1024 {
        return Err(PortError::Invalid("blob path is longer than S3's 1024-byte key limit".to_owned()));
    }
    Ok(())
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> PortResult<()> {
        check_path(path)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(path)
            .content_type("application/octet-stream")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key_id)
            .bucket_key_enabled(true)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify_error("PutObject", &e, &[], &[]))?;
        Ok(())
    }

    async fn get(&self, path: &str) -> PortResult<Vec<u8>> {
        check_path(path)?;
        let output = match self.client.get_object().bucket(&self.bucket).key(path).send().await {
            Ok(output) => output,
            Err(err) => {
                if let Some(GetObjectError::NoSuchKey(_)) = err.as_service_error() {
                    return Err(PortError::NotFound(format!("blob {path}")));
                }
                return Err(match classify_error("GetObject", &err, &[], NOT_FOUND_CODES) {
                    PortError::NotFound(_) => PortError::NotFound(format!("blob {path}")),
                    other => other,
                });
            }
        };
        let body = output.body.collect().await.map_err(|e| PortError::Unavailable(format!("GetObject body: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, path: &str) -> PortResult<()> {
        check_path(path)?;
        match self.client.delete_object().bucket(&self.bucket).key(path).send().await {
            Ok(_) => Ok(()),
            Err(err) => match classify_error("DeleteObject", &err, &[], NOT_FOUND_CODES) {
                // S3 answers 204 for a missing key; tolerate stores that answer 404.
                PortError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn size(&self, path: &str) -> PortResult<u64> {
        check_path(path)?;
        match self.client.head_object().bucket(&self.bucket).key(path).send().await {
            Ok(head) => head
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| PortError::Unavailable(format!("HeadObject {path}: no content length"))),
            Err(err) => {
                if let Some(HeadObjectError::NotFound(_)) = err.as_service_error() {
                    return Err(PortError::NotFound(format!("blob {path}")));
                }
                Err(match classify_error("HeadObject", &err, &[], NOT_FOUND_CODES) {
                    PortError::NotFound(_) => PortError::NotFound(format!("blob {path}")),
                    other => other,
                })
            }
        }
    }
}

/// [`TransferUrls`] as S3 presigned requests (SigV4 query signing with the function's own credentials).
///
/// Uploads are signed together with the SSE-KMS headers, so the object a caller uploads is encrypted under the
/// project's key exactly like the store's own writes (and the bucket policy's "deny unencrypted puts" holds).
#[derive(Debug, Clone)]
pub struct S3TransferUrls {
    client: Client,
    bucket: String,
    kms_key_id: String,
}

impl S3TransferUrls {
    /// Presigned requests for objects in `bucket`, uploads encrypted under `kms_key_id`.
    pub fn new(client: Client, bucket: String, kms_key_id: String) -> Self {
        S3TransferUrls { client, bucket, kms_key_id }
    }
}

fn presigning(ttl: std::time::Duration) -> PortResult<PresigningConfig> {
    PresigningConfig::expires_in(ttl).map_err(|e| PortError::Invalid(format!("presigning: {e}")))
}

fn transfer_url(
    method: &'static str,
    request: aws_sdk_s3::presigning::PresignedRequest,
    expires_at: OffsetDateTime,
) -> TransferUrl {
    // `host` is implied by the URL; every other signed header must be sent as given.
    let headers = request
        .headers()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    TransferUrl { method, url: request.uri().to_owned(), headers, expires_at }
}

#[async_trait]
impl TransferUrls for S3TransferUrls {
    async fn upload_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> PortResult<TransferUrl> {
        check_path(path)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(path)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key_id)
            .bucket_key_enabled(true)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| classify_error("PutObject (presign)", &e, &[], &[]))?;
        Ok(transfer_url("PUT", request, now + ttl))
    }

    async fn download_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> PortResult<TransferUrl> {
        check_path(path)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(path)
            .response_content_type(content_type)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| classify_error("GetObject (presign)", &e, &[], &[]))?;
        Ok(transfer_url("GET", request, now + ttl))
    }
}
