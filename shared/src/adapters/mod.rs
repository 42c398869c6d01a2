//! Adapters: implementations of the [`crate::ports`] traits.
//!
//! - [`embedded`]: real local storage (an ACID embedded database file, AES-256-GCM encrypted files, a local key).
//! - [`memory`]: in-memory fakes, for unit tests only.
//! - `aws` (feature `aws`): DynamoDB, S3 and KMS.
//! - [`notifier`]: rest-hook deliveries over HTTP(S).

#[cfg(feature = "aws")]
pub mod aws;
pub mod contract;
pub mod embedded;
pub mod memory;
pub mod notifier;
