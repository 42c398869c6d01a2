//! Claims attachments end to end through HTTP over the real embedded adapters: every CDex `$submit-attachment`
//! example accepted and retrieved byte for byte, the public 275 samples (the CDA payload retrieved byte for byte,
//! the non-numeric BIN01 rejected with a 999), payer requests (Tasks) moved by the answers, the link to a pended
//! prior-authorization case, who sees what, the bad-input answers, and proof that the vault holds ciphertext.
//! Fails loudly when `../shared/conformance` is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attachments::Attachments;
use base64::Engine as _;
use exchange_core::ports::{EncryptionContext, PortError};
use exchange_tests::prior_auth::{assert_fhir_valid, case_id, conformance_data_path, pas_example, PaExchange};
use exchange_tests::{conformance_dir, x12_segments, Reply};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::macros::datetime;

fn cdex_dir() -> PathBuf {
    conformance_dir()
        .expect("../shared/conformance is missing: the attachment conformance tests need it (present in CI)")
        .join("davinci/cdex")
}

async fn exchange() -> PaExchange {
    let mut ex = PaExchange::new(&conformance_data_path(), datetime!(2026-11-25 10:00 UTC)).await;
    let svc = Arc::new(Attachments::new(ex.pa.core.clone()));
    ex.router = ex
        .router
        .clone()
        .merge(attachments::routes(svc))
        .merge(exchange_core::http::transfer::routes(ex.pa.core.clone()));
    ex
}

/// A plain HTTP request to a transfer URL, as a client (or S3) sees it: no bearer token, the body as is.
async fn transfer(ex: &PaExchange, method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(axum::body::Body::from(body)).expect("request");
    let resp = ex.router.clone().oneshot(req).await.expect("router is infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, body }
}

/// Declares an upload as `partner` and returns the reply.
async fn declare(ex: &PaExchange, partner: &str, content_type: &str, doc: &[u8]) -> Reply {
    let sha = exchange_core::record::sha256_hex(doc);
    let body = json!({ "contentType": content_type, "size": doc.len(), "sha256": sha }).to_string();
    call(ex, partner, "POST", "/attachments/uploads", "application/json", body.as_bytes()).await
}

/// PUTs `doc` to the upload URL a declaration answered.
async fn put_upload(ex: &PaExchange, declared: &Value, doc: Vec<u8>) -> Reply {
    let url = declared["upload"]["url"].as_str().expect("upload url");
    let headers: Vec<(String, String)> = declared["upload"]["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(declared["upload"]["method"], "PUT");
    transfer(ex, "PUT", url, &headers, doc).await
}

/// A `$submit-attachment` (based on CDex example 3) whose one document is the upload `content_url`.
fn submit_upload(tracking: &str, content_type: &str, content_url: &str) -> Vec<u8> {
    let body = with_param(
        &cdex_example(3),
        "TrackingId",
        Some(json!({ "valueIdentifier": { "system": "http://example.org/tracking", "value": tracking } })),
    );
    with_param(
        &body,
        "Attachment",
        Some(json!({ "part": [
            { "name": "LineItem", "valueString": "1" },
            { "name": "Code", "valueCodeableConcept": { "coding": [{ "system": "http://loinc.org", "code": "11506-3" }] } },
            { "name": "Content", "resource": { "resourceType": "DocumentReference", "status": "current",
                "content": [{ "attachment": { "contentType": content_type, "url": content_url } }] } }
        ]})),
    )
}

async fn call(ex: &PaExchange, partner: &str, method: &str, path: &str, ct: &str, body: &[u8]) -> Reply {
    let token = ex.token(partner).await;
    ex.send(method, path, ct, &token, body).await
}

async fn submit(ex: &PaExchange, partner: &str, body: &[u8]) -> Reply {
    call(ex, partner, "POST", "/fhir/$submit-attachment", "application/fhir+json", body).await
}

async fn get(ex: &PaExchange, partner: &str, path: &str) -> Reply {
    call(ex, partner, "GET", path, "", b"").await
}

/// What each Attachment of a `$submit-attachment` body should be stored as, in order: the decoded `data` of a
/// DocumentReference's contents, or the resource's JSON text exactly as it appears in the body.
fn expected_documents(body: &[u8]) -> Vec<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(default)]
        name: String,
        #[serde(borrow, default)]
        resource: Option<&'a RawValue>,
        #[serde(borrow, default)]
        part: Vec<P<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        parameter: Vec<P<'a>>,
    }
    let params: Params<'_> = serde_json::from_slice(body).expect("parameters");
    let mut out = Vec::new();
    for a in params.parameter.iter().filter(|p| p.name == "Attachment") {
        let raw = a.part.iter().find(|p| p.name == "Content").and_then(|p| p.resource).expect("content");
        let v: Value = serde_json::from_str(raw.get()).expect("resource");
        if v["resourceType"] == "DocumentReference" {
            for c in v["content"].as_array().expect("content") {
                let data = c["attachment"]["data"].as_str().expect("data");
                out.push(base64::engine::general_purpose::STANDARD.decode(data).expect("base64"));
            }
        } else {
            out.push(raw.get().as_bytes().to_vec());
        }
    }
    out
}

fn tracking_of(body: &Value) -> String {
    body["parameter"].as_array().unwrap().iter().find(|p| p["name"] == "TrackingId").unwrap()["valueIdentifier"]
        ["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The payer's view of the attachments with `tracking`: the list, and each document's downloaded bytes.
async fn retrieve(ex: &PaExchange, tracking: &str) -> (Value, Vec<Vec<u8>>) {
    let list = get(ex, "sample-payer", &format!("/attachments?trackingId={tracking}")).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let atts = list["attachments"].as_array().expect("attachments");
    assert_eq!(atts.len(), 1, "one attachment per tracking id: {list}");
    let mut docs = Vec::new();
    for d in atts[0]["documents"].as_array().expect("documents") {
        let r = get(ex, "sample-payer", d["href"].as_str().unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), d["contentType"].as_str().unwrap());
        assert_eq!(r.header("x-content-sha256"), d["sha256"].as_str().unwrap());
        docs.push(r.body.clone());
    }
    (atts[0].clone(), docs)
}

#[tokio::test]
async fn every_cdex_example_is_accepted_and_retrieved_byte_for_byte() {
    let ex = exchange().await;
    let mut examples: Vec<PathBuf> = std::fs::read_dir(cdex_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("cdex-parameters-example"))
        .collect();
    examples.sort();
    assert_eq!(examples.len(), 5, "the five CDex $submit-attachment examples");
    let mut references = Vec::new();
    for path in &examples {
        let body = std::fs::read(path).unwrap();
        let reply = submit(&ex, "cdex-provider", &body).await;
        assert_eq!(reply.status, 200, "{}: {}", path.display(), reply.text());
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(outcome["issue"].as_array().unwrap().iter().all(|i| i["severity"] == "information"));
        // No claim or request with these tracking ids was received: the attachment is held, and the answer says so.
        assert!(outcome.to_string().contains("held"), "{outcome}");

        let tracking = tracking_of(&serde_json::from_slice(&body).unwrap());
        let (att, docs) = retrieve(&ex, &tracking).await;
        assert_eq!(docs, expected_documents(&body), "{}: documents differ from what was sent", path.display());
        assert_eq!(att["final"], true);

        // A retry is answered the same and stores nothing new.
        let again = submit(&ex, "cdex-provider", &body).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.header("idempotent-replayed"), "true");
        let (att2, _) = retrieve(&ex, &tracking).await;
        assert_eq!(att2["documents"], att["documents"]);
        assert_eq!(att2["history"].as_array().unwrap().len(), 1);

        // The FHIR search finds the same documents, and what it returns is valid FHIR.
        let search = get(&ex, "sample-payer", &format!("/fhir/DocumentReference?identifier={tracking}")).await;
        assert_eq!(search.status, 200, "{}", search.text());
        let bundle = search.json();
        assert_eq!(bundle["total"], docs.len());
        references.push((format!("search-{}.json", references.len()), bundle));
    }
    let named: Vec<(&str, &Value)> = references.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert_fhir_valid(&named);
}

#[tokio::test]
async fn the_275_sample_is_stored_and_its_cda_retrieved_byte_for_byte() {
    let ex = exchange().await;
    let path = conformance_dir().unwrap().join("x12/275/staedi_sample275_with_HL7_valid_BIN01.edi");
    let input = std::fs::read(&path).unwrap();
    let reply = call(&ex, "cdex-provider", "POST", "/x12/275", "application/edi-x12", &input).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let segs = x12_segments(&reply.body);
    assert!(segs.iter().any(|s| s == "IK5*A"), "the set is accepted: {segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("AK9*A*1*1*1")), "{segs:?}");

    // BIN01 says 2768 bytes follow "BIN*2768*": that is the document.
    let marker = b"BIN*2768*";
    let at = input.windows(marker.len()).position(|w| w == marker).unwrap() + marker.len();
    let cda = &input[at..at + 2768];
    for limit in ["0", "101"] {
        let r = get(&ex, "sample-payer", &format!("/attachments?memberId=111223333A&limit={limit}")).await;
        assert_eq!((r.status, r.header("content-type")), (400, "application/problem+json"), "limit={limit}");
    }
    let list = get(&ex, "sample-payer", "/attachments?memberId=111223333A").await.json();
    let atts = list["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{list}");
    assert_eq!(atts[0]["trackingId"], "1722634842", "no TRN: the set's REF*IK is the control number");
    assert_eq!(atts[0]["serviceDate"], "2003-04-01");
    let doc = &atts[0]["documents"][0];
    assert_eq!(doc["contentType"], "application/xml");
    let r = get(&ex, "sample-payer", doc["href"].as_str().unwrap()).await;
    assert_eq!(r.body, cda);

    // The same interchange again: the original 999, nothing new stored.
    let again = call(&ex, "cdex-provider", "POST", "/x12/275", "application/edi-x12", &input).await;
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body, reply.body);
}

#[tokio::test]
async fn a_non_numeric_bin01_is_rejected_with_a_999() {
    let ex = exchange().await;
    let input = std::fs::read(conformance_dir().unwrap().join("x12/275/staedi_nonnumeric_BIN01.edi")).unwrap();
    let reply = call(&ex, "cdex-provider", "POST", "/x12/275", "application/edi-x12", &input).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let segs = x12_segments(&reply.body);
    assert!(segs.iter().any(|s| s.starts_with("ST*999")), "{segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("IK5*R")), "{segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("AK9*R")), "{segs:?}");
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert_eq!(list["attachments"].as_array().unwrap().len(), 0, "nothing stored: {list}");
}

fn cdex_example(n: u32) -> Vec<u8> {
    std::fs::read(cdex_dir().join(format!("cdex-parameters-example{n}.json"))).unwrap()
}

fn with_param(body: &[u8], name: &str, param: Option<Value>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    let list = v["parameter"].as_array_mut().unwrap();
    list.retain(|p| p["name"] != name);
    if let Some(mut p) = param {
        p["name"] = json!(name);
        list.push(p);
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn bad_submissions_get_an_operation_outcome_and_store_nothing() {
    let ex = exchange().await;
    let base = cdex_example(3);
    let pdf_doc = |content_type: &str, data: &str| {
        json!({ "part": [
            { "name": "LineItem", "valueString": "1" },
            { "name": "Content", "resource": { "resourceType": "DocumentReference", "status": "current",
                "content": [{ "attachment": { "contentType": content_type, "data": data } }] } }
        ]})
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("no MemberId", with_param(&base, "MemberId", None), 400, "MemberId"),
        (
            "AttachTo encounter",
            with_param(&base, "AttachTo", Some(json!({ "valueCode": "encounter" }))),
            400,
            "AttachTo",
        ),
        (
            "bad base64",
            with_param(&base, "Attachment", Some(pdf_doc("application/pdf", "@@not base64@@"))),
            400,
            "base64",
        ),
        (
            "not accepted",
            with_param(&base, "Attachment", Some(pdf_doc("application/zip", "UEsDBA=="))),
            422,
            "application/zip",
        ),
        (
            "unknown payer",
            with_param(&base, "PayerId", Some(json!({ "valueIdentifier": { "value": "NOPE" } }))),
            422,
            "payer",
        ),
        ("not JSON", b"{".to_vec(), 400, "JSON"),
        (
            "tracking id too long to key by",
            with_param(&base, "TrackingId", Some(json!({ "valueIdentifier": { "value": "T".repeat(200) } }))),
            400,
            "TrackingId",
        ),
        ("not Parameters", br#"{"resourceType":"Patient"}"#.to_vec(), 400, "Parameters"),
    ];
    for (what, body, status, says) in cases {
        let reply = submit(&ex, "cdex-provider", &body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
        assert!(outcome.to_string().contains(says), "{what}: {outcome}");
    }
    // A provider that does not submit for the organisation or provider named.
    let reply = submit(&ex, "cdex-other-provider", &base).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    // A payer token cannot submit.
    assert_eq!(submit(&ex, "sample-payer", &base).await.status, 403);
    assert_eq!(ex.vaulted_documents(), 0, "no refused submission left a document behind");
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert!(list["attachments"].as_array().unwrap().is_empty());

    // The tracking id of a final submission cannot carry different content.
    assert_eq!(submit(&ex, "cdex-provider", &base).await.status, 200);
    let changed = with_param(&base, "ServiceDate", Some(json!({ "valueDateTime": "2022-06-17" })));
    let reply = submit(&ex, "cdex-provider", &changed).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn non_final_parts_add_up_and_a_final_one_closes_the_tracking_id() {
    let ex = exchange().await;
    let first = with_param(&cdex_example(3), "Final", Some(json!({ "valueBoolean": false })));
    assert_eq!(submit(&ex, "cdex-provider", &first).await.status, 200);
    let second =
        with_param(&cdex_example(1), "TrackingId", Some(json!({ "valueIdentifier": { "value": "trackingid123" } })));
    assert_eq!(submit(&ex, "cdex-provider", &second).await.status, 200);
    let (att, docs) = retrieve(&ex, "trackingid123").await;
    assert_eq!(docs.len(), 2);
    assert_eq!(att["history"].as_array().unwrap().len(), 2);
    assert_eq!(att["final"], true);
    let third =
        with_param(&cdex_example(2), "TrackingId", Some(json!({ "valueIdentifier": { "value": "trackingid123" } })));
    assert_eq!(submit(&ex, "cdex-provider", &third).await.status, 409);
}

#[tokio::test]
async fn only_the_payer_and_the_submitter_see_an_attachment() {
    let ex = exchange().await;
    assert_eq!(submit(&ex, "cdex-provider", &cdex_example(1)).await.status, 200);
    let (att, _) = retrieve(&ex, "11234657").await;
    let id = att["id"].as_str().unwrap();
    let href = att["documents"][0]["href"].as_str().unwrap();
    assert_eq!(get(&ex, "cdex-provider", &format!("/attachments/{id}")).await.status, 200);
    assert_eq!(get(&ex, "cdex-provider", href).await.status, 200);
    // A document position that is no number, or past the last document: a 404 in problem+json either way.
    for position in ["not-a-number", "-1", "99999999999", "7"] {
        let r = get(&ex, "cdex-provider", &format!("/attachments/{id}/documents/{position}")).await;
        assert_eq!((r.status, r.header("content-type")), (404, "application/problem+json"), "{position}");
    }
    let absent = get(&ex, "cdex-other-provider", "/attachments/att-000000000000000000000000").await;
    assert_eq!(absent.status, 404);
    for (partner, status) in [("cdex-other-provider", 404), ("sample-provider", 404), ("admin", 403)] {
        let r = get(&ex, partner, &format!("/attachments/{id}")).await;
        assert_eq!(r.status, status, "{partner}: {}", r.text());
        if status == 404 {
            // Exactly what an id that does not exist gets: nothing tells the attachment exists.
            assert_eq!(r.body, absent.body, "{partner}");
        }
        assert_eq!(get(&ex, partner, href).await.status, status, "{partner}");
    }
    let theirs = get(&ex, "cdex-other-provider", "/attachments").await.json();
    assert!(theirs["attachments"].as_array().unwrap().is_empty());
    let search = get(&ex, "cdex-other-provider", "/fhir/DocumentReference?identifier=11234657").await.json();
    assert_eq!(search["total"], 0);
}

#[tokio::test]
async fn the_vault_holds_ciphertext_bound_to_the_payer() {
    let ex = exchange().await;
    let body = cdex_example(1);
    assert_eq!(submit(&ex, "cdex-provider", &body).await.status, 200);
    let document = &expected_documents(&body)[0];
    assert!(document.len() > 1000);
    // Small documents live in the database file, larger ones in files: neither holds the plaintext.
    let mut stored = files(&ex.dir.path().join("documents"));
    assert!(!stored.is_empty() || !ex.small_documents().is_empty());
    stored.push(ex.dir.path().join("state.redb"));
    for f in &stored {
        let raw = std::fs::read(f).unwrap();
        for window in document.chunks(32).filter(|c| c.len() == 32) {
            assert!(!raw.windows(32).any(|w| w == window), "{} holds plaintext", f.display());
        }
    }
    let (att, _) = retrieve(&ex, "11234657").await;
    let repo = exchange_core::domain::attachments::AttachmentRepo::new(ex.pa.core.store().clone());
    let (stored, _) = repo.get(att["id"].as_str().unwrap()).await.unwrap().unwrap();
    let path = stored.documents[0].path.clone();
    let vault = &ex.pa.core.vault();
    let right = EncryptionContext::for_document(&path, "789312");
    assert_eq!(&vault.get(&path, &right, None).await.unwrap(), document);
    let other_payer = EncryptionContext::for_document(&path, "OTHERPAYER");
    assert!(matches!(vault.get(&path, &other_payer, None).await, Err(PortError::Integrity(_))));
}

#[tokio::test]
async fn a_payer_request_is_listed_to_its_provider_and_completed_by_the_answer() {
    let ex = exchange().await;
    let json_ct = "application/fhir+json";
    let task = std::fs::read(cdex_dir().join("cdex-task-example20.json")).unwrap();
    let created = call(&ex, "sample-payer", "POST", "/fhir/Task", json_ct, &task).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let task_id = created.json()["id"].as_str().unwrap().to_owned();
    assert_fhir_valid(&[("task.json", &created.json())]);
    // The same tracking id again is a conflict; a provider cannot create requests; data requests are not ours.
    assert_eq!(call(&ex, "sample-payer", "POST", "/fhir/Task", json_ct, &task).await.status, 409);
    assert_eq!(call(&ex, "cdex-provider", "POST", "/fhir/Task", json_ct, &task).await.status, 403);
    let data_request = std::fs::read(cdex_dir().join("cdex-task-example1.json")).unwrap();
    assert_eq!(call(&ex, "sample-payer", "POST", "/fhir/Task", json_ct, &data_request).await.status, 422);

    // Task.owner is organisation 1234567893: cdex-provider submits for it, cdex-other-provider does not.
    let open = get(&ex, "cdex-provider", "/fhir/Task").await.json();
    assert_eq!(open["total"], 1, "{open}");
    assert_eq!(get(&ex, "cdex-other-provider", "/fhir/Task").await.json()["total"], 0);
    assert_eq!(get(&ex, "cdex-other-provider", &format!("/fhir/Task/{task_id}")).await.status, 404);

    // The answer: CDex example 5 (preauthorization, organisation 1234567893) under the request's tracking id,
    // with the progress note asked for.
    let answer =
        with_param(&cdex_example(5), "TrackingId", Some(json!({ "valueIdentifier": { "value": "trackingid789" } })));
    let mut answer: Value = serde_json::from_slice(&answer).unwrap();
    for p in answer["parameter"].as_array_mut().unwrap() {
        if p["name"] == "Attachment" {
            p["part"].as_array_mut().unwrap().push(json!({ "name": "Code", "valueCodeableConcept": { "coding": [{ "system": "http://loinc.org", "code": "11506-3" }] } }));
        }
    }
    let reply = submit(&ex, "cdex-provider", answer.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.text().contains("held"), "linked to the request, not held: {}", reply.text());
    let read = get(&ex, "sample-payer", &format!("/fhir/Task/{task_id}")).await.json();
    assert_eq!(read["status"], "completed", "{read}");
    assert_eq!(get(&ex, "cdex-provider", "/fhir/Task").await.json()["total"], 0, "no longer open");
    let list = get(&ex, "sample-payer", "/attachments?claim=Preauth123").await.json();
    assert_eq!(list["attachments"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn an_attachment_for_a_pended_case_is_linked_to_it() {
    let ex = exchange().await;
    let reply = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let case = case_id(&reply.json());
    let body = with_param(&cdex_example(5), "TrackingId", Some(json!({ "valueIdentifier": { "value": case } })));
    let body = with_param(&body, "OrganizationId", Some(json!({ "valueIdentifier": { "value": "8189991234" } })));
    let body = with_param(&body, "PayerId", Some(json!({ "valueIdentifier": { "value": "789312" } })));
    let reply = submit(&ex, "sample-provider", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.text().contains("held"), "{}", reply.text());
    let list = get(&ex, "sample-payer", &format!("/attachments?caseId={case}")).await.json();
    assert_eq!(list["attachments"][0]["caseId"], case.as_str(), "{list}");
    // Another provider quoting the case id is not linked to it.
    let other = with_param(&body, "OrganizationId", Some(json!({ "valueIdentifier": { "value": "1407071236" } })));
    let reply = submit(&ex, "cdex-provider", &other).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("held"));
    let list = get(&ex, "sample-payer", &format!("/attachments?caseId={case}")).await.json();
    assert_eq!(list["attachments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_submit_attachment_event_is_accepted_with_the_demo_data() {
    let mut ex = PaExchange::new(&exchange_tests::demo_data_path(), datetime!(2026-11-25 10:00 UTC)).await;
    ex.router = ex.router.clone().merge(attachments::routes(Arc::new(Attachments::new(ex.pa.core.clone()))));
    let token = ex.token("demo-provider").await;
    let text = std::fs::read_to_string(exchange_tests::repo_root().join("events/attachments/submit-attachment.json"))
        .unwrap()
        .replace("{{TOKEN}}", &token);
    let reply = ex.send_event(&serde_json::from_str(&text).unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = get(&ex, "demo-payer", "/attachments?trackingId=DEMO-ATT-0001").await.json();
    assert_eq!(list["attachments"][0]["documents"][0]["codes"][0], "11506-3", "{list}");
}

/// A 275 from organisation 1407071236 to payer 00121 for member `member`: one LX loop per `(trn, payload)`.
fn interchange_275(member: &str, loops: &[(&str, &[u8])]) -> Vec<u8> {
    let mut set: Vec<u8> = Vec::new();
    let mut count = 0;
    let mut seg = |set: &mut Vec<u8>, bytes: &[u8]| {
        set.extend_from_slice(bytes);
        set.push(b'~');
        count += 1;
    };
    for s in [
        "BGN*02*0001*20261125".to_owned(),
        "NM1*PR*2*PAYER*****PI*00121".to_owned(),
        "NM1*41*2*SUBMITTER*****46*S1".to_owned(),
        "NM1*1P*2*CLINIC*****XX*1407071236".to_owned(),
        format!("NM1*QC*1*DOE*JANE****MI*{member}"),
    ] {
        seg(&mut set, s.as_bytes());
    }
    for (n, (trn, payload)) in loops.iter().enumerate() {
        seg(&mut set, format!("LX*{}", n + 1).as_bytes());
        seg(&mut set, format!("TRN*1*{trn}").as_bytes());
        seg(&mut set, b"STC*R3:11506-3::LOI");
        let mut bin = format!("BIN*{}*", payload.len()).into_bytes();
        bin.extend_from_slice(payload);
        seg(&mut set, &bin);
    }
    let mut out = b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261125*1200*^*00501*000000007*0*P*:~GS*PI*S*R*20261125*1200*7*X*005010X210~ST*275*0001*005010X210~".to_vec();
    out.extend_from_slice(&set);
    out.extend_from_slice(format!("SE*{}*0001~GE*1*7~IEA*1*000000007~", count + 2).as_bytes());
    out
}

#[tokio::test]
async fn a_275_set_is_stored_whole_or_not_at_all() {
    let ex = exchange().await;
    let ct = "application/edi-x12";
    // Two loops under one control number are one attachment with two documents.
    let two = interchange_275("M275A", &[("ACN-1", b"%PDF-1.4 first"), ("ACN-1", b"<note>second</note>")]);
    let reply = call(&ex, "cdex-provider", "POST", "/x12/275", ct, &two).await;
    assert!(x12_segments(&reply.body).iter().any(|s| s == "IK5*A"), "{}", reply.text());
    let (att, docs) = retrieve(&ex, "ACN-1").await;
    assert_eq!(docs, vec![b"%PDF-1.4 first".to_vec(), b"<note>second</note>".to_vec()]);
    assert_eq!(att["documents"][1]["contentType"], "application/xml");

    // A good loop and one the payer does not accept: the 999 rejects the set at the refused BIN, and the good
    // loop is not stored either.
    let mixed = interchange_275("M275B", &[("ACN-2", b"%PDF-1.4 fine"), ("ACN-3", &[0, 159, 146, 150])]);
    let mixed = String::from_utf8_lossy(&mixed).replace("000000007", "000000008").into_bytes();
    let reply = call(&ex, "cdex-provider", "POST", "/x12/275", ct, &mixed).await;
    let segs = x12_segments(&reply.body);
    assert!(segs.iter().any(|s| s.starts_with("IK3*BIN*14")), "{segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("IK5*R")), "{segs:?}");
    let list = get(&ex, "sample-payer", "/attachments?memberId=m275b").await.json();
    assert!(list["attachments"].as_array().unwrap().is_empty(), "nothing of a rejected set is stored: {list}");
    // Member search ignores case: the first attachment is found as m275a.
    let list = get(&ex, "sample-payer", "/attachments?memberId=m275a").await.json();
    assert_eq!(list["attachments"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_later_part_must_be_for_the_same_member() {
    let ex = exchange().await;
    let first = with_param(&cdex_example(3), "Final", Some(json!({ "valueBoolean": false })));
    assert_eq!(submit(&ex, "cdex-provider", &first).await.status, 200);
    let other_member =
        with_param(&cdex_example(1), "TrackingId", Some(json!({ "valueIdentifier": { "value": "trackingid123" } })));
    let other_member = with_param(&other_member, "MemberId", Some(json!({ "valueIdentifier": { "value": "999999" } })));
    let reply = submit(&ex, "cdex-provider", &other_member).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let (_, docs) = retrieve(&ex, "trackingid123").await;
    assert_eq!(docs.len(), 1, "the refused part added nothing");
}

/// The inline routes take what a Lambda takes (6 MB) and no more: a bigger 275 or `$submit-attachment` body is
/// refused with 413 in the route's own format, and nothing is kept (large documents go by upload URL).
#[tokio::test]
async fn inline_bodies_over_the_lambda_limit_are_413() {
    let ex = exchange().await;
    let over = exchange_core::http::MAX_BODY_BYTES + 1;
    let mut parameters = cdex_example(1);
    parameters.extend(std::iter::repeat_n(b' ', over - parameters.len().min(over)));
    let reply = submit(&ex, "cdex-provider", &parameters).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    let input =
        std::fs::read(conformance_dir().unwrap().join("x12/275/staedi_sample275_with_HL7_valid_BIN01.edi")).unwrap();
    let mut big = input.clone();
    big.extend(std::iter::repeat_n(b'\n', over - input.len().min(over)));
    let reply = call(&ex, "cdex-provider", "POST", "/x12/275", "application/edi-x12", &big).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/problem+json");
    assert!(get(&ex, "sample-payer", "/attachments").await.json()["attachments"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_oversized_task_is_413() {
    let ex = exchange().await;
    let mut task: Value =
        serde_json::from_slice(&std::fs::read(cdex_dir().join("cdex-task-example20.json")).unwrap()).unwrap();
    task["note"] = json!([{ "text": "x".repeat(attachments::tasks::MAX_TASK_BYTES) }]);
    let reply =
        call(&ex, "sample-payer", "POST", "/fhir/Task", "application/fhir+json", task.to_string().as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
}

/// CAQH CORE asks for at least 64 MB per document: a 64 MiB PDF goes up through a one-time upload URL, is
/// submitted by reference, lands in the vault as ciphertext, and comes back through a one-time download URL byte
/// for byte. Each URL works once; the staged copies are gone afterwards.
#[tokio::test]
async fn a_64_mib_document_travels_through_one_time_transfer_urls() {
    let ex = exchange().await;
    let doc: Vec<u8> = (0..(64usize << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let declared = declare(&ex, "cdex-provider", "application/pdf", &doc).await;
    assert_eq!(declared.status, 201, "{}", declared.text());
    let declared = declared.json();
    let url = declared["upload"]["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/transfer/"), "{declared}");

    // The declared media type is part of the URL, like a signed header.
    let wrong = transfer(&ex, "PUT", &url, &[("content-type", "text/plain")], b"x".to_vec()).await;
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert_eq!(put_upload(&ex, &declared, doc.clone()).await.status, 200);
    let again = put_upload(&ex, &declared, doc.clone()).await;
    assert_eq!(again.status, 404, "an upload URL works once: {}", again.text());

    let content_url = declared["contentUrl"].as_str().unwrap();
    let body = submit_upload("big-1", "application/pdf", content_url);
    let reply = submit(&ex, "cdex-provider", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A retry of the same submission is answered as before, although the staged copy is gone.
    let retry = submit(&ex, "cdex-provider", &body).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), "true");
    // The same upload under another tracking id is not a second document.
    let reused = submit(&ex, "cdex-provider", &submit_upload("big-2", "application/pdf", content_url)).await;
    assert_eq!(reused.status, 409, "{}", reused.text());

    // Only the vault document is left, and it is ciphertext.
    let stored = files(&ex.dir.path().join("documents"));
    assert_eq!(stored.len(), 1, "the staged copy is deleted once vaulted: {stored:?}");
    let raw = std::fs::read(&stored[0]).unwrap();
    assert!(!raw.windows(64).any(|w| w == &doc[1 << 20..(1 << 20) + 64]), "the vault holds ciphertext");

    let list = get(&ex, "sample-payer", "/attachments?trackingId=big-1").await.json();
    let d = &list["attachments"][0]["documents"][0];
    assert_eq!(d["size"], doc.len());
    let answer = get(&ex, "sample-payer", d["href"].as_str().unwrap()).await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    let location = answer.header("location").to_owned();
    assert_eq!(answer.json()["download"]["url"], location.as_str());
    assert_eq!(answer.header("x-content-sha256"), exchange_core::record::sha256_hex(&doc));
    let fetched = transfer(&ex, "GET", &location, &[], Vec::new()).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.header("content-type"), "application/pdf");
    assert!(fetched.body == doc, "the download is the upload, byte for byte");
    assert_eq!(transfer(&ex, "GET", &location, &[], Vec::new()).await.status, 404, "a download URL works once");
    // Inline delivery of a document that large is refused with a pointer to delivery=url.
    let inline = get(&ex, "sample-payer", &format!("{}?delivery=inline", d["href"].as_str().unwrap())).await;
    assert_eq!(inline.status, 422, "{}", inline.text());

    // The download copy is swept once its URL has expired.
    assert_eq!(files(&ex.dir.path().join("documents")).len(), 2, "vault document and download copy");
    ex.clock.advance(time::Duration::minutes(10));
    let ledger = exchange_core::domain::cleanup::CleanupLedger::new(ex.pa.core.store().clone());
    ledger.sweep(ex.pa.core.vault().blobs().as_ref(), ex.pa.core.clock().now()).await.unwrap();
    assert_eq!(files(&ex.dir.path().join("documents")).len(), 1, "only the vault document is left");
}

#[tokio::test]
async fn uploads_that_do_not_match_their_declaration_are_refused() {
    let ex = exchange().await;
    let doc = b"%PDF-1.7 a small document".to_vec();
    let tracking = |n: u32| format!("up-{n}");

    // Declared but never PUT.
    let declared = declare(&ex, "cdex-provider", "application/pdf", &doc).await.json();
    let url = declared["contentUrl"].as_str().unwrap().to_owned();
    let reply = submit(&ex, "cdex-provider", &submit_upload(&tracking(1), "application/pdf", &url)).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("not been received"), "{}", reply.text());

    // More bytes than declared.
    assert_eq!(put_upload(&ex, &declared, b"%PDF-1.7 a longer document than declared".to_vec()).await.status, 200);
    let reply = submit(&ex, "cdex-provider", &submit_upload(&tracking(2), "application/pdf", &url)).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("the size declared"), "{}", reply.text());

    // Same size, other bytes: the SHA-256 catches it.
    let declared = declare(&ex, "cdex-provider", "application/pdf", &doc).await.json();
    let mut other = doc.clone();
    other[0] ^= 1;
    assert_eq!(put_upload(&ex, &declared, other).await.status, 200);
    let url = declared["contentUrl"].as_str().unwrap().to_owned();
    let reply = submit(&ex, "cdex-provider", &submit_upload(&tracking(3), "application/pdf", &url)).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("sha256"), "{}", reply.text());

    // Another partner's upload, or a media type other than declared.
    let declared = declare(&ex, "cdex-provider", "application/pdf", &doc).await.json();
    assert_eq!(put_upload(&ex, &declared, doc.clone()).await.status, 200);
    let url = declared["contentUrl"].as_str().unwrap().to_owned();
    // cdex-other-provider submits for organisation 1555555550, but the upload is cdex-provider's.
    let theirs = with_param(
        &submit_upload(&tracking(4), "application/pdf", &url),
        "OrganizationId",
        Some(json!({ "valueIdentifier": { "system": "http://hl7.org/fhir/sid/us-npi", "value": "1555555550" } })),
    );
    let theirs = with_param(&theirs, "ProviderId", None);
    let reply = submit(&ex, "cdex-other-provider", &theirs).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("names no upload"), "{}", reply.text());
    let reply = submit(&ex, "cdex-provider", &submit_upload(&tracking(5), "text/plain", &url)).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("contentType"), "{}", reply.text());
    // The same upload twice in one submission is refused before anything is read or stored.
    let mut twice: Value = serde_json::from_slice(&submit_upload(&tracking(6), "application/pdf", &url)).unwrap();
    let params = twice["parameter"].as_array_mut().unwrap();
    let attachment = params.iter().find(|p| p["name"] == "Attachment").unwrap().clone();
    params.push(attachment);
    let reply = submit(&ex, "cdex-provider", twice.to_string().as_bytes()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    // Uploads adding up to more than one submission may stage are refused before any is read.
    let mut over: Value = serde_json::from_slice(&submit_upload(&tracking(7), "application/pdf", &url)).unwrap();
    let params = over["parameter"].as_array_mut().unwrap();
    params.retain(|p| p["name"] != "Attachment");
    for _ in 0..3 {
        let sha = "ab".repeat(32);
        let body = json!({ "contentType": "application/pdf", "size": 64u64 << 20, "sha256": sha }).to_string();
        let d = call(&ex, "cdex-provider", "POST", "/attachments/uploads", "application/json", body.as_bytes()).await;
        let d = d.json();
        let one: Value =
            serde_json::from_slice(&submit_upload("x", "application/pdf", d["contentUrl"].as_str().unwrap())).unwrap();
        let part = one["parameter"].as_array().unwrap().iter().find(|p| p["name"] == "Attachment").unwrap().clone();
        params.push(part);
    }
    let reply = submit(&ex, "cdex-provider", over.to_string().as_bytes()).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("add up to"), "{}", reply.text());
    // A media type with parameters is the declared media type.
    let reply =
        submit(&ex, "cdex-provider", &submit_upload(&tracking(8), "application/pdf; name=\"a.pdf\"", &url)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let vaulted = files(&ex.dir.path().join("documents/attachments")).len()
        + ex.small_documents().iter().filter(|p| p.starts_with("attachments/")).count();
    assert_eq!(vaulted, 1, "only that one was vaulted");
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert_eq!(list["attachments"].as_array().unwrap().len(), 1, "nothing refused was stored: {list}");

    // Declarations: too large, empty, a bad hash, a media type the payer does not take, a payer token.
    let declare_raw = |v: Value| {
        let ex = &ex;
        async move {
            call(ex, "cdex-provider", "POST", "/attachments/uploads", "application/json", v.to_string().as_bytes())
                .await
        }
    };
    let sha = "0".repeat(64);
    let too_large = declare_raw(json!({ "contentType": "application/pdf", "size": 64u64 << 21, "sha256": sha })).await;
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    assert_eq!(too_large.header("content-type"), "application/problem+json");
    let empty = declare_raw(json!({ "contentType": "application/pdf", "size": 0, "sha256": sha })).await;
    assert_eq!(empty.status, 422);
    let bad_hash = declare_raw(json!({ "contentType": "application/pdf", "size": 3, "sha256": "abc" })).await;
    assert_eq!(bad_hash.status, 422);
    let zip = declare_raw(json!({ "contentType": "application/zip", "size": 3, "sha256": sha })).await;
    assert_eq!(zip.status, 422);
    let unknown = declare_raw(json!({ "contentType": "application/pdf", "size": 3, "sha256": sha, "x": 1 })).await;
    assert_eq!(unknown.status, 400);
    let payer = call(&ex, "sample-payer", "POST", "/attachments/uploads", "application/json", b"{}").await;
    assert_eq!(payer.status, 403);

    // Unknown and malformed transfer tokens say nothing.
    for url in ["/transfer/0123456789abcdef0123456789abcdef", "/transfer/..%2F..%2Fkeys"] {
        assert_eq!(transfer(&ex, "GET", url, &[], Vec::new()).await.status, 404, "{url}");
    }
}

/// A CDex submission is kept with its audit record or not at all: with the submitter's audit chains unwritable,
/// no attachment and no document is kept; repaired, the retry is stored and its one record names the attachment.
#[tokio::test]
async fn an_attachment_is_kept_with_its_audit_record_or_not_at_all() {
    let ex = exchange().await;
    ex.fail_audit_writes(true);

    let body = cdex_example(3);
    let refused = submit(&ex, "cdex-provider", &body).await;
    assert!(refused.status >= 500, "{} {}", refused.status, refused.text());
    // Repaired (reads are audited too, so the check below needs it).
    ex.fail_audit_writes(false);
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert!(list["attachments"].as_array().is_some_and(|a| a.is_empty()), "{list}");
    assert_eq!(ex.vaulted_documents(), 0, "the documents written before the commit are removed");

    let accepted = submit(&ex, "cdex-provider", &body).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let history = ex.pa.core.audit().partner_history("cdex-provider", 10).await.expect("history");
    let mine: Vec<_> = history.iter().filter(|r| r.entry.request_id == accepted.header("x-request-id")).collect();
    assert_eq!(mine.len(), 1, "one record for the request: {history:?}");
    assert!(mine[0].entry.resources.iter().any(|r| r.starts_with("attachment/")), "{:?}", mine[0].entry);
    assert!(!mine[0].entry.members.is_empty());
}

/// A submission whose function dies between writing its documents and committing its record leaves the ledger
/// entry behind; once the grace period has passed the sweep deletes the documents: no content without a record.
#[tokio::test]
async fn documents_of_a_submission_that_never_committed_are_swept() {
    let ex = exchange().await;
    let svc = Attachments::new(ex.pa.core.clone());
    let partner = ex.partner("cdex-provider");
    let body = cdex_example(3);
    let submission = attachments::cdex::parse_submit(&body).expect("example parses");
    let plan = match attachments::intake::check(&svc.service, &partner, submission).await.expect("check") {
        attachments::intake::Verdict::Store(plan) => plan,
        other => panic!("expected a plan, got {other:?}"),
    };
    // The store runs until its record's commit, which never returns; dropped there: the "crash" before the commit.
    let token = ex.token("cdex-provider").await;
    let bearer = http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    let ctx = ex.pa.core.auth().authenticate(Some(&bearer)).await.expect("caller");
    ex.hang_audit_writes(true);
    let store = attachments::intake::store(&svc.service, &ctx, *plan);
    let died = tokio::time::timeout(std::time::Duration::from_millis(500), store).await;
    assert!(died.is_err(), "the store hangs at its record's commit");
    ex.hang_audit_writes(false);
    let written = ex.vaulted_documents();
    assert!(written > 0, "the documents were written before the commit");
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert!(list["attachments"].as_array().unwrap().is_empty(), "no record was committed");

    let ledger = exchange_core::domain::cleanup::CleanupLedger::new(ex.pa.core.store().clone());
    let blobs = ex.pa.core.vault().blobs().clone();
    assert_eq!(ledger.sweep(blobs.as_ref(), ex.pa.core.clock().now()).await.unwrap(), 0, "not yet due");
    assert_eq!(ex.vaulted_documents(), written);
    ex.clock.advance(time::Duration::minutes(16));
    assert!(ledger.sweep(blobs.as_ref(), ex.pa.core.clock().now()).await.unwrap() >= written);
    assert_eq!(ex.vaulted_documents(), 0, "the orphaned documents are gone");

    // A committed submission's documents are not swept.
    assert_eq!(submit(&ex, "cdex-provider", &body).await.status, 200);
    let kept = ex.vaulted_documents();
    ex.clock.advance(time::Duration::hours(1));
    ledger.sweep(blobs.as_ref(), ex.pa.core.clock().now()).await.unwrap();
    assert_eq!(ex.vaulted_documents(), kept);
    let (_, docs) = retrieve(&ex, &tracking_of(&serde_json::from_slice(&body).unwrap())).await;
    assert_eq!(docs, expected_documents(&body));
}

/// A reviewer's documentation request on a pended case is also a CDex attachment request: the provider lists it,
/// answers it under its tracking id, and the answer completes it and is linked to the case.
#[tokio::test]
async fn a_reviewer_documentation_request_becomes_a_task_the_provider_answers() {
    let ex = exchange().await;
    let reply = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let case = case_id(&reply.json());
    let asked = json!({ "items": [1], "documentation": ["11506-3"] });
    let reply = ex.review("POST", &format!("/review/cases/{case}/documentation-requests"), Some(asked)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let view = reply.json();
    let task_id = view["attachmentRequest"]["taskId"].as_str().expect("a Task was created").to_owned();
    let tracking = view["attachmentRequest"]["trackingId"].as_str().unwrap().to_owned();
    assert_eq!(view["attachmentRequest"]["ownerNpi"], "8189991234");

    let open = get(&ex, "sample-provider", "/fhir/Task").await.json();
    assert_eq!(open["total"], 1, "{open}");
    let task = &open["entry"][0]["resource"];
    assert_eq!(task["id"], task_id.as_str());
    assert_eq!(task["reasonCode"]["coding"][0]["code"], "preauthorization");
    assert_eq!(task["input"][0]["valueCodeableConcept"]["coding"][0]["code"], "11506-3");
    assert_fhir_valid(&[("reviewer-task.json", task)]);
    assert_eq!(get(&ex, "cdex-provider", &format!("/fhir/Task/{task_id}")).await.status, 404, "not its organisation");

    let answer = with_param(&cdex_example(5), "TrackingId", Some(json!({ "valueIdentifier": { "value": tracking } })));
    let answer = with_param(&answer, "OrganizationId", Some(json!({ "valueIdentifier": { "value": "8189991234" } })));
    let answer = with_param(&answer, "PayerId", Some(json!({ "valueIdentifier": { "value": "789312" } })));
    let mut answer: Value = serde_json::from_slice(&answer).unwrap();
    for p in answer["parameter"].as_array_mut().unwrap() {
        if p["name"] == "Attachment" {
            p["part"].as_array_mut().unwrap().push(json!({ "name": "Code", "valueCodeableConcept": { "coding": [{ "system": "http://loinc.org", "code": "11506-3" }] } }));
        }
    }
    let reply = submit(&ex, "sample-provider", answer.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.text().contains("held"), "{}", reply.text());
    let read = get(&ex, "sample-payer", &format!("/fhir/Task/{task_id}")).await.json();
    assert_eq!(read["status"], "completed", "{read}");
    let list = get(&ex, "sample-payer", &format!("/attachments?caseId={case}")).await.json();
    assert_eq!(list["attachments"][0]["taskId"], task_id.as_str(), "{list}");

    // An A4 decision asking for documents is the same request, whichever reviewer route said it; one without
    // documents asks the provider for nothing.
    let pend = json!({ "decisions": [{ "item": 1, "action": "A4", "documentation": ["18842-5"] }] });
    let reply = ex.review("POST", &format!("/review/cases/{case}/decisions"), Some(pend)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let second = reply.json()["attachmentRequest"]["taskId"].as_str().expect("a Task for the A4").to_owned();
    assert_ne!(second, task_id);
    let open = get(&ex, "sample-provider", "/fhir/Task").await.json();
    assert_eq!(open["total"], 1, "the first was answered, the second is open: {open}");
    assert_eq!(open["entry"][0]["resource"]["input"][0]["valueCodeableConcept"]["coding"][0]["code"], "18842-5");
    let bare = json!({ "decisions": [{ "item": 1, "action": "A4" }] });
    let reply = ex.review("POST", &format!("/review/cases/{case}/decisions"), Some(bare)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json().get("attachmentRequest").is_none(), "{}", reply.text());
    assert_eq!(get(&ex, "sample-provider", "/fhir/Task").await.json()["total"], 1);
}

/// The same CDex submission, and then the same 275 interchange, sent by many callers at once: one attachment
/// each, and every caller gets the answer a retry gets (never 503 or 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_attachment_submissions_at_once_store_one_attachment_and_all_succeed() {
    let ex = Arc::new(exchange().await);
    let body = cdex_example(3);
    let replies = exchange_tests::at_once(16, || {
        let (ex, body) = (ex.clone(), body.clone());
        async move { submit(&ex, "cdex-provider", &body).await }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    let list = get(&ex, "sample-payer", "/attachments").await.json();
    assert_eq!(list["attachments"].as_array().map(Vec::len), Some(1), "{list}");

    let input = interchange_275("M275R", &[("ACN-R", b"%PDF-1.4 raced")]);
    let replies = exchange_tests::at_once(16, || {
        let (ex, input) = (ex.clone(), input.clone());
        async move { call(&ex, "cdex-provider", "POST", "/x12/275", "application/edi-x12", &input).await }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| x12_segments(&r.body).iter().any(|s| s == "IK5*A")), "every caller: accepted");
    let list = get(&ex, "sample-payer", "/attachments?memberId=M275R").await.json();
    assert_eq!(list["attachments"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, docs) = retrieve(&ex, "ACN-R").await;
    assert_eq!(docs, vec![b"%PDF-1.4 raced".to_vec()], "one document, stored once");
}
