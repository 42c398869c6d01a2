//! Outbound control numbers (ISA13, and the GS06 derived from it), unique per trading partner.
//!
//! They come from an atomic counter in the state store, so they are never reused: not across cold starts, not
//! across concurrent invocations, not across Lambda instances.

use crate::domain::PartnerId;
use crate::ports::{Key, PortError, StateStore};

/// The largest ISA13.
pub const MAX_INTERCHANGE_CONTROL: u64 = 999_999_999;

/// Issues the next outbound interchange control number for `partner`.
pub async fn next_interchange(store: &dyn StateStore, partner: &PartnerId) -> Result<u64, PortError> {
    let n = store.increment(&Key::new(format!("PARTNER#{}", partner.as_str()), "SEQ#ISA13")).await?;
    if n > MAX_INTERCHANGE_CONTROL {
        // Nine digits exhausted: refusing is safer than wrapping into numbers the partner has already seen.
        return Err(PortError::Unavailable("interchange control numbers exhausted for this partner".into()));
    }
    Ok(n)
}

/// A TA1-only interchange rejecting `body` with `note` (e.g. `025` duplicate control number, `006` unregistered
/// sender), numbered from `partner`'s counter and written in the body's delimiters. `None` when no ISA can be read
/// (then there is nobody to address a TA1 to).
pub async fn ta1_rejection(
    store: &dyn StateStore,
    partner: &PartnerId,
    body: &[u8],
    note: &str,
    now: time::OffsetDateTime,
) -> Result<Option<Vec<u8>>, PortError> {
    let Some(fields) = crate::x12::isa::salvage_fields(body) else { return Ok(None) };
    let delimiters = crate::x12::Tokenizer::new(body).map(|t| t.delimiters()).unwrap_or_default();
    let control = next_interchange(store, partner).await?;
    let env = crate::x12::ack::OutboundEnvelope::answering(&fields, control, now);
    Ok(Some(crate::x12::ack::ta1_interchange(delimiters, &fields, env, false, note)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;

    #[tokio::test]
    async fn numbers_are_unique_per_partner() {
        let store = MemoryStateStore::default();
        let a = PartnerId::parse("a").unwrap();
        let b = PartnerId::parse("b").unwrap();
        assert_eq!(next_interchange(&store, &a).await.unwrap(), 1);
        assert_eq!(next_interchange(&store, &a).await.unwrap(), 2);
        assert_eq!(next_interchange(&store, &b).await.unwrap(), 1);
    }
}
