//! The attachments service: the ports an attachment submission uses (payer data, the attachment, request, case
//! and upload repositories, the vault, control numbers, the exchange records, the committer, the clock), and
//! nothing of HTTP. [`crate::intake`] checks, vaults and links a submission through it; [`crate::x12`] answers a
//! 275 interchange with it ([`AttachmentService::answer_275`]), and [`crate::cdex`] a `$submit-attachment`.

use std::sync::Arc;

use exchange_core::app::App;
use exchange_core::commit::Committer;
use exchange_core::control_numbers::ControlNumbers;
use exchange_core::domain::attachment_requests::AttachmentRequestRepo;
use exchange_core::domain::attachments::AttachmentRepo;
use exchange_core::domain::payer_data::PayerDataRepo;
use exchange_core::domain::prior_auth::CaseRepo;
use exchange_core::domain::uploads::UploadRepo;
use exchange_core::ports::Clock;
use exchange_core::record::ExchangeRecords;
use exchange_core::vault::DocumentVault;

/// The attachments service (see the module docs).
#[derive(Clone)]
pub struct AttachmentService {
    pub(crate) repo: PayerDataRepo,
    pub(crate) attachments: AttachmentRepo,
    pub(crate) requests: AttachmentRequestRepo,
    pub(crate) cases: CaseRepo,
    pub(crate) uploads: UploadRepo,
    pub(crate) vault: Arc<DocumentVault>,
    pub(crate) numbers: Arc<ControlNumbers>,
    pub(crate) records: ExchangeRecords,
    pub(crate) committer: Committer,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AttachmentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentService").finish_non_exhaustive()
    }
}

impl AttachmentService {
    /// The service over the app's ports.
    pub fn new(app: &App) -> Self {
        let store = app.store();
        AttachmentService {
            repo: app.repo().clone(),
            attachments: AttachmentRepo::new(store.clone()),
            requests: AttachmentRequestRepo::new(store.clone()),
            cases: CaseRepo::new(store.clone()),
            uploads: UploadRepo::new(store.clone()),
            vault: app.vault().clone(),
            numbers: app.control_numbers().clone(),
            records: app.exchange_records(),
            committer: app.committer().clone(),
            clock: app.clock().clone(),
        }
    }
}
