//! The domain: validated identifiers, trading partners, the payer data and policy, prior-authorization cases,
//! notification subscriptions and the notification outbox, claims attachments and the payer's requests for them,
//! and the audit trail.

pub mod attachment_requests;
pub mod attachments;
pub mod audit;
pub mod cleanup;
pub mod forms;
pub mod ids;
pub mod notifications;
pub mod partner;
pub mod payer_data;
pub mod policy;
pub mod prior_auth;
pub mod replay;
pub mod subscriptions;
pub mod uploads;

pub use ids::{MemberId, Npi, PartnerId};
pub use partner::{Caller, PartnerRole, TradingPartner};
