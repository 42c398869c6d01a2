//! [`TransferUrls`] for the local runner: one-time URLs the runner itself serves (`/transfer/{token}`, see
//! [`crate::http::transfer`]), the local equivalent of S3 presigned URLs.
//!
//! A grant is an item in the state store (so it survives a restart and is consumed exactly once, by a conditional
//! delete); the token is 128 random bits. The bytes go through the same [`crate::ports::BlobStore`] the vault uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::random_id;
use crate::ports::{Item, Key, PortError, PortResult, StateStore, TransferUrl, TransferUrls};

/// What a one-time URL allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// `PUT` or `GET`.
    pub method: String,
    /// The blob path it reads or writes.
    pub path: String,
    /// The media type an upload must declare, or a download is served as.
    pub content_type: String,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

/// The state-store key of the grant for `token`.
pub fn grant_key(token: &str) -> Key {
    Key::new(format!("TRANSFER#{token}"), "GRANT")
}

/// One-time URLs under `base_url` (`http://127.0.0.1:8080`; empty gives root-relative URLs, as in-process tests
/// use them).
pub struct LocalTransfers {
    store: Arc<dyn StateStore>,
    base_url: String,
}

impl std::fmt::Debug for LocalTransfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTransfers").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl LocalTransfers {
    /// Grants kept in `store`, URLs under `base_url`.
    pub fn new(store: Arc<dyn StateStore>, base_url: impl Into<String>) -> Self {
        LocalTransfers { store, base_url: base_url.into().trim_end_matches('/').to_owned() }
    }

    async fn grant(
        &self,
        method: &'static str,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> PortResult<TransferUrl> {
        super::validate_blob_path(path)?;
        let expires_at = now + ttl;
        let grant = Grant {
            method: method.to_owned(),
            path: path.to_owned(),
            content_type: content_type.to_owned(),
            expires: expires_at.unix_timestamp(),
        };
        let token = random_id();
        let body = serde_json::to_value(&grant).map_err(|e| PortError::Invalid(format!("transfer grant: {e}")))?;
        self.store.put_new(Item::new(grant_key(&token), body).with_ttl(grant.expires)).await?;
        let headers =
            if method == "PUT" { vec![("content-type".to_owned(), content_type.to_owned())] } else { Vec::new() };
        Ok(TransferUrl { method, url: format!("{}/transfer/{token}", self.base_url), headers, expires_at })
    }
}

#[async_trait]
impl TransferUrls for LocalTransfers {
    async fn upload_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> PortResult<TransferUrl> {
        self.grant("PUT", path, content_type, now, ttl).await
    }

    async fn download_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> PortResult<TransferUrl> {
        self.grant("GET", path, content_type, now, ttl).await
    }
}
