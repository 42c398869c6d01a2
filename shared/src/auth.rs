//! Bearer tokens signed by the exchange's own key (RS256 JWTs), and their verification.
//!
//! The token names a trading partner, its role, the scopes granted and the client that asked. It is signed through
//! the [`KeyService`] port (KMS asymmetric key in AWS, a key file in the data directory locally) and verified with
//! the public half (aws-lc-rs), fetched and parsed once. RSA because every instance verifies each new token once
//! and verification is what an RSA key is fast at (tens of microseconds, against a quarter of a millisecond for
//! ES384 here); signing, once per token, is the slow side and happens in the token endpoint. A verified token is
//! remembered until it expires (bounded, [`VERIFIED_CACHE_CAPACITY`] tokens), so a partner reusing its token pays
//! the verification once per instance; the cache holds only tokens whose signature, issuer and audience checked,
//! keyed by the whole token, and expiry is checked again on every use. Partners get tokens from the SMART Backend Services token
//! endpoint (`functions/auth`); locally also from `exchange-local token PARTNER`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use crate::domain::{Caller, PartnerId, PartnerRole, TradingPartner};
use crate::ports::{KeyService, PortError};

/// Token lifetime: five minutes, as SMART Backend Services recommends.
pub const TOKEN_LIFETIME_SECS: i64 = 300;

/// The JWS algorithm of exchange tokens.
pub const TOKEN_ALG: &str = "RS256";

/// How many verified tokens a [`TokenService`] remembers.
pub const VERIFIED_CACHE_CAPACITY: usize = 1024;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a compact JWS with our header.
    #[error("malformed token")]
    Malformed,
    /// Signature does not verify with the exchange's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// Past `exp` (or issued in the future).
    #[error("token expired")]
    Expired,
    /// Wrong `iss` or `aud`.
    #[error("token was not issued for this exchange")]
    WrongAudience,
    /// The partner it names is not registered.
    #[error("unknown trading partner")]
    UnknownPartner,
    /// The key service is unavailable.
    #[error("token verification unavailable: {0}")]
    Unavailable(#[from] PortError),
}

/// The claims of an exchange token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Partner id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry (epoch seconds).
    pub exp: i64,
    /// Issued at (epoch seconds).
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Partner role.
    pub role: PartnerRole,
    /// The client that asked for the token (SMART `client_id`; tokens from the admin tooling name the partner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

/// Issues and verifies exchange tokens.
pub struct TokenService {
    keys: Arc<dyn KeyService>,
    issuer: String,
    verifying_key: OnceCell<ParsedPublicKey>,
    verified: Mutex<HashMap<String, Verified>>,
    cache_capacity: usize,
}

/// A token that passed every check but expiry, with what it names.
struct Verified {
    caller: Caller,
    exp: i64,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenService {
    /// A token service signing through `keys`, with `issuer` as both `iss` and `aud`.
    pub fn new(keys: Arc<dyn KeyService>, issuer: impl Into<String>) -> Self {
        TokenService {
            keys,
            issuer: issuer.into(),
            verifying_key: OnceCell::new(),
            verified: Mutex::new(HashMap::new()),
            cache_capacity: VERIFIED_CACHE_CAPACITY,
        }
    }

    /// Issues a token for `partner` with every scope it is allowed, valid for `lifetime_secs` from `now` (admin
    /// tooling and the local runner).
    pub async fn issue(
        &self,
        partner: &TradingPartner,
        now: OffsetDateTime,
        lifetime_secs: i64,
    ) -> Result<String, PortError> {
        self.issue_scoped(partner, &partner.scopes, partner.id.as_str(), now, lifetime_secs).await
    }

    /// Issues a token for `partner` granting `scopes`, asked for by `client_id`, valid for `lifetime_secs` from
    /// `now`. The caller decides the grant (the token endpoint grants only scopes the partner is allowed).
    pub async fn issue_scoped(
        &self,
        partner: &TradingPartner,
        scopes: &[String],
        client_id: &str,
        now: OffsetDateTime,
        lifetime_secs: i64,
    ) -> Result<String, PortError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: partner.id.as_str().to_owned(),
            aud: self.issuer.clone(),
            exp: iat + lifetime_secs,
            iat,
            jti: random_id(),
            scope: scopes.join(" "),
            role: partner.role,
            client_id: Some(client_id.to_owned()),
        };
        let header = Header { alg: TOKEN_ALG.into(), typ: "JWT".into() };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(&claims)?);
        let sig = self.keys.sign_rs256(signing_input.as_bytes()).await?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    async fn verifying_key(&self) -> Result<&ParsedPublicKey, AuthError> {
        self.verifying_key
            .get_or_try_init(|| async {
                let der = self.keys.token_public_key().await?;
                ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).map_err(|_| {
                    AuthError::Unavailable(PortError::Invalid("the token public key is not an RSA key".into()))
                })
            })
            .await
    }

    /// Verifies a token's signature, issuer, audience and lifetime, and returns the caller it names.
    pub async fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Caller, AuthError> {
        let t = now.unix_timestamp();
        if let Some(hit) = self.remembered(token, t) {
            return hit;
        }
        let (caller, exp) = self.verify_uncached(token, t).await?;
        self.remember(token, &caller, exp, t);
        Ok(caller)
    }

    fn remembered(&self, token: &str, t: i64) -> Option<Result<Caller, AuthError>> {
        let cache = self.verified.lock().ok()?;
        let hit = cache.get(token)?;
        Some(if t >= hit.exp { Err(AuthError::Expired) } else { Ok(hit.caller.clone()) })
    }

    fn remember(&self, token: &str, caller: &Caller, exp: i64, t: i64) {
        let Ok(mut cache) = self.verified.lock() else { return };
        if cache.len() >= self.cache_capacity {
            cache.retain(|_, v| v.exp > t);
            if cache.len() >= self.cache_capacity {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), Verified { caller: caller.clone(), exp });
    }

    async fn verify_uncached(&self, token: &str, t: i64) -> Result<(Caller, i64), AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != TOKEN_ALG {
            return Err(AuthError::Malformed);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Malformed)?;
        let key = self.verifying_key().await?;
        let signing_input = &token[..h.len() + 1 + c.len()];
        key.verify_sig(signing_input.as_bytes(), &sig).map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = decode_json(c)?;
        if claims.iss != self.issuer || claims.aud != self.issuer {
            return Err(AuthError::WrongAudience);
        }
        // A minute of leeway for clock skew on `iat`, none on `exp`.
        if t >= claims.exp || claims.iat > t + 60 {
            return Err(AuthError::Expired);
        }
        let partner = PartnerId::parse(&claims.sub).map_err(|_| AuthError::Malformed)?;
        let client_id = claims.client_id.unwrap_or_else(|| claims.sub.clone());
        let caller = Caller {
            partner,
            role: claims.role,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            token_id: claims.jti,
            client_id,
        };
        Ok((caller, claims.exp))
    }
}

fn b64_json<T: Serialize>(value: &T) -> Result<String, PortError> {
    let json = serde_json::to_vec(value).map_err(|e| PortError::Invalid(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

pub use crate::domain::ids::{random_id, request_id};

/// Whether `s` is exactly `len` hex digits (a [`random_id`] is 32; a SHA-256 is 64). Checked before such a value
/// from a caller becomes part of a key or a path.
pub fn is_hex_digest(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::LocalKeyService;

    fn partner() -> TradingPartner {
        TradingPartner {
            id: PartnerId::parse("demo-provider").unwrap(),
            role: PartnerRole::Provider,
            name: "Demo".into(),
            npis: vec![],
            provider_ids: vec![],
            x12_sender_ids: vec![],
            scopes: vec!["eligibility".into()],
            jwks: None,
            client_jwks: None,
            cds_issuers: vec![],
            payer_ids: vec![],
        }
    }

    #[tokio::test]
    async fn issue_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(LocalKeyService::load_or_create(dir.path()).unwrap());
        let svc = TokenService::new(keys.clone(), "exchange");
        let now = OffsetDateTime::now_utc();
        let token = svc.issue(&partner(), now, TOKEN_LIFETIME_SECS).await.unwrap();
        let caller = svc.verify(&token, now).await.unwrap();
        assert_eq!(caller.partner.as_str(), "demo-provider");
        assert!(caller.has_scope("eligibility"));

        assert!(matches!(svc.verify(&token, now + time::Duration::seconds(301)).await, Err(AuthError::Expired)));
        // Remembered, and still refused once expired, also by a fresh service that never saw it.
        assert_eq!(svc.verify(&token, now).await.unwrap().partner.as_str(), "demo-provider");
        let fresh = TokenService::new(keys.clone(), "exchange");
        assert!(matches!(fresh.verify(&token, now + time::Duration::seconds(301)).await, Err(AuthError::Expired)));
        let other = TokenService::new(keys, "another-exchange");
        assert!(matches!(other.verify(&token, now).await, Err(AuthError::WrongAudience)));

        // Changing one claim breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("demo-provider", "demo-payer"),
        );
        parts[1] = &forged_claims;
        assert!(matches!(svc.verify(&parts.join("."), now).await, Err(AuthError::BadSignature)));
        assert!(matches!(svc.verify("a.b", now).await, Err(AuthError::Malformed)));
        // A refused token is not remembered: refused again.
        assert!(matches!(svc.verify(&parts.join("."), now).await, Err(AuthError::BadSignature)));
    }

    #[tokio::test]
    async fn cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut svc = TokenService::new(Arc::new(LocalKeyService::load_or_create(dir.path()).unwrap()), "exchange");
        svc.cache_capacity = 4;
        let now = OffsetDateTime::now_utc();
        let short = svc.issue(&partner(), now, 1).await.unwrap();
        svc.verify(&short, now).await.unwrap();
        let mut tokens = vec![];
        for _ in 0..3 {
            tokens.push(svc.issue(&partner(), now, 60).await.unwrap());
            svc.verify(tokens.last().unwrap(), now).await.unwrap();
        }
        // Full: the expired token makes room first, the live ones stay.
        let later = now + time::Duration::seconds(2);
        let next = svc.issue(&partner(), later, 60).await.unwrap();
        svc.verify(&next, later).await.unwrap();
        let cache = svc.verified.lock().unwrap();
        assert_eq!(cache.len(), 4);
        assert!(!cache.contains_key(&short));
        assert!(tokens.iter().all(|t| cache.contains_key(t)));
    }

    #[tokio::test]
    async fn another_key_does_not_verify() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = TokenService::new(Arc::new(LocalKeyService::load_or_create(d1.path()).unwrap()), "exchange");
        let b = TokenService::new(Arc::new(LocalKeyService::load_or_create(d2.path()).unwrap()), "exchange");
        let now = OffsetDateTime::now_utc();
        let token = a.issue(&partner(), now, 60).await.unwrap();
        assert!(matches!(b.verify(&token, now).await, Err(AuthError::BadSignature)));
    }
}
