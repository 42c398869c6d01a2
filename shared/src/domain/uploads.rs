//! Staged uploads: a document too large for a Lambda request body is `PUT` by the provider straight to the
//! document store through a transfer URL, then named in `$submit-attachment` by its [`upload_reference`]. The
//! [`Upload`] record says who may use it and what it must be (size, SHA-256, media type); the intake checks the
//! staged bytes against it before they enter the vault, and marks it used in the attachment's own transaction.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ports::{Item, Key, PortError, PortResult, StateStore, WriteOp};

/// The path prefix of an upload reference (`/attachments/uploads/{id}`); an absolute URL ending so is accepted.
pub const UPLOAD_REFERENCE_PATH: &str = "/attachments/uploads/";
/// How long an upload record is kept after its URL expired: a retried submission must still find it.
pub const RECORD_RETENTION_SECS: i64 = 7 * 24 * 3600;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum UploadState {
    /// Issued; the bytes may or may not have arrived.
    Pending,
    /// Submitted: its bytes are now the vault document of this attachment.
    Used {
        /// The attachment.
        attachment: String,
    },
}

/// A staged upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    /// Random id.
    pub id: String,
    /// The trading partner that may submit it.
    pub owner: String,
    /// Declared media type.
    pub content_type: String,
    /// Declared size in bytes.
    pub size: u64,
    /// Declared SHA-256, lowercase hex.
    pub sha256: String,
    /// When the upload URL expires (RFC 3339).
    pub expires: String,
    /// Until when the record is kept (Unix seconds): the URL's expiry plus [`RECORD_RETENTION_SECS`].
    pub retain_until: i64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: UploadState,
}

/// The staging blob path of upload `id`.
pub fn upload_path(id: &str) -> String {
    format!("transfer/uploads/{id}")
}

/// A fresh staging blob path for one download copy.
pub fn download_path() -> String {
    format!("transfer/downloads/{}", crate::domain::ids::random_id())
}

impl Upload {
    /// Where its bytes are staged.
    pub fn path(&self) -> String {
        upload_path(&self.id)
    }
}

/// The reference a provider puts in `Attachment.url` to submit upload `id`.
pub fn upload_reference(id: &str) -> String {
    format!("{UPLOAD_REFERENCE_PATH}{id}")
}

/// The upload id an `Attachment.url` names, if it names one (relative, or absolute on any host).
pub fn referenced_upload(url: &str) -> Option<&str> {
    let path = match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            &rest[rest.find('/')?..]
        }
        None => url,
    };
    let id = path.strip_prefix(UPLOAD_REFERENCE_PATH)?;
    crate::auth::is_hex_digest(id, 32).then_some(id)
}

fn key(id: &str) -> Key {
    Key::new(format!("UPLOAD#{id}"), "UPLOAD")
}

/// Upload records in the state store.
#[derive(Clone)]
pub struct UploadRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for UploadRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadRepo").finish_non_exhaustive()
    }
}

impl UploadRepo {
    /// The repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        UploadRepo { store }
    }

    /// The write that records a new upload (kept until its `retain_until`), for a caller's transaction.
    pub fn create_op(upload: &Upload) -> PortResult<WriteOp> {
        let body = serde_json::to_value(upload).map_err(|e| PortError::Invalid(format!("upload: {e}")))?;
        Ok(WriteOp::PutNew(Item::new(key(&upload.id), body).with_ttl(upload.retain_until)))
    }

    /// The upload and its version.
    pub async fn get(&self, id: &str) -> PortResult<Option<(Upload, u64)>> {
        let Some(item) = self.store.get(&key(id)).await? else { return Ok(None) };
        let upload = serde_json::from_value(item.body.clone()).map_err(|e| PortError::undecodable("upload", &e))?;
        Ok(Some((upload, item.version)))
    }

    /// The write that marks `upload` (read at `version`) used by `attachment`.
    pub fn mark_used_op(upload: &Upload, version: u64, attachment: &str) -> PortResult<WriteOp> {
        let mut used = upload.clone();
        used.state = UploadState::Used { attachment: attachment.to_owned() };
        let body = serde_json::to_value(&used).map_err(|e| PortError::Invalid(format!("upload: {e}")))?;
        let item = Item::new(key(&upload.id), body).with_ttl(upload.retain_until);
        Ok(WriteOp::Update { item, expected_version: version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_uploads_relative_or_absolute() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(referenced_upload(&upload_reference(id)), Some(id));
        assert_eq!(referenced_upload(&format!("https://api.example.org/attachments/uploads/{id}")), Some(id));
        assert_eq!(referenced_upload("https://example.org/Binary/1"), None);
        assert_eq!(referenced_upload("/attachments/uploads/../../x"), None);
        assert_eq!(referenced_upload("https://no-path"), None);
    }
}
