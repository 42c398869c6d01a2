//! The domain: validated identifiers, trading partners and the payer data eligibility answers come from.

pub mod ids;
pub mod partner;
pub mod payer_data;
pub mod policy;
pub mod prior_auth;

pub use ids::{MemberId, Npi, PartnerId};
pub use partner::{Caller, PartnerRole, TradingPartner};
