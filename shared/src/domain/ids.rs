//! Validated identifier newtypes: an invalid value cannot be constructed, so it cannot reach the domain.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 10 digits.
    #[error("an NPI is 10 digits")]
    NpiFormat,
    /// The Luhn check digit (with the 80840 prefix) does not match.
    #[error("NPI check digit does not match")]
    NpiCheckDigit,
    /// Member id length or characters out of range.
    #[error("a member id is 2 to 80 letters, digits or hyphens")]
    MemberIdFormat,
    /// Partner id out of range.
    #[error("a partner id is 1 to 64 lowercase letters, digits or hyphens")]
    PartnerIdFormat,
}

/// A National Provider Identifier: 10 digits whose last is a Luhn check digit over `80840` + the first nine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Npi(String);

impl Npi {
    /// Validates an NPI.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
            return Err(IdError::NpiFormat);
        }
        // Luhn over the card-issuer prefix 80840 and the first nine digits, doubling from the right.
        let digits = b"80840".iter().chain(&b[..9]).map(|d| u32::from(d - b'0'));
        let all: Vec<u32> = digits.collect();
        let sum: u32 = all
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| {
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 {
                        x - 9
                    } else {
                        x
                    }
                } else {
                    *d
                }
            })
            .sum();
        let check = (10 - sum % 10) % 10;
        if check != u32::from(b[9] - b'0') {
            return Err(IdError::NpiCheckDigit);
        }
        Ok(Npi(s.to_owned()))
    }

    /// The ten digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Npi {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Npi::parse(&s)
    }
}

impl From<Npi> for String {
    fn from(n: Npi) -> String {
        n.0
    }
}

impl fmt::Display for Npi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest caller-supplied identifier the exchange keys records by (submission identifiers, tracking ids,
/// traces, claim references): DynamoDB refuses keys over 1,024 bytes, and a caller's mistake must be a 4xx, not a
/// failed write.
pub const MAX_REFERENCE_LEN: usize = 128;

/// A payer-assigned member id (2..80 characters: letters, digits, hyphen). It is PHI: it is never logged, and its
/// `Debug` form is redacted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberId(String);

impl MemberId {
    /// Validates a member id (case preserved; matching is case-insensitive).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (2..=80).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(MemberId(s.to_owned()))
        } else {
            Err(IdError::MemberIdFormat)
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized form used as a lookup key (upper case).
    pub fn key(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberId(<redacted>)")
    }
}

impl TryFrom<String> for MemberId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        MemberId::parse(&s)
    }
}

impl From<MemberId> for String {
    fn from(m: MemberId) -> String {
        m.0
    }
}

/// A trading partner's id in this exchange (`demo-provider`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartnerId(String);

impl PartnerId {
    /// Validates a partner id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok =
            (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(PartnerId(s.to_owned()))
        } else {
            Err(IdError::PartnerIdFormat)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PartnerId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        PartnerId::parse(&s)
    }
}

impl From<PartnerId> for String {
    fn from(p: PartnerId) -> String {
        p.0
    }
}

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random 128-bit id in hex (token ids, request ids, document names).
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// A request id: 32 lowercase hex digits like [`random_id`], of which the first 12 are the milliseconds since the
/// epoch and the other 20 random (80 bits). Ids made later sort later, so the documents and records a request
/// writes under its id are appended to the ends of the stores' ordered indexes instead of scattered through them
/// (a B-tree page rewritten per request otherwise); the random part keeps two requests of one millisecond apart.
pub fn request_id() -> String {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let millis = u64::try_from(millis).unwrap_or(0) & 0xffff_ffff_ffff;
    let random: [u8; 10] = rand::random();
    format!("{millis:012x}{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_hex_of_the_same_length_and_sort_by_time() {
        let first = request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = request_id();
        for id in [&first, &second] {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        }
        assert!(first < second, "{first} {second}");
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn npi_check_digit() {
        // The CMS example NPI.
        assert!(Npi::parse("1234567893").is_ok());
        assert_eq!(Npi::parse("1234567890"), Err(IdError::NpiCheckDigit));
        assert_eq!(Npi::parse("123456789"), Err(IdError::NpiFormat));
        assert_eq!(Npi::parse("12345678a3"), Err(IdError::NpiFormat));
    }

    #[test]
    fn member_id_is_redacted_in_debug() {
        let m = MemberId::parse("W123-456").unwrap();
        assert_eq!(format!("{m:?}"), "MemberId(<redacted>)");
        assert!(MemberId::parse("A").is_err());
        assert!(MemberId::parse("AB CD").is_err());
    }

    #[test]
    fn partner_id_format() {
        assert!(PartnerId::parse("demo-provider").is_ok());
        assert!(PartnerId::parse("Demo").is_err());
        assert!(PartnerId::parse("").is_err());
    }
}
