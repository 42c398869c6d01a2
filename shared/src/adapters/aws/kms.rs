//! [`KeyService`] over AWS KMS: data keys from a symmetric key, ES384 signatures from an `ECC_NIST_P384` key.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha384};
use tokio::sync::OnceCell;

use super::classify_error;
use crate::ports::{DataKey, EncryptionContext, KeyService, PortError, PortResult};

/// KMS accepts at most this many bytes as a `RAW` message to sign; longer messages are hashed here and signed as a
/// `DIGEST` (the signature is the same ES384 signature either way).
const MAX_RAW_MESSAGE: usize = 4096;

/// KMS error codes that mean "this ciphertext does not open under this key and context".
const INTEGRITY_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

/// The [`KeyService`] port over AWS KMS.
#[derive(Debug, Clone)]
pub struct KmsKeyService {
    client: Client,
    data_key_id: String,
    signing_key_id: String,
    /// Uncompressed SEC1 public key of the signing key, fetched once.
    public_key: Arc<OnceCell<Vec<u8>>>,
}

impl KmsKeyService {
    /// A key service generating data keys under the symmetric key `data_key_id` and signing with the
    /// `ECC_NIST_P384` / `SIGN_VERIFY` key `signing_key_id` (key ids, ARNs or aliases).
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

/// Converts a DER-encoded ECDSA P-384 signature (as KMS returns it) to the fixed 96-byte `r || s` form of JWS.
fn der_to_fixed(der: &[u8]) -> PortResult<Vec<u8>> {
    let signature = p384::ecdsa::Signature::from_der(der)
        .map_err(|_| PortError::Integrity("KMS returned a malformed ECDSA signature".to_owned()))?;
    Ok(signature.to_bytes().to_vec())
}

/// Converts a DER SubjectPublicKeyInfo (as KMS returns it) to an uncompressed SEC1 point (97 bytes).
fn spki_to_sec1(der: &[u8]) -> PortResult<Vec<u8>> {
    let key = p384::PublicKey::from_public_key_der(der)
        .map_err(|_| PortError::Integrity("KMS signing key is not a P-384 public key".to_owned()))?;
    Ok(key.to_encoded_point(false).as_bytes().to_vec())
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

    async fn sign_es384(&self, message: &[u8]) -> PortResult<Vec<u8>> {
        let request =
            self.client.sign().key_id(&self.signing_key_id).signing_algorithm(SigningAlgorithmSpec::EcdsaSha384);
        let request = if message.len() <= MAX_RAW_MESSAGE {
            request.message(Blob::new(message)).message_type(MessageType::Raw)
        } else {
            request.message(Blob::new(Sha384::digest(message).to_vec())).message_type(MessageType::Digest)
        };
        let output = request.send().await.map_err(|e| classify_error("Sign", &e, &[], &[]))?;
        let der = output.signature().ok_or_else(|| PortError::Unavailable("Sign returned no signature".to_owned()))?;
        der_to_fixed(der.as_ref())
    }

    async fn signing_public_key(&self) -> PortResult<Vec<u8>> {
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
                spki_to_sec1(der.as_ref())
            })
            .await?;
        Ok(key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::Signer;
    use p384::ecdsa::{DerSignature, SigningKey};
    use p384::pkcs8::EncodePublicKey;

    #[test]
    fn converts_der_signature_and_spki_key() {
        let signing = SigningKey::from_slice(&[7u8; 48]).expect("valid scalar");
        let der: DerSignature = signing.sign(b"message");
        let fixed = der_to_fixed(der.as_bytes()).expect("converts");
        assert_eq!(fixed.len(), 96);

        let spki = signing.verifying_key().to_public_key_der().expect("spki");
        let sec1 = spki_to_sec1(spki.as_bytes()).expect("converts");
        assert_eq!(sec1.len(), 97);
        assert_eq!(sec1[0], 0x04);
        assert!(der_to_fixed(b"not der").is_err());
        assert!(spki_to_sec1(b"not der").is_err());
    }
}
