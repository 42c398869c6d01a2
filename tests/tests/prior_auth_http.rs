//! Prior authorization end to end through HTTP: PAS `$submit` / `$inquire` over the IG's own examples (answers
//! checked by the independent FHIR oracle), X12 278 over the public samples, the X12/FHIR twins sharing a case,
//! the reviewer workflow with notifications to a subscriber on loopback, retries and dead letters, deadline
//! sweeps, CMS-0057-F metrics, and the bad-input answers.

use exchange_core::domain::prior_auth::CaseStatus;
use exchange_core::x12::envelope::parse_interchange;
use exchange_core::x12::guide::{self, x217};
use exchange_tests::prior_auth::{
    closed_endpoint, conformance_data_path, fhir_oracle, pas_example, subscriber_endpoint, subscription, PaExchange,
};
use exchange_tests::{conformance_dir, x12_segments};
use serde_json::{json, Value};
use time::macros::datetime;
use time::Duration;

const REQUESTS: [&str; 4] = [
    "Bundle-ReferralAuthorizationBundleExample.json",
    "Bundle-HomecareAuthorizationBundleExample.json",
    "Bundle-MedicalServicesAuthorizationBundleExample.json",
    "Bundle-SurgicalRequestBundleExample.json",
];

async fn exchange() -> Option<PaExchange> {
    conformance_dir()?;
    Some(PaExchange::new(&conformance_data_path(), datetime!(2026-11-25 10:00 UTC)).await)
}

fn action(cr: &Value, item: usize) -> String {
    let ext = &cr["item"][item]["adjudication"][0]["extension"][0];
    assert_eq!(ext["url"], "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction");
    let code = &ext["extension"][0];
    assert_eq!(code["url"], "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewActionCode");
    code["valueCodeableConcept"]["coding"][0]["code"].as_str().unwrap_or("").to_owned()
}

fn write_temp(dir: &std::path::Path, name: &str, v: &Value) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

#[tokio::test]
async fn every_pas_request_example_is_accepted_and_the_answers_pass_the_oracle() {
    let Some(ex) = exchange().await else { return };
    let out = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in REQUESTS {
        let request = pas_example(name);
        let reply = ex.submit("sample-provider", &request).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "application/fhir+json");
        let bundle = reply.json();
        assert_eq!(bundle["type"], "collection");
        assert_eq!(bundle["identifier"]["value"], request["identifier"]["value"], "{name}");
        let cr = &bundle["entry"][0]["resource"];
        assert_eq!(cr["resourceType"], "ClaimResponse", "{name}: ClaimResponse first");
        assert_eq!(cr["outcome"], "complete", "{name}");
        let claim = &request["entry"][0]["resource"];
        let sequences: Vec<&Value> = claim["item"].as_array().unwrap().iter().map(|i| &i["sequence"]).collect();
        let echoed: Vec<&Value> = cr["item"].as_array().unwrap().iter().map(|i| &i["itemSequence"]).collect();
        assert_eq!(sequences, echoed, "{name}: item.sequence echoed");
        files.push(write_temp(out.path(), name, &bundle));
    }
    // Decisions follow the fixture's policy: home health G0154 needs documentation (A4), B4184 needs no auth (A1),
    // a consultation (X12 1365 code 3) needs none (A1), CPT 33510 under the HCPCS system needs review (A4).
    let homecare: Value = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let cr = &homecare["entry"][0]["resource"];
    assert_eq!(action(cr, 0), "A4");
    assert_eq!(action(cr, 1), "A1");
    let number = &cr["item"][1]["adjudication"][0]["extension"][0]["extension"][1];
    assert_eq!(number["url"], "number", "the authorization number travels in the reviewAction");
    assert_eq!(cr["preAuthRef"], number["valueString"]);
    assert!(cr["processNote"][0]["text"].as_str().unwrap().contains("11506-3"), "the documentation asked for");

    // The update example applies to the homecare request: item 2 cancelled, item 3 (not covered) denied.
    let reply =
        ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationUpdateBundleExample.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let updated = reply.json();
    let cr = &updated["entry"][0]["resource"];
    assert_eq!(cr["id"], homecare["entry"][0]["resource"]["id"], "the same case");
    assert_eq!((action(cr, 0), action(cr, 1), action(cr, 2)), ("A4".into(), "C".into(), "A3".into()));
    files.push(write_temp(out.path(), "update-response.json", &updated));

    // $inquire (the inquiry example matches the homecare request by member, provider and identifier).
    let token = ex.token("sample-provider").await;
    let inquiry = pas_example("Bundle-PASClaimInquiryBundleExample.json");
    let reply =
        ex.send("POST", "/fhir/Claim/$inquire", "application/fhir+json", &token, inquiry.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let params = reply.json();
    assert_eq!(params["resourceType"], "Parameters");
    let returned = params["parameter"].as_array().unwrap();
    // The IG's homecare and medical-services examples share member, provider and Claim identifier: both match,
    // the referral (another identifier) does not.
    assert_eq!(returned.len(), 2, "narrowed by the Claim identifier");
    assert!(returned.iter().all(|r| r["name"] == "return"));
    assert!(returned.iter().any(|r| r["resource"]["entry"][0]["resource"]["id"] == cr["id"]));
    files.push(write_temp(out.path(), "inquiry-response.json", &returned[0]["resource"]));

    match fhir_oracle(&files) {
        Ok(_) => {}
        Err(report) => panic!("the FHIR oracle rejects our responses:\n{report}"),
    }
}

#[tokio::test]
async fn bad_pas_input_gets_the_standard_answers_and_nothing_is_written() {
    let Some(ex) = exchange().await else { return };
    let good = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let cases = |b: &mut Value, what: &str| match what {
        "type" => b["type"] = json!("batch"),
        "order" => b["entry"].as_array_mut().unwrap().swap(0, 3),
        "dangling" => b["entry"][0]["resource"]["insurance"][0]["coverage"]["reference"] = json!("Coverage/missing"),
        "use" => b["entry"][0]["resource"]["use"] = json!("claim"),
        _ => {}
    };
    for (what, expression) in [
        ("type", "Bundle.type"),
        ("order", "Bundle.entry[0].resource"),
        ("dangling", "Bundle.entry[0].resource.insurance[0].coverage"),
        ("use", "Claim.use"),
    ] {
        let mut b = good.clone();
        cases(&mut b, what);
        let reply = ex.submit("sample-provider", &b).await;
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        let oo = reply.json();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{what}");
        assert_eq!(oo["issue"].as_array().unwrap().len(), 1, "{what}: a single issue");
        assert_eq!(oo["issue"][0]["expression"][0], expression, "{what}");
    }
    let token = ex.token("sample-provider").await;
    let reply = ex.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &token, b"{not json").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    let payer = ex.token("sample-payer").await;
    let reply =
        ex.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &payer, good.to_string().as_bytes()).await;
    assert_eq!(reply.status, 403, "payers do not submit");

    // Unknown member: a business error in ClaimResponse.error (X12 901 code 75 at 2010C), outcome=error.
    let mut b = good.clone();
    for e in b["entry"].as_array_mut().unwrap() {
        if e["resource"]["resourceType"] == "Coverage" {
            e["resource"]["subscriberId"] = json!("00000000000");
        }
    }
    let reply = ex.submit("sample-provider", &b).await;
    assert_eq!(reply.status, 200);
    let cr = reply.json()["entry"][0]["resource"].clone();
    assert_eq!(cr["outcome"], "error");
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "75");
    assert_eq!(cr["error"][0]["extension"][0]["extension"][0]["valueString"], "2010C-NM109");
    let out = tempfile::tempdir().unwrap();
    let f = write_temp(out.path(), "error.json", &reply.json());
    if let Err(report) = fhir_oracle(&[f]) {
        panic!("{report}");
    }

    // A provider not registered to the submitting partner: 41 at 2010B.
    let mut b = good.clone();
    for e in b["entry"].as_array_mut().unwrap() {
        if e["resource"]["id"] == "UMOExample" {
            e["resource"]["identifier"][0]["value"] = json!("1555555550");
        }
    }
    let cr = ex.submit("sample-provider", &b).await.json()["entry"][0]["resource"].clone();
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "41");

    // None of that created a case.
    let reviewer = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(reviewer["cases"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_resubmitted_bundle_gets_its_original_answer_and_no_second_case() {
    let Some(ex) = exchange().await else { return };
    let b = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let first = ex.submit("sample-provider", &b).await;
    ex.clock.advance(Duration::minutes(5));
    let second = ex.submit("sample-provider", &b).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("idempotent-replayed"), "true");
    assert_eq!(first.body, second.body, "byte for byte the original answer");
    let list = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(list["cases"].as_array().unwrap().len(), 1, "one case");
    // The same identifier from another partner is another submission (and that partner may not use this provider).
    let other = ex.submit("other-provider", &b).await;
    assert_eq!(other.json()["entry"][0]["resource"]["error"][0]["code"]["coding"][0]["code"], "41");
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().unwrap().join("x12/278").join(name)).unwrap()
}

fn assert_valid_278(body: &[u8]) {
    let ic = parse_interchange(body, &[x217::KIND_278]).expect("our 278 response parses");
    for g in &ic.groups {
        for s in &g.sets {
            let mut ack = s.ack.clone();
            assert!(!ack.is_rejected(), "envelope of our 278");
            guide::validate(&x217::GUIDE_278, &s.body, &mut ack);
            assert!(!ack.is_rejected(), "our 278 response breaks X217: {ack:?}");
        }
    }
}

#[tokio::test]
async fn every_conformant_278_request_is_answered_and_se01_defects_get_a_999() {
    let Some(ex) = exchange().await else { return };
    for (name, expect) in [
        ("stupidedi_X217-referral-request-for-review.edi", "A1"),
        ("stupidedi_X217-emergency-admission-request-for-review.edi", "A4"),
        ("stupidedi_X217-request-for-medical-services-reservation.edi", "A1"),
        ("stupidedi_X217-admission-request-for-review.edi", "999"),
        ("stupidedi_X217-request-for-home-health-care.edi", "999"),
    ] {
        // Each sample reuses ISA13 000010216: a fresh exchange each, as each would be a fresh interchange.
        let ex = if expect == "A1" && name.contains("referral") {
            &ex
        } else {
            &*Box::leak(Box::new(exchange().await.unwrap()))
        };
        let reply = ex.post_278("sample-provider", &sample(name)).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let segs = x12_segments(&reply.body);
        if expect == "999" {
            assert!(segs.iter().any(|s| s.starts_with("ST*999")), "{name}: {segs:?}");
            assert!(segs.iter().any(|s| s.starts_with("IK5*R")), "{name}: {segs:?}");
            assert!(!segs.iter().any(|s| s.starts_with("ST*278")), "{name}");
        } else {
            assert_valid_278(&reply.body);
            let hcr = segs.iter().find(|s| s.starts_with("HCR*")).unwrap_or_else(|| panic!("{name}: {segs:?}"));
            assert!(hcr.starts_with(&format!("HCR*{expect}")), "{name}: {hcr}");
            assert!(segs.iter().any(|s| s.starts_with("BHT*0007*11*")), "{name}: BHT02=11 response");
            assert!(segs.iter().any(|s| s.starts_with("REF*NT*PA")), "{name}: our administrative reference");
        }
    }
    // The same interchange again: the original answer, no second case.
    let again = ex.post_278("sample-provider", &sample("stupidedi_X217-referral-request-for-review.edi")).await;
    assert_eq!(again.header("idempotent-replayed"), "true");
    // The same ISA13 with other content: TA1 025.
    let mut changed = sample("stupidedi_X217-referral-request-for-review.edi");
    let at = changed.windows(6).position(|w| w == b"111099").unwrap();
    changed[at] = b'2';
    let segs = x12_segments(&ex.post_278("sample-provider", &changed).await.body);
    assert!(segs.iter().any(|s| s.starts_with("TA1*000010216*") && s.ends_with("*R*025")), "{segs:?}");
}

#[tokio::test]
async fn x12_and_fhir_twins_share_the_case() {
    let Some(ex) = exchange().await else { return };
    // A 278 (referral; requester ETIN 8189991234, member 12345678901) inquired through PAS $inquire.
    let reply = ex.post_278("sample-provider", &sample("stupidedi_X217-referral-request-for-review.edi")).await;
    let segs = x12_segments(&reply.body);
    let case_id = segs.iter().find_map(|s| s.strip_prefix("REF*NT*")).unwrap().to_owned();
    let mut inquiry = pas_example("Bundle-PASClaimInquiryBundleExample.json");
    for e in inquiry["entry"].as_array_mut().unwrap() {
        if e["resource"]["resourceType"] == "Coverage" {
            e["resource"]["subscriberId"] = json!("12345678901");
        }
    }
    inquiry["entry"][0]["resource"]["identifier"][0] = json!({"system": "urn:trnorg:9012345678", "value": "111099"});
    let token = ex.token("sample-provider").await;
    let reply =
        ex.send("POST", "/fhir/Claim/$inquire", "application/fhir+json", &token, inquiry.to_string().as_bytes()).await;
    let params = reply.json();
    let bundle = &params["parameter"][0]["resource"];
    assert_eq!(bundle["entry"][0]["resource"]["id"], case_id.as_str(), "{params}");
    assert_eq!(action(&bundle["entry"][0]["resource"], 0), "A1");
    let out = tempfile::tempdir().unwrap();
    if let Err(r) = fhir_oracle(&[write_temp(out.path(), "twin.json", bundle)]) {
        panic!("{r}");
    }
    // Another provider partner sees nothing of it.
    let other = ex.token("other-provider").await;
    let reply =
        ex.send("POST", "/fhir/Claim/$inquire", "application/fhir+json", &other, inquiry.to_string().as_bytes()).await;
    assert_eq!(reply.json()["parameter"].as_array().map(Vec::len).unwrap_or(0), 0);

    // A PAS submission answered as a 278 when a 278 quotes its administrative reference (REF*NT).
    let pas = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let pas_case = pas["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    let text = String::from_utf8(sample("stupidedi_X217-referral-request-for-review.edi")).unwrap();
    let quoting = text
        .replace("000010216", "000010217")
        .replace("UM*SC*I*3*11:B*****Y~", &format!("UM*SC*I*3*11:B*****Y~REF*NT*{pas_case}~"))
        .replace("SE*16*0001", "SE*17*0001");
    let reply = ex.post_278("sample-provider", quoting.as_bytes()).await;
    assert_valid_278(&reply.body);
    let segs = x12_segments(&reply.body);
    assert!(segs.contains(&format!("REF*NT*{pas_case}")), "{segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("HCR*A4")), "the PAS case's pended state: {segs:?}");
    assert!(segs.iter().filter(|s| s.starts_with("HL*")).count() >= 6, "both service lines: {segs:?}");
}

#[tokio::test]
async fn pend_then_decide_notifies_the_subscriber_and_deny_and_bad_decisions_are_answered() {
    let Some(ex) = exchange().await else { return };
    let (endpoint, mut received) = subscriber_endpoint(200).await;
    let token = ex.token("sample-provider").await;
    // Subscriptions: only for the caller's own organisation; only the owner sees them.
    let reply = ex
        .send(
            "POST",
            "/fhir/Subscription",
            "application/fhir+json",
            &token,
            subscription("1555555550", &endpoint).to_string().as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 403, "another organisation's identifier");
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    let reply = ex
        .send(
            "POST",
            "/fhir/Subscription",
            "application/fhir+json",
            &token,
            subscription("8189991234", &endpoint).to_string().as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let sub_id = reply.json()["id"].as_str().unwrap().to_owned();
    let other = ex.token("other-provider").await;
    assert_eq!(
        ex.send("GET", &format!("/fhir/Subscription/{sub_id}"), "application/fhir+json", &other, b"").await.status,
        404
    );
    assert_eq!(
        ex.send("DELETE", &format!("/fhir/Subscription/{sub_id}"), "application/fhir+json", &other, b"").await.status,
        404
    );

    let submitted =
        ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let case_id = submitted["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();

    // The reviewer's list shows it with the time left (standard: 7 days).
    let list = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(list["cases"][0]["id"], case_id.as_str());
    assert_eq!(list["cases"][0]["timeLeftSeconds"], 7 * 24 * 3600);

    // Bad decisions: an item that does not exist (422), an unknown action and a denial without reason (400).
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(json!({"decisions": [{"item": 9, "action": "A1"}]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(json!({"decisions": [{"item": 1, "action": "ZZ"}, {"item": 1, "action": "A3"}]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["errors"].as_array().unwrap().len(), 2);
    let r = ex.review("GET", "/review/cases/NOPE", None).await;
    assert_eq!(r.status, 404);
    let provider_try = ex.send("GET", "/review/cases", "application/json", &token, b"").await;
    assert_eq!(provider_try.status, 403, "providers do not review");

    // Decide after review: certified. The reviewer's answer does not wait for delivery; the worker delivers.
    ex.clock.advance(Duration::hours(30));
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(json!({"decisions": [{"item": 1, "action": "A1"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "decided");
    assert!(received.try_recv().is_err(), "nothing was sent from the reviewer's request");
    let pass = prior_auth::worker::run_once(&ex.pa).await.unwrap();
    assert_eq!(pass.delivered, 1);
    let note = received.recv().await.unwrap();
    assert_eq!(note["type"], "history");
    assert_eq!(
        note["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"],
        format!("Subscription/{sub_id}")
    );
    let inner = &note["entry"][1]["resource"];
    assert_eq!(inner["entry"][0]["resource"]["id"], case_id.as_str());
    assert_eq!(action(&inner["entry"][0]["resource"], 0), "A1");
    let out = tempfile::tempdir().unwrap();
    if let Err(r) = fhir_oracle(&[write_temp(out.path(), "notified.json", inner)]) {
        panic!("{r}");
    }
    assert_eq!(ex.review("GET", "/review/cases", None).await.json()["cases"].as_array().unwrap().len(), 0);

    // A denial needs a reason, and carries it to the submitter.
    let (c, _) = ex.pa.cases.get(&case_id).await.unwrap().unwrap();
    assert_eq!(c.status(), CaseStatus::Decided);
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(json!({"decisions": [{"item": 2, "action": "A3", "reasons": ["0U"]}]})),
        )
        .await;
    assert_eq!(r.status, 200);
    prior_auth::worker::run_once(&ex.pa).await.unwrap();
    let note = received.recv().await.unwrap();
    let cr = &note["entry"][1]["resource"]["entry"][0]["resource"];
    assert_eq!(action(cr, 1), "A3");
    assert_eq!(cr["item"][1]["adjudication"][0]["extension"][0]["extension"][1]["url"], "reasonCode");
}

#[tokio::test]
async fn a_notification_endpoint_that_is_down_is_retried_then_dead_lettered() {
    let Some(ex) = exchange().await else { return };
    let endpoint = closed_endpoint().await;
    let token = ex.token("sample-provider").await;
    let reply = ex
        .send(
            "POST",
            "/fhir/Subscription",
            "application/fhir+json",
            &token,
            subscription("8189991234", &endpoint).to_string().as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 201);
    let submitted =
        ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let case_id = submitted["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case_id}/decisions"),
            Some(json!({"decisions": [{"item": 1, "action": "A1"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "the decision is saved although the endpoint is down");
    let mut dead = 0;
    for _ in 0..exchange_core::domain::notifications::MAX_ATTEMPTS {
        let pass = prior_auth::worker::run_once(&ex.pa).await.unwrap();
        assert_eq!(pass.delivered, 0);
        dead += pass.dead_lettered;
        ex.clock.advance(Duration::minutes(30));
    }
    assert_eq!(dead, 1);
    let letters = ex.review("GET", "/review/dead-letters", None).await.json();
    assert_eq!(letters["deadLetters"][0]["caseId"], case_id.as_str());
    assert_eq!(letters["deadLetters"][0]["lastError"], "unreachable");
    let (c, _) = ex.pa.cases.get(&case_id).await.unwrap().unwrap();
    assert_eq!(c.items[0].decision.as_ref().unwrap().action_code(), "A1", "the decision stands");
}

#[tokio::test]
async fn cancel_by_278_and_by_pas_update() {
    let Some(ex) = exchange().await else { return };
    let pas = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let case_id = pas["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();
    // A 278 with UM02=3 quoting the case cancels it.
    let text = String::from_utf8(sample("stupidedi_X217-referral-request-for-review.edi")).unwrap();
    let cancel = text
        .replace("UM*SC*I*3*11:B*****Y~", &format!("UM*SC*3*3*11:B*****Y~REF*NT*{case_id}~"))
        .replace("SE*16*0001", "SE*17*0001");
    let segs = x12_segments(&ex.post_278("sample-provider", cancel.as_bytes()).await.body);
    assert!(segs.iter().any(|s| s.starts_with("HCR*C")), "{segs:?}");
    let (c, _) = ex.pa.cases.get(&case_id).await.unwrap().unwrap();
    assert_eq!(c.status(), CaseStatus::Cancelled);
    // A cancellation quoting nothing known is refused at 2010C.
    let unknown = cancel.replace(&case_id, "PA000000NOPE").replace("000010216", "000010218");
    let segs = x12_segments(&ex.post_278("sample-provider", unknown.as_bytes()).await.body);
    assert!(segs.iter().any(|s| s.starts_with("AAA*N**15")), "{segs:?}");

    // A PAS update cancelling every item of another request.
    let b = pas_example("Bundle-MedicalServicesAuthorizationBundleExample.json");
    let first = ex.submit("sample-provider", &b).await.json();
    let mut update = b.clone();
    update["identifier"]["value"] = json!("5269367-CANCEL");
    let original_claim = update["entry"][0]["resource"].clone();
    let claim = &mut update["entry"][0]["resource"];
    claim["id"] = json!("CancelIt");
    claim["identifier"][0]["value"] = json!("111099-CANCEL");
    claim["related"] = json!([{ "claim": { "reference": "Claim/MedicalServicesAuthorizationExample" } }]);
    claim["item"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = json!("3");
    update["entry"].as_array_mut().unwrap().push(json!({ "fullUrl": "http://example.org/fhir/Claim/MedicalServicesAuthorizationExample", "resource": original_claim }));
    let reply = ex.submit("sample-provider", &update).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let cr = &reply.json()["entry"][0]["resource"];
    assert_eq!(cr["id"], first["entry"][0]["resource"]["id"]);
    assert_eq!(action(cr, 0), "C");
}

#[tokio::test]
async fn deadline_sweeps_flag_cases_and_metrics_report_cms_0057_f_figures() {
    let Some(ex) = exchange().await else { return };
    // Referral (urgent → expedited): consult auto-approved (not counted as needing auth).
    ex.submit("sample-provider", &pas_example("Bundle-ReferralAuthorizationBundleExample.json")).await;
    // Emergency admission 278 (expedited, pended), surgical (standard, pended), homecare (standard: A4 + A1).
    let ex278 =
        ex.post_278("sample-provider", &sample("stupidedi_X217-emergency-admission-request-for-review.edi")).await;
    let expedited_id =
        x12_segments(&ex278.body).iter().find_map(|s| s.strip_prefix("REF*NT*").map(str::to_owned)).unwrap();
    let surgical = ex.submit("sample-provider", &pas_example("Bundle-SurgicalRequestBundleExample.json")).await.json();
    let surgical_id = surgical["entry"][0]["resource"]["id"].as_str().unwrap().to_owned();

    // 50 hours later the expedited case (72 h) is within the 24 h warning; the standard one is not.
    ex.clock.advance(Duration::hours(50));
    assert_eq!(prior_auth::worker::sweep_deadlines(&ex.pa).await.unwrap(), 1);
    assert_eq!(prior_auth::worker::sweep_deadlines(&ex.pa).await.unwrap(), 0, "flagged once");
    let list = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(list["cases"][0]["id"], expedited_id.as_str(), "soonest deadline first");
    assert_eq!(list["cases"][0]["deadlineFlagged"], true);
    assert_eq!(list["cases"][0]["timeLeftSeconds"], 22 * 3600);

    // Decide: expedited approved at 50 h; standard (pended) approved at 100 h → approved after extended review.
    ex.review(
        "POST",
        &format!("/review/cases/{expedited_id}/decisions"),
        Some(json!({"decisions": [{"item": 1, "action": "A1"}]})),
    )
    .await;
    ex.clock.advance(Duration::hours(50));
    ex.review(
        "POST",
        &format!("/review/cases/{surgical_id}/decisions"),
        Some(json!({"decisions": [{"item": 1, "action": "A3", "reasons": ["0U"]}]})),
    )
    .await;

    let r = ex.review("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m["itemsRequiringAuthorization"], 2, "{m}");
    assert_eq!(m["expedited"]["percentApproved"], 100.0);
    assert_eq!(m["expedited"]["averageDecisionHours"], 50.0);
    assert_eq!(m["standard"]["percentDenied"], 100.0);
    assert_eq!(m["standard"]["medianDecisionHours"], 100.0);
    let csv = ex.review("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30&format=csv", None).await;
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    let text = csv.text();
    assert!(
        text.lines().nth(1).unwrap().starts_with("789312,2026-11-01,2026-11-30,standard,1,1,0,100,0,100,100"),
        "{text}"
    );
    assert_eq!(ex.review("GET", "/metrics/prior-auth?from=2026-11-30&to=2026-11-01", None).await.status, 400);
}

#[tokio::test]
async fn the_prior_auth_events_work_against_the_demo_data() {
    let ex = PaExchange::new(&exchange_tests::demo_data_path(), datetime!(2026-11-25 10:00 UTC)).await;
    let token = ex.token("demo-provider").await;
    let x12 = std::fs::read(exchange_tests::repo_root().join("events/prior-auth/sample-278.x12")).unwrap();
    let reply = ex.send("POST", "/x12/278", "application/edi-x12", &token, &x12).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_valid_278(&reply.body);
    let segs = x12_segments(&reply.body);
    assert!(segs.iter().any(|s| s.starts_with("HCR*A4")), "MRI pends for documentation: {segs:?}");
    assert!(segs.iter().any(|s| s == "PWK*OZ*EL"), "{segs:?}");

    let event = exchange_tests::with_token(exchange_tests::load_event("prior-auth/submit.json"), &token);
    let bundle: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    let reply = ex.submit("demo-provider", &bundle).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let cr = &reply.json()["entry"][0]["resource"];
    assert_eq!((action(cr, 0), action(cr, 1)), ("A1".to_owned(), "A4".to_owned()), "97110 approved, 70551 pended");
}
