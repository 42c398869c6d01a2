//! The replay ledger: a signed assertion's `jti` may be used once per issuer. The first use records it with an
//! expiry (the token's own, plus the clock skew), so the ledger cleans itself (DynamoDB TTL; the embedded store
//! treats expired items as absent) and a replay within the token's lifetime is caught by a conditional write.

use std::sync::Arc;

use crate::jose::CLOCK_SKEW_SECS;
use crate::ports::{Item, Key, PortError, StateStore, WriteOp};

/// Records first uses of token ids.
#[derive(Clone)]
pub struct ReplayLedger {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for ReplayLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayLedger").finish_non_exhaustive()
    }
}

impl ReplayLedger {
    /// A ledger over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        ReplayLedger { store }
    }

    /// The record of a first use of `jti` by `issuer` (`purpose` separates ledgers, e.g. `cds` and
    /// `client-assertion`), as a conditional create: to commit in the same transaction as the work the token
    /// authorised, where a conflict means the token was replayed.
    pub fn record(purpose: &str, issuer: &str, jti: &str, expires: i64) -> WriteOp {
        // Hashed into the key: issuers are URLs of arbitrary length, and keys have limits.
        let issuer_hash = hex::encode(&crate::vault::sha256(issuer.as_bytes())[..16]);
        let jti_hash = hex::encode(&crate::vault::sha256(jti.as_bytes())[..16]);
        WriteOp::PutNew(
            Item::new(Key::new(format!("JTI#{purpose}#{issuer_hash}"), jti_hash), serde_json::json!({}))
                .with_ttl(expires + CLOCK_SKEW_SECS),
        )
    }

    /// Records `jti` of `issuer` on its own; `Ok(false)` when it was seen before.
    pub async fn first_use(&self, purpose: &str, issuer: &str, jti: &str, expires: i64) -> Result<bool, PortError> {
        let WriteOp::PutNew(item) = Self::record(purpose, issuer, jti, expires) else {
            return Err(PortError::Invalid("replay record is a create".into()));
        };
        match self.store.put_new(item).await {
            Ok(()) => Ok(true),
            Err(PortError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;

    #[tokio::test]
    async fn a_token_id_is_used_once_per_issuer_and_purpose() {
        let ledger = ReplayLedger::new(Arc::new(MemoryStateStore::new()));
        assert!(ledger.first_use("cds", "https://ehr", "j1", 2_000_000_000).await.expect("store"));
        assert!(!ledger.first_use("cds", "https://ehr", "j1", 2_000_000_000).await.expect("store"), "replay");
        assert!(ledger.first_use("cds", "https://other-ehr", "j1", 2_000_000_000).await.expect("store"));
        assert!(ledger.first_use("client-assertion", "https://ehr", "j1", 2_000_000_000).await.expect("store"));
    }
}
