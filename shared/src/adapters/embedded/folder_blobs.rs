//! The blob store over a directory of files.

use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rand::RngCore as _;

use std::sync::Arc;

use super::redb_store::SMALL_BLOB_MAX;
use super::{create_private_dir, RedbStateStore};
use crate::ports::{BlobStore, PortError, PortResult};

/// The blob store over a directory: one file per object, relative `/`-separated paths.
///
/// Writes go to a temporary file in the target's directory, are flushed to disk, then renamed over the target, so a
/// reader sees the old object or the new one, never a torn write. Reads and deletes use `tokio::fs`; a write runs as
/// one blocking task. Files are mode 0600 and directories 0700 on unix.
///
/// With [`FolderBlobStore::with_small_objects`], objects up to [`SMALL_BLOB_MAX`] bytes are kept in the state
/// database instead (one file and two fsyncs each would cost more than the request's whole commit): they join the
/// database's group commit and become durable with the record that names them.
#[derive(Clone)]
pub struct FolderBlobStore {
    root: PathBuf,
    small: Option<Arc<RedbStateStore>>,
}

impl std::fmt::Debug for FolderBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderBlobStore").field("root", &self.root).field("small", &self.small.is_some()).finish()
    }
}

impl FolderBlobStore {
    /// Opens the store rooted at `root`, creating the directory (mode 0700) when missing.
    pub fn open(root: &Path) -> PortResult<Self> {
        create_private_dir(root)?;
        Ok(FolderBlobStore { root: root.to_path_buf(), small: None })
    }

    /// Keeps objects up to [`SMALL_BLOB_MAX`] bytes in `db` (see the type's docs).
    pub fn with_small_objects(mut self, db: Arc<RedbStateStore>) -> Self {
        self.small = Some(db);
        self
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind an object path, after validating it cannot leave the root.
    fn resolve(&self, path: &str) -> PortResult<PathBuf> {
        validate_blob_path(path)?;
        Ok(self.root.join(path))
    }
}

/// Accepts only relative `/`-separated paths whose components are plain names, so no object path can escape the
/// store's root or mean different files on different platforms. S3 keys are freer; callers build paths from ids.
pub(crate) fn validate_blob_path(path: &str) -> PortResult<()> {
    let invalid = |why: &str| Err(PortError::Invalid(format!("blob path {path:?} {why}")));
    if path.is_empty() {
        return invalid("is empty");
    }
    if path.starts_with('/') {
        return invalid("is absolute");
    }
    if path.contains('\\') {
        return invalid("contains a backslash");
    }
    if path.contains('\0') {
        return invalid("contains a NUL byte");
    }
    for component in path.split('/') {
        match component {
            "" => return invalid("has an empty component"),
            "." | ".." => return invalid("has a relative component"),
            _ => {}
        }
    }
    Ok(())
}

#[async_trait]
impl BlobStore for FolderBlobStore {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> PortResult<()> {
        let target = self.resolve(path)?;
        if let Some(db) = &self.small {
            if bytes.len() <= SMALL_BLOB_MAX {
                return db.put_blob(path, bytes);
            }
            // A large object replacing a small one at the same path: the small one must not shadow it.
            if db.get_blob(path)?.is_some() {
                db.delete_blob(path)?;
            }
        }
        // One trip to the blocking pool for the whole create-write-sync-rename sequence, rather than one per step.
        let written = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
            .await
            .map_err(|e| PortError::Unavailable(format!("blob write task failed: {e}")))?;
        written.map_err(|e| put_error(path, e))
    }

    async fn get(&self, path: &str) -> PortResult<Vec<u8>> {
        let file = self.resolve(path)?;
        if let Some(bytes) = self.small.as_ref().map(|db| db.get_blob(path)).transpose()?.flatten() {
            return Ok(bytes);
        }
        tokio::fs::read(&file).await.map_err(|e| io_error("read", path, e))
    }

    async fn delete(&self, path: &str) -> PortResult<()> {
        let file = self.resolve(path)?;
        if let Some(db) = &self.small {
            if db.get_blob(path)?.is_some() {
                db.delete_blob(path)?;
            }
        }
        match tokio::fs::remove_file(&file).await {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(io_error("delete", path, e)),
        }
    }

    async fn size(&self, path: &str) -> PortResult<u64> {
        let file = self.resolve(path)?;
        if let Some(bytes) = self.small.as_ref().map(|db| db.get_blob(path)).transpose()?.flatten() {
            return Ok(bytes.len() as u64);
        }
        match tokio::fs::metadata(&file).await {
            Ok(meta) if meta.is_file() => Ok(meta.len()),
            Ok(_) => Err(PortError::NotFound(format!("blob {path:?}"))),
            Err(e) => Err(io_error("stat", path, e)),
        }
    }
    async fn sync(&self) -> PortResult<()> {
        match &self.small {
            Some(db) => db.sync().await,
            None => Ok(()),
        }
    }
}

/// Whether an I/O error means "no object at this path" (a directory there is not an object either).
fn is_absent(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory)
}

fn io_error(action: &str, path: &str, error: std::io::Error) -> PortError {
    if is_absent(&error) {
        PortError::NotFound(format!("blob {path:?}"))
    } else {
        PortError::Unavailable(format!("cannot {action} blob {path:?}: {error}"))
    }
}

/// A write fails as `Invalid` when the path runs into an existing object or directory (`a` vs `a/b`).
fn put_error(path: &str, error: std::io::Error) -> PortError {
    match error.kind() {
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            PortError::Invalid(format!("blob path {path:?} collides with another object: {error}"))
        }
        _ => PortError::Unavailable(format!("cannot write blob {path:?}: {error}")),
    }
}

/// Writes `bytes` to a temporary file beside `target`, flushes it, renames it over `target` and flushes the
/// directory, so a crash leaves the old object or the new one. Missing directories are created with mode 0700.
fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let Some(dir) = target.parent() else {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "blob path has no parent directory"));
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)?;

    // A fixed-length name: the target's own name may already be at the file system's length limit.
    let tmp = dir.join(format!(".{:016x}.tmp", rand::thread_rng().next_u64()));
    let written = write_new_file(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, target));
    if written.is_err() {
        // Best effort: the temporary file is garbage either way, and the write error is what the caller needs.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Creates `file` (it must not exist, mode 0600) and writes `bytes`, flushed to disk before the caller renames it.
fn write_new_file(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut handle = options.open(file)?;
    handle.write_all(bytes)?;
    handle.sync_all()
}

/// Flushes a directory so a rename inside it survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_the_root_are_invalid() {
        for bad in ["", "/etc/passwd", "a/../b", "..", "a\\b", "a//b", "a/", "./a", "a/./b", "a\0b"] {
            assert!(matches!(validate_blob_path(bad), Err(PortError::Invalid(_))), "{bad:?} accepted");
        }
        for good in ["a", "a/b/c.bin", "payer-1/2026/doc..x", ".hidden"] {
            assert!(validate_blob_path(good).is_ok(), "{good:?} rejected");
        }
    }

    #[tokio::test]
    async fn invalid_paths_are_rejected_by_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderBlobStore::open(dir.path()).unwrap();
        assert!(matches!(store.put("../x", vec![1]).await, Err(PortError::Invalid(_))));
        assert!(matches!(store.get("/x").await, Err(PortError::Invalid(_))));
        assert!(matches!(store.delete("a\\b").await, Err(PortError::Invalid(_))));
        assert!(!dir.path().parent().unwrap().join("x").exists());
    }

    #[tokio::test]
    async fn writes_leave_no_temporary_files_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderBlobStore::open(dir.path()).unwrap();
        store.put("p/doc.bin", vec![1; 10]).await.unwrap();
        store.put("p/doc.bin", vec![2; 5]).await.unwrap();
        assert_eq!(store.get("p/doc.bin").await.unwrap(), vec![2; 5]);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("p"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["doc.bin"]);
    }

    #[tokio::test]
    async fn a_directory_is_not_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderBlobStore::open(dir.path()).unwrap();
        store.put("p/doc.bin", vec![1]).await.unwrap();
        assert!(matches!(store.get("p").await, Err(PortError::NotFound(_))));
        store.delete("p").await.unwrap();
        assert!(matches!(store.get("p/doc.bin/x").await, Err(PortError::NotFound(_))));
        assert!(matches!(store.put("p", vec![1]).await, Err(PortError::Invalid(_))));
        assert!(matches!(store.put("p/doc.bin/x", vec![1]).await, Err(PortError::Invalid(_))));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = FolderBlobStore::open(&dir.path().join("docs")).unwrap();
        store.put("a/b.bin", vec![1]).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("docs/a/b.bin")), 0o600);
        assert_eq!(mode(&dir.path().join("docs/a")), 0o700);
        assert_eq!(mode(&dir.path().join("docs")), 0o700);
    }
}
