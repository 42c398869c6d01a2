//! The key service over keys kept in a local directory.

use std::fmt;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use rand::rngs::OsRng;
use rand::RngCore as _;

use super::create_private_dir;
use crate::ports::{DataKey, EncryptionContext, KeyService, PortError, PortResult};

/// File name of the 256-bit master key (raw bytes).
const MASTER_KEY_FILE: &str = "master.key";
/// File name of the RSA-2048 token key (PKCS#8 DER). (Data directories from before RS256 tokens also hold an unused
/// `signing.pem`.)
const SIGNING_KEY_FILE: &str = "token-signing.p8";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// A wrapped data key: nonce, then the 32-byte key encrypted under the master key, then the GCM tag.
const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// The key service over a local directory: a 256-bit master key wraps data keys (AES-256-GCM, the encryption
/// context as associated data, like KMS), and an RSA-2048 key signs tokens (RS256: verification, which every
/// request with a new token pays, is about ten times cheaper than P-384's).
///
/// Both keys are generated with the OS random source on first use and stored in files of mode 0600.
pub struct LocalKeyService {
    master: LessSafeKey,
    signing: RsaKeyPair,
}

impl fmt::Debug for LocalKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("LocalKeyService").finish_non_exhaustive()
    }
}

impl LocalKeyService {
    /// Loads the keys from `dir` (`master.key`, `token-signing.p8`), generating whichever is missing. The directory is
    /// created with mode 0700 when missing.
    ///
    /// Fails with `Integrity` when a key file exists but does not hold a valid key: silently replacing it would make
    /// every stored document unreadable.
    pub fn load_or_create(dir: &Path) -> PortResult<Self> {
        create_private_dir(dir)?;

        let mut master_bytes = load_or_create_file(&dir.join(MASTER_KEY_FILE), || {
            let mut key = vec![0u8; 32];
            OsRng.fill_bytes(&mut key);
            Ok(key)
        })?;
        let master = UnboundKey::new(&AES_256_GCM, &master_bytes)
            .map(LessSafeKey::new)
            .map_err(|_| PortError::Integrity(format!("{MASTER_KEY_FILE} must hold exactly 32 bytes")));
        master_bytes.fill(0);
        let master = master?;

        let mut der = load_or_create_file(&dir.join(SIGNING_KEY_FILE), || {
            let cannot = |_| PortError::Unavailable("cannot generate the token key".to_owned());
            let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(cannot)?;
            Ok(key.as_der().map_err(cannot)?.as_ref().to_vec())
        })?;
        let signing = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| PortError::Integrity(format!("{SIGNING_KEY_FILE} is not a PKCS#8 DER RSA private key")));
        der.fill(0);

        Ok(LocalKeyService { master, signing: signing? })
    }
}

#[async_trait]
impl KeyService for LocalKeyService {
    async fn generate_data_key(&self, context: &EncryptionContext) -> PortResult<DataKey> {
        let mut plaintext = [0u8; 32];
        OsRng.fill_bytes(&mut plaintext);
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = context.canonical_bytes();
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&plaintext);
        let sealed = self
            .master
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut wrapped[NONCE_LEN..])
            .map_err(|_| PortError::Unavailable("cannot wrap a data key".to_owned()));
        let data_key = sealed.map(|tag| {
            wrapped.extend_from_slice(tag.as_ref());
            DataKey { plaintext, wrapped }
        });
        // `DataKey` zeroes its own copy on drop; this clears the stack copy.
        plaintext.fill(0);
        data_key
    }

    async fn decrypt_data_key(&self, wrapped: &[u8], context: &EncryptionContext) -> PortResult<[u8; 32]> {
        let mismatch = || PortError::Integrity("data key was altered or belongs to another encryption context".into());
        if wrapped.len() != WRAPPED_LEN {
            return Err(mismatch());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| mismatch())?;
        let aad = context.canonical_bytes();
        let mut opened = sealed.to_vec();
        let key = self
            .master
            .open_in_place(nonce, Aad::from(&aad), &mut opened)
            .map_err(|_| mismatch())
            .and_then(|key| <[u8; 32]>::try_from(&*key).map_err(|_| mismatch()));
        opened.fill(0);
        key
    }

    async fn sign_rs256(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        let mut signature = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), message, &mut signature)
            .map_err(|_| PortError::Unavailable("cannot sign".to_owned()))?;
        Ok(signature)
    }

    async fn token_public_key(&self) -> PortResult<Vec<u8>> {
        Ok(self.signing.public_key().as_ref().to_vec())
    }
}

/// Reads `path`, or creates it (mode 0600) with the bytes `make` returns when it does not exist yet.
///
/// Creation writes a temporary file and hard-links it into place: the link fails when another process created the
/// key first, and then that process's key wins, so two runners starting together never end up with different keys.
fn load_or_create_file(path: &Path, make: impl FnOnce() -> PortResult<Vec<u8>>) -> PortResult<Vec<u8>> {
    match read_key_file(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(key_file_error(path, e)),
    }
    let mut bytes = make()?;
    let tmp = temporary_name(path);
    let created = write_private_file(&tmp, &bytes).and_then(|()| std::fs::hard_link(&tmp, path));
    // The temporary name is only a staging area; a leftover one would hold a copy of the key.
    let _ = std::fs::remove_file(&tmp);
    match created {
        Ok(()) => {
            sync_parent(path).map_err(|e| key_file_error(path, e))?;
            Ok(bytes)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bytes.fill(0);
            read_key_file(path).map_err(|e| key_file_error(path, e))
        }
        Err(e) => {
            bytes.fill(0);
            Err(key_file_error(path, e))
        }
    }
}

/// Reads a key file, tightening its mode to 0600 when someone loosened it.
fn read_key_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "key file was readable by others; restricting it to 0600"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(bytes)
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{:016x}.tmp", OsRng.next_u64()));
    PathBuf::from(name)
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes the directory entry of a newly created key so it survives a crash.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn key_file_error(path: &Path, error: std::io::Error) -> PortError {
    PortError::Unavailable(format!("cannot read or create key file {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let context = EncryptionContext::for_document("d", "p");
        let first = LocalKeyService::load_or_create(dir.path()).unwrap();
        let data_key = first.generate_data_key(&context).await.unwrap();
        let public = first.token_public_key().await.unwrap();
        drop(first);

        let second = LocalKeyService::load_or_create(dir.path()).unwrap();
        assert_eq!(second.decrypt_data_key(&data_key.wrapped, &context).await.unwrap(), data_key.plaintext);
        assert_eq!(second.token_public_key().await.unwrap(), public);
    }

    #[tokio::test]
    async fn malformed_wrapped_keys_are_integrity_errors() {
        let dir = tempfile::tempdir().unwrap();
        let keys = LocalKeyService::load_or_create(dir.path()).unwrap();
        let context = EncryptionContext::for_document("d", "p");
        for wrapped in [&[][..], &[0u8; 10][..], &[0u8; WRAPPED_LEN][..], &[0u8; WRAPPED_LEN + 1][..]] {
            assert!(matches!(keys.decrypt_data_key(wrapped, &context).await, Err(PortError::Integrity(_))));
        }
    }

    #[test]
    fn corrupt_key_files_are_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MASTER_KEY_FILE), b"short").unwrap();
        assert!(matches!(LocalKeyService::load_or_create(dir.path()), Err(PortError::Integrity(_))));
        assert_eq!(std::fs::read(dir.path().join(MASTER_KEY_FILE)).unwrap(), b"short");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SIGNING_KEY_FILE), b"not a key").unwrap();
        assert!(matches!(LocalKeyService::load_or_create(dir.path()), Err(PortError::Integrity(_))));
    }

    #[cfg(unix)]
    #[test]
    fn loosened_key_files_are_restricted_again() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        LocalKeyService::load_or_create(dir.path()).unwrap();
        let master = dir.path().join(MASTER_KEY_FILE);
        std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
        LocalKeyService::load_or_create(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn no_temporary_files_are_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        LocalKeyService::load_or_create(dir.path()).unwrap();
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [MASTER_KEY_FILE, SIGNING_KEY_FILE]);
    }
}
