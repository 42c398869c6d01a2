//! [`KeyService`] over AWS KMS: data keys from a symmetric key, RS256 token signatures from an `RSA_2048` key.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use tokio::sync::OnceCell;

use super::classify_error;
use crate::ports::{DataKey, EncryptionContext, KeyService, PortError, PortResult};

/// KMS accepts at most this many bytes as a `RAW` message to sign. An access token's signing input is a few hundred
/// bytes, so a longer one is refused rather than signed as a `DIGEST` (a path no token takes, and one the test
/// emulator does not sign the way KMS does).
const MAX_RAW_MESSAGE: usize = 4096;

/// KMS error codes that mean "this ciphertext does not open under this key and context".
const INTEGRITY_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

/// The [`KeyService`] port over AWS KMS.
#[derive(Debug, Clone)]
pub struct KmsKeyService {
    client: Client,
    data_key_id: String,
    signing_key_id: String,
    /// The token key's public half (DER `RSAPublicKey`), fetched once.
    public_key: Arc<OnceCell<Vec<u8>>>,
}

impl KmsKeyService {
    /// A key service generating data keys under the symmetric key `data_key_id` and signing with the
    /// `RSA_2048` / `SIGN_VERIFY` key `signing_key_id` (key ids, ARNs or aliases).
    pub fn new(client: Client, data_key_id: String, signing_key_id: String) -> Self {
        KmsKeyService { client, data_key_id, signing_key_id, public_key: Arc::new(OnceCell::new()) }
    }
}

fn context_map(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    if context.0.is_empty() {
        None
    } else {
        Some(context.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

fn key_bytes(plaintext: &[u8]) -> PortResult<[u8; 32]> {
    <[u8; 32]>::try_from(plaintext)
        .map_err(|_| PortError::Integrity(format!("KMS returned a {}-byte data key, expected 32", plaintext.len())))
}

/// The `RSAPublicKey` (PKCS#1) of the DER SubjectPublicKeyInfo KMS returns; refuses anything but an RSA key of
/// 2048 bits or more.
fn spki_to_rsa_public_key(der: &[u8]) -> PortResult<Vec<u8>> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(der)
        .map_err(|_| PortError::Integrity("KMS signing key is not an RSA public key".to_owned()))?;
    if key.as_ref().len() < 256 {
        return Err(PortError::Integrity("KMS signing key is shorter than 2048 bits".to_owned()));
    }
    Ok(key.as_ref().to_vec())
}

#[async_trait]
impl KeyService for KmsKeyService {
    async fn generate_data_key(&self, context: &EncryptionContext) -> PortResult<DataKey> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.data_key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|e| classify_error("GenerateDataKey", &e, &[], &[]))?;
        let plaintext = output
            .plaintext()
            .ok_or_else(|| PortError::Unavailable("GenerateDataKey returned no plaintext".to_owned()))?;
        let wrapped = output
            .ciphertext_blob()
            .ok_or_else(|| PortError::Unavailable("GenerateDataKey returned no ciphertext".to_owned()))?;
        Ok(DataKey { plaintext: key_bytes(plaintext.as_ref())?, wrapped: wrapped.as_ref().to_vec() })
    }

    async fn decrypt_data_key(&self, wrapped: &[u8], context: &EncryptionContext) -> PortResult<[u8; 32]> {
        let output = match self
            .client
            .decrypt()
            .key_id(&self.data_key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(context_map(context))
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) => {
                if let Some(DecryptError::InvalidCiphertextException(_) | DecryptError::IncorrectKeyException(_)) =
                    err.as_service_error()
                {
                    return Err(PortError::Integrity(
                        "data key does not decrypt under this key and encryption context".to_owned(),
                    ));
                }
                return Err(match classify_error("Decrypt", &err, &[], &[]) {
                    PortError::Invalid(detail) if INTEGRITY_CODES.iter().any(|c| detail.contains(c)) => {
                        PortError::Integrity(detail)
                    }
                    other => other,
                });
            }
        };
        let plaintext =
            output.plaintext().ok_or_else(|| PortError::Unavailable("Decrypt returned no plaintext".to_owned()))?;
        key_bytes(plaintext.as_ref())
    }

    async fn sign_rs256(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        let request = self
            .client
            .sign()
            .key_id(&self.signing_key_id)
            .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256);
        if message.len() > MAX_RAW_MESSAGE {
            return Err(PortError::Invalid(format!("a token to sign is at most {MAX_RAW_MESSAGE} bytes")));
        }
        let request = request.message(Blob::new(message)).message_type(MessageType::Raw);
        let output = request.send().await.map_err(|e| classify_error("Sign", &e, &[], &[]))?;
        let signature =
            output.signature().ok_or_else(|| PortError::Unavailable("Sign returned no signature".to_owned()))?;
        Ok(signature.as_ref().to_vec())
    }

    async fn token_public_key(&self) -> PortResult<Vec<u8>> {
        let key = self
            .public_key
            .get_or_try_init(|| async {
                let output = self
                    .client
                    .get_public_key()
                    .key_id(&self.signing_key_id)
                    .send()
                    .await
                    .map_err(|e| classify_error("GetPublicKey", &e, &[], &[]))?;
                let der = output
                    .public_key()
                    .ok_or_else(|| PortError::Unavailable("GetPublicKey returned no key".to_owned()))?;
                spki_to_rsa_public_key(der.as_ref())
            })
            .await?;
        Ok(key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::KeyPair as _;

    #[test]
    fn reads_the_rsa_key_out_of_a_subject_public_key_info() {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
        let spki = key.public_key().as_der().expect("spki");
        let pkcs1 = spki_to_rsa_public_key(spki.as_ref()).expect("converts");
        assert_eq!(pkcs1, key.public_key().as_ref());
        assert!(spki_to_rsa_public_key(b"not der").is_err());
    }
}
