//! What CRD asserted, kept under its coverage-assertion-id: the payer can later show what it told a provider, and
//! DTR finds the questionnaire an assertion named (`context` of `$questionnaire-package`). Only the assertion is
//! kept (member and plan ids, the order's reference and billing code, the answer), never the request's clinical
//! content.

use std::sync::Arc;

use exchange_core::ports::{Item, Key, PortError, StateStore, WriteOp};
use serde::{Deserialize, Serialize};

/// One coverage assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAssertion {
    /// The coverage-assertion-id.
    pub id: String,
    /// The partner the CDS client called for.
    pub partner: String,
    /// The hook and the client's hookInstance.
    pub hook: String,
    /// hookInstance.
    pub hook_instance: String,
    /// When (RFC 3339).
    pub asserted_at: String,
    /// The member id and the plan, when the member was found.
    pub member_id: Option<String>,
    /// Plan id.
    pub plan_id: Option<String>,
    /// The Coverage reference the assertion is about.
    pub coverage: String,
    /// The order (`Type/id`).
    pub order: String,
    /// The billing code evaluated (`CPT|70551`), if any.
    pub billing_code: Option<String>,
    /// covered / not-covered / indeterminate.
    pub covered: String,
    /// pa-needed, when given.
    pub pa_needed: Option<String>,
    /// doc-needed, when given.
    pub doc_needed: Option<String>,
    /// The questionnaire named.
    pub questionnaire: Option<String>,
    /// LOINC codes of documents named.
    #[serde(default)]
    pub documentation: Vec<String>,
}

fn key(id: &str) -> Key {
    Key::new(format!("CRDASSERT#{id}"), "ASSERTION")
}

/// A new coverage-assertion-id.
pub fn new_assertion_id() -> String {
    let random: [u8; 12] = rand::random();
    format!("crd-{}", hex::encode(random))
}

/// Reads and writes assertions.
#[derive(Clone)]
pub struct AssertionRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for AssertionRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionRepo").finish_non_exhaustive()
    }
}

impl AssertionRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        AssertionRepo { store }
    }

    /// The writes that keep `assertions` (to go in one transaction with the request's replay record).
    pub fn create_ops(&self, assertions: &[StoredAssertion]) -> Result<Vec<WriteOp>, PortError> {
        assertions
            .iter()
            .map(|a| {
                let body = serde_json::to_value(a).map_err(|e| PortError::Invalid(e.to_string()))?;
                Ok(WriteOp::PutNew(Item::new(key(&a.id), body)))
            })
            .collect()
    }

    /// An assertion by id.
    pub async fn get(&self, id: &str) -> Result<Option<StoredAssertion>, PortError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        match self.store.get(&key(id)).await? {
            Some(item) => serde_json::from_value(item.body)
                .map(Some)
                .map_err(|e| PortError::undecodable("coverage assertion", &e)),
            None => Ok(None),
        }
    }
}
