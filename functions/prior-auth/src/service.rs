//! The prior-authorization service: the ports a submission uses (payer data, cases, control numbers, the
//! exchange records, the committer, the clock), and nothing of HTTP. Its operations live beside their channel:
//! [`crate::x12::flow`] answers a 278 interchange, [`crate::pas::flow`] a PAS `$submit`.

use std::sync::Arc;

use exchange_core::app::App;
use exchange_core::commit::Committer;
use exchange_core::control_numbers::ControlNumbers;
use exchange_core::domain::payer_data::PayerDataRepo;
use exchange_core::domain::prior_auth::CaseRepo;
use exchange_core::ports::Clock;
use exchange_core::record::ExchangeRecords;

/// The prior-authorization service (see the module docs).
#[derive(Clone)]
pub struct PriorAuthService {
    pub(crate) repo: PayerDataRepo,
    pub(crate) cases: CaseRepo,
    pub(crate) numbers: Arc<ControlNumbers>,
    pub(crate) records: ExchangeRecords,
    pub(crate) committer: Committer,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PriorAuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorAuthService").finish_non_exhaustive()
    }
}

impl PriorAuthService {
    /// The service over the app's ports, with its cases in `cases`.
    pub fn new(app: &App, cases: CaseRepo) -> Self {
        PriorAuthService {
            repo: app.repo().clone(),
            cases,
            numbers: app.control_numbers().clone(),
            records: app.exchange_records(),
            committer: app.committer().clone(),
            clock: app.clock().clone(),
        }
    }
}
