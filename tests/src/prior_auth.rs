//! The prior-auth function over the real embedded adapters, with a clock the test moves, a real notifier, and a
//! subscriber endpoint on loopback that records what it receives.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use exchange_core::adapters::embedded::{EmbeddedAdapters, LocalTransfers};
use exchange_core::adapters::notifier::HttpNotifier;
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::{PartnerId, TradingPartner};
use exchange_core::ports::{Clock, Item, Key, Page, PortError, PortResult, Query, StateStore, WriteOp};
use exchange_core::vault::DocumentVault;
use prior_auth::{PriorAuth, Settings};
use serde_json::Value;
use std::sync::atomic::{AtomicU8, Ordering};
use time::{Duration, OffsetDateTime};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::{post_event, repo_root, Reply};

/// A clock the test moves forward.
#[derive(Debug)]
pub struct SteppingClock(Mutex<OffsetDateTime>);

impl Clock for SteppingClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SteppingClock {
    /// A clock reading `now`.
    pub fn at(now: OffsetDateTime) -> Self {
        SteppingClock(Mutex::new(now))
    }

    /// Moves the clock.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

/// The payer data the conformance material's members, payer and providers are registered in.
pub fn conformance_data_path() -> PathBuf {
    repo_root().join("tests/fixtures/conformance-payer-data.json")
}

/// A PAS conformance example.
pub fn pas_example(name: &str) -> Value {
    let path = crate::conformance_dir().expect("conformance material").join("davinci/pas").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("json")
}

/// The prior-auth function under test.
pub struct PaExchange {
    /// State.
    pub pa: Arc<PriorAuth>,
    /// Router.
    pub router: axum::Router,
    /// The clock.
    pub clock: Arc<SteppingClock>,
    /// Data directory.
    pub dir: tempfile::TempDir,
    partners: Vec<TradingPartner>,
    audit_failures: Arc<AuditFailures>,
    db: Arc<exchange_core::adapters::embedded::RedbStateStore>,
}

/// The state store, with transactions that carry an audit record failing or hanging while switched on.
struct AuditFailures {
    inner: Arc<dyn StateStore>,
    failing: AtomicU8,
}

const PASS: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

#[async_trait::async_trait]
impl StateStore for AuditFailures {
    async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn put_new(&self, item: Item) -> PortResult<()> {
        self.inner.put_new(item).await
    }
    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
        self.inner.update(item, expected_version).await
    }
    async fn query(&self, query: &Query) -> PortResult<Page> {
        self.inner.query(query).await
    }
    async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
        self.inner.query_gsi1(query).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
        if ops.iter().any(|op| op.key().pk.starts_with("AUDIT#")) {
            match self.failing.load(Ordering::SeqCst) {
                FAIL => return Err(PortError::Unavailable("injected: the audit record cannot be written".into())),
                HANG => std::future::pending::<()>().await,
                _ => {}
            }
        }
        self.inner.transact(ops).await
    }
    async fn increment(&self, key: &Key) -> PortResult<u64> {
        self.inner.increment(key).await
    }
}

impl PaExchange {
    /// An exchange at `now` with the payer data at `data` loaded; notifications retry after one second.
    pub async fn new(data: &Path, now: OffsetDateTime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
        let clock = Arc::new(SteppingClock(Mutex::new(now)));
        let store: Arc<dyn StateStore> = Arc::new((*adapters.store).clone().with_clock(clock.clone()));
        let audit_failures = Arc::new(AuditFailures { inner: store, failing: AtomicU8::new(PASS) });
        let store: Arc<dyn StateStore> = audit_failures.clone();
        let keys = adapters.keys.clone();
        let transfers = Arc::new(LocalTransfers::new(store.clone(), ""));
        let app =
            App::new(store, DocumentVault::new(adapters.blobs.clone(), keys.clone()), keys, clock.clone(), transfers)
                .with_audit_sealer(adapters.audit_digests.clone(), adapters.audit_signer.clone());
        let data = PayerData::parse(&std::fs::read(data).expect("payer data")).expect("payer data valid");
        app.repo().load(&data).await.expect("load payer data");
        let notifier = HttpNotifier::new(std::time::Duration::from_secs(2)).expect("notifier");
        let settings = Settings { allow_http_endpoints: true, retry_base: Duration::seconds(1), ..Settings::default() };
        let pa = Arc::new(PriorAuth::new(Arc::new(app), Arc::new(notifier), settings));
        let router = prior_auth::router(pa.clone());
        let db = adapters.store.clone();
        PaExchange { pa, router, clock, dir, partners: data.trading_partners, audit_failures, db }
    }

    /// While `failing`, every transaction that writes an audit record fails as an unavailable store would (and
    /// writes nothing): failure injection for "a write is kept with its record or not at all".
    pub fn fail_audit_writes(&self, failing: bool) {
        self.audit_failures.failing.store(if failing { FAIL } else { PASS }, Ordering::SeqCst);
    }

    /// While `hanging`, every transaction that writes an audit record never returns (and writes nothing): a
    /// function that dies at its commit, when the future is dropped.
    pub fn hang_audit_writes(&self, hanging: bool) {
        self.audit_failures.failing.store(if hanging { HANG } else { PASS }, Ordering::SeqCst);
    }

    /// A bearer token for a registered partner.
    pub async fn token(&self, partner: &str) -> String {
        let p = self.partner(partner);
        self.pa.core.tokens().issue(&p, self.clock.now(), 3600).await.expect("token")
    }

    /// The registered trading partner `id`.
    pub fn partner(&self, id: &str) -> TradingPartner {
        let id = PartnerId::parse(id).expect("partner id");
        self.partners.iter().find(|p| p.id == id).cloned().expect("registered partner")
    }

    /// Sends an API Gateway v2 event (from `events/`).
    pub async fn send_event(&self, event: &Value) -> Reply {
        let req = lambda_http::request::from_str(&event.to_string()).expect("API Gateway event");
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// Sends a request (as an API Gateway v2 event).
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: &str,
        token: &str,
        body: &[u8],
    ) -> Reply {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let mut event = post_event(path, content_type, Some(token), body);
        event["requestContext"]["http"]["method"] = Value::from(method);
        event["routeKey"] = Value::from(format!("{method} {path}"));
        event["rawQueryString"] = Value::from(query);
        if !query.is_empty() {
            let params: serde_json::Map<String, Value> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect();
            event["queryStringParameters"] = Value::Object(params);
        }
        self.send_event(&event).await
    }

    /// `POST /fhir/Claim/$submit` as `partner`.
    pub async fn submit(&self, partner: &str, bundle: &Value) -> Reply {
        let token = self.token(partner).await;
        self.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &token, bundle.to_string().as_bytes()).await
    }

    /// `POST /x12/278` as `partner`.
    pub async fn post_278(&self, partner: &str, body: &[u8]) -> Reply {
        let token = self.token(partner).await;
        self.send("POST", "/x12/278", "application/edi-x12", &token, body).await
    }

    /// `POST /fhir/Subscription` as `partner`, filtered on `org`, delivering to `endpoint`.
    pub async fn subscribe(&self, partner: &str, org: &str, endpoint: &str) -> Reply {
        let token = self.token(partner).await;
        let body = subscription(org, endpoint).to_string();
        self.send("POST", "/fhir/Subscription", "application/fhir+json", &token, body.as_bytes()).await
    }

    /// `POST /fhir/Claim/$inquire` as `partner`.
    pub async fn inquire(&self, partner: &str, bundle: &Value) -> Reply {
        let token = self.token(partner).await;
        self.send("POST", "/fhir/Claim/$inquire", "application/fhir+json", &token, bundle.to_string().as_bytes()).await
    }

    /// `POST /review/cases/{id}/decisions` as `sample-payer`.
    pub async fn decide(&self, case_id: &str, decisions: Value) -> Reply {
        self.review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(serde_json::json!({ "decisions": decisions })),
        )
        .await
    }

    /// Cases received this month (every case has a ledger entry, whatever its status).
    pub async fn cases(&self) -> Vec<exchange_core::domain::prior_auth::PaCase> {
        let now = self.clock.now();
        let payer = self.pa.core.repo().current().await.expect("store").expect("payer data").payer.id;
        let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
        self.pa.cases.received_in_month(&payer, &month).await.expect("ledger")
    }

    /// The paths of the small documents the database holds (the rest are files under `documents/`).
    pub fn small_documents(&self) -> Vec<String> {
        self.db.blob_paths().expect("the database's documents")
    }

    /// Documents in the vault (files, and the small ones the database holds).
    pub fn vaulted_documents(&self) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
                .unwrap_or(0)
        }
        let small = self.db.blob_paths().expect("the database's documents").len();
        count(&self.dir.path().join("documents")) + small
    }

    /// A reviewer request as `sample-payer` (JSON).
    pub async fn review(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let token = self.token("sample-payer").await;
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, "application/json", &token, &bytes).await
    }
}

/// A subscriber's notification endpoint on loopback: answers `status` and forwards every body it receives.
pub async fn subscriber_endpoint(status: u16) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let _ = tx.send(v);
                }
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/notify"), rx)
}

/// An endpoint nobody listens on.
pub async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/notify")
}

/// Runs the FHIR oracle (`../shared/oracles/fhir-validate --strict-profiles`) over `files`: every profile a
/// resource claims must be loaded and pass. `Err` with its report otherwise. The oracle's npm packages come from
/// `tools/fhir-oracle` (installed by `scripts/test`); the oracle itself must be present.
pub fn fhir_oracle(files: &[PathBuf]) -> Result<(), String> {
    let oracle = repo_root().join("../shared/oracles/fhir-validate");
    let home = repo_root().join("tools/fhir-oracle");
    if !oracle.exists() {
        return Err(format!("{} is missing: the FHIR answers cannot be checked", oracle.display()));
    }
    if !home.join("node_modules").is_dir() {
        return Err("the FHIR oracle's npm packages are not installed: run scripts/test".into());
    }
    let out = std::process::Command::new(&oracle)
        .env("FHIR_ORACLE_HOME", &home)
        .arg("--strict-profiles")
        .args(files)
        .output()
        .map_err(|e| format!("oracle: {e}"))?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}

/// Asserts that the oracle accepts `bundles` (written to a temporary folder under their names).
pub fn assert_fhir_valid(bundles: &[(&str, &Value)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<PathBuf> = bundles
        .iter()
        .map(|(name, v)| {
            let p = dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec_pretty(v).expect("json")).expect("write");
            p
        })
        .collect();
    if let Err(report) = fhir_oracle(&files) {
        panic!("the FHIR oracle rejects our answers:\n{report}");
    }
}

/// The id of the ClaimResponse (the case) in a PAS response Bundle.
pub fn case_id(response_bundle: &Value) -> String {
    response_bundle["entry"][0]["resource"]["id"].as_str().expect("ClaimResponse id").to_owned()
}

/// An X12 interchange with ISA13 and IEA02 set to `control` (nine digits), in whatever delimiters it uses.
pub fn with_isa13(x12: &str, control: u32) -> String {
    String::from_utf8(with_isa13_bytes(x12.as_bytes(), control)).unwrap_or_else(|_| x12.to_owned())
}

/// [`with_isa13`] over bytes (binary BIN payloads stay as they are): the ISA is fixed width, so ISA13 is bytes
/// 90..99, and IEA02 is the last place the old number stands. Anything that is not an interchange is returned as is.
pub fn with_isa13_bytes(x12: &[u8], control: u32) -> Vec<u8> {
    if x12.len() < 106 || !x12.starts_with(b"ISA") {
        return x12.to_vec();
    }
    let old = x12[90..99].to_vec();
    let new = format!("{control:09}");
    let mut out = x12.to_vec();
    out[90..99].copy_from_slice(new.as_bytes());
    if let Some(pos) = out.windows(9).rposition(|w| w == old.as_slice()).filter(|p| *p > 99) {
        out[pos..pos + 9].copy_from_slice(new.as_bytes());
    }
    out
}

/// A one-set 278 with `segment` inserted after the 2000E UM, SE01 recounted.
pub fn with_segment_after_um(x12: &str, um_prefix: &str, segment: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for seg in x12.split('~') {
        let seg = seg.trim_start();
        if seg.is_empty() {
            continue;
        }
        if seg.starts_with(um_prefix) {
            out.push(seg.to_owned());
            out.push(segment.to_owned());
            continue;
        }
        out.push(seg.to_owned());
    }
    let st = out.iter().position(|s| s.starts_with("ST*")).expect("ST");
    let se = out.iter().position(|s| s.starts_with("SE*")).expect("SE");
    let control = out[se].split('*').nth(2).unwrap_or("0001").to_owned();
    out[se] = format!("SE*{}*{control}", se - st + 1);
    out.iter().map(|s| format!("{s}~")).collect::<Vec<_>>().join("\n")
}

/// A Subscription for `org` delivering to `endpoint`.
pub fn subscription(org: &str, endpoint: &str) -> Value {
    serde_json::json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "pended decisions",
        "criteria": prior_auth::notify::TOPIC,
        "_criteria": { "extension": [{ "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria", "valueString": format!("orgIdentifier={org}") }] },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "full-resource" }] }
        }
    })
}
