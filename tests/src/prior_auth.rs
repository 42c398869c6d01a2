//! The prior-auth function over the real embedded adapters, with a clock the test moves, a real notifier, and a
//! subscriber endpoint on loopback that records what it receives.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use exchange_core::adapters::embedded::EmbeddedAdapters;
use exchange_core::adapters::notifier::HttpNotifier;
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::{PartnerId, TradingPartner};
use exchange_core::ports::{Clock, StateStore};
use exchange_core::vault::DocumentVault;
use prior_auth::{PriorAuth, Settings};
use serde_json::Value;
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
}

impl PaExchange {
    /// An exchange at `now` with the payer data at `data` loaded; notifications retry after one second.
    pub async fn new(data: &Path, now: OffsetDateTime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
        let clock = Arc::new(SteppingClock(Mutex::new(now)));
        let store: Arc<dyn StateStore> = Arc::new((*adapters.store).clone().with_clock(clock.clone()));
        let keys = adapters.keys.clone();
        let app = App::new(store, DocumentVault::new(adapters.blobs.clone(), keys.clone()), keys, clock.clone());
        let data = PayerData::parse(&std::fs::read(data).expect("payer data")).expect("payer data valid");
        app.repo.load(&data).await.expect("load payer data");
        let notifier = HttpNotifier::new(std::time::Duration::from_secs(2)).expect("notifier");
        let settings = Settings { allow_http_endpoints: true, retry_base: Duration::seconds(1), ..Settings::default() };
        let pa = Arc::new(PriorAuth::new(Arc::new(app), Arc::new(notifier), settings));
        let router = prior_auth::router(pa.clone());
        PaExchange { pa, router, clock, dir, partners: data.trading_partners }
    }

    /// A bearer token for a registered partner.
    pub async fn token(&self, partner: &str) -> String {
        let p = self
            .partners
            .iter()
            .find(|p| p.id == PartnerId::parse(partner).expect("partner id"))
            .expect("registered partner");
        self.pa.core.tokens.issue(p, self.clock.now(), 3600).await.expect("token")
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
        let req = lambda_http::request::from_str(&event.to_string()).expect("API Gateway event");
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
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

/// Runs the FHIR oracle over `files`; `Err` with its report when any file fails. `Ok(false)` when the oracle is
/// not present (the conformance material is absent).
pub fn fhir_oracle(files: &[PathBuf]) -> Result<bool, String> {
    let Some(dir) = crate::conformance_dir() else { return Ok(false) };
    let oracle = dir.join("../oracles/fhir-validate");
    if !oracle.exists() {
        return Ok(false);
    }
    let out = std::process::Command::new(&oracle).args(files).output().map_err(|e| format!("oracle: {e}"))?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(true)
    } else {
        Err(report)
    }
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
