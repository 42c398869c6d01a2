//! Prior authorization end to end through HTTP: PAS `$submit` / `$inquire` over the IG's own examples (answers
//! checked by the independent FHIR oracle with strict profiles), X12 278 over the public samples, the X12/FHIR
//! twins sharing a case, the reviewer workflow with notifications to a subscriber on loopback, retries and dead
//! letters, deadline sweeps, CMS-0057-F metrics, and the bad-input answers. Fails loudly when
//! `../shared/conformance` is missing.

use std::time::Duration as StdDuration;

use exchange_core::domain::notifications::{backoff, MAX_ATTEMPTS};
use exchange_core::domain::prior_auth::CaseStatus;
use exchange_core::x12::envelope::parse_interchange;
use exchange_core::x12::guide::{self, x217};
use exchange_tests::prior_auth::{
    assert_fhir_valid, case_id, closed_endpoint, conformance_data_path, pas_example, subscriber_endpoint, with_isa13,
    with_segment_after_um, PaExchange,
};
use exchange_tests::{conformance_dir, x12_segments, Reply};
use serde_json::{json, Value};
use time::macros::datetime;
use time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

async fn exchange() -> PaExchange {
    if conformance_dir().is_none() {
        panic!("../shared/conformance is missing: the prior-auth conformance tests need it (present in CI beside the clone)");
    }
    PaExchange::new(&conformance_data_path(), datetime!(2026-11-25 10:00 UTC)).await
}

/// The X12 306 action code of a ClaimResponse item, read through the PAS reviewAction extension.
fn action(cr: &Value, item: usize) -> String {
    let ext = &cr["item"][item]["adjudication"][0]["extension"][0];
    assert_eq!(ext["url"], "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction");
    let code = &ext["extension"][0];
    assert_eq!(code["url"], "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewActionCode");
    code["valueCodeableConcept"]["coding"][0]["code"].as_str().unwrap_or("").to_owned()
}

fn actions(cr: &Value) -> Vec<String> {
    (0..cr["item"].as_array().map(Vec::len).unwrap_or(0)).map(|i| action(cr, i)).collect()
}

fn claim_response(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let bundle = reply.json();
    assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "ClaimResponse", "ClaimResponse first");
    bundle["entry"][0]["resource"].clone()
}

async fn notification(received: &mut UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(StdDuration::from_secs(5), received.recv())
        .await
        .expect("a notification within 5 s")
        .expect("the endpoint is up")
}

#[tokio::test]
async fn every_pas_request_example_is_accepted_and_the_answers_pass_the_oracle() {
    let ex = exchange().await;
    // Decisions follow the fixture's policy: a consultation (X12 1365 code 3) needs no auth (A1); home health
    // G0154 needs documentation (A4), B4184 no auth (A1); 99212 no auth (A1); CPT 33510 sent under the HCPCS
    // system needs review (A4).
    let expected: [(&str, &[&str]); 4] = [
        ("Bundle-ReferralAuthorizationBundleExample.json", &["A1"]),
        ("Bundle-HomecareAuthorizationBundleExample.json", &["A4", "A1"]),
        ("Bundle-MedicalServicesAuthorizationBundleExample.json", &["A1"]),
        ("Bundle-SurgicalRequestBundleExample.json", &["A4"]),
    ];
    let mut answers = Vec::new();
    for (name, want) in expected {
        let request = pas_example(name);
        let reply = ex.submit("sample-provider", &request).await;
        assert_eq!(reply.header("content-type"), "application/fhir+json");
        let bundle = reply.json();
        assert_eq!(bundle["type"], "collection");
        assert_eq!(bundle["identifier"], request["identifier"], "{name}: Bundle.identifier echoed");
        let cr = claim_response(&reply);
        assert_eq!(cr["outcome"], "complete", "{name}");
        let claim = &request["entry"][0]["resource"];
        let sequences: Vec<&Value> = claim["item"].as_array().unwrap().iter().map(|i| &i["sequence"]).collect();
        let echoed: Vec<&Value> = cr["item"].as_array().unwrap().iter().map(|i| &i["itemSequence"]).collect();
        assert_eq!(sequences, echoed, "{name}: item.sequence echoed");
        assert_eq!(actions(&cr), want, "{name}");
        answers.push((name, bundle));
    }
    let homecare = answers[1].1.clone();
    let cr = &homecare["entry"][0]["resource"];
    let number = &cr["item"][1]["adjudication"][0]["extension"][0]["extension"][1];
    assert_eq!(number["url"], "number", "the authorization number travels in the reviewAction");
    assert_eq!(cr["preAuthRef"], number["valueString"]);
    assert!(cr["item"][1]["extension"][1]["valuePeriod"]["start"].is_string(), "the certified period");
    assert!(cr["processNote"][0]["text"].as_str().unwrap().contains("11506-3"), "the documentation asked for");

    // The update example applies to the homecare request: item 2 cancelled, item 3 (not covered) denied.
    let updated =
        ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationUpdateBundleExample.json")).await;
    let ucr = claim_response(&updated);
    assert_eq!(ucr["id"], cr["id"], "the same case");
    assert_eq!(actions(&ucr), ["A4", "C", "A3"]);
    let updated = updated.json();

    // $inquire by member, provider and Claim identifier. The IG's examples all carry TRN 111099 from originator
    // 9012345678 (as `urn:trnorg:9012345678`, or as the identifier's assigner, where PAS maps TRN03) for the same
    // member and provider, so the referral, homecare and medical-services requests all match; the surgical one
    // (another trace) does not.
    let reply = ex.inquire("sample-provider", &pas_example("Bundle-PASClaimInquiryBundleExample.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let params = reply.json();
    assert_eq!(params["resourceType"], "Parameters");
    let returned = params["parameter"].as_array().unwrap();
    assert_eq!(returned.len(), 3, "narrowed by the Claim identifier: {params}");
    assert!(returned.iter().all(|r| r["name"] == "return"));
    let inquired = returned.iter().find(|r| r["resource"]["entry"][0]["resource"]["id"] == cr["id"]).unwrap();
    assert_eq!(actions(&inquired["resource"]["entry"][0]["resource"]), ["A4", "C", "A3"], "the current state");

    let mut all: Vec<(&str, &Value)> = answers.iter().map(|(n, b)| (*n, b)).collect();
    all.push(("update-response.json", &updated));
    all.push(("inquiry-response.json", &inquired["resource"]));
    assert_fhir_valid(&all);
}

#[tokio::test]
async fn bad_pas_input_gets_the_standard_answers_and_nothing_is_written() {
    let ex = exchange().await;
    let good = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let break_it = |b: &mut Value, what: &str| match what {
        "type" => b["type"] = json!("batch"),
        "order" => b["entry"].as_array_mut().unwrap().swap(0, 3),
        "dangling" => b["entry"][0]["resource"]["insurance"][0]["coverage"]["reference"] = json!("Coverage/missing"),
        "use" => b["entry"][0]["resource"]["use"] = json!("claim"),
        _ => unreachable!(),
    };
    for (what, expression) in [
        ("type", "Bundle.type"),
        ("order", "Bundle.entry[0].resource"),
        ("dangling", "Bundle.entry[0].resource.insurance[0].coverage"),
        ("use", "Claim.use"),
    ] {
        let mut b = good.clone();
        break_it(&mut b, what);
        let reply = ex.submit("sample-provider", &b).await;
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "application/fhir+json");
        let oo = reply.json();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{what}");
        assert_eq!(oo["issue"].as_array().unwrap().len(), 1, "{what}: a single issue");
        assert_eq!(oo["issue"][0]["severity"], "error", "{what}");
        assert_eq!(oo["issue"][0]["expression"][0], expression, "{what}");
    }
    let token = ex.token("sample-provider").await;
    let reply = ex.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &token, b"{not json").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    let reply = ex.send("POST", "/fhir/Claim/$submit", "application/xml", &token, b"<Bundle/>").await;
    assert_eq!(reply.status, 415);
    let payer = ex.token("sample-payer").await;
    let reply =
        ex.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &payer, good.to_string().as_bytes()).await;
    assert_eq!(reply.status, 403, "payers do not submit");
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");

    // Unknown member: a business error in ClaimResponse.error (X12 901 code 75 at 2010C), outcome=error.
    let mut b = good.clone();
    for e in b["entry"].as_array_mut().unwrap() {
        if e["resource"]["resourceType"] == "Coverage" {
            e["resource"]["subscriberId"] = json!("00000000000");
        }
    }
    let reply = ex.submit("sample-provider", &b).await;
    let cr = claim_response(&reply);
    assert_eq!(cr["outcome"], "error");
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "75");
    assert_eq!(cr["error"][0]["extension"][0]["extension"][0]["valueString"], "2010C-NM109");
    assert_fhir_valid(&[("error.json", &reply.json())]);

    // A provider not registered to the submitting partner: 41 at 2010B.
    let mut b = good.clone();
    for e in b["entry"].as_array_mut().unwrap() {
        if e["resource"]["id"] == "UMOExample" {
            e["resource"]["identifier"][0]["value"] = json!("1555555550");
        }
    }
    let cr = claim_response(&ex.submit("sample-provider", &b).await);
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "41");
    assert_eq!(cr["error"][0]["extension"][0]["extension"][0]["valueString"], "2010B-NM109");

    // The member id names someone else (another last name): 73 at 2010C NM103.
    let mut b = good.clone();
    for e in b["entry"].as_array_mut().unwrap() {
        if e["resource"]["resourceType"] == "Patient" {
            e["resource"]["name"][0]["family"] = json!("JONES");
        }
    }
    let cr = claim_response(&ex.submit("sample-provider", &b).await);
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "73");
    assert_eq!(cr["error"][0]["extension"][0]["extension"][0]["valueString"], "2010C-NM103");

    // None of that created a case or kept a document.
    assert!(ex.cases().await.is_empty());
    assert_eq!(ex.vaulted_documents(), 0);
}

#[tokio::test]
async fn a_resubmitted_bundle_gets_its_original_answer_and_no_second_case() {
    let ex = exchange().await;
    let b = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let first = ex.submit("sample-provider", &b).await;
    let documents = ex.vaulted_documents();
    ex.clock.advance(Duration::minutes(5));
    let second = ex.submit("sample-provider", &b).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("idempotent-replayed"), "true");
    assert_eq!(first.body, second.body, "byte for byte the original answer");
    assert_eq!(ex.cases().await.len(), 1, "one case");
    assert_eq!(ex.vaulted_documents(), documents, "nothing new kept");
    // The same identifier on a different request: refused, nothing replayed or created.
    let mut different = b.clone();
    different["entry"][0]["resource"]["item"][0]["sequence"] = json!(7);
    let reply = ex.submit("sample-provider", &different).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["issue"][0]["code"], "conflict");
    assert_eq!(ex.cases().await.len(), 1);
    // The same request formatted differently is the same request.
    let pretty = serde_json::to_vec_pretty(&b).unwrap();
    let token = ex.token("sample-provider").await;
    let reply = ex.send("POST", "/fhir/Claim/$submit", "application/fhir+json", &token, &pretty).await;
    assert_eq!(reply.header("idempotent-replayed"), "true");
    // The same identifier from another partner is another submission (and that partner may not use this provider).
    let cr = claim_response(&ex.submit("other-provider", &b).await);
    assert_eq!(cr["error"][0]["code"]["coding"][0]["code"], "41");
}

#[tokio::test]
async fn a_case_is_written_with_its_audit_record_or_not_at_all() {
    let ex = exchange().await;
    let b = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    ex.fail_audit_writes(true);

    let refused = ex.submit("sample-provider", &b).await;
    assert!(refused.status >= 500, "{} {}", refused.status, refused.text());
    assert!(ex.cases().await.is_empty(), "no case without its audit record");
    assert_eq!(ex.vaulted_documents(), 0, "nothing kept");

    // Repaired, the retry creates the case, and the one record of that request names it.
    ex.fail_audit_writes(false);
    let accepted = ex.submit("sample-provider", &b).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let cases = ex.cases().await;
    assert_eq!(cases.len(), 1);
    let history = ex.pa.core.audit().partner_history("sample-provider", 10).await.expect("history");
    let mine: Vec<_> = history.iter().filter(|r| r.entry.request_id == accepted.header("x-request-id")).collect();
    assert_eq!(mine.len(), 1, "one record for the request: {history:?}");
    assert_eq!(mine[0].entry.outcome, 200);
    assert_eq!(mine[0].entry.operation, "POST /fhir/Claim/$submit");
    assert!(mine[0].entry.resources.contains(&format!("case/{}", cases[0].id)), "{:?}", mine[0].entry);
    assert!(mine[0].entry.members.iter().any(|m| m.eq_ignore_ascii_case(&cases[0].subscriber.member_id)));
}

#[tokio::test]
async fn subscription_changes_are_recorded_once_each_naming_the_subscription() {
    let ex = exchange().await;
    let (endpoint, _received) = subscriber_endpoint(200).await;
    let created = ex.subscribe("sample-provider", "8189991234", &endpoint).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let token = ex.token("sample-provider").await;
    let deleted = ex.send("DELETE", &format!("/fhir/Subscription/{id}"), "application/fhir+json", &token, b"").await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());

    let history = ex.pa.core.audit().partner_history("sample-provider", 10).await.expect("history");
    for (reply, status) in [(&created, 201), (&deleted, 204)] {
        let mine: Vec<_> = history.iter().filter(|r| r.entry.request_id == reply.header("x-request-id")).collect();
        assert_eq!(mine.len(), 1, "one record per request: {history:?}");
        assert_eq!(mine[0].entry.outcome, status);
        assert_eq!(mine[0].entry.resources, [format!("subscription/{id}")]);
    }
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().unwrap().join("x12/278").join(name)).unwrap()
}

fn sample_text(name: &str) -> String {
    String::from_utf8(sample(name)).unwrap()
}

const REFERRAL: &str = "stupidedi_X217-referral-request-for-review.edi";

/// The referral sample about the PAS examples' member (1122334455), so it may quote their cases.
fn referral_for_pas_member(control: u32) -> String {
    with_isa13(&sample_text(REFERRAL), control).replace("MI*12345678901", "MI*1122334455")
}

/// Every set of `body` is a 278 that passes the envelope and our X217 tables; returns how many there are.
fn assert_valid_278(body: &[u8]) -> usize {
    let ic = parse_interchange(body, &[x217::KIND_278]).expect("our 278 response parses");
    let mut sets = 0;
    for g in &ic.groups {
        assert!(!g.is_rejected(), "group envelope of our 278");
        for s in &g.sets {
            let mut ack = s.ack.clone();
            assert!(!ack.is_rejected(), "envelope of our 278");
            guide::validate(&x217::GUIDE_278_RESPONSE, &s.body, &mut ack);
            assert!(!ack.is_rejected(), "our 278 response breaks X217: {ack:?}");
            sets += 1;
        }
    }
    sets
}

fn reference(segs: &[String]) -> String {
    segs.iter().find_map(|s| s.strip_prefix("REF*NT*")).expect("REF*NT").to_owned()
}

#[tokio::test]
async fn every_conformant_278_request_is_answered_and_se01_defects_get_a_999() {
    for (name, expect) in [
        (REFERRAL, "A1"),
        ("stupidedi_X217-emergency-admission-request-for-review.edi", "A4"),
        ("stupidedi_X217-request-for-medical-services-reservation.edi", "A1"),
        ("stupidedi_X217-admission-request-for-review.edi", "999"),
        ("stupidedi_X217-request-for-home-health-care.edi", "999"),
    ] {
        // The samples all use ISA13 000010216: each goes to a fresh exchange, as a fresh interchange would.
        let ex = exchange().await;
        let reply = ex.post_278("sample-provider", &sample(name)).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let segs = x12_segments(&reply.body);
        if expect == "999" {
            assert!(segs.iter().any(|s| s.starts_with("ST*999")), "{name}: {segs:?}");
            assert!(segs.iter().any(|s| s == "IK5*R*4"), "{name}: SE01 wrong is IK5 code 4: {segs:?}");
            assert!(segs.iter().any(|s| s.starts_with("AK9*R*1*1*0")), "{name}: {segs:?}");
            assert!(!segs.iter().any(|s| s.starts_with("ST*278")), "{name}");
            assert!(ex.cases().await.is_empty(), "{name}: a rejected set creates no case");
            continue;
        }
        assert_eq!(assert_valid_278(&reply.body), 1, "{name}");
        assert!(segs.iter().any(|s| s.starts_with("BHT*0007*11*")), "{name}: BHT02=11 response");
        let case = reference(&segs);
        let hcr = segs.iter().find(|s| s.starts_with("HCR*")).unwrap_or_else(|| panic!("{name}: {segs:?}"));
        if expect == "A1" {
            assert_eq!(hcr, &format!("HCR*A1*{case}"), "{name}: certified with the authorization number");
            assert!(segs.iter().any(|s| s.starts_with("DTP*AAH*")), "{name}: the certified period: {segs:?}");
        } else {
            assert!(hcr.starts_with("HCR*A4"), "{name}: {hcr}");
        }
        let cases = ex.cases().await;
        assert_eq!(cases.len(), 1, "{name}");
        assert_eq!(cases[0].id, case);

        if name == REFERRAL {
            // The same interchange again: the original answer, byte for byte, and no second case.
            let again = ex.post_278("sample-provider", &sample(name)).await;
            assert_eq!(again.header("idempotent-replayed"), "true");
            assert_eq!(again.body, reply.body);
            assert_eq!(ex.cases().await.len(), 1);
            // The same ISA13 with other content: TA1 025.
            let changed = sample_text(name).replace("111099", "211099");
            let segs = x12_segments(&ex.post_278("sample-provider", changed.as_bytes()).await.body);
            assert!(segs.iter().any(|s| s.starts_with("TA1*000010216*") && s.ends_with("*R*025")), "{segs:?}");
            // An unregistered sender: TA1 006.
            let stranger = with_isa13(&sample_text(name), 99).replace("*123456789012345*", "*STRANGER       *");
            let segs = x12_segments(&ex.post_278("sample-provider", stranger.as_bytes()).await.body);
            assert!(segs.iter().any(|s| s.ends_with("*R*006")), "{segs:?}");
            assert_eq!(ex.cases().await.len(), 1);
        }
    }
}

/// A 278 response sent to the request route is the sender's mistake: a 999 rejects its set on its purpose code
/// (BHT02 `11` is not a request's: IK4 code 7), a validator accepts that 999, and no case is opened.
#[tokio::test]
async fn a_278_response_sent_as_a_request_gets_a_999_and_opens_no_case() {
    for name in [
        "stupidedi_X217-admission-response-to-request-for-review.edi",
        "stupidedi_X217-emergency-admission-response-to-request-for-review.edi",
        "stupidedi_X217-referral-response-to-request-for-review.edi",
    ] {
        let ex = exchange().await;
        let reply = ex.post_278("sample-provider", &sample(name)).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let segs = x12_segments(&reply.body);
        assert!(!segs.iter().any(|s| s.starts_with("ST*278")), "{name}: no 278 answers a response: {segs:?}");
        let bht = segs.iter().position(|s| s.starts_with("IK3*BHT*")).unwrap_or_else(|| panic!("{name}: {segs:?}"));
        assert_eq!(segs[bht + 1], "IK4*2*353*7*11", "{name}: BHT02 (element 353) has a response's code");
        assert!(segs.iter().any(|s| s.starts_with("IK5*R")), "{name}: {segs:?}");
        exchange_tests::assert_999s_valid(&reply.body);
        assert!(ex.cases().await.is_empty(), "{name}: a response opens no case");
    }
}

/// A functional group repeated inside one interchange (same GS06, same ST02s) is the sender's mistake: the first
/// copy is answered, the repeat is rejected whole in the 999 (AK905 19), and nothing is answered with a 5xx.
#[tokio::test]
async fn a_repeated_group_is_rejected_in_the_999_not_answered_with_a_server_error() {
    let ex = exchange().await;
    let text = with_isa13(&sample_text(REFERRAL), 10401);
    let (gs, iea) = (text.find("GS*").expect("GS"), text.find("IEA*").expect("IEA"));
    let group = &text[gs..iea];
    let twice = format!("{}{group}{group}IEA*2*000010401~\n", &text[..gs]);
    let reply = ex.post_278("sample-provider", twice.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let segs = x12_segments(&reply.body);
    assert_eq!(segs.iter().filter(|s| s.starts_with("ST*278")).count(), 1, "the first copy answered: {segs:?}");
    assert!(segs.iter().any(|s| s.starts_with("AK9*R*") && s.ends_with("*19")), "{segs:?}");
    exchange_tests::assert_999s_valid(&reply.body);
    assert_eq!(ex.cases().await.len(), 1);
}

#[tokio::test]
async fn x12_and_fhir_twins_share_the_case() {
    let ex = exchange().await;
    // A 278 (referral; requester ETIN 8189991234, member 12345678901) inquired through PAS $inquire.
    let segs = x12_segments(&ex.post_278("sample-provider", &sample(REFERRAL)).await.body);
    let x12_case = reference(&segs);
    let mut inquiry = pas_example("Bundle-PASClaimInquiryBundleExample.json");
    for e in inquiry["entry"].as_array_mut().unwrap() {
        if e["resource"]["resourceType"] == "Coverage" {
            e["resource"]["subscriberId"] = json!("12345678901");
        }
    }
    inquiry["entry"][0]["resource"]["identifier"][0] = json!({"system": "urn:trnorg:9012345678", "value": "111099"});
    let reply = ex.inquire("sample-provider", &inquiry).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let params = reply.json();
    assert_eq!(params["parameter"].as_array().unwrap().len(), 1, "{params}");
    let bundle = &params["parameter"][0]["resource"];
    assert_eq!(case_id(bundle), x12_case);
    assert_eq!(actions(&bundle["entry"][0]["resource"]), ["A1"]);
    assert_eq!(bundle["entry"][0]["resource"]["identifier"][0]["value"], "111099", "the 278's TRN as identifier");
    assert_fhir_valid(&[("twin.json", bundle)]);
    // Another provider partner sees nothing of it.
    let reply = ex.inquire("other-provider", &inquiry).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["parameter"].as_array().unwrap().is_empty());

    // A PAS submission answered as a 278 when a 278 quotes its administrative reference (REF*NT).
    let pas = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let pas_case = case_id(&pas);
    let quoting = with_segment_after_um(&referral_for_pas_member(10217), "UM*", &format!("REF*NT*{pas_case}"));
    let reply = ex.post_278("sample-provider", quoting.as_bytes()).await;
    assert_eq!(assert_valid_278(&reply.body), 1);
    let segs = x12_segments(&reply.body);
    assert_eq!(reference(&segs), pas_case);
    // The inquiry is matched by its own trace, echoed as referenced at the event (not the PAS request's).
    let asked = x12_segments(quoting.as_bytes()).into_iter().find(|s| s.starts_with("TRN*1*")).expect("inquiry TRN");
    let event = segs.iter().position(|s| s.starts_with("HL*4*3*EV*")).expect("2000E");
    assert_eq!(segs[event + 1], asked.replacen("TRN*1*", "TRN*2*", 1), "{segs:?}");
    let hcrs: Vec<&String> = segs.iter().filter(|s| s.starts_with("HCR*")).collect();
    assert_eq!(hcrs.len(), 3, "the event and both service lines: {segs:?}");
    assert!(hcrs[0].starts_with("HCR*A4"), "the event is pended while a service is: {segs:?}");
    assert!(hcrs[1].starts_with("HCR*A4") && hcrs[2].starts_with(&format!("HCR*A1*{pas_case}")), "{segs:?}");
    assert!(segs.iter().any(|s| s == "SV1*HC:G0154") && segs.iter().any(|s| s == "PWK*OZ*EL"), "{segs:?}");
    assert_eq!(ex.cases().await.len(), 2, "a status inquiry creates nothing");
    // Quoting that case for another member reveals and changes nothing: refused at the event.
    let other_member =
        with_segment_after_um(&with_isa13(&sample_text(REFERRAL), 10218), "UM*", &format!("REF*NT*{pas_case}"))
            .replace("UM*SC*I*", "UM*SC*3*");
    let segs = x12_segments(&ex.post_278("sample-provider", other_member.as_bytes()).await.body);
    assert!(segs.iter().any(|s| s == "AAA*N**15*C") && !segs.iter().any(|s| s.starts_with("HCR*")), "{segs:?}");
    assert!(segs.contains(&"HL*4*3*EV*0".to_owned()), "{segs:?}");
}

#[tokio::test]
async fn pend_then_decide_notifies_the_subscriber_and_bad_decisions_are_answered() {
    let ex = exchange().await;
    let (endpoint, mut received) = subscriber_endpoint(200).await;
    // Subscriptions: only for the caller's own organisation; only the owner sees or changes them.
    let reply = ex.subscribe("sample-provider", "1555555550", &endpoint).await;
    assert_eq!(reply.status, 403, "another organisation's identifier");
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    let reply = ex.subscribe("sample-provider", "8189991234", &endpoint).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let sub = reply.json();
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("location"), format!("Subscription/{sub_id}"));
    let other = ex.token("other-provider").await;
    let path = format!("/fhir/Subscription/{sub_id}");
    assert_eq!(ex.send("GET", &path, "application/fhir+json", &other, b"").await.status, 404);
    assert_eq!(ex.send("PUT", &path, "application/fhir+json", &other, sub.to_string().as_bytes()).await.status, 404);
    assert_eq!(ex.send("DELETE", &path, "application/fhir+json", &other, b"").await.status, 404);
    let owner = ex.token("sample-provider").await;
    let reply = ex.send("PUT", &path, "application/fhir+json", &owner, sub.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "active");

    let submitted = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await;
    let case = case_id(&submitted.json());

    // The reviewer's list shows it with the time left (standard: 7 days).
    let list = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(list["cases"][0]["id"], case.as_str());
    assert_eq!(list["cases"][0]["timeLeftSeconds"], 7 * 24 * 3600);

    // Bad decisions: an item that does not exist (422), an unknown action and a denial without reason (400).
    let r = ex.decide(&case, json!([{"item": 9, "action": "A1"}])).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(r.json()["errors"][0]["pointer"], "/decisions/0/item");
    let r = ex.decide(&case, json!([{"item": 1, "action": "ZZ"}, {"item": 1, "action": "A3"}])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["errors"].as_array().unwrap().len(), 2);
    assert_eq!(ex.review("GET", "/review/cases/NOPE", None).await.status, 404);
    assert_eq!(
        ex.send("GET", "/review/cases", "application/json", &owner, b"").await.status,
        403,
        "providers do not review"
    );
    assert!(ex.pa.outbox.pending(10).await.unwrap().is_empty(), "refused decisions queue nothing");

    // Ask for more documentation: still pended, the subscriber hears about it.
    let r = ex
        .review(
            "POST",
            &format!("/review/cases/{case}/documentation-requests"),
            Some(json!({"items": [1], "documentation": ["18748-4"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "pended");
    assert_eq!(prior_auth::worker::run_once(&ex.pa).await.unwrap().delivered, 1);
    let note = notification(&mut received).await;
    let cr = &note["entry"][1]["resource"]["entry"][0]["resource"];
    assert!(cr["processNote"][0]["text"].as_str().unwrap().contains("18748-4"), "{cr}");

    // Decide after review: modified (A6, 3 units). The decision is saved with its notification job; delivery is
    // the worker's, not the reviewer request's.
    ex.clock.advance(Duration::hours(30));
    let r = ex.decide(&case, json!([{"item": 1, "action": "A6", "quantity": "3", "reasons": ["0U"]}])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "decided");
    assert_eq!(ex.pa.outbox.pending(10).await.unwrap().len(), 1, "queued with the decision");
    assert!(received.try_recv().is_err(), "nothing was sent from the reviewer's request");
    assert_eq!(prior_auth::worker::run_once(&ex.pa).await.unwrap().delivered, 1);
    let note = notification(&mut received).await;
    assert_eq!(note["type"], "history");
    let status = &note["entry"][0]["resource"];
    assert_eq!(status["parameter"][0]["valueReference"]["reference"], format!("Subscription/{sub_id}"));
    assert_eq!(status["parameter"][4]["valueString"], "2", "events-since-subscription-start counts deliveries");
    let inner = &note["entry"][1]["resource"];
    assert_eq!(case_id(inner), case);
    let cr = &inner["entry"][0]["resource"];
    assert_eq!(actions(cr), ["A6", "A1"]);
    assert_eq!(cr["item"][0]["adjudication"][0]["value"], 3.0, "the authorized quantity");
    assert_fhir_valid(&[("notified.json", inner)]);
    assert!(ex.review("GET", "/review/cases", None).await.json()["cases"].as_array().unwrap().is_empty());

    // A denial carries its reason to the submitter.
    let (c, _) = ex.pa.cases.get(&case).await.unwrap().unwrap();
    assert_eq!(c.status(), CaseStatus::Decided);
    let r = ex.decide(&case, json!([{"item": 2, "action": "A3", "reasons": ["0U"]}])).await;
    assert_eq!(r.status, 200);
    assert_eq!(prior_auth::worker::run_once(&ex.pa).await.unwrap().delivered, 1);
    let note = notification(&mut received).await;
    let cr = &note["entry"][1]["resource"]["entry"][0]["resource"];
    assert_eq!(action(cr, 1), "A3");
    let reason = &cr["item"][1]["adjudication"][0]["extension"][0]["extension"][1];
    assert_eq!(reason["url"], "reasonCode");
    assert_eq!(reason["valueCodeableConcept"]["coding"][0]["code"], "0U");
}

#[tokio::test]
async fn a_notification_endpoint_that_is_down_is_retried_then_dead_lettered() {
    let ex = exchange().await;
    let endpoint = closed_endpoint().await;
    let reply = ex.subscribe("sample-provider", "8189991234", &endpoint).await;
    assert_eq!(reply.status, 201);
    let sub_id = reply.json()["id"].as_str().unwrap().to_owned();
    let submitted = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await;
    let case = case_id(&submitted.json());
    let r = ex.decide(&case, json!([{"item": 1, "action": "A1"}])).await;
    assert_eq!(r.status, 200, "the decision is saved although the endpoint is down");
    let base = ex.pa.settings.retry_base;
    for attempt in 1..=MAX_ATTEMPTS {
        let pass = prior_auth::worker::run_once(&ex.pa).await.unwrap();
        assert_eq!(pass.delivered, 0);
        let last = attempt == MAX_ATTEMPTS;
        assert_eq!((pass.retrying, pass.dead_lettered), if last { (0, 1) } else { (1, 0) }, "attempt {attempt}");
        if !last {
            // Not due again before its backoff.
            let early = prior_auth::worker::run_once(&ex.pa).await.unwrap();
            assert_eq!(early.retrying + early.dead_lettered, 0, "attempt {attempt} waits for its backoff");
            ex.clock.advance(backoff(base, attempt));
        }
    }
    let letters = ex.review("GET", "/review/dead-letters", None).await.json();
    assert_eq!(letters["deadLetters"].as_array().unwrap().len(), 1);
    assert_eq!(letters["deadLetters"][0]["caseId"], case.as_str());
    assert_eq!(letters["deadLetters"][0]["attempts"], MAX_ATTEMPTS);
    assert_eq!(letters["deadLetters"][0]["lastError"], "unreachable");
    assert_eq!(letters["deadLetters"][0]["eventNumber"], 1, "five attempts at one event are one event number");
    let token = ex.token("sample-provider").await;
    let sub = ex.send("GET", &format!("/fhir/Subscription/{sub_id}"), "application/fhir+json", &token, b"").await;
    assert_eq!(sub.json()["status"], "error", "the subscription shows its deliveries fail");
    let (c, _) = ex.pa.cases.get(&case).await.unwrap().unwrap();
    assert_eq!(c.items[0].decision.as_ref().unwrap().action_code(), "A1", "the decision stands");

    // The endpoint is back (the subscription now points at a listening one): the payer re-drives the dead letter,
    // and the subscriber gets the event under the number it was given, with no gap before the next event.
    let (endpoint, mut received) = subscriber_endpoint(200).await;
    let mut record = ex.pa.subscriptions.get(&sub_id).await.unwrap().unwrap();
    record.0.endpoint = endpoint;
    ex.pa.subscriptions.save(&record.0, record.1).await.unwrap();
    let job = letters["deadLetters"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(ex.review("POST", "/review/dead-letters/nope/redrive", None).await.status, 404);
    let redriven = ex.review("POST", &format!("/review/dead-letters/{job}/redrive"), None).await;
    assert_eq!(redriven.status, 202, "{}", redriven.text());
    assert_eq!(ex.review("POST", &format!("/review/dead-letters/{job}/redrive"), None).await.status, 404, "once");
    assert_eq!(prior_auth::worker::run_once(&ex.pa).await.unwrap().delivered, 1);
    let first = notification(&mut received).await;
    assert_eq!(event_number_of(&first), "1");
    let r = ex.decide(&case, json!([{"item": 1, "action": "A3", "reasons": ["N"]}])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(prior_auth::worker::run_once(&ex.pa).await.unwrap().delivered, 1);
    assert_eq!(event_number_of(&notification(&mut received).await), "2", "the next event is the next number");
    assert!(ex.review("GET", "/review/dead-letters", None).await.json()["deadLetters"].as_array().unwrap().is_empty());
}

/// The `event-number` of a notification Bundle's SubscriptionStatus.
fn event_number_of(bundle: &Value) -> String {
    let params = bundle["entry"][0]["resource"]["parameter"].as_array().expect("parameters");
    let event = params.iter().find(|p| p["name"] == "notification-event").expect("notification-event");
    event["part"][0]["valueString"].as_str().expect("event-number").to_owned()
}

#[tokio::test]
async fn cancel_and_revise_by_278_and_cancel_by_pas_update() {
    let ex = exchange().await;
    let pas = ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json();
    let case = case_id(&pas);
    // A 278 revision (UM02=S) quoting the case replaces item 1 with the referral's consultation: decided again.
    let revise = with_segment_after_um(
        &referral_for_pas_member(10301).replace("UM*SC*I*", "UM*SC*S*"),
        "UM*",
        &format!("REF*NT*{case}"),
    );
    let segs = x12_segments(&ex.post_278("sample-provider", revise.as_bytes()).await.body);
    let (c, _) = ex.pa.cases.get(&case).await.unwrap().unwrap();
    assert_eq!(
        (c.items[0].code.as_str(), c.items[0].decision.as_ref().unwrap().action_code()),
        ("3", "A1"),
        "{segs:?}"
    );
    // A 278 with UM02=3 quoting the case cancels it.
    let cancel = with_segment_after_um(
        &referral_for_pas_member(10302).replace("UM*SC*I*", "UM*SC*3*"),
        "UM*",
        &format!("REF*NT*{case}"),
    );
    let segs = x12_segments(&ex.post_278("sample-provider", cancel.as_bytes()).await.body);
    assert!(segs.iter().any(|s| s.starts_with("HCR*C")), "{segs:?}");
    let (c, _) = ex.pa.cases.get(&case).await.unwrap().unwrap();
    assert_eq!(c.status(), CaseStatus::Cancelled);
    // A cancellation quoting nothing known is refused at 2010C, and creates nothing.
    let unknown = cancel.replace(&case, "PA000000NOPE").replace("000010302", "000010303");
    let segs = x12_segments(&ex.post_278("sample-provider", unknown.as_bytes()).await.body);
    assert!(segs.iter().any(|s| s == "AAA*N**15*C"), "{segs:?}");
    assert_eq!(ex.cases().await.len(), 1);
    // So is an initial request (UM02=I) naming a review that does not exist: it is about that review, and opens no
    // case of its own (by administrative reference or by authorization number alike).
    for (qualifier, control) in [("NT", 10304), ("BB", 10305)] {
        let reference = format!("REF*{qualifier}*PA000000NOPE");
        let initial = with_segment_after_um(&referral_for_pas_member(control), "UM*", &reference);
        let segs = x12_segments(&ex.post_278("sample-provider", initial.as_bytes()).await.body);
        assert!(segs.iter().any(|s| s == "AAA*N**15*C") && !segs.iter().any(|s| s.starts_with("HCR*")), "{segs:?}");
        assert_eq!(ex.cases().await.len(), 1, "REF*{qualifier}");
    }

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
    update["entry"].as_array_mut().unwrap().push(
        json!({ "fullUrl": "http://example.org/fhir/Claim/MedicalServicesAuthorizationExample", "resource": original_claim }),
    );
    let cr = claim_response(&ex.submit("sample-provider", &update).await);
    assert_eq!(cr["id"].as_str(), Some(case_id(&first).as_str()));
    assert_eq!(actions(&cr), ["C"]);
    assert_eq!(ex.cases().await.len(), 2, "an update creates no case");
}

#[tokio::test]
async fn deadline_sweeps_flag_cases_and_metrics_report_cms_0057_f_figures() {
    let ex = exchange().await;
    // Referral (urgent → expedited): the consultation needs no auth, so it is not counted.
    ex.submit("sample-provider", &pas_example("Bundle-ReferralAuthorizationBundleExample.json")).await;
    // Emergency admission 278 (expedited, pended); surgical (standard, pended); homecare (standard: G0154 pended,
    // B4184 needs no auth).
    let reply =
        ex.post_278("sample-provider", &sample("stupidedi_X217-emergency-admission-request-for-review.edi")).await;
    let expedited = reference(&x12_segments(&reply.body));
    let surgical =
        case_id(&ex.submit("sample-provider", &pas_example("Bundle-SurgicalRequestBundleExample.json")).await.json());
    let homecare = case_id(
        &ex.submit("sample-provider", &pas_example("Bundle-HomecareAuthorizationBundleExample.json")).await.json(),
    );

    // 50 hours later the expedited case (72 h) is within the 24 h warning; the standard ones (7 days) are not.
    ex.clock.advance(Duration::hours(50));
    assert_eq!(prior_auth::worker::sweep_deadlines(&ex.pa).await.unwrap(), 1);
    assert_eq!(prior_auth::worker::sweep_deadlines(&ex.pa).await.unwrap(), 0, "flagged once");
    let list = ex.review("GET", "/review/cases", None).await.json();
    assert_eq!(list["cases"][0]["id"], expedited.as_str(), "soonest deadline first");
    assert_eq!(list["cases"][0]["deadlineFlagged"], true);
    assert_eq!(list["cases"][0]["timeLeftSeconds"], 22 * 3600);
    assert_eq!(list["cases"][1]["deadlineFlagged"], false);

    // Expedited approved at 50 h. Standard: surgical denied at 100 h; homecare G0154 extended (more documentation
    // asked for at 50 h) and approved at 100 h.
    assert_eq!(ex.decide(&expedited, json!([{"item": 1, "action": "A1"}])).await.status, 200);
    let more = json!({"items": [1], "documentation": ["18748-4"]});
    let r = ex.review("POST", &format!("/review/cases/{homecare}/documentation-requests"), Some(more)).await;
    assert_eq!(r.status, 200);
    ex.clock.advance(Duration::hours(50));
    assert_eq!(ex.decide(&surgical, json!([{"item": 1, "action": "A3", "reasons": ["0U"]}])).await.status, 200);
    assert_eq!(ex.decide(&homecare, json!([{"item": 1, "action": "A1"}])).await.status, 200);

    let r = ex.review("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m["itemsRequiringAuthorization"], 3, "{m}");
    assert_eq!(m["expedited"]["itemsRequiringAuthorization"], 1);
    assert_eq!(m["expedited"]["percentApproved"], 100.0);
    assert_eq!(m["expedited"]["percentDenied"], 0.0);
    assert_eq!(m["expedited"]["averageDecisionHours"], 50.0);
    assert_eq!(m["standard"]["decided"], 2);
    assert_eq!(m["standard"]["percentApproved"], 50.0);
    assert_eq!(m["standard"]["percentDenied"], 50.0);
    assert_eq!(m["standard"]["percentApprovedAfterExtendedReview"], 50.0, "extended, then approved");
    assert_eq!(m["expedited"]["percentApprovedAfterExtendedReview"], 0.0, "approved in the ordinary review");
    assert_eq!(m["standard"]["medianDecisionHours"], 100.0);
    let csv = ex.review("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30&format=csv", None).await;
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    let text = csv.text();
    assert_eq!(text.lines().nth(1), Some("789312,2026-11-01,2026-11-30,standard,2,2,50,50,50,100,100"), "{text}");
    assert_eq!(text.lines().nth(2), Some("789312,2026-11-01,2026-11-30,expedited,1,1,100,0,0,50,50"), "{text}");
    let admin = ex.token("admin").await;
    assert_eq!(ex.send("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30", "", &admin, b"").await.status, 200);
    let provider = ex.token("sample-provider").await;
    assert_eq!(
        ex.send("GET", "/metrics/prior-auth?from=2026-11-01&to=2026-11-30", "", &provider, b"").await.status,
        403
    );
    assert_eq!(ex.review("GET", "/metrics/prior-auth?from=2026-11-30&to=2026-11-01", None).await.status, 400);
}

#[tokio::test]
async fn the_prior_auth_events_work_against_the_demo_data() {
    let ex = PaExchange::new(&exchange_tests::demo_data_path(), datetime!(2026-11-25 10:00 UTC)).await;
    let token = ex.token("demo-provider").await;
    let event = exchange_tests::with_token(exchange_tests::load_event("prior-auth/post-278.json"), &token);
    let reply = ex.send_event(&event).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(assert_valid_278(&reply.body), 1);
    let segs = x12_segments(&reply.body);
    assert!(segs.iter().any(|s| s.starts_with("HCR*A4")), "MRI pends for documentation: {segs:?}");
    assert!(segs.iter().any(|s| s == "PWK*OZ*EL"), "{segs:?}");

    let event = exchange_tests::with_token(exchange_tests::load_event("prior-auth/submit.json"), &token);
    let reply = ex.send_event(&event).await;
    let cr = claim_response(&reply);
    assert_eq!(actions(&cr), ["A1", "A4"], "97110 approved, 70551 pended");
    assert_fhir_valid(&[("demo.json", &reply.json())]);

    let health = ex.send_event(&exchange_tests::load_event("prior-auth/health.json")).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn two_groups_may_reuse_an_st02() {
    // ST02 is unique within its group only: two groups each with ST*278*0001 are two requests, two cases.
    let ex = exchange().await;
    let text = with_isa13(&sample_text(REFERRAL), 4242);
    let gs_at = text.find("GS*").unwrap();
    let ge_end = text.find("GE*").map(|i| i + text[i..].find('~').unwrap() + 1).unwrap();
    let group = &text[gs_at..ge_end];
    let second = group.replace("*20213*X*", "*20214*X*").replace("GE*1*20213", "GE*1*20214");
    let two_groups = format!("{}{}{}{}", &text[..gs_at], group, second, &text[ge_end..]).replace("IEA*1*", "IEA*2*");
    let reply = ex.post_278("sample-provider", two_groups.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let segs = x12_segments(&reply.body);
    assert_eq!(segs.iter().filter(|s| s.starts_with("ST*278")).count(), 2, "{segs:?}");
    assert!(!segs.iter().any(|s| s.starts_with("ST*999")), "{segs:?}");
    assert_eq!(ex.cases().await.len(), 2);
}

#[tokio::test]
async fn a_malformed_query_is_problem_json() {
    let ex = exchange().await;
    for path in [
        "/review/cases?limit=abc",
        "/review/cases?limit=0",
        "/review/cases?limit=201",
        "/review/cases?cursor=not-a-cursor",
        "/metrics/prior-auth?from=2026-11-01",
    ] {
        let reply = ex.review("GET", path, None).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "application/problem+json", "{path}");
    }
}

#[tokio::test]
async fn the_work_list_pages_through_every_pended_case_with_a_cursor() {
    let ex = exchange().await;
    for n in 0..5 {
        let mut bundle = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
        bundle["identifier"]["value"] = json!(format!("PAGING-{n}"));
        assert_eq!(ex.submit("sample-provider", &bundle).await.status, 200);
    }
    let mut seen = Vec::new();
    let mut path = "/review/cases?limit=2".to_owned();
    for _ in 0..10 {
        let page = ex.review("GET", &path, None).await.json();
        let cases = page["cases"].as_array().expect("cases");
        assert!(cases.len() <= 2, "{page}");
        seen.extend(cases.iter().map(|c| c["id"].as_str().expect("id").to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/review/cases?limit=2&cursor={next}"),
            None => break,
        }
    }
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (5, 5), "every pended case once: {seen:?}");
}

#[tokio::test]
async fn identifiers_too_long_to_key_by_are_refused() {
    let ex = exchange().await;
    let mut bundle = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    bundle["identifier"]["value"] = json!("X".repeat(300));
    let reply = ex.submit("sample-provider", &bundle).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("Bundle.identifier"), "{}", reply.text());
    assert!(ex.cases().await.is_empty());

    // An update naming the earlier Claim by an identifier too long to key by (a DynamoDB 500 in AWS, where the
    // embedded store would not notice).
    let mut update = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let claim = &mut update["entry"][0]["resource"];
    claim["related"] = json!([{ "claim": { "identifier": { "system": "urn:trnorg:1", "value": "Y".repeat(300) } } }]);
    let reply = ex.submit("sample-provider", &update).await;
    assert!(matches!(reply.status, 400 | 422), "{}", reply.text());
    assert!(reply.text().contains("Claim.related"), "{}", reply.text());
    assert!(ex.cases().await.is_empty());
}

#[tokio::test]
async fn a_partner_holds_a_bounded_number_of_subscriptions() {
    let ex = exchange().await;
    let cap = exchange_core::domain::subscriptions::MAX_SUBSCRIPTIONS_PER_OWNER;
    for n in 0..cap {
        let reply = ex.subscribe("sample-provider", "8189991234", &format!("https://example.org/hook/{n}")).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let reply = ex.subscribe("sample-provider", "8189991234", "https://example.org/hook/over").await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    assert!(reply.text().contains("at most"), "{}", reply.text());
}

/// The same PAS Bundle, and then the same 278 interchange, sent by many callers at once: each opens one case, and
/// every caller gets that case's answer (the others replayed once the first committed), never 503 or 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_submissions_at_once_open_one_case_and_all_get_its_answer() {
    let ex = std::sync::Arc::new(exchange().await);
    let bundle = pas_example("Bundle-HomecareAuthorizationBundleExample.json");
    let replies = exchange_tests::at_once(16, || {
        let (ex, bundle) = (ex.clone(), bundle.clone());
        async move { ex.submit("sample-provider", &bundle).await }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| r.body == replies[0].body), "one answer for all");
    assert_eq!(ex.cases().await.len(), 1);

    let input = sample(REFERRAL);
    let replies = exchange_tests::at_once(16, || {
        let (ex, input) = (ex.clone(), input.clone());
        async move { ex.post_278("sample-provider", &input).await }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| r.body == replies[0].body), "one answer for all");
    assert_eq!(replies.iter().filter(|r| r.header("idempotent-replayed") != "true").count(), 1);
    assert_eq!(ex.cases().await.len(), 2, "the 278 opened one case");
}
