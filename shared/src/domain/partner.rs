//! Trading partners and the authenticated caller.

use serde::{Deserialize, Serialize};

use super::ids::{Npi, PartnerId};
use crate::jose::Jwks;

/// What a trading partner is to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerRole {
    /// A provider organisation (or its billing service) that submits transactions.
    Provider,
    /// The payer that transactions are addressed to.
    Payer,
    /// Manages partners and payer data.
    Admin,
}

impl PartnerRole {
    /// Lowercase name, as in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerRole::Provider => "provider",
            PartnerRole::Payer => "payer",
            PartnerRole::Admin => "admin",
        }
    }
}

/// A registered trading partner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TradingPartner {
    /// Exchange-wide id.
    pub id: PartnerId,
    /// Role.
    pub role: PartnerRole,
    /// Organisation name.
    pub name: String,
    /// NPIs the partner may submit for (providers).
    #[serde(default)]
    pub npis: Vec<Npi>,
    /// Other provider identifiers the partner may submit for (e.g. payer-assigned `SV` ids), as given in NM109.
    #[serde(default)]
    pub provider_ids: Vec<String>,
    /// Interchange sender ids (ISA06) the partner uses.
    #[serde(default)]
    pub x12_sender_ids: Vec<String>,
    /// Scopes granted to the partner's tokens.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Public keys of the CDS clients (EHRs) that call the CRD services on the partner's behalf: their request JWTs
    /// verify with these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Jwks>,
    /// Public keys the partner's own backend signs SMART Backend Services client assertions with. Kept apart from
    /// [`TradingPartner::jwks`]: an EHR trusted to call CRD hooks must not be able to get the partner's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_jwks: Option<Jwks>,
    /// CDS Hooks: the `iss` of each CDS client (EHR) calling the CRD services on the partner's behalf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cds_issuers: Vec<String>,
    /// Payer partners: the payers (ids or aliases) the partner acts for; empty: the data set's payer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payer_ids: Vec<String>,
}

impl TradingPartner {
    /// Whether the partner may submit for the provider identified by `id` (an NPI or another provider id).
    pub fn may_submit_for(&self, id: &str) -> bool {
        self.npis.iter().any(|n| n.as_str() == id) || self.provider_ids.iter().any(|p| p == id)
    }

    /// Whether the partner is a payer partner acting for `payer`: any payer partner that names no payers acts for
    /// the data set's payer; one that names payers acts only for those. Everything addressed to a payer is seen
    /// only by the payer partners acting for it.
    pub fn acts_for(&self, payer: &super::payer_data::Payer) -> bool {
        self.role == PartnerRole::Payer
            && (self.payer_ids.is_empty() || self.payer_ids.iter().any(|id| payer.answers_to(id)))
    }

    /// Whether the partner may send interchanges as ISA06 `sender` (any, when it registered none).
    pub fn sends_as(&self, sender: &str) -> bool {
        self.x12_sender_ids.is_empty() || self.x12_sender_ids.iter().any(|s| s.trim() == sender.trim())
    }
}

/// The authenticated caller of a request: who the bearer token names, checked by the shared middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The partner.
    pub partner: PartnerId,
    /// Its role.
    pub role: PartnerRole,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Token id (for audit).
    pub token_id: String,
    /// The client the token was issued to (for audit).
    pub client_id: String,
}

impl Caller {
    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
