//! A function's shared state: the ports, built once per cold start and shared by every request (the
//! `basic-shared-resource` pattern). Every function crate wraps or uses this [`App`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::embedded::LocalTransfers;
use crate::auth::TokenService;
use crate::commit::Committer;
use crate::domain::audit::seal::Sealer;
use crate::domain::audit::AuditLog;
use crate::domain::cleanup::CleanupLedger;
use crate::domain::payer_data::PayerDataRepo;
use crate::http::Authenticator;
use crate::ports::{BlobStore, Clock, KeyService, PortError, StateStore, SystemClock, TransferUrls};
use crate::vault::DocumentVault;

/// `iss`/`aud` of exchange tokens.
pub const TOKEN_ISSUER: &str = "payer-provider-exchange";

/// How long the current payer-data version is cached per instance.
const PAYER_DATA_CACHE: Duration = Duration::from_secs(30);

/// Everything a request needs, built once. Services take the parts they use through the accessors; nothing outside
/// this module can swap a port under a running app.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn StateStore>,
    vault: Arc<DocumentVault>,
    repo: PayerDataRepo,
    tokens: Arc<TokenService>,
    auth: Arc<Authenticator>,
    audit: AuditLog,
    committer: Committer,
    clock: Arc<dyn Clock>,
    audit_sealer: Option<Arc<Sealer>>,
    control_numbers: Arc<crate::control_numbers::ControlNumbers>,
    transfers: Arc<dyn TransferUrls>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Assembles the app from its ports.
    pub fn new(
        store: Arc<dyn StateStore>,
        vault: DocumentVault,
        keys: Arc<dyn KeyService>,
        clock: Arc<dyn Clock>,
        transfers: Arc<dyn TransferUrls>,
    ) -> Self {
        let repo = PayerDataRepo::new(store.clone(), PAYER_DATA_CACHE);
        let tokens = Arc::new(TokenService::new(keys, TOKEN_ISSUER));
        let audit = AuditLog::new(store.clone()).with_clock(clock.clone());
        let auth = Arc::new(Authenticator {
            tokens: tokens.clone(),
            repo: repo.clone(),
            clock: clock.clone(),
            audit: audit.clone(),
        });
        let control_numbers = Arc::new(crate::control_numbers::ControlNumbers::new(store.clone()));
        let vault = Arc::new(vault);
        let committer = Committer::new(audit.clone(), vault.clone(), CleanupLedger::new(store.clone()), clock.clone());
        App {
            store,
            vault,
            committer,
            repo,
            tokens,
            auth,
            audit,
            clock,
            audit_sealer: None,
            control_numbers,
            transfers,
        }
    }

    /// This app with an audit sealer writing digests to `digests`, signed by `signer`'s RS256 key.
    pub fn with_audit_sealer(mut self, digests: Arc<dyn BlobStore>, signer: Arc<dyn KeyService>) -> Self {
        self.audit_sealer = Some(Arc::new(Sealer::new(self.store.clone(), digests, signer)));
        self
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The document vault (raw interchanges, answers, attachments).
    pub fn vault(&self) -> &Arc<DocumentVault> {
        &self.vault
    }

    /// Payer data and partner registrations.
    pub fn repo(&self) -> &PayerDataRepo {
        &self.repo
    }

    /// Token issue and verification.
    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.tokens
    }

    /// Caller resolution for the middleware.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The audit trail (the middleware appends a record per authenticated request).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Commits a request's writes with its audit record and decides its documents' fate.
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// The vaulted exchanges and idempotency records every flow keeps.
    pub fn exchange_records(&self) -> crate::record::ExchangeRecords {
        crate::record::ExchangeRecords::new(self.store.clone(), self.vault.clone(), self.clock.clone())
    }

    /// Time.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Outbound interchange control numbers (reserved in blocks, issued from memory).
    pub fn control_numbers(&self) -> &Arc<crate::control_numbers::ControlNumbers> {
        &self.control_numbers
    }

    /// Direct upload and download URLs for documents larger than a Lambda payload (S3 presigned URLs, or the
    /// local runner's one-time URLs).
    pub fn transfers(&self) -> &Arc<dyn TransferUrls> {
        &self.transfers
    }

    /// The audit sealer (`Unavailable` in a function deployed without the digest bucket and audit-signing key: only
    /// the worker seals and the admin function verifies).
    pub fn sealer(&self) -> Result<&Arc<Sealer>, PortError> {
        self.audit_sealer
            .as_ref()
            .ok_or_else(|| PortError::Unavailable("this function has no audit digest store configured".into()))
    }

    /// The app over the in-memory state and blob stores, with local keys kept in `key_dir`: nothing it stores
    /// survives the process. For benchmarks and tests that measure the exchange's own work without a storage
    /// engine; never a deployment.
    pub fn in_memory(key_dir: &Path) -> Result<Self, PortError> {
        let store: Arc<dyn StateStore> = Arc::new(crate::adapters::memory::MemoryStateStore::new());
        let keys = Arc::new(crate::adapters::embedded::LocalKeyService::load_or_create(key_dir)?);
        let vault = DocumentVault::new(Arc::new(crate::adapters::memory::MemoryBlobStore::new()), keys.clone());
        let transfers = Arc::new(LocalTransfers::new(store.clone(), ""));
        let signer = Arc::new(crate::adapters::embedded::LocalKeyService::load_or_create(&key_dir.join("audit"))?);
        let digests = Arc::new(crate::adapters::memory::MemoryBlobStore::new());
        Ok(App::new(store, vault, keys, Arc::new(SystemClock), transfers).with_audit_sealer(digests, signer))
    }

    /// The app over the embedded adapters in `data_dir` (local runner, tests, benchmarks). Transfer URLs are
    /// issued under `base_url` and served by [`crate::http::transfer::routes`] (empty: root-relative URLs).
    pub fn embedded(data_dir: &Path, base_url: &str) -> Result<Self, PortError> {
        let adapters = crate::adapters::embedded::EmbeddedAdapters::open(data_dir)?;
        let vault = adapters.vault();
        let transfers = Arc::new(LocalTransfers::new(adapters.store.clone(), base_url));
        let (digests, signer) = (adapters.audit_digests.clone(), adapters.audit_signer.clone());
        Ok(App::new(adapters.store, vault, adapters.keys, Arc::new(SystemClock), transfers)
            .with_audit_sealer(digests, signer))
    }

    /// The app over DynamoDB, S3 and KMS, configured from the environment (Lambda).
    #[cfg(feature = "aws")]
    pub async fn from_aws_env() -> Result<Self, PortError> {
        let adapters = crate::adapters::aws::AwsAdapters::from_env().await?;
        let vault = adapters.vault();
        let mut app = App::new(adapters.store, vault, adapters.keys, Arc::new(SystemClock), adapters.transfers);
        if let Some((digests, signer)) = adapters.audit_sealing {
            app = app.with_audit_sealer(digests, signer);
        }
        app.bootstrap_admin_from_env()?;
        Ok(app)
    }

    /// `BOOTSTRAP_ADMIN_JWKS` (a JWK Set, JSON), when set and not empty: the keys of the admin a new deployment
    /// starts with, until its first payer data is loaded ([`PayerDataRepo::set_bootstrap_admin`]).
    pub fn bootstrap_admin_from_env(&self) -> Result<(), PortError> {
        match std::env::var("BOOTSTRAP_ADMIN_JWKS") {
            Ok(raw) if !raw.trim().is_empty() => {
                let jwks: crate::jose::Jwks = serde_json::from_str(&raw)
                    .map_err(|_| PortError::Invalid("BOOTSTRAP_ADMIN_JWKS is not a JWK Set (JSON)".into()))?;
                self.repo.set_bootstrap_admin(jwks)
            }
            _ => Ok(()),
        }
    }
}
