//! The inquiry record: what one inquiry did, kept beside the vaulted request and answer (the service's `keep`
//! commits them together).

use serde::{Deserialize, Serialize};

/// What one inquiry request did (no PHI: ids, control numbers, counts, codes, timing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryRecord {
    /// Request id.
    pub request_id: String,
    /// Calling partner.
    pub partner: String,
    /// `x12` or `json`.
    pub channel: String,
    /// Inbound control number (ISA13, or the JSON controlNumber).
    pub inbound_control: Option<String>,
    /// Outbound ISA13.
    pub outbound_control: Option<u64>,
    /// Sets received.
    pub sets: usize,
    /// Sets rejected in a 999.
    pub rejected_sets: usize,
    /// Answers carrying an AAA.
    pub aaa_rejections: usize,
    /// TA1 note code when the interchange was rejected.
    pub ta1_note: Option<String>,
    /// Milliseconds spent.
    pub latency_ms: u64,
    /// Vault path of the raw request.
    pub request_path: String,
    /// Vault path of the answer.
    pub response_path: String,
    /// When.
    pub at: String,
}
