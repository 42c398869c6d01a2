//! The caller middleware: every protected route resolves the calling trading partner from its bearer token here,
//! once, and hands the domain a [`CallerContext`]; when the handler has answered, it appends the request's audit
//! record (who, which client, the route, what the handler noted it touched, the status). A request whose audit
//! record cannot be written is answered 503, so that the caller retries (retries are idempotent) rather than
//! PHI being read or written unrecorded. A handler that writes commits its writes and the record in one
//! transaction (through [`crate::commit::Committer`]), so those writes are never left unrecorded; the middleware then
//! adds a record only when the answer's status or the notes differ from what that commit recorded (a handler that
//! commits more than once, such as a 275 storing several attachments, gets a record per commit).

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::auth::{random_id, request_id, AuthError, TokenService};
use crate::domain::audit::{timestamp, AuditAction, AuditEntry, AuditLog};
use crate::domain::payer_data::PayerDataRepo;
use crate::domain::{Caller, TradingPartner};
use crate::ports::{Clock, PortResult, WriteOp};
use time::OffsetDateTime;

/// Verifies tokens and resolves partners.
pub struct Authenticator {
    /// Token verification.
    pub tokens: Arc<TokenService>,
    /// Partner records.
    pub repo: PayerDataRepo,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Where each request's audit record goes.
    pub audit: AuditLog,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Resolves the caller of a request from its `Authorization` header.
    pub async fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<CallerContext, AuthError> {
        let value = authorization.and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::Missing)?.trim();
        let caller = self.tokens.verify(token, self.clock.now()).await?;
        let partner = self.repo.partner(&caller.partner).await?.ok_or(AuthError::UnknownPartner)?;
        if partner.role != caller.role {
            return Err(AuthError::UnknownPartner);
        }
        Ok(CallerContext { caller, partner: Arc::new(partner), request_id: request_id(), audit: AuditNotes::default() })
    }
}

/// The authenticated caller of one request, with its partner record and the request id.
#[derive(Debug, Clone)]
pub struct CallerContext {
    /// Who the token names.
    pub caller: Caller,
    /// The partner's registration.
    pub partner: Arc<TradingPartner>,
    /// Request id (logged, and returned in `x-request-id`).
    pub request_id: String,
    /// What the handler notes for the request's audit record.
    pub audit: AuditNotes,
}

impl CallerContext {
    /// Commits `ops` together with this request's audit record (what the handler noted so far, answered
    /// `status`), in one transaction: both or neither. `Conflict` when one of `ops`' conditions fails.
    ///
    /// The middleware adds no second record when the request is answered `status` and nothing more was noted.
    /// What was noted with [`Self::audit_resource_on_commit`] / [`Self::audit_member_on_commit`] counts only if
    /// the commit succeeds (a case id drawn for a submission that lost a race names nothing).
    pub(crate) async fn commit_audited(
        &self,
        log: &AuditLog,
        at: OffsetDateTime,
        status: StatusCode,
        ops: Vec<WriteOp>,
    ) -> PortResult<()> {
        let notes = self.audit.with_pending();
        let entry = self.entry(at, &notes, status.as_u16());
        let committed = log.append_with(entry, ops).await;
        self.audit.settle(committed.is_ok().then_some((status.as_u16(), &notes)));
        committed.map(drop)
    }

    /// Notes `kind/id` for the audit record of this request's next commit ([`crate::commit::Committer::commit`]), and keeps the note
    /// only if that commit succeeds (for what the commit creates).
    pub fn audit_resource_on_commit(&self, kind: &str, id: &str) {
        if id.len() <= 4 * MAX_AUDITED_ID {
            self.audit.with(|n| n.pending_resources.push(format!("{kind}/{id}")));
        }
    }

    /// Notes `member` for the next commit's audit record, kept only if that commit succeeds.
    pub fn audit_member_on_commit(&self, member: &str) {
        if !member.is_empty() && member.len() <= MAX_AUDITED_ID {
            self.audit.with(|n| n.pending_members.push(member.to_ascii_uppercase()));
        }
    }

    /// This request's audit entry with `notes`, answered `outcome`.
    fn entry(&self, at: OffsetDateTime, notes: &Notes, outcome: u16) -> AuditEntry {
        // A context always passes through the middleware, which names the route; a record that says otherwise
        // shows a context built elsewhere.
        let (method, route) = notes.operation.clone().unwrap_or_else(|| (String::new(), "(no route)".to_owned()));
        AuditEntry {
            at: timestamp(at),
            partner: self.caller.partner.as_str().to_owned(),
            client_id: self.caller.client_id.clone(),
            action: AuditAction::from_method(&method, &route),
            operation: format!("{method} {route}"),
            resources: notes.resources.clone(),
            members: notes.members.clone(),
            outcome,
            request_id: self.request_id.clone(),
        }
    }

    /// Notes for the audit record that the request touched `kind/id` (a case, an attachment, ...).
    pub fn audit_resource(&self, kind: &str, id: &str) {
        if id.len() > 4 * MAX_AUDITED_ID {
            return;
        }
        self.audit.with(|n| {
            let r = format!("{kind}/{id}");
            if !n.resources.contains(&r) {
                n.resources.push(r);
            }
        });
    }

    /// Notes for the audit record that the request was about `member` (a member id; ids longer than any payer
    /// issues are a caller's noise, not a member, and are left out so that they cannot bloat the record).
    pub fn audit_member(&self, member: &str) {
        if member.is_empty() || member.len() > MAX_AUDITED_ID {
            return;
        }
        let member = member.to_ascii_uppercase();
        self.audit.with(|n| {
            if !n.members.contains(&member) {
                n.members.push(member);
            }
        });
    }
}

/// The resource a record names when it left ids out.
pub const TRUNCATED: &str = "notes/truncated";

/// What a handler noted about its request, for the audit record (shared by the clones of a [`CallerContext`]).
#[derive(Debug, Clone, Default)]
pub struct AuditNotes(Arc<Mutex<Notes>>);

/// The notes themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// `kind/id` of what was touched.
    pub resources: Vec<String>,
    /// Member ids.
    pub members: Vec<String>,
    /// The method and route template (set by the middleware before the handler runs).
    operation: Option<(String, String)>,
    /// Resources and members noted for the next commit, kept only if it succeeds.
    pending_resources: Vec<String>,
    pending_members: Vec<String>,
    /// What a handler's own commit recorded: the status and the notes it carried.
    recorded: Option<(u16, Box<Notes>)>,
}

/// Most ids one request's record keeps: a 10,000-set interchange is recorded by its first ones, and the record
/// says that more were left out (`notes/truncated`), so the vaulted exchange is where the rest is found.
const MAX_NOTED: usize = 200;

/// Longest member or resource id noted.
const MAX_AUDITED_ID: usize = 64;

impl AuditNotes {
    fn with(&self, f: impl FnOnce(&mut Notes)) {
        if let Ok(mut n) = self.0.lock() {
            let noted = n.resources.len() + n.members.len() + n.pending_resources.len() + n.pending_members.len();
            if noted < MAX_NOTED {
                f(&mut n);
            } else if !n.resources.iter().any(|r| r == TRUNCATED) {
                n.resources.push(TRUNCATED.to_owned());
            }
        }
    }

    /// Takes the notes.
    pub fn take(&self) -> Notes {
        self.0.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
    }

    /// The notes as they would be if the pending ones were kept (without what an earlier commit recorded).
    fn with_pending(&self) -> Notes {
        let Ok(n) = self.0.lock() else { return Notes::default() };
        let mut notes = Notes {
            resources: n.resources.clone(),
            members: n.members.clone(),
            operation: n.operation.clone(),
            ..Notes::default()
        };
        for r in &n.pending_resources {
            if !notes.resources.contains(r) {
                notes.resources.push(r.clone());
            }
        }
        for m in &n.pending_members {
            if !notes.members.contains(m) {
                notes.members.push(m.clone());
            }
        }
        notes
    }

    /// After a commit: on success (`Some`), the pending notes are kept and the notes marked recorded with the
    /// status; either way the pending notes are cleared.
    fn settle(&self, recorded: Option<(u16, &Notes)>) {
        if let Ok(mut n) = self.0.lock() {
            n.pending_resources.clear();
            n.pending_members.clear();
            if let Some((status, notes)) = recorded {
                n.resources = notes.resources.clone();
                n.members = notes.members.clone();
                n.recorded = Some((status, Box::new(notes.clone())));
            }
        }
    }

    fn set_operation(&self, method: &str, route: &str) {
        if let Ok(mut n) = self.0.lock() {
            n.operation = Some((method.to_owned(), route.to_owned()));
        }
    }
}

impl Notes {
    /// Whether a handler's commit already recorded this answer with everything noted since.
    fn already_recorded(&self, status: u16) -> bool {
        self.recorded.as_ref().is_some_and(|(recorded, notes)| {
            *recorded == status && notes.resources == self.resources && notes.members == self.members
        })
    }
}

/// Middleware: 401 problem+json unless the request carries a valid token of a registered partner.
pub async fn require_caller(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    match auth.authenticate(req.headers().get(header::AUTHORIZATION)).await {
        Ok(ctx) => {
            let request_id = ctx.request_id.clone();
            let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
            ctx.audit.set_operation(req.method().as_str(), &route);
            req.extensions_mut().insert(ctx.clone());
            let mut resp = next.run(req).await;
            let notes = ctx.audit.take();
            let status = resp.status().as_u16();
            if !notes.already_recorded(status) {
                let entry = ctx.entry(auth.clock.now(), &notes, status);
                if let Err(e) = auth.audit.append(entry).await {
                    tracing::error!(request_id, error = %e, "audit record not written: answering 503");
                    resp = Problem::unavailable().into_response();
                }
            }
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        // A dependency fault is 503 only when a retry can help (the one mapping every route uses).
        Err(AuthError::Unavailable(e)) => Problem::from_port(&random_id(), &e).into_response(),
        Err(e) => {
            tracing::info!(reason = %e, "request refused: unauthenticated");
            Problem::unauthorized(e.to_string()).into_response()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CallerContext>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("the route is not behind the caller middleware"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_commit_creates_is_noted_only_if_the_commit_succeeds() {
        let notes = AuditNotes::default();
        notes.set_operation("POST", "/fhir/Claim/$submit");
        notes.with(|n| n.resources.push("exchange/a".into()));
        notes.with(|n| n.pending_resources.push("case/LOST".into()));
        assert_eq!(notes.with_pending().resources, ["exchange/a", "case/LOST"], "the record names it");
        notes.settle(None);
        assert_eq!(notes.with_pending().resources, ["exchange/a"], "a failed commit's ids are dropped");

        notes.with(|n| n.pending_resources.push("case/KEPT".into()));
        notes.with(|n| n.pending_members.push("M1".into()));
        let committed = notes.with_pending();
        notes.settle(Some((200, &committed)));
        let taken = notes.take();
        assert_eq!(taken.resources, ["exchange/a", "case/KEPT"]);
        assert_eq!(taken.members, ["M1"]);
        assert!(taken.already_recorded(200), "the middleware adds no second record");
        assert!(!taken.already_recorded(503), "another answer is recorded again");
    }

    #[test]
    fn notes_made_after_the_commit_get_their_own_record() {
        let notes = AuditNotes::default();
        let committed = notes.with_pending();
        notes.settle(Some((200, &committed)));
        notes.with(|n| n.resources.push("attachment/late".into()));
        assert!(!notes.take().already_recorded(200));
    }
}
