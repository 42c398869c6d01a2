//! JSON Web Signatures from trading partners: compact JWS verification against a registered JWK Set (ES384 and
//! RS384, the two algorithms CDS Hooks and SMART Backend Services allow), and the registered-claims checks both
//! specifications make (issuer, audience, expiry, issued-at, a `jti` to protect against replay).
//!
//! Verification is pure (no I/O): the caller finds the partner's JWK Set and keeps the replay ledger
//! ([`crate::domain::replay`]). Errors name what failed, never the token or its claims.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest compact JWS accepted (a few kilobytes is plenty; a bound keeps decoding cheap).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew tolerated on `iat` and `exp`.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// Why a JWS or its claims were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// Not a compact JWS with a JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not ES384 or RS384 (`none` and HMAC are never accepted).
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// No registered key has the token's `kid` (and a usable type for its `alg`).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim: {0}")]
    Claim(&'static str),
    /// `aud` does not name this service.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `iat` is in the future, or `exp` is further away than the allowed lifetime.
    #[error("issued-at or lifetime out of range")]
    Lifetime,
}

/// A JSON Web Key (RFC 7517), public members only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `EC` or `RSA`.
    pub kty: String,
    /// Key id, matched against the JWS header's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm, when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// EC curve (`P-384`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Other members (`use`, `key_ops`, ...), kept.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl Jwk {
    /// The ES384 public JWK of a P-384 key given as an uncompressed SEC1 point (`0x04 || x || y`); `None` for
    /// anything else.
    pub fn ec_p384(kid: &str, sec1_uncompressed: &[u8]) -> Option<Jwk> {
        if sec1_uncompressed.len() != 97 || sec1_uncompressed[0] != 0x04 {
            return None;
        }
        Some(Jwk {
            kty: "EC".into(),
            kid: Some(kid.into()),
            alg: Some("ES384".into()),
            crv: Some("P-384".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&sec1_uncompressed[1..49])),
            y: Some(URL_SAFE_NO_PAD.encode(&sec1_uncompressed[49..])),
            n: None,
            e: None,
            other: Default::default(),
        })
    }

    /// The RS384 public JWK of an RSA key given by its big-endian modulus and exponent.
    pub fn rsa(kid: &str, modulus: &[u8], exponent: &[u8]) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: Some(kid.into()),
            alg: Some("RS384".into()),
            crv: None,
            x: None,
            y: None,
            n: Some(URL_SAFE_NO_PAD.encode(modulus)),
            e: Some(URL_SAFE_NO_PAD.encode(exponent)),
            other: Default::default(),
        }
    }
}

/// A JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The JWS protected header members this module reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwsHeader {
    /// Signature algorithm.
    pub alg: String,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Media type (`JWT`).
    #[serde(default)]
    pub typ: Option<String>,
    /// JWK Set URL (CDS Hooks allows it; only registered keys are trusted, so it is read, not fetched).
    #[serde(default)]
    pub jku: Option<String>,
}

/// A compact JWS split into its parts, not yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedJws<'a> {
    /// The protected header.
    pub header: JwsHeader,
    /// The payload, decoded as JSON.
    pub claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> UnverifiedJws<'a> {
    /// Splits and decodes `token`. The claims are not to be trusted until [`UnverifiedJws::verify`] succeeds; they
    /// are read first only to find the issuer's keys.
    pub fn parse(token: &'a str) -> Result<Self, JoseError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JoseError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JoseError::Malformed("not three dot-separated parts"));
        };
        let header: JwsHeader = decode_json(h).ok_or(JoseError::Malformed("header is not base64url JSON"))?;
        let claims: Value = decode_json(p).ok_or(JoseError::Malformed("payload is not base64url JSON"))?;
        if !claims.is_object() {
            return Err(JoseError::Malformed("payload is not a JSON object"));
        }
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JoseError::Malformed("signature is not base64url"))?;
        Ok(UnverifiedJws { header, claims, signing_input: &token[..h.len() + 1 + p.len()], signature })
    }

    /// The unverified `iss` claim (to look up whose keys verify the token).
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Verifies the signature with the key of `jwks` that the header's `kid` names (or, without a `kid`, any key of
    /// the right type). Returns the claims.
    pub fn verify(self, jwks: &Jwks) -> Result<Value, JoseError> {
        let alg = Algorithm::from_name(&self.header.alg)?;
        let mut candidates = jwks.keys.iter().filter(|k| {
            alg.fits(k)
                && match (&self.header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        });
        let mut found = false;
        let verified = candidates.any(|key| {
            found = true;
            alg.verify(key, self.signing_input.as_bytes(), &self.signature)
        });
        match (verified, found) {
            (true, _) => Ok(self.claims),
            (false, true) => Err(JoseError::BadSignature),
            (false, false) => Err(JoseError::UnknownKey),
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Es384,
    Rs384,
}

impl Algorithm {
    fn from_name(alg: &str) -> Result<Self, JoseError> {
        match alg {
            "ES384" => Ok(Algorithm::Es384),
            "RS384" => Ok(Algorithm::Rs384),
            _ => Err(JoseError::UnsupportedAlgorithm),
        }
    }

    fn fits(self, key: &Jwk) -> bool {
        let alg_ok = |name: &str| key.alg.as_deref().is_none_or(|a| a == name);
        match self {
            Algorithm::Es384 => key.kty == "EC" && key.crv.as_deref() == Some("P-384") && alg_ok("ES384"),
            Algorithm::Rs384 => key.kty == "RSA" && alg_ok("RS384"),
        }
    }

    fn verify(self, key: &Jwk, message: &[u8], sig: &[u8]) -> bool {
        let b64 = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match self {
            Algorithm::Es384 => {
                let (Some(x), Some(y)) = (b64(&key.x), b64(&key.y)) else { return false };
                if x.len() != 48 || y.len() != 48 || sig.len() != 96 {
                    return false;
                }
                let mut point = Vec::with_capacity(97);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(message, sig).is_ok()
            }
            Algorithm::Rs384 => {
                let (Some(n), Some(e)) = (b64(&key.n), b64(&key.e)) else { return false };
                RsaPublicKeyComponents { n: strip_zeros(&n), e: strip_zeros(&e) }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA384, message, sig)
                    .is_ok()
            }
        }
    }
}

/// Big-endian integers in JWKs may carry a leading zero byte; aws-lc-rs wants none.
fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The registered claims both CDS Hooks and SMART Backend Services require, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredClaims {
    /// Issuer.
    pub iss: String,
    /// Subject (client id), when present.
    pub sub: Option<String>,
    /// Expiry, epoch seconds.
    pub exp: i64,
    /// Issued at, epoch seconds (absent only where the specification makes it optional).
    pub iat: Option<i64>,
    /// Token id.
    pub jti: String,
}

/// Checks `iss`, `aud` (a string or an array naming `audience`), `exp` (not passed), `iat` (present, not in the
/// future) and `jti` (present), and that the token lives at most `max_lifetime_secs` from now: CDS Hooks' rules.
pub fn check_claims(
    claims: &Value,
    audience: &str,
    now: i64,
    max_lifetime_secs: i64,
) -> Result<RegisteredClaims, JoseError> {
    let registered = check_claims_optional_iat(claims, audience, now, max_lifetime_secs)?;
    if registered.iat.is_none() {
        return Err(JoseError::Claim("iat"));
    }
    Ok(registered)
}

/// A SMART Backend Services client assertion (RFC 7523): the registered claims of [`check_claims`], except that
/// `iat` is optional, plus `sub` equal to `iss` (both the client id). Returns the checked claims; `iss` is the
/// client id.
pub fn check_client_assertion(
    claims: &Value,
    audience: &str,
    now: i64,
    max_lifetime_secs: i64,
) -> Result<RegisteredClaims, JoseError> {
    let registered = check_claims_optional_iat(claims, audience, now, max_lifetime_secs)?;
    if registered.sub.as_deref() != Some(registered.iss.as_str()) {
        return Err(JoseError::Claim("sub"));
    }
    Ok(registered)
}

fn check_claims_optional_iat(
    claims: &Value,
    audience: &str,
    now: i64,
    max_lifetime_secs: i64,
) -> Result<RegisteredClaims, JoseError> {
    let text = |name: &'static str| -> Result<String, JoseError> {
        match claims.get(name).and_then(Value::as_str) {
            Some(s) if !s.is_empty() && s.len() <= 1024 => Ok(s.to_owned()),
            _ => Err(JoseError::Claim(name)),
        }
    };
    let number = |name: &'static str| claims.get(name).and_then(Value::as_i64).ok_or(JoseError::Claim(name));
    let iss = text("iss")?;
    let jti = text("jti")?;
    let exp = number("exp")?;
    let iat = match claims.get("iat") {
        None => None,
        Some(_) => Some(number("iat")?),
    };
    let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => same_url(a, audience),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| same_url(a, audience)),
        _ => return Err(JoseError::Claim("aud")),
    };
    if !aud_ok {
        return Err(JoseError::WrongAudience);
    }
    if exp.saturating_add(CLOCK_SKEW_SECS) <= now {
        return Err(JoseError::Expired);
    }
    let iat_wrong = iat.is_some_and(|iat| iat > now + CLOCK_SKEW_SECS || exp < iat);
    if iat_wrong || exp > now.saturating_add(max_lifetime_secs).saturating_add(CLOCK_SKEW_SECS) {
        return Err(JoseError::Lifetime);
    }
    Ok(RegisteredClaims { iss, sub, exp, iat, jti })
}

/// URLs compared without a trailing slash.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Test and tooling helper: the base64url encoding JWS uses.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::KeyPair as _;
    use serde_json::json;

    fn sign_es384(header: &Value, claims: &Value) -> (String, Jwk) {
        use p384::ecdsa::signature::Signer as _;
        let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig: p384::ecdsa::Signature = key.sign(input.as_bytes());
        let point = key.verifying_key().to_encoded_point(false);
        // No `alg`: a key that does not state one fits its curve's algorithm.
        let jwk = Jwk { alg: None, ..Jwk::ec_p384("ec-1", point.as_bytes()).expect("P-384 point") };
        (format!("{input}.{}", b64url(&sig.to_bytes())), jwk)
    }

    fn sign_rs384(header: &Value, claims: &Value) -> (String, Jwk) {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(&signature::RSA_PKCS1_SHA384, &SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let jwk = Jwk::rsa("rsa-1", &public.n, &public.e);
        (format!("{input}.{}", b64url(&sig)), jwk)
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://ehr.example", "sub": "client", "aud": "https://svc/cds-services/x", "exp": now + 300, "iat": now, "jti": "j1"})
    }

    #[test]
    fn es384_and_rs384_verify_against_their_registered_key() {
        let now = 1_700_000_000;
        let (token, jwk) = sign_es384(&json!({"alg": "ES384", "kid": "ec-1", "typ": "JWT"}), &claims(now));
        let jwks = Jwks { keys: vec![jwk] };
        let c = UnverifiedJws::parse(&token).expect("parse").verify(&jwks).expect("verifies");
        let reg = check_claims(&c, "https://svc/cds-services/x/", now, 3600).expect("claims");
        assert_eq!(reg.jti, "j1");

        let (token, jwk) = sign_rs384(&json!({"alg": "RS384", "kid": "rsa-1"}), &claims(now));
        let jwks = Jwks { keys: vec![jwk] };
        UnverifiedJws::parse(&token).expect("parse").verify(&jwks).expect("rs384 verifies");
    }

    #[test]
    fn tampering_unknown_keys_and_other_algorithms_are_refused() {
        let now = 1_700_000_000;
        let (token, jwk) = sign_es384(&json!({"alg": "ES384", "kid": "ec-1"}), &claims(now));
        let jwks = Jwks { keys: vec![jwk.clone()] };
        // Another payload under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut other = claims(now);
        other["sub"] = json!("someone-else");
        let forged = format!("{}.{}.{}", parts[0], b64url(other.to_string().as_bytes()), parts[2]);
        assert_eq!(UnverifiedJws::parse(&forged).expect("parse").verify(&jwks), Err(JoseError::BadSignature));
        // A key id nobody registered.
        let renamed = Jwks { keys: vec![Jwk { kid: Some("ec-2".into()), ..jwk }] };
        assert_eq!(UnverifiedJws::parse(&token).expect("parse").verify(&renamed), Err(JoseError::UnknownKey));
        // alg none / HS256.
        for alg in ["none", "HS256", "ES256"] {
            let h = b64url(json!({"alg": alg}).to_string().as_bytes());
            let t = format!("{h}.{}.{}", parts[1], parts[2]);
            assert_eq!(
                UnverifiedJws::parse(&t).expect("parse").verify(&jwks),
                Err(JoseError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        assert!(matches!(UnverifiedJws::parse("a.b"), Err(JoseError::Malformed(_))));
        assert!(matches!(UnverifiedJws::parse("!!.??.**"), Err(JoseError::Malformed(_))));
    }

    #[test]
    fn claims_are_checked() {
        let now = 1_700_000_000;
        let aud = "https://svc/cds-services/x";
        assert_eq!(check_claims(&claims(now), "https://svc/cds-services/y", now, 600), Err(JoseError::WrongAudience));
        let mut c = claims(now);
        c["aud"] = json!(["https://other", aud]);
        assert!(check_claims(&c, aud, now, 600).is_ok(), "aud may be an array");
        assert_eq!(check_claims(&claims(now - 1000), aud, now, 600), Err(JoseError::Expired));
        assert_eq!(check_claims(&claims(now + 1000), aud, now, 600), Err(JoseError::Lifetime), "iat in the future");
        let mut long = claims(now);
        long["exp"] = json!(now + 7200);
        assert_eq!(check_claims(&long, aud, now, 600), Err(JoseError::Lifetime));
        let mut no_jti = claims(now);
        no_jti.as_object_mut().expect("object").remove("jti");
        assert_eq!(check_claims(&no_jti, aud, now, 600), Err(JoseError::Claim("jti")));
    }

    #[test]
    fn client_assertions_need_sub_equal_to_iss_and_may_omit_iat() {
        let now = 1_700_000_000;
        let aud = "https://exchange/auth/token";
        let mut c = json!({"iss": "demo-provider", "sub": "demo-provider", "aud": aud, "exp": now + 240, "jti": "a1"});
        let reg = check_client_assertion(&c, aud, now, 300).expect("no iat is fine for SMART");
        assert_eq!((reg.iss.as_str(), reg.iat), ("demo-provider", None));
        assert_eq!(check_claims(&c, aud, now, 300), Err(JoseError::Claim("iat")), "CDS Hooks requires iat");
        c["sub"] = json!("someone-else");
        assert_eq!(check_client_assertion(&c, aud, now, 300), Err(JoseError::Claim("sub")));
        c["sub"] = json!("demo-provider");
        c["iat"] = json!("yesterday");
        assert_eq!(check_client_assertion(&c, aud, now, 300), Err(JoseError::Claim("iat")));
        c["iat"] = json!(now);
        c["exp"] = json!(now + 3600);
        assert_eq!(check_client_assertion(&c, aud, now, 300), Err(JoseError::Lifetime), "over five minutes");
    }
}
