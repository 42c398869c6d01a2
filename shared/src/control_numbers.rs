//! Outbound control numbers (ISA13, and the GS06 derived from it), unique per trading partner.
//!
//! Each instance reserves a block of [`BLOCK`] numbers at a time from an atomic counter in the state store and
//! issues them from memory, so they are never reused (not across cold starts, concurrent invocations or Lambda
//! instances) while only one answer in [`BLOCK`] pays a durable write for its number. Numbers are unique but not
//! consecutive: what an instance reserved and did not use before it stopped is skipped (X12 asks receivers to
//! detect duplicates, not gaps). Counters from before blocks (one number per increment) are honoured: a block
//! starts past any number the counter could have issued.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::domain::PartnerId;
use crate::ports::{Key, PortError, StateStore};

/// The largest ISA13.
pub const MAX_INTERCHANGE_CONTROL: u64 = 999_999_999;

/// Numbers per reserved block: at a thousand cold starts a day a partner's nine digits last about 27 years.
pub const BLOCK: u64 = 100;

/// Issues outbound interchange control numbers; one per process, shared by its requests.
pub struct ControlNumbers {
    store: Arc<dyn StateStore>,
    /// [`BLOCK`] and [`MAX_INTERCHANGE_CONTROL`] (smaller in tests).
    block: u64,
    max: u64,
    /// Per partner: the next number to issue and the last one of the reserved block.
    blocks: Mutex<HashMap<String, (u64, u64)>>,
}

impl std::fmt::Debug for ControlNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlNumbers").finish_non_exhaustive()
    }
}

impl ControlNumbers {
    /// Numbers reserved from counters in `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        ControlNumbers { store, block: BLOCK, max: MAX_INTERCHANGE_CONTROL, blocks: Mutex::new(HashMap::new()) }
    }

    /// The next outbound interchange control number for `partner`.
    pub async fn next_interchange(&self, partner: &PartnerId) -> Result<u64, PortError> {
        let mut blocks = self.blocks.lock().await;
        if let Some((next, last)) = blocks.get_mut(partner.as_str()) {
            if *next <= *last {
                let n = *next;
                *next += 1;
                return Ok(n);
            }
        }
        // Block b (the counter's new value) covers b·BLOCK ..= b·BLOCK + BLOCK − 1. A counter that issued single
        // numbers up to c is at c, so its next block starts at (c + 1)·BLOCK, past every number it issued.
        let block = self.store.increment(&Key::new(format!("PARTNER#{}", partner.as_str()), "SEQ#ISA13")).await?;
        let first = block.saturating_mul(self.block);
        let last = first.saturating_add(self.block - 1).min(self.max);
        if first > self.max {
            // Nine digits exhausted: refusing is safer than wrapping into numbers the partner has already seen.
            return Err(PortError::Unavailable("interchange control numbers exhausted for this partner".into()));
        }
        blocks.insert(partner.as_str().to_owned(), (first + 1, last));
        Ok(first)
    }
}

/// A TA1-only interchange rejecting `body` with `note` (e.g. `025` duplicate control number, `006` unregistered
/// sender), numbered from `partner`'s counter and written in the body's delimiters. `None` when no ISA can be read
/// (then there is nobody to address a TA1 to).
pub async fn ta1_rejection(
    numbers: &ControlNumbers,
    partner: &PartnerId,
    body: &[u8],
    note: &str,
    now: time::OffsetDateTime,
) -> Result<Option<Vec<u8>>, PortError> {
    let Some(fields) = crate::x12::isa::salvage_fields(body) else { return Ok(None) };
    let delimiters = crate::x12::Tokenizer::new(body).map(|t| t.delimiters()).unwrap_or_default();
    let control = numbers.next_interchange(partner).await?;
    let env = crate::x12::ack::OutboundEnvelope::answering(&fields, control, now);
    Ok(Some(crate::x12::ack::ta1_interchange(delimiters, &fields, env, false, note)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;

    #[tokio::test]
    async fn numbers_are_unique_per_partner_and_across_instances() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::default());
        let a = PartnerId::parse("a").unwrap();
        let b = PartnerId::parse("b").unwrap();
        // Two instances over one store, interleaved, each past its first block.
        let (one, two) = (ControlNumbers::new(store.clone()), ControlNumbers::new(store.clone()));
        let mut issued = std::collections::BTreeSet::new();
        for _ in 0..(BLOCK * 2 + 7) {
            for instance in [&one, &two] {
                let n = instance.next_interchange(&a).await.unwrap();
                assert!((1..=MAX_INTERCHANGE_CONTROL).contains(&n));
                assert!(issued.insert(n), "{n} issued twice");
            }
        }
        // Each instance's own numbers rise; the other partner's counter is its own.
        let first_a = one.next_interchange(&a).await.unwrap();
        assert!(one.next_interchange(&a).await.unwrap() > first_a);
        assert_eq!(one.next_interchange(&b).await.unwrap(), BLOCK);
        // Only one durable increment per block.
        let counter = store.increment(&Key::new("PARTNER#a", "SEQ#ISA13")).await.unwrap();
        assert_eq!(counter, 2 * ((BLOCK * 2 + 7).div_ceil(BLOCK)) + 1);
    }

    #[tokio::test]
    async fn a_counter_from_single_numbers_is_never_reissued_and_the_last_number_is_the_end() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::default());
        let a = PartnerId::parse("a").unwrap();
        let key = Key::new("PARTNER#a", "SEQ#ISA13");
        // The old scheme issued 1..=5.
        for _ in 0..5 {
            store.increment(&key).await.unwrap();
        }
        assert_eq!(ControlNumbers::new(store.clone()).next_interchange(&a).await.unwrap(), 6 * BLOCK);

        // Numbers up to the last one, then refused rather than wrapped (limits scaled down: 10 per block, 25 in
        // all, so the second block ends at 25 and a third would start past it).
        let small = ControlNumbers {
            store: Arc::new(MemoryStateStore::default()),
            block: 10,
            max: 25,
            blocks: Mutex::new(HashMap::new()),
        };
        let issued: Vec<u64> = {
            let mut v = Vec::new();
            while let Ok(n) = small.next_interchange(&a).await {
                v.push(n);
            }
            v
        };
        assert_eq!(issued, (10..=25).collect::<Vec<_>>());
        assert!(matches!(small.next_interchange(&a).await, Err(PortError::Unavailable(_))));
    }
}
