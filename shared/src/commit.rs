//! One request's commit: its writes, the audit record that says who made them, and the documents written for them,
//! kept together or not at all.
//!
//! A flow vaults its documents first (a record only ever names what exists), gathers its writes into a [`Commit`]
//! that also lists those documents, and hands it to [`Committer::commit`]. The writes and the request's audit
//! record go in one transaction; if it fails, the documents are deleted at once. Documents whose loss would leave
//! content with no record if the process died between writing them and committing (a Lambda timeout, a crash) are
//! first written down in the clean-up ledger ([`Committer::cover`]): the commit cancels that entry in the same
//! transaction, and otherwise the sweep deletes them. That is the one clean-up policy: delete on failure, and the
//! ledger for what a crash could leave behind.

use std::sync::Arc;

use axum::http::StatusCode;

use crate::domain::audit::{AuditEntry, AuditLog};
use crate::domain::cleanup::{CleanupLedger, Scheduled, WRITE_GRACE};
use crate::http::CallerContext;
use crate::ports::{Clock, PortResult, WriteOp};
use crate::record::VaultedExchange;
use crate::vault::DocumentVault;

/// What one request keeps: its writes, the status its audit record names, and the vault documents written for it
/// (deleted if the commit fails).
#[derive(Debug)]
#[must_use = "a commit does nothing until it is handed to Committer::commit"]
pub struct Commit {
    status: StatusCode,
    ops: Vec<WriteOp>,
    documents: Vec<String>,
    cover: Option<Scheduled>,
}

impl Commit {
    /// A commit whose audit record names the answer `status`.
    pub fn answered(status: StatusCode) -> Self {
        Commit { status, ops: Vec::new(), documents: Vec::new(), cover: None }
    }

    /// Adds a write.
    pub fn write(mut self, op: WriteOp) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds writes.
    pub fn writes(mut self, ops: impl IntoIterator<Item = WriteOp>) -> Self {
        self.ops.extend(ops);
        self
    }

    /// Adds a write to a commit being built in place.
    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }

    /// Names a vault document written for this commit: deleted if the commit fails.
    pub fn keeping(mut self, path: impl Into<String>) -> Self {
        self.documents.push(path.into());
        self
    }

    /// Names a document written for this commit, on a commit being built in place.
    pub fn keep(&mut self, path: impl Into<String>) {
        self.documents.push(path.into());
    }

    /// Names both documents of a vaulted request/answer pair.
    pub fn keeping_exchange(self, exchange: &VaultedExchange) -> Self {
        self.keeping(exchange.request_path.clone()).keeping(exchange.response_path.clone())
    }

    /// Cancels the clean-up-ledger entry `cover` (from [`Committer::cover`]) in the commit's own transaction, so
    /// that the documents it lists are kept exactly when the commit succeeds.
    pub fn covered_by(mut self, cover: Scheduled) -> Self {
        self.cover = Some(cover);
        self
    }

    /// The status, the writes (with the cover's cancellation), and the documents to delete should they fail.
    fn into_parts(self) -> (StatusCode, Vec<WriteOp>, Documents) {
        let Commit { status, mut ops, documents, cover } = self;
        if let Some(cover) = &cover {
            ops.push(cover.cancel_op());
        }
        (status, ops, Documents { paths: documents, cover })
    }
}

/// The documents of a commit, deleted if it fails.
struct Documents {
    paths: Vec<String>,
    cover: Option<Scheduled>,
}

/// Commits [`Commit`]s: the one place a request's writes, its audit record and its documents' fate are decided.
#[derive(Clone)]
pub struct Committer {
    audit: AuditLog,
    vault: Arc<DocumentVault>,
    ledger: CleanupLedger,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// A committer appending to `audit`, deleting from `vault`, with its crash cover in `ledger`.
    pub fn new(audit: AuditLog, vault: Arc<DocumentVault>, ledger: CleanupLedger, clock: Arc<dyn Clock>) -> Self {
        Committer { audit, vault, ledger, clock }
    }

    /// Writes `paths` down in the clean-up ledger before they are written (`reason` is for operators): unless a
    /// commit [covered by](Commit::covered_by) the entry succeeds within [`WRITE_GRACE`], the sweep deletes them.
    pub async fn cover(&self, paths: Vec<String>, reason: &str) -> PortResult<Scheduled> {
        self.ledger.schedule(paths, reason, self.clock.now() + WRITE_GRACE).await
    }

    /// Commits `commit`'s writes with the request's audit record (what `ctx` noted, answered with the commit's
    /// status) in one transaction. On failure, nothing of it is written, its documents are deleted, and the error
    /// is returned (`Conflict` when one of the writes' conditions failed: a race lost).
    pub async fn commit(&self, ctx: &CallerContext, commit: Commit) -> PortResult<()> {
        let (status, ops, documents) = commit.into_parts();
        let committed = ctx.commit_audited(&self.audit, self.clock.now(), status, ops).await;
        self.settle(committed, documents).await
    }

    /// Commits `commit`'s writes with `entry` as the request's audit record, for a request authenticated outside
    /// the caller middleware (a CDS Hooks call, whose client JWT names the caller), with [`Self::commit`]'s
    /// guarantees. The entry's outcome is the commit's status.
    pub async fn commit_as(&self, mut entry: AuditEntry, commit: Commit) -> PortResult<()> {
        let (status, ops, documents) = commit.into_parts();
        entry.outcome = status.as_u16();
        let committed = self.audit.append_with(entry, ops).await.map(drop);
        self.settle(committed, documents).await
    }

    /// After a commit: on failure, its documents are deleted.
    async fn settle(&self, committed: PortResult<()>, documents: Documents) -> PortResult<()> {
        if committed.is_err() {
            self.discard(documents.paths, documents.cover).await;
        }
        committed
    }

    /// Deletes the documents of a commit that will not be made (the flow failed before committing).
    pub async fn abandon(&self, commit: Commit) {
        self.discard(commit.documents, commit.cover).await;
    }

    /// Deletes `documents`, then cancels their ledger entry (best effort: the caller's error is what matters, and
    /// whatever is left here the sweep deletes).
    async fn discard(&self, documents: Vec<String>, cover: Option<Scheduled>) {
        let mut all_deleted = true;
        for path in &documents {
            if let Err(e) = self.vault.delete(path).await {
                all_deleted = false;
                tracing::warn!(error = %e, "could not delete a document of an uncommitted request");
            }
        }
        if let (true, Some(cover)) = (all_deleted, cover) {
            if let Err(e) = self.ledger.cancel(&cover).await {
                tracing::warn!(error = %e, "could not remove a clean-up entry (the sweep will find nothing to delete)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::domain::{Caller, PartnerId, PartnerRole, TradingPartner};
    use crate::http::caller::AuditNotes;
    use crate::ports::{EncryptionContext, Item, Key, Query};

    fn ctx() -> CallerContext {
        let partner: TradingPartner =
            serde_json::from_value(serde_json::json!({ "id": "p1", "role": "provider", "name": "P" }))
                .expect("partner");
        CallerContext {
            caller: Caller {
                partner: PartnerId::parse("p1").expect("id"),
                role: PartnerRole::Provider,
                scopes: Vec::new(),
                token_id: "t".into(),
                client_id: "c".into(),
            },
            partner: Arc::new(partner),
            request_id: "req-1".into(),
            audit: AuditNotes::default(),
        }
    }

    async fn vaulted(app: &App, path: &str) {
        app.vault().put(path, &EncryptionContext::for_document(path, "payer"), b"content").await.expect("put");
    }

    async fn exists(app: &App, path: &str) -> bool {
        match app.vault().blobs().get(path).await {
            Ok(_) => true,
            Err(crate::ports::PortError::NotFound(_)) => false,
            Err(e) => panic!("the blob store failed: {e}"),
        }
    }

    async fn ledger_entries(app: &App) -> usize {
        let mut n = 0;
        for shard in 0..crate::domain::cleanup::SHARDS {
            n += app
                .store()
                .query(&Query::prefix(format!("CLEANUP#{shard}"), "", 100))
                .await
                .expect("query")
                .items
                .len();
        }
        n
    }

    fn put(sk: &str) -> WriteOp {
        WriteOp::PutNew(Item::new(Key::new("T", sk), serde_json::json!({})))
    }

    #[tokio::test]
    async fn a_commit_keeps_its_writes_documents_and_audit_record_and_cancels_its_cover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::in_memory(dir.path()).expect("app");
        let cover = app.committer().cover(vec!["doc/1".into()], "test").await.expect("cover");
        vaulted(&app, "doc/1").await;
        assert_eq!(ledger_entries(&app).await, 1);
        let commit = Commit::answered(StatusCode::CREATED).write(put("a")).keeping("doc/1").covered_by(cover);
        app.committer().commit(&ctx(), commit).await.expect("commit");
        assert!(app.store().get(&Key::new("T", "a")).await.expect("get").is_some());
        assert!(exists(&app, "doc/1").await);
        assert_eq!(ledger_entries(&app).await, 0, "the cover is cancelled in the commit");
        let history = app.audit().partner_history("p1", 10).await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].entry.outcome, 201);
    }

    #[tokio::test]
    async fn a_failed_commit_writes_nothing_and_deletes_its_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::in_memory(dir.path()).expect("app");
        app.store().put_new(Item::new(Key::new("T", "taken"), serde_json::json!({}))).await.expect("seed");
        let cover = app.committer().cover(vec!["doc/2".into()], "test").await.expect("cover");
        vaulted(&app, "doc/2").await;
        let commit =
            Commit::answered(StatusCode::OK).writes([put("b"), put("taken")]).keeping("doc/2").covered_by(cover);
        let failed = app.committer().commit(&ctx(), commit).await;
        assert!(matches!(failed, Err(crate::ports::PortError::Conflict(_))), "{failed:?}");
        assert!(app.store().get(&Key::new("T", "b")).await.expect("get").is_none(), "no half-written commit");
        assert!(!exists(&app, "doc/2").await, "the document is deleted");
        assert_eq!(ledger_entries(&app).await, 0, "nothing is left for the sweep");
        assert!(app.audit().partner_history("p1", 10).await.expect("history").is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_commit_deletes_its_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::in_memory(dir.path()).expect("app");
        vaulted(&app, "doc/3").await;
        app.committer().abandon(Commit::answered(StatusCode::OK).write(put("c")).keeping("doc/3")).await;
        assert!(!exists(&app, "doc/3").await);
        assert!(app.store().get(&Key::new("T", "c")).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn a_commit_with_its_own_audit_entry_records_the_commits_status_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::in_memory(dir.path()).expect("app");
        let entry = crate::domain::audit::AuditEntry {
            at: String::new(),
            partner: "p1".into(),
            client_id: "ehr".into(),
            action: crate::domain::audit::AuditAction::E,
            operation: "POST /cds-services/crd".into(),
            resources: Vec::new(),
            members: vec!["M1".into()],
            outcome: 0,
            request_id: "req-2".into(),
        };
        let commit = Commit::answered(StatusCode::OK).write(put("d"));
        app.committer().commit_as(entry.clone(), commit).await.expect("commit");
        let history = app.audit().partner_history("p1", 10).await.expect("history");
        assert_eq!((history.len(), history[0].entry.outcome), (1, 200));
        assert!(app.store().get(&Key::new("T", "d")).await.expect("get").is_some());

        // The same write again conflicts: no second record.
        vaulted(&app, "doc/4").await;
        let again = Commit::answered(StatusCode::OK).write(put("d")).keeping("doc/4");
        assert!(app.committer().commit_as(entry, again).await.is_err());
        assert_eq!(app.audit().partner_history("p1", 10).await.expect("history").len(), 1);
        assert!(!exists(&app, "doc/4").await);
    }
}
