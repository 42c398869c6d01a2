//! AWS adapters (feature `aws`): DynamoDB for the state store, S3 for blobs, KMS for keys.
//!
//! [`AwsAdapters::from_env`] loads the AWS configuration once (`aws_config::load_defaults`, which honours
//! `AWS_ENDPOINT_URL`, so the same code runs against moto in tests) and builds each client once per cold start.
//!
//! | variable | used for |
//! |---|---|
//! | `TABLE_NAME` | the single DynamoDB table ([`DynamoStateStore`]) |
//! | `BUCKET_NAME` | the document bucket ([`S3BlobStore`]) |
//! | `DATA_KEY_ID` | the symmetric KMS key for data keys and SSE-KMS ([`KmsKeyService`], [`S3BlobStore`]) |
//! | `SIGNING_KEY_ID` | the `RSA_2048` `SIGN_VERIFY` KMS key for RS256 tokens ([`KmsKeyService`]) |
//! | `AUDIT_DIGEST_BUCKET` | optional: the Object Lock bucket of audit digests (worker and admin functions) |
//! | `AUDIT_SIGNING_KEY_ID` | optional, with the bucket: the `RSA_2048` `SIGN_VERIFY` KMS key that signs digests |

mod dynamodb;
mod kms;
mod s3;

pub use dynamodb::DynamoStateStore;
pub use kms::KmsKeyService;
pub use s3::{S3BlobStore, S3TransferUrls};

use std::sync::Arc;

use aws_config::BehaviorVersion;
// The SDK's shared error types (the same `aws-smithy` types are re-exported by every service crate).
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ports::{BlobStore, KeyService, PortError};
use crate::vault::DocumentVault;

/// The three AWS adapters, built from one shared AWS configuration (the AWS twin of
/// [`crate::adapters::embedded::EmbeddedAdapters`]).
#[derive(Debug, Clone)]
pub struct AwsAdapters {
    /// The state store over the DynamoDB table named by `TABLE_NAME`.
    pub store: Arc<DynamoStateStore>,
    /// The blob store over the S3 bucket named by `BUCKET_NAME`.
    pub blobs: Arc<S3BlobStore>,
    /// The key service over the KMS keys named by `DATA_KEY_ID` and `SIGNING_KEY_ID`.
    pub keys: Arc<KmsKeyService>,
    /// Presigned URLs into the same bucket, for documents larger than a Lambda payload.
    pub transfers: Arc<S3TransferUrls>,
    /// The audit digest bucket and the audit-signing key, when both are configured.
    pub audit_sealing: Option<(Arc<S3BlobStore>, Arc<KmsKeyService>)>,
}

impl AwsAdapters {
    /// Loads the AWS configuration once and builds the DynamoDB, S3 and KMS adapters from it.
    ///
    /// Resource names come from `TABLE_NAME`, `BUCKET_NAME`, `DATA_KEY_ID` and `SIGNING_KEY_ID`; a missing or
    /// empty variable is [`PortError::Invalid`] naming it. When `AWS_ENDPOINT_URL` is set (a local endpoint such as
    /// moto), S3 uses path-style addressing.
    pub async fn from_env() -> Result<Self, PortError> {
        let table = required_env("TABLE_NAME")?;
        let bucket = required_env("BUCKET_NAME")?;
        let data_key_id = required_env("DATA_KEY_ID")?;
        let signing_key_id = required_env("SIGNING_KEY_ID")?;

        let config = aws_config::load_defaults(BehaviorVersion::latest()).await;

        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let kms = aws_sdk_kms::Client::new(&config);
        let local_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some_and(|v| !v.is_empty());
        let s3_config = aws_sdk_s3::config::Builder::from(&config).force_path_style(local_endpoint).build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_config);

        let audit_sealing = match (optional_env("AUDIT_DIGEST_BUCKET"), optional_env("AUDIT_SIGNING_KEY_ID")) {
            (Some(digest_bucket), Some(audit_key)) => {
                let digests = Arc::new(S3BlobStore::new(s3.clone(), digest_bucket, data_key_id.clone()));
                let signer = Arc::new(KmsKeyService::new(kms.clone(), data_key_id.clone(), audit_key));
                Some((digests, signer))
            }
            _ => None,
        };
        Ok(AwsAdapters {
            audit_sealing,
            store: Arc::new(DynamoStateStore::new(dynamodb, table)),
            transfers: Arc::new(S3TransferUrls::new(s3.clone(), bucket.clone(), data_key_id.clone())),
            blobs: Arc::new(S3BlobStore::new(s3, bucket, data_key_id.clone())),
            keys: Arc::new(KmsKeyService::new(kms, data_key_id, signing_key_id)),
        })
    }

    /// A document vault over these adapters' blob store (S3) and key service (KMS).
    pub fn vault(&self) -> DocumentVault {
        let blobs: Arc<dyn BlobStore> = self.blobs.clone();
        let keys: Arc<dyn KeyService> = self.keys.clone();
        DocumentVault::new(blobs, keys)
    }
}

/// Reads an optional environment variable; empty counts as unset.
fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a required, non-empty environment variable.
fn required_env(name: &str) -> Result<String, PortError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        Ok(_) => Err(PortError::Invalid(format!("environment variable {name} is empty"))),
        Err(_) => Err(PortError::Invalid(format!("environment variable {name} is not set"))),
    }
}

/// Maps an SDK error to a port error: `conflict_codes` become [`PortError::Conflict`], `not_found_codes`
/// [`PortError::NotFound`], request validation errors [`PortError::Invalid`], and everything else (throttling,
/// service faults, timeouts, network failures) [`PortError::Unavailable`].
pub(crate) fn classify_error<E, R>(
    operation: &str,
    err: &SdkError<E, R>,
    conflict_codes: &[&str],
    not_found_codes: &[&str],
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = DisplayErrorContext(err);
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            if conflict_codes.contains(&code) {
                PortError::Conflict(format!("{operation}: {code}"))
            } else if not_found_codes.contains(&code) {
                PortError::NotFound(format!("{operation}: {code}"))
            } else if code == "ValidationException" || code == "InvalidParameterValue" || code == "InvalidRequest" {
                PortError::Invalid(format!("{operation}: {detail}"))
            } else {
                PortError::Unavailable(format!("{operation}: {detail}"))
            }
        }
        SdkError::ConstructionFailure(_) => PortError::Invalid(format!("{operation}: {detail}")),
        _ => PortError::Unavailable(format!("{operation}: {detail}")),
    }
}
