//! Every CRD CDS Hooks request of `../shared/conformance/davinci/crd-hooks/` answered, each order (or appointment)
//! carrying the coverage-information extension. Two of the requests carry no prefetch and one dispatches orders
//! it does not include: with EHR reads allowed, the service reads what is missing from a loopback EHR (serving the
//! IG's own example resources) with the `fhirAuthorization` the request lends; with reads not allowed, the answer
//! says what could not be determined. The IG's payer and member are not this payer's, so coverage is
//! indeterminate with CRD's reason code, as the IG prescribes.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use exchange_tests::davinci::*;
use exchange_tests::{conformance_dir, demo_data_path};
use serde_json::{json, Value};
use time::macros::datetime;

fn read(rel: &str) -> Value {
    let dir = conformance_dir().expect("../shared/conformance is missing: the CRD conformance tests cannot run");
    let path = dir.join("davinci").join(rel);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("json")
}

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A loopback EHR FHIR server: Coverage searches answer the IG's Coverage example; reads of
/// MedicationRequest/Encounter answer the IG's examples under the id asked for. Records (path, authorization).
async fn ehr() -> (String, Seen) {
    async fn coverage(State(seen): State<Seen>, headers: HeaderMap) -> axum::Json<Value> {
        record(&seen, "Coverage", &headers);
        let c = read("crd/Coverage-example.json");
        axum::Json(json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": c}]}))
    }
    async fn resource(
        State(seen): State<Seen>,
        Path((ty, id)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        record(&seen, &format!("{ty}/{id}"), &headers);
        let file = match ty.as_str() {
            "MedicationRequest" => "crd/MedicationRequest-example.json",
            "Encounter" => "crd/Encounter-example.json",
            _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
        };
        let mut r = read(file);
        r["id"] = json!(id);
        axum::Json(r).into_response()
    }
    fn record(seen: &Seen, path: &str, headers: &HeaderMap) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        seen.lock().unwrap_or_else(|e| e.into_inner()).push((path.to_owned(), auth));
    }
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/fhir/Coverage", get(coverage))
        .route("/fhir/{ty}/{id}", get(resource))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/fhir"), seen)
}

fn service_of(request: &Value) -> String {
    format!("{}-crd", request["hook"].as_str().expect("hook"))
}

/// The orders (or appointments) a conformance request asks about.
fn asked(request: &Value) -> Vec<String> {
    let ctx = &request["context"];
    let bundle = if ctx["draftOrders"].is_object() { &ctx["draftOrders"] } else { &ctx["appointments"] };
    let mut out: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or(""),
                e["resource"]["id"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.extend(ctx["dispatchedOrders"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
    out
}

#[tokio::test]
async fn every_crd_hook_request_is_answered_with_coverage_information() {
    let (base, seen) = ehr().await;
    let settings = davinci::Settings { fetch_from_ehr: true, ..DvExchange::settings() };
    let x = DvExchange::new(&demo_data_path(), datetime!(2026-11-25 10:00 UTC), settings).await;
    for name in
        ["CRDServiceRequest.json", "CRDServiceRequest2.json", "CRDServiceRequest3.json", "CRDServiceRequest4.json"]
    {
        let mut request = read(&format!("crd-hooks/{name}"));
        request["fhirServer"] = json!(base);
        let r = x.call(&service_of(&request), &request).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let answer = r.json();
        let answered: Vec<String> = actions(&answer)
            .iter()
            .map(|res| format!("{}/{}", res["resourceType"].as_str().unwrap_or(""), res["id"].as_str().unwrap_or("")))
            .collect();
        if request["extension"]["davinci-crd.configuration"]["coverage-info"] == json!(false) {
            // The client turned coverage information off: each order is answered by a card instead.
            assert!(answered.is_empty(), "{name}");
            let carded: Vec<String> = answer["cards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["extension"]["davinci-crd.associated-resource"][0]["reference"].as_str())
                .map(str::to_owned)
                .collect();
            assert_eq!(carded, asked(&request), "{name}: {answer}");
            continue;
        }
        assert_eq!(answered, asked(&request), "{name}: every order answered: {answer}");
        for res in actions(&answer) {
            let ext = coverage_information(res);
            assert!(!ext.is_empty(), "{name}: {res}");
            for e in ext {
                // The IG's payer is not this payer: coverage is indeterminate, with the reason coded.
                assert_eq!(sub_value(e, "covered"), Some(&json!("indeterminate")), "{name}");
                assert!(sub_value(e, "reason").is_some(), "{name}");
                assert!(sub_value(e, "coverage-assertion-id").is_some(), "{name}");
            }
        }
        assert!(answer["cards"].is_array());
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"Coverage"), "missing Coverage was read: {paths:?}");
    assert!(paths.contains(&"MedicationRequest/1111") && paths.contains(&"MedicationRequest/2222"), "{paths:?}");
    assert!(seen.iter().all(|(_, auth)| auth == "Bearer some-opaque-fhir-access-token"), "the lent token is used");
}

#[tokio::test]
async fn without_ehr_reads_the_answer_says_what_could_not_be_determined() {
    let x = DvExchange::new(&demo_data_path(), datetime!(2026-11-25 10:00 UTC), DvExchange::settings()).await;
    for name in ["CRDServiceRequest3.json", "CRDServiceRequest4.json"] {
        let request = read(&format!("crd-hooks/{name}"));
        let r = x.call(&service_of(&request), &request).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let answer = r.json();
        assert!(answer.get("systemActions").is_none(), "{name}");
        assert!(
            answer["cards"][0]["summary"].as_str().is_some_and(|s| s.contains("could not be determined")),
            "{name}"
        );
    }
    // order-dispatch names orders it does not carry: they are listed as undetermined.
    let request = read("crd-hooks/CRDServiceRequest2.json");
    let answer = x.call(&service_of(&request), &request).await.json();
    let detail = answer["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["detail"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(detail.contains("MedicationRequest/1111"), "{answer}");
}
