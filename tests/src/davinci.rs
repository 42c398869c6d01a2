//! The davinci function (CRD, DTR, discovery) over the real embedded adapters with the demo payer data, the demo
//! provider registered as a CDS client (issuer [`EHR_ISSUER`], a P-384 key made per test), and helpers to mint
//! CDS client JWTs and to build CRD requests about demo members.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use davinci::crd::ehr::HttpEhr;
use davinci::{Davinci, Settings};
use exchange_core::adapters::embedded::{EmbeddedAdapters, LocalTransfers};
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_core::domain::{PartnerId, TradingPartner};
use exchange_core::jose::{Jwk, Jwks};
use exchange_core::ports::{Clock, StateStore};
use exchange_core::vault::DocumentVault;
use p384::ecdsa::signature::Signer as _;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::prior_auth::SteppingClock;
use crate::{post_event, Reply};

/// The CDS client (EHR) issuer registered to demo-provider.
pub const EHR_ISSUER: &str = "https://ehr.example.org";
/// The public base URL the function is configured with.
pub const BASE: &str = "https://exchange.test";

/// The davinci function under test.
pub struct DvExchange {
    /// State.
    pub dv: Arc<Davinci>,
    /// Router.
    pub router: axum::Router,
    /// Clock.
    pub clock: Arc<SteppingClock>,
    /// Data directory.
    pub dir: tempfile::TempDir,
    /// The EHR's signing key.
    pub ehr_key: p384::ecdsa::SigningKey,
    partners: Vec<TradingPartner>,
}

/// The public JWK of a P-384 key.
pub fn jwk(key: &p384::ecdsa::SigningKey, kid: &str) -> Jwk {
    Jwk::ec_p384(kid, key.verifying_key().to_encoded_point(false).as_bytes()).expect("a P-384 point")
}

/// Signs `claims` as a compact ES384 JWS with `kid`.
pub fn sign(key: &p384::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "ES384", "typ": "JWT", "kid": kid});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: p384::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

impl DvExchange {
    /// The function over `data` (with demo-provider made a CDS client) at `now`.
    pub async fn new(data: &Path, now: OffsetDateTime, settings: Settings) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
        let clock = Arc::new(SteppingClock::at(now));
        let store: Arc<dyn StateStore> = Arc::new((*adapters.store).clone().with_clock(clock.clone()));
        let keys = adapters.keys.clone();
        let transfers = Arc::new(LocalTransfers::new(store.clone(), ""));
        let app =
            App::new(store, DocumentVault::new(adapters.blobs.clone(), keys.clone()), keys, clock.clone(), transfers)
                .with_audit_sealer(adapters.audit_digests.clone(), adapters.audit_signer.clone());
        let mut data = PayerData::parse(&std::fs::read(data).expect("payer data")).expect("payer data valid");
        let ehr_key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        for p in &mut data.trading_partners {
            if p.id.as_str() == "demo-provider" {
                p.jwks = Some(Jwks { keys: vec![jwk(&ehr_key, "ehr-1")] });
                p.cds_issuers = vec![EHR_ISSUER.to_owned()];
            }
        }
        app.repo().load(&data).await.expect("load payer data");
        let dv = Arc::new(Davinci::new(Arc::new(app), Arc::new(HttpEhr::new()), settings));
        let router = davinci::router(dv.clone());
        DvExchange { dv, router, clock, dir, ehr_key, partners: data.trading_partners }
    }

    /// The settings tests use: configured base URL, no EHR reads.
    pub fn settings() -> Settings {
        Settings { public_base_url: Some(BASE.into()), fetch_from_ehr: false, allow_http_ehr: true }
    }

    /// The clock, in epoch seconds.
    pub fn clock_now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// A fresh CDS client JWT for `service` (claims overridable).
    pub fn cds_jwt(&self, service: &str, overrides: Value) -> String {
        let now = self.clock.now().unix_timestamp();
        let mut claims = json!({
            "iss": EHR_ISSUER, "sub": "ehr-client", "aud": format!("{BASE}/cds-services/{service}"),
            "iat": now, "exp": now + 120, "jti": crate::davinci::random_jti()
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        sign(&self.ehr_key, "ehr-1", &claims)
    }

    /// POSTs a hook request to `service` with `jwt`.
    pub async fn hook(&self, service: &str, jwt: Option<&str>, body: &Value) -> Reply {
        self.send("POST", &format!("/cds-services/{service}"), jwt, body.to_string().as_bytes()).await
    }

    /// POSTs a hook request with a fresh JWT.
    pub async fn call(&self, service: &str, body: &Value) -> Reply {
        let jwt = self.cds_jwt(service, json!({}));
        self.hook(service, Some(&jwt), body).await
    }

    /// An exchange token for a registered partner.
    pub async fn token(&self, partner: &str) -> String {
        let id = PartnerId::parse(partner).expect("partner id");
        let p = self.partners.iter().find(|p| p.id == id).cloned().expect("registered partner");
        self.dv.core.tokens().issue(&p, self.clock.now(), 3600).await.expect("token")
    }

    /// Sends a request as an API Gateway v2 event.
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut event = post_event(path, "application/json", token, body);
        event["requestContext"]["http"]["method"] = Value::from(method);
        event["routeKey"] = Value::from(format!("{method} {path}"));
        if method == "GET" {
            event["body"] = Value::Null;
        }
        let req = lambda_http::request::from_str(&event.to_string()).expect("API Gateway event");
        use tower::ServiceExt;
        let resp = self.router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// POSTs a DTR operation as `partner`.
    pub async fn dtr(&self, operation: &str, partner: &str, body: &Value) -> Reply {
        let token = self.token(partner).await;
        self.send("POST", &format!("/fhir/Questionnaire/{operation}"), Some(&token), body.to_string().as_bytes()).await
    }
}

/// A random `jti`.
pub fn random_jti() -> String {
    let b: [u8; 12] = rand::random();
    URL_SAFE_NO_PAD.encode(b)
}

/// A Coverage of the demo payer for `member`.
pub fn coverage(id: &str, member: &str, payer_id: &str) -> Value {
    json!({
        "resourceType": "Coverage", "id": id, "status": "active",
        "subscriberId": member,
        "beneficiary": {"reference": "Patient/pat1"},
        "payor": [{"identifier": {"system": "http://example.org/payer-ids", "value": payer_id}}]
    })
}

/// A draft ServiceRequest billed under `system|code`.
pub fn service_request(id: &str, system: &str, code: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest", "id": id, "status": "draft", "intent": "order",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/pat1"}
    })
}

/// CPT's FHIR system.
pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
/// HCPCS's FHIR system.
pub const HCPCS: &str = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";

/// An order-sign request about `orders` with `coverage` prefetched.
pub fn order_sign(orders: &[Value], coverages: &[Value]) -> Value {
    json!({
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/pr1", "patientId": "pat1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": orders.iter().map(|o| json!({"resource": o})).collect::<Vec<_>>()}
        },
        "prefetch": {
            "coverage": {"resourceType": "Bundle", "type": "searchset",
                         "entry": coverages.iter().map(|c| json!({"resource": c})).collect::<Vec<_>>()}
        }
    })
}

/// The coverage-information extensions of a systemAction's resource.
pub fn coverage_information(resource: &Value) -> Vec<&Value> {
    resource["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == davinci::crd::coverage_information::COVERAGE_INFORMATION)
        .collect()
}

/// A sub-extension's value (`valueCode`, `valueString`, ...).
pub fn sub_value<'a>(ext: &'a Value, url: &str) -> Option<&'a Value> {
    let e = ext["extension"].as_array()?.iter().find(|e| e["url"] == url)?;
    e.as_object()?.iter().find(|(k, _)| k.starts_with("value")).map(|(_, v)| v)
}

/// The systemAction resources by reference.
pub fn actions(answer: &Value) -> Vec<&Value> {
    answer["systemActions"].as_array().into_iter().flatten().map(|a| &a["resource"]).collect()
}
