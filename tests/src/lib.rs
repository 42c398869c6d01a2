//! Helpers for the workspace-level integration and conformance tests (`tests/tests/*.rs`).
//!
//! A [`TestExchange`] is the eligibility function over the real embedded adapters in a temporary directory, with
//! the demo payer data loaded and the clock fixed. Requests are API Gateway HTTP API v2 events (from `events/`),
//! converted by `lambda_http` exactly as in Lambda and pushed through the function's router.

pub mod aws_fixture;
pub mod davinci;
pub mod prior_auth;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eligibility::App;
use exchange_core::adapters::embedded::{EmbeddedAdapters, LocalTransfers};
use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::{PartnerId, TradingPartner};
use exchange_core::ports::{BlobStore, FixedClock, KeyService, StateStore};
use exchange_core::vault::DocumentVault;
use http_body_util::BodyExt;
use serde_json::Value;
use time::macros::time;
use time::{Date, OffsetDateTime};
use tower::ServiceExt;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo payer data file.
pub fn demo_data_path() -> PathBuf {
    repo_root().join("infra/local-runner/demo/payer-data.json")
}

/// `../shared/conformance` from the repository root, when present.
pub fn conformance_dir() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/conformance");
    dir.is_dir().then_some(dir)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, naming the status and the body, when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Segments of an X12 body (split on its declared terminator), whitespace trimmed.
    pub fn segments(&self) -> Vec<String> {
        x12_segments(&self.body)
    }
}

/// Splits an interchange into segment strings using its own terminator (ISA byte 105).
pub fn x12_segments(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let term = body.get(105).copied().unwrap_or(b'~') as char;
    text.split(term).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// Wraps the state store (to inject failures).
pub type StoreWrapper = fn(Arc<dyn StateStore>) -> Arc<dyn StateStore>;

/// The eligibility function over embedded adapters in a temporary directory.
pub struct TestExchange {
    /// The app.
    pub app: Arc<App>,
    /// Its router.
    pub router: axum::Router,
    /// The data directory (kept alive for the test).
    pub dir: tempfile::TempDir,
    /// The adapters (for inspecting what was stored).
    pub adapters: EmbeddedAdapters,
    now: OffsetDateTime,
    partners: Vec<TradingPartner>,
}

impl TestExchange {
    /// An exchange whose clock reads `date` 10:00 UTC, with the demo data loaded.
    pub async fn on(date: Date) -> Self {
        Self::with_blobs(date, None).await
    }

    /// Same, with the blob store replaced (to inject failures).
    pub async fn with_blobs(date: Date, blobs: Option<Arc<dyn BlobStore>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, date, blobs, true, None).await
    }

    /// Same, with the state store wrapped after the demo data is loaded (to inject failures).
    pub async fn with_store(date: Date, wrap: StoreWrapper) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, date, None, true, Some(wrap)).await
    }

    /// Opens an exchange over an existing data directory (to show state survives a restart).
    pub async fn reopen(self) -> Self {
        let date = self.now.date();
        let dir = self.dir;
        drop(self.app);
        drop(self.router);
        drop(self.adapters);
        Self::open(dir, date, None, false, None).await
    }

    async fn open(
        dir: tempfile::TempDir,
        date: Date,
        blobs: Option<Arc<dyn BlobStore>>,
        load: bool,
        wrap: Option<StoreWrapper>,
    ) -> Self {
        let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
        let now = date.with_time(time!(10:00)).assume_utc();
        let blobs: Arc<dyn BlobStore> = blobs.unwrap_or_else(|| adapters.blobs.clone());
        let keys: Arc<dyn KeyService> = adapters.keys.clone();
        // The store's expiry checks use the same fixed clock as the app.
        let store: Arc<dyn StateStore> = Arc::new((*adapters.store).clone().with_clock(Arc::new(FixedClock(now))));
        let keys_for_wrap = keys.clone();
        let transfers = Arc::new(LocalTransfers::new(store.clone(), ""));
        let app = App::new(
            store,
            DocumentVault::new(blobs, keys.clone()),
            keys,
            Arc::new(FixedClock(now)),
            transfers.clone(),
        )
        .with_audit_sealer(adapters.audit_digests.clone(), adapters.audit_signer.clone());
        let data = PayerData::parse(&std::fs::read(demo_data_path()).expect("demo data")).expect("demo data valid");
        if load {
            app.repo().load(&data).await.expect("load demo data");
        }
        // A wrapper (failure injection) goes around the same clock-bound store, after the data is loaded.
        let app = match wrap {
            Some(wrap) => App::new(
                wrap(app.store().clone()),
                app.vault().as_ref().clone(),
                keys_for_wrap,
                Arc::new(FixedClock(now)),
                transfers,
            )
            .with_audit_sealer(adapters.audit_digests.clone(), adapters.audit_signer.clone()),
            None => app,
        };
        let app = Arc::new(app);
        let router = eligibility::router(app.clone());
        TestExchange { app, router, dir, adapters, now, partners: data.trading_partners }
    }

    /// A bearer token for a demo partner, valid at the fixed clock.
    pub async fn token(&self, partner: &str) -> String {
        let p = self
            .partners
            .iter()
            .find(|p| p.id == PartnerId::parse(partner).expect("partner id"))
            .expect("demo partner");
        self.app.tokens().issue(p, self.now, 300).await.expect("token")
    }

    /// Sends a request built from an API Gateway v2 event value.
    pub async fn send_event(&self, event: &Value) -> Reply {
        let req = lambda_http::request::from_str(&event.to_string()).expect("API Gateway event");
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// Sends `body` to `path` with the given content type and bearer token.
    pub async fn post(&self, path: &str, content_type: &str, token: Option<&str>, body: &[u8]) -> Reply {
        self.send_event(&post_event(path, content_type, token, body)).await
    }

    /// Posts an X12 interchange as demo-provider.
    pub async fn post_270(&self, body: &[u8]) -> Reply {
        let token = self.token("demo-provider").await;
        self.post("/x12/270", "application/edi-x12", Some(&token), body).await
    }
}

/// Sends any request to `router` as an API Gateway HTTP API v2 event: `method`, `path_and_query` (the query goes
/// to `rawQueryString`), `content_type`, an optional bearer token and `body` (none for GET and DELETE).
pub async fn request(
    router: &axum::Router,
    method: &str,
    path_and_query: &str,
    content_type: &str,
    token: Option<&str>,
    body: &[u8],
) -> Reply {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut event = post_event(path, content_type, token, body);
    event["requestContext"]["http"]["method"] = Value::from(method);
    event["routeKey"] = Value::from(format!("{method} {path}"));
    event["rawQueryString"] = Value::from(query);
    if method == "GET" || method == "DELETE" {
        event["body"] = Value::Null;
    }
    let req = lambda_http::request::from_str(&event.to_string()).expect("API Gateway event");
    let resp = router.clone().oneshot(req).await.expect("router is infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, body }
}

/// An app over the embedded adapters in a fresh temporary directory, on `clock`, with no payer data loaded.
pub fn embedded_app(clock: Arc<dyn exchange_core::ports::Clock>) -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
    let store: Arc<dyn StateStore> = Arc::new((*adapters.store).clone().with_clock(clock.clone()));
    let keys = adapters.keys.clone();
    let app = App::new(
        store.clone(),
        DocumentVault::new(adapters.blobs.clone(), keys.clone()),
        keys,
        clock,
        Arc::new(LocalTransfers::new(store, "")),
    )
    .with_audit_sealer(adapters.audit_digests.clone(), adapters.audit_signer.clone());
    (Arc::new(app), dir)
}

/// An API Gateway HTTP API v2 event for a POST, shaped like `events/eligibility/post-270.json`.
pub fn post_event(path: &str, content_type: &str, token: Option<&str>, body: &[u8]) -> Value {
    let mut event = load_event("eligibility/post-270.json");
    event["rawPath"] = Value::from(path);
    event["requestContext"]["http"]["path"] = Value::from(path);
    event["routeKey"] = Value::from(format!("POST {path}"));
    event["headers"]["content-type"] = Value::from(content_type);
    match token {
        Some(t) => event["headers"]["authorization"] = Value::from(format!("Bearer {t}")),
        None => {
            if let Some(h) = event["headers"].as_object_mut() {
                h.remove("authorization");
            }
        }
    }
    match std::str::from_utf8(body) {
        Ok(text) => {
            event["body"] = Value::from(text);
            event["isBase64Encoded"] = Value::from(false);
        }
        Err(_) => {
            use base64::Engine;
            event["body"] = Value::from(base64::engine::general_purpose::STANDARD.encode(body));
            event["isBase64Encoded"] = Value::from(true);
        }
    }
    event
}

/// Reads an event file from `events/`.
pub fn load_event(name: &str) -> Value {
    let path = repo_root().join("events").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces the `{{TOKEN}}` placeholder of an event file with a real token.
pub fn with_token(mut event: Value, token: &str) -> Value {
    if let Some(auth) = event["headers"]["authorization"].as_str() {
        event["headers"]["authorization"] = Value::from(auth.replace("{{TOKEN}}", token));
    }
    event
}

/// Builds a 270 interchange: `isa13`, and the subscriber / dependent segments given as X12 text (`*`, `~`).
pub struct Inquiry270 {
    /// ISA13.
    pub isa13: u32,
    /// 2100A payer id.
    pub payer_id: String,
    /// 2100B NM1 qualifier and id.
    pub provider: (String, String),
    /// 2100C segments after TRN (NM1, DMG, DTP...), and 2110C (EQ...).
    pub subscriber: Vec<String>,
    /// 2000D segments (NM1, DMG, ...), when present.
    pub dependent: Option<Vec<String>>,
}

/// Interchange control numbers for built 270s: unique within a test process, since a reused ISA13 with a different
/// body is (rightly) refused as a duplicate.
static NEXT_ISA13: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100_000);

impl Default for Inquiry270 {
    fn default() -> Self {
        Inquiry270 {
            isa13: NEXT_ISA13.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            payer_id: "DEMOPAYER".into(),
            provider: ("XX".into(), "1234567893".into()),
            subscriber: vec![
                "NM1*IL*1*SMITH*ROBERT****MI*11122333301".into(),
                "DMG*D8*19430519*M".into(),
                "EQ*30".into(),
            ],
            dependent: None,
        }
    }
}

impl Inquiry270 {
    /// The interchange bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut set = vec![
            "ST*270*0001*005010X279A1".to_owned(),
            "BHT*0022*13*REF1*20260412*1000".to_owned(),
            "HL*1**20*1".to_owned(),
            format!("NM1*PR*2*DEMO HEALTH PLAN*****PI*{}", self.payer_id),
            "HL*2*1*21*1".to_owned(),
            format!("NM1*1P*2*ACME HOME HEALTH*****{}*{}", self.provider.0, self.provider.1),
        ];
        match &self.dependent {
            None => {
                set.push("HL*3*2*22*0".into());
                set.push("TRN*1*TRACE-1*9DEMOPROV1".into());
                set.extend(self.subscriber.iter().cloned());
            }
            Some(dep) => {
                set.push("HL*3*2*22*1".into());
                set.extend(self.subscriber.iter().cloned());
                set.push("HL*4*3*23*0".into());
                set.push("TRN*1*TRACE-1*9DEMOPROV1".into());
                set.extend(dep.iter().cloned());
            }
        }
        set.push(format!("SE*{}*0001", set.len() + 1));
        let mut out = format!(
            "ISA*00*          *00*          *ZZ*DEMOPROVIDER   *ZZ*DEMOPAYER      *260412*1000*^*00501*{:09}*0*T*:~\nGS*HS*DEMOPROVIDER*DEMOPAYER*20260412*1000*{}*X*005010X279A1~\n",
            self.isa13, self.isa13
        );
        for s in set {
            out.push_str(&s);
            out.push_str("~\n");
        }
        out.push_str(&format!("GE*1*{}~\nIEA*1*{:09}~\n", self.isa13, self.isa13));
        out.into_bytes()
    }
}

/// Checks an emitted interchange: envelope rules for 271 / 999 / TA1, and the 271 guide on every 271 set.
/// Returns the 271 sets' segment lists and the 999 sets' segment lists.
pub fn check_emitted(body: &[u8]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    use exchange_core::x12::envelope::{parse_interchange, SetKind};
    use exchange_core::x12::guide::{validate, x279a1};
    const KIND_999: SetKind = SetKind { functional_id: "FA", set_id: "999", version: "005010X231A1" };
    let ic = parse_interchange(body, &[x279a1::KIND_271, KIND_999])
        .unwrap_or_else(|e| panic!("emitted interchange fails its envelope: {e:?}\n{}", String::from_utf8_lossy(body)));
    let mut sets_271 = Vec::new();
    let mut sets_999 = Vec::new();
    for g in &ic.groups {
        assert!(g.errors.is_empty(), "emitted group {} has errors {:?}", g.control_number(), g.errors);
        for set in &g.sets {
            assert!(!set.ack.is_rejected(), "emitted set {} fails its envelope: {:?}", set.control_number(), set.ack);
            let texts = set_texts(body, set);
            if set.set_id() == "271" {
                let mut ack = set.ack.clone();
                validate(&x279a1::GUIDE_271, &set.body, &mut ack);
                assert!(
                    !ack.is_rejected(),
                    "emitted 271 breaks the guide: {:?}\n{}",
                    ack.segment_errors,
                    texts.join("\n")
                );
                sets_271.push(texts);
            } else {
                sets_999.push(texts);
            }
        }
    }
    if !sets_999.is_empty() {
        assert_999s_valid(body);
    }
    (sets_271, sets_999)
}

/// Checks the 999 groups of an emitted interchange with an independent validator: pyx12's `x12valid` and its
/// X231A1 map (installed into `.venv` by `scripts/test`). The 999 groups are copied into an interchange of their
/// own, so the verdict is on the 999s alone.
pub fn assert_999s_valid(body: &[u8]) {
    let segments = x12_segments(body);
    let mut out: Vec<String> = segments.iter().take(1).cloned().collect();
    let mut in_999_group = false;
    let mut groups = 0;
    for seg in &segments {
        if seg.starts_with("GS*FA*") {
            in_999_group = true;
            groups += 1;
        }
        if in_999_group {
            out.push(seg.clone());
        }
        if seg.starts_with("GE*") {
            in_999_group = false;
        }
    }
    assert!(groups > 0, "no 999 group in the interchange");
    let isa13 = segments.first().and_then(|isa| isa.split('*').nth(13)).unwrap_or("000000000").to_owned();
    out.push(format!("IEA*{groups}*{isa13}"));
    let validator = repo_root().join(".venv/bin/x12valid");
    assert!(validator.exists(), "{} is missing: run scripts/test, which installs pyx12", validator.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("emitted-999.x12");
    std::fs::write(&file, out.join("~\n") + "~\n").expect("write");
    let run = std::process::Command::new(&validator).arg(&file).output().expect("run x12valid");
    // x12valid's exit status does not tell (it is 1 either way); its verdict line does.
    let report = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    let verdict_ok = report.lines().any(|l| l.trim_end().ends_with("emitted-999.x12: OK"));
    assert!(verdict_ok && !report.contains("ERROR"), "pyx12 rejects the 999:\n{report}\n{}", out.join("~\n"));
}

fn set_texts(body: &[u8], set: &exchange_core::x12::TransactionSet<'_>) -> Vec<String> {
    let all = x12_segments(body);
    let st = set.st.index;
    let end = set.se.map(|s| s.index).unwrap_or(st);
    all.get(st..=end).map(|s| s.to_vec()).unwrap_or_default()
}

/// Sends `n` requests at once (each made by `request`, on its own task) and returns the replies in order: for
/// races between identical submissions.
pub async fn at_once<F, Fut>(n: usize, request: F) -> Vec<Reply>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(request())).collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}
