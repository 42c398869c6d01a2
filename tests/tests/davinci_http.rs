//! The davinci function end to end through API Gateway events: CRD discovery and hooks answered from the payer
//! policy (coverage-information on every order, cards, kept assertions), the CDS client JWT checks, bad requests,
//! DTR packages, adaptive forms and error logs, and the FHIR discovery documents; answers checked by the FHIR
//! oracle. The CRD conformance requests are in `crd_conformance.rs`; the CRD/PAS agreement property in
//! `policy_agreement.rs`.

use exchange_tests::davinci::*;
use exchange_tests::demo_data_path;
use exchange_tests::prior_auth::assert_fhir_valid;
use serde_json::{json, Value};
use time::macros::datetime;

const MEMBER: &str = "11122333301";

async fn exchange() -> DvExchange {
    DvExchange::new(&demo_data_path(), datetime!(2026-11-25 10:00 UTC), DvExchange::settings()).await
}

fn three_orders() -> Vec<Value> {
    vec![
        service_request("mri", CPT, "70551"),
        service_request("pt", CPT, "97110"),
        service_request("hosp", HCPCS, "S9090"),
    ]
}

#[tokio::test]
async fn discovery_lists_the_six_crd_services_without_a_token() {
    let x = exchange().await;
    let r = x.send("GET", "/cds-services", None, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let services = r.json()["services"].as_array().cloned().expect("services");
    let hooks: Vec<&str> = services.iter().filter_map(|s| s["hook"].as_str()).collect();
    assert_eq!(
        hooks,
        ["order-sign", "order-select", "order-dispatch", "appointment-book", "encounter-start", "encounter-discharge"]
    );
    for s in &services {
        assert_eq!(s["extension"]["davinci-crd.version"][0], "2.2");
        assert!(s["extension"]["davinci-crd.configuration-options"].as_array().is_some_and(|o| !o.is_empty()));
        assert!(s["prefetch"]["coverage"].as_str().is_some_and(|c| c.starts_with("Coverage?patient=")));
    }
}

#[tokio::test]
async fn order_sign_with_three_orders_answers_each_from_the_policy() {
    let x = exchange().await;
    let request = order_sign(&three_orders(), &[coverage("cov1", MEMBER, "DEMOPAYER")]);
    let r = x.call("order-sign-crd", &request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let resources = actions(&answer);
    assert_eq!(resources.len(), 3, "one update per order: {answer}");
    let by_id = |id: &str| *resources.iter().find(|r| r["id"] == id).expect("order answered");

    let mri = coverage_information(by_id("mri"));
    assert_eq!(mri.len(), 1);
    assert_eq!(sub_value(mri[0], "covered"), Some(&json!("covered")));
    assert_eq!(sub_value(mri[0], "pa-needed"), Some(&json!("auth-needed")));
    assert_eq!(sub_value(mri[0], "doc-needed"), Some(&json!("clinical")));
    assert_eq!(
        sub_value(mri[0], "questionnaire"),
        Some(&json!("http://example.org/fhir/Questionnaire/imaging-prior-auth"))
    );
    assert_eq!(sub_value(mri[0], "coverage"), Some(&json!({"reference": "Coverage/cov1"})));
    assert_eq!(sub_value(mri[0], "date"), Some(&json!("2026-11-25")));

    let pt = coverage_information(by_id("pt"));
    assert_eq!(sub_value(pt[0], "covered"), Some(&json!("covered")));
    assert_eq!(sub_value(pt[0], "pa-needed"), Some(&json!("no-auth")));

    let hosp = coverage_information(by_id("hosp"));
    assert_eq!(sub_value(hosp[0], "covered"), Some(&json!("not-covered")));
    assert!(sub_value(hosp[0], "pa-needed").is_none(), "not-covered carries no pa-needed (crd-ci-q2)");

    // Cards where a person should act: the MRI (authorization) and the denial, not the covered therapy.
    let cards = answer["cards"].as_array().cloned().expect("cards");
    assert_eq!(cards.len(), 2, "{cards:?}");
    let associated: Vec<&str> = cards
        .iter()
        .filter_map(|c| c["extension"]["davinci-crd.associated-resource"][0]["reference"].as_str())
        .collect();
    assert!(associated.contains(&"ServiceRequest/mri") && associated.contains(&"ServiceRequest/hosp"));
    assert!(cards.iter().all(|c| c["summary"].as_str().is_some_and(|s| s.chars().count() <= 140)));

    // The assertion is kept under its id: what was said, about which order and member.
    let id = sub_value(mri[0], "coverage-assertion-id").and_then(Value::as_str).expect("assertion id");
    let kept = x.dv.assertions.get(id).await.expect("store").expect("kept");
    assert_eq!(kept.order, "ServiceRequest/mri");
    assert_eq!(kept.pa_needed.as_deref(), Some("auth-needed"));
    assert_eq!(kept.member_id.as_deref(), Some(MEMBER));
    assert_eq!(kept.billing_code.as_deref(), Some(&*format!("{CPT}|70551")));

    // Every updated order passes the oracle, coverage-information checked against its definition.
    let files: Vec<(String, Value)> =
        resources.iter().map(|r| (format!("{}.json", r["id"].as_str().unwrap_or("x")), (*r).clone())).collect();
    let named: Vec<(&str, &Value)> = files.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert_fhir_valid(&named);
}

#[tokio::test]
async fn configuration_turns_coverage_information_off_and_caps_cards() {
    let x = exchange().await;
    let mut request = order_sign(&three_orders(), &[coverage("cov1", MEMBER, "DEMOPAYER")]);
    request["extension"] = json!({"davinci-crd.configuration": {"coverage-info": false, "max-cards": 1}});
    let r = x.call("order-sign-crd", &request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert!(answer.get("systemActions").is_none());
    assert_eq!(answer["cards"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn members_the_payer_cannot_place_are_answered_indeterminate_with_the_reason() {
    let x = exchange().await;
    let orders = [service_request("mri", CPT, "70551")];
    for (cov, reason) in [
        (coverage("c", "ZZZ999999", "DEMOPAYER"), "no-member-found"),
        (
            json!({"resourceType": "Coverage", "id": "c", "status": "active", "subscriberId": MEMBER,
                "beneficiary": {"reference": "Patient/pat1"}, "payor": [{"display": "Some plan"}]}),
            "coverage-not-found",
        ),
    ] {
        let r = x.call("order-sign-crd", &order_sign(&orders, &[cov])).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = r.json();
        let ext = coverage_information(actions(&answer)[0]);
        assert_eq!(sub_value(ext[0], "covered"), Some(&json!("indeterminate")));
        assert_eq!(sub_value(ext[0], "reason").and_then(|r| r["coding"][0]["code"].as_str()), Some(reason));
    }
}

#[tokio::test]
async fn client_jwts_that_do_not_verify_get_401() {
    let x = exchange().await;
    let request = order_sign(&three_orders(), &[coverage("cov1", MEMBER, "DEMOPAYER")]);
    let now = x.clock_now();
    let other_key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "wrong audience",
            Some(x.cds_jwt("order-sign-crd", json!({"aud": format!("{BASE}/cds-services/order-select-crd")}))),
        ),
        ("expired", Some(x.cds_jwt("order-sign-crd", json!({"iat": now - 900, "exp": now - 600})))),
        ("too long-lived", Some(x.cds_jwt("order-sign-crd", json!({"exp": now + 3600})))),
        ("unknown issuer", Some(x.cds_jwt("order-sign-crd", json!({"iss": "https://stranger.example"})))),
        ("no jti", Some(x.cds_jwt("order-sign-crd", json!({"jti": null})))),
        (
            "signed by an unknown key",
            Some(sign(
                &other_key,
                "ehr-1",
                &json!({"iss": EHR_ISSUER, "aud": format!("{BASE}/cds-services/order-sign-crd"),
                                                  "iat": now, "exp": now + 60, "jti": random_jti()}),
            )),
        ),
        ("not a JWT", Some("abc.def".into())),
    ];
    for (what, jwt) in cases {
        let r = x.hook("order-sign-crd", jwt.as_deref(), &request).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["resourceType"], "OperationOutcome", "{what}");
        assert!(!r.text().contains(MEMBER), "{what}: nothing of the request is echoed");
    }
    // Replayed: the same token twice; the first answer stands, the second is refused.
    let jwt = x.cds_jwt("order-sign-crd", json!({}));
    assert_eq!(x.hook("order-sign-crd", Some(&jwt), &request).await.status, 200);
    let replay = x.hook("order-sign-crd", Some(&jwt), &request).await;
    assert_eq!(replay.status, 401, "{}", replay.text());
    assert!(replay.text().contains("jti"));
}

#[tokio::test]
async fn malformed_hook_requests_get_a_clear_4xx() {
    let x = exchange().await;
    let good = order_sign(&three_orders(), &[coverage("cov1", MEMBER, "DEMOPAYER")]);
    let unknown = x.call("no-such-crd", &good).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let mut no_draft = good.clone();
    no_draft["context"].as_object_mut().expect("context").remove("draftOrders");
    let r = x.call("order-sign-crd", &no_draft).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["issue"][0]["expression"][0], "context.draftOrders");

    let wrong_hook = x.call("order-select-crd", &good).await;
    assert_eq!(wrong_hook.status, 400);
    assert_eq!(wrong_hook.json()["issue"][0]["expression"][0], "hook");

    let none = order_sign(&three_orders(), &[]);
    let r = x.call("order-sign-crd", &none).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["issue"][0]["expression"][0], "prefetch.coverage");

    let two = order_sign(
        &three_orders(),
        &[coverage("cov1", MEMBER, "DEMOPAYER"), coverage("cov2", "000123450", "DEMOPAYER")],
    );
    let r = x.call("order-sign-crd", &two).await;
    assert_eq!(r.status, 400, "{}", r.text());

    let not_json = x.hook("order-sign-crd", Some(&x.cds_jwt("order-sign-crd", json!({}))), &json!("x")).await;
    assert_eq!(not_json.status, 400);

    // Nothing was kept for refused requests: a fresh JWT still works for a good one.
    assert_eq!(x.call("order-sign-crd", &good).await.status, 200);
}

#[tokio::test]
async fn missing_prefetch_is_said_not_guessed_when_the_ehr_may_not_be_read() {
    let x = exchange().await;
    let mut request = order_sign(&three_orders(), &[]);
    request.as_object_mut().expect("request").remove("prefetch");
    let r = x.call("order-sign-crd", &request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert!(answer.get("systemActions").is_none(), "no coverage, no coverage information");
    assert!(answer["cards"][0]["detail"].as_str().is_some_and(|d| d.contains("Coverage")), "{answer}");
}

fn package_request(orders: &[Value], extra: Vec<Value>) -> Value {
    let mut parameter = vec![json!({"name": "coverage", "resource": coverage("cov1", MEMBER, "DEMOPAYER")})];
    parameter.extend(orders.iter().map(|o| json!({"name": "order", "resource": o})));
    parameter.extend(extra);
    json!({"resourceType": "Parameters", "parameter": parameter})
}

#[tokio::test]
async fn questionnaire_package_for_an_order_holds_the_form_its_valueset_and_a_seeded_response() {
    let x = exchange().await;
    let r = x
        .dtr(
            "$questionnaire-package",
            "demo-provider",
            &package_request(&[service_request("mri", CPT, "70551")], vec![]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let bundles: Vec<&Value> = out["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "PackageBundle")
        .map(|p| &p["resource"])
        .collect();
    assert_eq!(bundles.len(), 1, "{out}");
    let types: Vec<&str> = bundles[0]["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert_eq!(types, ["Questionnaire", "ValueSet", "QuestionnaireResponse"]);
    let qr = &bundles[0]["entry"][2]["resource"];
    assert_eq!(qr["questionnaire"], "http://example.org/fhir/Questionnaire/imaging-prior-auth|1");
    let member = qr["item"].as_array().into_iter().flatten().find(|i| i["linkId"] == "member-id").expect("seeded");
    assert_eq!(member["answer"][0]["valueString"], MEMBER);
    let plan = qr["item"].as_array().into_iter().flatten().find(|i| i["linkId"] == "plan-name").expect("seeded");
    assert!(plan["answer"][0]["valueString"].is_string());
    assert_fhir_valid(&[("package.json", &out)]);

    // No form for a code that needs no authorization: an outcome says so.
    let r = x
        .dtr(
            "$questionnaire-package",
            "demo-provider",
            &package_request(&[service_request("pt", CPT, "97110")], vec![]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["parameter"][0]["name"], "operationOutcome");
}

#[tokio::test]
async fn a_crd_assertion_is_the_context_dtr_packages_its_form_for() {
    let x = exchange().await;
    let answer =
        x.call("order-sign-crd", &order_sign(&three_orders(), &[coverage("cov1", MEMBER, "DEMOPAYER")])).await.json();
    let mri = actions(&answer).into_iter().find(|r| r["id"] == "mri").cloned().expect("mri");
    let id = sub_value(coverage_information(&mri)[0], "coverage-assertion-id")
        .and_then(Value::as_str)
        .expect("id")
        .to_owned();
    let ctx = vec![json!({"name": "context", "valueString": id})];
    let r = x.dtr("$questionnaire-package", "demo-provider", &package_request(&[], ctx.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["parameter"][0]["resource"]["entry"][0]["resource"]["url"],
        "http://example.org/fhir/Questionnaire/imaging-prior-auth"
    );
    // Another provider cannot use it; an unknown one is 404.
    let other = x.dtr("$questionnaire-package", "other-provider", &package_request(&[], ctx)).await;
    assert_eq!(other.status, 404, "{}", other.text());
    let unknown = x
        .dtr(
            "$questionnaire-package",
            "demo-provider",
            &package_request(&[], vec![json!({"name": "context", "valueString": "crd-nope"})]),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn questionnaire_package_refusals() {
    let x = exchange().await;
    let mri = service_request("mri", CPT, "70551");
    let unknown_member = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coverage", "resource": coverage("c", "ZZZ999999", "DEMOPAYER")}, {"name": "order", "resource": mri}]});
    let r = x.dtr("$questionnaire-package", "demo-provider", &unknown_member).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let other_payer = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coverage", "resource": coverage("c", MEMBER, "OTHERPAYER")}, {"name": "order", "resource": mri}]});
    assert_eq!(x.dtr("$questionnaire-package", "demo-provider", &other_payer).await.status, 422);
    let no_coverage = json!({"resourceType": "Parameters", "parameter": [{"name": "order", "resource": mri}]});
    assert_eq!(x.dtr("$questionnaire-package", "demo-provider", &no_coverage).await.status, 400);
    let nothing_asked = json!({"resourceType": "Parameters", "parameter": [{"name": "coverage", "resource": coverage("c", MEMBER, "DEMOPAYER")}]});
    assert_eq!(x.dtr("$questionnaire-package", "demo-provider", &nothing_asked).await.status, 400);
    assert_eq!(x.dtr("$questionnaire-package", "demo-payer", &package_request(&[mri], vec![])).await.status, 403);
    let no_token = x.send("POST", "/fhir/Questionnaire/$questionnaire-package", None, b"{}").await;
    assert_eq!(no_token.status, 401);
}

#[tokio::test]
async fn next_question_walks_the_form_one_enabled_question_at_a_time() {
    let x = exchange().await;
    let mut qr = json!({
        "resourceType": "QuestionnaireResponse", "status": "in-progress", "questionnaire": "#aq",
        "subject": {"reference": "Patient/pat1"}, "authored": "2026-11-25T10:00:00Z",
        "contained": [{"resourceType": "Questionnaire", "id": "aq", "status": "active",
                       "derivedFrom": ["http://example.org/fhir/Questionnaire/imaging-prior-auth|1"]}]
    });
    let mut asked = Vec::new();
    for _ in 0..10 {
        let r = x.dtr("$next-question", "demo-provider", &json!({"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "resource": qr}]})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        qr = r.json();
        if qr["status"] == "completed" {
            break;
        }
        let items = qr["contained"][0]["item"].as_array().cloned().expect("items");
        let last = items.last().cloned().expect("a question was added");
        assert!(last.get("enableWhen").is_none());
        let link = last["linkId"].as_str().expect("linkId").to_owned();
        // The provider answers: no conservative therapy tried.
        let answer = match last["type"].as_str() {
            Some("boolean") => json!({"valueBoolean": false}),
            Some("date") => json!({"valueDate": "2026-10-01"}),
            Some("choice") => {
                json!({"valueCoding": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}})
            }
            Some("integer") => json!({"valueInteger": 8}),
            _ => json!({"valueString": "x"}),
        };
        let mut answers = qr["item"].as_array().cloned().unwrap_or_default();
        answers.push(json!({"linkId": link, "answer": [answer]}));
        qr["item"] = json!(answers);
        asked.push(link);
    }
    assert_eq!(qr["status"], "completed");
    assert_eq!(
        asked,
        ["member-id", "plan-name", "conservative-therapy", "symptom-onset", "imaging-modality"],
        "therapy-weeks is skipped when no therapy was tried"
    );
    let unknown_form = json!({"resourceType": "QuestionnaireResponse", "status": "in-progress", "questionnaire": "#aq",
        "contained": [{"resourceType": "Questionnaire", "id": "aq", "status": "active", "derivedFrom": ["http://example.org/fhir/Questionnaire/nope"]}]});
    assert_eq!(x.dtr("$next-question", "demo-provider", &unknown_form).await.status, 404);
    assert_eq!(x.dtr("$next-question", "demo-provider", &json!({"resourceType": "Parameters"})).await.status, 400);
}

#[tokio::test]
async fn form_errors_are_logged_and_discovery_documents_validate() {
    let x = exchange().await;
    let report = json!({"resourceType": "Parameters", "parameter": [
        {"name": "questionnaire", "valueCanonical": "http://example.org/fhir/Questionnaire/imaging-prior-auth|1"},
        {"name": "operationOutcome", "resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": "CQL failed"}]}}]});
    let r = x.dtr("$log-questionnaire-errors", "demo-provider", &report).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        x.dtr("$log-questionnaire-errors", "demo-provider", &json!({"resourceType": "Parameters"})).await.status,
        400
    );

    let metadata = x.send("GET", "/fhir/metadata", None, b"").await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let cs = metadata.json();
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_fhir_valid(&[("capability.json", &cs)]);
    let smart = x.send("GET", "/.well-known/smart-configuration", None, b"").await.json();
    assert_eq!(smart["token_endpoint"], format!("{BASE}/auth/token"));
    assert!(smart["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("ES384"))));
}
